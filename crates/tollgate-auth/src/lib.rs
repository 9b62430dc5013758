//! Authentication and authorization layers for the tollgate gateway.
//!
//! - [`JwtAuth`]: JSON Web Tokens with HS/RS/PS/ES/EdDSA, static keys,
//!   JWKS URLs and OIDC discovery refreshed in the background, claim
//!   checks and a verified-token cache.
//! - [`ApiKeyAuth`]: API keys from a header or query parameter, looked up
//!   in an [`ApiKeyStore`] ([`MemoryApiKeyStore`] keeps SHA-256 hashes and
//!   compares them in constant time).
//! - [`Introspection`]: opaque tokens checked with OAuth2 introspection
//!   (RFC 7662), cached.
//! - [`AuthLayer`]: any of these (or your own [`Authenticator`]), required
//!   or optional, with scope and role requirements, identity headers for
//!   the upstream and credential stripping.
//!
//! Every decision is an audit event on `tollgate::audit`; every refusal is
//! an RFC 9457 problem with a safe `reason` (`expired`, `bad_signature` …)
//! and an RFC 6750 `WWW-Authenticate` challenge. Keys are never fetched on
//! the request path.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tollgate_auth::{AuthLayer, Issuer, JwtAuth, JwtKey, Requirement};
//! use tollgate_core::Identity;
//!
//! async fn orders(identity: Identity) -> String {
//!     format!("orders of {}", identity.subject.as_deref().unwrap_or("?"))
//! }
//!
//! let jwt = JwtAuth::builder()
//!     .issuer(
//!         Issuer::new("https://id.example.com")
//!             .audience("shop")
//!             .key(JwtKey::hmac("a-long-random-secret")),
//!     )
//!     .leeway(Duration::from_secs(30))
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/orders", get(orders))
//!     .layer(AuthLayer::new(jwt).require_scopes(Requirement::all(["orders:read"])));
//! # Ok::<(), tollgate_core::ConfigError>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api_key;
mod authenticator;
mod cache;
pub mod config;
mod credential;
mod error;
mod http_client;
mod introspection;
mod jwt;
mod layer;

pub use api_key::{
    ApiKeyAuth, ApiKeyStore, Consumer, Lookup, MAX_API_KEY_LEN, MemoryApiKeyStore, X_API_KEY,
};
pub use authenticator::{Authenticator, Scheme, Verdict, VerdictFuture};
pub use config::{
    ApiKeyConfig, ApiKeyEntryConfig, AuthPolicyConfig, CacheConfig, ClaimMappingConfig, HttpUrl,
    IdentityHeadersConfig, IntrospectionConfig, IssuerConfig, JwtConfig, KeyConfig, Provider,
    ProviderConfig, RequirementConfig, Secret, TokenSourceConfig,
};
pub use credential::CredentialSource;
pub use error::AuthError;
pub use introspection::{Introspection, IntrospectionBuilder};
pub use jsonwebtoken::Algorithm;
pub use jwt::{
    ALGORITHMS, ClaimMapping, DEFAULT_MAX_TOKEN_LEN, FetchStats, Issuer, JwtAuth, JwtAuthBuilder,
    JwtKey,
};
pub use layer::{AuthLayer, Authenticate, IdentityHeaders, Requirement, ResponseFuture};
