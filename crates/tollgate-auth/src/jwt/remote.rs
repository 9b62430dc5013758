//! Key sets fetched from a JWKS URL or through OIDC discovery, refreshed in
//! the background. The request path only ever reads the current set: it
//! never waits for the identity provider.
//!
//! One task per source does every fetch, so there is never more than one in
//! flight. It refetches on an interval, and early when a token names an
//! unknown `kid`, but never sooner than `min_refetch_interval` after the
//! previous fetch, so random `kid`s cannot flood the provider. A failed
//! fetch keeps the last good set and retries with backoff.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use url::Url;

use super::keys::KeySet;
use crate::http_client::{HttpClient, fetch_json};

/// Where a remote key set comes from.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    Jwks(Url),
    /// OIDC discovery: `{issuer}/.well-known/openid-configuration`, whose
    /// `jwks_uri` is then fetched. The document's `issuer` must match.
    Discovery {
        issuer: String,
        document: Url,
    },
}

/// Refresh timings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timings {
    pub(crate) refresh_interval: Duration,
    pub(crate) min_refetch_interval: Duration,
}

/// The shared state between the request path and the refresh task.
#[derive(Debug)]
pub(crate) struct RemoteKeys {
    current: ArcSwapOption<KeySet>,
    /// Woken to refetch early, and when the owner is dropped.
    wake: Arc<Notify>,
    loaded: Notify,
    /// Bumped when a fetch brings a different key set.
    generation: AtomicU64,
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl RemoteKeys {
    /// Starts the refresh task on the current tokio runtime.
    pub(crate) fn spawn(
        location: Location,
        timings: Timings,
        client: HttpClient,
        runtime: &tokio::runtime::Handle,
    ) -> Arc<Self> {
        let keys = Arc::new(Self {
            current: ArcSwapOption::empty(),
            wake: Arc::new(Notify::new()),
            loaded: Notify::new(),
            generation: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        runtime.spawn(refresh(
            Arc::downgrade(&keys),
            Arc::clone(&keys.wake),
            location,
            timings,
            client,
        ));
        keys
    }

    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Asks for an early refetch (a token named an unknown `kid`). Never
    /// waits; the task rate-limits the fetches.
    pub(crate) fn request_refetch(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    pub(crate) async fn wait_ready(&self) {
        loop {
            let loaded = self.loaded.notified();
            if self.is_ready() {
                return;
            }
            loaded.await;
        }
    }

    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.fetches.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

impl Drop for RemoteKeys {
    fn drop(&mut self) {
        // Lets the task notice, at once, that nobody needs the keys.
        self.wake.notify_one();
    }
}

async fn refresh(
    keys: Weak<RemoteKeys>,
    wake: Arc<Notify>,
    location: Location,
    timings: Timings,
    client: HttpClient,
) {
    // Failed fetches retry after 1 s, doubling up to the refresh interval.
    let first_retry = Duration::from_secs(1).min(timings.refresh_interval);
    let mut retry = first_retry;
    let mut jwks_uri: Option<Url> = None;
    let mut last: Option<crate::cache::Digest32> = None;
    loop {
        let Some(shared) = keys.upgrade() else {
            return;
        };
        shared.fetches.fetch_add(1, Ordering::Relaxed);
        let next = match fetch(&client, &location, &mut jwks_uri).await {
            Ok((set, digest)) => {
                tracing::debug!(keys = set.len(), "fetched JWT signing keys");
                shared.current.store(Some(Arc::new(set)));
                if last.is_some_and(|last| last != digest) {
                    shared.generation.fetch_add(1, Ordering::AcqRel);
                }
                last = Some(digest);
                shared.loaded.notify_waiters();
                retry = first_retry;
                timings.refresh_interval
            }
            Err(error) => {
                shared.failures.fetch_add(1, Ordering::Relaxed);
                // After a failure, discover the JWKS location again.
                jwks_uri = None;
                tracing::warn!(%error, kept_keys = shared.is_ready(), "fetching JWT signing keys failed");
                let wait = retry;
                retry = (retry * 2).min(timings.refresh_interval);
                wait
            }
        };
        drop(shared);
        // No fetch, even on demand, sooner than the minimum interval …
        let floor = timings.min_refetch_interval.min(next);
        tokio::time::sleep(floor).await;
        // … then the next scheduled one, or an early one on request.
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(next.saturating_sub(floor)) => {}
        }
    }
}

/// The key set and a digest of the document it came from.
async fn fetch(
    client: &HttpClient,
    location: &Location,
    jwks_uri: &mut Option<Url>,
) -> Result<(KeySet, crate::cache::Digest32), String> {
    let url = match (location, &jwks_uri) {
        (Location::Jwks(url), _) => url.clone(),
        (Location::Discovery { .. }, Some(url)) => url.clone(),
        (Location::Discovery { issuer, document }, None) => {
            let url = discover(client, issuer, document).await?;
            *jwks_uri = Some(url.clone());
            url
        }
    };
    let body = client.get(&url).await?;
    let set = KeySet::from_jwks(&body)?;
    Ok((set, crate::cache::digest_bytes(&body)))
}

async fn discover(client: &HttpClient, issuer: &str, document: &Url) -> Result<Url, String> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        issuer: String,
        jwks_uri: String,
    }
    let meta: Metadata = fetch_json(client, document).await?;
    // OpenID Connect Discovery 1.0 §4.3: the issuer must be the one asked for.
    if meta.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!(
            "discovery document names issuer {:?}, expected {issuer:?}",
            meta.issuer
        ));
    }
    let url = Url::parse(&meta.jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
    client.check_url(&url)?;
    Ok(url)
}
