//! # btp
//!
//! Byte-exact codecs for the Bilateral Transfer Protocol and the ILP packets it carries, plus a websocket
//! transport:
//! * BTP/1.0 (RFC 23 draft 2, as spoken by `ilp-plugin-payment-channel-framework` through btp-packet 1.x) and
//!   BTP/2.0 (RFC 23 draft 9);
//! * ILP v1 (Payment, Error, ILQP) and ILPv4 (RFC 27: Prepare, Fulfill, Reject);
//! * the OER primitives they are built from.
//!
//! This crate knows nothing about balances, stores or modules.
