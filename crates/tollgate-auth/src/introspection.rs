//! OAuth2 token introspection (RFC 7662) for opaque tokens.

use std::{sync::Arc, time::Duration};

use http::request::Parts;
use serde_json::{Map, Value};
use tollgate_core::{AuthMethod, ConfigError, ConfigErrorKind, Identity};
use url::Url;

use crate::{
    AuthError, Authenticator, CredentialSource, Scheme, Verdict,
    cache::{VerdictCache, now_unix},
    credential::Found,
    http_client::{HttpClient, parse_url, read_body},
};

/// Checks opaque bearer tokens with the authorization server's
/// introspection endpoint (RFC 7662), authenticating as a client with its
/// credentials (HTTP Basic, RFC 6749 §2.3.1).
///
/// `active`, `scope`, `exp`, `sub`, `client_id` map onto [`Identity`].
/// Positive answers are cached until `min(exp, ttl)`, negative ones for a
/// shorter TTL. When the server cannot be reached and no cached answer
/// applies, the request gets 503.
///
/// ```no_run
/// # async fn f() -> Result<(), tollgate_core::ConfigError> {
/// use std::time::Duration;
/// use tollgate_auth::Introspection;
///
/// let introspection = Introspection::builder("https://id.example.com/oauth2/introspect")
///     .client_credentials("gateway", "s3cret")
///     .cache_ttl(Duration::from_secs(60))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Introspection {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Url,
    client_id: String,
    client_secret: String,
    client: HttpClient,
    cache: VerdictCache,
    ttl: Duration,
    negative_ttl: Duration,
    max_len: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client secret.
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint.as_str())
            .field("client_id", &self.client_id)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Introspection`].
#[derive(Debug)]
#[must_use]
pub struct IntrospectionBuilder {
    endpoint: String,
    client_id: String,
    client_secret: String,
    // The defaults are read by `IntrospectionConfig`.
    pub(crate) timeout: Duration,
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) max_entries: u64,
    pub(crate) max_len: usize,
    allow_insecure_http: bool,
}

/// The members of an introspection response we read (RFC 7662 §2.2).
#[derive(serde::Deserialize)]
struct Response {
    active: bool,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl Introspection {
    /// Introspects at `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> IntrospectionBuilder {
        IntrospectionBuilder {
            endpoint: endpoint.into(),
            client_id: String::new(),
            client_secret: String::new(),
            timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            max_entries: 10_000,
            max_len: crate::jwt::DEFAULT_MAX_TOKEN_LEN,
            allow_insecure_http: false,
        }
    }

    /// Introspects `token` (cached answers first).
    ///
    /// # Errors
    ///
    /// `Inactive` for a token the server does not vouch for,
    /// `Unavailable` when the server cannot be reached.
    pub async fn introspect(&self, token: &str) -> Result<Identity, AuthError> {
        if let Some(verdict) = self.inner.cache.get(token, 0) {
            return verdict;
        }
        self.inner.call(token).await
    }
}

impl Inner {
    async fn call(&self, token: &str) -> Result<Identity, AuthError> {
        let res = self
            .client
            .inner()
            .post(self.endpoint.clone())
            .basic_auth(
                form_encode(&self.client_id),
                Some(form_encode(&self.client_secret)),
            )
            .header(http::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await;
        let body = match res {
            Ok(res) => read_body(res).await,
            Err(e) => Err(e.to_string()),
        };
        let parsed = body.and_then(|body| {
            serde_json::from_slice::<Response>(&body).map_err(|e| format!("invalid response: {e}"))
        });
        let answer = match parsed {
            Ok(answer) => answer,
            Err(error) => {
                // Not cached: the next request tries again.
                tracing::warn!(%error, endpoint = %self.endpoint, "token introspection failed");
                return Err(AuthError::Unavailable);
            }
        };
        let now = now_unix();
        if !answer.active || answer.exp.is_some_and(|exp| exp <= now) {
            self.cache.insert(
                token,
                Err(AuthError::Inactive),
                None,
                Some(self.negative_ttl),
                0,
            );
            return Err(AuthError::Inactive);
        }
        let mut claims = answer.rest;
        claims.insert("active".into(), true.into());
        let scopes: Vec<Arc<str>> = answer
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(Arc::from)
            .collect();
        if let Some(scope) = answer.scope {
            claims.insert("scope".into(), scope.into());
        }
        let mut identity = Identity::default()
            .with_scopes(scopes)
            .with_method(AuthMethod::Introspection);
        identity.subject = answer.sub.as_deref().map(Arc::from);
        identity.consumer = answer.client_id.as_deref().map(Arc::from);
        if let Some(sub) = answer.sub {
            claims.insert("sub".into(), sub.into());
        }
        if let Some(client_id) = answer.client_id {
            claims.insert("client_id".into(), client_id.into());
        }
        if let Some(exp) = answer.exp {
            claims.insert("exp".into(), exp.into());
        }
        let identity = identity.with_claims(claims);
        self.cache
            .insert(token, Ok(identity.clone()), answer.exp, Some(self.ttl), 0);
        Ok(identity)
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded before Basic.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl Authenticator for Introspection {
    fn authenticate(&self, parts: &Parts) -> Verdict {
        let token =
            match CredentialSource::Bearer.find(&parts.headers, &parts.uri, self.inner.max_len) {
                Found::Absent => return Verdict::Absent,
                Found::Invalid(error) => return Verdict::Reject(error),
                Found::Present(token) => token,
            };
        if let Some(verdict) = self.inner.cache.get(token, 0) {
            return verdict.into();
        }
        let inner = Arc::clone(&self.inner);
        let token = token.to_owned();
        Verdict::Pending(Box::pin(async move { inner.call(&token).await }))
    }

    fn credential_sources(&self) -> Vec<CredentialSource> {
        vec![CredentialSource::Bearer]
    }

    fn scheme(&self) -> Scheme {
        Scheme::Bearer
    }
}

impl IntrospectionBuilder {
    /// The client id and secret the gateway authenticates with.
    pub fn client_credentials(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client_id = id.into();
        self.client_secret = secret.into();
        self
    }

    /// How long an active answer is reused at most (default 60 s; never
    /// past the token's `exp`).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long an inactive answer is reused (default 10 s).
    pub fn negative_cache_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// The most answers cached (default 10 000).
    pub fn max_cache_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries;
        self
    }

    /// The timeout of one call (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest token sent to the server (default 8 KiB).
    pub fn max_token_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// Allows a plain-HTTP endpoint on a host other than loopback.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Builds the authenticator.
    ///
    /// # Errors
    ///
    /// When the endpoint is not a valid HTTPS URL (plain HTTP to loopback
    /// is allowed) or the client id is empty.
    pub fn build(self) -> Result<Introspection, ConfigError> {
        let endpoint = parse_url("introspection endpoint", &self.endpoint)?;
        let client = HttpClient::new(self.timeout, self.allow_insecure_http)?;
        client
            .check_url(&endpoint)
            .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidValue, e))?;
        if self.client_id.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "introspection needs client credentials",
            ));
        }
        Ok(Introspection {
            inner: Arc::new(Inner {
                endpoint,
                client_id: self.client_id,
                client_secret: self.client_secret,
                client,
                cache: VerdictCache::new(self.max_entries, self.ttl.max(self.negative_ttl)),
                ttl: self.ttl,
                negative_ttl: self.negative_ttl,
                max_len: self.max_len,
            }),
        })
    }
}
