//! Configuration: the node TOML ([`node`]), legacy plugin options JSON ([`legacy`]) and ILP Kit's `env.list` ([`ilp_kit`]).

pub mod ilp_kit;
pub mod legacy;
pub mod node;
