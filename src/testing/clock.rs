//! [`TokioClock`]: a [`Clock`] that tokio's paused time moves, for tests of expiries and retries.

use std::time::SystemTime;

use channel_modules::clock::Clock;

/// A clock that follows tokio's (pausable) time from the wall-clock time it was created at; with
/// `#[tokio::test(start_paused = true)]` it moves only when tokio time advances.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_wall: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the current wall-clock time.
    pub fn new() -> Self {
        TokioClock {
            start_wall: SystemTime::now(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.start_wall + self.start.elapsed()
    }
}
