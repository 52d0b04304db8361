//! The mock node's BTP client side, as interledger-rs's `connect_to_service_account`
//! (`crates/interledger-btp/src/client.rs`, docs/modern.md §5.8):
//!
//! * a leading `btp+` is stripped from `ilp_over_btp_url` (`btp+ws://…` → `ws://…`);
//! * after the websocket opens, one **Message** frame with a random request ID and two entries: `auth`
//!   (octet-stream, empty) and `auth_token` (text/plain, the account's `ilp_over_btp_outgoing_token`, empty when
//!   unset). No `auth_username`;
//! * the reply is **not** awaited: the connection is used at once (the auth Response, which has no `ilp` entry, is
//!   dropped like any frame without one);
//! * once the connection closes it is **never re-dialled**.

use std::sync::Arc;

use btp::packet::{Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName};
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use super::accounts::Account;
use super::{btp_connection, Node, NodeError};

/// The URL interledger-rs dials for `url`: without a leading `btp+`.
pub fn dial_url(url: &Url) -> String {
    let s = url.as_str();
    s.strip_prefix("btp+").unwrap_or(s).to_owned()
}

/// The auth Message interledger-rs's client sends.
pub fn auth_frame(request_id: u32, token: &str) -> Frame {
    Frame::new(
        request_id,
        Packet::Message(
            ProtocolData::new()
                .with(ProtocolDataEntry::octets(
                    ProtocolName::from_static("auth"),
                    bytes::Bytes::new(),
                ))
                .with(ProtocolDataEntry::text(
                    ProtocolName::from_static("auth_token"),
                    token,
                )),
        ),
    )
}

/// Dials `url` for `account`, sends the auth Message and runs the connection in the background.
pub(crate) async fn connect(
    node: &Arc<Node>,
    account: &Account,
    url: &Url,
) -> Result<(), NodeError> {
    let target = dial_url(url);
    let (mut ws, _response) = tokio_tungstenite::connect_async(target.as_str())
        .await
        .map_err(|e| NodeError::BtpConnect {
            url: target.clone(),
            source: Box::new(e),
        })?;
    let token = account
        .ilp_over_btp_outgoing_token
        .clone()
        .unwrap_or_default();
    let auth = auth_frame(rand::random::<u32>(), &token);
    ws.send(Message::Binary(auth.to_bytes()))
        .await
        .map_err(|e| NodeError::BtpConnect {
            url: target,
            source: Box::new(e),
        })?;
    let registered = btp_connection::register(node, account.id);
    tokio::spawn(btp_connection::run(
        Arc::clone(node),
        account.id,
        ws,
        registered,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btp_prefix_is_stripped() -> Result<(), url::ParseError> {
        assert_eq!(
            dial_url(&Url::parse("btp+ws://127.0.0.1:7768/btp")?),
            "ws://127.0.0.1:7768/btp"
        );
        assert_eq!(
            dial_url(&Url::parse("ws://127.0.0.1:7768")?),
            "ws://127.0.0.1:7768/"
        );
        Ok(())
    }

    #[test]
    fn auth_has_no_username() {
        let f = auth_frame(1, "tok");
        let pd = f.packet.protocol_data();
        assert_eq!(pd.len(), 2);
        assert_eq!(pd.entries[0].name, "auth");
        assert!(pd.entries[0].data.is_empty());
        assert_eq!(pd.data("auth_token").map(|d| &d[..]), Some(&b"tok"[..]));
        assert!(pd.get("auth_username").is_none());
    }
}
