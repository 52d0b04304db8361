//! Accounts of the mock node: what a test passes (mirroring the fields of interledger-rs's admin
//! `POST /accounts`, docs/modern.md §5.2) and what the node keeps.
//!
//! As in interledger-rs 1.0 (`crates/interledger-store/src/account.rs`): the ID is a fresh UUIDv4; the address
//! defaults to `<node address>.<username>`; the asset code is upper-cased; the routing relation defaults to
//! `NonRoutingAccount`; `max_packet_amount` defaults to `u64::MAX`; the round-trip time used by the expiry
//! shortener is 500 ms.

use btp::ilp_v4::Address;
use url::Url;
use uuid::Uuid;

use super::NodeError;

/// interledger-rs's `DEFAULT_ROUND_TRIP_TIME` (ms): what every account subtracts from a forwarded Prepare's
/// expiry (docs/modern.md §5.11).
pub const DEFAULT_ROUND_TRIP_TIME_MS: u32 = 500;

/// Longest username interledger-rs accepts (`Username`: 2 to 32 characters of `[A-Za-z0-9_-]`).
pub const MAX_USERNAME_CHARS: usize = 32;
/// Shortest username interledger-rs accepts.
pub const MIN_USERNAME_CHARS: usize = 2;

/// The relation of an account to the node (docs/modern.md §4.3): who sends and accepts CCP routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoutingRelation {
    /// No route exchange (the default).
    NonRoutingAccount,
    /// The node's parent: routes are accepted from it; it is asked for the node's address.
    Parent,
    /// Routes go both ways.
    Peer,
    /// The node's child: routes are sent to it.
    Child,
}

impl RoutingRelation {
    /// True for the relations the node sends routes to (Child, Peer).
    pub fn should_send_routes(self) -> bool {
        matches!(self, RoutingRelation::Child | RoutingRelation::Peer)
    }

    /// True for the relations the node accepts routes from (Parent, Peer).
    pub fn should_receive_routes(self) -> bool {
        matches!(self, RoutingRelation::Parent | RoutingRelation::Peer)
    }
}

/// The fields of interledger-rs's `POST /accounts` a test sets. Build with [`AccountDetails::new`] and set the
/// rest directly.
#[derive(Debug, Clone)]
pub struct AccountDetails {
    /// Path component of the account's URLs; 2 to 32 characters of `[A-Za-z0-9_-]`.
    pub username: String,
    /// Asset code (upper-cased when stored).
    pub asset_code: String,
    /// Asset scale.
    pub asset_scale: u8,
    /// Address; `None` means `<node address>.<username>`.
    pub ilp_address: Option<String>,
    /// Relation; `None` means NonRoutingAccount.
    pub routing_relation: Option<RoutingRelation>,
    /// Lowest balance allowed (`None`: no limit).
    pub min_balance: Option<i64>,
    /// Settle when the balance reaches this.
    pub settle_threshold: Option<i64>,
    /// Settle down to this.
    pub settle_to: Option<i64>,
    /// Largest Prepare amount accepted from this account (`None`: `u64::MAX`).
    pub max_packet_amount: Option<u64>,
    /// `ilp_over_btp_url`: the node dials it (client mode).
    pub ilp_over_btp_url: Option<String>,
    /// Token the peer must present on the node's BTP server.
    pub ilp_over_btp_incoming_token: Option<String>,
    /// Token the node presents when it dials.
    pub ilp_over_btp_outgoing_token: Option<String>,
    /// `ilp_over_http_url`: the node POSTs Prepares there.
    pub ilp_over_http_url: Option<String>,
    /// Token the peer must present on the node's ILP-over-HTTP endpoint.
    pub ilp_over_http_incoming_token: Option<String>,
    /// Token the node presents when it POSTs.
    pub ilp_over_http_outgoing_token: Option<String>,
    /// The account's settlement engine.
    pub settlement_engine_url: Option<String>,
}

impl AccountDetails {
    /// Details with a username and asset and every optional field unset.
    pub fn new(username: &str, asset_code: &str, asset_scale: u8) -> Self {
        AccountDetails {
            username: username.to_owned(),
            asset_code: asset_code.to_owned(),
            asset_scale,
            ilp_address: None,
            routing_relation: None,
            min_balance: None,
            settle_threshold: None,
            settle_to: None,
            max_packet_amount: None,
            ilp_over_btp_url: None,
            ilp_over_btp_incoming_token: None,
            ilp_over_btp_outgoing_token: None,
            ilp_over_http_url: None,
            ilp_over_http_incoming_token: None,
            ilp_over_http_outgoing_token: None,
            settlement_engine_url: None,
        }
    }
}

/// An account as the node keeps it. Cheap to clone; handed to tests by [`super::IlpNode::account`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account ID (also the settlement engine's account ID).
    pub id: Uuid,
    /// Username.
    pub username: String,
    /// Address.
    pub ilp_address: Address,
    /// Asset code, upper case.
    pub asset_code: String,
    /// Asset scale.
    pub asset_scale: u8,
    /// Largest Prepare accepted from this account.
    pub max_packet_amount: u64,
    /// Lowest balance allowed.
    pub min_balance: Option<i64>,
    /// Settle threshold.
    pub settle_threshold: Option<i64>,
    /// Settle-to.
    pub settle_to: Option<i64>,
    /// Relation.
    pub routing_relation: RoutingRelation,
    /// Milliseconds the expiry shortener subtracts for this account.
    pub round_trip_time_ms: u32,
    /// BTP URL the node dials (`btp+` prefix kept as given).
    pub ilp_over_btp_url: Option<Url>,
    /// Incoming BTP token.
    pub ilp_over_btp_incoming_token: Option<String>,
    /// Outgoing BTP token.
    pub ilp_over_btp_outgoing_token: Option<String>,
    /// ILP-over-HTTP URL the node POSTs to.
    pub ilp_over_http_url: Option<Url>,
    /// Incoming ILP-over-HTTP token.
    pub ilp_over_http_incoming_token: Option<String>,
    /// Outgoing ILP-over-HTTP token.
    pub ilp_over_http_outgoing_token: Option<String>,
    /// Settlement engine.
    pub settlement_engine_url: Option<Url>,
}

impl Account {
    /// Builds the account interledger-rs would store for `details` on a node whose address is `node_address`.
    pub(crate) fn from_details(
        id: Uuid,
        details: AccountDetails,
        node_address: &Address,
    ) -> Result<Account, NodeError> {
        check_username(&details.username)?;
        let ilp_address = match details.ilp_address {
            Some(a) => Address::new(&a).map_err(|e| NodeError::InvalidAccount {
                field: "ilp_address",
                reason: e.to_string(),
            })?,
            None => with_suffix(node_address, &details.username)?,
        };
        let url = |field: &'static str, value: Option<String>| -> Result<Option<Url>, NodeError> {
            value
                .map(|v| {
                    Url::parse(&v).map_err(|e| NodeError::InvalidAccount {
                        field,
                        reason: e.to_string(),
                    })
                })
                .transpose()
        };
        Ok(Account {
            id,
            username: details.username,
            ilp_address,
            asset_code: details.asset_code.to_uppercase(),
            asset_scale: details.asset_scale,
            max_packet_amount: details.max_packet_amount.unwrap_or(u64::MAX),
            min_balance: details.min_balance,
            settle_threshold: details.settle_threshold,
            settle_to: details.settle_to,
            routing_relation: details
                .routing_relation
                .unwrap_or(RoutingRelation::NonRoutingAccount),
            round_trip_time_ms: DEFAULT_ROUND_TRIP_TIME_MS,
            ilp_over_btp_url: url("ilp_over_btp_url", details.ilp_over_btp_url)?,
            ilp_over_btp_incoming_token: details.ilp_over_btp_incoming_token,
            ilp_over_btp_outgoing_token: details.ilp_over_btp_outgoing_token,
            ilp_over_http_url: url("ilp_over_http_url", details.ilp_over_http_url)?,
            ilp_over_http_incoming_token: details.ilp_over_http_incoming_token,
            ilp_over_http_outgoing_token: details.ilp_over_http_outgoing_token,
            // interledger-rs drops a settlement engine URL it cannot parse (`Url::parse(..).ok()`).
            settlement_engine_url: details
                .settlement_engine_url
                .and_then(|u| Url::parse(&u).ok()),
        })
    }
}

/// `<address>.<suffix>`, as interledger-rs's `Address::with_suffix`.
pub(crate) fn with_suffix(address: &Address, suffix: &str) -> Result<Address, NodeError> {
    Address::new(&format!("{address}.{suffix}")).map_err(|e| NodeError::InvalidAccount {
        field: "ilp_address",
        reason: e.to_string(),
    })
}

fn check_username(username: &str) -> Result<(), NodeError> {
    let len = username.chars().count();
    let ok = (MIN_USERNAME_CHARS..=MAX_USERNAME_CHARS).contains(&len)
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(NodeError::InvalidAccount {
            field: "username",
            reason: format!(
                "{username:?} is not {MIN_USERNAME_CHARS} to {MAX_USERNAME_CHARS} characters of [A-Za-z0-9_-]"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_interledger_rs() -> Result<(), Box<dyn std::error::Error>> {
        let node = Address::new("example.node")?;
        let id = Uuid::new_v4();
        let a = Account::from_details(id, AccountDetails::new("bob", "xrp", 9), &node)?;
        assert_eq!(a.ilp_address.as_str(), "example.node.bob");
        assert_eq!(a.asset_code, "XRP");
        assert_eq!(a.max_packet_amount, u64::MAX);
        assert_eq!(a.routing_relation, RoutingRelation::NonRoutingAccount);
        let mut d = AccountDetails::new("x", "XRP", 9);
        assert!(Account::from_details(id, d.clone(), &node).is_err());
        d.username = "has space".to_owned();
        assert!(Account::from_details(id, d, &node).is_err());
        Ok(())
    }

    #[test]
    fn relations() {
        assert!(RoutingRelation::Child.should_send_routes());
        assert!(RoutingRelation::Peer.should_send_routes());
        assert!(!RoutingRelation::Parent.should_send_routes());
        assert!(RoutingRelation::Parent.should_receive_routes());
        assert!(!RoutingRelation::Child.should_receive_routes());
        assert!(!RoutingRelation::NonRoutingAccount.should_receive_routes());
        assert!(RoutingRelation::Child > RoutingRelation::Peer);
        assert!(RoutingRelation::Peer > RoutingRelation::Parent);
    }
}
