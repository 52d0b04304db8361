//! Ledger identities: which account of a node holds an identity on a ledger (`eth:<chainId>:<address>`,
//! `xrp:<channel id>`), so that two accounts are never both credited for the same on-chain payments or channel.
//!
//! This module holds the rules ([`decide_identity_hold`]) and the record types; a registry that stores the
//! records lives in each host (the root crate's identity registry), which a module reaches through
//! [`crate::ChannelContext::hold_identity`].

use crate::error::ModuleError;

/// Why an account holds a ledger identity (see [`crate::ContextHost::hold_identity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentityOrigin {
    /// The operator named it in the account's options (`peerAddress`, `peerChannel`): trusted, and it takes the
    /// identity over from accounts that only proved it.
    Configured,
    /// The peer proved it (a signed challenge, a claim signed by the channel's key). A proof can be relayed by
    /// a third party that peers with both the owner and us, so a proven hold never silently beats another.
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

/// Most accounts a contested identity lists (later contenders are refused without being added).
pub const MAX_CONTESTED_ACCOUNTS: usize = 8;

/// One ledger identity's entry in a node's registry (stored as JSON, see [`IdentityRecord::to_json`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityRecord {
    /// Held by `account`.
    Held {
        /// The holding account.
        account: String,
        /// How it came to hold the identity.
        origin: IdentityOrigin,
    },
    /// Two or more accounts proved the identity: all of them are refused until a configured hold takes it.
    Contested {
        /// The accounts that proved it, in the order they asked (at most [`MAX_CONTESTED_ACCOUNTS`]).
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

    /// Reads [`IdentityRecord::to_json`]'s form, and the record form that names only the holding account (a
    /// bare JSON string, with no origin), read as a proven hold. `None` for anything else.
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

/// What a registry does with one request to hold an identity: write `write` (if any), then answer `outcome`.
#[derive(Debug)]
#[non_exhaustive]
pub struct IdentityDecision {
    /// The record to store, when it changes.
    pub write: Option<IdentityRecord>,
    /// The request's answer.
    pub outcome: Result<(), ModuleError>,
}

/// The registry rules every [`crate::ContextHost`] applies when `account` asks to hold `identity` (`existing` is the
/// stored record):
///
/// * free: `account` takes it, with `origin`;
/// * held by `account`: granted (a configured hold upgrades a proven hold to configured);
/// * held by another account that proved it: a **configured** hold takes it over; a **proven** one makes the
///   identity *contested* (both accounts refused from then on: one of them may have relayed the other's proof,
///   and only the operator can tell which);
/// * held by another account through configuration: refused (configure it on one account only);
/// * contested: a configured hold takes it over (and ends the contest); a proven one is refused.
pub fn decide_identity_hold(
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

/// Refusal of [`crate::ContextHost::hold_identity`] when `holder` already holds `identity`.
pub(crate) fn identity_taken(identity: &str, holder: &str) -> ModuleError {
    ModuleError::NotAccepted(format!(
        "ledger identity {identity} belongs to another account ({holder})"
    ))
}

/// Refusal of [`crate::ContextHost::hold_identity`] when `identity` is contested between `accounts`.
pub(crate) fn identity_contested(identity: &str, accounts: &[String]) -> ModuleError {
    ModuleError::NotAccepted(format!(
        "ledger identity {identity} is contested: accounts {} each proved it (one may be relaying the other's \
         proof), so none of them is credited; configure peerAddress (eth) or peerChannel (xrp) on the \
         rightful account",
        accounts.join(", ")
    ))
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

    /// Applies a request to hold the identity to `record` the way every registry does.
    fn hold(
        record: &mut Option<IdentityRecord>,
        account: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        let decision = decide_identity_hold(ID, record.as_ref(), account, origin);
        if let Some(write) = decision.write {
            *record = Some(write);
        }
        decision.outcome
    }

    #[test]
    fn proven_holds_contest_and_configured_holds_take_over() {
        use IdentityOrigin::{Configured, Proven};
        let mut record = None;
        assert!(hold(&mut record, "a", Proven).is_ok());
        assert!(hold(&mut record, "a", Proven).is_ok());
        assert_eq!(record, Some(held("a", Proven)));
        let err = hold(&mut record, "b", Proven);
        assert!(
            matches!(&err, Err(ModuleError::NotAccepted(m)) if m.contains(ID) && m.contains("a, b")),
            "{err:?}"
        );
        assert_eq!(record, Some(contested(&["a", "b"])));
        // Both refused from now on; a third prover is added to the list.
        assert!(hold(&mut record, "a", Proven).is_err());
        assert!(hold(&mut record, "b", Proven).is_err());
        assert!(hold(&mut record, "c", Proven).is_err());
        assert_eq!(record, Some(contested(&["a", "b", "c"])));
        // A configured hold ends the contest.
        assert!(hold(&mut record, "b", Configured).is_ok());
        assert_eq!(record, Some(held("b", Configured)));
        assert!(hold(&mut record, "b", Proven).is_ok());
        assert!(hold(&mut record, "a", Proven).is_err());
        assert!(hold(&mut record, "a", Configured).is_err());
        assert_eq!(record, Some(held("b", Configured)));
        // A configured hold upgrades the holder's own proven hold, and takes another's over.
        let mut record = Some(held("a", Proven));
        assert!(hold(&mut record, "a", Configured).is_ok());
        assert_eq!(record, Some(held("a", Configured)));
        let mut record = Some(held("a", Proven));
        assert!(hold(&mut record, "b", Configured).is_ok());
        assert_eq!(record, Some(held("b", Configured)));
    }

    #[test]
    fn a_contest_lists_a_bounded_number_of_accounts() {
        let mut record = Some(contested(&["a", "b"]));
        for i in 0..MAX_CONTESTED_ACCOUNTS * 2 {
            let account = format!("x{i}");
            let err = hold(&mut record, &account, IdentityOrigin::Proven);
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
    fn records_round_trip_and_bare_account_records_are_proven_holds() {
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
