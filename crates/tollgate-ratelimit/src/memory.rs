//! The in-memory store: one `governor` keyed GCRA limiter per window, idle
//! keys evicted in the background.

use std::{
    fmt,
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use governor::{
    RateLimiter,
    clock::{Clock, FakeRelativeClock, QuantaClock, QuantaInstant, Reference},
    middleware::StateInformationMiddleware,
    nanos::Nanos,
    state::keyed::DashMapStateStore,
};

use crate::{
    quota::Window,
    store::{Check, Decision, RateLimitStore, StoreError, StoreKey, WindowState},
};

/// The default interval between two sweeps of idle keys.
pub const DEFAULT_EVICT_EVERY: Duration = Duration::from_secs(30);

/// The in-memory store (the default): GCRA through `governor`, one keyed
/// limiter per window, keyed by a 64-bit hash of the key.
///
/// - **Memory** follows active keys: a background task (started on the
///   first check inside a tokio runtime) drops every key whose state is
///   back to "fresh" every [`evict_every`](MemoryOptions::evict_every).
///   A key costs the same whatever its length, since only its hash is
///   kept (SipHash with a per-store random seed, so collisions cannot be
///   aimed; two keys share a bucket with probability about `n²/2⁶⁵`).
/// - **Several windows**: checked shortest period first, stopping at the
///   first refusal, so a request refused per second costs nothing per
///   day. A request admitted by the shorter windows and refused by a
///   longer one has used one cell of the shorter ones (the Redis store
///   decides all windows atomically instead).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// How to build the in-memory store: its clock and eviction interval.
#[derive(Clone, Debug)]
#[must_use]
pub struct MemoryOptions {
    clock: LimiterClock,
    evict_every: Duration,
}

type Limiter = RateLimiter<
    u64,
    DashMapStateStore<u64, BuildHasherDefault<PassThrough>>,
    LimiterClock,
    StateInformationMiddleware,
>;

struct Inner {
    limiters: Box<[(usize, Limiter)]>,
    hasher: RandomState,
    clock: LimiterClock,
    evict_every: Duration,
    sweeper: AtomicBool,
}

/// The real clock (quanta) or governor's fake one, behind one type.
#[derive(Clone, Debug)]
enum LimiterClock {
    Real {
        clock: QuantaClock,
        start: QuantaInstant,
    },
    Fake(FakeRelativeClock),
}

/// The keys are already SipHash outputs: hash them again for nothing.
#[derive(Default)]
struct PassThrough(u64);

// === impl MemoryOptions ===

impl MemoryOptions {
    /// The real clock, sweeping every [`DEFAULT_EVICT_EVERY`].
    pub fn new() -> Self {
        let clock = QuantaClock::default();
        let start = clock.now();
        Self {
            clock: LimiterClock::Real { clock, start },
            evict_every: DEFAULT_EVICT_EVERY,
        }
    }

    /// Uses governor's fake clock, for deterministic tests: time moves
    /// only when the test calls `advance`.
    pub fn fake_clock(mut self, clock: FakeRelativeClock) -> Self {
        self.clock = LimiterClock::Fake(clock);
        self
    }

    /// How often idle keys are swept (at least 1 s).
    pub fn evict_every(mut self, every: Duration) -> Self {
        self.evict_every = every.max(Duration::from_secs(1));
        self
    }

    /// The store for `windows`.
    #[must_use]
    pub fn build(&self, windows: &[Window]) -> MemoryStore {
        let limiters = windows
            .iter()
            .filter_map(|w| {
                let quota = governor::Quota::with_period(w.quota().emission_interval())?
                    .allow_burst(std::num::NonZeroU32::new(w.quota().burst_size())?);
                let limiter = RateLimiter::dashmap_with_clock_and_hasher(
                    quota,
                    self.clock.clone(),
                    BuildHasherDefault::<PassThrough>::default(),
                )
                .with_middleware::<StateInformationMiddleware>();
                Some((w.index(), limiter))
            })
            .collect();
        MemoryStore {
            inner: Arc::new(Inner {
                limiters,
                hasher: RandomState::new(),
                clock: self.clock.clone(),
                evict_every: self.evict_every,
                sweeper: AtomicBool::new(false),
            }),
        }
    }
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self::new()
    }
}

// === impl MemoryStore ===

impl MemoryStore {
    /// Decides now (the in-memory store never waits).
    pub(crate) fn decide(&self, key: &StoreKey<'_>) -> Result<Decision, StoreError> {
        self.start_sweeper();
        let hash = self.inner.hasher.hash_one(key.key);
        let mut states = [None; crate::quota::MAX_WINDOWS];
        for (i, window) in key.windows.iter().enumerate() {
            let limiter = self
                .limiter(window.index())
                .ok_or_else(|| StoreError::new("window unknown to the memory store"))?;
            match limiter.check_key(&hash) {
                Ok(snapshot) => {
                    let remaining = snapshot.remaining_burst_capacity();
                    let used = window.quota().burst_size().saturating_sub(remaining);
                    let reset = window.quota().emission_interval() * used;
                    if let Some(slot) = states.get_mut(i) {
                        *slot = Some(WindowState { remaining, reset });
                    }
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.inner.clock.now());
                    if let Some(slot) = states.get_mut(i) {
                        *slot = Some(WindowState {
                            remaining: 0,
                            reset: wait,
                        });
                    }
                    return Ok(Decision::denied(wait, i, &states));
                }
            }
        }
        Ok(Decision::allowed_array(states))
    }

    fn limiter(&self, index: usize) -> Option<&Limiter> {
        // Windows are numbered from 0 in build order, so the index is
        // usually the position; search when it is not (a fallback store).
        match self.inner.limiters.get(index) {
            Some((i, l)) if *i == index => Some(l),
            _ => self
                .inner
                .limiters
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, l)| l),
        }
    }

    /// Drops every key whose state is back to fresh, now. The background
    /// task calls this every `evict_every`.
    pub fn evict_idle(&self) {
        evict(&self.inner);
    }

    /// The number of keys held, over all windows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.limiters.iter().map(|(_, l)| l.len()).sum()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts the sweeping task once, when a tokio runtime is there. It
    /// holds a weak reference and ends when the store is dropped.
    fn start_sweeper(&self) {
        if self.inner.sweeper.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.sweeper.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.evict_every;
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                // A sweep of a million keys takes milliseconds: keep it off
                // the async workers.
                if tokio::task::spawn_blocking(move || evict(&inner))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

fn evict(inner: &Inner) {
    for (_, limiter) in &inner.limiters {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

impl RateLimitStore for MemoryStore {
    fn check(&self, key: &StoreKey<'_>) -> Check {
        Check::Ready(self.decide(key))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("windows", &self.inner.limiters.len())
            .field("evict_every", &self.inner.evict_every)
            .finish_non_exhaustive()
    }
}

// === impl LimiterClock ===

impl Clock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            Self::Real { clock, start } => clock.now().duration_since(*start),
            Self::Fake(clock) => clock.now(),
        }
    }
}

// === impl PassThrough ===

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
