//! [`Db`]: the node's one RocksDB database (one folder per node) and its durable, group-committed write path.
//!
//! Every part of the node that must not lose data writes through [`Db::write`] (or [`Db::submit`]): the transfer
//! logs and max-value trackers of this module, and the settlement engine's state. The contract:
//!
//! * **Atomic:** one call = one `WriteBatch`, applied all or nothing.
//! * **Durable:** `write` returns `Ok` only after the batch is in the WAL *and the WAL is synced*.
//! * **Ordered:** batches become durable in the order they were submitted. A batch submitted after another never
//!   becomes visible or durable before it.
//! * **Group commit:** one group write at a time takes every batch queued since the last one, concatenates them
//!   into one `WriteBatch` and writes it with `sync = true`, so N concurrent writers share one fsync. Who writes
//!   a group: the task that waits for a synced batch ([`WriteTicket::wait`], [`Db::wait_durable`]) when no group
//!   write is under way (*leader write*: it takes the queue and writes and syncs it on its own thread, with no
//!   hand-off to another thread and back), else the dedicated writer thread, which the waiting task wakes and
//!   which also times the syncs of deferred batches. A deferred batch is written by its submitter when writes
//!   come one at a time (see below), else by the writer thread. Taking the queue and writing it happen under
//!   one lock, so groups are written in submission order whoever writes them. A leader blocks its runtime thread for
//!   one group write and sync (a fraction of a millisecond on a local disk), as RocksDB's own writers do;
//!   [`DbOptions::leader_writes`] turns it off.
//! * **Latest-value puts:** a batch may carry one put whose key holds a running value (a log's sums) through
//!   [`Db::submit_with_latest`]. Within a group only the last such put of each key is written, after the
//!   group's other records: the group is one atomic `WriteBatch`, so the outcome is the same as writing every
//!   put, with one memtable insert instead of one per batch.
//! * **Deferred batches** ([`Db::submit_deferred`]) are written in the same order but do not ask for a sync
//!   of their own: a group made only of them is written without one, and becomes durable with the next synced
//!   group, or at most [`DEFERRED_SYNC_DELAY`] later when nothing else comes. Either way a deferred batch is
//!   written (unsynced: into the page cache) as soon as no other group write is under way, never held back
//!   for a later group: it survives a crash of the process, and only a power cut can lose it. Callers use them
//!   only where losing the change in a power cut is harmless (see `TransferLog::prepare_deferred`); they save
//!   the disk a flush that would delay the synced writes behind it.
//! * **Poisoning:** if a write or sync ever fails, the database is poisoned: that group's writers get
//!   [`StoreError::Io`], and every later write [`StoreError::Poisoned`]. After a failed fsync the kernel may have
//!   dropped dirty pages while reporting later syncs as successful ("fsyncgate", Rebello et al., ATC '20), so
//!   the only safe recovery is a restart, which rereads what really reached the disk.
//!
//! Key space (one default column family plus [`PENDING_CF`]): the store module uses keys starting with `meta/`,
//! `tl/` and `mvt/` (see [`codec`]). Other users pick their own prefix (e.g. `se/`) and document it
//! there; the admin listener's `/ready` writes `admin/ready-probe` ([`crate::admin::READY_PROBE_KEY`]). One
//! schema version covers every record ([`schema`]); opening refuses a database of a version this build does
//! not read.
//!
//! [`PENDING_CF`] is a small column family for records that are usually short-lived (prepared transfers). Kept
//! apart, their deletion tombstones are compacted away quickly and never slow down a start-up scan of what is
//! still pending, however long the history.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;

use channel_modules::clock::unix_ms;
use channel_modules::store::StoreError;
use channel_modules::sync::lock;
use rocksdb::compaction_filter::Decision as CompactionDecision;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, Direction as IterDirection,
    IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use tokio::sync::{oneshot, watch};

use super::codec;
use super::schema::{self, SchemaCheck, SCHEMA_VERSION, SCHEMA_VERSION_KEY};

/// Column family for short-lived records (prepared transfers). Its memtable is a vector, not a skip list:
/// appends are cheap on the single writer thread, and the family is only read by scans — at start-up (when
/// RocksDB has flushed the recovered memtable, so they read sorted files) and by rare operations while running
/// (opening a log, loading or deleting an engine account), each of which sorts a copy of the memtable (at most
/// `PENDING_WRITE_BUFFER_BYTES`, 4 MiB: a few milliseconds). There is deliberately no point read of this
/// family: on a vector memtable each one would sort it.
pub const PENDING_CF: &str = "pending";

/// What RocksDB holds in memory for one database ([`Db::memory`]), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DbMemory {
    /// Data blocks in the block cache (bounded by the cache's capacity, 64 MiB).
    pub block_cache_bytes: u64,
    /// Memtables of both column families, including immutable ones waiting for their flush.
    pub memtable_bytes: u64,
    /// Index and filter blocks held by the open table files' readers (they grow with the stored history).
    pub table_reader_bytes: u64,
}

/// A `(key, value)` pair as returned by the prefix scans.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Memtable size of [`PENDING_CF`]: small, so tombstones of finished transfers flush and compact away early.
const PENDING_WRITE_BUFFER_BYTES: usize = 4 << 20;
/// Memtable size of the default column family. Smaller memtables make each skip-list insert cheaper (fewer
/// levels, better cache locality): 8 MiB instead of 32 MiB cut the CPU per transfer by ≈ 10% (BENCHMARKS.md).
const DEFAULT_WRITE_BUFFER_BYTES: usize = 8 << 20;
/// Total WAL size that forces memtable flushes, which bounds WAL replay at start-up.
const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;
/// Bloom filter bits per key: most prepares look up an ID that does not exist yet.
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// Share of each memtable's size given to its whole-key bloom filter (RocksDB option
/// `memtable_prefix_bloom_size_ratio`).
const MEMTABLE_BLOOM_RATIO: f64 = 0.05;
/// Size of the RocksDB block cache.
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// Header of a serialized RocksDB `WriteBatch`: 8-byte sequence number + 4-byte record count.
const WRITE_BATCH_HEADER_BYTES: usize = 12;
/// Longest time a deferred batch stays written but unsynced when no synced batch follows it.
pub const DEFERRED_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(2);
/// Default [`DbOptions::max_open_files`]. RocksDB's own default keeps every table file open, so a growing
/// database takes file descriptors without bound; a running out (`EMFILE`) during a WAL or SST switch fails
/// the write and poisons the database. 1024 table files cover hundreds of GiB at the default file sizes.
pub const DEFAULT_MAX_OPEN_FILES: u32 = 1024;
/// Smallest [`DbOptions::max_open_files`]: RocksDB raises anything lower to 20, and 10 of those are for its
/// own bookkeeping rather than table files.
pub const MIN_MAX_OPEN_FILES: u32 = 32;
/// File descriptors RocksDB may use beyond [`DbOptions::max_open_files`]: the WAL being written and the one
/// being retired, the MANIFEST, the info LOG, the LOCK file, directory handles for syncs, and the new table
/// files of a flush and of compactions being written, for both column families. A node reserves
/// `max_open_files` plus this for the store.
pub const FDS_BEYOND_MAX_OPEN_FILES: u32 = 32;

/// Default [`DbOptions::min_free_bytes`]. RocksDB (7.8, as Debian builds it) aborts the process when a WAL
/// write fails for want of space and the same write then syncs, so the node stops writing while this much is
/// still free: room for the WAL's next writes, a memtable flush and the MANIFEST.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;
/// How long a reading of the free space is trusted while it is at least [`FREE_SPACE_TRUST_FACTOR`] times the
/// reserve; closer to the reserve, every group write reads it again (one `statvfs`).
const FREE_SPACE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);
/// See [`FREE_SPACE_RECHECK`].
const FREE_SPACE_TRUST_FACTOR: u64 = 4;

/// How [`Db::open_with`] opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbOptions {
    /// Most table files RocksDB keeps open at once (its table cache; others are reopened when read). It uses
    /// up to [`FDS_BEYOND_MAX_OPEN_FILES`] more descriptors for other files. Values below
    /// [`MIN_MAX_OPEN_FILES`] are raised to it.
    pub max_open_files: u32,
    /// Free space kept on the data folder's filesystem: a write that would start with less free fails (and
    /// poisons the database, as any failed write does) instead of meeting a full disk inside RocksDB. 0: no
    /// check.
    pub min_free_bytes: u64,
    /// Leader writes (default on): a task waiting for its batch's durability writes the group itself when no
    /// group write is under way, instead of handing it to the writer thread and being woken by it (see the
    /// module docs); likewise a deferred batch's submitter writes it when writes come one at a time. Off: every
    /// group is written by the writer thread.
    pub leader_writes: bool,
    /// How long a finished transfer's record is kept after the transfer's expiry (`None`, the default: for
    /// ever, as the legacy plugin keeps them). Older records are dropped when RocksDB next compacts them, so
    /// the store stops growing with the history; a transfer ID re-used after that is no longer refused, and
    /// the admin API no longer finds the transfer. Sums, prepared transfers and everything else are kept.
    pub keep_finished: Option<std::time::Duration>,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            leader_writes: true,
            keep_finished: None,
        }
    }
}

/// The writer thread's view of the free space on the data folder's filesystem (see
/// [`DbOptions::min_free_bytes`]).
struct FreeSpace {
    path: PathBuf,
    min_free: u64,
    /// When `free` was read, and what it was.
    read_at: Option<std::time::Instant>,
    free: u64,
}

impl FreeSpace {
    /// `Err` when less than the reserve is free (or the filesystem cannot be asked).
    fn check(&mut self) -> Result<(), StoreError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let trusted = self.free >= self.min_free.saturating_mul(FREE_SPACE_TRUST_FACTOR)
            && self
                .read_at
                .is_some_and(|at| at.elapsed() < FREE_SPACE_RECHECK);
        if !trusted {
            let stat = rustix::fs::statvfs(&self.path).map_err(|e| {
                StoreError::Io(format!(
                    "cannot read the free space of {}: {e}",
                    self.path.display()
                ))
            })?;
            self.free = stat.f_bavail.saturating_mul(stat.f_frsize);
            self.read_at = Some(std::time::Instant::now());
        }
        if self.free < self.min_free {
            return Err(StoreError::Io(format!(
                "disk full: {} bytes free on the filesystem of {}, fewer than the {} kept free (min_free_mib)",
                self.free,
                self.path.display(),
                self.min_free
            )));
        }
        Ok(())
    }
}

fn io(err: rocksdb::Error) -> StoreError {
    StoreError::Io(err.into_string())
}

/// A batch waiting for the writer thread.
/// A put whose key holds a running value: within a group only the last one per key is written.
struct Latest {
    key: Vec<u8>,
    value: Vec<u8>,
}

struct Queued {
    batch: WriteBatch,
    latest: Option<Latest>,
    seq: u64,
    /// The submitter waits for this batch's sync (false: deferred, see [`Db::submit_deferred`]).
    sync: bool,
    ack: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Default)]
struct Queue {
    batches: Vec<Queued>,
    /// Sequence number given to the last submitted batch (1, 2, …).
    last_submitted: u64,
    shutdown: bool,
    /// When the written but unsynced deferred batches were first written ([`WriterState::unsynced`]'s
    /// `since`), kept here too, so that the writer thread sees under this lock whether it has a sync to time.
    unsynced_since: Option<std::time::Instant>,
    /// What the writer thread is doing, as far as a submitter needs to know.
    writer: WriterWait,
}

/// Whether the writer thread waits, and for what ([`Queue::writer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum WriterWait {
    /// Running (or about to look at the queue): it may be about to write a group.
    #[default]
    Busy,
    /// Waiting for the unsynced batches' sync to fall due.
    Timed,
    /// Waiting with nothing to time: whoever leaves an unsynced batch written must wake it.
    Idle,
}

/// State shared by the [`Db`] handle and its writer thread.
struct Shared {
    db: DB,
    queue: Mutex<Queue>,
    wake_writer: Condvar,
    /// Held by whoever writes a group (the writer thread or a leader), from taking the queue to acknowledging it.
    writing: Mutex<WriterState>,
    /// [`DbOptions::leader_writes`].
    leader_writes: bool,
    /// When the database was opened (the origin of `grouped_at_us`).
    opened: std::time::Instant,
    /// When the writer thread last wrote a group holding several synced batches, in µs since `opened` (0:
    /// never). See [`GROUPING_WINDOW`].
    grouped_at_us: AtomicU64,
    /// Tasks waiting for a batch's durability right now ([`WriteTicket::wait`], [`Db::wait_durable`]).
    waiters: AtomicUsize,
    /// Highest sequence number known durable; every lower one is durable too.
    durable: AtomicU64,
    /// Wakes [`Db::wait_durable`] callers after every group (success or failure).
    durable_watch: watch::Sender<u64>,
    poisoned: AtomicBool,
    /// The failure that set `poisoned`.
    poisoned_by: Mutex<Option<StoreError>>,
    /// Failure injection: the next this-many group writes fail as if the disk did.
    #[cfg(any(test, feature = "testing"))]
    injected_failures: AtomicU64,
    /// Delay injection: every group write first sleeps this many milliseconds (a slow disk).
    #[cfg(any(test, feature = "testing"))]
    injected_delay_ms: AtomicU64,
    /// Number of group writes done (for tests and benchmarks).
    groups: AtomicU64,
    /// Flush memtables when the database closes (see [`Db::set_flush_on_close`]).
    flush_on_close: AtomicBool,
    /// Told how long each group write and WAL sync took (see [`Db::observe_writes`]).
    write_observer: std::sync::OnceLock<WriteObserver>,
}

/// What the writer thread did, as [`Db::observe_writes`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A group write that synced the WAL (it held a batch waiting for durability).
    SyncedWrite,
    /// A group write of deferred batches only, without a sync.
    UnsyncedWrite,
    /// A WAL sync of deferred batches already written.
    WalSync,
}

/// A callback told of every group write and sync: what it was and how long it took (the node's metrics).
pub type WriteObserver = Arc<dyn Fn(WriteKind, std::time::Duration) + Send + Sync>;

/// Receipt for a submitted batch; await [`WriteTicket::wait`] to learn when it is durable.
#[derive(Debug)]
#[must_use = "a write is only known durable once its ticket resolves"]
pub struct WriteTicket {
    seq: u64,
    ack: Option<oneshot::Receiver<Result<(), StoreError>>>,
    /// For a synced batch that nobody was woken for yet: the database, to lead its write in
    /// [`WriteTicket::wait`] or to wake the writer thread when the ticket is dropped unwaited. Weak, so a
    /// ticket never keeps a closed database open.
    lead: Option<Weak<Shared>>,
}

impl WriteTicket {
    /// The batch's position in the global write order.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Resolves when the batch is durable (`Ok`) or failed (`Io` for the failing group, then `Poisoned`).
    /// Writes the group itself when no group write is under way ([`DbOptions::leader_writes`]).
    pub async fn wait(mut self) -> Result<(), StoreError> {
        let _waiting = match self.lead.as_ref().and_then(Weak::upgrade) {
            None => None,
            Some(shared) => {
                let waiting = Waiting::new(shared);
                if single_worker() {
                    // Every other task the one runtime thread can run goes first, up to its own write: queued
                    // together, their batches go to the writer thread as one group instead of one leader write
                    // (and sync) each while the only runtime thread waits. (Dropped meanwhile, the ticket still
                    // has `lead` and wakes the writer thread.)
                    tokio::task::yield_now().await;
                }
                self.lead = None;
                waiting.shared.lead_or_wake(self.seq, &waiting);
                Some(waiting)
            }
        };
        let ack = self
            .ack
            .take()
            .ok_or_else(|| StoreError::Io("write ticket already used".to_owned()))?;
        ack.await
            .map_err(|_| StoreError::Io("database writer stopped".to_owned()))?
    }
}

/// Whether the calling task runs on a runtime with one worker thread, where a leader write blocks every other
/// task. Measured (BENCHMARKS.md): letting the others run first there keeps 50 transfers in flight grouped;
/// with two worker threads the extra turn costs the one-at-a-time path ≈ 18 % and is not taken.
fn single_worker() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|handle| handle.metrics().num_workers() == 1)
}

/// Counts a task in [`Shared::waiters`] while it lives.
struct Waiting {
    shared: Arc<Shared>,
}

impl Waiting {
    fn new(shared: Arc<Shared>) -> Self {
        shared.waiters.fetch_add(1, Ordering::AcqRel);
        Waiting { shared }
    }

    /// Whether this is the only task waiting.
    fn alone(&self) -> bool {
        self.shared.waiters.load(Ordering::Acquire) == 1
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.shared.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        // Dropped without waiting: the batch must still be written, by the writer thread.
        if let Some(shared) = self.lead.take().and_then(|weak| weak.upgrade()) {
            shared.wake_writer.notify_one();
        }
    }
}

/// The node's database. Cheap to share as `Arc<Db>`; dropping the last handle stops the writer thread after
/// it has written everything queued, and flushes the memtables so the next start replays little WAL.
pub struct Db {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    /// One live instance per store key (see [`Db::shared_instance`]); weak, so instances die with their users.
    instances: Mutex<HashMap<Vec<u8>, Weak<dyn std::any::Any + Send + Sync>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (creating if needed) the database in folder `path` with the default [`DbOptions`] and starts its
    /// writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<Db>, StoreError> {
        Db::open_with(path, DbOptions::default())
    }

    /// Opens (creating if needed) the database in folder `path` and starts its writer thread. A database of a
    /// schema version this build does not read is refused and left untouched: [`StoreError::Corrupt`] on
    /// `meta/format`, whose reason is the [`SchemaError`](super::schema::SchemaError) naming the version found
    /// and the versions this build reads.
    pub fn open_with(path: impl AsRef<Path>, options: DbOptions) -> Result<Arc<Db>, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES).map_err(io)?;
        table.set_block_cache(&cache);

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        opts.set_write_buffer_size(DEFAULT_WRITE_BUFFER_BYTES);
        opts.set_block_based_table_factory(&table);
        let max_open_files = options.max_open_files.max(MIN_MAX_OPEN_FILES);
        opts.set_max_open_files(i32::try_from(max_open_files).unwrap_or(i32::MAX));

        // A vector memtable needs RocksDB's concurrent memtable writes off; the one writer thread writes
        // anyway. Measured (BENCHMARKS.md): +20 % durable pairs/s with 64 writers, +25 % trustline transfers/s
        // with 50 in flight, because every synced group waits for the writer's memtable inserts.
        opts.set_allow_concurrent_memtable_write(false);
        let mut pending = opts.clone();
        pending.set_write_buffer_size(PENDING_WRITE_BUFFER_BYTES);
        pending.set_memtable_factory(rocksdb::MemtableFactory::Vector);
        // Most prepares look up an ID that does not exist: a whole-key bloom filter in the default family's
        // memtables answers those without searching the skip list. Set before open, so that the first memtable
        // has it too (set after open, it only reaches memtables created later).
        let mut main = opts.clone();
        main.set_memtable_whole_key_filtering(true);
        main.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
        if let Some(keep) = options.keep_finished {
            let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            main.set_compaction_filter(
                "ilp-bridge-keep-finished",
                move |_level: u32, key: &[u8], value: &[u8]| match codec::finished_record_expiry(
                    key, value,
                ) {
                    Some(expires_at_ms)
                        if expires_at_ms.saturating_add(keep_ms)
                            < unix_ms(std::time::SystemTime::now()) =>
                    {
                        CompactionDecision::Remove
                    }
                    _ => CompactionDecision::Keep,
                },
            );
        }

        let cfs = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, main),
            ColumnFamilyDescriptor::new(PENDING_CF, pending),
        ];
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(io)?;
        check_schema(&db)?;
        let (durable_watch, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            db,
            queue: Mutex::new(Queue::default()),
            wake_writer: Condvar::new(),
            durable: AtomicU64::new(0),
            durable_watch,
            poisoned: AtomicBool::new(false),
            poisoned_by: Mutex::new(None),
            #[cfg(any(test, feature = "testing"))]
            injected_failures: AtomicU64::new(0),
            #[cfg(any(test, feature = "testing"))]
            injected_delay_ms: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            flush_on_close: AtomicBool::new(true),
            write_observer: std::sync::OnceLock::new(),
            writing: Mutex::new(WriterState {
                unsynced: None,
                free_space: FreeSpace {
                    path: path.clone(),
                    min_free: options.min_free_bytes,
                    read_at: None,
                    free: 0,
                },
                synced: {
                    let mut options = WriteOptions::default();
                    options.set_sync(true);
                    options
                },
                not_synced: WriteOptions::default(),
            }),
            leader_writes: options.leader_writes,
            waiters: AtomicUsize::new(0),
            opened: std::time::Instant::now(),
            grouped_at_us: AtomicU64::new(0),
        });
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("db-writer".to_owned())
            .spawn(move || writer_loop(&writer_shared))
            .map_err(|e| StoreError::Io(format!("cannot start database writer: {e}")))?;
        tracing::debug!(path = %path.display(), "database opened");
        Ok(Arc::new(Db {
            shared,
            writer: Mutex::new(Some(writer)),
            path,
            instances: Mutex::new(HashMap::new()),
        }))
    }

    /// The folder the database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying RocksDB handle, for reads this type does not wrap. Never write through it: writes that
    /// bypass [`Db::write`] are neither ordered, group-committed nor synced.
    pub fn rocks(&self) -> &DB {
        &self.shared.db
    }

    /// The [`PENDING_CF`] column family handle, for `put_cf`/`delete_cf` in batches.
    pub fn pending_cf(&self) -> Result<&ColumnFamily, StoreError> {
        self.shared
            .db
            .cf_handle(PENDING_CF)
            .ok_or_else(|| StoreError::Io(format!("column family {PENDING_CF} missing")))
    }

    /// Queues `batch` for the writer thread and returns at once. Batches are written in submission order, so a
    /// caller may submit under its own lock to order its writes, then await the ticket outside it.
    ///
    /// A poisoned database refuses at once with [`StoreError::Poisoned`].
    pub fn submit(&self, batch: WriteBatch) -> Result<WriteTicket, StoreError> {
        self.enqueue(batch, None, true)
    }

    /// [`Db::submit`] (or, `deferred`, [`Db::submit_deferred`]) of `batch` plus a put of `key` = `value` in the
    /// default column family, where `key` holds a running value that each batch replaces (a transfer log's
    /// sums). The put is applied as if it were the batch's last record; when several batches of one group carry
    /// the same key, only the last value is written. `key` must never be written any other way.
    pub fn submit_with_latest(
        &self,
        batch: WriteBatch,
        key: Vec<u8>,
        value: Vec<u8>,
        deferred: bool,
    ) -> Result<WriteTicket, StoreError> {
        self.enqueue(batch, Some(Latest { key, value }), !deferred)
    }

    /// Like [`Db::submit`], for a batch whose submitter does not wait for its sync: it is written in order with
    /// the others, and is durable once any batch submitted after it is, or at most [`DEFERRED_SYNC_DELAY`]
    /// after it was written (the ticket resolves then). It never makes the disk flush on its own account while
    /// synced batches keep coming.
    pub fn submit_deferred(&self, batch: WriteBatch) -> Result<WriteTicket, StoreError> {
        self.enqueue(batch, None, false)
    }

    fn enqueue(
        &self,
        batch: WriteBatch,
        latest: Option<Latest>,
        sync: bool,
    ) -> Result<WriteTicket, StoreError> {
        if self.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        let (ack, rx) = oneshot::channel();
        let seq = {
            let mut queue = lock(&self.shared.queue);
            if queue.shutdown {
                return Err(StoreError::Io("database is closing".to_owned()));
            }
            queue.last_submitted += 1;
            let seq = queue.last_submitted;
            queue.batches.push(Queued {
                batch,
                latest,
                seq,
                sync,
                ack,
            });
            seq
        };
        // A synced batch is written when its submitter waits (it leads, or wakes the writer thread then), or
        // by the writer thread when its ticket is dropped; a deferred one has nobody waiting, so its submitter
        // writes it now if it can, else the writer thread does.
        let lead = sync && self.shared.leader_writes;
        let written_here = !sync && self.shared.leader_writes && self.shared.write_deferred_here();
        if !lead && !written_here {
            self.shared.wake_writer.notify_one();
        }
        Ok(WriteTicket {
            seq,
            ack: Some(rx),
            lead: lead.then(|| Arc::downgrade(&self.shared)),
        })
    }

    /// Writes `batch` atomically and returns once it is durable (WAL synced). Concurrent calls share one sync.
    ///
    /// If the returned future is dropped after the batch was queued, the batch is still written.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.submit(batch)?.wait().await
    }

    /// Returns once every batch up to sequence number `seq` is durable; [`StoreError::Poisoned`] if the database
    /// was poisoned before that. Returns at once if it already is.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        let waiting = (self.shared.leader_writes
            && self.shared.durable.load(Ordering::Acquire) < seq)
            .then(|| Waiting::new(Arc::clone(&self.shared)));
        if let Some(waiting) = &waiting {
            if single_worker() {
                // As in `WriteTicket::wait`: the other runnable tasks first.
                tokio::task::yield_now().await;
            }
            self.shared.lead_or_wake(seq, waiting);
        }
        let mut rx = self.shared.durable_watch.subscribe();
        loop {
            if self.shared.durable.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            if self.is_poisoned() {
                return Err(StoreError::Poisoned);
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Io("database writer stopped".to_owned()));
            }
        }
    }

    /// Sequence number of the last submitted batch (each submitted batch takes the next number).
    pub fn submitted_seq(&self) -> u64 {
        lock(&self.shared.queue).last_submitted
    }

    /// Highest sequence number known durable.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// From now on `observer` is told of every group write and WAL sync and how long it took (successful or
    /// not). Called on the writer thread, so it must be quick. Only the first observer set is kept; returns
    /// false when one was set already.
    pub fn observe_writes(&self, observer: WriteObserver) -> bool {
        self.shared.write_observer.set(observer).is_ok()
    }

    /// True once a write or sync has failed.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// The failure that poisoned the database, if one did.
    pub fn poisoned_by(&self) -> Option<StoreError> {
        lock(&self.shared.poisoned_by).clone()
    }

    /// Reads a key of the default column family (sees every batch the writer has applied).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.db.get(key).map_err(io)
    }

    /// Reads a key of the default column family like [`get`](Self::get), without keeping the data block it
    /// reads in the block cache: for keys read about once, such as a finished transfer looked up by a new ID
    /// (a bloom filter's false positive reads a block of random IDs nobody asks for again).
    pub fn get_once(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        self.shared.db.get_opt(key, &read).map_err(io)
    }

    /// What RocksDB holds in memory for this database, read from its properties: the block cache, the
    /// memtables of both column families (active, immutable and pinned) and the table readers (index and filter
    /// blocks of the open table files, which are not kept in the block cache).
    pub fn memory(&self) -> Result<DbMemory, StoreError> {
        let db = &self.shared.db;
        let read = |cf: Option<&ColumnFamily>, name: &str| -> Result<u64, StoreError> {
            let value = match cf {
                Some(cf) => db.property_int_value_cf(cf, name),
                None => db.property_int_value(name),
            };
            Ok(value.map_err(io)?.unwrap_or(0))
        };
        let pending = self.pending_cf()?;
        Ok(DbMemory {
            block_cache_bytes: read(None, "rocksdb.block-cache-usage")?,
            memtable_bytes: read(None, "rocksdb.size-all-mem-tables")?
                + read(Some(pending), "rocksdb.size-all-mem-tables")?,
            table_reader_bytes: read(None, "rocksdb.estimate-table-readers-mem")?
                + read(Some(pending), "rocksdb.estimate-table-readers-mem")?,
        })
    }

    /// Every `(key, value)` of the default column family whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        self.scan(None, prefix, None, usize::MAX)
    }

    /// At most `limit` `(key, value)` pairs of the default column family whose key starts with `prefix` and
    /// sorts after `after` (from the start of the prefix if `None`), in key order: one page of a scan too long
    /// to hold in memory at once.
    pub fn scan_prefix_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.scan(None, prefix, after, limit)
    }

    /// Every `(key, value)` of [`PENDING_CF`] whose key starts with `prefix`, in key order.
    pub fn scan_pending_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        self.scan(Some(self.pending_cf()?), prefix, None, usize::MAX)
    }

    fn scan(
        &self,
        cf: Option<&ColumnFamily>,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut read = ReadOptions::default();
        // Scans run at start-up and for rare operations, and read their blocks once (the pending family's
        // mostly tombstones of finished transfers): caching them would only grow memory.
        read.fill_cache(false);
        if let Some(upper) = prefix_upper_bound(prefix) {
            read.set_iterate_upper_bound(upper);
        }
        let start = match after {
            Some(after) if after > prefix => after,
            _ => prefix,
        };
        let mode = IteratorMode::From(start, IterDirection::Forward);
        let iter = match cf {
            Some(cf) => self.shared.db.iterator_cf_opt(cf, read, mode),
            None => self.shared.db.iterator_opt(mode, read),
        };
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(io)?;
            if !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|after| &*key <= after) {
                continue;
            }
            out.push((key.into_vec(), value.into_vec()));
        }
        Ok(out)
    }

    /// Failure injection: the next `n` group writes fail as if the disk returned an error, which poisons the
    /// database. Only with the `testing` feature (and in this crate's unit tests), so tests can prove poisoning.
    #[cfg(any(test, feature = "testing"))]
    pub fn inject_write_failures(&self, n: u64) {
        self.shared.injected_failures.store(n, Ordering::Release);
    }

    /// Makes every group write from now on take `delay` longer (a slow disk; zero: back to normal). Only with
    /// the `testing` feature (and in this crate's unit tests), so tests can hold a write between queued and done.
    #[cfg(any(test, feature = "testing"))]
    pub fn inject_write_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.injected_delay_ms.store(ms, Ordering::Release);
    }

    /// Whether closing flushes the memtables (default: yes, so the next start replays little WAL). Benchmarks
    /// turn it off to measure a start-up that replays the WAL, as after a crash.
    pub fn set_flush_on_close(&self, flush: bool) {
        self.shared.flush_on_close.store(flush, Ordering::Release);
    }

    /// Number of syncs done so far: synced group writes (each may carry many batches) and syncs of deferred
    /// batches written without one.
    pub fn group_writes(&self) -> u64 {
        self.shared.groups.load(Ordering::Acquire)
    }

    /// True while an instance registered under `key` (see [`Db::shared_instance`]) is alive.
    pub fn has_live_instance(&self, key: &[u8]) -> bool {
        lock(&self.instances)
            .get(key)
            .is_some_and(|weak| weak.strong_count() > 0)
    }

    /// The one live instance registered under `key`, or a new one from `create` (registered weakly). Stores use
    /// it so that two handles on the same log always share one in-memory state.
    pub fn shared_instance<T: Send + Sync + 'static>(
        &self,
        key: &[u8],
        create: impl FnOnce() -> Result<Arc<T>, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        let mut instances = lock(&self.instances);
        if let Some(existing) = instances.get(key).and_then(Weak::upgrade) {
            if let Ok(typed) = existing.downcast::<T>() {
                return Ok(typed);
            }
            return Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "key already opened as another store type".to_owned(),
            });
        }
        instances.retain(|_, weak| weak.strong_count() > 0);
        let created = create()?;
        let erased: Arc<dyn std::any::Any + Send + Sync> = created.clone();
        instances.insert(key.to_vec(), Arc::downgrade(&erased));
        Ok(created)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.wake_writer.notify_all();
        if let Some(writer) = lock(&self.writer).take() {
            if writer.join().is_err() {
                tracing::error!("database writer thread panicked");
            }
        }
        if !self.is_poisoned() && self.shared.flush_on_close.load(Ordering::Acquire) {
            // Not needed for durability (the WAL is synced); it keeps the next start-up's WAL replay short.
            if let Err(error) = self.shared.db.flush() {
                tracing::warn!(%error, "memtable flush at close failed");
            }
        }
    }
}

/// Checks the database's schema version ([`schema::check`]): a new database gets the current version, a
/// readable older one is raised to it, anything else is refused and left untouched. Runs before the writer
/// thread exists, so its synced write cannot race with group commits.
fn check_schema(db: &DB) -> Result<(), StoreError> {
    let found = db.get(SCHEMA_VERSION_KEY).map_err(io)?;
    let outcome = schema::check(found.as_deref()).map_err(|err| StoreError::Corrupt {
        key: String::from_utf8_lossy(SCHEMA_VERSION_KEY).into_owned(),
        reason: err.to_string(),
    })?;
    match outcome {
        SchemaCheck::Current => return Ok(()),
        SchemaCheck::New => {}
        SchemaCheck::Raise { from } => {
            tracing::info!(from, to = SCHEMA_VERSION, "database schema version raised");
        }
    }
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let mut batch = WriteBatch::default();
    batch.put(SCHEMA_VERSION_KEY, [SCHEMA_VERSION]);
    db.write_opt(batch, &sync).map_err(io)
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

/// Concatenates serialized batches into one: the records of each, after one header whose count is the sum,
/// then the last latest-value put of each key (see [`Db::submit_with_latest`]) in order of first appearance.
/// The `WriteBatch` serialization (header of sequence + count, then records) is RocksDB's stable format.
fn merge_batches(batches: Vec<(WriteBatch, Option<Latest>)>) -> Result<WriteBatch, StoreError> {
    let total: usize = batches.iter().map(|(b, _)| b.size_in_bytes()).sum();
    let mut data = Vec::with_capacity(total + WRITE_BATCH_HEADER_BYTES);
    data.extend_from_slice(&[0u8; WRITE_BATCH_HEADER_BYTES]);
    let mut count: u32 = 0;
    let mut latest: Vec<Latest> = Vec::new();
    let mut latest_index: HashMap<Vec<u8>, usize> = HashMap::new();
    for (batch, put) in batches {
        let rep = batch.data();
        let records = rep
            .get(WRITE_BATCH_HEADER_BYTES..)
            .ok_or_else(|| StoreError::Io("write batch shorter than its header".to_owned()))?;
        let n = u32::try_from(batch.len())
            .map_err(|_| StoreError::Io("write batch too large".to_owned()))?;
        count = count
            .checked_add(n)
            .ok_or_else(|| StoreError::Io("write group too large".to_owned()))?;
        data.extend_from_slice(records);
        if let Some(put) = put {
            match latest_index.get(&put.key) {
                Some(&i) => latest[i].value = put.value,
                None => {
                    latest_index.insert(put.key.clone(), latest.len());
                    latest.push(put);
                }
            }
        }
    }
    data[8..WRITE_BATCH_HEADER_BYTES].copy_from_slice(&count.to_le_bytes());
    let mut merged = WriteBatch::from_data(&data);
    for Latest { key, value } in latest {
        merged.put(key, value);
    }
    Ok(merged)
}

/// How long after the writer thread wrote a group of several synced batches a deferred batch's submitter
/// leaves it to the writer thread rather than writing it alone (see [`Shared::write_deferred_here`]). Measured
/// (BENCHMARKS.md): without it, 50 transfers in flight on the disk lost ≈ 18 % (a third of the deferred
/// batches written one by one in the lulls, each a RocksDB write of its own, instead of grouped).
const GROUPING_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

/// Most batches queued for a waiting task to write them itself ([`DbOptions::leader_writes`]); with more, the
/// writer thread writes them. A leader saves the hand-offs when writes come one at a time; when many come at
/// once, the writer thread groups them while the runtime threads go on (measured in BENCHMARKS.md).
const LEADER_MAX_QUEUED: usize = 1;

/// What the group writer (thread or leader) keeps between groups.
struct WriterState {
    /// Deferred batches written but not synced yet.
    unsynced: Option<Unsynced>,
    /// The free space on the data folder's filesystem ([`DbOptions::min_free_bytes`]).
    free_space: FreeSpace,
    /// Write options with `sync` on, and off (made once: each is a RocksDB allocation).
    synced: WriteOptions,
    not_synced: WriteOptions,
}

/// Written deferred batches not yet synced.
struct Unsynced {
    last_seq: u64,
    since: std::time::Instant,
    acks: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

/// What the writer thread does next.
enum Step {
    /// Batches are queued: write them as one group.
    Write,
    /// Deferred batches are written but unsynced since the delay (or the database is closing): sync them.
    SyncDeferred,
    /// The database is closing and everything is written and synced.
    Exit,
}

impl Shared {
    /// Called by the submitter of a deferred batch. When writes come one at a time (nobody waits for a sync,
    /// the writer thread waits and has not grouped synced batches lately, at most this batch is queued, and the
    /// unsynced batches written before are not due for their sync), writes the queue without a sync on this
    /// thread and returns true. The batch is then in the WAL before its submitter goes on (in the page cache:
    /// it survives a crash of the process, not a power cut), with no hand-off to the writer thread, which is
    /// woken only if it has no sync timed yet. Returns false when the writer thread must be woken; it groups the
    /// batch with whatever else comes meanwhile.
    fn write_deferred_here(&self) -> bool {
        if self.waiters.load(Ordering::Acquire) > 0 || self.grouping() {
            // Others wait for syncs, or batches come in bursts: the writer thread groups this one with others.
            return false;
        }
        let mut state = match self.writing.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        if state
            .unsynced
            .as_ref()
            .is_some_and(|tail| tail.since.elapsed() >= DEFERRED_SYNC_DELAY)
        {
            // Due: the sync is the writer thread's, not this runtime thread's.
            return false;
        }
        let group = {
            let mut queue = lock(&self.queue);
            if queue.writer == WriterWait::Busy
                || queue.batches.len() > LEADER_MAX_QUEUED
                || queue.batches.iter().any(|q| q.sync)
            {
                return false;
            }
            std::mem::take(&mut queue.batches)
        };
        if !group.is_empty() {
            write_step(self, &mut state, group, false);
        }
        true
    }

    /// Microseconds since the database was opened (at least 1).
    fn now_us(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether the writer thread wrote a group holding several synced batches in the last
    /// [`GROUPING_WINDOW`]: several tasks wait for syncs at once, and batches are better grouped than written
    /// one by one.
    fn grouping(&self) -> bool {
        let at = self.grouped_at_us.load(Ordering::Relaxed);
        let window = u64::try_from(GROUPING_WINDOW.as_micros()).unwrap_or(u64::MAX);
        at != 0 && self.now_us().saturating_sub(at) < window
    }

    /// Records in the queue when the unsynced tail began (after `state.unsynced` changed, under the `writing`
    /// lock), waking the writer thread when a tail begins while it waits with nothing to time.
    fn publish_tail(&self, state: &WriterState) {
        let since = state.unsynced.as_ref().map(|tail| tail.since);
        let mut queue = lock(&self.queue);
        queue.unsynced_since = since;
        if since.is_some() && queue.writer == WriterWait::Idle {
            drop(queue);
            self.wake_writer.notify_one();
        }
    }

    /// Called by a task about to wait for batch `seq`'s durability: if it is the only task waiting, no group
    /// write is under way, and the batch is still queued alone, writes it as a synced group on this thread (the
    /// leader); otherwise wakes the writer thread, which writes the queue (after the group under way, if any).
    fn lead_or_wake(&self, seq: u64, waiting: &Waiting) {
        if self.durable.load(Ordering::Acquire) >= seq {
            return;
        }
        if !waiting.alone() {
            // Others wait too: the writer thread groups their batches while this runtime thread goes on.
            self.wake_writer.notify_one();
            return;
        }
        let mut state = match self.writing.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                self.wake_writer.notify_one();
                return;
            }
        };
        let group = {
            let mut queue = lock(&self.queue);
            // Batches leave the queue in order and are acknowledged before the lock we hold is released: a queue
            // that no longer holds `seq` means it was written (or failed) already.
            if queue.batches.first().is_none_or(|q| q.seq > seq) {
                return;
            }
            if queue.batches.len() > LEADER_MAX_QUEUED {
                // Others are waiting too: the writer thread groups them (and whatever comes meanwhile) while
                // this runtime thread goes on with other tasks.
                drop(queue);
                self.wake_writer.notify_one();
                return;
            }
            std::mem::take(&mut queue.batches)
        };
        write_step(self, &mut state, group, true);
    }
}

/// Waits until the writer thread has something to do: batches queued, or unsynced deferred batches due for
/// their sync.
fn next_step(shared: &Shared) -> Step {
    let mut queue = lock(&shared.queue);
    queue.writer = WriterWait::Busy;
    loop {
        if !queue.batches.is_empty() {
            return Step::Write;
        }
        match queue
            .unsynced_since
            .map(|since| since + DEFERRED_SYNC_DELAY)
        {
            Some(deadline) => {
                let now = std::time::Instant::now();
                if queue.shutdown || now >= deadline {
                    return Step::SyncDeferred;
                }
                queue.writer = WriterWait::Timed;
                queue = shared
                    .wake_writer
                    .wait_timeout(queue, deadline - now)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
                queue.writer = WriterWait::Busy;
            }
            None if queue.shutdown => return Step::Exit, // everything queued is written and synced
            None => {
                queue.writer = WriterWait::Idle;
                queue = shared
                    .wake_writer
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                queue.writer = WriterWait::Busy;
            }
        }
    }
}

fn writer_loop(shared: &Shared) {
    loop {
        let step = next_step(shared);
        let mut state = lock(&shared.writing);
        match step {
            // Nothing is unsynced (whoever leaves a tail publishes it), and nothing is queued after the shutdown.
            Step::Exit => return,
            Step::Write => {
                let group = std::mem::take(&mut lock(&shared.queue).batches);
                if group.iter().filter(|q| q.sync).nth(1).is_some() {
                    shared
                        .grouped_at_us
                        .store(shared.now_us(), Ordering::Relaxed);
                }
                if !group.is_empty() {
                    write_step(shared, &mut state, group, false);
                }
            }
            Step::SyncDeferred => {
                let shutdown = lock(&shared.queue).shutdown;
                let due = state
                    .unsynced
                    .as_ref()
                    .is_some_and(|tail| shutdown || tail.since.elapsed() >= DEFERRED_SYNC_DELAY);
                if !due {
                    continue;
                }
                let Some(tail) = state.unsynced.take() else {
                    continue;
                };
                shared.publish_tail(&state);
                let result = if shared.poisoned.load(Ordering::Acquire) {
                    Err(StoreError::Poisoned)
                } else {
                    let started = std::time::Instant::now();
                    let result = state.free_space.check().and_then(|()| sync_wal(shared));
                    observe(shared, WriteKind::WalSync, started);
                    result
                };
                settle(shared, tail.last_seq, tail.acks, result);
            }
        }
    }
}

/// Writes `group` (taken from the queue under the `writing` lock, whose state is `state`) as one batch, synced
/// when any batch of it asks for a sync, when `force_sync` (a leader, whose caller waits for durability), or when
/// the deferred batches written before it have waited [`DEFERRED_SYNC_DELAY`]; then acknowledges it.
fn write_step(shared: &Shared, state: &mut WriterState, group: Vec<Queued>, force_sync: bool) {
    let last_seq = group.last().map_or(0, |q| q.seq);
    // Deferred batches that keep arriving back to back are still synced within the delay.
    let needs_sync = force_sync
        || group.iter().any(|q| q.sync)
        || state
            .unsynced
            .as_ref()
            .is_some_and(|tail| tail.since.elapsed() >= DEFERRED_SYNC_DELAY);
    let mut batches = Vec::with_capacity(group.len());
    let mut acks = Vec::with_capacity(group.len());
    for q in group {
        batches.push((q.batch, q.latest));
        acks.push(q.ack);
    }
    let result = if shared.poisoned.load(Ordering::Acquire) {
        Err(StoreError::Poisoned)
    } else {
        let started = std::time::Instant::now();
        let options = if needs_sync {
            &state.synced
        } else {
            &state.not_synced
        };
        let result = state
            .free_space
            .check()
            .and_then(|()| write_group(shared, batches, options));
        let kind = if needs_sync {
            WriteKind::SyncedWrite
        } else {
            WriteKind::UnsyncedWrite
        };
        observe(shared, kind, started);
        result
    };
    if result.is_ok() && !needs_sync {
        // Written, durable with the next sync. Only a new tail changes what the writer thread times.
        let begins = state.unsynced.is_none();
        let tail = state.unsynced.get_or_insert_with(|| Unsynced {
            last_seq,
            since: std::time::Instant::now(),
            acks: Vec::new(),
        });
        tail.last_seq = last_seq;
        tail.acks.extend(acks);
        if begins {
            shared.publish_tail(state);
        }
        return;
    }
    // A synced group (or a failure) settles every earlier deferred batch with it.
    if let Some(tail) = state.unsynced.take() {
        let mut all = tail.acks;
        all.extend(acks);
        acks = all;
        shared.publish_tail(state);
    }
    settle(shared, last_seq, acks, result);
}

/// Records the outcome of a group write or sync covering every batch up to `last_seq`, and tells their
/// submitters.
fn settle(
    shared: &Shared,
    last_seq: u64,
    acks: Vec<oneshot::Sender<Result<(), StoreError>>>,
    result: Result<(), StoreError>,
) {
    match &result {
        Ok(()) => {
            shared.groups.fetch_add(1, Ordering::AcqRel);
            shared.durable.store(last_seq, Ordering::Release);
        }
        Err(StoreError::Poisoned) => {}
        Err(error) => {
            tracing::error!(%error, batches = acks.len(), "durable write failed; database poisoned");
            lock(&shared.poisoned_by).get_or_insert_with(|| error.clone());
            shared.poisoned.store(true, Ordering::Release);
            // Nothing more is written, by RocksDB either: its error handler would otherwise flush the
            // memtables to resume (it does so for a full disk once space returns), writing table files and a
            // MANIFEST on a device whose earlier writes failed, which can leave the database unopenable.
            shared.db.cancel_all_background_work(true);
        }
    }
    shared.durable_watch.send_replace(last_seq);
    for ack in acks {
        // A dropped receiver only means the caller stopped waiting; the outcome stands.
        let _ = ack.send(result.clone());
    }
}

/// Tells the write observer, if any, that a `kind` step begun at `started` is done.
fn observe(shared: &Shared, kind: WriteKind, started: std::time::Instant) {
    if let Some(observer) = shared.write_observer.get() {
        observer(kind, started.elapsed());
    }
}

/// Sleeps the injected delay, if any ([`Db::inject_write_delay`]), then takes one injected failure, if a test
/// asked for one ([`Db::inject_write_failures`]).
#[cfg(any(test, feature = "testing"))]
fn injected_failure(shared: &Shared) -> bool {
    let delay = shared.injected_delay_ms.load(Ordering::Acquire);
    if delay > 0 {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
    shared
        .injected_failures
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

/// Without the `testing` feature nothing can inject a failure.
#[cfg(not(any(test, feature = "testing")))]
fn injected_failure(_shared: &Shared) -> bool {
    false
}

/// Syncs the WAL (every batch written so far becomes durable).
fn sync_wal(shared: &Shared) -> Result<(), StoreError> {
    if injected_failure(shared) {
        return Err(StoreError::Io("injected sync failure".to_owned()));
    }
    shared.db.flush_wal(true).map_err(io)
}

fn write_group(
    shared: &Shared,
    mut batches: Vec<(WriteBatch, Option<Latest>)>,
    sync: &WriteOptions,
) -> Result<(), StoreError> {
    if injected_failure(shared) {
        return Err(StoreError::Io("injected write failure".to_owned()));
    }
    let batch = if batches.len() == 1 {
        let (mut single, latest) = batches.pop().expect("one batch");
        if let Some(Latest { key, value }) = latest {
            single.put(key, value);
        }
        single
    } else if batches.is_empty() {
        return Ok(());
    } else {
        merge_batches(batches)?
    };
    shared.db.write_opt(batch, sync).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `max_open_files` RocksDB recorded in the newest OPTIONS file of the database in `dir`.
    fn recorded_max_open_files(dir: &Path) -> Result<String, Box<dyn std::error::Error>> {
        let mut options: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("OPTIONS-"))
            })
            .collect();
        options.sort();
        let newest = options.last().ok_or("no OPTIONS file")?;
        let text = std::fs::read_to_string(newest)?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("max_open_files="))
            .ok_or("no max_open_files in OPTIONS")?;
        Ok(line.to_owned())
    }

    #[test]
    fn max_open_files_bounds_rocksdbs_table_cache() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        drop(Db::open_with(
            dir.path(),
            DbOptions {
                max_open_files: 64,
                ..DbOptions::default()
            },
        )?);
        assert_eq!(recorded_max_open_files(dir.path())?, "max_open_files=64");
        drop(Db::open_with(
            dir.path(),
            DbOptions {
                max_open_files: 3,
                ..DbOptions::default()
            },
        )?);
        assert_eq!(
            recorded_max_open_files(dir.path())?,
            format!("max_open_files={MIN_MAX_OPEN_FILES}")
        );
        drop(Db::open(dir.path())?);
        assert_eq!(
            recorded_max_open_files(dir.path())?,
            format!("max_open_files={DEFAULT_MAX_OPEN_FILES}"),
            "bounded by default, not RocksDB's -1 (every file open)"
        );
        Ok(())
    }

    #[test]
    fn upper_bound_of_prefixes() {
        assert_eq!(prefix_upper_bound(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_upper_bound(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_upper_bound(&[255, 255]), None);
    }

    #[test]
    fn merged_batch_holds_every_record_and_the_last_latest_value() {
        let mut a = WriteBatch::default();
        a.put(b"k1", b"v1");
        a.delete(b"k0");
        let mut b = WriteBatch::default();
        b.put(b"k2", b"v2");
        let latest = |v: &str| {
            Some(Latest {
                key: b"sums".to_vec(),
                value: v.as_bytes().to_vec(),
            })
        };
        let mut c = WriteBatch::default();
        c.put(b"k3", b"v3");
        let merged =
            merge_batches(vec![(a, latest("1")), (b, None), (c, latest("3"))]).expect("merge");
        assert_eq!(merged.len(), 5);
        struct Collect(Vec<String>);
        impl rocksdb::WriteBatchIterator for Collect {
            fn put(&mut self, key: Box<[u8]>, value: Box<[u8]>) {
                self.0.push(format!(
                    "put {}={}",
                    String::from_utf8_lossy(&key),
                    String::from_utf8_lossy(&value)
                ));
            }
            fn delete(&mut self, key: Box<[u8]>) {
                self.0
                    .push(format!("del {}", String::from_utf8_lossy(&key)));
            }
        }
        let mut seen = Collect(Vec::new());
        merged.iterate(&mut seen);
        // Only the last value of the latest-value key, after every other record.
        assert_eq!(
            seen.0,
            vec![
                "put k1=v1",
                "del k0",
                "put k2=v2",
                "put k3=v3",
                "put sums=3"
            ]
        );
    }

    /// The names of the threads that wrote groups, as the write observer sees them.
    fn writer_threads(db: &Db) -> Arc<Mutex<Vec<String>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        db.observe_writes(Arc::new(move |_, _| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            lock(&sink).push(name);
        }));
        seen
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_waiter_writes_its_batch_itself_unless_leader_writes_are_off(
    ) -> Result<(), Box<dyn std::error::Error>> {
        for leader_writes in [true, false] {
            let dir = tempfile::tempdir()?;
            let db = Db::open_with(
                dir.path(),
                DbOptions {
                    leader_writes,
                    ..DbOptions::default()
                },
            )?;
            let seen = writer_threads(&db);
            // Several writes one after the other: the writer thread may still take one that it finds queued as
            // it starts or while it holds the writing lock for a moment (a lone waiter then hands over), but
            // not all of them. A pause before each lets a writer thread that took one go back to sleep (on a
            // loaded machine it can otherwise stay in step with the writes, each acknowledgement waking the
            // next submit before the writer thread has looked at the queue again).
            const WRITES: u64 = 20;
            for n in 0..WRITES {
                std::thread::sleep(std::time::Duration::from_millis(1));
                let mut batch = WriteBatch::default();
                batch.put(n.to_be_bytes(), b"v");
                db.write(batch).await?;
                assert_eq!(db.get(&n.to_be_bytes())?, Some(b"v".to_vec()));
                assert_eq!(db.durable_seq(), n + 1);
            }
            let threads = lock(&seen).clone();
            let by_writer_thread = threads.iter().filter(|t| *t == "db-writer").count();
            assert_eq!(threads.len() as u64, WRITES);
            if leader_writes {
                assert!(by_writer_thread < threads.len() / 2, "{threads:?}");
            } else {
                assert_eq!(by_writer_thread, threads.len(), "{threads:?}");
            }
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leaders_and_the_writer_thread_keep_every_write_in_order_and_durable(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let seen = writer_threads(&db);
        let mut tasks = Vec::new();
        for task in 0..8u8 {
            let db = Arc::clone(&db);
            tasks.push(tokio::spawn(async move {
                for n in 0..300u32 {
                    // Every batch of a task overwrites its key: in order, the last value is the stored one.
                    let mut batch = WriteBatch::default();
                    batch.put([task], n.to_be_bytes());
                    let ticket = db.submit(batch)?;
                    let seq = ticket.seq();
                    if n % 3 == 0 {
                        // Some wait through the sequence number, as the transfer logs do for earlier changes.
                        drop(ticket);
                        db.wait_durable(seq).await?;
                    } else {
                        ticket.wait().await?;
                    }
                    if db.durable_seq() < seq {
                        return Err(StoreError::Io(format!(
                            "acknowledged {seq} before it was durable"
                        )));
                    }
                    if db.get(&[task])? != Some(n.to_be_bytes().to_vec()) {
                        return Err(StoreError::Io(format!(
                            "task {task}: write {n} not read back"
                        )));
                    }
                }
                Ok::<(), StoreError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        assert_eq!(db.durable_seq(), 8 * 300);
        assert_eq!(db.submitted_seq(), 8 * 300);
        let threads = lock(&seen).clone();
        assert!(!threads.is_empty());
        drop(db);
        // Everything acknowledged is there after a reopen.
        let db = Db::open(dir.path())?;
        for task in 0..8u8 {
            assert_eq!(db.get(&[task])?, Some(299u32.to_be_bytes().to_vec()));
        }
        Ok(())
    }

    /// The kinds of write each thread did, as the write observer sees them.
    fn writes_by_thread(db: &Db) -> Arc<Mutex<Vec<(String, WriteKind)>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        db.observe_writes(Arc::new(move |kind, _| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            lock(&sink).push((name, kind));
        }));
        seen
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_deferred_batch_is_written_by_its_submitter_and_synced_by_the_writer_thread_within_the_delay(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let seen = writes_by_thread(&db);
        // Pauses around and beyond the delay: the writer thread is busy, waiting with a sync timed, or idle.
        let pauses_us = [0u64, 500, 1_000, 1_900, 2_100, 3_000, 10_000];
        let mut n = 0u64;
        for round in 0..4 {
            for pause in pauses_us {
                n += 1;
                let mut batch = WriteBatch::default();
                batch.put(n.to_be_bytes(), b"v");
                let ticket = db.submit_deferred(batch)?;
                if round % 2 == 0 {
                    // Nothing else comes: the writer thread still syncs it, shortly after the delay.
                    tokio::time::timeout(std::time::Duration::from_secs(5), ticket.wait())
                        .await
                        .map_err(|_| format!("deferred batch {n} never synced"))??;
                    assert!(db.durable_seq() >= n);
                } else {
                    drop(ticket);
                    std::thread::sleep(std::time::Duration::from_micros(pause));
                }
            }
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), db.wait_durable(n))
            .await
            .map_err(|_| "the last deferred batches never synced")??;
        // With the writer thread surely idle (everything synced, its timer long past), the submitter writes:
        // the batch is in the database before `submit_deferred` returns.
        for _ in 0..5 {
            std::thread::sleep(DEFERRED_SYNC_DELAY * 10);
            n += 1;
            let mut batch = WriteBatch::default();
            batch.put(n.to_be_bytes(), b"v");
            let ticket = db.submit_deferred(batch)?;
            assert_eq!(db.get(&n.to_be_bytes())?, Some(b"v".to_vec()));
            tokio::time::timeout(std::time::Duration::from_secs(5), ticket.wait())
                .await
                .map_err(|_| format!("deferred batch {n} never synced"))??;
        }
        let writes = lock(&seen).clone();
        let unsynced = |by_writer: bool| {
            writes
                .iter()
                .filter(|(thread, kind)| {
                    *kind == WriteKind::UnsyncedWrite && (thread == "db-writer") == by_writer
                })
                .count()
        };
        // Written by the submitter unless the writer thread was busy as it came (a sync, or finishing the group
        // whose acknowledgement woke the submitter): then the writer thread writes it, maybe with others.
        assert!(unsynced(false) >= 5, "{writes:?}");
        assert!((unsynced(false) + unsynced(true)) as u64 <= n, "{writes:?}");
        assert!(
            writes
                .iter()
                .filter(|(_, kind)| *kind == WriteKind::WalSync)
                .all(|(thread, _)| thread == "db-writer"),
            "{writes:?}"
        );
        Ok(())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tickets_waited_in_reverse_still_write_in_submission_order(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let mut tickets = Vec::new();
        for n in 0..50u32 {
            let mut batch = WriteBatch::default();
            batch.put(b"k", n.to_be_bytes());
            tickets.push(db.submit(batch)?);
        }
        // The last ticket's waiter leads: it writes every queued batch, the earliest first.
        while let Some(ticket) = tickets.pop() {
            ticket.wait().await?;
            assert_eq!(db.get(b"k")?, Some(49u32.to_be_bytes().to_vec()));
        }
        assert_eq!(db.durable_seq(), 50);
        Ok(())
    }
}
