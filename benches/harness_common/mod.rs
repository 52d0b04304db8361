//! Shared pieces of the side-by-side benchmark binaries (`benches/trustline.rs`, `benches/harness_*.rs`), which are
//! run by `bench/run` and print one JSON object on stdout.
//!
//! * [`Args`]: `--key value` arguments; `--list` (asked by `cargo nextest` / libtest) lists no tests; without
//!   `--bench` (i.e. under `cargo test --all-targets`) the binaries run a short smoke version of themselves;
//! * [`closed_loop`]: N workers each keeping one operation in flight for a bounded time, with latency
//!   percentiles;
//! * [`rss_kib`]: resident memory of a process from `/proc/<pid>/status`;
//! * [`ChildGuard`]: a child process killed (by its PID) when dropped;
//! * [`history`]: finished transfers written into a peer's log before a run, cached between runs.
#![allow(dead_code)] // each benchmark binary uses a different subset

pub(crate) mod history;

use std::collections::HashMap;
use std::future::Future;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parsed command line of a benchmark binary.
pub(crate) struct Args {
    /// `--key value` pairs (a key given without value maps to `""`).
    values: HashMap<String, String>,
    /// True when invoked with `--bench` (by `cargo bench` or `bench/run`): full-size run. False under
    /// `cargo test`: smoke run with tiny sizes.
    pub full: bool,
}

impl Args {
    /// Parses `std::env::args()`. Exits the process (status 0, printing nothing) when asked to `--list` tests,
    /// which is how `cargo nextest` and libtest enumerate a `harness = false` target.
    pub(crate) fn from_env() -> Self {
        let mut values = HashMap::new();
        let mut full = false;
        let mut it = std::env::args().skip(1).peekable();
        while let Some(arg) = it.next() {
            if arg == "--list" {
                std::process::exit(0);
            }
            if arg == "--bench" {
                full = true;
                continue;
            }
            if let Some(key) = arg.strip_prefix("--") {
                let value = match it.peek() {
                    Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                    _ => String::new(),
                };
                values.insert(key.to_owned(), value);
            }
            // Anything else (a libtest filter such as `--exact name`) is ignored.
        }
        Self { values, full }
    }

    /// The value of `--key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// `--key` parsed as a number, else `full_default` (full run) or `smoke_default` (smoke run).
    pub(crate) fn num(&self, key: &str, full_default: u64, smoke_default: u64) -> u64 {
        match self.get(key) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| fail(&format!("--{key} must be a number, got {v:?}"))),
            None if self.full => full_default,
            None => smoke_default,
        }
    }

    /// `--key` as a comma-separated list of numbers, else the default for the run kind.
    pub(crate) fn list(&self, key: &str, full_default: &[u64], smoke_default: &[u64]) -> Vec<u64> {
        match self.get(key) {
            Some(v) => v
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .unwrap_or_else(|_| fail(&format!("--{key}: bad number {x:?}")))
                })
                .collect(),
            None if self.full => full_default.to_vec(),
            None => smoke_default.to_vec(),
        }
    }
}

/// Prints `message` on stderr and exits with status 1.
pub(crate) fn fail(message: &str) -> ! {
    eprintln!("benchmark failed: {message}");
    std::process::exit(1)
}

/// Latency percentiles of a set of samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Percentiles {
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Largest sample, milliseconds.
    pub max_ms: f64,
}

/// Nearest-rank percentiles of `samples` (sorted in place); `None` when empty.
pub(crate) fn percentiles(samples: &mut [Duration]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = |p: f64| {
        let idx = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[idx.saturating_sub(1).min(samples.len() - 1)]
    };
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    Some(Percentiles {
        p50_ms: ms(rank(50.0)),
        p99_ms: ms(rank(99.0)),
        max_ms: ms(samples[samples.len() - 1]),
    })
}

/// Result of one closed-loop load point, serialised in the format of `bench/legacy_trustline.js`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LoadPoint {
    /// Operations kept in flight.
    pub in_flight: u64,
    /// Measured time, seconds (from the end of the warm-up to the last completion).
    pub duration_s: f64,
    /// Operations started after the warm-up that completed successfully.
    pub completed: u64,
    /// Operations started after the warm-up that failed.
    pub errors: u64,
    /// `completed / duration_s`.
    pub transfers_per_s: f64,
    /// Median latency, milliseconds (`None` when nothing completed).
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency, milliseconds.
    pub p99_ms: Option<f64>,
    /// Largest latency, milliseconds.
    pub max_ms: Option<f64>,
    /// CPU time of this whole process (every thread: both peers, their stores and the load generator) per
    /// completed operation during the measured window, microseconds (`None` where `/proc` is unreadable).
    pub cpu_us_per_op: Option<f64>,
    /// The first error seen, if any (for the log; not part of the figures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Runs `in_flight` workers, each repeatedly awaiting `op(worker_index)` (one operation in flight per worker), for
/// `warmup` then `duration`. Only operations started after the warm-up count. Workers are spawned on the current tokio
/// runtime, so a multi-threaded runtime spreads them over its threads.
pub(crate) async fn closed_loop<F, Fut, E>(
    in_flight: u64,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> LoadPoint
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let op = Arc::new(op);
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let stop_at = measure_from + duration;
    let cpu_window = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let from = process_cpu_s();
        tokio::time::sleep_until(stop_at.into()).await;
        Some(process_cpu_s()? - from?)
    });
    let mut workers = Vec::new();
    for worker in 0..in_flight {
        let op = Arc::clone(&op);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let start = Instant::now();
                if start >= stop_at {
                    break;
                }
                let result = op(worker).await;
                if start < measure_from {
                    continue;
                }
                match result {
                    Ok(()) => latencies.push(start.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(e.to_string());
                        }
                    }
                }
            }
            (latencies, errors, first_error, Instant::now())
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut end = measure_from;
    for worker in workers {
        match worker.await {
            Ok((lat, err, first, finished)) => {
                all.extend(lat);
                errors += err;
                first_error = first_error.or(first);
                end = end.max(finished);
            }
            Err(e) => fail(&format!("load worker panicked: {e}")),
        }
    }
    let duration_s = end
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    let completed = all.len() as u64;
    let pct = percentiles(&mut all);
    let transfers_per_s = completed as f64 / duration_s;
    let cpu_us_per_op = cpu_window.await.ok().flatten().and_then(|cpu_s| {
        let ops = transfers_per_s * duration.as_secs_f64();
        (ops > 0.0).then(|| (cpu_s / ops * 1e7).round() / 10.0)
    });
    LoadPoint {
        in_flight,
        duration_s: (duration_s * 1e3).round() / 1e3,
        completed,
        errors,
        transfers_per_s: (transfers_per_s * 1e3).round() / 1e3,
        p50_ms: pct.map(|p| p.p50_ms),
        p99_ms: pct.map(|p| p.p99_ms),
        max_ms: pct.map(|p| p.max_ms),
        cpu_us_per_op,
        first_error,
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, fixed at 100 by the Linux ABI on x86-64).
const PROC_TICKS_PER_S: f64 = 100.0;

/// CPU time (user + system) used so far by this process, all threads, in seconds.
pub(crate) fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis): the
    // 14th and 15th fields of the line, utime and stime, are the 12th and 13th from there.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / PROC_TICKS_PER_S)
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A child process that is killed (SIGKILL, by PID) and reaped when dropped.
pub(crate) struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints `value` as one line of JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => fail(&format!("cannot serialise result: {e}")),
    }
}
