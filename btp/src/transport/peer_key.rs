//! [`PeerKey`]: the name of the peer a session is with.

use std::fmt;
use std::sync::Arc;

/// Who a session is with: the account name the [`Authenticator`](crate::transport::Authenticator) (listener
/// side) or the host (dialer side) assigned. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(Arc<str>);

impl PeerKey {
    /// A key.
    pub fn new(key: impl AsRef<str>) -> Self {
        PeerKey(Arc::from(key.as_ref()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey({:?})", &*self.0)
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PeerKey {
    fn from(s: &str) -> Self {
        PeerKey::new(s)
    }
}

impl From<String> for PeerKey {
    fn from(s: String) -> Self {
        PeerKey(Arc::from(s))
    }
}
