//! Locking helpers shared by this crate and the bridge.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering the guard if a thread panicked while holding it.
///
/// Every user of this helper keeps the rule that makes that safe: a critical section computes its result first
/// and assigns it last (or makes single inserts/removes), so a panic can never leave the guarded data half
/// updated. Recovering instead of propagating the poison keeps one panicking task from taking down every other
/// user of a shared structure (a trustline, a store, an engine account).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
