//! Imports a legacy plugin store into a [`RocksStores`] namespace.
//!
//! The legacy plugin (docs/legacy-btp.md §12) keeps string rows: `<key>:tl:transfer:<id>` (JSON
//! `{"transfer":{…},"isIncoming":bool,"state":"prepared|fulfilled|cancelled"[,"fulfillment"]}`),
//! `<key>:tl:balance:if|of` and `<key>:tl:maximum|minimum` (decimal strings, BigNumber notation), and
//! `<key>:mvt:maximum` (`{"value":"dec","data":any}`). ILP Kit keeps the same rows in the Postgres table
//! `plugin_store_<prefix>s` (columns `key`, `value`); the main log's key is `''`, so its rows start with `:tl:`.
//! [`rows_from_json_object`] reads a `{key: value}` dump and [`rows_from_csv`] a `COPY … TO STDOUT WITH
//! (FORMAT csv)` export of that table.
//!
//! Rules (docs/ilp-kit.md §6, "Migration rules"):
//! * the balance is reproduced exactly: IF and OF are taken from the balance rows, so balance = IF − OF;
//!   IFP = IF and OFP = OF, because
//! * records still `prepared` are stale: they are imported as cancelled (reason [`STALE_REASON`]) and their
//!   amounts are not held;
//! * stored `maximum`/`minimum` rows become the log's overrides (they beat the configured limits, as in legacy);
//! * the records are cross-checked against the balance rows: a difference is reported as an
//!   [`ImportWarning::BalanceMismatch`], never silently (the balance rows still win);
//! * the legacy `to`, `from` and `ledger` fields are not kept (ilp-bridge derives them from the peer).
//!
//! An import is planned first ([`plan_legacy_rows`]: every row parsed and checked, no store touched), then
//! staged ([`stage_legacy_plan`]: the target checked, the writes added to a batch) and written in one batch
//! (records, sums, overrides and per log an import marker holding a digest of its rows; the trackers).
//! Importing the same rows again changes nothing; importing different rows into a log that already has data is
//! refused. Import before the namespace's stores are opened. `ilp-bridge migrate-ilp-kit` plans every ledger
//! before it stages any and writes all ledgers in one batch.
//!
//! The values inside the rows (BigNumber integers, base64url, ISO times) are read by the parsers of
//! `values.rs` ([`parse_legacy_integer`], [`parse_iso_ms`], …).

use std::collections::BTreeMap;

use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::store::{
    validate_key, Direction, Limit, MaxValue, StoreError, Sums, Transfer, TransferId,
    TransferRecord, TransferState,
};
use rocksdb::{ColumnFamily, Direction as IterDirection, IteratorMode, WriteBatch};
use sha2::{Digest, Sha256};

use super::codec::{self, tag};
use super::{Db, RocksStores};

mod values;

use values::{decode_b64url, decode_b64url_32};
pub use values::{
    parse_iso_ms, parse_legacy_integer, parse_legacy_natural, Base64Error, IsoTimeError,
    LegacyNumberError, JS_MAX_DATE_MS, JS_MAX_YEAR,
};

/// Cancellation reason given to records that were still prepared in the legacy store.
pub const STALE_REASON: &str = "stale at migration";

/// Errors that stop an import. Nothing of the failing log is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A row that does not parse as the legacy plugin writes it.
    #[error("legacy row {key:?}: {reason}")]
    BadRow {
        /// The row's key.
        key: String,
        /// What is wrong.
        #[source]
        reason: RowError,
    },
    /// The target log or tracker already holds other data.
    #[error("store {key:?} in namespace {namespace:?} already holds data; import refused")]
    NotEmpty {
        /// Namespace.
        namespace: String,
        /// Log or tracker key.
        key: String,
    },
    /// The target is already open in this process (its in-memory state would go stale).
    #[error("store {0:?} is open; import before opening the namespace's stores")]
    InUse(String),
    /// The input dump itself does not parse (a CSV dump: the line and what is wrong).
    #[error("legacy dump: {0}")]
    BadDump(String),
    /// A JSON dump that does not parse.
    #[error("legacy dump: {0}")]
    DumpJson(#[source] serde_json::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What is wrong with one legacy row.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// The row breaks a rule of the legacy layout (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// The row's value is not JSON.
    #[error(transparent)]
    Json(serde_json::Error),
    /// A number that does not parse as BigNumber.js prints one.
    #[error(transparent)]
    Number(#[from] LegacyNumberError),
    /// A base64url field that does not decode.
    #[error("{field}: {source}")]
    Base64 {
        /// The field.
        field: &'static str,
        /// Why.
        #[source]
        source: Base64Error,
    },
    /// A time field that does not parse.
    #[error("{field}: {source}")]
    Time {
        /// The field.
        field: &'static str,
        /// Why.
        #[source]
        source: IsoTimeError,
    },
}

impl From<&str> for RowError {
    fn from(message: &str) -> Self {
        RowError::Invalid(message.to_owned())
    }
}

impl From<String> for RowError {
    fn from(message: String) -> Self {
        RowError::Invalid(message)
    }
}

/// Findings that do not stop the import but must be looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportWarning {
    /// The fulfilled records do not add up to the balance rows (the balance rows were kept).
    BalanceMismatch {
        /// Log key.
        key: String,
        /// `(IF, OF)` from the balance rows.
        balance_rows: (u128, u128),
        /// `(IF, OF)` summed from the fulfilled records.
        records: (u128, u128),
    },
    /// A row this importer does not know (skipped).
    UnknownRow(String),
}

/// What happened to one transfer log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogImport {
    /// Log key (`""` for the main log).
    pub key: String,
    /// The imported sums (IFP = IF, OFP = OF).
    pub sums: Sums,
    /// Records imported, in any state.
    pub transfers: usize,
    /// Records that were still prepared and were imported as cancelled.
    pub stale_cancelled: usize,
    /// Maximum override, if a row held one.
    pub maximum: Option<Limit>,
    /// Minimum override, if a row held one.
    pub minimum: Option<Limit>,
    /// True when these exact rows had been imported before (nothing was written).
    pub already_imported: bool,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// One entry per transfer log, in key order.
    pub logs: Vec<LogImport>,
    /// Tracker keys imported (or found already imported), in key order.
    pub trackers: Vec<String>,
    /// Warnings; empty for a consistent store.
    pub warnings: Vec<ImportWarning>,
}

/// Reads a `{"key": "value", …}` JSON object (the legacy `ObjStore` dump) into rows.
pub fn rows_from_json_object(json: &str) -> Result<Vec<(String, String)>, ImportError> {
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(ImportError::DumpJson)?;
    map.into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(s) => Ok((key, s)),
            other => Err(ImportError::BadRow {
                key,
                reason: RowError::Invalid(format!("value is not a string: {other}")),
            }),
        })
        .collect()
}

/// Reads `key,value[,…]` CSV rows (RFC 4180 quoting, as Postgres `COPY … WITH (FORMAT csv)` writes them);
/// columns after the second (`createdAt`, `updatedAt`) are ignored, and a first row `key,value,…` is skipped.
pub fn rows_from_csv(csv: &str) -> Result<Vec<(String, String)>, ImportError> {
    let mut rows = Vec::new();
    let mut chars = csv.chars().peekable();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1usize;
    loop {
        let Some(c) = chars.next() else {
            if !field.is_empty() || !record.is_empty() {
                record.push(std::mem::take(&mut field));
                push_csv_record(&mut rows, std::mem::take(&mut record), line)?;
            }
            break;
        };
        match c {
            '"' if field.is_empty() => loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(other) => {
                        if other == '\n' {
                            line += 1;
                        }
                        field.push(other)
                    }
                    None => {
                        return Err(ImportError::BadDump(format!(
                            "line {line}: unterminated quote"
                        )))
                    }
                }
            },
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                push_csv_record(&mut rows, std::mem::take(&mut record), line)?;
                line += 1;
            }
            other => field.push(other),
        }
    }
    Ok(rows)
}

fn push_csv_record(
    rows: &mut Vec<(String, String)>,
    record: Vec<String>,
    line: usize,
) -> Result<(), ImportError> {
    if record.len() == 1 && record[0].is_empty() {
        return Ok(()); // blank line
    }
    let mut fields = record.into_iter();
    match (fields.next(), fields.next()) {
        (Some(key), Some(_)) if line == 1 && key == "key" => Ok(()),
        (Some(key), Some(value)) => {
            rows.push((key, value));
            Ok(())
        }
        _ => Err(ImportError::BadDump(format!(
            "line {line}: expected key,value"
        ))),
    }
}

/// Rows of one legacy transfer log.
#[derive(Default)]
struct LogRows {
    transfers: BTreeMap<String, String>,
    incoming_fulfilled: Option<String>,
    outgoing_fulfilled: Option<String>,
    maximum: Option<String>,
    minimum: Option<String>,
}

impl LogRows {
    /// Digest of every row of the log, in a fixed order: proves a repeated import carries the same rows.
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |name: &str, v: &Option<String>| {
            h.update(name.as_bytes());
            match v {
                Some(v) => {
                    h.update([1]);
                    h.update((v.len() as u64).to_le_bytes());
                    h.update(v.as_bytes());
                }
                None => h.update([0]),
            }
        };
        field("if", &self.incoming_fulfilled);
        field("of", &self.outgoing_fulfilled);
        field("max", &self.maximum);
        field("min", &self.minimum);
        for (id, value) in &self.transfers {
            h.update((id.len() as u64).to_le_bytes());
            h.update(id.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value.as_bytes());
        }
        h.finalize().into()
    }
}

fn bad(key: &str, reason: impl Into<RowError>) -> ImportError {
    ImportError::BadRow {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// One transfer log of a [`LegacyPlan`], parsed and checked.
#[derive(Debug, Clone)]
struct PlannedLog {
    summary: LogImport,
    records: Vec<TransferRecord>,
    digest: [u8; 32],
}

/// The rows of one legacy store, parsed and checked, not yet written: what [`stage_legacy_plan`] writes. Made by
/// [`plan_legacy_rows`], which touches no store, so that every store of a migration can be checked before the
/// first one is written.
#[derive(Debug, Clone, Default)]
pub struct LegacyPlan {
    logs: Vec<PlannedLog>,
    trackers: Vec<(String, MaxValue)>,
    warnings: Vec<ImportWarning>,
    rows_read: usize,
}

impl LegacyPlan {
    /// One entry per transfer log, in key order, as it will be imported (`already_imported` is false here).
    pub fn logs(&self) -> impl Iterator<Item = &LogImport> {
        self.logs.iter().map(|l| &l.summary)
    }

    /// The max-value trackers, by key, in key order.
    pub fn trackers(&self) -> &[(String, MaxValue)] {
        &self.trackers
    }

    /// Replaces the trackers to import (a converter's records in place of the plugin's), kept in key order.
    pub fn replace_trackers(&mut self, mut trackers: Vec<(String, MaxValue)>) {
        trackers.sort_by(|a, b| a.0.cmp(&b.0));
        self.trackers = trackers;
    }

    /// Findings that do not stop the import (unknown rows are skipped, balance mismatches reported).
    pub fn warnings(&self) -> &[ImportWarning] {
        &self.warnings
    }

    /// Rows given.
    pub fn rows_read(&self) -> usize {
        self.rows_read
    }

    /// Rows skipped because no rule of the legacy layout covers them ([`ImportWarning::UnknownRow`]).
    pub fn rows_skipped(&self) -> usize {
        self.warnings
            .iter()
            .filter(|w| matches!(w, ImportWarning::UnknownRow(_)))
            .count()
    }
}

/// Parses legacy rows into a [`LegacyPlan`] without touching any store. A row that breaks the legacy layout
/// fails the whole plan ([`ImportError::BadRow`]); a row no rule covers is skipped with a warning.
pub fn plan_legacy_rows(
    rows: impl IntoIterator<Item = (String, String)>,
) -> Result<LegacyPlan, ImportError> {
    let mut logs: BTreeMap<String, LogRows> = BTreeMap::new();
    let mut trackers: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut plan = LegacyPlan::default();
    for (row_key, value) in rows {
        plan.rows_read += 1;
        let Some((key, rest)) = row_key.split_once(':') else {
            plan.warnings.push(ImportWarning::UnknownRow(row_key));
            continue;
        };
        if validate_key(key).is_err() {
            return Err(bad(&row_key, "key outside [A-Za-z0-9_-]"));
        }
        if rest == "mvt:maximum" {
            trackers.insert(key.to_owned(), (row_key.clone(), value));
            continue;
        }
        let Some(tl) = rest.strip_prefix("tl:") else {
            plan.warnings.push(ImportWarning::UnknownRow(row_key));
            continue;
        };
        let log = logs.entry(key.to_owned()).or_default();
        match tl {
            "balance:if" => log.incoming_fulfilled = Some(value),
            "balance:of" => log.outgoing_fulfilled = Some(value),
            "maximum" => log.maximum = Some(value),
            "minimum" => log.minimum = Some(value),
            other => match other.strip_prefix("transfer:") {
                Some(id) => {
                    log.transfers.insert(id.to_owned(), value);
                }
                None => plan.warnings.push(ImportWarning::UnknownRow(row_key)),
            },
        }
    }
    for (key, rows) in &logs {
        let (planned, warning) = plan_log(key, rows)?;
        plan.logs.push(planned);
        plan.warnings.extend(warning);
    }
    for (key, (row_key, value)) in trackers {
        let entry = parse_tracker(&row_key, &value)?;
        plan.trackers.push((key, entry));
    }
    Ok(plan)
}

/// Checks `plan` against `stores`' namespace and adds its writes to `batch`; writes nothing itself. A log or
/// tracker already holding exactly these rows adds nothing (reported as `already_imported`); one holding other
/// data fails with [`ImportError::NotEmpty`], one open in this process with [`ImportError::InUse`].
pub fn stage_legacy_plan(
    stores: &RocksStores,
    plan: &LegacyPlan,
    batch: &mut WriteBatch,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport {
        warnings: plan.warnings.clone(),
        ..ImportReport::default()
    };
    for log in &plan.logs {
        report.logs.push(stage_log(stores, log, batch)?);
    }
    for (key, entry) in &plan.trackers {
        stage_tracker(stores, key, entry, batch)?;
        report.trackers.push(key.clone());
    }
    Ok(report)
}

/// Imports legacy rows into `stores`' namespace, in one write. See the module docs for the rules.
pub async fn import_legacy_rows(
    stores: &RocksStores,
    rows: impl IntoIterator<Item = (String, String)>,
) -> Result<ImportReport, ImportError> {
    let plan = plan_legacy_rows(rows)?;
    let mut batch = WriteBatch::default();
    let report = stage_legacy_plan(stores, &plan, &mut batch)?;
    for warning in &report.warnings {
        tracing::warn!(?warning, namespace = stores.namespace(), "legacy import");
    }
    if !batch.is_empty() {
        stores.db().write(batch).await?;
    }
    for log in report.logs.iter().filter(|l| !l.already_imported) {
        tracing::info!(
            namespace = stores.namespace(),
            key = %log.key,
            transfers = log.transfers,
            stale = log.stale_cancelled,
            balance = %log.sums.balance(),
            "legacy transfer log imported"
        );
    }
    Ok(report)
}

fn plan_log(key: &str, rows: &LogRows) -> Result<(PlannedLog, Option<ImportWarning>), ImportError> {
    let row = |name: &str| format!("{key}:tl:{name}");
    let parse_sum = |name: &str, v: &Option<String>| -> Result<u128, ImportError> {
        match v {
            None => Ok(0),
            Some(v) => {
                let n = parse_legacy_integer(v).map_err(|e| bad(&row(name), e))?;
                u128::try_from(n)
                    .ok()
                    .filter(|n| *n <= LedgerSum::MAX.0)
                    .ok_or_else(|| bad(&row(name), "negative or too large"))
            }
        }
    };
    let incoming_fulfilled = parse_sum("balance:if", &rows.incoming_fulfilled)?;
    let outgoing_fulfilled = parse_sum("balance:of", &rows.outgoing_fulfilled)?;
    let parse_limit = |name: &str, v: &Option<String>| -> Result<Option<Limit>, ImportError> {
        v.as_deref()
            .map(|v| match v.trim() {
                "Infinity" | "-Infinity" => Ok(Limit::Unbounded),
                other => parse_legacy_integer(other)
                    .map(|n| Limit::Finite(LedgerBalance(n)))
                    .map_err(|e| bad(&row(name), e)),
            })
            .transpose()
    };
    let maximum = parse_limit("maximum", &rows.maximum)?;
    let minimum = parse_limit("minimum", &rows.minimum)?;

    let mut records = Vec::with_capacity(rows.transfers.len());
    let (mut records_if, mut records_of, mut stale) = (0u128, 0u128, 0usize);
    for (id, json) in &rows.transfers {
        let row_key = row(&format!("transfer:{id}"));
        let record = parse_legacy_record(&row_key, id, json)?;
        match (&record.state, record.direction) {
            (TransferState::Fulfilled { .. }, Direction::Incoming) => {
                records_if += u128::from(record.transfer.amount.0)
            }
            (TransferState::Fulfilled { .. }, Direction::Outgoing) => {
                records_of += u128::from(record.transfer.amount.0)
            }
            (TransferState::Cancelled { reason }, _) if reason == STALE_REASON => stale += 1,
            _ => {}
        }
        records.push(record);
    }
    let sums = Sums {
        incoming_fulfilled: LedgerSum(incoming_fulfilled),
        incoming_fulfilled_and_prepared: LedgerSum(incoming_fulfilled),
        outgoing_fulfilled: LedgerSum(outgoing_fulfilled),
        outgoing_fulfilled_and_prepared: LedgerSum(outgoing_fulfilled),
    };
    let warning =
        ((records_if, records_of) != (incoming_fulfilled, outgoing_fulfilled)).then(|| {
            ImportWarning::BalanceMismatch {
                key: key.to_owned(),
                balance_rows: (incoming_fulfilled, outgoing_fulfilled),
                records: (records_if, records_of),
            }
        });
    let summary = LogImport {
        key: key.to_owned(),
        sums,
        transfers: records.len(),
        stale_cancelled: stale,
        maximum,
        minimum,
        already_imported: false,
    };
    Ok((
        PlannedLog {
            summary,
            records,
            digest: rows.digest(),
        },
        warning,
    ))
}

fn stage_log(
    stores: &RocksStores,
    log: &PlannedLog,
    batch: &mut WriteBatch,
) -> Result<LogImport, ImportError> {
    let db = stores.db();
    let key = log.summary.key.as_str();
    let prefix = codec::log_prefix(stores.namespace(), key)?;
    if db.has_live_instance(&prefix) {
        return Err(ImportError::InUse(key.to_owned()));
    }
    let mut result = log.summary.clone();
    let marker_key = codec::sub_key(&prefix, tag::IMPORTED, None);
    if let Some(marker) = db.get(&marker_key)? {
        if marker.as_slice() == log.digest.as_slice() {
            result.already_imported = true;
            return Ok(result);
        }
        return Err(not_empty(stores, key));
    }
    let has_data = db.get(&codec::sub_key(&prefix, tag::SUMS, None))?.is_some()
        || db
            .get(&codec::sub_key(&prefix, tag::MAXIMUM, None))?
            .is_some()
        || db
            .get(&codec::sub_key(&prefix, tag::MINIMUM, None))?
            .is_some()
        || has_key_with_prefix(db, None, &codec::sub_key(&prefix, tag::FINISHED, None))?
        || has_key_with_prefix(
            db,
            Some(db.pending_cf()?),
            &codec::sub_key(&prefix, tag::PREPARED, None),
        )?;
    if has_data {
        return Err(not_empty(stores, key));
    }
    for record in &log.records {
        batch.put(
            codec::sub_key(&prefix, tag::FINISHED, Some(&record.transfer.id)),
            codec::encode_record(record)?,
        );
    }
    batch.put(
        codec::sub_key(&prefix, tag::SUMS, None),
        codec::encode_sums(&result.sums),
    );
    if let Some(maximum) = result.maximum {
        batch.put(
            codec::sub_key(&prefix, tag::MAXIMUM, None),
            codec::encode_limit(maximum),
        );
    }
    if let Some(minimum) = result.minimum {
        batch.put(
            codec::sub_key(&prefix, tag::MINIMUM, None),
            codec::encode_limit(minimum),
        );
    }
    batch.put(marker_key, log.digest);
    Ok(result)
}

fn not_empty(stores: &RocksStores, key: &str) -> ImportError {
    ImportError::NotEmpty {
        namespace: stores.namespace().to_owned(),
        key: key.to_owned(),
    }
}

fn parse_tracker(row_key: &str, value: &str) -> Result<MaxValue, ImportError> {
    let json: serde_json::Value =
        serde_json::from_str(value).map_err(|e| bad(row_key, RowError::Json(e)))?;
    let value_field = json.get("value").ok_or_else(|| bad(row_key, "no value"))?;
    let digits = match value_field {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(bad(row_key, format!("value is {other}"))),
    };
    Ok(MaxValue {
        value: parse_legacy_natural(&digits).map_err(|e| bad(row_key, e))?,
        data: json.get("data").cloned().unwrap_or(serde_json::Value::Null),
    })
}

fn stage_tracker(
    stores: &RocksStores,
    key: &str,
    entry: &MaxValue,
    batch: &mut WriteBatch,
) -> Result<(), ImportError> {
    let db = stores.db();
    let mvt_key = codec::mvt_key(stores.namespace(), key)?;
    if db.has_live_instance(&mvt_key) {
        return Err(ImportError::InUse(key.to_owned()));
    }
    let encoded = codec::encode_max_value(entry)?;
    if let Some(existing) = db.get(&mvt_key)? {
        if existing == encoded {
            return Ok(());
        }
        return Err(not_empty(stores, key));
    }
    batch.put(mvt_key, encoded);
    Ok(())
}

/// Whether any key of column family `cf` (default when `None`) starts with `prefix`. Reads at most one entry, so
/// testing a log with a long history for emptiness does not load that history.
fn has_key_with_prefix(
    db: &Db,
    cf: Option<&ColumnFamily>,
    prefix: &[u8],
) -> Result<bool, StoreError> {
    let mode = IteratorMode::From(prefix, IterDirection::Forward);
    let mut iter = match cf {
        Some(cf) => db.rocks().iterator_cf(cf, mode),
        None => db.rocks().iterator(mode),
    };
    match iter.next() {
        None => Ok(false),
        Some(Ok((key, _))) => Ok(key.starts_with(prefix)),
        Some(Err(e)) => Err(StoreError::Io(e.into_string())),
    }
}

fn parse_legacy_record(row_key: &str, id: &str, json: &str) -> Result<TransferRecord, ImportError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(row_key, RowError::Json(e)))?;
    let t = v
        .get("transfer")
        .ok_or_else(|| bad(row_key, "no transfer"))?;
    let str_field = |name: &str| -> Result<&str, ImportError> {
        t.get(name)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| bad(row_key, format!("transfer.{name} missing or not a string")))
    };
    let transfer_id: TransferId = str_field("id")?
        .parse()
        .map_err(|_| bad(row_key, "transfer.id is not a UUID"))?;
    if id.parse::<TransferId>().ok() != Some(transfer_id) {
        return Err(bad(row_key, "row key and transfer.id differ"));
    }
    let amount = match t.get("amount") {
        Some(serde_json::Value::String(s)) => parse_legacy_integer(s).map_err(RowError::from),
        Some(serde_json::Value::Number(n)) => {
            parse_legacy_integer(&n.to_string()).map_err(RowError::from)
        }
        _ => Err(RowError::from("transfer.amount missing")),
    }
    .and_then(|n| {
        u64::try_from(n).map_err(|_| RowError::Invalid(format!("amount {n} outside 0..2^64")))
    })
    .map_err(|e| bad(row_key, e))?;
    let base64 = |field: &'static str| move |source| RowError::Base64 { field, source };
    let execution_condition = decode_b64url_32(str_field("executionCondition")?)
        .map_err(|e| bad(row_key, base64("executionCondition")(e)))?;
    let expires_at_ms = parse_iso_ms(str_field("expiresAt")?).map_err(|source| {
        bad(
            row_key,
            RowError::Time {
                field: "expiresAt",
                source,
            },
        )
    })?;
    let ilp = match t.get("ilp") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(s)) => {
            decode_b64url(s).map_err(|e| bad(row_key, base64("ilp")(Base64Error::Decode(e))))?
        }
        Some(other) => return Err(bad(row_key, format!("ilp is {other}"))),
    };
    let custom = t.get("custom").cloned();
    let direction = match v.get("isIncoming").and_then(serde_json::Value::as_bool) {
        Some(true) => Direction::Incoming,
        Some(false) => Direction::Outgoing,
        None => return Err(bad(row_key, "isIncoming missing")),
    };
    let state = match v.get("state").and_then(serde_json::Value::as_str) {
        Some("prepared") => TransferState::Cancelled {
            reason: STALE_REASON.to_owned(),
        },
        Some("cancelled") => TransferState::Cancelled {
            reason: "cancelled (legacy import)".to_owned(),
        },
        Some("fulfilled") => {
            let f = v
                .get("fulfillment")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| bad(row_key, "fulfilled without fulfillment"))?;
            TransferState::Fulfilled {
                fulfillment: decode_b64url_32(f)
                    .map_err(|e| bad(row_key, base64("fulfillment")(e)))?,
            }
        }
        other => return Err(bad(row_key, format!("unknown state {other:?}"))),
    };
    Ok(TransferRecord {
        transfer: Transfer {
            id: transfer_id,
            amount: LedgerAmount(amount),
            execution_condition,
            expires_at_ms,
            ilp,
            custom,
        },
        direction,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_as_postgres_copies_it() {
        let csv = "key,value,createdAt,updatedAt\n\
                   :tl:balance:if,13,2017-01-01,2017-01-01\n\
                   \"a:mvt:maximum\",\"{\"\"value\"\":\"\"7\"\",\"\"data\"\":null}\",x,y\r\n";
        assert_eq!(
            rows_from_csv(csv).ok(),
            Some(vec![
                (":tl:balance:if".to_owned(), "13".to_owned()),
                (
                    "a:mvt:maximum".to_owned(),
                    "{\"value\":\"7\",\"data\":null}".to_owned()
                ),
            ])
        );
        assert!(rows_from_csv("\"open").is_err());
    }
}
