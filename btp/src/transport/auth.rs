//! The BTP auth handshake: the [`Authenticator`] the host plugs in, the auth Message a dialer sends and the
//! listener's checks of it (docs/legacy-btp.md §3; the legacy framework's `_handleAuth`).
//!
//! The checks run in the legacy order and the Errors are byte-for-byte the legacy ones (apart from
//! `triggeredAt`, which is the current time, as in legacy).

use crate::packet::{
    BtpError, ContentType, Frame, Packet, ProtocolData, ProtocolDataEntry, ProtocolName,
};
use crate::time::Timestamp;

use super::peer_key::PeerKey;

/// Name of the protocol-data entry that carries a bridge dialer's election nonce (8 bytes, big-endian).
pub const NONCE_PROTOCOL: &str = "ilp_bridge_nonce";

/// Decides who may connect to a listener.
pub trait Authenticator: Send + Sync + 'static {
    /// The peer that `(username, token)` authenticates as, or `None` to refuse (the client gets
    /// `F00 NotAcceptedError`). The legacy default accepts only an empty username plus the shared secret.
    /// Called with `username == ""` when the client sent no `auth_username` and
    /// [`ServerConfig::require_username`](crate::transport::ServerConfig::require_username) is off. Never log
    /// `token`.
    fn authenticate(&self, username: &str, token: &str) -> Option<PeerKey>;
}

impl<F> Authenticator for F
where
    F: Fn(&str, &str) -> Option<PeerKey> + Send + Sync + 'static,
{
    fn authenticate(&self, username: &str, token: &str) -> Option<PeerKey> {
        self(username, token)
    }
}

/// `data` of the Error for a non-Message first frame.
pub(crate) const INVALID_METHOD_DATA: &str =
    r#"{"message":"invalid method on unauthenticated socket"}"#;
/// `data` of the Error when the first entry is not `auth`.
pub(crate) const AUTH_NOT_PRIMARY_DATA: &str =
    r#"{"message":"auth must be primary protocol on unauthenticated message"}"#;
/// `data` of the Error when `auth_token` is missing.
pub(crate) const MISSING_TOKEN_DATA: &str =
    r#"{"message":"missing \"auth_token\" secondary protocol"}"#;
/// `data` of the Error when `auth_username` is missing.
pub(crate) const MISSING_USERNAME_DATA: &str =
    r#"{"message":"missing \"auth_username\" secondary protocol"}"#;
/// `data` of the Error for bad credentials.
pub(crate) const NOT_ACCEPTED_DATA: &str = r#"{"message":"invalid auth token and/or username"}"#;
/// `data` of the Error for a socket that authenticated while the authenticated pool was full (ours; legacy
/// has no limit).
pub(crate) const TOO_MANY_CONNECTIONS_DATA: &str = r#"{"message":"too many connections"}"#;
/// `data` of the Error for a socket beyond its peer's socket limit (ours; legacy has no limit).
pub(crate) const TOO_MANY_PEER_SOCKETS_DATA: &str =
    r#"{"message":"too many connections for this account"}"#;

/// The auth Message's protocol data: `auth`, `auth_username`, `auth_token` (legacy order), then our nonce.
pub(crate) fn auth_protocol_data(username: &str, token: &str, nonce: Option<u64>) -> ProtocolData {
    let mut pd = ProtocolData::new()
        .with(ProtocolDataEntry::octets(
            ProtocolName::from_static("auth"),
            Vec::new(),
        ))
        .with(ProtocolDataEntry::text(
            ProtocolName::from_static("auth_username"),
            username,
        ))
        .with(ProtocolDataEntry::text(
            ProtocolName::from_static("auth_token"),
            token,
        ));
    if let Some(nonce) = nonce {
        pd.push(ProtocolDataEntry::octets(
            ProtocolName::from_static(NONCE_PROTOCOL),
            nonce.to_be_bytes().to_vec(),
        ));
    }
    pd
}

/// The result of checking one frame on an unauthenticated socket.
#[derive(Debug)]
pub(crate) enum AuthOutcome {
    /// Authenticated: reply with an empty Response and attach the socket to `peer`'s session.
    Accepted {
        /// Who authenticated.
        peer: PeerKey,
        /// The dialing bridge node's election nonce, if it sent one.
        nonce: Option<u64>,
    },
    /// Refused: send this Error with the frame's request ID, then close.
    Refused(BtpError),
}

fn error(code: &[u8; 3], name: &str, data: &str) -> BtpError {
    BtpError {
        code: *code,
        name: name.to_owned(),
        triggered_at: Timestamp::now(),
        data: data.to_owned(),
        protocol_data: ProtocolData::new(),
    }
}

/// `F00 NotAcceptedError` with `data`.
pub(crate) fn not_accepted(data: &str) -> BtpError {
    error(b"F00", "NotAcceptedError", data)
}

fn invalid_fields(data: &str) -> AuthOutcome {
    AuthOutcome::Refused(error(b"F01", "InvalidFieldsError", data))
}

/// Checks an auth attempt exactly as the legacy listener does.
pub(crate) fn check_auth(
    frame: &Frame,
    auth: &dyn Authenticator,
    require_username: bool,
) -> AuthOutcome {
    let Packet::Message(pd) = &frame.packet else {
        return invalid_fields(INVALID_METHOD_DATA);
    };
    if !pd.primary().is_some_and(|p| p.name == "auth") {
        return invalid_fields(AUTH_NOT_PRIMARY_DATA);
    }
    let Some(token) = pd.get("auth_token") else {
        return invalid_fields(MISSING_TOKEN_DATA);
    };
    let username = pd.get("auth_username");
    if username.is_none() && require_username {
        return invalid_fields(MISSING_USERNAME_DATA);
    }
    let text = ContentType::TEXT_PLAIN_UTF8;
    let types_ok = token.content_type == text && username.is_none_or(|u| u.content_type == text);
    // Legacy decodes with Buffer#toString(): invalid UTF-8 becomes U+FFFD rather than an error.
    let username_text = username
        .map(|u| String::from_utf8_lossy(&u.data))
        .unwrap_or_default();
    let token_text = String::from_utf8_lossy(&token.data);
    let peer = if types_ok {
        auth.authenticate(&username_text, &token_text)
    } else {
        None
    };
    match peer {
        Some(peer) => {
            let nonce = pd
                .data(NONCE_PROTOCOL)
                .and_then(|d| <[u8; 8]>::try_from(&d[..]).ok())
                .map(u64::from_be_bytes);
            AuthOutcome::Accepted { peer, nonce }
        }
        None => AuthOutcome::Refused(not_accepted(NOT_ACCEPTED_DATA)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(username: &str, token: &str) -> Option<PeerKey> {
        (username.is_empty() && token == "pass").then(|| PeerKey::new("alice"))
    }

    fn refused_data(outcome: AuthOutcome) -> Option<(String, String)> {
        match outcome {
            AuthOutcome::Refused(e) => Some((e.code_str().to_owned(), e.data)),
            AuthOutcome::Accepted { .. } => None,
        }
    }

    #[test]
    fn legacy_client_message_is_accepted_with_nonce() {
        let frame = Frame::new(7, Packet::Message(auth_protocol_data("", "pass", Some(42))));
        match check_auth(&frame, &auth, true) {
            AuthOutcome::Accepted { peer, nonce } => {
                assert_eq!(peer.as_str(), "alice");
                assert_eq!(nonce, Some(42));
            }
            AuthOutcome::Refused(e) => panic!("refused: {e:?}"),
        }
    }

    #[test]
    fn checks_run_in_legacy_order() {
        let f = |packet| Frame::new(1, packet);
        let wrong_type = f(Packet::Response(ProtocolData::new()));
        assert_eq!(
            refused_data(check_auth(&wrong_type, &auth, true)),
            Some(("F01".into(), INVALID_METHOD_DATA.into()))
        );
        // Missing everything: the primary check comes first.
        let empty = f(Packet::Message(ProtocolData::new()));
        assert_eq!(
            refused_data(check_auth(&empty, &auth, true)),
            Some(("F01".into(), AUTH_NOT_PRIMARY_DATA.into()))
        );
        // Neither token nor username: token is reported.
        let only_auth = f(Packet::Message(ProtocolData::new().with(
            ProtocolDataEntry::octets(ProtocolName::from_static("auth"), Vec::new()),
        )));
        assert_eq!(
            refused_data(check_auth(&only_auth, &auth, true)),
            Some(("F01".into(), MISSING_TOKEN_DATA.into()))
        );
        let mut no_user = auth_protocol_data("", "pass", None);
        no_user.entries.retain(|e| e.name != "auth_username");
        let no_user = f(Packet::Message(no_user));
        assert_eq!(
            refused_data(check_auth(&no_user, &auth, true)),
            Some(("F01".into(), MISSING_USERNAME_DATA.into()))
        );
        // interledger-rs style: accepted when usernames are optional.
        assert!(matches!(
            check_auth(&no_user, &auth, false),
            AuthOutcome::Accepted { .. }
        ));
        let bad = f(Packet::Message(auth_protocol_data("", "nope", None)));
        assert_eq!(
            refused_data(check_auth(&bad, &auth, true)),
            Some(("F00".into(), NOT_ACCEPTED_DATA.into()))
        );
        let mut wrong_ct = auth_protocol_data("", "pass", None);
        if let Some(e) = wrong_ct.entries.iter_mut().find(|e| e.name == "auth_token") {
            e.content_type = ContentType::OCTET_STREAM;
        }
        assert_eq!(
            refused_data(check_auth(&f(Packet::Message(wrong_ct)), &auth, true)),
            Some(("F00".into(), NOT_ACCEPTED_DATA.into()))
        );
    }
}
