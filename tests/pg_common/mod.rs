//! A throwaway PostgreSQL server for tests: `initdb` in a temporary folder, `postgres` on a free loopback port,
//! stopped by its PID when the guard drops (also when the test fails). PostgreSQL refuses to run as root, so as
//! root both run as `nobody` (through `setpriv`, which execs: the child's PID is the server's), with the folder
//! handed to that user. The binaries are Debian's `postgresql` package (`/usr/lib/postgresql/<version>/bin`, the
//! newest installed), or the folder named by `PG_BIN`. Without them the test is skipped, except under `CI=true`,
//! where it fails.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The database the tests create (ILP Kit's usual name).
pub(crate) const DATABASE: &str = "ilpkit";

/// How long the server may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The uid/gid the server runs as when the test runs as root (`nobody` / `nogroup` on Debian).
const UNPRIVILEGED_ID: u32 = 65534;

/// A running PostgreSQL server.
pub(crate) struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    bin: PathBuf,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

/// The folder holding `initdb` and `postgres`, if installed.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A command running `program` as the unprivileged user when we are root.
fn command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={UNPRIVILEGED_ID}"))
            .arg(format!("--regid={UNPRIVILEGED_ID}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> R<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl PgServer {
    /// Starts a server with an empty database [`DATABASE`]; `Ok(None)` (skip) when PostgreSQL is not installed
    /// and `CI` is not `true`.
    pub(crate) async fn start() -> R<Option<PgServer>> {
        let Some(bin) = bin_dir().filter(|b| b.join("initdb").is_file()) else {
            if std::env::var("CI").as_deref() == Ok("true") {
                return Err("PostgreSQL (initdb, postgres) not installed; run .ci/setup".into());
            }
            eprintln!("SKIPPED: PostgreSQL not installed; run .ci/setup");
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID))?;
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let mut server = PgServer {
            dir,
            port: 0,
            child: None,
            bin,
        };
        server.launch()?;
        let client = server.connect("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await?;
        Ok(Some(server))
    }

    /// Starts `postgres` on a free port and waits until it accepts connections.
    fn launch(&mut self) -> R<()> {
        self.port = free_port()?;
        let log = std::fs::File::create(self.dir.path().join("postgres.log"))?;
        let child = command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            // A test database: durability is not what is tested.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("postgres exited with {status}: {}", self.log()).into());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!("postgres did not start: {}", self.log()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The URL of database `db`.
    pub(crate) fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of [`DATABASE`].
    pub(crate) fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    /// The port it listens (or listened) on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// A client of database `db` (its connection runs on a spawned task).
    pub(crate) async fn connect(&self, db: &str) -> R<tokio_postgres::Client> {
        let started = Instant::now();
        loop {
            match tokio_postgres::connect(&self.url_of(db), tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return Ok(client);
                }
                // Accepting TCP before it accepts logins ("the database system is starting up").
                Err(_) if started.elapsed() < START_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Stops the server (fast shutdown, by PID; killed if it does not exit in time).
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-9", &pid]).status();
        let _ = child.wait();
    }
}
