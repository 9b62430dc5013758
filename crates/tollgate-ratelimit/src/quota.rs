//! Quotas, plans and the windows they compile to.

use std::{sync::Arc, time::Duration};

use http::HeaderValue;
use tollgate_core::{ConfigError, ConfigErrorKind};

/// The most quotas (windows) one plan may have.
pub const MAX_WINDOWS: usize = 4;

/// A limit of `count` requests per `period`, with a burst (GCRA).
///
/// Requests are admitted at a sustained rate of `count / period`; up to
/// `burst` of them may come at once (by default `burst = count`). See the
/// [crate docs](crate) for an example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Quota {
    count: u32,
    period: Duration,
    burst: Option<u32>,
}

/// A named set of quotas, chosen by `Identity.plan`.
///
/// All of a plan's quotas apply at once (for example per second and per
/// day). An unlimited plan is never checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Plan {
    name: Arc<str>,
    quotas: Vec<Quota>,
    unlimited: bool,
}

/// One quota of one plan, as a store sees it.
///
/// `index` is unique within a layer, so a store can keep one table per
/// window; `id` names it in the `RateLimit-Policy` header and in store keys.
#[derive(Clone, Debug)]
pub struct Window {
    index: usize,
    id: Arc<str>,
    quota: Quota,
}

/// A plan compiled at build time: its windows (shortest period first) and
/// its `RateLimit-Policy` header value.
#[derive(Clone, Debug)]
pub(crate) struct CompiledPlan {
    pub(crate) name: Arc<str>,
    pub(crate) windows: Box<[Window]>,
    pub(crate) unlimited: bool,
    pub(crate) policy: Option<HeaderValue>,
}

// === impl Quota ===

impl Quota {
    /// `count` requests per `period`, burst `count`.
    pub const fn new(count: u32, period: Duration) -> Self {
        Self {
            count,
            period,
            burst: None,
        }
    }

    /// `count` requests per second.
    pub const fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute.
    pub const fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    pub const fn per_hour(count: u32) -> Self {
        Self::new(count, Duration::from_secs(3600))
    }

    /// `count` requests per day.
    pub const fn per_day(count: u32) -> Self {
        Self::new(count, Duration::from_secs(86_400))
    }

    /// How many requests may come at once (default: `count`).
    pub const fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The number of requests per period.
    #[must_use]
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    #[must_use]
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The burst size.
    #[must_use]
    pub const fn burst_size(&self) -> u32 {
        match self.burst {
            Some(b) => b,
            None => self.count,
        }
    }

    /// The time one request "costs": `period / count`.
    #[must_use]
    pub fn emission_interval(&self) -> Duration {
        self.period / self.count.max(1)
    }

    /// This quota divided among `n` instances: count and burst `÷ n`,
    /// at least 1.
    pub(crate) fn divided(self, n: u32) -> Self {
        let n = n.max(1);
        Self {
            count: (self.count / n).max(1),
            period: self.period,
            burst: Some((self.burst_size() / n).max(1)),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.count == 0 || self.burst_size() == 0 {
            return Err(invalid("a quota needs a count and a burst of at least 1"));
        }
        if self.period < Duration::from_millis(1) {
            return Err(invalid("a quota's period must be at least 1 ms"));
        }
        if self.emission_interval() < Duration::from_micros(1) {
            return Err(invalid(
                "a quota may admit at most one request per microsecond",
            ));
        }
        Ok(())
    }

    /// `second`, `minute`, `hour`, `day` or `<n>s`.
    fn label(&self) -> String {
        match self.period.as_secs() {
            _ if self.period.subsec_nanos() != 0 => format!("{}ms", self.period.as_millis()),
            1 => "second".into(),
            60 => "minute".into(),
            3600 => "hour".into(),
            86_400 => "day".into(),
            s => format!("{s}s"),
        }
    }

    /// The window in whole seconds, rounded up.
    fn window_secs(&self) -> u64 {
        self.period.as_secs() + u64::from(self.period.subsec_nanos() > 0)
    }
}

// === impl Plan ===

impl Plan {
    /// A plan with no quotas yet; add them with [`Plan::quota`].
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            quotas: Vec::new(),
            unlimited: false,
        }
    }

    /// A plan that is never limited (e.g. `partner`).
    pub fn unlimited(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            quotas: Vec::new(),
            unlimited: true,
        }
    }

    /// Adds a quota; every quota of the plan applies.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// The plan's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plan's quotas.
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// Whether the plan is unlimited.
    #[must_use]
    pub fn is_unlimited(&self) -> bool {
        self.unlimited
    }

    /// Checks the plan and gives its windows indices from `next_index` on.
    pub(crate) fn compile(&self, next_index: &mut usize) -> Result<CompiledPlan, ConfigError> {
        let context = || format!("rate-limit plan {:?}", &*self.name);
        if !is_token(&self.name) {
            return Err(
                invalid("a plan name is 1 to 64 characters of A-Z a-z 0-9 - _ .")
                    .context(context()),
            );
        }
        if self.unlimited {
            if !self.quotas.is_empty() {
                return Err(invalid("an unlimited plan has no quotas").context(context()));
            }
            return Ok(CompiledPlan {
                name: self.name.clone(),
                windows: Box::new([]),
                unlimited: true,
                policy: None,
            });
        }
        if self.quotas.is_empty() || self.quotas.len() > MAX_WINDOWS {
            return Err(invalid(format!(
                "a plan has 1 to {MAX_WINDOWS} quotas, or is unlimited"
            ))
            .context(context()));
        }
        let mut quotas = self.quotas.clone();
        // Shortest period first: a request refused by the per-second window
        // then costs nothing from the per-day one (see `MemoryStore`).
        quotas.sort_by_key(Quota::period);
        let mut windows = Vec::with_capacity(quotas.len());
        for quota in quotas {
            quota.validate().map_err(|e| e.context(context()))?;
            let mut id = format!("{}-{}", self.name, quota.label());
            if windows.iter().any(|w: &Window| *w.id == *id) {
                id = format!("{id}-{}", windows.len());
            }
            windows.push(Window {
                index: *next_index,
                id: id.into(),
                quota,
            });
            *next_index += 1;
        }
        let policy = windows
            .iter()
            .map(|w| {
                format!(
                    "\"{}\";q={};w={}",
                    w.id,
                    w.quota.count,
                    w.quota.window_secs()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let policy = HeaderValue::from_str(&policy)
            .map_err(|_| invalid("policy header").context(context()))?;
        Ok(CompiledPlan {
            name: self.name.clone(),
            windows: windows.into_boxed_slice(),
            unlimited: false,
            policy: Some(policy),
        })
    }
}

// === impl Window ===

impl Window {
    /// The index of this window, unique within one layer.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The policy id, e.g. `free-minute`.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The quota.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The same window with another quota (for the local fallback).
    pub(crate) fn with_quota(&self, quota: Quota) -> Self {
        Self {
            index: self.index,
            id: self.id.clone(),
            quota,
        }
    }
}

/// 1 to 64 characters of `A-Z a-z 0-9 - _ .`: safe in a header's quoted
/// string and in a store key.
pub(crate) fn is_token(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(crate) fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidValue, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_compile_shortest_window_first_with_a_policy_header() {
        let mut next = 0;
        let plan = Plan::new("free")
            .quota(Quota::per_day(1000))
            .quota(Quota::per_minute(100).burst(10))
            .compile(&mut next)
            .unwrap();
        assert_eq!(next, 2);
        assert_eq!(plan.windows[0].id(), "free-minute");
        assert_eq!(plan.windows[1].id(), "free-day");
        assert_eq!(
            plan.policy.unwrap(),
            "\"free-minute\";q=100;w=60, \"free-day\";q=1000;w=86400"
        );
    }

    #[test]
    fn bad_plans_are_config_errors() {
        let mut next = 0;
        for plan in [
            Plan::new("free"),
            Plan::new("bad name").quota(Quota::per_second(1)),
            Plan::new("free").quota(Quota::per_second(0)),
            Plan::new("free").quota(Quota::per_second(1).burst(0)),
            Plan::new("free").quota(Quota::new(1, Duration::ZERO)),
            Plan::unlimited("partner").quota(Quota::per_second(1)),
            Plan::new("x")
                .quota(Quota::per_second(1))
                .quota(Quota::per_second(1))
                .quota(Quota::per_second(1))
                .quota(Quota::per_second(1))
                .quota(Quota::per_second(1)),
        ] {
            let err = plan.compile(&mut next).unwrap_err();
            assert_eq!(err.kind(), ConfigErrorKind::InvalidValue, "{err}");
        }
    }

    #[test]
    fn divided_quota_never_reaches_zero() {
        let q = Quota::per_minute(100).burst(10).divided(3);
        assert_eq!((q.count(), q.burst_size()), (33, 3));
        let q = Quota::per_second(1).divided(5);
        assert_eq!((q.count(), q.burst_size()), (1, 1));
    }
}
