//! JSON Web Token authentication: [`JwtAuth`].

mod keys;
mod remote;

use std::{sync::Arc, time::Duration};

use http::request::Parts;
use jsonwebtoken::{Algorithm, errors::ErrorKind};
use serde_json::{Map, Value};
use tollgate_core::{AuthMethod, ConfigError, ConfigErrorKind, Identity};

pub use self::keys::JwtKey;
use self::{
    keys::KeySet,
    remote::{Location, RemoteKeys, Timings},
};
use crate::{
    AuthError, Authenticator, CredentialSource, Scheme, Verdict,
    cache::{VerdictCache, now_unix},
    credential::Found,
    http_client::{HttpClient, parse_url},
};

/// The default limit on a token's size, checked before any parsing.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies JSON Web Tokens (RFC 7519) and attaches the caller's
/// [`Identity`].
///
/// - Algorithms HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 and
///   EdDSA, each key with its own allow-list; `alg: none` is always
///   refused, and so is an HMAC token against an asymmetric key.
/// - Keys from secrets, PEM, JWK/JWKS documents, a JWKS URL or OIDC
///   discovery. Remote keys are fetched in the background and never on the
///   request path; see [`Issuer::jwks_url`].
/// - `exp`, `nbf` and `iat` with a leeway, issuer and audience lists,
///   required claims, several issuers each with its own keys.
/// - Verified tokens are cached until
///   `min(exp, ttl)`, in a bounded cache.
/// - The token header's `jku`, `x5u` and `jwk` are never followed, and a
///   token with `crit` extensions is refused.
///
/// ```
/// use std::time::Duration;
/// use tollgate_auth::{Issuer, JwtAuth, JwtKey};
///
/// let jwt = JwtAuth::builder()
///     .issuer(
///         Issuer::new("https://id.example.com")
///             .audience("orders-api")
///             .key(JwtKey::hmac("a-long-random-secret").kid("k1")),
///     )
///     .leeway(Duration::from_secs(30))
///     .build()?;
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct JwtAuth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    issuers: Vec<IssuerState>,
    sources: Vec<CredentialSource>,
    max_len: usize,
    cache: Option<VerdictCache>,
    mapping: ClaimMapping,
    required: Vec<String>,
    leeway: u64,
}

#[derive(Debug)]
struct IssuerState {
    /// `None`: tokens are accepted whatever their `iss`.
    iss: Option<String>,
    algorithms: Vec<Algorithm>,
    audiences: Vec<String>,
    keys: Keys,
}

#[derive(Debug)]
enum Keys {
    Static(KeySet),
    Remote(Arc<RemoteKeys>),
}

/// One accepted token issuer: its `iss`, audiences and keys.
#[derive(Clone, Debug)]
#[must_use]
pub struct Issuer {
    iss: Option<String>,
    audiences: Vec<String>,
    algorithms: Option<Vec<Algorithm>>,
    keys: Vec<JwtKey>,
    remote: Option<RemoteSource>,
}

#[derive(Clone, Debug)]
enum RemoteSource {
    Jwks(String),
    Discovery,
}

/// Builds a [`JwtAuth`].
#[derive(Debug)]
#[must_use]
pub struct JwtAuthBuilder {
    issuers: Vec<Issuer>,
    sources: Vec<CredentialSource>,
    // The defaults are read by `JwtConfig::default`.
    pub(crate) max_len: usize,
    pub(crate) leeway: Duration,
    pub(crate) required: Vec<String>,
    pub(crate) cache: Option<(u64, Duration)>,
    pub(crate) mapping: ClaimMapping,
    pub(crate) refresh_interval: Duration,
    pub(crate) min_refetch_interval: Duration,
    pub(crate) fetch_timeout: Duration,
    allow_insecure_http: bool,
}

/// Which claims fill which [`Identity`] fields. Names are top-level claims
/// or dotted paths into nested objects (`realm_access.roles`).
#[derive(Clone, Debug)]
#[must_use]
pub struct ClaimMapping {
    pub(crate) scopes: Vec<String>,
    pub(crate) roles: Vec<String>,
    pub(crate) consumer: Vec<String>,
    pub(crate) plan: Vec<String>,
}

// === impl JwtAuth ===

impl JwtAuth {
    /// A builder with the defaults: `Authorization: Bearer`, 8 KiB tokens,
    /// 60 s leeway, `exp` required, a cache of 10 000 tokens for 5 minutes.
    pub fn builder() -> JwtAuthBuilder {
        JwtAuthBuilder {
            issuers: Vec::new(),
            sources: vec![CredentialSource::Bearer],
            max_len: DEFAULT_MAX_TOKEN_LEN,
            leeway: Duration::from_secs(60),
            required: vec!["exp".into()],
            cache: Some((10_000, Duration::from_secs(300))),
            mapping: ClaimMapping::default(),
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(10),
            allow_insecure_http: false,
        }
    }

    /// Verifies `token` and returns the caller's identity.
    ///
    /// # Errors
    ///
    /// The safe category of the failure.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let inner = &*self.inner;
        if token.len() > inner.max_len {
            return Err(AuthError::TooLarge);
        }
        let Some(cache) = &inner.cache else {
            return inner.verify_uncached(token).map(|(id, _)| id);
        };
        let generation = inner.generation();
        if let Some(verdict) = cache.get(token, generation) {
            return verdict;
        }
        let (identity, exp) = inner.verify_uncached(token)?;
        cache.insert(token, Ok(identity.clone()), exp, None, generation);
        Ok(identity)
    }

    /// Whether every issuer has keys loaded.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.inner.issuers.iter().all(|i| match &i.keys {
            Keys::Static(_) => true,
            Keys::Remote(remote) => remote.is_ready(),
        })
    }

    /// Waits until every issuer has keys loaded.
    pub async fn ready(&self) {
        for issuer in &self.inner.issuers {
            if let Keys::Remote(remote) = &issuer.keys {
                remote.wait_ready().await;
            }
        }
    }

    /// Fetches and failures of the remote key sources so far, summed.
    #[must_use]
    pub fn fetch_stats(&self) -> FetchStats {
        let mut stats = FetchStats::default();
        for issuer in &self.inner.issuers {
            if let Keys::Remote(remote) = &issuer.keys {
                let (fetches, failures) = remote.stats();
                stats.fetches += fetches;
                stats.failures += failures;
            }
        }
        stats
    }
}

/// Counts of key-set fetches, for tests and operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchStats {
    /// Fetches started.
    pub fetches: u64,
    /// Fetches that failed (the previous keys were kept).
    pub failures: u64,
}

impl Authenticator for JwtAuth {
    fn authenticate(&self, parts: &Parts) -> Verdict {
        for source in &self.inner.sources {
            match source.find(&parts.headers, &parts.uri, self.inner.max_len) {
                Found::Absent => {}
                Found::Invalid(error) => return Verdict::Reject(error),
                Found::Present(token) => return self.verify(token).into(),
            }
        }
        Verdict::Absent
    }

    fn credential_sources(&self) -> Vec<CredentialSource> {
        self.inner.sources.clone()
    }

    fn scheme(&self) -> Scheme {
        Scheme::Bearer
    }

    fn is_ready(&self) -> bool {
        Self::is_ready(self)
    }
}

// === impl Inner ===

/// The parts of a token header we judge before verifying.
#[derive(serde::Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// Only the `iss` of a token, to pick the issuer's keys.
#[derive(serde::Deserialize)]
struct IssPeek {
    #[serde(default)]
    iss: Option<String>,
}

impl Inner {
    /// Changes whenever a remote key set changes, so cached verdicts made
    /// with a key that was rotated out stop counting at once.
    fn generation(&self) -> u64 {
        self.issuers
            .iter()
            .map(|i| match &i.keys {
                Keys::Static(_) => 0,
                Keys::Remote(remote) => remote.generation(),
            })
            .fold(0, u64::wrapping_add)
    }

    fn verify_uncached(&self, token: &str) -> Result<(Identity, Option<u64>), AuthError> {
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(_), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(AuthError::Malformed);
        };
        let header: RawHeader = decode_segment(header)?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: extensions we do not understand.
            return Err(AuthError::UnsupportedAlgorithm);
        }
        // `none`, lower-case spellings and unknown names all end here.
        let alg: Algorithm = header
            .alg
            .parse()
            .map_err(|_| AuthError::UnsupportedAlgorithm)?;

        let issuer = self.issuer_for(payload)?;
        let keys = match &issuer.keys {
            Keys::Static(set) => Keyring::Static(set),
            Keys::Remote(remote) => {
                Keyring::Remote(remote.current().ok_or(AuthError::KeysUnavailable)?)
            }
        };
        let set = keys.set();
        if let (Some(kid), Keys::Remote(remote)) = (&header.kid, &issuer.keys)
            && !set.has_kid(kid)
        {
            // Maybe a rotation: refetch in the background, rate-limited.
            remote.request_refetch();
        }
        let candidates = set.candidates(header.kid.as_deref());
        if candidates.is_empty() {
            return Err(if header.kid.is_some() {
                AuthError::UnknownKey
            } else {
                AuthError::UnsupportedAlgorithm
            });
        }
        if !issuer.algorithms.contains(&alg) {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        // The signature covers `header.payload`; only the signature is
        // checked here, the claims are parsed once and checked below.
        let (message, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let mut error = AuthError::UnsupportedAlgorithm;
        for key in candidates.into_iter().filter(|k| k.accepts(alg)) {
            match jsonwebtoken::crypto::verify(
                signature,
                message.as_bytes(),
                key.decoding_key(),
                alg,
            ) {
                Ok(true) => {
                    let claims: Map<String, Value> = decode_segment(payload)?;
                    self.check(issuer, &claims)?;
                    return Ok(self.identity(claims));
                }
                // Another key may have signed it.
                Ok(false) => error = AuthError::BadSignature,
                Err(e) => {
                    error = map_error(e.kind());
                    if error != AuthError::BadSignature {
                        break;
                    }
                }
            }
        }
        Err(error)
    }

    /// The registered claims (RFC 7519 §4.1) and the required ones.
    fn check(&self, issuer: &IssuerState, claims: &Map<String, Value>) -> Result<(), AuthError> {
        let now = now_unix();
        let time = |name: &str| -> Result<Option<u64>, AuthError> {
            match claims.get(name) {
                None => Ok(None),
                Some(value) => numeric_date(value).map(Some).ok_or(AuthError::Malformed),
            }
        };
        if let Some(exp) = time("exp")?
            && exp.saturating_add(self.leeway) <= now
        {
            return Err(AuthError::Expired);
        }
        for name in ["nbf", "iat"] {
            if time(name)?.is_some_and(|t| t > now.saturating_add(self.leeway)) {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(iss) = &issuer.iss
            && claims.get("iss").and_then(Value::as_str) != Some(iss.as_str())
        {
            return Err(AuthError::WrongIssuer);
        }
        if !issuer.audiences.is_empty() {
            let accepted = |aud: &str| issuer.audiences.iter().any(|a| a == aud);
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => accepted(aud),
                Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
                _ => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }
        if let Some(missing) = self.required.iter().find(|c| lookup(claims, c).is_none()) {
            tracing::debug!(claim = %missing, "token lacks a required claim");
            return Err(AuthError::MissingClaim);
        }
        Ok(())
    }

    fn issuer_for(&self, payload: &str) -> Result<&IssuerState, AuthError> {
        if let [only] = self.issuers.as_slice() {
            return Ok(only);
        }
        let peek: IssPeek = decode_segment(payload)?;
        let iss = peek.iss.as_deref();
        self.issuers
            .iter()
            .find(|i| i.iss.is_none() || i.iss.as_deref() == iss)
            .ok_or(AuthError::WrongIssuer)
    }

    fn identity(&self, claims: Map<String, Value>) -> (Identity, Option<u64>) {
        let exp = claims.get("exp").and_then(numeric_date);
        let m = &self.mapping;
        let mut identity = Identity::default().with_method(AuthMethod::Jwt);
        identity.subject = claims.get("sub").and_then(Value::as_str).map(Arc::from);
        identity.consumer = first_string(&claims, &m.consumer);
        identity.plan = first_string(&claims, &m.plan);
        identity.scopes = strings(&claims, &m.scopes);
        identity.roles = strings(&claims, &m.roles);
        let identity = identity.with_claims(claims);
        (identity, exp)
    }
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional; negative
/// or non-numeric values are malformed.
fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            // Truncation is what a date in whole seconds means here.
            .map(|f| f as u64)
    })
}

enum Keyring<'a> {
    Static(&'a KeySet),
    Remote(Arc<KeySet>),
}

impl Keyring<'_> {
    fn set(&self) -> &KeySet {
        match self {
            Self::Static(set) => set,
            Self::Remote(set) => set,
        }
    }
}

fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, AuthError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Provider(_) => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        // An issuer or audience that is configured is required.
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthError::UnsupportedAlgorithm,
        _ => AuthError::Malformed,
    }
}

/// A claim by name or dotted path.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn first_string(claims: &Map<String, Value>, names: &[String]) -> Option<Arc<str>> {
    names
        .iter()
        .find_map(|n| lookup(claims, n).and_then(Value::as_str))
        .map(Arc::from)
}

/// A space-separated string (`scope`, RFC 8693 §4.2) or an array of
/// strings (`scp`, `roles`), from the first claim present.
fn strings(claims: &Map<String, Value>, names: &[String]) -> Arc<[Arc<str>]> {
    let Some(value) = names.iter().find_map(|n| lookup(claims, n)) else {
        return Arc::new([]);
    };
    match value {
        Value::String(s) => s.split_ascii_whitespace().map(Arc::from).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(Arc::from)
            .collect(),
        _ => Arc::new([]),
    }
}

// === impl Issuer ===

impl Issuer {
    /// Tokens whose `iss` is `iss`.
    pub fn new(iss: impl Into<String>) -> Self {
        Self {
            iss: Some(iss.into()),
            audiences: Vec::new(),
            algorithms: None,
            keys: Vec::new(),
            remote: None,
        }
    }

    /// Tokens with any `iss`, or none: for a single issuer that does not set
    /// it (e.g. tokens signed with a shared secret).
    pub fn any() -> Self {
        Self {
            iss: None,
            ..Self::new("")
        }
    }

    /// Accepts tokens whose `aud` contains `audience` (any of them, when
    /// called several times). Without any, `aud` is not checked.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Narrows the algorithms accepted from this issuer.
    pub fn algorithms<I: IntoIterator<Item = Algorithm>>(mut self, algorithms: I) -> Self {
        self.algorithms = Some(algorithms.into_iter().collect());
        self
    }

    /// Adds a static key.
    pub fn key(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Adds the keys of a JWKS document (RFC 7517 §5).
    ///
    /// # Errors
    ///
    /// When the document is not a key set or has no usable signing key.
    pub fn jwks_json(mut self, document: &str) -> Result<Self, ConfigError> {
        let set = KeySet::from_jwks(document.as_bytes())
            .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidValue, e))?;
        self.keys.extend(set.into_keys());
        Ok(self)
    }

    /// Fetches the keys from a JWKS URL, in the background: at build time,
    /// then every refresh interval, and early (at most once per minimum
    /// refetch interval) when a token names an unknown `kid`. Requests
    /// arriving before the first fetch succeeds get 503.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.remote = Some(RemoteSource::Jwks(url.into()));
        self
    }

    /// Finds the JWKS URL by OpenID Connect discovery:
    /// `{iss}/.well-known/openid-configuration`, whose `issuer` must equal
    /// this issuer, then fetches it as [`jwks_url`](Self::jwks_url) does.
    pub fn discover(mut self) -> Self {
        self.remote = Some(RemoteSource::Discovery);
        self
    }
}

// === impl ClaimMapping ===

impl Default for ClaimMapping {
    /// Scopes from `scope` or `scp`, roles from `roles`, the consumer from
    /// `client_id` or `azp`, the plan from `plan`.
    fn default() -> Self {
        Self {
            scopes: vec!["scope".into(), "scp".into()],
            roles: vec!["roles".into()],
            consumer: vec!["client_id".into(), "azp".into()],
            plan: vec!["plan".into()],
        }
    }
}

impl ClaimMapping {
    /// The claims read for scopes, first present wins.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, claims: I) -> Self {
        self.scopes = claims.into_iter().map(Into::into).collect();
        self
    }

    /// The claims read for roles, e.g. `realm_access.roles`.
    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, claims: I) -> Self {
        self.roles = claims.into_iter().map(Into::into).collect();
        self
    }

    /// The claims read for the consumer.
    pub fn consumer<I: IntoIterator<Item = S>, S: Into<String>>(mut self, claims: I) -> Self {
        self.consumer = claims.into_iter().map(Into::into).collect();
        self
    }

    /// The claims read for the rate-limit plan.
    pub fn plan<I: IntoIterator<Item = S>, S: Into<String>>(mut self, claims: I) -> Self {
        self.plan = claims.into_iter().map(Into::into).collect();
        self
    }
}

// === impl JwtAuthBuilder ===

impl JwtAuthBuilder {
    /// Adds an accepted issuer.
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Also reads the token from a cookie, a query parameter or another
    /// header, after `Authorization: Bearer`.
    pub fn source(mut self, source: CredentialSource) -> Self {
        if !self.sources.contains(&source) {
            self.sources.push(source);
        }
        self
    }

    /// Reads the token only from these sources, in order.
    pub fn sources<I: IntoIterator<Item = CredentialSource>>(mut self, sources: I) -> Self {
        self.sources = sources.into_iter().collect();
        self
    }

    /// The largest token accepted, checked before any parsing.
    pub fn max_token_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Claims every token must carry (dotted paths allowed). `exp` is
    /// required by default; listing claims replaces the default.
    pub fn required_claims<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        claims: I,
    ) -> Self {
        self.required = claims.into_iter().map(Into::into).collect();
        self
    }

    /// Caches verified tokens: at most `max_entries`, each until
    /// `min(exp, ttl)`.
    pub fn cache(mut self, max_entries: u64, ttl: Duration) -> Self {
        self.cache = Some((max_entries, ttl));
        self
    }

    /// Verifies every request's token again.
    pub fn no_cache(mut self) -> Self {
        self.cache = None;
        self
    }

    /// Which claims fill the identity.
    pub fn claims(mut self, mapping: ClaimMapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// How often remote key sets are refetched (default 5 minutes).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// The least time between two fetches of a remote key set, including
    /// those an unknown `kid` asks for (default 30 s).
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// The timeout of one fetch (default 10 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Allows plain-HTTP key URLs to hosts other than loopback. Keys
    /// fetched in clear text can be replaced on the way: only for tests.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Builds the authenticator and starts fetching remote key sets.
    ///
    /// # Errors
    ///
    /// When no issuer is configured, an issuer has no key source, a URL is
    /// invalid, or remote keys are configured outside a tokio runtime.
    pub fn build(self) -> Result<JwtAuth, ConfigError> {
        if self.issuers.is_empty() {
            return Err(invalid("JWT auth needs at least one issuer"));
        }
        if self.sources.is_empty() {
            return Err(invalid("JWT auth needs at least one credential source"));
        }
        if self.issuers.len() > 1 && self.issuers.iter().any(|i| i.iss.is_none()) {
            return Err(invalid(
                "an issuer without `iss` cannot be combined with other issuers",
            ));
        }
        let leeway = self.leeway.as_secs();
        let timings = Timings {
            refresh_interval: self.refresh_interval.max(Duration::from_millis(10)),
            min_refetch_interval: self.min_refetch_interval,
        };
        let mut client = None;
        let mut issuers = Vec::with_capacity(self.issuers.len());
        for (i, issuer) in self.issuers.into_iter().enumerate() {
            let place = format!("issuers[{i}]");
            let keys = match &issuer.remote {
                None if issuer.keys.is_empty() => {
                    return Err(
                        invalid("an issuer needs keys, a JWKS URL or discovery").context(&place)
                    );
                }
                None => Keys::Static(KeySet::new(issuer.keys.clone())),
                Some(_) if !issuer.keys.is_empty() => {
                    return Err(
                        invalid("an issuer has either static keys or remote ones").context(&place)
                    );
                }
                Some(remote) => {
                    let location = match remote {
                        RemoteSource::Jwks(url) => Location::Jwks(
                            parse_url("jwks_url", url).map_err(|e| e.context(&place))?,
                        ),
                        RemoteSource::Discovery => {
                            let iss = issuer.iss.clone().ok_or_else(|| {
                                invalid("discovery needs the issuer's `iss`").context(&place)
                            })?;
                            let document = format!(
                                "{}/.well-known/openid-configuration",
                                iss.trim_end_matches('/')
                            );
                            Location::Discovery {
                                document: parse_url("issuer", &document)
                                    .map_err(|e| e.context(&place))?,
                                issuer: iss,
                            }
                        }
                    };
                    let http = match &client {
                        Some(c) => Clone::clone(c),
                        None => {
                            let c = HttpClient::new(self.fetch_timeout, self.allow_insecure_http)?;
                            client = Some(c.clone());
                            c
                        }
                    };
                    let url = match &location {
                        Location::Jwks(url) | Location::Discovery { document: url, .. } => url,
                    };
                    http.check_url(url)
                        .map_err(|e| invalid(e).context(&place))?;
                    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                        invalid("remote JWT keys are fetched in the background: build inside a tokio runtime")
                            .context(&place)
                    })?;
                    Keys::Remote(RemoteKeys::spawn(location, timings, http, &runtime))
                }
            };
            let algorithms = issuer
                .algorithms
                .clone()
                .unwrap_or_else(|| ALGORITHMS.to_vec());
            if algorithms.is_empty() {
                return Err(invalid("an issuer needs at least one algorithm").context(&place));
            }
            issuers.push(IssuerState {
                iss: issuer.iss,
                algorithms,
                audiences: issuer.audiences,
                keys,
            });
        }
        Ok(JwtAuth {
            inner: Arc::new(Inner {
                issuers,
                sources: self.sources,
                max_len: self.max_len,
                cache: self
                    .cache
                    .map(|(entries, ttl)| VerdictCache::new(entries, ttl)),
                mapping: self.mapping,
                required: self.required,
                leeway,
            }),
        })
    }
}

/// Every signing algorithm `JwtAuth` verifies; an issuer accepts all of
/// them unless narrowed with [`Issuer::algorithms`].
pub const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidValue, message)
}
