//! Plain-data configuration of the authentication methods and of the
//! per-route [`AuthLayer`], mirroring the builders one to one; with the
//! `serde` feature it deserialises (unknown fields are errors).
//!
//! Named providers ([`ProviderConfig`], built once into a cloneable
//! [`Provider`]) are shared by routes, each of which names the ones it
//! accepts in an [`AuthPolicyConfig`]:
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use tollgate_auth::config::{AuthPolicyConfig, ProviderConfig};
//!
//! let provider: ProviderConfig = serde_json::from_str(r#"{
//!     "type": "jwt",
//!     "issuers": [{ "issuer": "https://id.example.com", "keys": [{ "secret": "a-long-random-secret" }] }],
//!     "leeway": "30s"
//! }"#)?;
//! let jwt = provider.build()?;
//!
//! let policy: AuthPolicyConfig = serde_json::from_str(r#"{
//!     "providers": ["jwt"],
//!     "require_scopes": { "any": ["orders:read", "orders:admin"] },
//!     "forward_identity": true
//! }"#)?;
//! let layer = policy.build(|name| (name == "jwt").then(|| jwt.clone()))?;
//! assert_eq!(layer.identity_header_names().len(), 3);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use http::{HeaderName, request::Parts};
use tollgate_core::{ConfigError, ConfigErrorKind};

use crate::{
    ApiKeyAuth, AuthLayer, Authenticator, ClaimMapping, Consumer, CredentialSource,
    IdentityHeaders, Introspection, Issuer, JwtAuth, JwtKey, MemoryApiKeyStore, Requirement,
    Scheme, Verdict,
};

// --- JWT ---

/// The configuration of a [`JwtAuth`]; `JwtAuth::try_from` runs the same
/// checks as [`JwtAuthBuilder::build`](crate::JwtAuthBuilder::build) (and,
/// like it, starts fetching remote keys: call it inside a tokio runtime).
/// The defaults are the builder's.
///
/// ```toml
/// type = "jwt"                      # as a ProviderConfig
/// sources = ["bearer", { cookie = "session" }]
/// leeway = "30s"
/// required_claims = ["exp", "sub"]
/// cache = { max_entries = 10000, ttl = "5m" }   # or "off"
/// claims = { roles = ["realm_access.roles"] }
///
/// [[issuers]]
/// issuer = "https://id.example.com"             # absent: any `iss`
/// audiences = ["orders-api"]
/// algorithms = ["RS256"]
/// jwks_url = "https://id.example.com/jwks.json" # or discovery = true, or keys
/// ```
///
/// See the [module docs](self) for an example.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct JwtConfig {
    /// The accepted issuers (at least one).
    pub issuers: Vec<IssuerConfig>,
    /// Where the token is read from, in order (default `["bearer"]`).
    pub sources: Vec<TokenSourceConfig>,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (default 60 s).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::serde_util::duration"))]
    pub leeway: Duration,
    /// Claims every token must carry (default `["exp"]`).
    pub required_claims: Vec<String>,
    /// Which claims fill the identity.
    pub claims: ClaimMappingConfig,
    /// The verified-token cache; `None` (`cache = "off"`) verifies every
    /// request's token again.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::off_or"))]
    pub cache: Option<CacheConfig>,
    /// How often remote key sets are refetched (default 5 minutes).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::serde_util::duration"))]
    pub refresh_interval: Duration,
    /// The least time between two fetches of a remote key set (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::serde_util::duration"))]
    pub min_refetch_interval: Duration,
    /// The timeout of one key fetch (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::serde_util::duration"))]
    pub fetch_timeout: Duration,
    /// Allows plain-HTTP key URLs to hosts other than loopback: only for tests.
    pub allow_insecure_http: bool,
    /// The largest token accepted, in bytes (default 8 KiB).
    pub max_token_len: usize,
}

/// One issuer of a [`JwtConfig`]: its `iss`, audiences and keys. Exactly
/// one kind of key source: `keys` and/or `jwks`, or `jwks_url`, or
/// `discovery`.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct IssuerConfig {
    /// The `iss` tokens carry; absent, tokens with any `iss` (or none) are
    /// accepted ([`Issuer::any`]), which only works with a single issuer.
    pub issuer: Option<String>,
    /// Accepted audiences (any of them); empty, `aud` is not checked.
    pub audiences: Vec<String>,
    /// The algorithms accepted from this issuer, by name (`"RS256"`);
    /// empty, all of [`ALGORITHMS`](crate::ALGORITHMS).
    pub algorithms: Vec<crate::Algorithm>,
    /// Static keys.
    pub keys: Vec<KeyConfig>,
    /// A JWKS document (RFC 7517 §5) as JSON text, whose keys are added.
    pub jwks: Option<String>,
    /// A JWKS URL, fetched in the background.
    pub jwks_url: Option<HttpUrl>,
    /// Finds the JWKS URL by OpenID Connect discovery from `issuer`.
    pub discovery: bool,
}

/// A static key of an [`IssuerConfig`]: exactly one of `secret`,
/// `public_key_pem` and `public_key_file`.
///
/// ```toml
/// keys = [
///   { secret = "${JWT_SECRET}", kid = "k1" },
///   { public_key_file = "/etc/tollgate/id.pem", algorithms = ["RS256"] },
/// ]
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct KeyConfig {
    /// An HMAC shared secret: the string's bytes are the secret.
    pub secret: Option<Secret>,
    /// A public key in PEM (RSA, EC or Ed25519, detected).
    pub public_key_pem: Option<String>,
    /// A file holding a public key in PEM (RSA, EC or Ed25519, detected).
    pub public_key_file: Option<PathBuf>,
    /// The key id tokens name in their `kid` header.
    pub kid: Option<String>,
    /// Narrows the algorithms this key accepts, by name.
    pub algorithms: Vec<crate::Algorithm>,
}

/// Where a [`JwtConfig`] reads the token: `"bearer"`, `{ header = "…" }`,
/// `{ cookie = "…" }` or `{ query = "…" }`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum TokenSourceConfig {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The whole value of a header.
    Header(String),
    /// A cookie by name.
    Cookie(String),
    /// A query parameter by name.
    Query(String),
}

/// Which claims fill which identity fields (names or dotted paths, first
/// present wins); mirrors [`ClaimMapping`]. A list given replaces that
/// list's default.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ClaimMappingConfig {
    /// Scopes (default `["scope", "scp"]`).
    pub scopes: Vec<String>,
    /// Roles (default `["roles"]`).
    pub roles: Vec<String>,
    /// The consumer (default `["client_id", "azp"]`).
    pub consumer: Vec<String>,
    /// The rate-limit plan (default `["plan"]`).
    pub plan: Vec<String>,
}

/// The verified-token cache of a [`JwtConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct CacheConfig {
    /// The most tokens cached (default 10 000).
    pub max_entries: u64,
    /// How long a verified token is reused at most, never past its `exp`
    /// (default 5 minutes).
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::serde_util::duration"))]
    pub ttl: Duration,
}

// --- URLs and secrets ---

/// An absolute `http` or `https` URL, checked when it is read, so a
/// configuration file's error points at the key and line at fault with
/// the URL parser's own message (`relative URL without a base`).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl(url::Url);

/// A secret string (an HMAC key, a client secret, an API key), never
/// printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Secret(String);

// --- API keys ---

/// The configuration of an [`ApiKeyAuth`] with a [`MemoryApiKeyStore`].
///
/// ```toml
/// type = "api_key"                  # as a ProviderConfig
/// header = "x-api-key"              # the default
/// query = "api_key"                 # also read from a query parameter
/// keys = [
///   { key = "${PARTNER_KEY}", consumer = "partner", plan = "gold", scopes = ["orders:read"] },
///   { key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", consumer = "ci" },
/// ]
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ApiKeyConfig {
    /// The header the key is read from (default `x-api-key`).
    pub header: String,
    /// Also reads the key from this query parameter.
    pub query: Option<String>,
    /// The keys.
    pub keys: Vec<ApiKeyEntryConfig>,
}

/// One key of an [`ApiKeyConfig`]: exactly one of `key` and `key_sha256`.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ApiKeyEntryConfig {
    /// The key itself.
    pub key: Option<Secret>,
    /// The hex SHA-256 of the key, so the key need not appear in the file.
    pub key_sha256: Option<String>,
    /// The consumer the key belongs to.
    pub consumer: String,
    /// Its rate-limit plan.
    pub plan: Option<String>,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Its roles.
    pub roles: Vec<String>,
}

// --- introspection ---

/// The configuration of an [`Introspection`]; `Introspection::try_from`
/// runs the same checks as
/// [`IntrospectionBuilder::build`](crate::IntrospectionBuilder::build).
///
/// ```toml
/// type = "introspection"            # as a ProviderConfig
/// endpoint = "https://id.example.com/oauth2/introspect"
/// client_id = "gateway"
/// client_secret = "${INTROSPECTION_SECRET}"
/// cache_ttl = "60s"
/// negative_cache_ttl = "10s"
/// timeout = "5s"
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct IntrospectionConfig {
    /// The introspection endpoint (RFC 7662).
    pub endpoint: HttpUrl,
    /// The client id the gateway authenticates with.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// How long an active answer is reused at most (default 60 s).
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::cache_ttl",
            with = "tollgate_core::serde_util::duration"
        )
    )]
    pub cache_ttl: Duration,
    /// How long an inactive answer is reused (default 10 s).
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::negative_cache_ttl",
            with = "tollgate_core::serde_util::duration"
        )
    )]
    pub negative_cache_ttl: Duration,
    /// The most answers cached (default 10 000).
    #[cfg_attr(feature = "serde", serde(default = "defaults::max_entries"))]
    pub max_cache_entries: u64,
    /// The timeout of one call (default 5 s).
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::timeout",
            with = "tollgate_core::serde_util::duration"
        )
    )]
    pub timeout: Duration,
    /// The largest token sent to the server (default 8 KiB).
    #[cfg_attr(feature = "serde", serde(default = "defaults::max_token_len"))]
    pub max_token_len: usize,
    /// Allows a plain-HTTP endpoint on a host other than loopback.
    #[cfg_attr(feature = "serde", serde(default))]
    pub allow_insecure_http: bool,
}

// --- providers and policies ---

/// A named authentication method of the gateway, tagged by `type`:
/// `jwt` ([`JwtConfig`]), `api_key` ([`ApiKeyConfig`]) or `introspection`
/// ([`IntrospectionConfig`]). Unknown keys are errors in every variant.
///
/// It reads like serde's `#[serde(tag = "type")]` (which buffers the
/// whole table, so errors lose their key path and line), except that
/// the keys stream into the variant as soon as the kind is known: from
/// `type`, or from a key only that kind has (TOML hands tables over in
/// sorted order, so `type` often comes last). An error in a streamed
/// key keeps its path and position (`providers.users.issuers[0].jwks_url`,
/// line 5); the few keys read before the kind is known (e.g.
/// `allow_insecure_http`, which two kinds share) keep the error but not
/// the position. `type` is required and must match the keys.
///
/// ```toml
/// [auth.providers.partners]
/// type = "api_key"
/// keys = [{ key = "${PARTNER_KEY}", consumer = "partner" }]
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ProviderConfig {
    /// JSON Web Tokens.
    Jwt(JwtConfig),
    /// API keys.
    ApiKey(ApiKeyConfig),
    /// OAuth2 token introspection.
    Introspection(IntrospectionConfig),
}

/// A built authentication method: cheap to clone (the state is shared,
/// so clones share key caches and fetchers), and an [`Authenticator`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Provider {
    /// JSON Web Tokens.
    Jwt(JwtAuth),
    /// API keys.
    ApiKey(ApiKeyAuth),
    /// OAuth2 token introspection.
    Introspection(Introspection),
}

/// The per-route part: which providers, tried in order, and what the
/// route requires.
///
/// ```toml
/// [routes.auth]
/// providers = ["jwt", "partners"]     # AuthLayer::new(jwt).or(partners)
/// optional = false
/// require_scopes = ["orders:read"]    # all of them; or { any = [...] }
/// require_roles = { any = ["admin", "support"] }
/// forward_identity = true             # or { subject = "x-user-id", roles = "x-roles" }
/// keep_credentials = false
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct AuthPolicyConfig {
    /// Names of providers, tried in order (at least one).
    pub providers: Vec<String>,
    /// Lets requests without any credential through, without an identity.
    pub optional: bool,
    /// Scopes the route needs.
    pub require_scopes: Option<RequirementConfig>,
    /// Roles the route needs.
    pub require_roles: Option<RequirementConfig>,
    /// Forwards the identity to the upstream in these headers:
    /// `true` for [`IdentityHeaders::default`], a table for exactly the
    /// headers listed; absent or `false`, none.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::forward_identity"))]
    pub forward_identity: Option<IdentityHeadersConfig>,
    /// Keeps credentials on the request to the upstream.
    pub keep_credentials: bool,
}

/// Scopes or roles a route needs: a list (all of them), `{ all = [...] }`
/// or `{ any = [...] }`. Mirrors [`Requirement`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequirementConfig {
    /// Every item is needed.
    All(Vec<String>),
    /// At least one item is needed.
    Any(Vec<String>),
}

/// The identity headers of an [`AuthPolicyConfig`], mirroring
/// [`IdentityHeaders`]. Its `Default` is `IdentityHeaders::default()`
/// (`x-user-id`, `x-consumer`, `x-scopes`); in a table, a header not
/// listed is not forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct IdentityHeadersConfig {
    /// The header for the subject.
    #[cfg_attr(feature = "serde", serde(default))]
    pub subject: Option<String>,
    /// The header for the consumer.
    #[cfg_attr(feature = "serde", serde(default))]
    pub consumer: Option<String>,
    /// The header for the space-separated scopes.
    #[cfg_attr(feature = "serde", serde(default))]
    pub scopes: Option<String>,
    /// The header for the space-separated roles.
    #[cfg_attr(feature = "serde", serde(default))]
    pub roles: Option<String>,
    /// The header for the plan.
    #[cfg_attr(feature = "serde", serde(default))]
    pub plan: Option<String>,
}

// === impl JwtConfig ===

impl Default for JwtConfig {
    /// The builder's defaults.
    fn default() -> Self {
        let builder = JwtAuth::builder();
        Self {
            issuers: Vec::new(),
            sources: vec![TokenSourceConfig::Bearer],
            leeway: builder.leeway,
            required_claims: builder.required,
            claims: ClaimMappingConfig::from_mapping(builder.mapping),
            cache: builder
                .cache
                .map(|(max_entries, ttl)| CacheConfig { max_entries, ttl }),
            refresh_interval: builder.refresh_interval,
            min_refetch_interval: builder.min_refetch_interval,
            fetch_timeout: builder.fetch_timeout,
            allow_insecure_http: false,
            max_token_len: builder.max_len,
        }
    }
}

impl JwtConfig {
    /// The defaults with these issuers.
    #[must_use]
    pub fn new(issuers: Vec<IssuerConfig>) -> Self {
        Self {
            issuers,
            ..Self::default()
        }
    }
}

impl TryFrom<&JwtConfig> for JwtAuth {
    type Error = ConfigError;

    fn try_from(config: &JwtConfig) -> Result<Self, ConfigError> {
        let sources = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.to_source()
                    .map_err(|e| e.context(format!("sources[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = Self::builder()
            .sources(sources)
            .max_token_len(config.max_token_len)
            .leeway(config.leeway)
            .required_claims(config.required_claims.iter().cloned())
            .claims(config.claims.to_mapping())
            .refresh_interval(config.refresh_interval)
            .min_refetch_interval(config.min_refetch_interval)
            .fetch_timeout(config.fetch_timeout)
            .allow_insecure_http(config.allow_insecure_http);
        builder = match config.cache {
            Some(cache) => builder.cache(cache.max_entries, cache.ttl),
            None => builder.no_cache(),
        };
        for (i, issuer) in config.issuers.iter().enumerate() {
            let issuer = issuer
                .to_issuer()
                .map_err(|e| e.context(format!("issuers[{i}]")))?;
            builder = builder.issuer(issuer);
        }
        builder.build()
    }
}

// === impl IssuerConfig ===

impl IssuerConfig {
    /// Tokens whose `iss` is `issuer`, with no key yet.
    #[must_use]
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: Some(issuer.into()),
            ..Self::default()
        }
    }

    fn to_issuer(&self) -> Result<Issuer, ConfigError> {
        let mut issuer = match &self.issuer {
            Some(iss) => Issuer::new(iss.as_str()),
            None => Issuer::any(),
        };
        for audience in &self.audiences {
            issuer = issuer.audience(audience.as_str());
        }
        if !self.algorithms.is_empty() {
            issuer = issuer.algorithms(self.algorithms.iter().copied());
        }
        for (i, key) in self.keys.iter().enumerate() {
            issuer = issuer.key(key.to_key().map_err(|e| e.context(format!("keys[{i}]")))?);
        }
        if let Some(jwks) = &self.jwks {
            issuer = issuer.jwks_json(jwks).map_err(|e| e.context("jwks"))?;
        }
        match (&self.jwks_url, self.discovery) {
            (Some(_), true) => {
                return Err(invalid("`jwks_url` and `discovery` exclude each other"));
            }
            (Some(url), false) => issuer = issuer.jwks_url(url.as_str()),
            (None, true) => issuer = issuer.discover(),
            (None, false) => {}
        }
        Ok(issuer)
    }
}

// === impl KeyConfig ===

impl KeyConfig {
    /// An HMAC shared secret.
    #[must_use]
    pub fn secret(secret: impl Into<String>) -> Self {
        Self {
            secret: Some(Secret::new(secret)),
            ..Self::default()
        }
    }

    fn to_key(&self) -> Result<JwtKey, ConfigError> {
        let mut key = match (&self.secret, &self.public_key_pem, &self.public_key_file) {
            (Some(secret), None, None) => {
                if secret.expose().is_empty() {
                    return Err(invalid("`secret` is empty"));
                }
                JwtKey::hmac(secret.expose())
            }
            (None, Some(pem), None) => JwtKey::rsa_pem(pem)
                .or_else(|_| JwtKey::ec_pem(pem))
                .or_else(|_| JwtKey::ed_pem(pem))
                .map_err(|_| invalid("`public_key_pem`: no RSA, EC or Ed25519 public key"))?,
            (None, None, Some(path)) => JwtKey::pem_file(path)?,
            _ => {
                return Err(invalid(
                    "a key needs exactly one of `secret`, `public_key_pem` and `public_key_file`",
                ));
            }
        };
        if let Some(kid) = &self.kid {
            key = key.kid(kid.as_str());
        }
        if !self.algorithms.is_empty() {
            key = key.algorithms(self.algorithms.iter().copied())?;
        }
        Ok(key)
    }
}

// === impl TokenSourceConfig ===

impl TokenSourceConfig {
    fn to_source(&self) -> Result<CredentialSource, ConfigError> {
        Ok(match self {
            Self::Bearer => CredentialSource::Bearer,
            Self::Header(name) => CredentialSource::Header(header_name(name)?),
            Self::Cookie(name) => CredentialSource::Cookie(non_empty("cookie", name)?),
            Self::Query(name) => CredentialSource::Query(non_empty("query", name)?),
        })
    }
}

// === impl ClaimMappingConfig ===

impl Default for ClaimMappingConfig {
    /// [`ClaimMapping::default`].
    fn default() -> Self {
        Self::from_mapping(ClaimMapping::default())
    }
}

impl ClaimMappingConfig {
    fn from_mapping(mapping: ClaimMapping) -> Self {
        Self {
            scopes: mapping.scopes,
            roles: mapping.roles,
            consumer: mapping.consumer,
            plan: mapping.plan,
        }
    }

    fn to_mapping(&self) -> ClaimMapping {
        ClaimMapping::default()
            .scopes(self.scopes.iter().cloned())
            .roles(self.roles.iter().cloned())
            .consumer(self.consumer.iter().cloned())
            .plan(self.plan.iter().cloned())
    }
}

// === impl CacheConfig ===

impl Default for CacheConfig {
    /// The builder's cache.
    fn default() -> Self {
        let (max_entries, ttl) = JwtAuth::builder().cache.unwrap_or_default();
        Self { max_entries, ttl }
    }
}

// === impl HttpUrl ===

impl HttpUrl {
    /// The URL as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for HttpUrl {
    type Err = ConfigError;

    /// # Errors
    ///
    /// The URL parser's message (`relative URL without a base`), or a
    /// scheme other than `http` and `https`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let url = url::Url::parse(s)
            .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidUrl, e.to_string()))?;
        match url.scheme() {
            "http" | "https" => Ok(Self(url)),
            other => Err(ConfigError::new(
                ConfigErrorKind::InvalidUrl,
                format!("unsupported URL scheme `{other}`, expected `https` or `http`"),
            )),
        }
    }
}

impl TryFrom<&str> for HttpUrl {
    type Error = ConfigError;

    fn try_from(s: &str) -> Result<Self, ConfigError> {
        s.parse()
    }
}

impl From<HttpUrl> for String {
    fn from(url: HttpUrl) -> Self {
        url.0.into()
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpUrl({:?})", self.as_str())
    }
}

// === impl Secret ===

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

// === impl ApiKeyConfig ===

impl Default for ApiKeyConfig {
    fn default() -> Self {
        Self {
            header: crate::X_API_KEY.as_str().to_owned(),
            query: None,
            keys: Vec::new(),
        }
    }
}

impl ApiKeyConfig {
    /// The keys in a new [`MemoryApiKeyStore`], which stays shared with
    /// the [`ApiKeyAuth`] built from it (to revoke keys while serving).
    ///
    /// # Errors
    ///
    /// An entry with both or neither of `key` and `key_sha256`, a bad
    /// hash, an empty consumer, or the same key twice.
    pub fn store(&self) -> Result<MemoryApiKeyStore, ConfigError> {
        let store = MemoryApiKeyStore::new();
        for (i, entry) in self.keys.iter().enumerate() {
            let place = format!("keys[{i}]");
            if entry.consumer.is_empty() {
                return Err(
                    ConfigError::new(ConfigErrorKind::Missing, "`consumer` is empty")
                        .context(place),
                );
            }
            let mut consumer = Consumer::new(entry.consumer.as_str())
                .scopes(entry.scopes.iter().map(String::as_str))
                .roles(entry.roles.iter().map(String::as_str));
            if let Some(plan) = &entry.plan {
                consumer = consumer.plan(plan.as_str());
            }
            let before = store.len();
            match (&entry.key, &entry.key_sha256) {
                (Some(key), None) if !key.expose().is_empty() => {
                    store.load(key.expose(), consumer);
                }
                (None, Some(hash)) => store
                    .load_sha256_hex(hash, consumer)
                    .map_err(|e| e.context(&place))?,
                (Some(_), None) => return Err(invalid("`key` is empty").context(place)),
                _ => {
                    return Err(
                        invalid("exactly one of `key` and `key_sha256` is needed").context(place)
                    );
                }
            }
            if store.len() == before {
                return Err(ConfigError::new(
                    ConfigErrorKind::Duplicate,
                    "the same key as an earlier entry",
                )
                .context(place));
            }
        }
        Ok(store)
    }
}

impl TryFrom<&ApiKeyConfig> for ApiKeyAuth {
    type Error = ConfigError;

    fn try_from(config: &ApiKeyConfig) -> Result<Self, ConfigError> {
        let header = header_name(&config.header).map_err(|e| e.context("header"))?;
        let mut auth = Self::new(config.store()?).header(header);
        if let Some(query) = &config.query {
            auth = auth.query(non_empty("query", query)?);
        }
        Ok(auth)
    }
}

// === impl IntrospectionConfig ===

impl IntrospectionConfig {
    /// Introspection at `endpoint` with these client credentials and the
    /// builder's defaults.
    #[must_use]
    pub fn new(endpoint: HttpUrl, client_id: impl Into<String>, client_secret: Secret) -> Self {
        Self {
            endpoint,
            client_id: client_id.into(),
            client_secret,
            cache_ttl: defaults::cache_ttl(),
            negative_cache_ttl: defaults::negative_cache_ttl(),
            max_cache_entries: defaults::max_entries(),
            timeout: defaults::timeout(),
            max_token_len: defaults::max_token_len(),
            allow_insecure_http: false,
        }
    }
}

impl TryFrom<&IntrospectionConfig> for Introspection {
    type Error = ConfigError;

    fn try_from(config: &IntrospectionConfig) -> Result<Self, ConfigError> {
        Self::builder(config.endpoint.as_str())
            .client_credentials(config.client_id.as_str(), config.client_secret.expose())
            .cache_ttl(config.cache_ttl)
            .negative_cache_ttl(config.negative_cache_ttl)
            .max_cache_entries(config.max_cache_entries)
            .timeout(config.timeout)
            .max_token_len(config.max_token_len)
            .allow_insecure_http(config.allow_insecure_http)
            .build()
    }
}

/// The builder's defaults, for the keys an introspection config omits.
mod defaults {
    use std::time::Duration;

    use crate::{Introspection, IntrospectionBuilder};

    fn builder() -> IntrospectionBuilder {
        Introspection::builder("")
    }

    pub(super) fn cache_ttl() -> Duration {
        builder().ttl
    }

    pub(super) fn negative_cache_ttl() -> Duration {
        builder().negative_ttl
    }

    pub(super) fn timeout() -> Duration {
        builder().timeout
    }

    pub(super) fn max_entries() -> u64 {
        builder().max_entries
    }

    pub(super) fn max_token_len() -> usize {
        builder().max_len
    }
}

// === impl ProviderConfig ===

impl ProviderConfig {
    /// Builds the method. A JWT provider with remote keys starts fetching
    /// them, so build inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// As the method's `TryFrom`.
    pub fn build(&self) -> Result<Provider, ConfigError> {
        Ok(match self {
            Self::Jwt(config) => Provider::Jwt(config.try_into()?),
            Self::ApiKey(config) => Provider::ApiKey(config.try_into()?),
            Self::Introspection(config) => Provider::Introspection(config.try_into()?),
        })
    }
}

// === impl Provider ===

impl Provider {
    fn method(&self) -> &dyn Authenticator {
        match self {
            Self::Jwt(m) => m,
            Self::ApiKey(m) => m,
            Self::Introspection(m) => m,
        }
    }

    /// Whether the method can judge requests (keys loaded).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.method().is_ready()
    }
}

impl Authenticator for Provider {
    fn authenticate(&self, parts: &Parts) -> Verdict {
        self.method().authenticate(parts)
    }

    fn scheme(&self) -> Scheme {
        self.method().scheme()
    }

    fn credential_sources(&self) -> Vec<CredentialSource> {
        self.method().credential_sources()
    }

    fn is_ready(&self) -> bool {
        self.method().is_ready()
    }
}

// === impl AuthPolicyConfig ===

impl AuthPolicyConfig {
    /// A policy accepting these providers, tried in order.
    #[must_use]
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(providers: I) -> Self {
        Self {
            providers: providers.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The layer: `AuthLayer::new(first).or(second)…` with the policy's
    /// requirements; `lookup` finds a built provider by name.
    ///
    /// # Errors
    ///
    /// No provider, a name `lookup` does not know, or a bad header name.
    pub fn build(
        &self,
        lookup: impl Fn(&str) -> Option<Provider>,
    ) -> Result<AuthLayer, ConfigError> {
        let find = |name: &String| {
            lookup(name).ok_or_else(|| {
                ConfigError::new(
                    ConfigErrorKind::Missing,
                    format!("unknown auth provider {name:?}"),
                )
            })
        };
        let mut names = self.providers.iter();
        let first = names.next().ok_or_else(|| {
            ConfigError::new(
                ConfigErrorKind::Missing,
                "an auth policy needs at least one provider",
            )
        })?;
        let mut layer = AuthLayer::new(find(first)?);
        for name in names {
            layer = layer.or(find(name)?);
        }
        if self.optional {
            layer = layer.optional();
        }
        if let Some(scopes) = &self.require_scopes {
            layer = layer.require_scopes(scopes.to_requirement());
        }
        if let Some(roles) = &self.require_roles {
            layer = layer.require_roles(roles.to_requirement());
        }
        if let Some(headers) = &self.forward_identity {
            layer = layer.forward_identity(
                headers
                    .to_headers()
                    .map_err(|e| e.context("forward_identity"))?,
            );
        }
        Ok(layer.keep_credentials(self.keep_credentials))
    }
}

// === impl RequirementConfig ===

impl RequirementConfig {
    fn to_requirement(&self) -> Requirement {
        match self {
            Self::All(items) => Requirement::all(items.iter().map(String::as_str)),
            Self::Any(items) => Requirement::any(items.iter().map(String::as_str)),
        }
    }
}

// === impl IdentityHeadersConfig ===

impl Default for IdentityHeadersConfig {
    /// [`IdentityHeaders::default`].
    fn default() -> Self {
        Self::from_headers(&IdentityHeaders::default())
    }
}

impl IdentityHeadersConfig {
    /// No header ([`IdentityHeaders::none`]).
    #[must_use]
    pub fn none() -> Self {
        Self::from_headers(&IdentityHeaders::none())
    }

    fn from_headers(headers: &IdentityHeaders) -> Self {
        let name = |h: &Option<HeaderName>| h.as_ref().map(|n| n.as_str().to_owned());
        Self {
            subject: name(&headers.subject),
            consumer: name(&headers.consumer),
            scopes: name(&headers.scopes),
            roles: name(&headers.roles),
            plan: name(&headers.plan),
        }
    }

    fn to_headers(&self) -> Result<IdentityHeaders, ConfigError> {
        type Set = fn(IdentityHeaders, HeaderName) -> IdentityHeaders;
        let fields: [(&str, &Option<String>, Set); 5] = [
            ("subject", &self.subject, IdentityHeaders::subject),
            ("consumer", &self.consumer, IdentityHeaders::consumer),
            ("scopes", &self.scopes, IdentityHeaders::scopes),
            ("roles", &self.roles, IdentityHeaders::roles),
            ("plan", &self.plan, IdentityHeaders::plan),
        ];
        let mut headers = IdentityHeaders::none();
        for (key, name, set) in fields {
            if let Some(name) = name {
                headers = set(headers, header_name(name).map_err(|e| e.context(key))?);
            }
        }
        Ok(headers)
    }
}

// --- helpers ---

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidValue, message)
}

fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::try_from(name).map_err(|_| invalid(format!("{name:?} is not a header name")))
}

fn non_empty(what: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(invalid(format!("the {what} name is empty")));
    }
    Ok(name.to_owned())
}

#[cfg(feature = "serde")]
mod de {
    //! The hand-written `Deserialize` impls: each keeps streaming from the
    //! format's own map or sequence (no buffering), so errors keep their
    //! key path and position.

    use std::fmt;

    use serde::de::{
        self, Deserialize, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
        value::{MapAccessDeserializer, SeqAccessDeserializer},
    };

    use super::{HttpUrl, IdentityHeadersConfig, ProviderConfig, RequirementConfig};

    /// `"off"`, `"none"` or `false` for `None`; a table for `Some`.
    pub(super) fn off_or<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        deserializer.deserialize_any(OffOr {
            on_true: None,
            expecting: "\"off\" or a table",
        })
    }

    /// `true` for the default headers, `false` for none, or a table.
    pub(super) fn forward_identity<'de, D>(
        deserializer: D,
    ) -> Result<Option<IdentityHeadersConfig>, D::Error>
    where
        D: Deserializer<'de>,
    {
        deserializer.deserialize_any(OffOr {
            on_true: Some(IdentityHeadersConfig::default),
            expecting: "true, false or a table of header names",
        })
    }

    struct OffOr<T> {
        on_true: Option<fn() -> T>,
        expecting: &'static str,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for OffOr<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            match (v, self.on_true) {
                (false, _) => Ok(None),
                (true, Some(default)) => Ok(Some(default())),
                (true, None) => Err(E::invalid_value(de::Unexpected::Bool(true), &self)),
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v {
                "off" | "none" if self.on_true.is_none() => Ok(None),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }
    }

    impl<'de> Deserialize<'de> for ProviderConfig {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(ProviderVisitor)
        }
    }

    /// The `type` of a provider.
    #[derive(Clone, Copy, PartialEq, Eq, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Jwt,
        ApiKey,
        Introspection,
    }

    impl Kind {
        fn name(self) -> &'static str {
            match self {
                Self::Jwt => "jwt",
                Self::ApiKey => "api_key",
                Self::Introspection => "introspection",
            }
        }

        fn all() -> [(Self, &'static [&'static str]); 3] {
            [
                (Self::Jwt, fields_of::<super::JwtConfig>()),
                (Self::ApiKey, fields_of::<super::ApiKeyConfig>()),
                (
                    Self::Introspection,
                    fields_of::<super::IntrospectionConfig>(),
                ),
            ]
        }

        /// `Ok(Some(kind))` when only that kind has `key`, `Ok(None)` when
        /// several have it, `Err(())` when none does.
        fn with_key(key: &str) -> Result<Option<Self>, ()> {
            let mut kinds = Self::all()
                .into_iter()
                .filter(|(_, fields)| fields.contains(&key));
            match (kinds.next(), kinds.next()) {
                (Some((kind, _)), None) => Ok(Some(kind)),
                (Some(_), Some(_)) => Ok(None),
                (None, _) => Err(()),
            }
        }
    }

    /// Refuses a key no kind has, as the value's error, so the error
    /// carries the key's path and position.
    struct UnknownKey<'a>(&'a str);

    impl<'de> de::DeserializeSeed<'de> for UnknownKey<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
            Err(de::Error::custom(format_args!(
                "unknown field `{}`, not a key of any provider `type`",
                self.0
            )))
        }
    }

    struct ProviderVisitor;

    impl<'de> Visitor<'de> for ProviderVisitor {
        type Value = ProviderConfig;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a provider table with a `type`")
        }

        /// Keys are read until the kind is known: from `type`, or from a
        /// key only one kind has (TOML tables come sorted, so `type` is
        /// often last). Keys read before that are buffered; the rest
        /// streams into the kind's struct, keeping positions in errors.
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut before = Vec::new();
            let (kind, tagged, pending) = loop {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::missing_field("type"));
                };
                if key == "type" {
                    break (map.next_value::<Kind>()?, true, None);
                }
                match Kind::with_key(&key) {
                    Ok(Some(kind)) => break (kind, false, Some(key)),
                    Ok(None) => before.push((key, map.next_value::<serde_json::Value>()?)),
                    Err(()) => map.next_value_seed(UnknownKey(&key))?,
                }
            };
            let rest = MapAccessDeserializer::new(Rest {
                before: before.into_iter(),
                value: None,
                pending,
                kind,
                tagged,
                map,
            });
            Ok(match kind {
                Kind::Jwt => ProviderConfig::Jwt(Deserialize::deserialize(rest)?),
                Kind::ApiKey => ProviderConfig::ApiKey(Deserialize::deserialize(rest)?),
                Kind::Introspection => {
                    ProviderConfig::Introspection(Deserialize::deserialize(rest)?)
                }
            })
        }
    }

    /// The buffered entries, the key that told the kind, then the rest of
    /// the live map, whose `type` (required) must be that kind.
    struct Rest<A> {
        before: std::vec::IntoIter<(String, serde_json::Value)>,
        value: Option<serde_json::Value>,
        pending: Option<String>,
        kind: Kind,
        tagged: bool,
        map: A,
    }

    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Rest<A> {
        type Error = A::Error;

        fn next_key_seed<K: de::DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, A::Error> {
            if let Some((key, value)) = self.before.next() {
                self.value = Some(value);
                return seed.deserialize(key.into_deserializer()).map(Some);
            }
            if let Some(key) = self.pending.take() {
                return seed.deserialize(key.into_deserializer()).map(Some);
            }
            let mut seed = seed;
            loop {
                // The key goes through the live map, so its errors (an
                // unknown field) keep their path and position.
                let key = self.map.next_key_seed(TypeOrKey {
                    seed,
                    tagged: self.tagged,
                })?;
                match key {
                    None if self.tagged => return Ok(None),
                    None => return Err(de::Error::missing_field("type")),
                    Some(Ok(key)) => return Ok(Some(key)),
                    Some(Err(back)) => seed = back,
                }
                let kind = self.map.next_value::<Kind>()?;
                if kind != self.kind {
                    return Err(de::Error::custom(format_args!(
                        "`type` is `{}` but the table has keys of `{}`",
                        kind.name(),
                        self.kind.name()
                    )));
                }
                self.tagged = true;
            }
        }

        fn next_value_seed<V: de::DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, A::Error> {
            match self.value.take() {
                Some(value) => seed.deserialize(value).map_err(de::Error::custom),
                None => self.map.next_value_seed(seed),
            }
        }
    }

    /// A key for the variant, or (while the type is not read yet)
    /// `Err(seed)` for `type`, handing the seed back.
    struct TypeOrKey<K> {
        seed: K,
        tagged: bool,
    }

    impl<'de, K: de::DeserializeSeed<'de>> de::DeserializeSeed<'de> for TypeOrKey<K> {
        type Value = Result<K::Value, K>;

        fn deserialize<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_str(self)
        }
    }

    impl<'de, K: de::DeserializeSeed<'de>> Visitor<'de> for TypeOrKey<K> {
        type Value = Result<K::Value, K>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }

        fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
            if key == "type" && !self.tagged {
                return Ok(Err(self.seed));
            }
            self.seed.deserialize(key.into_deserializer()).map(Ok)
        }
    }

    /// The field names a derived struct deserialises, read by asking it
    /// to deserialise from a deserializer that only records them.
    fn fields_of<T: de::DeserializeOwned>() -> &'static [&'static str] {
        let mut fields: &'static [&'static str] = &[];
        // The probe always fails once it has the names.
        let _ = T::deserialize(FieldsProbe(&mut fields));
        fields
    }

    struct FieldsProbe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for FieldsProbe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    impl<'de> Deserialize<'de> for HttpUrl {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(de::Error::custom)
        }
    }

    /// The `{ all = [...] }` / `{ any = [...] }` form.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Tagged {
        All(Vec<String>),
        Any(Vec<String>),
    }

    impl<'de> Deserialize<'de> for RequirementConfig {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(RequirementVisitor)
        }
    }

    struct RequirementVisitor;

    impl<'de> Visitor<'de> for RequirementVisitor {
        type Value = RequirementConfig;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list (all of them), { all = [...] } or { any = [...] }")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::deserialize(SeqAccessDeserializer::new(seq)).map(RequirementConfig::All)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Ok(
                match Tagged::deserialize(MapAccessDeserializer::new(map))? {
                    Tagged::All(items) => RequirementConfig::All(items),
                    Tagged::Any(items) => RequirementConfig::Any(items),
                },
            )
        }
    }
}

#[cfg(test)]
mod tests;
