//! Checks of names and of a whole set of peers, made before any peer starts: peer names (store namespaces),
//! ILP prefixes, and what peers sharing one listener must agree on.

use super::error::ConfigError;
use super::legacy::{PeerConfig, Secret, TlsFiles};

/// Checks a peer name. The name is the peer's store namespace (`tl/` and `mvt/` keys, see
/// [`crate::store::codec::log_prefix`]), which it shares with the settlement engine's `se/<account>` namespaces:
/// a `/` would let a peer named `se/acct` read and write that engine account's logs and trackers, so it is
/// refused. Control characters are refused too (names appear in logs and error messages), and names longer than
/// the store's [`NAME_MAX_BYTES`](crate::store::codec::NAME_MAX_BYTES) could never be stored.
pub fn validate_peer_name(name: &str) -> Result<(), PeerNameError> {
    if name.is_empty() {
        return Err(PeerNameError::Empty);
    }
    if name.len() > crate::store::codec::NAME_MAX_BYTES {
        return Err(PeerNameError::TooLong);
    }
    if let Some(found) = name.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(PeerNameError::Reserved {
            name: name.to_owned(),
            found,
        });
    }
    Ok(())
}

/// Why [`validate_peer_name`] refused a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerNameError {
    /// The name is empty.
    #[error("must not be empty")]
    Empty,
    /// Longer than the store can hold.
    #[error("longer than {} bytes", crate::store::codec::NAME_MAX_BYTES)]
    TooLong,
    /// The name holds a `/` or a control character.
    #[error(
        "{name:?} contains {found:?}; \"/\" is reserved for internal store namespaces (e.g. \"se/<account>\") \
         and control characters are not allowed"
    )]
    Reserved {
        /// The name.
        name: String,
        /// The character refused.
        found: char,
    },
}

/// Checks that a set of peers can run together in one node, before any of them starts:
///
/// * every name is valid ([`validate_peer_name`]) and unique;
/// * peers sharing a listener port have distinct `incomingSecret`s: the port's authentication picks the peer by
///   secret, so with a duplicate the second peer's client would log in as the first and its transfers would land in
///   the first peer's log;
/// * peers sharing a listener port have the same TLS settings (one socket has one TLS configuration; otherwise the
///   files of one peer would silently apply to all).
///
/// Errors name both peers (never the secret).
pub fn validate_peer_set(peers: &[PeerConfig]) -> Result<(), ConfigError> {
    let peer_field = |name: &str, f: &str| format!("peer {name:?}.{f}");
    let mut first_on_port: std::collections::BTreeMap<u16, &PeerConfig> =
        std::collections::BTreeMap::new();
    for (i, p) in peers.iter().enumerate() {
        validate_peer_name(&p.name)
            .map_err(|r| ConfigError::value(peer_field(&p.name, "name"), r))?;
        if peers[..i].iter().any(|q| q.name == p.name) {
            return Err(ConfigError::field(
                peer_field(&p.name, "name"),
                format!("peer {:?} is configured twice", p.name),
            ));
        }
        let Some(listener) = &p.listener else {
            continue;
        };
        let port = listener.port;
        for q in peers[..i].iter() {
            let Some(q_listener) = &q.listener else {
                continue;
            };
            if q_listener.port != port {
                continue;
            }
            if incoming_secret(q) == incoming_secret(p) {
                return Err(ConfigError::field(
                    peer_field(&p.name, "incomingSecret"),
                    format!(
                        "peers {:?} and {:?} listen on port {port} with the same incomingSecret, so their clients \
                         could not be told apart; give each peer on a shared port its own secret",
                        q.name, p.name
                    ),
                ));
            }
        }
        match first_on_port.get(&port) {
            None => {
                first_on_port.insert(port, p);
            }
            Some(first) => {
                let first_tls = first.listener.as_ref().and_then(|l| l.tls.as_ref());
                if first_tls != listener.tls.as_ref() {
                    let describe = |t: Option<&TlsFiles>| match t {
                        None => "no TLS".to_owned(),
                        Some(t) => format!(
                            "TLS cert {}, key {}, ca {}",
                            t.cert.display(),
                            t.key.display(),
                            t.ca.display()
                        ),
                    };
                    return Err(ConfigError::field(
                        peer_field(&p.name, "listener"),
                        format!(
                            "peers {:?} ({}) and {:?} ({}) share listener port {port} with different TLS \
                             settings; peers on one port must use the same cert, key and ca, or all none",
                            first.name,
                            describe(first_tls),
                            p.name,
                            describe(listener.tls.as_ref())
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The token a peer's inbound client must present (`""` when none is configured, as the listener checks it).
fn incoming_secret(c: &PeerConfig) -> &str {
    c.incoming_secret.as_ref().map_or("", Secret::expose)
}

/// Longest ILP prefix accepted, in characters (an ILP address is at most 1023 characters).
pub const PREFIX_MAX_LEN: usize = 1023;

/// Checks an ILP prefix: non-empty, ILP address characters only. Legacy prefixes end with `.`.
pub fn validate_prefix(p: &str) -> Result<(), PrefixError> {
    if p.is_empty() {
        return Err(PrefixError::Empty);
    }
    if p.len() > PREFIX_MAX_LEN {
        return Err(PrefixError::TooLong);
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')))
    {
        return Err(PrefixError::Character(c));
    }
    if !p.ends_with('.') {
        return Err(PrefixError::NoTrailingDot);
    }
    Ok(())
}

/// Why [`validate_prefix`] refused a prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrefixError {
    /// The prefix is empty.
    #[error("must not be empty")]
    Empty,
    /// Longer than [`PREFIX_MAX_LEN`].
    #[error("longer than {PREFIX_MAX_LEN} characters")]
    TooLong,
    /// A character an ILP address cannot hold.
    #[error("character {0:?} is not allowed in an ILP address")]
    Character(char),
    /// The prefix does not end with `.`.
    #[error("must end with \".\" (legacy prefixes are followed by \"server\"/\"client\")")]
    NoTrailingDot,
}
