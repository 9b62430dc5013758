//! End-to-end tests of `tollgate-auth` (issue #4): a real gateway on
//! 127.0.0.1 whose route goes through an `AuthLayer` to a real echo
//! upstream (through `tollgate::proxy::Upstream`), driven by a real HTTP
//! client. Tokens are minted here for every algorithm; the upstream's echo
//! shows which identity and credential headers reached it, and its hit
//! counter shows that refused requests never did.
//!
//! Remote key sets (JWKS, discovery) are in `auth_jwks.rs`.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::time::Duration;

use axum::{Router, routing::get};
use http::{HeaderName, Request};
use serde_json::{Value, json};
use tollgate::core::{Identity, problem};
use tollgate_auth::{
    Algorithm, ApiKeyAuth, AuthLayer, Consumer, CredentialSource, IdentityHeaders, Introspection,
    Issuer, JwtAuth, JwtAuthBuilder, JwtKey, MemoryApiKeyStore, Requirement,
};
use tollgate_tests::{
    auth_support::{
        ALL_ALGORITHMS, AUDIENCE, CLIENT_ID, CLIENT_SECRET, Front, HMAC_SECRET, ISSUER,
        IntrospectionServer, ONE_PER_KEY, Signer, assert_invalid_token, assert_malformed,
        assert_refused, assert_unauthorized, assert_unavailable, b64, bearer_challenge, claims,
        craft, family, front, issuer_for, kid_for, now, rsa, rsa_other, send, verify_key, with,
    },
    body_json, empty,
    observe_support::Capture,
    spawn_gateway,
};

// === setup ===

/// JWT auth for [`ISSUER`], [`AUDIENCE`] and the HMAC key (HS*).
fn jwt_builder() -> JwtAuthBuilder {
    JwtAuth::builder().issuer(issuer_for(Algorithm::HS256))
}

fn jwt() -> JwtAuth {
    jwt_builder().build().unwrap()
}

/// JWT auth forwarding the identity in the default headers.
fn jwt_layer(jwt: JwtAuth) -> AuthLayer {
    AuthLayer::new(jwt).forward_identity(IdentityHeaders::default())
}

async fn jwt_front() -> Front {
    front(&jwt_layer(jwt())).await
}

fn hs256() -> Signer {
    Signer::of(Algorithm::HS256)
}

/// An HS256 token for `a` whose claim `name` is `value` (removed when
/// null).
fn hs256_with(name: &str, value: Value) -> String {
    hs256().sign(&with(claims("a"), name, value))
}

/// A valid HS256 token for `sub`.
fn token(sub: &str) -> String {
    hs256().sign(&claims(sub))
}

/// An API key store with `k-partner` (consumer `partner`, plan `standard`,
/// scopes `orders:read orders:write`).
fn api_keys() -> MemoryApiKeyStore {
    let store = MemoryApiKeyStore::new();
    store.insert(
        "k-partner",
        Consumer::new("partner")
            .plan("standard")
            .scopes(["orders:read", "orders:write"]),
    );
    store
}

/// Identity headers including the plan and the roles.
fn all_identity_headers() -> IdentityHeaders {
    IdentityHeaders::default()
        .plan(HeaderName::from_static("x-plan"))
        .roles(HeaderName::from_static("x-roles"))
}

/// Sends `token` and asserts a 401 `invalid_token` with `reason`, without
/// reaching the upstream.
async fn refuse(front: &Front, token: &str, reason: &str) {
    let before = front.hits();
    let res = front.bearer(token).await;
    if reason == "malformed" {
        assert_malformed(res).await;
    } else {
        assert_invalid_token(res, reason).await;
    }
    assert_eq!(
        front.hits(),
        before,
        "a refused request reached the upstream"
    );
}

/// Sends `token` and asserts a 401 whose reason is one of `reasons` (a
/// corrupted token may fail its signature before its parsing).
async fn refuse_as_one_of(front: &Front, token: &str, reasons: &[&str]) {
    let before = front.hits();
    let res = front.bearer(token).await;
    let problem = tollgate_tests::assert_problem(res, 401, problem::UNAUTHORIZED).await;
    let reason = problem["reason"].as_str().unwrap_or_default();
    assert!(reasons.contains(&reason), "{reason} is none of {reasons:?}");
    assert_eq!(
        front.hits(),
        before,
        "a refused request reached the upstream"
    );
}

/// A corrupted token's reasons.
const CORRUPT: [&str; 2] = ["malformed", "bad_signature"];

// === every algorithm ===

#[tokio::test]
async fn every_algorithm_is_accepted_and_the_identity_reaches_the_upstream() {
    // One front per key, its issuer narrowed to the key's family (see the
    // next test for why).
    let mut accepted = 0;
    for key_alg in ONE_PER_KEY {
        let front = front_with(
            JwtAuth::builder()
                .issuer(issuer_for(key_alg))
                .build()
                .unwrap(),
        )
        .await;
        for alg in family(key_alg) {
            if kid_for(alg) != kid_for(key_alg) {
                continue; // ES256 and ES384 share a family, not a key
            }
            let sub = format!("user-{alg:?}");
            let token = Signer::of(alg).sign(&claims(&sub));
            let echo = front.echo_bearer(&token).await;
            assert_eq!(echo.one("x-user-id").as_deref(), Some(&*sub), "{alg:?}");
            assert_eq!(
                echo.one("x-scopes").as_deref(),
                Some("orders:read profile"),
                "{alg:?}"
            );
            assert_eq!(echo.one("authorization"), None, "{alg:?}");
            accepted += 1;
        }
    }
    assert_eq!(accepted, ALL_ALGORITHMS.len());
}

#[tokio::test]
async fn every_algorithm_is_accepted_with_the_default_algorithm_list() {
    // The documented configuration: one issuer, keys of every family, no
    // algorithm list. jsonwebtoken 11 refuses to verify when its
    // `Validation::algorithms` mixes families, and the default list is all
    // twelve algorithms.
    let issuer = ONE_PER_KEY
        .into_iter()
        .fold(Issuer::new(ISSUER).audience(AUDIENCE), |issuer, alg| {
            issuer.key(verify_key(alg))
        });
    let front = front_with(JwtAuth::builder().issuer(issuer).build().unwrap()).await;
    for alg in ALL_ALGORITHMS {
        let token = Signer::of(alg).sign(&claims("alice"));
        let echo = front.echo_bearer(&token).await;
        assert_eq!(echo.one("x-user-id").as_deref(), Some("alice"), "{alg:?}");
    }
    // The smallest case: one HMAC key, an HS256 token.
    let hmac = JwtAuth::builder()
        .issuer(Issuer::any().key(JwtKey::hmac(HMAC_SECRET)))
        .build()
        .unwrap();
    front_with(hmac).await.echo_bearer(&token("alice")).await;
}

#[tokio::test]
async fn tokens_without_kid_are_tried_against_the_keys_of_their_algorithm() {
    // Two RSA keys, the token's is the second.
    let issuer = issuer_for(Algorithm::RS256).key(
        JwtKey::rsa_pem(&rsa_other().public_pem)
            .unwrap()
            .kid("other"),
    );
    let front = front_with(JwtAuth::builder().issuer(issuer).build().unwrap()).await;
    for signer in [
        Signer::of(Algorithm::PS384),
        Signer::rsa_with(Algorithm::RS512, rsa_other()),
    ] {
        let token = signer.no_kid().sign(&claims("no-kid"));
        let echo = front.echo_bearer(&token).await;
        assert_eq!(echo.one("x-user-id").as_deref(), Some("no-kid"));
    }
}

#[tokio::test]
async fn a_key_verifies_only_the_algorithms_it_allows() {
    let rs256_only = verify_key(Algorithm::RS256)
        .algorithms([Algorithm::RS256])
        .unwrap();
    let jwt = JwtAuth::builder()
        .issuer(
            Issuer::new(ISSUER)
                .key(rs256_only)
                .algorithms(family(Algorithm::RS256)),
        )
        .build()
        .unwrap();
    let front = front(&AuthLayer::new(jwt)).await;
    front
        .echo_bearer(&Signer::of(Algorithm::RS256).sign(&claims("a")))
        .await;
    // Same key, same family, but not on the key's allow-list.
    let ps256 = Signer::of(Algorithm::PS256).sign(&claims("a"));
    refuse(&front, &ps256, "unsupported_algorithm").await;
    // An HMAC key can never take an RSA algorithm.
    assert!(JwtKey::hmac("s").algorithms([Algorithm::RS256]).is_err());
}

// === claim and token failures ===

#[tokio::test]
async fn expired_token_is_401_expired() {
    let front = jwt_front().await;
    let expired = with(claims("a"), "exp", json!(now() - 3600));
    refuse(&front, &hs256().sign(&expired), "expired").await;
}

#[tokio::test]
async fn expiry_has_a_configurable_leeway() {
    let within_leeway = hs256_with("exp", json!(now() - 20));
    let lenient = front(&AuthLayer::new(
        jwt_builder()
            .leeway(Duration::from_secs(120))
            .build()
            .unwrap(),
    ))
    .await;
    lenient.echo_bearer(&within_leeway).await;
    let strict = front(&AuthLayer::new(
        jwt_builder().leeway(Duration::ZERO).build().unwrap(),
    ))
    .await;
    refuse(&strict, &within_leeway, "expired").await;
}

#[tokio::test]
async fn token_not_yet_valid_by_nbf_or_iat_is_401() {
    let front = jwt_front().await;
    let later = json!(now() + 3600);
    let nbf = hs256_with("nbf", later.clone());
    refuse(&front, &nbf, "not_yet_valid").await;
    let iat = hs256_with("iat", later);
    refuse(&front, &iat, "not_yet_valid").await;
}

#[tokio::test]
async fn wrong_issuer_is_401() {
    let front = jwt_front().await;
    let token = hs256_with("iss", json!("https://evil.test"));
    refuse(&front, &token, "wrong_issuer").await;
}

#[tokio::test]
async fn token_without_iss_is_refused_by_an_issuer_that_names_one() {
    let front = jwt_front().await;
    let no_iss = hs256_with("iss", Value::Null);
    refuse(&front, &no_iss, "wrong_issuer").await;
}

#[tokio::test]
async fn wrong_audience_is_401() {
    let front = jwt_front().await;
    let token = hs256_with("aud", json!("billing-api"));
    refuse(&front, &token, "wrong_audience").await;
    // A list of audiences passes when it names ours.
    let listed = hs256_with("aud", json!(["billing-api", AUDIENCE]));
    front.echo_bearer(&listed).await;
}

#[tokio::test]
async fn token_without_aud_is_refused_when_an_audience_is_configured() {
    let front = jwt_front().await;
    let no_aud = hs256_with("aud", Value::Null);
    refuse(&front, &no_aud, "wrong_audience").await;
}

#[tokio::test]
async fn alg_none_is_refused_in_every_spelling() {
    let front = jwt_front().await;
    let payload = claims("admin").to_string();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"}).to_string();
        for signature in ["", "c2ln"] {
            let token = craft(&header, &payload, signature);
            refuse(&front, &token, "unsupported_algorithm").await;
        }
        let with_kid = json!({"alg": alg, "kid": "hmac"}).to_string();
        refuse(
            &front,
            &craft(&with_kid, &payload, ""),
            "unsupported_algorithm",
        )
        .await;
    }
}

#[tokio::test]
async fn hmac_token_signed_with_the_rsa_public_key_is_refused() {
    // The issuer only has the RSA key, and accepts every algorithm (the
    // default): an HS256 token "signed" with its public PEM as the HMAC
    // secret is the algorithm-confusion attack.
    let jwt = JwtAuth::builder()
        .issuer(Issuer::new(ISSUER).key(verify_key(Algorithm::RS256)))
        .build()
        .unwrap();
    let front = front(&AuthLayer::new(jwt)).await;
    let public_pem = rsa().public_pem.as_bytes();
    let forged = Signer::hmac(Algorithm::HS256, public_pem);
    for kid in [None, Some("rsa")] {
        let signer = match kid {
            Some(kid) => forged.clone().kid(kid),
            None => forged.clone(),
        };
        refuse(
            &front,
            &signer.sign(&claims("admin")),
            "unsupported_algorithm",
        )
        .await;
    }
    // With the issuer narrowed to RSA (see
    // `every_algorithm_is_accepted_with_the_default_algorithm_list`), the
    // forgery is still refused and the genuine RS256 token passes.
    let narrowed = front_with(
        JwtAuth::builder()
            .issuer(issuer_for(Algorithm::RS256))
            .build()
            .unwrap(),
    )
    .await;
    refuse(
        &narrowed,
        &forged.sign(&claims("admin")),
        "unsupported_algorithm",
    )
    .await;
    narrowed
        .echo_bearer(&Signer::of(Algorithm::RS256).sign(&claims("a")))
        .await;
}

#[tokio::test]
async fn unknown_kid_is_401_unknown_key() {
    let front = jwt_front().await;
    refuse(
        &front,
        &hs256().kid("nobody").sign(&claims("a")),
        "unknown_key",
    )
    .await;
}

#[tokio::test]
async fn truncated_token_is_401() {
    let front = jwt_front().await;
    let token = token("a");
    let (header_payload, signature) = token.rsplit_once('.').unwrap();
    let (header, payload) = header_payload.split_once('.').unwrap();
    // Cut at a segment boundary: too few segments.
    refuse(&front, header_payload, "malformed").await;
    refuse(&front, header, "malformed").await;
    refuse(&front, &format!("{header}."), "malformed").await;
    // Cut inside a segment.
    for cut in [
        format!("{header_payload}."),
        format!("{header_payload}.{}", &signature[..signature.len() - 8]),
        format!("{header_payload}.{}", &signature[..signature.len() - 1]),
        format!("{header}.{}.{signature}", &payload[..payload.len() / 2]),
        format!("{}.{payload}.{signature}", &header[..header.len() - 3]),
        token[..token.len() / 2].to_owned(),
    ] {
        refuse_as_one_of(&front, &cut, &CORRUPT).await;
    }
}

#[tokio::test]
async fn non_base64_segments_are_401_malformed() {
    let front = jwt_front().await;
    let token = token("a");
    let segments: Vec<&str> = token.split('.').collect();
    let junk = "!!not*base64~~";
    refuse(
        &front,
        &format!("{junk}.{}.{}", segments[1], segments[2]),
        "malformed",
    )
    .await;
    // The signature is checked before the payload is parsed.
    refuse_as_one_of(
        &front,
        &format!("{}.{junk}.{}", segments[0], segments[2]),
        &CORRUPT,
    )
    .await;
    refuse_as_one_of(
        &front,
        &format!("{}.{}.{junk}", segments[0], segments[1]),
        &CORRUPT,
    )
    .await;
    refuse(&front, &format!("{junk}.{junk}.{junk}"), "malformed").await;
}

#[tokio::test]
async fn token_over_8_kib_is_refused_before_the_upstream() {
    let front = jwt_front().await;
    // A validly signed token, just over the default limit.
    let padding = "x".repeat(8 * 1024);
    let big = hs256_with("padding", json!(padding));
    assert!(big.len() > 8 * 1024);
    refuse(&front, &big, "too_large").await;
    // Junk of the same size is refused for its size, before any parsing.
    refuse(&front, &"a".repeat(8 * 1024 + 1), "too_large").await;
    assert_eq!(front.hits(), 0);
    // At the limit, the size is no reason.
    refuse(&front, &"a".repeat(8 * 1024), "malformed").await;
}

#[tokio::test]
async fn two_authorization_headers_are_401_invalid_request() {
    let front = jwt_front().await;
    let good = format!("Bearer {}", token("a"));
    for second in [good.as_str(), "Bearer other", "Basic dXNlcjpwYXNz"] {
        let res = front
            .get(
                "/orders",
                &[("authorization", &good), ("authorization", second)],
            )
            .await;
        assert_malformed(res).await;
    }
    assert_eq!(front.hits(), 0);
}

#[tokio::test]
async fn bearer_without_a_token_is_401() {
    let front = jwt_front().await;
    for value in ["Bearer", "Bearer ", "bearer    "] {
        assert_malformed(front.get("/orders", &[("authorization", value)]).await).await;
    }
    // No credential at all: 401 with a challenge without error code.
    let refusal = assert_unauthorized(front.get("/orders", &[]).await, "missing").await;
    assert_eq!(refusal.challenges, ["Bearer realm=\"tollgate\""]);
    assert_eq!(front.hits(), 0);
}

#[tokio::test]
async fn missing_required_claim_is_401() {
    // `exp` is required by default.
    let front = jwt_front().await;
    let no_exp = hs256_with("exp", Value::Null);
    refuse(&front, &no_exp, "missing_claim").await;

    let jwt = jwt_builder()
        .required_claims(["exp", "sub", "tenant.id"])
        .build()
        .unwrap();
    let front = front_with(jwt).await;
    let no_tenant = token("a");
    refuse(&front, &no_tenant, "missing_claim").await;
    let no_sub = hs256().sign(&with(
        with(claims("a"), "sub", Value::Null),
        "tenant",
        json!({"id": "t1"}),
    ));
    refuse(&front, &no_sub, "missing_claim").await;
    let complete = hs256_with("tenant", json!({"id": "t1"}));
    front.echo_bearer(&complete).await;
}

async fn front_with(jwt: JwtAuth) -> Front {
    front(&jwt_layer(jwt)).await
}

#[tokio::test]
async fn each_issuer_verifies_with_its_own_keys() {
    const A: &str = "https://a.test";
    const B: &str = "https://b.test";
    let secret_b = b"issuer-b-secret-issuer-b-secret!";
    let jwt = JwtAuth::builder()
        .issuer(
            Issuer::new(A)
                .key(verify_key(Algorithm::RS256))
                .algorithms(family(Algorithm::RS256)),
        )
        .issuer(
            Issuer::new(B)
                .key(JwtKey::hmac(secret_b))
                .algorithms(family(Algorithm::HS256)),
        )
        .build()
        .unwrap();
    let front = front_with(jwt).await;
    let rs = Signer::of(Algorithm::RS256).no_kid();
    let hs_b = Signer::hmac(Algorithm::HS256, secret_b);

    let from_a = rs.sign(&with(claims("alice"), "iss", json!(A)));
    let from_b = hs_b.sign(&with(claims("bob"), "iss", json!(B)));
    let echo = front.echo_bearer(&from_a).await;
    assert_eq!(echo.one("x-user-id").as_deref(), Some("alice"));
    let echo = front.echo_bearer(&from_b).await;
    assert_eq!(echo.one("x-user-id").as_deref(), Some("bob"));

    // Claims of A, signed with B's key (and the reverse).
    let a_signed_by_b = hs_b.sign(&with(claims("mallory"), "iss", json!(A)));
    refuse(&front, &a_signed_by_b, "unsupported_algorithm").await;
    let b_signed_by_a = rs.sign(&with(claims("mallory"), "iss", json!(B)));
    refuse(&front, &b_signed_by_a, "unsupported_algorithm").await;
    // Claims of A, signed with another RSA key.
    let other = Signer::rsa_with(Algorithm::RS256, rsa_other());
    let forged = other.sign(&with(claims("mallory"), "iss", json!(A)));
    refuse(&front, &forged, "bad_signature").await;
    // An issuer nobody configured.
    let stranger = hs_b.sign(&with(claims("x"), "iss", json!("https://c.test")));
    refuse(&front, &stranger, "wrong_issuer").await;
}

#[tokio::test]
async fn a_bad_signature_is_401_bad_signature() {
    let front = jwt_front().await;
    let wrong_secret = Signer::hmac(Algorithm::HS256, b"not-the-secret").kid("hmac");
    refuse(&front, &wrong_secret.sign(&claims("a")), "bad_signature").await;
    // A payload swapped under a genuine signature.
    let genuine = token("a");
    let parts: Vec<&str> = genuine.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims("admin").to_string()),
        parts[2]
    );
    refuse(&front, &swapped, "bad_signature").await;
}

#[tokio::test]
async fn tokens_can_come_from_a_cookie_or_a_query_parameter() {
    let jwt = jwt_builder()
        .source(CredentialSource::Cookie("session".into()))
        .source(CredentialSource::Query("access_token".into()))
        .build()
        .unwrap();
    let front = front_with(jwt).await;
    let cookie = format!("theme=dark; session={}", token("from-cookie"));
    let echo = front.echo("/orders", &[("cookie", &cookie)]).await;
    assert_eq!(echo.one("x-user-id").as_deref(), Some("from-cookie"));
    // The token's cookie stays at the gateway; the others go on.
    assert_eq!(echo.one("cookie").as_deref(), Some("theme=dark"));
    let echo = front
        .echo(
            "/orders",
            &[("cookie", &format!("session={}", token("only")))],
        )
        .await;
    assert_eq!(echo.one("cookie"), None);
    let path = format!("/orders?access_token={}&page=2", token("from-query"));
    let echo = front.echo(&path, &[]).await;
    assert_eq!(echo.one("x-user-id").as_deref(), Some("from-query"));
    assert_eq!(echo.uri(), "/orders?page=2");
    // A bad token in the cookie is refused, not ignored.
    let res = front.get("/orders", &[("cookie", "session=a.b.c")]).await;
    assert_malformed(res).await;
}

#[tokio::test]
async fn a_basic_authorization_meant_for_the_upstream_is_kept() {
    let layer = AuthLayer::new(jwt_builder().build().unwrap())
        .optional()
        .forward_identity(all_identity_headers());
    let front = front(&layer).await;
    let echo = front
        .echo("/orders", &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_eq!(
        echo.one("authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz")
    );
    assert_eq!(echo.one("x-user-id"), None);
    // No scopes: no empty `X-Scopes` either.
    assert_eq!(echo.one("x-scopes"), None);
}

#[test]
fn an_issuer_without_algorithms_is_a_config_error() {
    let err = JwtAuth::builder()
        .issuer(Issuer::any().key(JwtKey::hmac(HMAC_SECRET)).algorithms([]))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("at least one algorithm"), "{err}");
}

// === API keys ===

fn api_key_layer(store: MemoryApiKeyStore) -> AuthLayer {
    AuthLayer::new(ApiKeyAuth::new(store)).forward_identity(all_identity_headers())
}

/// The `ApiKey` challenge for `reason`.
fn api_key_challenge(error: &str, reason: &str) -> String {
    format!("ApiKey realm=\"tollgate\", error=\"{error}\", error_description=\"{reason}\"")
}

#[tokio::test]
async fn valid_api_key_identity_reaches_the_upstream() {
    let front = front(&api_key_layer(api_keys())).await;
    let echo = front.echo("/orders", &[("x-api-key", "k-partner")]).await;
    assert_eq!(echo.one("x-consumer").as_deref(), Some("partner"));
    assert_eq!(echo.one("x-plan").as_deref(), Some("standard"));
    assert_eq!(
        echo.one("x-scopes").as_deref(),
        Some("orders:read orders:write")
    );
    assert_eq!(echo.one("x-user-id"), None);
    // The key itself never reaches the upstream.
    assert_eq!(echo.one("x-api-key"), None);
}

#[tokio::test]
async fn api_key_revoked_while_serving_is_refused() {
    let store = api_keys();
    let front = front(&api_key_layer(store.clone())).await;
    front.echo("/orders", &[("x-api-key", "k-partner")]).await;
    assert!(store.revoke("k-partner"));
    let refusal = assert_unauthorized(
        front.get("/orders", &[("x-api-key", "k-partner")]).await,
        "invalid_api_key",
    )
    .await;
    assert_eq!(
        refusal.challenges,
        [api_key_challenge("invalid_token", "invalid_api_key")]
    );
    assert_eq!(front.hits(), 1);
    // Added while serving: accepted at once.
    store.insert("k-new", Consumer::new("newcomer"));
    let echo = front.echo("/orders", &[("x-api-key", "k-new")]).await;
    assert_eq!(echo.one("x-consumer").as_deref(), Some("newcomer"));
}

/// The audit events captured: outcome, reason and subject of each.
fn audited(capture: &Capture) -> Vec<(Option<String>, Option<String>, Option<String>)> {
    let owned = |v: Option<&str>| v.map(str::to_owned);
    capture
        .events(tollgate::core::audit::TARGET)
        .iter()
        .map(|e| {
            (
                owned(e.get("outcome")),
                owned(e.get("reason")),
                owned(e.get("subject")),
            )
        })
        .collect()
}

#[test]
fn api_key_changes_are_audited_and_configured_keys_are_not() {
    let (capture, _guard) = Capture::install();
    // Loaded from configuration: the build is audited as a whole, not key
    // by key.
    let config: tollgate_auth::ApiKeyConfig = serde_json::from_value(json!({
        "keys": [{"key": "k-configured", "consumer": "from-config"}]
    }))
    .unwrap();
    let store = config.store().unwrap();
    assert!(capture.events(tollgate::core::audit::TARGET).is_empty());
    // Admin actions while serving.
    store.insert("k-runtime-secret", Consumer::new("newcomer"));
    assert!(store.revoke("k-configured"));
    assert!(!store.revoke("k-never-added"));
    store.insert("k-other-secret", Consumer::new("newcomer"));
    assert_eq!(store.revoke_consumer("newcomer"), 2);
    assert_eq!(store.revoke_consumer("nobody"), 0);

    assert_eq!(
        audited(&capture),
        [
            ("key-added", "api key added", "newcomer"),
            ("key-revoked", "api key revoked", "from-config"),
            ("key-added", "api key added", "newcomer"),
            ("key-revoked", "consumer's api keys revoked", "newcomer"),
        ]
        .map(|(o, r, s)| (Some(o.to_owned()), Some(r.to_owned()), Some(s.to_owned())))
    );
    for event in capture.all() {
        for value in event.fields.values() {
            assert!(!value.contains("k-"), "key text in {event:?}");
        }
    }
}

#[tokio::test]
async fn unknown_api_key_is_401() {
    let front = front(&api_key_layer(api_keys())).await;
    for key in ["k-unknown", "k-partne", "k-partner2", "K-PARTNER"] {
        assert_unauthorized(
            front.get("/orders", &[("x-api-key", key)]).await,
            "invalid_api_key",
        )
        .await;
    }
    assert_eq!(front.hits(), 0);
}

#[tokio::test]
async fn oversized_api_key_is_401() {
    let store = api_keys();
    let long = "k".repeat(tollgate_auth::MAX_API_KEY_LEN + 1);
    // Even a stored key is refused when it is over the limit.
    store.insert(&long, Consumer::new("long"));
    let front = front(&api_key_layer(store)).await;
    for key in [long.clone(), "k".repeat(32 * 1024)] {
        assert_unauthorized(
            front.get("/orders", &[("x-api-key", &key)]).await,
            "invalid_api_key",
        )
        .await;
    }
    assert_eq!(front.hits(), 0);
}

#[tokio::test]
async fn duplicate_api_key_header_is_401() {
    let front = front(&api_key_layer(api_keys())).await;
    let res = front
        .get(
            "/orders",
            &[("x-api-key", "k-partner"), ("x-api-key", "k-partner")],
        )
        .await;
    let refusal = assert_unauthorized(res, "malformed").await;
    assert_eq!(
        refusal.challenges,
        [api_key_challenge("invalid_request", "malformed")]
    );
    assert_eq!(front.hits(), 0);
}

#[tokio::test]
async fn api_key_in_the_query_only_when_configured() {
    let header_only = front(&api_key_layer(api_keys())).await;
    assert_unauthorized(
        header_only.get("/orders?api_key=k-partner", &[]).await,
        "missing",
    )
    .await;

    // The query source stays when the header is renamed after it.
    let layer = AuthLayer::new(
        ApiKeyAuth::new(api_keys())
            .query("api_key")
            .header(http::HeaderName::from_static("x-key")),
    )
    .forward_identity(IdentityHeaders::default());
    let with_query = front(&layer).await;
    let echo = with_query.echo("/orders?api_key=k-partner", &[]).await;
    assert_eq!(echo.one("x-consumer").as_deref(), Some("partner"));
    // The key is a credential: it does not go upstream, the rest does.
    assert_eq!(echo.uri(), "/orders");
    let echo = with_query
        .echo("/orders?page=2&api_key=k-partner&q=a%20b", &[])
        .await;
    assert_eq!(echo.uri(), "/orders?page=2&q=a%20b");
    assert_unauthorized(
        with_query.get("/orders?api_key=k-nope", &[]).await,
        "invalid_api_key",
    )
    .await;
    assert_unauthorized(
        with_query
            .get("/orders?api_key=k-partner&api_key=k-partner", &[])
            .await,
        "malformed",
    )
    .await;
}

// === introspection ===

fn introspection(server: &IntrospectionServer) -> Introspection {
    Introspection::builder(server.endpoint())
        .client_credentials(CLIENT_ID, CLIENT_SECRET)
        .build()
        .unwrap()
}

async fn introspection_front(server: &IntrospectionServer) -> Front {
    let layer = AuthLayer::new(introspection(server)).forward_identity(IdentityHeaders::default());
    front(&layer).await
}

fn active(sub: &str) -> Value {
    json!({
        "active": true,
        "sub": sub,
        "client_id": "mobile-app",
        "scope": "orders:read profile",
        "exp": now() + 600,
    })
}

#[tokio::test]
async fn introspected_active_token_maps_onto_the_identity_and_is_cached() {
    let server = IntrospectionServer::start().await;
    server.register("opaque-alice", active("alice"));
    let front = introspection_front(&server).await;
    for _ in 0..3 {
        let echo = front.echo_bearer("opaque-alice").await;
        assert_eq!(echo.one("x-user-id").as_deref(), Some("alice"));
        assert_eq!(echo.one("x-consumer").as_deref(), Some("mobile-app"));
        assert_eq!(echo.one("x-scopes").as_deref(), Some("orders:read profile"));
        assert_eq!(echo.one("authorization"), None);
    }
    assert_eq!(server.hits(), 1, "the active answer was not cached");
}

#[tokio::test]
async fn introspected_inactive_token_is_401_inactive() {
    let server = IntrospectionServer::start().await;
    server.register("opaque-old", json!({"active": false}));
    server.register(
        "opaque-expired",
        json!({"active": true, "sub": "a", "exp": now() - 10}),
    );
    let front = introspection_front(&server).await;
    for token in [
        "opaque-old",
        "opaque-old",
        "opaque-unknown",
        "opaque-expired",
    ] {
        refuse(&front, token, "inactive").await;
    }
    assert_eq!(server.hits(), 3, "the inactive answer was not cached");
}

#[tokio::test]
async fn introspection_server_down_is_503_problem() {
    // A port nobody listens on any more.
    let closed = {
        let (listener, addr) = tollgate_tests::listener().await;
        drop(listener);
        addr
    };
    let introspection = Introspection::builder(format!("http://{closed}/introspect"))
        .client_credentials(CLIENT_ID, CLIENT_SECRET)
        .build()
        .unwrap();
    let front = front(&AuthLayer::new(introspection)).await;
    let refusal = assert_unavailable(front.bearer("opaque-any").await, "unavailable").await;
    assert_eq!(refusal.retry_after.as_deref(), Some("1"));
    assert_eq!(front.hits(), 0);
}

#[tokio::test]
async fn introspection_with_wrong_client_credentials_is_503() {
    let server = IntrospectionServer::start().await;
    server.register("opaque-alice", active("alice"));
    let introspection = Introspection::builder(server.endpoint())
        .client_credentials(CLIENT_ID, "wrong")
        .build()
        .unwrap();
    let front = front(&AuthLayer::new(introspection)).await;
    assert_unavailable(front.bearer("opaque-alice").await, "unavailable").await;
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn introspection_cached_answer_applies_after_the_server_is_gone() {
    let mut server = IntrospectionServer::start().await;
    server.register("opaque-alice", active("alice"));
    let front = introspection_front(&server).await;
    front.echo_bearer("opaque-alice").await;
    server.stop().await;
    // Cached: still accepted.
    let echo = front.echo_bearer("opaque-alice").await;
    assert_eq!(echo.one("x-user-id").as_deref(), Some("alice"));
    // Not cached: 503, never anonymous, never 401.
    assert_unavailable(front.bearer("opaque-bob").await, "unavailable").await;
    assert_eq!(server.hits(), 1);
    assert_eq!(front.hits(), 2);
}

// === composition and spoofing ===

fn jwt_or_key() -> AuthLayer {
    AuthLayer::new(jwt())
        .or(ApiKeyAuth::new(api_keys()))
        .forward_identity(IdentityHeaders::default())
}

const SPOOFED: [(&str, &str); 6] = [
    ("x-user-id", "admin"),
    ("x-user-id", "root"),
    ("x-consumer", "evil-corp"),
    ("x-scopes", "admin:all"),
    ("X-User-Id", "admin2"),
    ("x-scopes", "orders:write"),
];

#[tokio::test]
async fn jwt_or_api_key_accepts_either() {
    let front = front(&jwt_or_key()).await;
    let echo = front.echo_bearer(&token("alice")).await;
    assert_eq!(echo.one("x-user-id").as_deref(), Some("alice"));
    let echo = front.echo("/orders", &[("x-api-key", "k-partner")]).await;
    assert_eq!(echo.one("x-consumer").as_deref(), Some("partner"));
    assert_eq!(front.hits(), 2);
}

#[tokio::test]
async fn invalid_jwt_without_api_key_is_401_with_both_challenges() {
    let front = front(&jwt_or_key()).await;
    let expired = hs256_with("exp", json!(now() - 3600));
    let refusal = assert_unauthorized(front.bearer(&expired).await, "expired").await;
    assert_eq!(
        refusal.challenges,
        [
            bearer_challenge("invalid_token", "expired"),
            api_key_challenge("invalid_token", "expired"),
        ]
    );
    let refusal = assert_unauthorized(front.get("/orders", &[]).await, "missing").await;
    assert_eq!(
        refusal.challenges,
        ["Bearer realm=\"tollgate\"", "ApiKey realm=\"tollgate\""]
    );
    assert_eq!(front.hits(), 0);
}

fn optional_layer() -> AuthLayer {
    jwt_or_key().optional()
}

#[tokio::test]
async fn optional_auth_lets_anonymous_requests_through_without_identity() {
    let front = front(&optional_layer()).await;
    let echo = front.echo("/products", &SPOOFED).await;
    for name in ["x-user-id", "x-consumer", "x-scopes"] {
        assert_eq!(echo.all(name), Vec::<String>::new(), "{name} was spoofed");
    }
    // Another scheme in `Authorization` is not a credential of this route.
    let echo = front
        .echo("/products", &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_eq!(echo.one("x-user-id"), None);
}

#[tokio::test]
async fn optional_auth_attaches_the_identity_of_a_valid_token() {
    let front = front(&optional_layer()).await;
    let auth = format!("Bearer {}", token("alice"));
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(SPOOFED);
    let echo = front.echo("/products", &headers).await;
    assert_eq!(echo.one("x-user-id").as_deref(), Some("alice"));
    assert_eq!(echo.one("x-scopes").as_deref(), Some("orders:read profile"));
    assert_eq!(echo.one("x-consumer"), None);
}

#[tokio::test]
async fn optional_auth_refuses_invalid_credentials() {
    let front = front(&optional_layer()).await;
    let bad_signature = Signer::hmac(Algorithm::HS256, b"wrong").sign(&claims("a"));
    assert_unauthorized(front.bearer(&bad_signature).await, "bad_signature").await;
    assert_unauthorized(
        front.get("/products", &[("x-api-key", "k-revoked")]).await,
        "invalid_api_key",
    )
    .await;
    assert_unauthorized(
        front
            .get("/products", &[("authorization", "Bearer ")])
            .await,
        "malformed",
    )
    .await;
    assert_eq!(front.hits(), 0);
}

#[tokio::test]
async fn spoofed_identity_headers_are_replaced_on_an_authenticated_route() {
    let front = front(&jwt_or_key()).await;
    let auth = format!("Bearer {}", token("alice"));
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(SPOOFED);
    let echo = front.echo("/orders", &headers).await;
    assert_eq!(echo.all("x-user-id"), ["alice"]);
    assert_eq!(echo.all("x-scopes"), ["orders:read profile"]);
    assert_eq!(echo.all("x-consumer"), Vec::<String>::new());

    let mut headers = vec![("x-api-key", "k-partner")];
    headers.extend(SPOOFED);
    let echo = front.echo("/orders", &headers).await;
    assert_eq!(echo.all("x-consumer"), ["partner"]);
    assert_eq!(echo.all("x-scopes"), ["orders:read orders:write"]);
    assert_eq!(echo.all("x-user-id"), Vec::<String>::new());
}

#[tokio::test]
async fn identity_header_names_are_configurable() {
    let headers = IdentityHeaders::default().subject(HeaderName::from_static("x-auth-sub"));
    let front = front(&AuthLayer::new(jwt()).forward_identity(headers)).await;
    let auth = format!("Bearer {}", token("alice"));
    let echo = front
        .echo(
            "/orders",
            &[("authorization", &auth), ("x-auth-sub", "admin")],
        )
        .await;
    assert_eq!(echo.all("x-auth-sub"), ["alice"]);
}

#[tokio::test]
async fn credentials_are_stripped_before_the_upstream_unless_kept() {
    let stripping = front(&jwt_or_key()).await;
    let auth = format!("Bearer {}", token("alice"));
    let echo = stripping.echo("/orders", &[("authorization", &auth)]).await;
    assert_eq!(echo.one("authorization"), None);
    let echo = stripping
        .echo("/orders", &[("x-api-key", "k-partner")])
        .await;
    assert_eq!(echo.one("x-api-key"), None);

    let keeping = front(&jwt_or_key().keep_credentials(true)).await;
    let echo = keeping.echo("/orders", &[("authorization", &auth)]).await;
    assert_eq!(echo.one("authorization"), Some(auth));
    let echo = keeping.echo("/orders", &[("x-api-key", "k-partner")]).await;
    assert_eq!(echo.one("x-api-key").as_deref(), Some("k-partner"));
}

#[tokio::test]
async fn a_handler_extracts_the_identity() {
    async fn me(identity: Identity) -> axum::Json<Value> {
        axum::Json(json!({
            "subject": identity.subject.as_deref(),
            "scopes": identity.scopes.iter().map(|s| &**s).collect::<Vec<_>>(),
            "method": identity.method.map(|m| m.as_str()),
            "tenant": identity.claims.as_ref().and_then(|c| c.get("tenant").cloned()),
        }))
    }
    let layer = AuthLayer::new(jwt());
    assert_clone_send_sync(&layer);
    let router = Router::new().route("/me", get(me)).layer(layer);
    let gateway = spawn_gateway(router).await;
    let token = hs256().sign(&with(claims("alice"), "tenant", json!("t1")));
    let req = Request::get(gateway.url("/me"))
        .header("authorization", format!("Bearer {token}"))
        .body(empty())
        .unwrap();
    let res = send(req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        body_json(res).await,
        json!({
            "subject": "alice",
            "scopes": ["orders:read", "profile"],
            "method": "jwt",
            "tenant": "t1",
        })
    );
}

fn assert_clone_send_sync<T: Clone + Send + Sync>(_: &T) {}

// === authorization ===

#[tokio::test]
async fn required_scopes_all_or_any() {
    let all =
        front(&jwt_layer(jwt()).require_scopes(Requirement::all(["orders:read", "orders:write"])))
            .await;
    let refusal = assert_refused(
        all.bearer(&token("alice")).await,
        403,
        problem::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    assert_eq!(
        refusal.challenges,
        [format!(
            "{}, scope=\"orders:read orders:write\"",
            bearer_challenge("insufficient_scope", "insufficient_scope")
        )]
    );
    let both = hs256().sign(&with(
        claims("alice"),
        "scope",
        json!("orders:write orders:read"),
    ));
    all.echo_bearer(&both).await;
    assert_eq!(all.hits(), 1);

    let any = front(&jwt_layer(jwt()).require_scopes(Requirement::any(["admin", "profile"]))).await;
    any.echo_bearer(&token("alice")).await;
    let none = hs256().sign(&with(claims("bob"), "scope", json!("orders:read")));
    assert_refused(
        any.bearer(&none).await,
        403,
        problem::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    // Without a credential it stays 401.
    assert_unauthorized(any.get("/orders", &[]).await, "missing").await;
}

#[tokio::test]
async fn required_roles_are_403_insufficient_scope() {
    let layer = jwt_layer(jwt()).require_roles(Requirement::any(["admin", "ops"]));
    let jwt_route = front(&layer).await;
    let user = hs256().sign(&with(claims("bob"), "roles", json!(["user"])));
    let refusal = assert_refused(
        jwt_route.bearer(&user).await,
        403,
        problem::FORBIDDEN,
        "insufficient_role",
    )
    .await;
    // `scope` names scopes only (RFC 6750 §3): no roles in it.
    assert_eq!(
        refusal.challenges,
        [bearer_challenge("insufficient_scope", "insufficient_role")]
    );
    let ops = hs256().sign(&with(claims("carol"), "roles", json!(["user", "ops"])));
    jwt_route.echo_bearer(&ops).await;
    assert_eq!(jwt_route.hits(), 1);

    // API-key consumers carry roles too.
    let store = MemoryApiKeyStore::new();
    store.insert("k-ops", Consumer::new("ops-bot").roles(["ops"]));
    store.insert("k-plain", Consumer::new("plain"));
    let layer = AuthLayer::new(ApiKeyAuth::new(store)).require_roles(Requirement::all(["ops"]));
    let keys = front(&layer).await;
    keys.echo("/x", &[("x-api-key", "k-ops")]).await;
    assert_refused(
        keys.get("/x", &[("x-api-key", "k-plain")]).await,
        403,
        problem::FORBIDDEN,
        "insufficient_role",
    )
    .await;
}

// === audit ===

#[tokio::test]
async fn audit_events_name_the_decision_and_never_the_token() {
    let (capture, _guard) = Capture::install();
    let front = jwt_front().await;
    let good = token("alice");
    let expired = hs256().sign(&with(claims("alice"), "exp", json!(now() - 3600)));
    front.echo_bearer(&good).await;
    refuse(&front, &expired, "expired").await;
    let _ = front.get("/orders", &[("x-api-key", "k-secret-key")]).await;

    let owned = |o: &str, r: &str, s: Option<&str>| {
        (Some(o.to_owned()), Some(r.to_owned()), s.map(str::to_owned))
    };
    assert_eq!(
        audited(&capture),
        [
            owned("allowed", "jwt", Some("alice")),
            owned("denied", "expired", None),
            owned("denied", "missing", None),
        ]
    );
    let events = capture.all();
    assert!(events.len() >= 3);
    // No part of a token (header, claims, signature), nor the API key.
    let secrets: Vec<&str> = [good.as_str(), expired.as_str()]
        .into_iter()
        .flat_map(|t| t.split('.'))
        .chain(["k-secret-key"])
        .collect();
    for event in events {
        for value in event.fields.values() {
            for secret in &secrets {
                assert!(!value.contains(secret), "credential text in {event:?}");
            }
        }
    }
}

// === bad input ===

/// A deterministic xorshift generator: the same bytes on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` bytes that are a valid header value: visible ASCII, space and
    /// obs-text, neither first nor last a space.
    fn header_value(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                loop {
                    let b = (self.next() & 0xff) as u8;
                    let edge = i == 0 || i + 1 == len;
                    if (0x21..=0x7e).contains(&b) || b >= 0x80 || (b == b' ' && !edge) {
                        break b;
                    }
                }
            })
            .collect()
    }
}

fn malformed_credentials() -> Vec<Vec<u8>> {
    let mut list: Vec<Vec<u8>> = [
        "Bearer a.b",
        "Bearer ....",
        "Bearer ..",
        "Bearer a..b",
        "Bearer .a.b",
        "Bearer a.b.c.d",
        "Bearer a.b.c.d.e",
        "Bearer ===.===.===",
        "Bearer null",
        "Bearer Bearer x.y.z",
        "bearer",
        "Bearer",
        "Bearer  .  .  ",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let sig = "c2lnbmF0dXJl";
    let valid_payload = claims("admin").to_string();
    let crafted = [
        // base64 of things that are not JSON objects
        craft("not json", &valid_payload, sig),
        craft("[1,2,3]", &valid_payload, sig),
        craft("\"HS256\"", &valid_payload, sig),
        craft(r#"{"alg":"HS256"}"#, "not json", sig),
        craft(r#"{"alg":"HS256"}"#, "[]", sig),
        craft(r#"{"alg":"HS256"}"#, "", sig),
        // header fields of the wrong type or meaning
        craft(r#"{"alg":5}"#, &valid_payload, sig),
        craft(r#"{"alg":null}"#, &valid_payload, sig),
        craft(r#"{"alg":["HS256"]}"#, &valid_payload, sig),
        craft(r#"{"typ":"JWT"}"#, &valid_payload, sig),
        craft(r#"{"alg":"HS256","kid":7}"#, &valid_payload, sig),
        craft(r#"{"alg":"XS999"}"#, &valid_payload, sig),
        craft(r#"{"alg":"HS256","crit":["exp"]}"#, &valid_payload, sig),
        craft(
            r#"{"alg":"HS256","kid":"hmac","crit":["b64"],"b64":false}"#,
            &valid_payload,
            sig,
        ),
        // claims of the wrong type
        craft(r#"{"alg":"HS256","kid":"hmac"}"#, r#"{"exp":"never"}"#, sig),
        craft(r#"{"alg":"HS256","kid":"hmac"}"#, r#"{"exp":1e400}"#, sig),
        craft(r#"{"alg":"HS256"}"#, &"[".repeat(3000), sig),
        craft(
            &format!("{{\"alg\":\"HS256\",\"kid\":\"{}\"}}", "k".repeat(4000)),
            "{}",
            sig,
        ),
        craft(r#"{"alg":"HS256"}"#, r#"{"sub":"a","#, ""),
    ];
    list.extend(crafted.iter().map(|t| format!("Bearer {t}").into_bytes()));
    // The crit header on an otherwise valid, validly signed token.
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("hmac".into());
    let signed = hs256().sign_with_header(&header, &claims("admin"));
    let (_, rest) = signed.split_once('.').unwrap();
    let crit_header = b64(r#"{"alg":"HS256","kid":"hmac","crit":["exp"]}"#);
    list.push(format!("Bearer {crit_header}.{rest}").into_bytes());
    // Huge values.
    for len in [8 * 1024 + 1, 16 * 1024, 60 * 1024] {
        list.push(format!("Bearer {}", "A".repeat(len)).into_bytes());
        let dots = format!("Bearer {}", ".".repeat(len));
        list.push(dots.into_bytes());
    }
    // Random bytes.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..120 {
        let len = 1 + (rng.next() % 512) as usize;
        let mut value = rng.header_value(len);
        if i % 2 == 0 {
            let mut prefixed = b"Bearer ".to_vec();
            prefixed.append(&mut value);
            value = prefixed;
        }
        list.push(value);
    }
    list
}

#[tokio::test]
async fn malformed_credentials_are_all_401_problem_json_and_never_reach_the_upstream() {
    let front = front(&jwt_or_key()).await;
    let credentials = malformed_credentials();
    for value in &credentials {
        for header in ["authorization", "x-api-key"] {
            let req = Request::get(front.gateway.url("/orders"))
                .header(header, value.as_slice())
                .body(empty())
                .unwrap();
            let res = send(req).await;
            let shown = String::from_utf8_lossy(value);
            assert_eq!(res.status(), 401, "{header}: {shown:.80}");
            let problem = tollgate_tests::assert_problem(res, 401, problem::UNAUTHORIZED).await;
            assert!(problem["reason"].is_string(), "{problem}");
        }
    }
    assert_eq!(
        front.hits(),
        0,
        "a malformed credential reached the upstream"
    );
}
