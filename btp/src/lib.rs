//! # btp
//!
//! Byte-exact codecs for the Bilateral Transfer Protocol and the ILP packets it carries, plus a websocket
//! transport:
//! * BTP/1.0 (RFC 23 draft 2, as spoken by `ilp-plugin-payment-channel-framework` through btp-packet 1.x) and
//!   BTP/2.0 (RFC 23 draft 9);
//! * ILP v1 (Payment, Error, ILQP) and ILPv4 (RFC 27: Prepare, Fulfill, Reject);
//! * the `peer.*` protocols carried inside ILPv4 Prepares: IL-DCP (`peer.config`, [`ildcp`]) and CCP
//!   (`peer.route.*`, [`ccp`]), with what they share in [`peer_protocol`];
//! * the OER primitives they are built from.
//!
//! This crate knows nothing about balances, stores or modules.

pub mod ccp;
pub mod error;
pub mod ildcp;
pub mod ilp_v1;
pub mod ilp_v4;
pub mod oer;
pub mod packet;
pub mod peer_protocol;
pub mod time;
pub mod transport;

pub use ccp::{Mode, Route, RouteControlRequest, RouteProp, RouteUpdateRequest};
pub use error::DecodeError;
pub use ildcp::{IldcpRequest, IldcpResponse};
pub use ilp_v1::IlpV1Packet;
pub use ilp_v4::{Address, IlpV4Packet};
pub use oer::MAX_FRAME_BYTES;
pub use packet::{
    legacy_error_code, BtpError, BtpVersion, ContentType, Frame, Packet, PacketType, ProtocolData,
    ProtocolDataEntry, ProtocolName,
};
pub use peer_protocol::{PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};
pub use time::Timestamp;
