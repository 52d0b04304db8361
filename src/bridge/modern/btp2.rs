//! ILPv4 over BTP/2.0 (docs/modern.md §2, §5.8): each Prepare travels as the `ilp` entry of a request, its
//! Fulfill or Reject as the `ilp` entry of the answer. The websocket, authentication, reconnection and request
//! matching are the transport's (`btp::transport`); this file only puts ILPv4 packets in and out of frames.
//!
//! What real connectors send, and how it is taken:
//!
//! | from | frames | here |
//! |--|--|--|
//! | ilp-plugin-btp (JS ilp-connector) | Prepare in a Message, answer in a Response | answered with a Response |
//! | interledger-rs | Prepare in a **Response** with a fresh request ID, answer in a **Message** | the transport hands both over as requests or replies by ID; answered with a Response, which it accepts |
//! | ilp-plugin-btp | `Transfer` (7) for `sendMoney` | BTP Error F00: money moves through RFC 38, not BTP |
//! | either | a Message without `ilp` | BTP Error F00 |
//!
//! Our own Prepares go out in Message frames; the answer may come in a Response or (interledger-rs) a Message
//! with the same ID, which the transport completes the request with.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use btp::ilp_v4::{self, IlpV4Packet};
use btp::packet::{BtpError, Packet, ProtocolData, ProtocolDataEntry, ProtocolName};
use btp::transport::{Authenticator, BtpSession, PeerKey, Reply, RequestHandler, RpcError};
use btp::Timestamp;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{decode_reply, encode_reply, IlpHandler, IlpReply, LinkError, ModernLink};

/// The protocol-data entry that carries ILP packets.
pub const ILP_PROTOCOL: &str = "ilp";

/// The modern connector reached over a BTP/2.0 session (we dial it, or it dials us).
#[derive(Debug, Clone)]
pub struct Btp2Link {
    session: BtpSession,
}

impl Btp2Link {
    /// A link over `session`.
    pub fn new(session: BtpSession) -> Self {
        Btp2Link { session }
    }

    /// The session (for its connection state).
    pub fn session(&self) -> &BtpSession {
        &self.session
    }
}

fn ilp_entry(bytes: Bytes) -> ProtocolData {
    ProtocolData::new().with(ProtocolDataEntry::octets(
        ProtocolName::from_static(ILP_PROTOCOL),
        bytes,
    ))
}

#[async_trait]
impl ModernLink for Btp2Link {
    async fn send(&self, prepare: &ilp_v4::Prepare, wait: Duration) -> Result<IlpReply, LinkError> {
        let packet = Packet::Message(ilp_entry(IlpV4Packet::Prepare(prepare.clone()).to_bytes()));
        match self.session.request(packet, wait).await {
            Ok(Reply::Response(pd)) => match pd.data(ILP_PROTOCOL) {
                Some(bytes) => decode_reply(bytes),
                None => Err(LinkError::InvalidAnswer(
                    "a Response without an ilp entry".to_owned(),
                )),
            },
            Ok(Reply::Error(e)) => Err(LinkError::InvalidAnswer(format!(
                "BTP Error {} {}: {}",
                e.code_str(),
                e.name,
                e.data
            ))),
            Err(e @ (RpcError::NotConnected | RpcError::TooManyPending)) => {
                Err(LinkError::NotSent(e.to_string()))
            }
            Err(e) => Err(LinkError::NoAnswer(e.to_string())),
        }
    }

    fn is_connected(&self) -> bool {
        self.session.is_connected()
    }
}

/// Hands the Prepares that arrive on a BTP/2.0 session to the bridge. Holds it weakly, so a stopped bridge is
/// not kept alive by its session.
pub struct Btp2Handler {
    handler: Weak<dyn IlpHandler>,
}

impl Btp2Handler {
    /// A request handler answering with `handler`.
    pub fn new(handler: &Arc<dyn IlpHandler>) -> Self {
        Btp2Handler {
            handler: Arc::downgrade(handler),
        }
    }
}

/// A BTP Error (F00 NotAcceptedError) for a request this link does not take.
fn refuse(message: &str) -> Reply {
    Reply::Error(BtpError {
        code: *b"F00",
        name: "NotAcceptedError".to_owned(),
        triggered_at: Timestamp::now(),
        data: message.to_owned(),
        protocol_data: ProtocolData::new(),
    })
}

#[async_trait]
impl RequestHandler for Btp2Handler {
    async fn handle_request(
        &self,
        _session: &BtpSession,
        _request_id: u32,
        packet: Packet,
    ) -> Option<Reply> {
        let pd = match packet {
            // interledger-rs sends its Prepares in Response frames (docs/modern.md §5.8).
            Packet::Message(pd) | Packet::Response(pd) => pd,
            Packet::Transfer(_) => {
                return Some(refuse(
                    "BTP Transfer is not taken: this bridge settles through its RFC 38 settlement engine",
                ))
            }
            // BTP/1.0 transfer frames and stray Errors get no answer (BTP/2.0: unexpected frames are ignored).
            _ => return None,
        };
        let Some(bytes) = pd.data(ILP_PROTOCOL) else {
            return Some(refuse("a request without an ilp entry"));
        };
        let prepare = match IlpV4Packet::decode(bytes) {
            Ok(IlpV4Packet::Prepare(p)) => p,
            // A Fulfill or Reject nobody waits for, or garbage: ignored, as BTP says of unexpected frames.
            _ => return None,
        };
        let handler = self.handler.upgrade()?;
        let reply = handler.handle_prepare(prepare).await;
        Some(Reply::Response(ilp_entry(encode_reply(&reply))))
    }
}

/// The check of a BTP/2.0 listener for one bridged pair: the configured token (compared as SHA-256 digests, so
/// neither its contents nor its length leak through timing), with any username (ilp-plugin-btp sends the URL's
/// user name, interledger-rs none).
pub struct TokenAuth {
    digest: [u8; 32],
    peer: PeerKey,
}

impl TokenAuth {
    /// Admits `token` as `peer`.
    pub fn new(token: &str, peer: PeerKey) -> Self {
        TokenAuth {
            digest: Sha256::digest(token.as_bytes()).into(),
            peer,
        }
    }
}

impl Authenticator for TokenAuth {
    fn authenticate(&self, _username: &str, token: &str) -> Option<PeerKey> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let differ = presented
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (differ == 0).then(|| self.peer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_checked_whatever_the_username() {
        let auth = TokenAuth::new("s3cret", PeerKey::new("modern:kit"));
        assert_eq!(
            auth.authenticate("", "s3cret")
                .map(|k| k.as_str().to_owned()),
            Some("modern:kit".to_owned())
        );
        assert!(auth.authenticate("kit", "s3cret").is_some());
        assert!(auth.authenticate("", "s3cre").is_none());
        assert!(auth.authenticate("", "s3cret ").is_none());
        assert!(auth.authenticate("", "").is_none());
    }
}
