//! The database's schema version (`ilp_bridge::store::schema`) as opening sees it: a new database records the
//! current version, a database of an unknown (newer) version is refused and left as it was, and a version-1
//! database written record by record in its documented byte forms (not through today's encoder) opens and
//! reads.

use std::path::Path;

use channel_modules::amount::{LedgerAmount, LedgerBalance, LedgerSum};
use channel_modules::store::{Direction, Limit, MaxValue, TransferId, TransferState};
use ilp_bridge::store::schema::{SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use ilp_bridge::store::{Db, RocksStores};
use num_bigint::BigUint;
use rocksdb::{Options, DB};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Column families of the node's database, as the store creates them.
const COLUMN_FAMILIES: [&str; 2] = ["default", "pending"];

/// Opens the folder with plain RocksDB (no schema check, no writer thread).
fn raw(path: &Path) -> Result<DB, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    DB::open_cf(&opts, path, COLUMN_FAMILIES)
}

fn recorded_version(path: &Path) -> Result<Option<Vec<u8>>, rocksdb::Error> {
    raw(path)?.get(SCHEMA_VERSION_KEY)
}

#[test]
fn a_new_database_records_the_current_schema_version() -> TestResult {
    let dir = tempfile::tempdir()?;
    drop(Db::open(dir.path())?);
    assert_eq!(recorded_version(dir.path())?, Some(vec![SCHEMA_VERSION]));
    // The version the docs' table describes as current.
    assert_eq!(SCHEMA_VERSION, 1);
    // Opening again keeps it.
    drop(Db::open(dir.path())?);
    assert_eq!(recorded_version(dir.path())?, Some(vec![SCHEMA_VERSION]));
    Ok(())
}

#[test]
fn a_database_of_a_newer_schema_version_is_refused_and_left_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let newer = SCHEMA_VERSION + 1;
    {
        let db = raw(dir.path())?;
        db.put(SCHEMA_VERSION_KEY, [newer])?;
        db.put(b"tl/some-record", b"written by a later build")?;
    }
    let err = match Db::open(dir.path()) {
        Err(err) => err.to_string(),
        Ok(_) => return Err("a database of a newer schema version opened".into()),
    };
    assert!(
        err.contains(&format!("schema version {newer} is newer"))
            && err.contains(&format!("versions 1 to {SCHEMA_VERSION}")),
        "the error names the version found and the versions this build reads: {err}"
    );
    assert_eq!(recorded_version(dir.path())?, Some(vec![newer]));
    Ok(())
}

#[test]
fn a_malformed_schema_version_record_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    raw(dir.path())?.put(SCHEMA_VERSION_KEY, [SCHEMA_VERSION, 0])?;
    match Db::open(dir.path()) {
        Err(err) => assert!(err.to_string().contains("2 bytes long"), "{err}"),
        Ok(_) => return Err("a malformed version record was accepted".into()),
    }
    Ok(())
}

/// `name` as version 1 writes a namespace or key: u16 big-endian length, then the bytes.
fn name(out: &mut Vec<u8>, name: &str) -> Result<(), std::num::TryFromIntError> {
    out.extend_from_slice(&u16::try_from(name.len())?.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// A version-1 transfer record: record version 1, direction, state, id, amount (u64 LE), condition, expiry
/// (i64 LE ms), ilp (u32 LE length + bytes), no custom data, then the fulfillment of a fulfilled record.
fn record_v1(incoming: bool, fulfillment: Option<[u8; 32]>, id: [u8; 16], amount: u64) -> Vec<u8> {
    let mut out = vec![1, u8::from(!incoming), u8::from(fulfillment.is_some())];
    out.extend_from_slice(&id);
    out.extend_from_slice(&amount.to_le_bytes());
    out.extend_from_slice(&[0xcc; 32]);
    out.extend_from_slice(&1_506_816_000_000i64.to_le_bytes());
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(b"ilp");
    out.push(0);
    if let Some(f) = fulfillment {
        out.extend_from_slice(&f);
    }
    out
}

#[tokio::test]
async fn a_version_1_database_opens_and_its_records_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (finished, prepared) = ([1u8; 16], [2u8; 16]);
    {
        let db = raw(dir.path())?;
        let pending = db.cf_handle("pending").ok_or("no pending family")?;
        db.put(SCHEMA_VERSION_KEY, [1])?;
        let mut log = b"tl/".to_vec();
        name(&mut log, "peer-a")?;
        name(&mut log, "")?;
        let key = |tag: u8, id: Option<&[u8; 16]>| {
            let mut k = log.clone();
            k.push(tag);
            k.extend_from_slice(id.map_or(&[][..], |id| &id[..]));
            k
        };
        // Sums: incoming fulfilled 10, incoming fulfilled + prepared 15, outgoing 0 and 0 (four u128 LE).
        let mut sums = Vec::new();
        for v in [10u128, 15, 0, 0] {
            sums.extend_from_slice(&v.to_le_bytes());
        }
        db.put(key(b's', None), sums)?;
        // Maximum override: tag 0, then i128 LE.
        let mut maximum = vec![0u8];
        maximum.extend_from_slice(&500i128.to_le_bytes());
        db.put(key(b'x', None), maximum)?;
        db.put(
            key(b't', Some(&finished)),
            record_v1(true, Some([0xf0; 32]), finished, 10),
        )?;
        db.put_cf(
            pending,
            key(b'p', Some(&prepared)),
            record_v1(true, None, prepared, 5),
        )?;
        // Tracker: value as a u32 LE length + big-endian magnitude, then the data as JSON.
        let mut tracker = b"mvt/".to_vec();
        name(&mut tracker, "peer-a")?;
        name(&mut tracker, "incoming_claim")?;
        let mut entry = 1u32.to_le_bytes().to_vec();
        entry.push(42);
        entry.extend_from_slice(br#"{"sig":"x"}"#);
        db.put(tracker, entry)?;
    }

    let db = Db::open(dir.path())?;
    let stores = RocksStores::new(
        db,
        "peer-a",
        Limit::Finite(LedgerBalance(100)),
        Limit::Unbounded,
    );
    let log = stores.transfer_log("")?;
    assert_eq!(log.balance(), LedgerBalance(10));
    assert_eq!(log.sums().incoming_fulfilled_and_prepared, LedgerSum(15));
    assert_eq!(log.maximum(), Limit::Finite(LedgerBalance(500)));
    let done = log.get(&TransferId(finished)).await?.ok_or("finished")?;
    assert_eq!(
        done.state,
        TransferState::Fulfilled {
            fulfillment: [0xf0; 32]
        }
    );
    assert_eq!(done.direction, Direction::Incoming);
    let open = log.get(&TransferId(prepared)).await?.ok_or("prepared")?;
    assert_eq!(
        (open.state, open.transfer.amount),
        (TransferState::Prepared, LedgerAmount(5))
    );
    assert_eq!(
        stores
            .max_value_tracker("incoming_claim")?
            .get_max()
            .await?,
        MaxValue {
            value: BigUint::from(42u8),
            data: serde_json::json!({"sig": "x"}),
        }
    );
    // It stays a version-1 database that today's build keeps writing to.
    log.fulfill(&TransferId(prepared), &[0xf1; 32]).await?;
    assert_eq!(log.balance(), LedgerBalance(15));
    drop((log, stores));
    assert_eq!(recorded_version(dir.path())?, Some(vec![1]));
    Ok(())
}
