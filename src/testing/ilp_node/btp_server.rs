//! The mock node's BTP server side: the websocket at `/accounts/{username}/ilp/btp` and its authentication, as
//! interledger-rs's `crates/interledger-btp/src/server.rs` does it (docs/modern.md §5.8):
//!
//! * non-binary websocket messages (pings, text) before the first binary one are skipped;
//! * the first binary message must arrive within [`super::NodeConfig::auth_timeout`] (10 s) and decode as a
//!   BTP/2.0 **Message** with an `auth_token` entry anywhere in its protocol data (the `auth` entry and
//!   `auth_username` are not looked at);
//! * the token must equal the account's `ilp_over_btp_incoming_token` (an account without one cannot log in);
//! * success: an empty Response frame with the auth Message's request ID, then the connection runs
//!   ([`super::btp_connection`]); failure of any kind: the socket is dropped, no BTP Error is sent.

use std::sync::Arc;

use btp::packet::{BtpVersion, Frame, Packet, ProtocolData};
use channel_modules::sync::lock;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use super::{btp_connection, Node};

/// Runs the websocket handshake on `stream`, authenticates `username` and runs the connection.
pub(crate) async fn accept<S>(node: Arc<Node>, username: String, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let first_binary = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Binary(bytes)) => return Some(bytes),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
        None
    };
    let Ok(Some(bytes)) = tokio::time::timeout(node.config.auth_timeout, first_binary).await else {
        debug!(%username, "no auth frame in time: dropping the socket");
        return;
    };
    let Some((request_id, token)) = auth_token(&bytes) else {
        debug!(%username, "first frame is not a BTP Message with auth_token: dropping the socket");
        return;
    };
    let account = {
        let state = lock(&node.state);
        state.account_by_name(&username).and_then(|a| {
            (a.ilp_over_btp_incoming_token.as_deref() == Some(token.as_str())).then_some(a.id)
        })
    };
    let Some(account) = account else {
        debug!(%username, "BTP auth failed: dropping the socket");
        return;
    };
    let registered = btp_connection::register(&node, account);
    let ok = Frame::new(request_id, Packet::Response(ProtocolData::new())).to_bytes();
    if ws.send(Message::Binary(ok)).await.is_err() {
        btp_connection::unregister(&node, account, &registered);
        return;
    }
    btp_connection::run(node, account, ws, registered).await;
}

/// The request ID and `auth_token` of an auth Message, as interledger-rs's `parse_auth` reads them.
fn auth_token(bytes: &bytes::Bytes) -> Option<(u32, String)> {
    let frame = Frame::decode(bytes, BtpVersion::Btp2).ok()?;
    let Packet::Message(pd) = frame.packet else {
        return None;
    };
    let token = pd
        .iter()
        .filter(|e| e.name == "auth_token")
        .last()
        .map(|e| String::from_utf8(e.data.to_vec()))?
        .ok()?;
    Some((frame.request_id, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use btp::packet::{ProtocolDataEntry, ProtocolName};

    #[test]
    fn auth_token_anywhere_in_a_message() {
        let pd = ProtocolData::new()
            .with(ProtocolDataEntry::text(
                ProtocolName::from_static("auth_username"),
                "ignored",
            ))
            .with(ProtocolDataEntry::text(
                ProtocolName::from_static("auth_token"),
                "secret",
            ));
        let msg = Frame::new(7, Packet::Message(pd.clone())).to_bytes();
        assert_eq!(auth_token(&msg), Some((7, "secret".to_owned())));
        let resp = Frame::new(7, Packet::Response(pd)).to_bytes();
        assert_eq!(auth_token(&resp), None, "only a Message authenticates");
        let none = Frame::new(7, Packet::Message(ProtocolData::new())).to_bytes();
        assert_eq!(auth_token(&none), None);
    }
}
