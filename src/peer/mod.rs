//! BTP/1.0 peers: ilp-bridge speaking to (or as) the legacy `ilp-plugin-payment-channel-framework`.
//!
//! * [`trustline`]: one peer relationship ([`Trustline`]): legacy semantics, module hooks, expiry, and the
//!   Rust library API mirroring the legacy plugin;
//! * [`link`]: [`PeerLink`], how a trustline sends requests (the websocket session, or in memory for tests);
//! * [`host`]: the channel-module context host of peer mode and [`PeerStores`] (where records live);
//! * [`identities`]: [`NodeIdentities`], the trustlines' view of the node's ledger-identity registry
//!   ([`crate::identity`]);
//! * [`events`]: the event stream;
//! * [`routing`]: forwarding between trustlines; [`run`]: starting configured peers on the transport;
//! * [`error`]: the one mapping from errors to what a legacy peer sees.
//!
//! Dependencies run one way: `error`, `events`, `link`, `identities` and `host` know no trustline; `trustline`
//! builds on them (it implements `link`'s [`PacketHandler`] and `host`'s module RPC, so neither calls back into
//! it by name); `routing` drives trustlines through their API and [`TransferHook`]; `run` wires all of them to
//! the transport. Configuration comes from [`crate::config`], never the other way.

pub mod error;
pub mod events;
pub mod host;
pub mod identities;
pub mod link;
pub mod routing;
pub mod run;
pub mod trustline;

pub use error::{PeerError, ReplyError, WireError};
pub use events::{EventReceiver, PeerEvent, PeerMessage, RejectionMessage};
pub use host::PeerStores;
pub use identities::NodeIdentities;
#[cfg(any(test, feature = "testing"))]
pub use link::{LinkEnd, MemoryLink};
pub use link::{PacketHandler, PeerLink};
pub use routing::{forward_id, Router};
pub use run::{run_peers, NodeOptions, PeerNode};
pub use trustline::{
    IncomingRequestHandler, TransferHook, TransferOutcome, Trustline, TrustlineHandler,
    TrustlineOptions,
};
