//! BTP/1.0 trustline peers: ilp-bridge speaking to (or as) the legacy `ilp-plugin-payment-channel-framework`.
//!
//! * [`trustline`]: the core ([`Trustline`]): legacy semantics, module hooks, expiry, the Rust library API
//!   mirroring the legacy plugin (connect, send_transfer, fulfill_condition, reject_incoming_transfer,
//!   send_request, get_balance, get_limit, get_peer_balance, get_info, get_account, get_peer_account, events);
//! * [`link`]: [`PeerLink`], how the core sends requests (the websocket session, or in memory for tests);
//! * [`host`]: the channel-module context host and [`PeerStores`] (where records live);
//! * [`events`]: the event stream;
//! * [`limits`]: how much one peer can make the node hold (hold window, data per Prepare, prepared count);
//! * [`routing`]: forwarding between trustlines; [`run`]: starting configured peers on the transport;
//! * [`error`]: the one mapping from errors to legacy BTP Error codes.

pub mod error;
pub mod events;
pub mod host;
pub mod limits;
pub mod link;
pub mod routing;
pub mod run;
pub mod trustline;

pub use error::{PeerError, WireError};
pub use events::{PeerEvent, PeerMessage, RejectionMessage};
pub use host::{Clock, PeerStores, SystemClock, TokioClock};
pub use limits::PrepareLimits;
pub use link::{MemoryLink, PeerLink};
pub use routing::{forward_id, LocalPayments, Rate, Router, RoutingConfig};
pub use run::{run_peers, NodeOptions, PeerNode};
pub use trustline::{
    IncomingRequestHandler, TransferHook, TransferOutcome, Trustline, TrustlineHandler,
    TrustlineOptions,
};
