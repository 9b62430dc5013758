//! `tollgate-auth` with remote keys (issue #4): a real local server serves
//! the JWKS (and the OIDC discovery document), and the tests change what it
//! answers while the gateway runs: rotated keys, slowness, 500s, garbage.
//! Keys are fetched in the background, so requests never wait for it.
//!
//! Timings are short intervals set on the builder; every wait is a bounded
//! poll, never a sleep that asserts timing.

#![expect(
    clippy::expect_used,
    reason = "test helpers outside #[test] fns fail the test with a message"
)]

use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, timeout};
use tollgate_auth::{Algorithm, AuthLayer, IdentityHeaders, Issuer, JwtAuth, JwtAuthBuilder};
use tollgate_tests::auth_support::{
    Front, ISSUER, JwksMode, JwksServer, PATIENCE, Signer, assert_invalid_token,
    assert_unavailable, claims, eventually, family, front, jwks, with,
};

/// A request with known keys must be answered within this, whatever the
/// JWKS server does (it is made 3 s slow).
const PROMPT: Duration = Duration::from_secs(1);

/// An issuer whose ES256 keys come from `url`.
fn remote(url: &str) -> Issuer {
    Issuer::new(ISSUER)
        .jwks_url(url)
        .algorithms(family(Algorithm::ES256))
}

/// JWT auth with `issuer`, refreshing every `refresh` and refetching on
/// demand at most every `min_refetch`.
fn builder(issuer: Issuer, refresh: Duration, min_refetch: Duration) -> JwtAuthBuilder {
    JwtAuth::builder()
        .issuer(issuer)
        .refresh_interval(refresh)
        .min_refetch_interval(min_refetch)
}

async fn front_for(jwt: &JwtAuth) -> Front {
    front(&AuthLayer::new(jwt.clone()).forward_identity(IdentityHeaders::default())).await
}

/// A JWKS server with one ES256 key, a gateway using it, keys loaded.
struct Serving {
    key: Signer,
    server: JwksServer,
    jwt: JwtAuth,
    front: Front,
}

async fn serving(key: Signer, refresh: Duration, min_refetch: Duration) -> Serving {
    let server = JwksServer::start(JwksMode::Keys(jwks(&[&key]))).await;
    let jwt = builder(remote(&server.url()), refresh, min_refetch)
        .build()
        .expect("a JWT layer");
    let front = front_for(&jwt).await;
    wait_ready(&jwt).await;
    Serving {
        key,
        server,
        jwt,
        front,
    }
}

async fn wait_ready(jwt: &JwtAuth) {
    timeout(PATIENCE, jwt.ready())
        .await
        .expect("the keys were not loaded in time");
}

/// Asserts that `front` accepts a fresh token of `signer` (a new `sub`
/// each time, so the verified-token cache cannot answer) within [`PROMPT`].
async fn accepted_promptly(front: &Front, signer: &Signer, sub: &str) {
    let token = signer.sign(&claims(sub));
    let res = timeout(PROMPT, front.bearer(&token))
        .await
        .expect("a request with a known key waited for the JWKS server");
    let echo = tollgate_tests::auth_support::echo_of(res).await;
    assert_eq!(echo.one("x-user-id").as_deref(), Some(sub));
}

#[tokio::test]
async fn keys_rotate_while_the_gateway_runs() {
    let Serving {
        key: old,
        server,
        front,
        ..
    } = serving(
        Signer::fresh_es256("k-old"),
        Duration::from_secs(60),
        Duration::from_millis(100),
    )
    .await;
    let new = Signer::fresh_es256("k-new");
    accepted_promptly(&front, &old, "before").await;
    // Verified once, so now in the verified-token cache.
    let cached = old.sign(&claims("cached"));
    assert_eq!(front.bearer(&cached).await.status(), 200);

    // The provider rotates: the new key appears, the old one retires.
    server.set_keys(jwks(&[&new]));
    let rotated = new.sign(&claims("after"));
    // The refresh interval is a minute away: the unknown kid is what asks
    // for the refetch, in the background.
    assert_invalid_token(front.bearer(&rotated).await, "unknown_key").await;
    let (front_ref, rotated_ref) = (&front, &rotated);
    eventually("the new key is accepted", move || async move {
        front_ref.bearer(rotated_ref).await.status() == 200
    })
    .await;
    accepted_promptly(&front, &new, "after-2").await;
    // A fresh token with the retired key is refused, and so is the one
    // verified before the rotation: the cache does not outlive the key.
    let retired = old.sign(&claims("retired"));
    assert_invalid_token(front.bearer(&retired).await, "unknown_key").await;
    assert_invalid_token(front.bearer(&cached).await, "unknown_key").await;
    assert!(server.hits() >= 2, "{}", server.hits());
}

#[tokio::test]
async fn a_slow_jwks_server_does_not_delay_requests_with_known_keys() {
    let Serving {
        key, server, front, ..
    } = serving(
        Signer::fresh_es256("k1"),
        Duration::from_millis(100),
        Duration::from_millis(50),
    )
    .await;
    server.set_delay(Duration::from_secs(3));
    let before = server.hits();
    let server_ref = &server;
    eventually("a slow fetch is in flight", move || async move {
        server_ref.hits() > before
    })
    .await;
    for i in 0..5 {
        accepted_promptly(&front, &key, &format!("user-{i}")).await;
    }
    // An unknown kid asks for a refetch but does not wait for it either.
    let stranger = Signer::fresh_es256("k-unknown").sign(&claims("x"));
    let res = timeout(PROMPT, front.bearer(&stranger))
        .await
        .expect("an unknown kid waited for the JWKS server");
    assert_invalid_token(res, "unknown_key").await;

    // A gateway whose very first fetch is slow answers 503 at once.
    let slow = JwksServer::start(JwksMode::Keys(jwks(&[&key]))).await;
    slow.set_delay(Duration::from_secs(3));
    let jwt = builder(
        remote(&slow.url()),
        Duration::from_secs(60),
        Duration::from_secs(60),
    )
    .build()
    .unwrap();
    let cold = front_for(&jwt).await;
    let res = timeout(PROMPT, cold.bearer(&key.sign(&claims("cold"))))
        .await
        .expect("a request waited for the first fetch");
    assert_unavailable(res, "keys_unavailable").await;
}

#[tokio::test]
async fn jwks_500_and_garbage_keep_the_last_good_keys() {
    let Serving {
        key,
        server,
        jwt,
        front,
    } = serving(
        Signer::fresh_es256("k1"),
        Duration::from_millis(100),
        Duration::from_millis(50),
    )
    .await;
    assert_eq!(jwt.fetch_stats().failures, 0);

    let bad_answers = [
        JwksMode::Status500,
        JwksMode::Garbage,
        JwksMode::Keys(json!({"keys": []})),
        JwksMode::Keys(json!({"keys": [{"kty": "oct"}]})),
        JwksMode::Keys(json!(["not", "a", "key", "set"])),
    ];
    for (i, mode) in bad_answers.into_iter().enumerate() {
        let failures = jwt.fetch_stats().failures;
        server.set_mode(mode.clone());
        let jwt_ref = &jwt;
        eventually(
            &format!("{mode:?} counts as failures"),
            move || async move { jwt_ref.fetch_stats().failures >= failures + 2 },
        )
        .await;
        assert!(jwt.is_ready(), "{mode:?} threw the keys away");
        accepted_promptly(&front, &key, &format!("user-{i}")).await;
    }
    let stats = jwt.fetch_stats();
    assert!(stats.fetches > stats.failures, "{stats:?}");
}

#[tokio::test]
async fn before_the_first_fetch_requests_get_503_and_the_layer_is_not_ready() {
    let key = Signer::fresh_es256("k1");
    let server = JwksServer::start(JwksMode::Status500).await;
    let jwt = builder(
        remote(&server.url()),
        Duration::from_millis(100),
        Duration::from_millis(50),
    )
    .build()
    .unwrap();
    let layer = AuthLayer::new(jwt.clone());
    let front = front(&layer).await;
    assert!(!jwt.is_ready());
    assert!(!layer.is_ready());

    let jwt_ref = &jwt;
    eventually("a failed fetch", move || async move {
        jwt_ref.fetch_stats().failures >= 1
    })
    .await;
    assert!(!jwt.is_ready());
    let refusal = assert_unavailable(
        front.bearer(&key.sign(&claims("early"))).await,
        "keys_unavailable",
    )
    .await;
    assert_eq!(refusal.retry_after.as_deref(), Some("1"));
    assert!(refusal.challenges.is_empty(), "{:?}", refusal.challenges);
    assert_eq!(front.hits(), 0);

    // The provider recovers: the retry loads the keys.
    server.set_keys(jwks(&[&key]));
    wait_ready(&jwt).await;
    assert!(layer.is_ready());
    let res = front.bearer(&key.sign(&claims("late"))).await;
    tollgate_tests::auth_support::echo_of(res).await;
}

#[tokio::test]
async fn random_unknown_kids_cause_at_most_one_fetch_per_interval() {
    let min_refetch = Duration::from_millis(400);
    let Serving { server, front, .. } = serving(
        Signer::fresh_es256("k1"),
        Duration::from_secs(60),
        min_refetch,
    )
    .await;
    let initial = server.hits();
    assert_eq!(initial, 1);

    let start = Instant::now();
    let mut sent = 0u32;
    while start.elapsed() < Duration::from_millis(1200) {
        let token = Signer::fresh_es256(&format!("random-{sent}")).sign(&claims("x"));
        assert_invalid_token(front.bearer(&token).await, "unknown_key").await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    let refetches = server.hits() - initial;
    // One per started interval, plus one that may be starting right now.
    let allowed = (elapsed.as_millis() / min_refetch.as_millis()) as usize + 2;
    assert!(
        refetches <= allowed,
        "{sent} unknown kids caused {refetches} fetches in {elapsed:?} (at most {allowed})"
    );
    assert!(sent >= 20, "only {sent} requests were sent");
    let server_ref = &server;
    eventually("an unknown kid causes a refetch", move || async move {
        server_ref.hits() > initial
    })
    .await;
}

#[tokio::test]
async fn oidc_discovery_finds_the_jwks() {
    let key = Signer::fresh_es256("k1");
    let server = JwksServer::start(JwksMode::Keys(jwks(&[&key]))).await;
    let issuer = Issuer::new(server.base())
        .discover()
        .algorithms(family(Algorithm::ES256));
    let jwt = builder(issuer, Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .unwrap();
    let front = front_for(&jwt).await;
    wait_ready(&jwt).await;
    assert_eq!(server.discovery_hits(), 1);
    assert_eq!(server.hits(), 1);

    let token = key.sign(&with(claims("alice"), "iss", json!(server.base())));
    let echo = tollgate_tests::auth_support::echo_of(front.bearer(&token).await).await;
    assert_eq!(echo.one("x-user-id").as_deref(), Some("alice"));
    // Discovery pins the issuer: a token naming another one is refused.
    assert_invalid_token(
        front.bearer(&key.sign(&claims("bob"))).await,
        "wrong_issuer",
    )
    .await;
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let key = Signer::fresh_es256("k1");
    let server = JwksServer::start(JwksMode::Keys(jwks(&[&key]))).await;
    server.set_discovery_issuer("https://evil.test");
    let issuer = Issuer::new(server.base())
        .discover()
        .algorithms(family(Algorithm::ES256));
    let jwt = builder(
        issuer,
        Duration::from_millis(100),
        Duration::from_millis(50),
    )
    .build()
    .unwrap();
    let front = front_for(&jwt).await;

    let jwt_ref = &jwt;
    eventually("discovery fails twice", move || async move {
        jwt_ref.fetch_stats().failures >= 2
    })
    .await;
    assert!(!jwt.is_ready());
    assert!(server.discovery_hits() >= 2);
    assert_eq!(server.hits(), 0, "keys were fetched from a foreign issuer");
    let token = key.sign(&with(claims("alice"), "iss", json!(server.base())));
    assert_unavailable(front.bearer(&token).await, "keys_unavailable").await;
}

#[tokio::test]
async fn jku_x5u_and_jwk_headers_are_never_followed() {
    let Serving { front, .. } = serving(
        Signer::fresh_es256("k1"),
        Duration::from_secs(60),
        Duration::from_millis(50),
    )
    .await;
    let attacker = Signer::fresh_es256("k1");
    let evil = JwksServer::start(JwksMode::Keys(jwks(&[&attacker]))).await;

    // Signed by the attacker, pointing at the attacker's key set.
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    header.jku = Some(evil.url());
    header.x5u = Some(evil.url());
    let token = attacker.sign_with_header(&header, &claims("mallory"));
    assert_invalid_token(front.bearer(&token).await, "bad_signature").await;

    // Carrying the attacker's key itself, under a kid nobody knows.
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    let attacker = attacker.kid("k-evil");
    header.kid = Some("k-evil".into());
    header.jwk = Some(serde_json::from_value(attacker.jwk()).unwrap());
    let token = attacker.sign_with_header(&header, &claims("mallory"));
    assert_invalid_token(front.bearer(&token).await, "unknown_key").await;
    // The same without a kid: the embedded key is still not used.
    header.kid = None;
    let token = attacker.sign_with_header(&header, &claims("mallory"));
    assert_invalid_token(front.bearer(&token).await, "bad_signature").await;

    assert_eq!(evil.hits(), 0, "a token header made the gateway fetch keys");
    assert_eq!(front.hits(), 0);
}
