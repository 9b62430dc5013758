//! Plain-data configuration mirroring the builders; with the `serde`
//! feature it deserialises (unknown fields are errors).

use std::time::Duration;

use http::HeaderName;
use tollgate_core::ConfigError;

use crate::{
    ConcurrencyLimitLayer, Key, MemoryOptions, MissingKey, Plan, Quota, RateLimitLayer,
    StoreFailure, layer::DEFAULT_NAME, quota::invalid,
};

/// The configuration of a [`RateLimitLayer`]; `RateLimitLayer::try_from`
/// runs the same checks as [`RateLimitBuilder::build`](crate::RateLimitBuilder::build).
///
/// ```
/// use tollgate_ratelimit::{Per, PlanConfig, QuotaConfig, RateLimitConfig, RateLimitLayer};
///
/// let mut config = RateLimitConfig::default();
/// config.plans.push(PlanConfig::new("free", vec![QuotaConfig::new(100, Per::Minute).burst(10)]));
/// let layer = RateLimitLayer::try_from(&config)?;
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// The layer's name (default `default`).
    pub name: String,
    /// Key alternatives, each a list of parts that all apply; empty means
    /// the identity, else the client IP.
    pub key: Vec<Vec<KeyPartConfig>>,
    /// What happens when no key is present.
    pub on_missing_key: MissingKey,
    /// The plans.
    pub plans: Vec<PlanConfig>,
    /// The plan of anonymous requests and unknown plan names.
    pub default_plan: Option<String>,
    /// Whether admitted responses carry the RateLimit headers too.
    pub headers_on_allowed: bool,
    /// What to do when the store fails.
    pub on_store_error: StoreFailure,
    /// Seconds between two sweeps of idle in-memory keys.
    pub evict_every_secs: Option<u64>,
    /// A shared Redis store instead of the in-memory one (feature `redis`).
    pub redis: Option<RedisConfig>,
}

/// One part of a key in a [`RateLimitConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum KeyPartConfig {
    /// `Identity.consumer`.
    Consumer,
    /// `Identity.subject`.
    Subject,
    /// Consumer, else subject.
    Identity,
    /// The `ClientIp` extension.
    ClientIp,
    /// The route name.
    Route,
    /// One key for everyone.
    Global,
    /// A header's value.
    Header(String),
}

/// A plan in a [`RateLimitConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct PlanConfig {
    /// The name, matched against `Identity.plan`.
    pub name: String,
    /// The quotas, all applied.
    pub quotas: Vec<QuotaConfig>,
    /// Never limited (then `quotas` stays empty).
    pub unlimited: bool,
}

/// A quota in a [`PlanConfig`]: `count` per `per`, with a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct QuotaConfig {
    /// Requests per period.
    pub count: u32,
    /// The period.
    pub per: Per,
    /// Requests that may come at once (default `count`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub burst: Option<u32>,
}

/// The period of a [`QuotaConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Per {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

/// The Redis store in a [`RateLimitConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://host:port/db`, for one Redis. Leave it empty with
    /// `cluster_nodes`.
    pub url: String,
    /// Some nodes of a Redis Cluster (`redis://host:port` each), instead of
    /// `url`: see `RedisStore::open_cluster`.
    pub cluster_nodes: Vec<String>,
    /// The key prefix (default `tollgate:rl`).
    pub prefix: Option<String>,
    /// The longest a decision may take, in milliseconds (default 250).
    pub timeout_ms: Option<u64>,
}

/// The configuration of a [`ConcurrencyLimitLayer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ConcurrencyLimitConfig {
    /// The most requests in flight.
    pub max_in_flight: usize,
    /// `Retry-After` of a rejection, in seconds (default 1).
    pub retry_after_secs: Option<u64>,
}

// === impl RateLimitConfig ===

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.into(),
            key: Vec::new(),
            on_missing_key: MissingKey::default(),
            plans: Vec::new(),
            default_plan: None,
            headers_on_allowed: false,
            on_store_error: StoreFailure::default(),
            evict_every_secs: None,
            redis: None,
        }
    }
}

impl TryFrom<&RateLimitConfig> for RateLimitLayer {
    type Error = ConfigError;

    fn try_from(config: &RateLimitConfig) -> Result<Self, ConfigError> {
        let mut builder = Self::builder()
            .name(config.name.clone())
            .on_missing_key(config.on_missing_key)
            .headers_on_allowed(config.headers_on_allowed)
            .on_store_error(config.on_store_error);
        if !config.key.is_empty() {
            let alternatives = config
                .key
                .iter()
                .map(|parts| parts.iter().map(KeyPartConfig::to_part).collect())
                .collect::<Result<Vec<Vec<_>>, _>>()?;
            builder = builder.key(Key::from_parts(alternatives));
        }
        for plan in &config.plans {
            builder = builder.plan(plan.to_plan());
        }
        if let Some(name) = &config.default_plan {
            builder = builder.default_plan(name.clone());
        }
        if let Some(secs) = config.evict_every_secs {
            builder = builder.memory(MemoryOptions::new().evict_every(Duration::from_secs(secs)));
        }
        if let Some(redis) = &config.redis {
            builder = with_redis(builder, redis)?;
        }
        builder.build()
    }
}

#[cfg(feature = "redis")]
fn with_redis(
    builder: crate::RateLimitBuilder,
    config: &RedisConfig,
) -> Result<crate::RateLimitBuilder, ConfigError> {
    let mut store = match (config.url.is_empty(), config.cluster_nodes.is_empty()) {
        (false, true) => crate::RedisStore::open(&config.url)?,
        (true, false) => crate::RedisStore::open_cluster(&config.cluster_nodes)?,
        _ => {
            return Err(invalid(
                "a Redis store needs either `url` or `cluster_nodes`",
            ));
        }
    };
    if let Some(prefix) = &config.prefix {
        store = store.prefix(prefix)?;
    }
    if let Some(ms) = config.timeout_ms {
        store = store.timeout(Duration::from_millis(ms));
    }
    Ok(builder.store(store))
}

#[cfg(not(feature = "redis"))]
fn with_redis(
    _: crate::RateLimitBuilder,
    _: &RedisConfig,
) -> Result<crate::RateLimitBuilder, ConfigError> {
    Err(ConfigError::new(
        tollgate_core::ConfigErrorKind::InvalidValue,
        "a Redis store needs the `redis` feature of tollgate-ratelimit",
    ))
}

// === impl KeyPartConfig ===

impl KeyPartConfig {
    fn to_part(&self) -> Result<crate::KeyPart, ConfigError> {
        use crate::KeyPart;
        Ok(match self {
            Self::Consumer => KeyPart::Consumer,
            Self::Subject => KeyPart::Subject,
            Self::Identity => KeyPart::Identity,
            Self::ClientIp => KeyPart::ClientIp,
            Self::Route => KeyPart::Route,
            Self::Global => KeyPart::Global,
            Self::Header(name) => KeyPart::Header(
                HeaderName::try_from(name.as_str())
                    .map_err(|_| invalid(format!("{name:?} is not a header name")))?,
            ),
        })
    }
}

// === impl PlanConfig ===

impl PlanConfig {
    /// A plan with quotas.
    #[must_use]
    pub fn new(name: impl Into<String>, quotas: Vec<QuotaConfig>) -> Self {
        Self {
            name: name.into(),
            quotas,
            unlimited: false,
        }
    }

    fn to_plan(&self) -> Plan {
        if self.unlimited && self.quotas.is_empty() {
            return Plan::unlimited(self.name.as_str());
        }
        let mut plan = Plan::new(self.name.as_str());
        for q in &self.quotas {
            plan = plan.quota(q.to_quota());
        }
        plan
    }
}

// === impl QuotaConfig ===

impl QuotaConfig {
    /// `count` per `per`, burst `count`.
    #[must_use]
    pub fn new(count: u32, per: Per) -> Self {
        Self {
            count,
            per,
            burst: None,
        }
    }

    /// Sets the burst.
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    fn to_quota(self) -> Quota {
        let quota = match self.per {
            Per::Second => Quota::per_second(self.count),
            Per::Minute => Quota::per_minute(self.count),
            Per::Hour => Quota::per_hour(self.count),
            Per::Day => Quota::per_day(self.count),
        };
        match self.burst {
            Some(b) => quota.burst(b),
            None => quota,
        }
    }
}

// === impl ConcurrencyLimitConfig ===

impl TryFrom<&ConcurrencyLimitConfig> for ConcurrencyLimitLayer {
    type Error = ConfigError;

    fn try_from(config: &ConcurrencyLimitConfig) -> Result<Self, ConfigError> {
        let layer = Self::new(config.max_in_flight)?;
        Ok(match config.retry_after_secs {
            Some(secs) => layer.retry_after(Duration::from_secs(secs)),
            None => layer,
        })
    }
}
