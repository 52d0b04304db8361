//! Progress of reading the plugin store tables: a bar on a terminal, nothing otherwise (a log file or a pipe
//! would fill with redraws).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Tables with fewer rows than this are read without a bar: they are read before a bar could be seen.
pub const PROGRESS_BAR_MIN_ROWS: u64 = 1_000;

/// Told about each table as it is read.
pub trait Progress: Send + Sync {
    /// Reading `table`, which holds `rows` rows, starts.
    fn start(&self, table: &str, rows: u64);
    /// `n` more rows were read.
    fn advance(&self, n: u64);
    /// The table is read.
    fn finish(&self);
}

/// Shows nothing.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _table: &str, _rows: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// A bar on standard error for tables of [`PROGRESS_BAR_MIN_ROWS`] rows or more, when standard error is a
/// terminal.
#[derive(Debug)]
pub struct TerminalProgress {
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl TerminalProgress {
    /// A [`TerminalProgress`] when standard error is a terminal, else [`NoProgress`].
    pub fn for_stderr() -> Box<dyn Progress> {
        if std::io::stderr().is_terminal() {
            Box::new(TerminalProgress {
                bar: std::sync::Mutex::new(None),
            })
        } else {
            Box::new(NoProgress)
        }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        // A poisoned lock only means a bar update panicked; the bar is cosmetic, so carry on without it.
        if let Ok(mut bar) = self.bar.lock() {
            f(&mut bar);
        }
    }
}

impl Progress for TerminalProgress {
    fn start(&self, table: &str, rows: u64) {
        self.with_bar(|bar| {
            if rows < PROGRESS_BAR_MIN_ROWS {
                *bar = None;
                return;
            }
            let b = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({eta})")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(table.to_owned());
            *bar = Some(b);
        });
    }

    fn advance(&self, n: u64) {
        self.with_bar(|bar| {
            if let Some(b) = bar {
                b.inc(n);
            }
        });
    }

    fn finish(&self) {
        self.with_bar(|bar| {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        });
    }
}
