//! The on-disk schema version of the node's database: one number, stored under [`SCHEMA_VERSION_KEY`], that
//! covers every record in the RocksDB folder: the transfer logs and max-value trackers of this module (`tl/…`,
//! `mvt/…`, see [`codec`](super::codec)), the settlement engine's records (`se/…`), the ledger identity
//! records (`se/pin/…`), bridge mode's settlement records (`bs/…`, `crate::bridge::settlement::record`) and the
//! channel modules' own logs and trackers, which live inside those namespaces.
//!
//! [`Db::open`](super::Db::open) checks it before anything else reads the database ([`check`]):
//!
//! * no record (a new database): [`SCHEMA_VERSION`] is written, synced;
//! * a version from [`OLDEST_READABLE_SCHEMA_VERSION`] to [`SCHEMA_VERSION`]: the database opens, and the record
//!   forms that version wrote are still read (the table below names them and their readers). An older version
//!   is raised to [`SCHEMA_VERSION`] at open, before any other write, because from then on records of the
//!   current forms are written beside the old ones and a build that only knows the old forms must refuse the
//!   database;
//! * a newer version (written by a later ilp-bridge) or an older one this build no longer reads: refused with
//!   a [`SchemaError`] naming the version found and the versions this build reads. Nothing is written.
//!
//! A change to the key or value form of any record raises [`SCHEMA_VERSION`] and adds a row here; a reader of
//! an older form stays as long as the version that wrote it is readable.
//!
//! # Versions
//!
//! | version | what it holds |
//! |--|--|
//! | 1 | `meta/format`; transfer logs `tl/…` (sums, limit overrides, finished and prepared [`TransferRecord`]s with their own record version byte 1, noted fulfillments, legacy import markers) and trackers `mvt/…` ([`codec`](super::codec)); the settlement engine's accounts, totals, queues, history, credits, idempotency keys and module trackers `se/a|o|i|m|k|q|h|s|c|r/…`; ledger identity records `se/pin/<identity>`; bridge mode's modern-side transfer logs (`tl/…` under `bridge/<pair>`) and settlement records `bs/<pair>/state`, `bs/<pair>/k/<idempotency key>` (JSON) |
//!
//! Version 1 is the only version so far, and it was not raised while some record forms changed: every build
//! to date recorded 1. So a version-1 database may hold records in forms today's build no longer writes, and
//! all of them are still read:
//!
//! | record | form a version-1 database may hold | read as | reader |
//! |--|--|--|--|
//! | ledger identity `se/pin/<identity>` | a bare JSON string, the holding account (today: `{"account", "origin"}` or `{"contested": […]}`) | held by that account, proven | `channel_modules` `IdentityRecord::from_json` |
//! | eth modules' tracker `peer_address` | value 1, data a bare address string (today: value 2, data `{"address", "via"}`) | an unproven pin: kept only once the peer proves that address (or it is the configured `peerAddress`), else refused | `channel_modules::eth::peer::parse_pin`, `PeerAddress::get` |
//! | eth-payment tracker `amount_received` | absent (no marker `amount_received_init`) while the log `eth_payments` holds payments already credited | seeded with the log's incoming fulfilled total at the first `connect`, so that history is not credited again | `EthPaymentModule::seed_amount_received` |
//! | eth-payment tracker `amount_settled_payments` | absent, `amount_settled` listing only `txHashes` | the kept payments list, seeded at the next confirmed payment from those hashes | `channel_modules::eth::payment` `seed_kept_payments` |
//! | eth-channel trackers `outgoing_channel` / `incoming_claim` | a channel of the earlier PaymentChannel contract (`contracts/v1`), and the payee's best claim on it signed with that contract's digest (no chain ID) | the channel takes no new claims; the payee closes it with the kept claim, the payer reclaims it once expired or closed (the contract version is read on chain, not from the record) | `channel_modules::eth::channel` (`ChannelVersion::V1`) |
//! | peer-mode identity records `node/pin/<identity>` | present | not read: the one registry is `se/pin/…`, where a trustline peer holds its identity again at its next proof | — |
//!
//! [`TransferRecord`]: channel_modules::store::TransferRecord

use thiserror::Error;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u8 = 1;

/// The oldest schema version this build opens; the record forms of every version from it to
/// [`SCHEMA_VERSION`] are still read.
pub const OLDEST_READABLE_SCHEMA_VERSION: u8 = 1;

// A build always reads the version it writes.
const _: () = assert!(OLDEST_READABLE_SCHEMA_VERSION <= SCHEMA_VERSION);

/// Where the schema version is stored (default column family): one byte.
pub const SCHEMA_VERSION_KEY: &[u8] = b"meta/format";

/// Why a database cannot be opened by this build.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Written by a later ilp-bridge: its records may be in forms this build does not read.
    #[error(
        "database schema version {found} is newer than this build reads (versions {oldest} to {current}); \
         run an ilp-bridge that reads version {found}"
    )]
    Newer {
        /// The version recorded in the database.
        found: u8,
        /// [`OLDEST_READABLE_SCHEMA_VERSION`].
        oldest: u8,
        /// [`SCHEMA_VERSION`].
        current: u8,
    },
    /// Older than any version this build reads.
    #[error(
        "database schema version {found} is older than this build reads (versions {oldest} to {current})"
    )]
    Older {
        /// The version recorded in the database.
        found: u8,
        /// [`OLDEST_READABLE_SCHEMA_VERSION`].
        oldest: u8,
        /// [`SCHEMA_VERSION`].
        current: u8,
    },
    /// The version record is not one byte.
    #[error("schema version record is {len} bytes long, expected 1")]
    Malformed {
        /// Its length.
        len: usize,
    },
}

/// What opening does with the schema version record it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCheck {
    /// No record: a new database, which gets the current version.
    New,
    /// The current version: nothing to write.
    Current,
    /// A readable older version: the record is raised to the current version.
    Raise {
        /// The version found.
        from: u8,
    },
}

/// Decides on the version record `found` (`None`: absent) for a build that writes `current` and reads back
/// to `oldest`. [`check`] uses [`OLDEST_READABLE_SCHEMA_VERSION`] and [`SCHEMA_VERSION`]; the parameters let
/// the rule be tested for versions that do not exist yet.
pub fn decide(found: Option<&[u8]>, oldest: u8, current: u8) -> Result<SchemaCheck, SchemaError> {
    let Some(found) = found else {
        return Ok(SchemaCheck::New);
    };
    let &[found] = found else {
        return Err(SchemaError::Malformed { len: found.len() });
    };
    if found > current {
        Err(SchemaError::Newer {
            found,
            oldest,
            current,
        })
    } else if found < oldest {
        Err(SchemaError::Older {
            found,
            oldest,
            current,
        })
    } else if found == current {
        Ok(SchemaCheck::Current)
    } else {
        Ok(SchemaCheck::Raise { from: found })
    }
}

/// [`decide`] for this build.
pub fn check(found: Option<&[u8]>) -> Result<SchemaCheck, SchemaError> {
    decide(found, OLDEST_READABLE_SCHEMA_VERSION, SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_build_reads_its_own_version_and_initialises_new_databases() -> Result<(), SchemaError> {
        assert_eq!(check(None)?, SchemaCheck::New);
        assert_eq!(check(Some(&[SCHEMA_VERSION]))?, SchemaCheck::Current);
        Ok(())
    }

    #[test]
    fn a_newer_version_is_refused_naming_the_versions() -> Result<(), Box<dyn std::error::Error>> {
        let found = SCHEMA_VERSION + 1;
        let err = match check(Some(&[found])) {
            Err(err) => err,
            Ok(outcome) => return Err(format!("opened a newer database: {outcome:?}").into()),
        };
        assert_eq!(
            err,
            SchemaError::Newer {
                found,
                oldest: OLDEST_READABLE_SCHEMA_VERSION,
                current: SCHEMA_VERSION
            }
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("version {found} is newer"))
                && text.contains(&format!(
                    "versions {OLDEST_READABLE_SCHEMA_VERSION} to {SCHEMA_VERSION}"
                )),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn older_readable_versions_are_raised_and_unreadable_ones_refused() {
        // A future build that writes version 3 and still reads version 2.
        assert_eq!(decide(Some(&[2]), 2, 3), Ok(SchemaCheck::Raise { from: 2 }));
        assert_eq!(
            decide(Some(&[1]), 2, 3),
            Err(SchemaError::Older {
                found: 1,
                oldest: 2,
                current: 3
            })
        );
        assert_eq!(decide(Some(&[3]), 2, 3), Ok(SchemaCheck::Current));
    }

    #[test]
    fn a_record_that_is_not_one_byte_is_refused() {
        assert_eq!(check(Some(&[])), Err(SchemaError::Malformed { len: 0 }));
        assert_eq!(
            check(Some(&[SCHEMA_VERSION, 0])),
            Err(SchemaError::Malformed { len: 2 })
        );
    }
}
