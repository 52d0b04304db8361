//! Bridge mode: a legacy BTP/1.0 peer and a modern ILPv4 connector paying each other through this node.
//!
//! * [`translate`]: how a packet crosses (ILP v1 ⇄ ILPv4), the contract in one table;
//! * [`scale`]: amounts between the two sides' scales; [`codes`]: ILP error code names of both generations.

pub mod codes;
pub mod scale;
pub mod translate;
