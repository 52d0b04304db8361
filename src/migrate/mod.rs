//! `ilp-bridge migrate-ilp-kit`: takes a whole ILP Kit deployment over in one run. It reads the `env.list`
//! ([`crate::config::ilp_kit`]) and, for every `CONNECTOR_LEDGERS` entry using the legacy plugin (or the 2017
//! XRP paychan plugin built on it, whose channel records are converted: [`xrp_paychan`]), the ledger's
//! plugin store table in ILP Kit's PostgreSQL ([`source`]); it imports each table with the rules of
//! `import-legacy-store` ([`crate::store::legacy_import`], docs/ilp-kit.md §6) and writes a node TOML holding the
//! peers ([`config_out`]); the [`report`] says, per ledger, what was read, imported and skipped and whether
//! the balances and limits in ilp-bridge equal ILP Kit's.
//!
//! Nothing is half-imported. The run has three phases:
//!
//! 1. **read and plan**: every ledger's peer is built and every table read and parsed; the generated TOML is
//!    loaded with the node's own loader. A ledger that fails any step is listed with its reason;
//! 2. **check the target**: every planned log and tracker is staged against the data folder (a log already
//!    holding other data is a failure; one holding exactly these rows adds nothing). A data folder that holds
//!    records already, or a config file with other content, is refused unless `--force`;
//! 3. **write**: only when no ledger failed, all ledgers' records in one RocksDB write batch, then the TOML.
//!
//! `--dry-run` stops after phase 2. A second run finds everything imported and changes nothing.

pub mod config_out;
pub mod progress;
pub mod report;
pub mod source;
pub mod xrp_paychan;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use channel_modules::store::Limit;
use rocksdb::{IteratorMode, WriteBatch};

use crate::config::error::ConfigError;
use crate::config::ilp_kit::{EnvList, LedgerEntry};
use crate::config::legacy::{validate_peer_set, PeerConfig};
use crate::config::node::NodeConfig;
use crate::store::legacy_import::{plan_legacy_rows, stage_legacy_plan, ImportWarning, LegacyPlan};
use crate::store::schema::SCHEMA_VERSION_KEY;
use crate::store::{Db, RocksStores};
use channel_modules::store::StoreError;

use progress::Progress;
use report::{
    ConfigFate, LedgerFate, LedgerMigration, LedgerReport, LogState, LogSummary, MigrationReport,
    Outcome, TableSummary,
};
use source::{PgSource, SourceError};
use xrp_paychan::XrpLedger;

/// The variables naming ILP Kit's database, in the order ILP Kit's `env.js` reads them.
pub const DATABASE_URL_VARIABLES: &[&str] = &["DB_URI", "API_DB_URI"];

/// What to migrate and where.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// ILP Kit's `env.list`.
    pub env_file: PathBuf,
    /// The database URL; `None`: `DB_URI`, else `API_DB_URI`, from the environment or the `env.list`.
    pub database_url: Option<String>,
    /// ilp-bridge's data folder to import into.
    pub data_dir: PathBuf,
    /// The node TOML to write.
    pub config_out: PathBuf,
    /// Read, plan and check; write nothing.
    pub dry_run: bool,
    /// Import into a data folder that already holds records, and replace a config file with other content.
    pub force: bool,
    /// rippled's JSON-RPC endpoint for `ilp-plugin-xrp-paychan` ledgers; `None`: each ledger's `rippledServer`
    /// ([`xrp_paychan::rippled_json_rpc_url`]).
    pub rippled: Option<String>,
}

/// Why a migration could not even be planned. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The `env.list` or its `CONNECTOR_LEDGERS` is unreadable.
    #[error("reading the ILP Kit configuration {path}")]
    EnvList {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: ConfigError,
    },
    /// No database URL given or found.
    #[error("no database URL: pass --database-url, or set DB_URI or API_DB_URI in the env.list")]
    NoDatabaseUrl,
    /// The database could not be read.
    #[error(transparent)]
    Database(#[from] SourceError),
    /// The data folder could not be opened or read.
    #[error("data folder {path}")]
    Target {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Writing the data folder failed (nothing of the migration was written: one batch).
    #[error("writing the data folder {path}")]
    Write {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Writing the configuration failed (the data folder was written; a rerun finishes the job).
    #[error(
        "writing the configuration {path} (the data folder is written; run again to write it)"
    )]
    ConfigWrite {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A ledger after phase 1.
struct Planned {
    entry: LedgerEntry,
    /// Whether ilp-bridge takes this ledger over (a framework ledger, or one of the XRP paychan plugin).
    taken: bool,
    /// The XRP paychan plugin's options, for its conversion.
    xrp: Option<XrpLedger>,
    fate: Result<Ready, String>,
}

/// A ledger ready to stage.
struct Ready {
    peer: PeerConfig,
    table: Option<PlannedTable>,
    /// What converting a payment-channel plugin's records found and did, one line each.
    conversion: Vec<String>,
}

/// A stateful ledger's table: its name, the import plan of its rows, and the rows skipped before planning
/// (key, reason).
struct PlannedTable {
    name: String,
    plan: LegacyPlan,
    skipped: Vec<(String, String)>,
}

/// Runs a migration; see the module docs. `Err` only when nothing could be planned; a refused migration is an
/// `Ok` report with [`Outcome::Refused`].
pub async fn migrate(
    options: &MigrateOptions,
    progress: &dyn Progress,
) -> Result<MigrationReport, MigrateError> {
    let env_error = |source| MigrateError::EnvList {
        path: options.env_file.display().to_string(),
        source,
    };
    let env = EnvList::read(&options.env_file).map_err(env_error)?;
    let entries = env.ledgers().map_err(env_error)?;

    // Phase 1: peers, then tables.
    let mut planned: Vec<Planned> = entries
        .into_iter()
        .map(|entry| {
            let ready = |peer| Ready {
                peer,
                table: None,
                conversion: Vec::new(),
            };
            let mut xrp = None;
            let fate = if entry.is_legacy() {
                entry.peer().map(ready).map_err(|e| format!("{e:#}"))
            } else if xrp_paychan::is_legacy_xrp(&entry) {
                XrpLedger::from_entry(&entry, options.rippled.as_deref()).and_then(|x| {
                    let peer = x.peer(&entry.prefix);
                    xrp = Some(x);
                    peer.map(ready)
                })
            } else {
                Err(String::new())
            };
            Planned {
                taken: entry.is_legacy() || xrp_paychan::is_legacy_xrp(&entry),
                entry,
                xrp,
                fate,
            }
        })
        .collect();
    let peers: Vec<PeerConfig> = planned
        .iter()
        .filter_map(|p| p.fate.as_ref().ok().map(|r| r.peer.clone()))
        .collect();
    let mut refusal = validate_peer_set(&peers)
        .err()
        .map(|e| format!("the ledgers cannot run together in one node: {e}"));

    let needs_database = planned
        .iter()
        .any(|p| matches!(&p.fate, Ok(r) if r.peer.stateful));
    let source = if needs_database {
        let url = match &options.database_url {
            Some(url) => url.clone(),
            None => DATABASE_URL_VARIABLES
                .iter()
                .find_map(|v| env.get(v))
                .ok_or(MigrateError::NoDatabaseUrl)?,
        };
        Some(PgSource::connect(&url).await?)
    } else {
        None
    };
    let database = source.as_ref().map(|s| s.name().clone());
    if let Some(source) = &source {
        for p in &mut planned {
            let Ok(ready) = &mut p.fate else { continue };
            if !ready.peer.stateful {
                continue;
            }
            let table = source::table_name(&p.entry.prefix);
            let Some(rows) = source.read_table(&p.entry.prefix, progress).await? else {
                p.fate = Err(format!(
                    "table {table:?} not found in database {}: the ledger has store: true, so ILP Kit kept \
                     its balance there (wrong database, or the ledger never started?)",
                    source.name()
                ));
                continue;
            };
            let skipped_nulls: Vec<(String, String)> = rows
                .null_values
                .iter()
                .map(|k| (k.clone(), "value is NULL".to_owned()))
                .collect();
            match plan_legacy_rows(rows.rows) {
                Ok(plan) => {
                    ready.table = Some(PlannedTable {
                        name: table,
                        plan,
                        skipped: skipped_nulls,
                    })
                }
                Err(e) => {
                    p.fate = Err(format!(
                        "table {table:?}: {e} (rows the legacy plugin writes must import whole)"
                    ))
                }
            }
        }
    }
    drop(source);
    for p in &mut planned {
        let (Some(xrp), Ok(ready)) = (&p.xrp, &mut p.fate) else {
            continue;
        };
        if let Err(reason) = convert_xrp(&p.entry.prefix, xrp, ready).await {
            p.fate = Err(reason);
        }
    }

    // The configuration, loaded with the node's loader before anything is written.
    let data_dir = std::path::absolute(&options.data_dir).unwrap_or(options.data_dir.clone());
    let migrated_peers: Vec<&PeerConfig> = planned
        .iter()
        .filter_map(|p| p.fate.as_ref().ok().map(|r| &r.peer))
        .collect();
    let notes = notes(&env, &planned);
    let config_text =
        match config_out::node_toml(&options.env_file, &data_dir, &migrated_peers, &notes) {
            Ok(text) => match NodeConfig::parse(&text) {
                Ok(_) => Some(text),
                Err(e) => {
                    refusal
                        .get_or_insert(format!("the generated configuration does not load: {e:#}"));
                    None
                }
            },
            Err(e) => {
                refusal.get_or_insert(format!("{e}"));
                None
            }
        };

    // Phase 2: stage against the data folder (when it exists: a new one has nothing to check against).
    let mut db = open_existing(&options.data_dir)?;
    let mut batch = WriteBatch::default();
    let mut ledgers = Vec::with_capacity(planned.len());
    let mut readies = Vec::new();
    for p in planned {
        let prefix = p.entry.prefix.clone();
        let plugin = p.entry.plugin.clone();
        let fate = match p.fate {
            Err(reason) if !p.taken => {
                debug_assert!(reason.is_empty());
                LedgerFate::NotTaken(not_taken_reason(&p.entry))
            }
            Err(reason) => LedgerFate::Failed(reason),
            Ok(ready) => {
                let mut m = describe(&ready);
                let staged = match &db {
                    Some(db) => stage_into(db, &ready, &mut batch),
                    None => Ok(false),
                };
                readies.push(ready);
                match staged {
                    Ok(already) => {
                        m.already_imported = already;
                        LedgerFate::Migrated(m)
                    }
                    Err(reason) => LedgerFate::Failed(reason),
                }
            }
        };
        ledgers.push(LedgerReport {
            prefix,
            plugin,
            fate,
        });
    }
    let failed: Vec<&str> = ledgers
        .iter()
        .filter(|l| matches!(l.fate, LedgerFate::Failed(_)))
        .map(|l| l.prefix.as_str())
        .collect();
    if !failed.is_empty() {
        refusal.get_or_insert(format!(
            "ledger(s) {} cannot be migrated (reasons above); fix them and run again",
            failed.join(", ")
        ));
    }
    let store_had_records = match &db {
        Some(db) => !store_is_empty(db).map_err(|source| MigrateError::Target {
            path: options.data_dir.display().to_string(),
            source,
        })?,
        None => false,
    };
    // Records to write: staged ones, or (no database yet) every planned table.
    let store_work =
        !batch.is_empty() || (db.is_none() && readies.iter().any(|r| r.table.is_some()));
    let existing_config = std::fs::read_to_string(&options.config_out).ok();
    let config_unchanged = existing_config.is_some() && existing_config == config_text;
    if refusal.is_none() && !options.force {
        if store_had_records && store_work {
            refusal = Some(format!(
                "data folder {} already holds records; pass --force to import into it (logs holding other \
                 data are refused even then)",
                options.data_dir.display()
            ));
        } else if existing_config.is_some() && !config_unchanged {
            refusal = Some(format!(
                "{} exists with other content; pass --force to replace it, or choose another --config-out",
                options.config_out.display()
            ));
        }
    }

    // Phase 3: write.
    let outcome = if let Some(reason) = refusal {
        Outcome::Refused(reason)
    } else if options.dry_run {
        Outcome::DryRun
    } else if !store_work && config_unchanged {
        Outcome::Unchanged
    } else {
        Outcome::Written
    };
    let mut config = ConfigFate::NotWritten;
    if outcome == Outcome::Written || outcome == Outcome::Unchanged {
        if db.is_none() && store_work {
            let created = create_target(&options.data_dir)?;
            for ready in &readies {
                // A new folder holds nothing a plan could conflict with.
                stage_into(&created, ready, &mut batch).map_err(|reason| MigrateError::Target {
                    path: options.data_dir.display().to_string(),
                    source: StoreError::Io(reason),
                })?;
            }
            db = Some(created);
        }
        if let Some(db) = &db {
            if !batch.is_empty() {
                db.write(batch)
                    .await
                    .map_err(|source| MigrateError::Write {
                        path: options.data_dir.display().to_string(),
                        source,
                    })?;
            }
        }
        if config_unchanged {
            config = ConfigFate::Unchanged;
        } else if let Some(text) = &config_text {
            config_out::write_private(&options.config_out, text).map_err(|source| {
                MigrateError::ConfigWrite {
                    path: options.config_out.display().to_string(),
                    source,
                }
            })?;
            config = ConfigFate::Written;
        }
        if let Some(db) = &db {
            read_back(db, &mut ledgers).map_err(|source| MigrateError::Target {
                path: options.data_dir.display().to_string(),
                source,
            })?;
        }
    } else if outcome == Outcome::DryRun && config_unchanged {
        config = ConfigFate::Unchanged;
    }
    Ok(MigrationReport {
        env_file: options.env_file.clone(),
        database,
        data_dir,
        config_out: options.config_out.clone(),
        ledgers,
        notes,
        config,
        outcome,
    })
}

/// Converts an XRP paychan ledger's records ([`xrp_paychan`]): its trackers become the module's, its peer gets the
/// module's channel options, and the module is built once from them so that options it would refuse at start
/// fail the ledger now.
async fn convert_xrp(prefix: &str, xrp: &XrpLedger, ready: &mut Ready) -> Result<(), String> {
    let Some(table) = &mut ready.table else {
        return Err("no store table was read".to_owned());
    };
    let (conversion, trackers) = xrp.convert(table.plan.trackers()).await?;
    table.plan.replace_trackers(trackers);
    let peer = PeerConfig::from_legacy_json(prefix, &xrp.peer_options(prefix, Some(&conversion)))
        .map_err(|e| format!("the converted peer: {e:#}"))?;
    if let Some(module) = &peer.module {
        channel_modules::build_module(module, &peer.module_options()).map_err(|e| {
            format!(
                "the converted module options are refused: {e} (rippled endpoint {}; name another with --rippled)",
                xrp.rippled
            )
        })?;
    }
    ready.peer = peer;
    ready.conversion = conversion.findings;
    ready.conversion.extend(
        xrp.dropped
            .iter()
            .map(|d| format!("option not carried: {d}")),
    );
    Ok(())
}

/// Opens the data folder if it holds a database (RocksDB's `CURRENT` file); creates nothing.
fn open_existing(dir: &Path) -> Result<Option<Arc<Db>>, MigrateError> {
    if !dir.join("CURRENT").exists() {
        return Ok(None);
    }
    Db::open(dir)
        .map(Some)
        .map_err(|source| MigrateError::Target {
            path: dir.display().to_string(),
            source,
        })
}

/// Creates (or opens) the data folder's database, to write into.
fn create_target(dir: &Path) -> Result<Arc<Db>, MigrateError> {
    let target_error = |source| MigrateError::Target {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| target_error(StoreError::Io(format!("cannot create it: {e}"))))?;
    Db::open(dir).map_err(target_error)
}

/// Whether the database holds no record but its schema version.
fn store_is_empty(db: &Db) -> Result<bool, StoreError> {
    let io = |e: rocksdb::Error| StoreError::Io(e.into_string());
    for item in db.rocks().iterator(IteratorMode::Start) {
        let (key, _) = item.map_err(io)?;
        if &*key != SCHEMA_VERSION_KEY {
            return Ok(false);
        }
    }
    let pending = db.pending_cf()?;
    match db.rocks().iterator_cf(pending, IteratorMode::Start).next() {
        None => Ok(true),
        Some(Ok(_)) => Ok(false),
        Some(Err(e)) => Err(io(e)),
    }
}

/// Describes a ledger as planned (no store involved).
fn describe(ready: &Ready) -> LedgerMigration {
    let peer = &ready.peer;
    let role = match (&peer.listener, &peer.server) {
        (Some(l), _) => format!(
            "listens on port {}{}",
            l.port,
            if l.tls.is_some() { " (TLS)" } else { "" }
        ),
        (None, Some(s)) => format!("dials {}", s.ws_url),
        (None, None) => "no listener nor server".to_owned(),
    };
    let mut migration = LedgerMigration {
        peer: peer.name.clone(),
        role,
        stateful: peer.stateful,
        configured_maximum: peer.max_balance,
        configured_minimum: peer.min_balance,
        legacy_scale: peer.info.as_ref().and_then(|i| i.currency_scale),
        table: None,
        logs: Vec::new(),
        trackers: Vec::new(),
        warnings: Vec::new(),
        conversion: ready.conversion.clone(),
        already_imported: false,
    };
    let Some(PlannedTable {
        name: table,
        plan,
        skipped: skipped_nulls,
    }) = &ready.table
    else {
        return migration;
    };
    let mut skipped = skipped_nulls.clone();
    for w in plan.warnings() {
        match w {
            ImportWarning::UnknownRow(key) => skipped.push((
                key.clone(),
                "not a row the legacy plugin writes (no transfer log, balance, limit or tracker key)"
                    .to_owned(),
            )),
            ImportWarning::BalanceMismatch {
                key,
                balance_rows,
                records,
            } => migration.warnings.push(format!(
                "log {key:?}: the balance rows say IF {}, OF {} but the fulfilled records add up to IF {}, OF {}; \
                 the balance rows were kept (legacy's own balance)",
                balance_rows.0, balance_rows.1, records.0, records.1
            )),
        }
    }
    let read = plan.rows_read() + skipped_nulls.len();
    migration.table = Some(TableSummary {
        name: table.clone(),
        read,
        imported: read - skipped.len(),
        skipped,
    });
    let limit_or = |over: Option<Limit>, configured: Limit| over.unwrap_or(configured);
    migration.logs = plan
        .logs()
        .map(|l| LogSummary {
            key: l.key.clone(),
            before: l.sums,
            transfers: l.transfers,
            stale_cancelled: l.stale_cancelled,
            limits_before: (
                limit_or(l.maximum, peer.max_balance),
                limit_or(l.minimum, peer.min_balance),
            ),
            overrides: (l.maximum.is_some(), l.minimum.is_some()),
            after: None,
            moved_since_import: false,
        })
        .collect();
    migration.trackers = plan.trackers().to_vec();
    migration
}

/// Stages a ledger's plan (if it has a table) into `batch`; `Ok(true)` when the store already holds exactly
/// these rows (nothing staged).
fn stage_into(db: &Arc<Db>, ready: &Ready, batch: &mut WriteBatch) -> Result<bool, String> {
    let Some(PlannedTable { plan, .. }) = &ready.table else {
        return Ok(false);
    };
    let peer = &ready.peer;
    let stores = RocksStores::new(
        Arc::clone(db),
        &peer.name,
        peer.max_balance,
        peer.min_balance,
    );
    let before = batch.len();
    stage_legacy_plan(&stores, plan, batch).map_err(|e| {
        format!("{e} (ilp-bridge never overwrites a balance; use an empty data folder)")
    })?;
    Ok(batch.len() == before)
}

/// Reads every migrated log back from the store, for the report's "after".
fn read_back(db: &Arc<Db>, ledgers: &mut [LedgerReport]) -> Result<(), StoreError> {
    for ledger in ledgers {
        let LedgerFate::Migrated(m) = &mut ledger.fate else {
            continue;
        };
        let stores = RocksStores::new(
            Arc::clone(db),
            &m.peer,
            m.configured_maximum,
            m.configured_minimum,
        );
        for log in &mut m.logs {
            let rocks = stores.rocks_log(&log.key)?;
            use channel_modules::store::TransferLog as _;
            let state = LogState {
                sums: rocks.sums(),
                maximum: rocks.maximum(),
                minimum: rocks.minimum(),
            };
            log.moved_since_import = m.already_imported && !log.equals(&state);
            log.after = Some(state);
        }
    }
    Ok(())
}

/// Why a ledger of another plugin is not taken over.
fn not_taken_reason(entry: &LedgerEntry) -> String {
    let paychan = entry.plugin.contains("paychan") || entry.plugin.contains("payment-channel");
    if paychan {
        format!(
            "plugin {} keeps payment-channel state that migrate-ilp-kit does not convert (it converts \
             {}); its channel and claims stay in ILP Kit's database{}",
            entry.plugin,
            channel_modules::xrp::legacy::LEGACY_XRP_PLUGIN_NAME,
            if entry.store { " (its table was not read)" } else { "" }
        )
    } else {
        format!(
            "plugin {} is not {}; ilp-bridge does not take this ledger over",
            entry.plugin,
            crate::config::ilp_kit::LEGACY_PLUGIN_NAME
        )
    }
}

/// What the operator must do by hand: connector settings ilp-bridge has no equivalent for.
fn notes(env: &EnvList, planned: &[Planned]) -> Vec<String> {
    let mut notes = Vec::new();
    if env.get("CONNECTOR_ROUTES").is_some() {
        notes.push(
            "CONNECTOR_ROUTES is set in ILP Kit but not carried over: ilp-bridge routes a payment to the peer \
             whose ledger prefix the destination starts with, and has no static routes."
                .to_owned(),
        );
    }
    let ledgers: Vec<(&str, &str)> = planned
        .iter()
        .filter(|p| p.fate.is_ok())
        .map(|p| {
            (
                p.entry.prefix.as_str(),
                p.entry
                    .currency
                    .as_deref()
                    .or_else(|| {
                        p.fate
                            .as_ref()
                            .ok()
                            .and_then(|r| r.peer.info.as_ref())
                            .and_then(|i| i.currency_code.as_deref())
                    })
                    .unwrap_or(""),
            )
        })
        .collect();
    let backend = env
        .get("CONNECTOR_BACKEND")
        .unwrap_or_else(|| "the connector's default backend".to_owned());
    for (i, (a, ca)) in ledgers.iter().enumerate() {
        for (b, cb) in &ledgers[i + 1..] {
            if ca != cb {
                notes.push(format!(
                    "no rate between {a} ({ca}) and {b} ({cb}): ILP Kit priced it at run time with {backend}. \
                     Payments between them are refused until you add both directions under [routing], e.g. \
                     rates = [{{ from = \"{a}\", to = \"{b}\", rate = \"…\" }}, {{ from = \"{b}\", to = \"{a}\", rate = \"…\" }}]"
                ));
            }
        }
    }
    notes
}
