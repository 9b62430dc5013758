//! [`RateLimitStats`]: plain counters of what a layer decided.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// Counters of one rate-limit layer (shared by its clones), for the
/// metrics crate or a health endpoint to read. Plain relaxed atomics.
///
/// | counter | counts requests that were … |
/// |---|---|
/// | `allowed` | admitted by the store (or the local fallback) |
/// | `rejected` | refused with 429 |
/// | `unlimited` | on an unlimited plan, not checked |
/// | `key_fallback` | keyed by the fallback (identity, then IP) because the configured key was missing or invalid |
/// | `key_rejected` | refused with 400: no valid key and `MissingKey::Reject` (or nothing to fall back to) |
/// | `store_errors` | not decided by the store (unreachable, timeout, bad answer) |
/// | `fail_open` | admitted unchecked because the store failed (`StoreFailure::FailOpen`) |
/// | `fail_closed` | refused with 503 because the store failed (`StoreFailure::FailClosed`) |
/// | `local_fallback` | decided by the local in-memory limits because the store failed |
/// | `outages` | times the store went from working to failing |
#[derive(Clone, Debug, Default)]
pub struct RateLimitStats {
    inner: Arc<Counters>,
}

/// A copy of the counters at one moment. See [`RateLimitStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Admitted.
    pub allowed: u64,
    /// Refused with 429.
    pub rejected: u64,
    /// On an unlimited plan.
    pub unlimited: u64,
    /// Keyed by the fallback key.
    pub key_fallback: u64,
    /// Refused for want of a valid key.
    pub key_rejected: u64,
    /// Store failures.
    pub store_errors: u64,
    /// Admitted unchecked during a store failure.
    pub fail_open: u64,
    /// Refused with 503 during a store failure.
    pub fail_closed: u64,
    /// Decided locally during a store failure.
    pub local_fallback: u64,
    /// Store outages begun.
    pub outages: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) allowed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) unlimited: AtomicU64,
    pub(crate) key_fallback: AtomicU64,
    pub(crate) key_rejected: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) fail_open: AtomicU64,
    pub(crate) fail_closed: AtomicU64,
    pub(crate) local_fallback: AtomicU64,
    pub(crate) outages: AtomicU64,
}

// === impl RateLimitStats ===

impl RateLimitStats {
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.inner;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            allowed: get(&c.allowed),
            rejected: get(&c.rejected),
            unlimited: get(&c.unlimited),
            key_fallback: get(&c.key_fallback),
            key_rejected: get(&c.key_rejected),
            store_errors: get(&c.store_errors),
            fail_open: get(&c.fail_open),
            fail_closed: get(&c.fail_closed),
            local_fallback: get(&c.local_fallback),
            outages: get(&c.outages),
        }
    }
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
