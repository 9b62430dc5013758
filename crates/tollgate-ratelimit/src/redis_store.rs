//! [`RedisStore`]: one quota shared by every gateway instance.

use std::{
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;
use tollgate_core::{ConfigError, ConfigErrorKind};

use crate::{
    quota::{MAX_WINDOWS, invalid, is_token},
    store::{Check, Decision, RateLimitStore, StoreError, StoreKey, WindowState},
};

/// GCRA for every window of a plan, atomically: the new theoretical
/// arrival times are written only when every window admits the request.
/// Time is Redis's (`TIME`), so the instances' clocks do not matter.
///
/// KEYS: one per window. ARGV: per window, the emission interval and the
/// burst's tolerance (`burst × interval`), in microseconds.
/// Returns `{allowed, retry_after_us, denied_by, r1, t1_us, r2, t2_us, …}`.
const GCRA_LUA: &str = r"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local n = #KEYS
local tats = {}
local allowed, wait, denied = 1, 0, -1
for i = 1, n do
  local t = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local over = tat + t - now - tau
  if over > 0 then
    allowed = 0
    if over > wait then wait = over; denied = i - 1 end
  end
  tats[i] = tat
end
local out = {allowed, wait, denied}
for i = 1, n do
  local t = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tats[i]
  if allowed == 1 then
    tat = tat + t
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  local remaining = math.floor((tau - (tat - now)) / t)
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = remaining
  out[#out + 1] = tat - now
end
return out
";

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "tollgate:rl";

/// Rate-limit state in Redis, shared by every gateway instance that uses
/// the same Redis, prefix and layer names.
///
/// - One round trip per decision: a Lua script run with `EVALSHA` (loaded
///   again by itself after a Redis restart), deciding every window of the
///   plan atomically. Keys expire by themselves (`PX` = time until full).
/// - Redis Cluster: a decision's keys are
///   `{prefix}:{<layer>\x1f<key>}:<window>`; the `{…}` hash tag puts all
///   windows of one key on one slot.
/// - The connection is a `ConnectionManager`, made on the first check (so
///   a gateway starts while Redis is down) and reconnecting by itself.
/// - A decision that fails or takes longer than the
///   [timeout](Self::timeout) is a [`StoreError`]; the layer applies its
///   `StoreFailure` mode. After a failure, Redis is tried again at most
///   every [`retry_every`](Self::retry_every); meanwhile the failure mode
///   answers at once.
///
/// Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    manager: OnceLock<ConnectionManager>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    retry_every: Duration,
    epoch: Instant,
    /// Nanoseconds after `epoch` before which Redis is not tried.
    down_until: AtomicU64,
}

// === impl RedisStore ===

impl RedisStore {
    /// A store for the Redis at `url` (`redis://host:port/db`). Nothing is
    /// connected until the first check.
    ///
    /// # Errors
    ///
    /// When the URL is not a Redis URL.
    pub fn open(url: &str) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url).map_err(|e| {
            ConfigError::new(ConfigErrorKind::InvalidUrl, format!("redis URL: {e}"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                manager: OnceLock::new(),
                script: redis::Script::new(GCRA_LUA),
                prefix: DEFAULT_PREFIX.into(),
                timeout: Duration::from_millis(250),
                retry_every: Duration::from_secs(1),
                epoch: Instant::now(),
                down_until: AtomicU64::new(0),
            }),
        })
    }

    fn configure(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// The key prefix (default [`DEFAULT_PREFIX`]; `A-Z a-z 0-9 - _ . :`).
    ///
    /// # Errors
    ///
    /// When the prefix is empty, longer than 64 bytes or has other characters.
    pub fn prefix(self, prefix: &str) -> Result<Self, ConfigError> {
        if !is_token(&prefix.replace(':', ".")) {
            return Err(invalid("a Redis prefix is 1 to 64 of A-Z a-z 0-9 - _ . :"));
        }
        let prefix = prefix.to_owned();
        Ok(self.configure(|i| i.prefix = prefix))
    }

    /// The longest a decision may take, connecting included (default
    /// 250 ms).
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        self.configure(|i| i.timeout = timeout)
    }

    /// How long after a failure Redis is left alone (default 1 s).
    #[must_use]
    pub fn retry_every(self, every: Duration) -> Self {
        self.configure(|i| i.retry_every = every)
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(m) = self.inner.manager.get() {
            return Ok(m.clone());
        }
        // The manager spawns its connection task on tokio: never outside it.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::new("redis: no tokio runtime"));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)
            .map_err(|e| StoreError::new(format!("redis: {:?}", e.kind())))?;
        Ok(self.inner.manager.get_or_init(|| manager).clone())
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The keys and arguments of one decision.
    fn keys_and_args(&self, key: &StoreKey<'_>) -> (Vec<Vec<u8>>, Vec<u64>) {
        let mut keys = Vec::with_capacity(key.windows.len());
        let mut args = Vec::with_capacity(2 * key.windows.len());
        for window in key.windows {
            let mut k =
                Vec::with_capacity(self.inner.prefix.len() + key.scope.len() + key.key.len() + 32);
            k.extend_from_slice(self.inner.prefix.as_bytes());
            k.extend_from_slice(b":{");
            k.extend_from_slice(key.scope.as_bytes());
            k.push(0x1f);
            k.extend_from_slice(key.key);
            k.extend_from_slice(b"}:");
            k.extend_from_slice(window.id().as_bytes());
            keys.push(k);
            let quota = window.quota();
            let t = micros(quota.emission_interval()).max(1);
            args.push(t);
            args.push(t.saturating_mul(u64::from(quota.burst_size())));
        }
        (keys, args)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Clone for Inner {
    /// The same settings, with a connection of its own.
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            manager: OnceLock::new(),
            script: redis::Script::new(GCRA_LUA),
            prefix: self.prefix.clone(),
            timeout: self.timeout,
            retry_every: self.retry_every,
            epoch: self.epoch,
            down_until: AtomicU64::new(0),
        }
    }
}

fn parse(reply: &[i64], windows: usize) -> Result<Decision, StoreError> {
    let bad = || StoreError::new("redis: unexpected script reply");
    let (&[allowed, wait, denied], rest) = reply.split_first_chunk::<3>().ok_or_else(bad)?;
    if rest.len() != 2 * windows || windows > MAX_WINDOWS {
        return Err(bad());
    }
    let mut states = [None; MAX_WINDOWS];
    for (slot, pair) in states.iter_mut().zip(rest.chunks_exact(2)) {
        *slot = Some(WindowState {
            remaining: u32::try_from(pair[0].max(0)).unwrap_or(u32::MAX),
            reset: Duration::from_micros(u64::try_from(pair[1].max(0)).unwrap_or(0)),
        });
    }
    if allowed == 1 {
        return Ok(Decision::allowed_array(states));
    }
    let wait = Duration::from_micros(u64::try_from(wait.max(0)).unwrap_or(0));
    let denied = usize::try_from(denied).unwrap_or(0);
    if let Some(Some(s)) = states.get_mut(denied) {
        s.remaining = 0;
    }
    Ok(Decision::denied(wait, denied, &states))
}

impl RateLimitStore for RedisStore {
    fn check(&self, key: &StoreKey<'_>) -> Check {
        let now = self.now_nanos();
        if now < self.inner.down_until.load(Ordering::Relaxed) {
            return Check::Ready(Err(StoreError::new("redis: unavailable, retrying later")));
        }
        let manager = match self.manager() {
            Ok(m) => m,
            Err(e) => return Check::Ready(Err(e)),
        };
        let mut manager = manager;
        // Owned: the future outlives `key`.
        let (keys, args) = self.keys_and_args(key);
        let windows = key.windows.len();
        let this = self.clone();
        Check::Pending(Box::pin(async move {
            let mut invocation = this.inner.script.prepare_invoke();
            for k in keys {
                invocation.key(k);
            }
            for a in args {
                invocation.arg(a);
            }
            let result = tokio::time::timeout(
                this.inner.timeout,
                invocation.invoke_async::<Vec<i64>>(&mut manager),
            )
            .await;
            let reply = match result {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => return Err(this.down(format!("redis: {:?}", e.kind()))),
                Err(_) => return Err(this.down("redis: timed out".into())),
            };
            this.inner.down_until.store(0, Ordering::Relaxed);
            parse(&reply, windows)
        }))
    }
}

// === impl RedisStore (failures) ===

impl RedisStore {
    fn down(&self, message: String) -> StoreError {
        let until = self
            .now_nanos()
            .saturating_add(u64::try_from(self.inner.retry_every.as_nanos()).unwrap_or(u64::MAX));
        self.inner.down_until.store(until, Ordering::Relaxed);
        StoreError::new(message)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("retry_every", &self.inner.retry_every)
            .finish_non_exhaustive()
    }
}
