//! A bounded cache of verdicts keyed by the SHA-256 of the credential, so
//! an expensive check (an RS256 signature, an introspection round trip) is
//! paid once per token, not once per request. The credential itself is
//! never stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tollgate_core::Identity;

use crate::AuthError;

pub(crate) type Digest32 = [u8; 32];

pub(crate) fn digest(credential: &str) -> Digest32 {
    Sha256::digest(credential.as_bytes()).into()
}

/// Seconds since the Unix epoch, as JWT claims count time.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Clone, Debug)]
struct Entry {
    verdict: Result<Identity, AuthError>,
    /// Unix seconds after which the entry must not be used.
    until: u64,
}

/// Verdicts with a time-to-live and a size bound (moka evicts the least
/// useful entries past it).
#[derive(Clone, Debug)]
pub(crate) struct VerdictCache {
    entries: moka::sync::Cache<Digest32, Entry>,
    ttl: Duration,
}

impl VerdictCache {
    pub(crate) fn new(max_entries: u64, ttl: Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
            ttl,
        }
    }

    /// A cached verdict still valid now.
    pub(crate) fn get(&self, key: &Digest32) -> Option<Result<Identity, AuthError>> {
        let entry = self.entries.get(key)?;
        if now_unix() < entry.until {
            Some(entry.verdict)
        } else {
            self.entries.invalidate(key);
            None
        }
    }

    /// Caches `verdict` until `min(expires, now + ttl)`.
    pub(crate) fn insert(
        &self,
        key: Digest32,
        verdict: Result<Identity, AuthError>,
        expires: Option<u64>,
        ttl: Option<Duration>,
    ) {
        let ttl = ttl.unwrap_or(self.ttl).min(self.ttl);
        let mut until = now_unix().saturating_add(ttl.as_secs().max(1));
        if let Some(exp) = expires {
            until = until.min(exp);
        }
        if until > now_unix() {
            self.entries.insert(key, Entry { verdict, until });
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_with_the_token_and_the_size_is_bounded() {
        let cache = VerdictCache::new(100, Duration::from_secs(60));
        let key = digest("token");
        cache.insert(key, Ok(Identity::subject("a")), Some(now_unix() + 30), None);
        assert!(cache.get(&key).is_some());
        // Already expired: not cached at all.
        let old = digest("old");
        cache.insert(old, Ok(Identity::subject("b")), Some(now_unix() - 1), None);
        assert!(cache.get(&old).is_none());
        for i in 0..1_000 {
            cache.insert(digest(&i.to_string()), Err(AuthError::Inactive), None, None);
        }
        assert!(cache.len() <= 100, "{}", cache.len());
    }
}
