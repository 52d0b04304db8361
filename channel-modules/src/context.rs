//! [`ChannelContext`]: everything a module may touch (legacy `ctx`): store handles by key, RPC to the peer, the
//! node's clock and the module's options. Never the socket.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::module::ModuleError;
use crate::store::{validate_key, MaxValueTracker, StoreError, TransferLog};

/// What the host (a BTP trustline or a settlement-engine account) provides to its module.
#[async_trait]
pub trait ContextHost: Send + Sync {
    /// The transfer log stored under `key` (already validated). `""` is the trustline's main log.
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError>;
    /// The max-value tracker stored under `key` (already validated).
    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError>;
    /// Sends a module RPC to the peer's module and waits for its reply (BTP Message in trustline mode; a
    /// settlement message through the connectors in engine mode).
    async fn rpc(
        &self,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError>;
    /// The node's clock (injected so tests can move time).
    fn now(&self) -> SystemTime;
    /// Claims the ledger identity `identity` (e.g. `eth:<chainId>:<address>`, `xrp:<channel id>`) for the
    /// account `account_id`, node-wide and durably, with the rules of [`decide_identity_claim`] ("first account
    /// wins" for proven claims, a second proven account makes the identity *contested* and both are refused, a
    /// configured claim takes over from proven holders). `Ok` when `account_id` holds the identity afterwards;
    /// [`ModuleError::NotAccepted`] otherwise. A host serving a single account may use its own account ID
    /// instead of `account_id`. Modules claim an identity before they pin it **and again right before every
    /// credit** on its behalf (one read when nothing changes), so two accounts can never both be credited for
    /// the same on-chain payments or channel, and an account is refused as soon as its identity is contested.
    async fn claim_identity(
        &self,
        identity: &str,
        account_id: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError>;
}

/// Why an account claims a ledger identity (see [`ContextHost::claim_identity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentityOrigin {
    /// The operator named it in the account's options (`peerAddress`, `peerChannel`): trusted, and it takes the
    /// identity over from accounts that only proved it.
    Configured,
    /// The peer proved it (a signed challenge, a claim signed by the channel's key). A proof can be relayed by
    /// a third party that peers with both the owner and us, so a proven claim never silently beats another.
    Proven,
}

impl IdentityOrigin {
    /// The name stored in registry records: `"configured"` or `"proven"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityOrigin::Configured => "configured",
            IdentityOrigin::Proven => "proven",
        }
    }
}

/// Most accounts a contested identity lists (later claimants are refused without being added).
pub const MAX_CONTESTED_ACCOUNTS: usize = 8;

/// One ledger identity's entry in a node's registry (stored as JSON, see [`IdentityRecord::to_json`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityRecord {
    /// Held by `account`.
    Held {
        /// The holding account.
        account: String,
        /// How it claimed the identity.
        origin: IdentityOrigin,
    },
    /// Two or more accounts proved the identity: all of them are refused until a configured claim takes it.
    Contested {
        /// The accounts that proved it, in claim order (at most [`MAX_CONTESTED_ACCOUNTS`]).
        accounts: Vec<String>,
    },
}

impl IdentityRecord {
    /// `{"account": "..", "origin": "proven"|"configured"}` or `{"contested": ["..", ".."]}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            IdentityRecord::Held { account, origin } => {
                serde_json::json!({ "account": account, "origin": origin.as_str() })
            }
            IdentityRecord::Contested { accounts } => serde_json::json!({ "contested": accounts }),
        }
    }

    /// Reads [`IdentityRecord::to_json`]'s form; a bare string (the record of earlier versions: the holding
    /// account) is a proven hold. `None` for anything else.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        if let Some(account) = value.as_str() {
            return Some(IdentityRecord::Held {
                account: account.to_owned(),
                origin: IdentityOrigin::Proven,
            });
        }
        if let Some(accounts) = value.get("contested").and_then(serde_json::Value::as_array) {
            let accounts = accounts
                .iter()
                .map(|a| a.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()?;
            return Some(IdentityRecord::Contested { accounts });
        }
        let account = value.get("account")?.as_str()?.to_owned();
        let origin = match value.get("origin")?.as_str()? {
            "configured" => IdentityOrigin::Configured,
            "proven" => IdentityOrigin::Proven,
            _ => return None,
        };
        Some(IdentityRecord::Held { account, origin })
    }
}

/// What a registry does with one claim: write `write` (if any), then answer `outcome`.
#[derive(Debug)]
#[non_exhaustive]
pub struct IdentityDecision {
    /// The record to store, when it changes.
    pub write: Option<IdentityRecord>,
    /// The claim's answer.
    pub outcome: Result<(), ModuleError>,
}

/// The registry rules every [`ContextHost`] applies to a claim of `identity` by `account` (`existing` is the
/// stored record):
///
/// * free: `account` takes it, with `origin`;
/// * held by `account`: granted (a configured claim upgrades a proven hold to configured);
/// * held by another account that proved it: a **configured** claim takes it over; a **proven** claim makes the
///   identity *contested* (both accounts refused from then on: one of them may have relayed the other's proof,
///   and only the operator can tell which);
/// * held by another account through configuration: refused (configure it on one account only);
/// * contested: a configured claim takes it over (and ends the contest); a proven claim is refused.
pub fn decide_identity_claim(
    identity: &str,
    existing: Option<&IdentityRecord>,
    account: &str,
    origin: IdentityOrigin,
) -> IdentityDecision {
    let held = |origin| IdentityRecord::Held {
        account: account.to_owned(),
        origin,
    };
    let grant = |write| IdentityDecision {
        write,
        outcome: Ok(()),
    };
    match (existing, origin) {
        (None, _) => grant(Some(held(origin))),
        (
            Some(IdentityRecord::Held {
                account: holder,
                origin: held_origin,
            }),
            _,
        ) if holder == account => {
            if origin == IdentityOrigin::Configured && *held_origin == IdentityOrigin::Proven {
                grant(Some(held(origin)))
            } else {
                grant(None)
            }
        }
        (
            Some(IdentityRecord::Held {
                account: holder,
                origin: IdentityOrigin::Configured,
            }),
            _,
        ) => IdentityDecision {
            write: None,
            outcome: Err(identity_taken(identity, holder)),
        },
        (
            Some(IdentityRecord::Held { .. } | IdentityRecord::Contested { .. }),
            IdentityOrigin::Configured,
        ) => grant(Some(held(IdentityOrigin::Configured))),
        (
            Some(IdentityRecord::Held {
                account: holder, ..
            }),
            IdentityOrigin::Proven,
        ) => {
            let accounts = vec![holder.clone(), account.to_owned()];
            IdentityDecision {
                outcome: Err(identity_contested(identity, &accounts)),
                write: Some(IdentityRecord::Contested { accounts }),
            }
        }
        (Some(IdentityRecord::Contested { accounts }), IdentityOrigin::Proven) => {
            let mut accounts = accounts.clone();
            let write = if !accounts.iter().any(|a| a == account)
                && accounts.len() < MAX_CONTESTED_ACCOUNTS
            {
                accounts.push(account.to_owned());
                Some(IdentityRecord::Contested {
                    accounts: accounts.clone(),
                })
            } else {
                None
            };
            let mut named = accounts;
            if !named.iter().any(|a| a == account) {
                named.push(account.to_owned());
            }
            IdentityDecision {
                write,
                outcome: Err(identity_contested(identity, &named)),
            }
        }
    }
}

/// Refusal of [`ContextHost::claim_identity`] when `holder` already holds `identity`.
pub fn identity_taken(identity: &str, holder: &str) -> ModuleError {
    ModuleError::NotAccepted(format!(
        "ledger identity {identity} belongs to another account ({holder})"
    ))
}

/// Refusal of [`ContextHost::claim_identity`] when `identity` is contested between `accounts`.
pub fn identity_contested(identity: &str, accounts: &[String]) -> ModuleError {
    ModuleError::NotAccepted(format!(
        "ledger identity {identity} is contested: accounts {} each proved it (one may be relaying the other's \
         proof), so none of them is credited; configure peerAddress (eth) or peerChannel (xrp) on the \
         rightful account",
        accounts.join(", ")
    ))
}

/// The handle a module receives on every hook. Cheap to clone.
#[derive(Clone)]
pub struct ChannelContext {
    host: Arc<dyn ContextHost>,
    options: Arc<serde_json::Value>,
    account_id: Arc<str>,
}

impl ChannelContext {
    /// Builds a context for the peer or account `account_id`, with the module's `options`.
    pub fn new(
        host: Arc<dyn ContextHost>,
        options: serde_json::Value,
        account_id: impl Into<Arc<str>>,
    ) -> Self {
        ChannelContext {
            host,
            options: Arc::new(options),
            account_id: account_id.into(),
        }
    }

    /// The peer (trustline) or SE account this context belongs to.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The module's options, as configured (legacy plugin options JSON).
    pub fn options(&self) -> &serde_json::Value {
        &self.options
    }

    /// The trustline's main transfer log (key `""`).
    pub fn main_log(&self) -> Result<Arc<dyn TransferLog>, StoreError> {
        self.host.transfer_log("")
    }

    /// A transfer log by key; keys follow the legacy alphabet `[A-Za-z0-9_-]`.
    pub fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        validate_key(key)?;
        self.host.transfer_log(key)
    }

    /// A max-value tracker by key; keys follow the legacy alphabet `[A-Za-z0-9_-]`.
    pub fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        validate_key(key)?;
        self.host.max_value_tracker(key)
    }

    /// RPC to the peer's module.
    pub async fn rpc(
        &self,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError> {
        self.host.rpc(method, args).await
    }

    /// The node's clock.
    pub fn now(&self) -> SystemTime {
        self.host.now()
    }

    /// A handle that does not keep the host (and so its stores) alive: for background tasks, which
    /// [`WeakChannelContext::upgrade`] only while they work and stop once the host is gone.
    pub fn downgrade(&self) -> WeakChannelContext {
        WeakChannelContext {
            host: Arc::downgrade(&self.host),
            options: Arc::clone(&self.options),
            account_id: Arc::clone(&self.account_id),
        }
    }

    /// Claims the ledger identity `identity` for this context's account (see
    /// [`ContextHost::claim_identity`]): refused when another account of the node holds it or it is contested.
    pub async fn claim_identity(
        &self,
        identity: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        self.host
            .claim_identity(identity, &self.account_id, origin)
            .await
    }
}

/// A [`ChannelContext`] that does not keep its host alive (see [`ChannelContext::downgrade`]).
#[derive(Clone)]
pub struct WeakChannelContext {
    host: std::sync::Weak<dyn ContextHost>,
    options: Arc<serde_json::Value>,
    account_id: Arc<str>,
}

impl WeakChannelContext {
    /// The context, if its host still exists.
    pub fn upgrade(&self) -> Option<ChannelContext> {
        Some(ChannelContext {
            host: self.host.upgrade()?,
            options: Arc::clone(&self.options),
            account_id: Arc::clone(&self.account_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "eth:1:0xabc";

    fn held(account: &str, origin: IdentityOrigin) -> IdentityRecord {
        IdentityRecord::Held {
            account: account.to_owned(),
            origin,
        }
    }

    fn contested(accounts: &[&str]) -> IdentityRecord {
        IdentityRecord::Contested {
            accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// Applies a claim to `record` the way every registry does.
    fn claim(
        record: &mut Option<IdentityRecord>,
        account: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        let decision = decide_identity_claim(ID, record.as_ref(), account, origin);
        if let Some(write) = decision.write {
            *record = Some(write);
        }
        decision.outcome
    }

    #[test]
    fn proven_claims_contest_and_configured_claims_take_over() {
        use IdentityOrigin::{Configured, Proven};
        let mut record = None;
        assert!(claim(&mut record, "a", Proven).is_ok());
        assert!(claim(&mut record, "a", Proven).is_ok());
        assert_eq!(record, Some(held("a", Proven)));
        let err = claim(&mut record, "b", Proven);
        assert!(
            matches!(&err, Err(ModuleError::NotAccepted(m)) if m.contains(ID) && m.contains("a, b")),
            "{err:?}"
        );
        assert_eq!(record, Some(contested(&["a", "b"])));
        // Both refused from now on; a third prover is added to the list.
        assert!(claim(&mut record, "a", Proven).is_err());
        assert!(claim(&mut record, "b", Proven).is_err());
        assert!(claim(&mut record, "c", Proven).is_err());
        assert_eq!(record, Some(contested(&["a", "b", "c"])));
        // A configured claim ends the contest.
        assert!(claim(&mut record, "b", Configured).is_ok());
        assert_eq!(record, Some(held("b", Configured)));
        assert!(claim(&mut record, "b", Proven).is_ok());
        assert!(claim(&mut record, "a", Proven).is_err());
        assert!(claim(&mut record, "a", Configured).is_err());
        assert_eq!(record, Some(held("b", Configured)));
        // A configured claim upgrades the holder's own proven hold, and takes another's over.
        let mut record = Some(held("a", Proven));
        assert!(claim(&mut record, "a", Configured).is_ok());
        assert_eq!(record, Some(held("a", Configured)));
        let mut record = Some(held("a", Proven));
        assert!(claim(&mut record, "b", Configured).is_ok());
        assert_eq!(record, Some(held("b", Configured)));
    }

    #[test]
    fn a_contest_lists_a_bounded_number_of_accounts() {
        let mut record = Some(contested(&["a", "b"]));
        for i in 0..MAX_CONTESTED_ACCOUNTS * 2 {
            let account = format!("x{i}");
            let err = claim(&mut record, &account, IdentityOrigin::Proven);
            assert!(
                matches!(&err, Err(ModuleError::NotAccepted(m)) if m.contains(&account)),
                "{err:?}"
            );
        }
        assert!(
            matches!(&record, Some(IdentityRecord::Contested { accounts }) if accounts.len() == MAX_CONTESTED_ACCOUNTS)
        );
    }

    #[test]
    fn records_round_trip_and_earlier_records_are_proven_holds() {
        for record in [
            held("a", IdentityOrigin::Proven),
            held("a", IdentityOrigin::Configured),
            contested(&["a", "b"]),
        ] {
            assert_eq!(IdentityRecord::from_json(&record.to_json()), Some(record));
        }
        assert_eq!(
            IdentityRecord::from_json(&serde_json::json!("alice")),
            Some(held("alice", IdentityOrigin::Proven))
        );
        assert_eq!(
            IdentityRecord::from_json(&serde_json::json!({"account": "a", "origin": "guessed"})),
            None
        );
        assert_eq!(IdentityRecord::from_json(&serde_json::json!(7)), None);
    }
}
