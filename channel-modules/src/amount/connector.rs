//! Connector units: an ILPv4 packet's amount, in the units of the connector account it travels on (that
//! account's asset scale). The bridge carries a legacy transfer to the modern side as a [`ConnectorAmount`]
//! with its `Scales`; the settlement engine's RFC 38 Quantities carry their scale with them
//! (`ilp_bridge::settlement::quantity::Scaled`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ILPv4 amount (a UInt64 on the wire) at the scale of the connector account it is sent on.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectorAmount(pub u64);

impl ConnectorAmount {
    /// Nothing.
    pub const ZERO: ConnectorAmount = ConnectorAmount(0);

    /// True for a zero amount.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// The bare integer, as the plain integer this type replaced printed, so logs and messages read the same.
impl fmt::Debug for ConnectorAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ConnectorAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
