//! The store a limiter asks: [`RateLimitStore`], with its decisions.

use std::{fmt, future::Future, pin::Pin, time::Duration};

use crate::quota::{MAX_WINDOWS, Window};

/// Where rate-limit state lives: in memory ([`MemoryStore`](crate::MemoryStore),
/// the default) or shared by every instance (`RedisStore`, feature `redis`).
///
/// A store decides for every window of a plan at once and answers
/// [`Check::Ready`] when it can decide without waiting (memory) or
/// [`Check::Pending`] when it must ask someone (Redis). Errors are values:
/// the layer applies its [`StoreFailure`](crate::StoreFailure) mode.
pub trait RateLimitStore: Send + Sync + fmt::Debug + 'static {
    /// Decides whether one more request for `key` fits in every window.
    fn check(&self, key: &StoreKey<'_>) -> Check;

    /// Checks that the store can decide, for readiness probes: `None` when
    /// there is nothing to reach (the default, and the in-memory store);
    /// for a store behind a server (`RedisStore`), a future that asks the
    /// server and resolves to `Ok(())` when it answered.
    ///
    /// The future does nothing until polled, so asking whether a store
    /// can be pinged (`ping().is_some()`) costs no round trip. A probe
    /// changes nothing a decision sees.
    fn ping(&self) -> Option<PingFuture> {
        None
    }
}

/// A boxed ping future: [`RateLimitStore::ping`].
pub type PingFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'static>>;

/// What a store is asked about: the layer's name, the plan, the key and
/// the plan's windows (shortest period first).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct StoreKey<'a> {
    /// The layer's name (see `RateLimitBuilder::name`).
    pub scope: &'a str,
    /// The plan's name.
    pub plan: &'a str,
    /// The key, at most a few KiB, without control characters except the
    /// 0x1f separator between combined parts.
    pub key: &'a [u8],
    /// The windows to check.
    pub windows: &'a [Window],
}

/// A boxed decision future, for stores that must wait.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<Decision, StoreError>> + Send + 'static>>;

/// A store's answer: now, or later.
#[must_use]
pub enum Check {
    /// Decided without waiting.
    Ready(Result<Decision, StoreError>),
    /// Decided when the future resolves.
    Pending(CheckFuture),
}

/// The state of one window after a decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowState {
    /// Requests that may still come at once.
    pub remaining: u32,
    /// Until the window is full again (all of its burst available).
    pub reset: Duration,
}

/// Whether a request was admitted, and the state of each window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    allowed: bool,
    retry_after: Duration,
    denied_by: Option<u8>,
    states: [Option<WindowState>; MAX_WINDOWS],
}

/// A store failed to decide (unreachable, timed out, bad answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    message: String,
}

// === impl Decision ===

impl Decision {
    /// Admitted; `states` in window order.
    #[must_use]
    pub fn allowed(states: &[WindowState]) -> Self {
        let mut this = Self {
            allowed: true,
            retry_after: Duration::ZERO,
            denied_by: None,
            states: [None; MAX_WINDOWS],
        };
        for (slot, state) in this.states.iter_mut().zip(states) {
            *slot = Some(*state);
        }
        this
    }

    /// Refused by window `denied_by` (an index into the plan's windows)
    /// until `retry_after`; `states` may leave windows out (`None`).
    #[must_use]
    pub fn denied(retry_after: Duration, denied_by: usize, states: &[Option<WindowState>]) -> Self {
        let mut this = Self {
            allowed: false,
            retry_after,
            denied_by: u8::try_from(denied_by).ok(),
            states: [None; MAX_WINDOWS],
        };
        for (slot, state) in this.states.iter_mut().zip(states) {
            *slot = *state;
        }
        this
    }

    /// An admitted decision from a full array, without allocating.
    pub(crate) fn allowed_array(states: [Option<WindowState>; MAX_WINDOWS]) -> Self {
        Self {
            allowed: true,
            retry_after: Duration::ZERO,
            denied_by: None,
            states,
        }
    }

    /// Whether the request is admitted.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// How long until a refused request could be admitted.
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The window that refused the request.
    #[must_use]
    pub fn denied_by(&self) -> Option<usize> {
        self.denied_by.map(usize::from)
    }

    /// The state of window `i`, when known.
    #[must_use]
    pub fn state(&self, i: usize) -> Option<WindowState> {
        self.states.get(i).copied().flatten()
    }
}

// === impl StoreError ===

impl StoreError {
    /// An error with a message (never a credential: keys stay out of it).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Self::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}
