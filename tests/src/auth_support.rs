//! Helpers for the `tollgate-auth` tests: generated keys, minted tokens, a
//! gateway front whose upstream counts its hits, a JWKS/discovery server and
//! an introspection server whose behaviour the tests change at runtime.
//!
//! Every server binds 127.0.0.1:0.

#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the calling test by panicking, with a message"
)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, LazyLock, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::{Body, Bytes},
    routing::{get, post},
};
use base64::Engine as _;
use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use jsonwebtoken::{EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};
use tollgate::{Upstream, core::problem};
use tollgate_auth::{Algorithm, AuthLayer, Issuer, JwtKey};
use tower::Layer;

use crate::{RunningGateway, body_json, client, echo_router, empty, listener, spawn_gateway};

/// The `iss` of the tokens minted here.
pub const ISSUER: &str = "https://id.tollgate.test";
/// The `aud` of the tokens minted here.
pub const AUDIENCE: &str = "orders-api";
/// The HMAC secret of the HS* tokens.
pub const HMAC_SECRET: &[u8] = b"a-long-random-hmac-secret-for-the-tests-0123456789";
/// The client id the gateway introspects with.
pub const CLIENT_ID: &str = "gateway";
/// The client secret the gateway introspects with.
pub const CLIENT_SECRET: &str = "s3cret:with/odd&chars";
/// How long a bounded wait may last before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Every algorithm the issue lists.
pub use tollgate_auth::ALGORITHMS as ALL_ALGORITHMS;

// === keys ===

/// A generated key pair, in PEM.
#[derive(Debug)]
pub struct KeyPem {
    /// The PKCS#8 private key.
    pub private_pem: String,
    /// The SPKI public key.
    pub public_pem: String,
}

fn generate(alg: &'static rcgen::SignatureAlgorithm) -> KeyPem {
    // rcgen generates RSA keys too with its aws-lc-rs backend.
    let pair = rcgen::KeyPair::generate_for(alg).expect("generate a key pair");
    KeyPem {
        private_pem: pair.serialize_pem(),
        public_pem: pair.public_key_pem(),
    }
}

static RSA: LazyLock<KeyPem> = LazyLock::new(|| generate(&rcgen::PKCS_RSA_SHA256));
static RSA_OTHER: LazyLock<KeyPem> = LazyLock::new(|| generate(&rcgen::PKCS_RSA_SHA256));
static EC256: LazyLock<KeyPem> = LazyLock::new(|| generate(&rcgen::PKCS_ECDSA_P256_SHA256));
static EC384: LazyLock<KeyPem> = LazyLock::new(|| generate(&rcgen::PKCS_ECDSA_P384_SHA384));
static ED25519: LazyLock<KeyPem> = LazyLock::new(|| generate(&rcgen::PKCS_ED25519));

/// The RSA key pair of the RS* and PS* tokens.
pub fn rsa() -> &'static KeyPem {
    &RSA
}

/// A second RSA key pair, for "signed by someone else".
pub fn rsa_other() -> &'static KeyPem {
    &RSA_OTHER
}

/// The key pair an algorithm signs with here, `None` for HMAC.
fn pem_for(alg: Algorithm) -> Option<&'static KeyPem> {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => None,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(&RSA),
        ES256 => Some(&EC256),
        ES384 => Some(&EC384),
        EdDSA => Some(&ED25519),
        other => panic!("no test key for {other:?}"),
    }
}

/// The `kid` of an algorithm's key here: one per key family.
pub fn kid_for(alg: Algorithm) -> &'static str {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => "hmac",
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => "rsa",
        ES256 => "ec256",
        ES384 => "ec384",
        EdDSA => "ed",
        other => panic!("no test key for {other:?}"),
    }
}

/// The verification key for tokens of `alg` minted by [`Signer::of`],
/// with its `kid`.
pub fn verify_key(alg: Algorithm) -> JwtKey {
    let key = match (alg, pem_for(alg)) {
        (_, None) => Ok(JwtKey::hmac(HMAC_SECRET)),
        (Algorithm::ES256 | Algorithm::ES384, Some(pem)) => JwtKey::ec_pem(&pem.public_pem),
        (Algorithm::EdDSA, Some(pem)) => JwtKey::ed_pem(&pem.public_pem),
        (_, Some(pem)) => JwtKey::rsa_pem(&pem.public_pem),
    };
    key.expect("a public key in PEM").kid(kid_for(alg))
}

/// One algorithm of each key here: their [`verify_key`]s together verify
/// every algorithm.
pub const ONE_PER_KEY: [Algorithm; 5] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The algorithms of `alg`'s key family.
pub fn family(alg: Algorithm) -> Vec<Algorithm> {
    ALL_ALGORITHMS
        .into_iter()
        .filter(|a| a.family() == alg.family())
        .collect()
}

/// [`ISSUER`] with [`AUDIENCE`] and the key of `alg`, its algorithms
/// narrowed to the key's family.
///
/// Narrowed because an issuer with the default list (every algorithm)
/// refuses every token: see `auth.rs`,
/// `every_algorithm_is_accepted_with_the_default_algorithm_list`.
pub fn issuer_for(alg: Algorithm) -> Issuer {
    Issuer::new(ISSUER)
        .audience(AUDIENCE)
        .key(verify_key(alg))
        .algorithms(family(alg))
}

/// Signs tokens with one algorithm and key.
#[derive(Clone)]
pub struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The key of `alg` here (see [`verify_key`]), with its `kid`.
    pub fn of(alg: Algorithm) -> Self {
        let key = match (alg, pem_for(alg)) {
            (_, None) => Ok(EncodingKey::from_secret(HMAC_SECRET)),
            (Algorithm::ES256 | Algorithm::ES384, Some(pem)) => {
                EncodingKey::from_ec_pem(pem.private_pem.as_bytes())
            }
            (Algorithm::EdDSA, Some(pem)) => EncodingKey::from_ed_pem(pem.private_pem.as_bytes()),
            (_, Some(pem)) => EncodingKey::from_rsa_pem(pem.private_pem.as_bytes()),
        };
        Self {
            alg,
            key: key.expect("a private key in PEM"),
            kid: Some(kid_for(alg).to_owned()),
        }
    }

    /// An HMAC signer with `secret`.
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> Self {
        Self {
            alg,
            key: EncodingKey::from_secret(secret),
            kid: None,
        }
    }

    /// An RSA signer with another private key.
    pub fn rsa_with(alg: Algorithm, pem: &KeyPem) -> Self {
        Self {
            alg,
            key: EncodingKey::from_rsa_pem(pem.private_pem.as_bytes()).expect("RSA private key"),
            kid: None,
        }
    }

    /// A fresh EC P-256 key pair (ES256), for key sets that rotate.
    pub fn fresh_es256(kid: &str) -> Self {
        let pem = generate(&rcgen::PKCS_ECDSA_P256_SHA256);
        Self {
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(pem.private_pem.as_bytes()).expect("EC private key"),
            kid: Some(kid.to_owned()),
        }
    }

    /// Names `kid` in the tokens' header.
    #[must_use]
    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_owned());
        self
    }

    /// Leaves `kid` out of the tokens' header.
    #[must_use]
    pub fn no_kid(mut self) -> Self {
        self.kid = None;
        self
    }

    /// The algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// A token with `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid.clone_from(&self.kid);
        self.sign_with_header(&header, claims)
    }

    /// A token with this header (its `alg` should be this signer's).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.key).expect("sign a token")
    }

    /// The public JWK of this key, with its `kid` and `alg`.
    pub fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).expect("a JWK");
        jwk.common.key_id.clone_from(&self.kid);
        serde_json::to_value(jwk).expect("JWK as JSON")
    }
}

/// A JWKS document with these keys.
pub fn jwks(signers: &[&Signer]) -> Value {
    json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() })
}

// === claims and hand-made tokens ===

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Valid claims for `sub`: [`ISSUER`], [`AUDIENCE`], issued now, expiring
/// in 10 minutes, scopes `orders:read profile`.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now,
        "exp": now + 600,
        "scope": "orders:read profile",
    })
}

/// `claims` with `name` set to `value` (removed when `value` is null).
pub fn with(mut claims: Value, name: &str, value: Value) -> Value {
    let map = claims.as_object_mut().expect("claims are an object");
    if value.is_null() {
        map.remove(name);
    } else {
        map.insert(name.to_owned(), value);
    }
    claims
}

/// base64url without padding.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token made by hand: `b64(header).b64(payload).signature`.
pub fn craft(header: &str, payload: &str, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header), b64(payload))
}

// === the gateway front ===

/// An echo upstream (see [`echo_router`]) that counts the requests it gets.
#[derive(Clone, Debug)]
pub struct CountingUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl CountingUpstream {
    /// Starts one on 127.0.0.1:0.
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&hits);
        let router = echo_router().layer(tower::util::MapRequestLayer::new(
            move |req: Request<Body>| {
                count.fetch_add(1, Ordering::SeqCst);
                req
            },
        ));
        let addr = crate::spawn_upstream(router).await;
        Self { addr, hits }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A running gateway whose every path goes through an [`AuthLayer`] to a
/// [`CountingUpstream`] (through `tollgate::proxy::Upstream`).
#[derive(Debug)]
pub struct Front {
    /// The gateway.
    pub gateway: RunningGateway,
    /// The upstream behind it.
    pub upstream: CountingUpstream,
}

/// Starts a [`Front`] with `auth`.
pub async fn front(auth: &AuthLayer) -> Front {
    let upstream = CountingUpstream::start().await;
    let proxy = Upstream::builder("up")
        .endpoint(format!("http://{}", upstream.addr))
        .build::<Body>()
        .expect("an upstream");
    let router = Router::new().fallback_service(auth.layer(proxy));
    Front {
        gateway: spawn_gateway(router).await,
        upstream,
    }
}

/// Sends `req` with a fresh client, failing the test after [`PATIENCE`].
pub async fn send(req: Request<crate::ClientBody>) -> Response<Incoming> {
    tokio::time::timeout(PATIENCE, client().request(req))
        .await
        .expect("no response within the patience")
        .expect("a response")
}

impl Front {
    /// Requests reaching the upstream so far.
    pub fn hits(&self) -> usize {
        self.upstream.hits()
    }

    /// GETs `path` with `headers` (repeated names are sent repeatedly).
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
        let mut req = Request::get(self.gateway.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        send(req.body(empty()).expect("a request")).await
    }

    /// GETs `/orders` with `Authorization: Bearer token`.
    pub async fn bearer(&self, token: &str) -> Response<Incoming> {
        let auth = format!("Bearer {token}");
        self.get("/orders", &[("authorization", &auth)]).await
    }

    /// GETs `path` with `headers`, asserts it reached the upstream (200) and
    /// returns what the upstream saw.
    pub async fn echo(&self, path: &str, headers: &[(&str, &str)]) -> Echo {
        let res = self.get(path, headers).await;
        echo_of(res).await
    }

    /// [`echo`](Self::echo) of `/orders` with a bearer token.
    pub async fn echo_bearer(&self, token: &str) -> Echo {
        let auth = format!("Bearer {token}");
        self.echo("/orders", &[("authorization", &auth)]).await
    }
}

/// What the echo upstream saw.
#[derive(Clone, Debug)]
pub struct Echo(pub Value);

impl Echo {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0["headers"][name]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The one value of header `name`; fails when it was sent twice.
    pub fn one(&self, name: &str) -> Option<String> {
        let mut all = self.all(name);
        assert!(all.len() <= 1, "{name} reached the upstream twice: {all:?}");
        all.pop()
    }

    /// The request target.
    pub fn uri(&self) -> &str {
        self.0["uri"].as_str().unwrap_or_default()
    }
}

/// Asserts `res` is the echo upstream's 200 and returns what it saw.
pub async fn echo_of(res: Response<Incoming>) -> Echo {
    let status = res.status();
    let json = body_json(res).await;
    assert_eq!(status, StatusCode::OK, "not forwarded: {json}");
    Echo(json)
}

/// A refusal: the problem body and the `WWW-Authenticate` challenges.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// The problem+json body.
    pub problem: Value,
    /// Every `WWW-Authenticate` value, in order.
    pub challenges: Vec<String>,
    /// The `Retry-After` header.
    pub retry_after: Option<String>,
}

/// Asserts `res` is a problem+json with `status`, `type_uri` and member
/// `reason`, and returns it.
pub async fn assert_refused(
    res: Response<Incoming>,
    status: u16,
    type_uri: &str,
    reason: &str,
) -> Refusal {
    let challenges = challenges(res.headers());
    let retry_after = res
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().expect("ASCII").to_owned());
    let problem = crate::assert_problem(res, status, type_uri).await;
    assert_eq!(problem["reason"], reason, "{problem}");
    Refusal {
        problem,
        challenges,
        retry_after,
    }
}

/// Asserts a 401 problem for `reason` (any challenge).
pub async fn assert_unauthorized(res: Response<Incoming>, reason: &str) -> Refusal {
    assert_refused(res, 401, problem::UNAUTHORIZED, reason).await
}

/// Asserts a 503 `auth-unavailable` problem for `reason`.
pub async fn assert_unavailable(res: Response<Incoming>, reason: &str) -> Refusal {
    assert_refused(res, 503, problem::AUTH_UNAVAILABLE, reason).await
}

/// Every `WWW-Authenticate` value.
pub fn challenges(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().expect("ASCII challenge").to_owned())
        .collect()
}

/// The Bearer challenge RFC 6750 prescribes for `error` and `reason`.
pub fn bearer_challenge(error: &str, reason: &str) -> String {
    format!("Bearer realm=\"tollgate\", error=\"{error}\", error_description=\"{reason}\"")
}

/// Asserts a 401 `invalid_token` refusal for `reason`, with its Bearer
/// challenge.
pub async fn assert_invalid_token(res: Response<Incoming>, reason: &str) -> Refusal {
    let refusal = assert_unauthorized(res, reason).await;
    assert_eq!(
        refusal.challenges,
        [bearer_challenge("invalid_token", reason)]
    );
    refusal
}

/// Asserts a 401 `malformed` refusal with its `invalid_request` challenge.
pub async fn assert_malformed(res: Response<Incoming>) -> Refusal {
    let refusal = assert_unauthorized(res, "malformed").await;
    assert_eq!(
        refusal.challenges,
        [bearer_challenge("invalid_request", "malformed")]
    );
    refusal
}

/// Polls `check` every 20 ms until it holds, failing the test with `what`
/// after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === the JWKS and discovery server ===

/// What the JWKS URL answers.
#[derive(Clone, Debug)]
pub enum JwksMode {
    /// This JSON document.
    Keys(Value),
    /// 500 Internal Server Error.
    Status500,
    /// 200 with a body that is not a key set.
    Garbage,
}

#[derive(Debug)]
struct JwksState {
    mode: JwksMode,
    delay: Duration,
    discovery_issuer: Option<String>,
}

/// A JWKS server (`/jwks.json`) with OIDC discovery
/// (`/.well-known/openid-configuration`) whose answers change at runtime.
#[derive(Clone, Debug)]
pub struct JwksServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<JwksState>>,
    jwks_hits: Arc<AtomicUsize>,
    discovery_hits: Arc<AtomicUsize>,
}

impl JwksServer {
    /// Serves `mode` at once, without delay; discovery names the server's
    /// own base URL as the issuer.
    pub async fn start(mode: JwksMode) -> Self {
        let (listener, addr) = listener().await;
        let server = Self {
            addr,
            state: Arc::new(Mutex::new(JwksState {
                mode,
                delay: Duration::ZERO,
                discovery_issuer: None,
            })),
            jwks_hits: Arc::default(),
            discovery_hits: Arc::default(),
        };
        let jwks = server.clone();
        let discovery = server.clone();
        let router = Router::new()
            .route(
                "/jwks.json",
                get(move || {
                    let server = jwks.clone();
                    async move { server.answer_jwks().await }
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let server = discovery.clone();
                    async move { server.answer_discovery() }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await });
        server
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JwksState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn answer_jwks(&self) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
        self.jwks_hits.fetch_add(1, Ordering::SeqCst);
        let (mode, delay) = {
            let state = self.state();
            (state.mode.clone(), state.delay)
        };
        tokio::time::sleep(delay).await;
        let json = [(header::CONTENT_TYPE, "application/json")];
        match mode {
            JwksMode::Keys(doc) => (StatusCode::OK, json, doc.to_string()),
            JwksMode::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, json, "{}".into()),
            JwksMode::Garbage => (StatusCode::OK, json, "<html>not a key set</html>".into()),
        }
    }

    fn answer_discovery(&self) -> axum::Json<Value> {
        self.discovery_hits.fetch_add(1, Ordering::SeqCst);
        let issuer = self
            .state()
            .discovery_issuer
            .clone()
            .unwrap_or_else(|| self.base());
        axum::Json(json!({
            "issuer": issuer,
            "jwks_uri": self.url(),
            "response_types_supported": ["code"],
        }))
    }

    /// `http://addr`, the issuer for discovery.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The JWKS URL.
    pub fn url(&self) -> String {
        format!("{}/jwks.json", self.base())
    }

    /// Answers `mode` from now on.
    pub fn set_mode(&self, mode: JwksMode) {
        self.state().mode = mode;
    }

    /// Serves `doc` from now on.
    pub fn set_keys(&self, doc: Value) {
        self.set_mode(JwksMode::Keys(doc));
    }

    /// Waits `delay` before every JWKS answer from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Names `issuer` in the discovery document.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        self.state().discovery_issuer = Some(issuer.to_owned());
    }

    /// JWKS requests received so far (counted on arrival).
    pub fn hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }

    /// Discovery requests received so far.
    pub fn discovery_hits(&self) -> usize {
        self.discovery_hits.load(Ordering::SeqCst)
    }
}

// === the introspection server ===

/// An RFC 7662 introspection endpoint at `/introspect`: it requires HTTP
/// Basic client credentials ([`CLIENT_ID`], [`CLIENT_SECRET`], form-encoded
/// as RFC 6749 §2.3.1 says) and a form body with `token`, and answers the
/// registered answer of that token, or `{"active": false}`.
#[derive(Debug)]
pub struct IntrospectionServer {
    /// Where it listens.
    pub addr: SocketAddr,
    answers: Arc<Mutex<HashMap<String, Value>>>,
    hits: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl IntrospectionServer {
    /// Starts one on 127.0.0.1:0.
    pub async fn start() -> Self {
        let (listener, addr) = listener().await;
        let answers: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let hits: Arc<AtomicUsize> = Arc::default();
        let (answers2, hits2) = (Arc::clone(&answers), Arc::clone(&hits));
        let router = Router::new().route(
            "/introspect",
            post(move |headers: HeaderMap, body: Bytes| {
                let (answers, hits) = (Arc::clone(&answers2), Arc::clone(&hits2));
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    introspect(&headers, &body, &answers)
                }
            }),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            addr,
            answers,
            hits,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    /// Answers `answer` for `token` from now on.
    pub fn register(&self, token: &str, answer: Value) {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.to_owned(), answer);
    }

    /// Calls received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops the server and waits until its listener and every connection
    /// are closed.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("the introspection server did not stop")
                .expect("the introspection server task");
        }
    }
}

fn introspect(
    headers: &HeaderMap,
    body: &[u8],
    answers: &Mutex<HashMap<String, Value>>,
) -> (StatusCode, axum::Json<Value>) {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{CLIENT_ID}:{}",
            CLIENT_SECRET
                .replace(':', "%3A")
                .replace('/', "%2F")
                .replace('&', "%26")
        ))
    );
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !authorized || !is_form {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        );
    }
    let body = String::from_utf8_lossy(body);
    // The tokens of the tests need no percent-decoding.
    let token = body.split('&').find_map(|pair| pair.strip_prefix("token="));
    let answer = token
        .and_then(|t| {
            answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(t)
                .cloned()
        })
        .unwrap_or_else(|| json!({"active": false}));
    (StatusCode::OK, axum::Json(answer))
}
