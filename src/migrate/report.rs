//! What a migration found and did, per ledger, and whether everything balances: the report
//! `ilp-bridge migrate-ilp-kit` prints.

use std::fmt;
use std::path::PathBuf;

use channel_modules::store::{Limit, MaxValue, Sums};

use super::source::DatabaseName;

/// The report of one run.
#[derive(Debug, Clone)]
pub struct MigrationReport {
    /// The `env.list` read.
    pub env_file: PathBuf,
    /// The database read (no password); `None` when no ledger needed it.
    pub database: Option<DatabaseName>,
    /// The data folder imported into.
    pub data_dir: PathBuf,
    /// The node TOML written.
    pub config_out: PathBuf,
    /// One entry per `CONNECTOR_LEDGERS` entry, in the order written.
    pub ledgers: Vec<LedgerReport>,
    /// Things the operator must do by hand (also written into the TOML as comments).
    pub notes: Vec<String>,
    /// What happened to the generated configuration.
    pub config: ConfigFate,
    /// The outcome.
    pub outcome: Outcome,
}

/// What happened to the `--config-out` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFate {
    /// Written.
    Written,
    /// It already held exactly this configuration.
    Unchanged,
    /// Would be written (`--dry-run`), or nothing was written.
    NotWritten,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stores and the configuration were written.
    Written,
    /// Everything was already migrated exactly so: nothing changed.
    Unchanged,
    /// `--dry-run`: read and checked, nothing written.
    DryRun,
    /// Refused; nothing was written. The reason says why and what to do.
    Refused(String),
}

/// One `CONNECTOR_LEDGERS` entry.
#[derive(Debug, Clone)]
pub struct LedgerReport {
    /// The ledger prefix.
    pub prefix: String,
    /// Its plugin.
    pub plugin: String,
    /// What became of it.
    pub fate: LedgerFate,
}

/// What became of one ledger.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a handful per run
pub enum LedgerFate {
    /// Taken over by ilp-bridge (written, or to be written).
    Migrated(LedgerMigration),
    /// Not a ledger ilp-bridge takes over (another plugin); does not stop the others.
    NotTaken(String),
    /// Cannot be migrated; the whole migration is refused.
    Failed(String),
}

/// A ledger taken over.
#[derive(Debug, Clone)]
pub struct LedgerMigration {
    /// The peer's name in the generated configuration (the ledger prefix).
    pub peer: String,
    /// How the peer connects (`listens on port …` / `dials …`), no secret.
    pub role: String,
    /// Legacy stateful mode (`store: true`).
    pub stateful: bool,
    /// Configured `maxBalance`.
    pub configured_maximum: Limit,
    /// Configured `minBalance`.
    pub configured_minimum: Limit,
    /// The ledger's scale (`info.currencyScale`), when the options give it.
    pub legacy_scale: Option<u8>,
    /// The plugin store table, for a stateful ledger.
    pub table: Option<TableSummary>,
    /// The transfer logs, main log (`""`) first.
    pub logs: Vec<LogSummary>,
    /// The max-value trackers, by key.
    pub trackers: Vec<(String, MaxValue)>,
    /// Findings that did not stop the import (balance rows that the records do not add up to).
    pub warnings: Vec<String>,
    /// What converting a payment-channel plugin's records found and did (`ilp-plugin-xrp-paychan`), one line each.
    pub conversion: Vec<String>,
    /// Whether the target already held exactly these rows.
    pub already_imported: bool,
}

/// The rows of one plugin store table.
#[derive(Debug, Clone)]
pub struct TableSummary {
    /// Its name.
    pub name: String,
    /// Rows read.
    pub read: usize,
    /// Rows imported.
    pub imported: usize,
    /// Rows skipped, each with the reason.
    pub skipped: Vec<(String, String)>,
}

/// One transfer log of a ledger.
#[derive(Debug, Clone)]
pub struct LogSummary {
    /// Log key (`""` is the main log).
    pub key: String,
    /// The sums the legacy rows hold (IF, OF; the prepared sums equal them, as legacy restores them).
    pub before: Sums,
    /// Records, in any state.
    pub transfers: usize,
    /// Records still prepared, imported as cancelled.
    pub stale_cancelled: usize,
    /// The effective limits the legacy plugin would use: the stored override, else the configured limit.
    pub limits_before: (Limit, Limit),
    /// Whether each limit came from a stored override (`:tl:maximum`, `:tl:minimum`).
    pub overrides: (bool, bool),
    /// What ilp-bridge's store holds after the run (`None` for a dry run: nothing was written to read back).
    pub after: Option<LogState>,
    /// Imported by an earlier run (its import marker matches these rows) and changed since: the node has run.
    /// Not a difference: the earlier run's report checked the import.
    pub moved_since_import: bool,
}

/// A log as ilp-bridge's store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    /// Its sums.
    pub sums: Sums,
    /// Its effective maximum.
    pub maximum: Limit,
    /// Its effective minimum.
    pub minimum: Limit,
}

impl LogSummary {
    /// Whether ilp-bridge's log holds the legacy balance and limits. A dry run compares the planned state.
    pub fn balances(&self) -> bool {
        self.moved_since_import || self.after.as_ref().is_none_or(|after| self.equals(after))
    }

    /// Whether `after` holds the legacy balance and limits.
    pub fn equals(&self, after: &LogState) -> bool {
        after.sums.balance() == self.before.balance()
            && (after.maximum, after.minimum) == self.limits_before
    }
}

impl MigrationReport {
    /// Whether every migrated log holds, in ilp-bridge, the legacy balance and limits.
    pub fn balances(&self) -> bool {
        self.migrated()
            .all(|m| m.logs.iter().all(LogSummary::balances))
    }

    /// The ledgers taken over.
    pub fn migrated(&self) -> impl Iterator<Item = &LedgerMigration> {
        self.ledgers.iter().filter_map(|l| match &l.fate {
            LedgerFate::Migrated(m) => Some(m),
            _ => None,
        })
    }

    /// Whether the run succeeded (written, unchanged or a dry run) and everything balances.
    pub fn success(&self) -> bool {
        !matches!(self.outcome, Outcome::Refused(_)) && self.balances()
    }
}

fn minimum(l: Limit) -> String {
    match l {
        Limit::Unbounded => "-Infinity".to_owned(),
        Limit::Finite(v) => v.to_string(),
    }
}

fn sums(s: &Sums) -> String {
    format!(
        "{} (IF {}, OF {})",
        s.balance(),
        s.incoming_fulfilled,
        s.outgoing_fulfilled
    )
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ILP Kit migration")?;
        writeln!(f, "  env.list:    {}", self.env_file.display())?;
        match &self.database {
            Some(db) => writeln!(f, "  database:    {db}")?,
            None => writeln!(f, "  database:    not read (no stateful ledger)")?,
        }
        writeln!(f, "  data folder: {}", self.data_dir.display())?;
        writeln!(f, "  config:      {}", self.config_out.display())?;
        for ledger in &self.ledgers {
            writeln!(f)?;
            write!(f, "ledger {} ({}): ", ledger.prefix, ledger.plugin)?;
            match &ledger.fate {
                LedgerFate::NotTaken(reason) => writeln!(f, "not migrated: {reason}")?,
                LedgerFate::Failed(reason) => writeln!(f, "CANNOT BE MIGRATED: {reason}")?,
                LedgerFate::Migrated(m) => write_migration(f, m, &self.outcome)?,
            }
        }
        for note in &self.notes {
            writeln!(f)?;
            writeln!(f, "note: {note}")?;
        }
        writeln!(f)?;
        let config = match (self.config, &self.outcome) {
            (ConfigFate::Written, _) => "written",
            (ConfigFate::Unchanged, _) => "unchanged (already holds this configuration)",
            (ConfigFate::NotWritten, Outcome::DryRun) => "not written (dry run)",
            (ConfigFate::NotWritten, _) => "not written",
        };
        writeln!(f, "config {}: {config}", self.config_out.display())?;
        let migrated = self.migrated().count();
        let not_taken = self
            .ledgers
            .iter()
            .filter(|l| matches!(l.fate, LedgerFate::NotTaken(_)))
            .count();
        let counts = format!("{migrated} ledger(s) migrated, {not_taken} not taken over");
        match &self.outcome {
            Outcome::Refused(reason) => {
                writeln!(f, "REFUSED, nothing written: {reason}")?;
                writeln!(f, "everything balances: not checked (nothing written)")
            }
            outcome => {
                let what = match outcome {
                    Outcome::Written => "written",
                    Outcome::Unchanged => "already migrated, nothing changed",
                    _ => "dry run, nothing written",
                };
                writeln!(f, "{counts}; {what}")?;
                if self.balances() {
                    writeln!(
                        f,
                        "everything balances: yes (every balance and limit {} ILP Kit's)",
                        if matches!(outcome, Outcome::DryRun) {
                            "would equal"
                        } else {
                            "in ilp-bridge equals"
                        }
                    )
                } else {
                    writeln!(
                        f,
                        "everything balances: NO (see the ledgers marked DIFFERS above)"
                    )
                }
            }
        }
    }
}

fn write_migration(
    f: &mut fmt::Formatter<'_>,
    m: &LedgerMigration,
    outcome: &Outcome,
) -> fmt::Result {
    writeln!(
        f,
        "peer {:?}, {}, {}",
        m.peer,
        m.role,
        if m.stateful { "stateful" } else { "stateless" }
    )?;
    let Some(table) = &m.table else {
        return writeln!(
            f,
            "  no plugin store (store: false): configuration only; limits {} / {}",
            m.configured_maximum,
            minimum(m.configured_minimum)
        );
    };
    writeln!(
        f,
        "  table {:?}: {} rows read, {} imported, {} skipped",
        table.name,
        table.read,
        table.imported,
        table.skipped.len()
    )?;
    for (key, reason) in &table.skipped {
        writeln!(f, "    skipped {key:?}: {reason}")?;
    }
    if m.logs.is_empty() {
        writeln!(f, "  no transfer log rows: the ledger starts at balance 0")?;
    }
    for log in &m.logs {
        let name = if log.key.is_empty() {
            "main log".to_owned()
        } else {
            format!("log {:?}", log.key)
        };
        let after = match &log.after {
            None => "not written (dry run)".to_owned(),
            Some(a) => sums(&a.sums),
        };
        writeln!(
            f,
            "  {name}: balance before {}, after {after}{}",
            sums(&log.before),
            if log.moved_since_import {
                "  (changed since the earlier import: the node has run)"
            } else if log.balances() {
                ""
            } else {
                "  DIFFERS"
            }
        )?;
        writeln!(
            f,
            "    {} transfers, {} left prepared (imported as cancelled: stale)",
            log.transfers, log.stale_cancelled
        )?;
        let source = |stored: bool, configured: String| {
            if stored {
                format!("stored override; configured {configured}")
            } else {
                "configured".to_owned()
            }
        };
        writeln!(
            f,
            "    limits: maximum {} ({}), minimum {} ({})",
            log.limits_before.0,
            source(log.overrides.0, m.configured_maximum.to_string()),
            minimum(log.limits_before.1),
            source(log.overrides.1, minimum(m.configured_minimum)),
        )?;
        if let Some(a) = &log.after {
            if (a.maximum, a.minimum) != log.limits_before && !log.moved_since_import {
                writeln!(
                    f,
                    "    limits in ilp-bridge: maximum {}, minimum {}  DIFFERS",
                    a.maximum,
                    minimum(a.minimum)
                )?;
            }
        }
    }
    if m.trackers.is_empty() {
        writeln!(f, "  trackers: none")?;
    }
    for (key, t) in &m.trackers {
        writeln!(f, "  tracker {key:?}: value {}, data {}", t.value, t.data)?;
    }
    for w in &m.warnings {
        writeln!(f, "  warning: {w}")?;
    }
    for c in &m.conversion {
        writeln!(f, "  paychan: {c}")?;
    }
    if let Some(main) = m.logs.iter().find(|l| l.key.is_empty()) {
        write_bridge_opening(f, m, main)?;
    }
    let state = match (m.already_imported, outcome) {
        (true, _) => "already imported, unchanged",
        (false, Outcome::Written) => "imported",
        (false, Outcome::DryRun) => "would be imported",
        (false, _) => "not imported",
    };
    writeln!(f, "  store: {state}")
}

/// Bridge mode (README "Bridge mode"): the modern connector's account for this peer takes over ILP Kit's
/// balance with P, so it must start at P's balance (what P received minus what it paid: OF − IF of the main log),
/// and how to set it on interledger-rs, whose only way to move an account's balance from outside is an incoming
/// settlement (a credit: it raises what the connector owes P).
fn write_bridge_opening(
    f: &mut fmt::Formatter<'_>,
    m: &LedgerMigration,
    main: &LogSummary,
) -> fmt::Result {
    let opening = i128::try_from(main.before.outgoing_fulfilled.0).unwrap_or(i128::MAX)
        - i128::try_from(main.before.incoming_fulfilled.0).unwrap_or(i128::MAX);
    let scale = m
        .legacy_scale
        .map_or_else(|| "the ledger's scale".to_owned(), |s| s.to_string());
    writeln!(
        f,
        "  bridge mode: the modern connector's account for {:?} starts at {opening} (scale {scale}; positive: the \
         connector owes P)",
        m.peer
    )?;
    match opening.cmp(&0) {
        std::cmp::Ordering::Equal => writeln!(f, "    nothing to set: a new account starts at 0"),
        std::cmp::Ordering::Greater => writeln!(
            f,
            "    interledger-rs, once the account exists (<id>: its UUID, from GET /accounts/<username>): curl -X POST \
             http://127.0.0.1:7771/accounts/<id>/settlements -H 'Idempotency-Key: ilp-bridge-opening-{}' \
             -H 'Content-Type: application/json' -d '{{\"amount\":\"{opening}\",\"scale\":{scale}}}'",
            m.peer
        ),
        std::cmp::Ordering::Less => writeln!(
            f,
            "    P owes {}: interledger-rs has no call that debits an account, so its account starts at 0 and the debt \
             stays on the bridge's trustline with P; settle it with P before the switch if the connector's books must \
             show it",
            -opening
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_modules::amount::{LedgerBalance, LedgerSum};

    fn sums(incoming: u128, outgoing: u128) -> Sums {
        Sums {
            incoming_fulfilled: LedgerSum(incoming),
            incoming_fulfilled_and_prepared: LedgerSum(incoming),
            outgoing_fulfilled: LedgerSum(outgoing),
            outgoing_fulfilled_and_prepared: LedgerSum(outgoing),
        }
    }

    fn log(after: Option<LogState>, moved: bool) -> LogSummary {
        LogSummary {
            key: String::new(),
            before: sums(10, 3),
            transfers: 2,
            stale_cancelled: 0,
            limits_before: (Limit::Finite(LedgerBalance(1000)), Limit::Unbounded),
            overrides: (false, false),
            after,
            moved_since_import: moved,
        }
    }

    #[test]
    fn a_different_balance_or_limit_does_not_balance() {
        let same = LogState {
            sums: sums(12, 5),
            maximum: Limit::Finite(LedgerBalance(1000)),
            minimum: Limit::Unbounded,
        };
        assert!(
            log(Some(same.clone()), false).balances(),
            "same balance, other sums"
        );
        let other_balance = LogState {
            sums: sums(10, 4),
            ..same.clone()
        };
        assert!(!log(Some(other_balance.clone()), false).balances());
        let other_limit = LogState {
            maximum: Limit::Finite(LedgerBalance(999)),
            ..same
        };
        assert!(!log(Some(other_limit), false).balances());
        // Moved after an earlier, checked import: not a difference.
        assert!(log(Some(other_balance), true).balances());
        assert!(log(None, false).balances());
    }

    /// Renders the bridge-mode lines of a ledger whose main log has `before`.
    fn opening(before: Sums) -> String {
        struct Lines(LedgerMigration, LogSummary);
        impl fmt::Display for Lines {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_bridge_opening(f, &self.0, &self.1)
            }
        }
        let m = LedgerMigration {
            peer: "g.kit.".to_owned(),
            role: String::new(),
            stateful: true,
            configured_maximum: Limit::Unbounded,
            configured_minimum: Limit::Unbounded,
            legacy_scale: Some(9),
            table: None,
            logs: Vec::new(),
            trackers: Vec::new(),
            conversion: Vec::new(),
            warnings: Vec::new(),
            already_imported: false,
        };
        Lines(
            m,
            LogSummary {
                before,
                ..log(None, false)
            },
        )
        .to_string()
    }

    #[test]
    fn the_bridge_opening_balance_is_p_s_balance_with_the_call_that_sets_it() {
        // The node paid P 25 and was paid 10: the connector owes P 15.
        let owed = opening(sums(10, 25));
        assert!(owed.contains("starts at 15 (scale 9;"), "{owed}");
        assert!(
            owed.contains(
                "accounts/<id>/settlements -H 'Idempotency-Key: ilp-bridge-opening-g.kit.' -H 'Content-Type: \
                 application/json' -d '{\"amount\":\"15\",\"scale\":9}'"
            ),
            "{owed}"
        );
        assert!(opening(sums(10, 10)).contains("nothing to set"));
        assert!(opening(sums(10, 3)).contains("P owes 7"));
    }
}
