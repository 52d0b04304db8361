//! A full disk and a failing disk under load (RELIABILITY.md): `ilp-bridge run` between two real legacy plugins
//! (1.3.5), its data folder on a small filesystem mounted by the test, while Alice pays Bob through the node:
//!
//! - full: the folder is on a 6 MiB tmpfs, and another file fills it;
//! - failing fsync: the folder is on ext4 on a loop device whose backing file is on a tmpfs, and that tmpfs is
//!   filled, so the device fails writes and the node's `fdatasync` returns an error.
//!
//! The node must refuse new work with a clear error (a BTP error to the peer; `/ready` 503 naming the cause;
//! `ilp_bridge_store_poisoned 1`), lose nothing it acknowledged, and after the space is freed (and the ext4
//! checked) and it restarts, every balance must be what the peers believe (tests/legacy_books: the same checks as
//! after a SIGKILL).
//!
//! Mounting needs root (CAP_SYS_ADMIN) and loop devices: without them the tests are skipped, and fail under
//! `CI=true`.

mod legacy_books;
mod legacy_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use legacy_books::*;
use legacy_common::*;

/// Size of the filesystem the data folder is on. Smaller than the WAL space RocksDB asks to reserve up front
/// (1.1 × the 8 MiB write buffer), so that the reservation fails and the WAL grows write by write: the node's
/// next write after the fill meets the full disk, instead of the end of a reserved region megabytes later.
const FS_SIZE_MIB: u32 = 6;
/// The node's `min_free_mib`: it stops writing when less is free.
const MIN_FREE_MIB: u64 = 1;
/// Transfer expiry: long enough to cross the node's restart.
const TRANSFER_EXPIRY_MS: i64 = 2_500;
/// Quiet time after the restart: every transfer has finished or expired by then.
const QUIESCE: Duration = Duration::from_millis(3_500);
/// Longest wait for the node to notice the full disk.
const POISON_WAIT: Duration = Duration::from_secs(60);
/// Admin token of the node.
const TOKEN: &str = "full-disk-admin-token";

/// A tmpfs mounted on a folder, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` on `path`; `None` if this process may not mount.
    fn mount(path: &Path, size_mib: u32) -> R<Option<Tmpfs>> {
        std::fs::create_dir_all(path)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(Some(Tmpfs(path.to_owned()))),
            Ok(o) => {
                eprintln!(
                    "cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                Ok(None)
            }
            Err(e) => {
                eprintln!("cannot run mount: {e}");
                Ok(None)
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `errno` of a full filesystem.
const ENOSPC: i32 = 28;

/// Size of the tmpfs under the loop device: room for ext4's metadata and journal (written out by mkfs) and the
/// node's first writes.
const LOOP_TMPFS_MIB: u32 = 40;

/// Size of the sparse file behind the loop device (ext4 on it sees this much; the tmpfs under it holds far less).
const LOOP_IMAGE_MIB: u64 = 256;

/// ext4 on a loop device whose backing file is on a tmpfs; unmounted and detached when dropped.
struct LoopExt4 {
    image: PathBuf,
    device: String,
    mount_point: PathBuf,
}

impl LoopExt4 {
    /// Creates `image` (sparse), attaches it, makes ext4 on it and mounts it on `mount_point`; `None` if this
    /// machine cannot (no loop devices, not root).
    fn mount(image: &Path, mount_point: &Path) -> R<Option<LoopExt4>> {
        std::fs::File::create(image)?.set_len(LOOP_IMAGE_MIB << 20)?;
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output();
        let device = match out {
            Ok(o) if o.status.success() => String::from_utf8(o.stdout)?.trim().to_owned(),
            Ok(o) => {
                eprintln!("losetup: {}", String::from_utf8_lossy(&o.stderr).trim());
                return Ok(None);
            }
            Err(e) => {
                eprintln!("cannot run losetup: {e}");
                return Ok(None);
            }
        };
        let l = LoopExt4 {
            image: image.to_owned(),
            device,
            mount_point: mount_point.to_owned(),
        };
        // No lazy initialisation: nothing writes in the background once mounted.
        sh(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                &l.device,
            ],
        )?;
        std::fs::create_dir_all(mount_point)?;
        l.mount_fs()?;
        Ok(Some(l))
    }

    fn mount_fs(&self) -> R<()> {
        let target = self.mount_point.to_string_lossy().into_owned();
        sh(
            "mount",
            &["-t", "ext4", "-o", "errors=continue", &self.device, &target],
        )
    }

    /// Unmounts, repairs (the journal may have been aborted by the write errors) and mounts again.
    fn remount(&self) -> R<()> {
        let target = self.mount_point.to_string_lossy().into_owned();
        sh("umount", &[&target])?;
        // fsck's exit status 1 means "errors corrected".
        let status = std::process::Command::new("e2fsck")
            .args(["-f", "-y", &self.device])
            .stdout(std::process::Stdio::null())
            .status()?;
        if status.code().is_some_and(|c| c > 1) {
            return Err(format!("e2fsck {} exited with {status}", self.device).into());
        }
        self.mount_fs()
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.device])
            .status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Runs `program args`, failing with its output unless it succeeds.
fn sh(program: &str, args: &[&str]) -> R<()> {
    let out = std::process::Command::new(program).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Free bytes on the filesystem of `path`.
fn free_bytes(path: &Path) -> R<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail * s.f_frsize)
}

/// Writes zeros to `path` until less than `leave` bytes are free on its filesystem; returns the bytes written.
fn fill(path: &Path, leave: u64) -> R<u64> {
    let dir = path.parent().ok_or("no parent")?;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 16 << 10];
    let mut written = 0u64;
    while free_bytes(dir)? >= leave {
        match f.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    f.sync_all()?;
    Ok(written)
}

#[tokio::test]
async fn a_full_disk_stops_new_work_loses_nothing_and_the_books_agree_after_a_restart() -> TestResult
{
    run(Fault::Full).await
}

#[tokio::test]
async fn an_io_error_at_fsync_stops_new_work_loses_nothing_and_the_books_agree_after_a_restart(
) -> TestResult {
    run(Fault::FailingFsync).await
}

/// The fault a test puts under the node's data folder.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Another program fills the filesystem.
    Full,
    /// The block device under the filesystem starts failing writes: the data folder is on ext4 on a loop
    /// device whose backing file is on a small tmpfs, and the tmpfs is filled, so the loop device's writes (and
    /// with them the node's `fdatasync`) fail with EIO.
    FailingFsync,
}

/// Runs `fault` in a temporary folder; prints the node's log if the test fails.
async fn run(fault: Fault) -> TestResult {
    if !available("1.3.5")? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let result = disk_fault(dir.path(), fault).await;
    if result.is_err() {
        let log = std::fs::read_to_string(dir.path().join("bridge.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "the node's log, last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    result
}

/// Mounting failed: skipped, or failed under CI.
fn cannot_mount(what: &str) -> TestResult {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return Err(format!("the disk fault tests need to mount {what} (run as root)").into());
    }
    eprintln!("skipped: cannot mount {what} here (run as root)");
    Ok(())
}

async fn disk_fault(dir: &Path, fault: Fault) -> TestResult {
    let fs_mib = match fault {
        Fault::Full => FS_SIZE_MIB,
        Fault::FailingFsync => LOOP_TMPFS_MIB,
    };
    let Some(fs) = Tmpfs::mount(&dir.join("fs"), fs_mib)? else {
        return cannot_mount("a tmpfs");
    };
    // FailingFsync: ext4 on a loop device backed by a sparse file on the tmpfs.
    let ext4 = match fault {
        Fault::Full => None,
        Fault::FailingFsync => match LoopExt4::mount(&fs.0.join("disk.img"), &dir.join("ext4"))? {
            Some(l) => Some(l),
            None => return cannot_mount("ext4 on a loop device"),
        },
    };
    let data = match &ext4 {
        Some(l) => l.mount_point.join("data"),
        None => fs.0.join("data"),
    };
    let node_log = dir.join("bridge.log");
    let ports = (free_port()?, free_port()?);
    let admin_port = free_port()?;
    let config = dir.join("bridge.toml");
    std::fs::write(
        &config,
        node_toml(
            &data,
            ports,
            &format!(
                "min_free_mib = {MIN_FREE_MIB}\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n"
            ),
        ),
    )?;
    let http = reqwest::Client::new();
    let admin = format!("http://127.0.0.1:{admin_port}");

    let mut peers = start_peers(dir, ports).await?;
    let node = Node::start(&config, &node_log)?;
    wait_connected(&mut peers).await?;
    let ready = http.get(format!("{admin}/ready")).send().await?;
    assert_eq!(ready.status(), 200, "{}", ready.text().await?);

    // Alice pays Bob through the node until told to stop.
    let Peers { alice, bob } = peers;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = alice_pays_bob(alice, TRANSFER_EXPIRY_MS, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Full: another program fills the disk until less than the node keeps free is left (to the last byte, a
    // write could meet the full disk inside RocksDB between the node's check and its write: see
    // RELIABILITY.md). FailingFsync: the tmpfs under the loop device is filled to the last byte, so the device
    // fails the writes the node's next fdatasync waits for (ext4 itself still shows plenty free).
    let leave = match fault {
        Fault::Full => (MIN_FREE_MIB << 20) / 2,
        Fault::FailingFsync => 1,
    };
    let filled = fill(&fs.0.join("filler"), leave)?;
    eprintln!(
        "filled {filled} bytes of the {fs_mib} MiB tmpfs; {} bytes left",
        free_bytes(&fs.0)?
    );

    // The node notices at its next write, says so on /ready and in the metrics.
    let deadline = tokio::time::Instant::now() + POISON_WAIT;
    let reason = loop {
        let r = http.get(format!("{admin}/ready")).send().await?;
        let status = r.status();
        let body = r.text().await?;
        let cause = match fault {
            Fault::Full => "disk full",
            Fault::FailingFsync => "rror", // RocksDB's "IO error: …" / the OS's "Input/output error"
        };
        if status == 503 && body.contains("poisoned") && body.contains(cause) {
            break body;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(
                format!("the node did not notice the full disk: /ready {status} {body}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("/ready: {reason}");
    let metrics = http
        .get(format!("{admin}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("ilp_bridge_store_poisoned 1"),
        "poisoned flag not set in the metrics"
    );
    // New work is refused with a clear error while the disk is full.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut alice, seen) = tokio::time::timeout(WAIT, load).await???;
    eprintln!("load: {seen:?}");
    assert!(
        seen.accepted > 0,
        "no payment went through before the fill: {seen:?}"
    );
    let ilp = alice.payment("test.b.bob", 999).await?;
    let (_, t) = js_transfer(
        &preimage(),
        999,
        TRANSFER_EXPIRY_MS,
        ilp.as_str().unwrap_or_default(),
    );
    let refusal = match alice.call("sendTransfer", t).await? {
        Ok(v) => return Err(format!("a transfer was accepted on a full disk: {v}").into()),
        Err(e) => e.to_string(),
    };
    assert!(
        refusal.contains("poisoned") || refusal.contains("storage error"),
        "the refusal does not say why: {refusal}"
    );
    eprintln!("a new transfer is refused: {refusal}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop((alice, bob));

    // Space is freed (or the device repaired); the node is restarted (a poisoned store is only reopened by a
    // restart).
    std::fs::remove_file(fs.0.join("filler"))?;
    node.stop().await?;
    if let Some(l) = &ext4 {
        // ext4 may have aborted its journal on the write errors: unmount, check, mount again.
        l.remount()?;
    }
    let mut peers = start_peers(dir, ports).await?;
    let node = Node::start(&config, &node_log)?;
    wait_connected(&mut peers).await?;
    tokio::time::sleep(QUIESCE).await;
    let ready = http.get(format!("{admin}/ready")).send().await?;
    assert_eq!(ready.status(), 200, "{}", ready.text().await?);
    node.stop().await?;

    let books = check_books(dir, &data, &node_log, &mut peers).await?;
    eprintln!(
        "books after the restart: Bob's Fulfills that never reached the node {:?}, node's own loss {}, paid to Bob \
         {}, legacy stores disagreeing with themselves {:?}",
        books.lost_in_flight, books.bridge_loss, books.paid_to_bob, books.legacy_self_disagreements
    );
    assert!(books.violations.is_empty(), "{:#?}", books.violations);
    Ok(())
}
