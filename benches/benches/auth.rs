//! The cost of authenticating one request (issue #4): JWT verification for
//! every algorithm without the cache, a cache hit, and an API-key lookup.
//! Targets: a cache hit under 300 ns, HS256 uncached under 3 µs, an API
//! key under 200 ns.
//!
//! `cargo bench -p tollgate-benches --bench auth`

#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]

use std::{
    hint::black_box,
    time::{SystemTime, UNIX_EPOCH},
};

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, SignatureAlgorithm};
use tollgate::auth::{
    ApiKeyAuth, Authenticator, Consumer, Issuer, JwtAuth, JwtKey, MemoryApiKeyStore, Verdict,
};

/// A signing key and the verification key that goes with it.
fn keys(alg: Algorithm) -> (EncodingKey, JwtKey) {
    let asymmetric = |kind: &'static SignatureAlgorithm| {
        let pair = KeyPair::generate_for(kind).expect("key generation");
        (pair.serialize_pem(), pair.public_key_pem())
    };
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = b"a-bench-secret-that-is-long-enough-for-hs512-keys-0123456789";
            (EncodingKey::from_secret(secret), JwtKey::hmac(secret))
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let (private, public) = asymmetric(&rcgen::PKCS_RSA_SHA256);
            (
                EncodingKey::from_rsa_pem(private.as_bytes()).expect("rsa key"),
                JwtKey::rsa_pem(public).expect("rsa public key"),
            )
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let kind = if alg == Algorithm::ES256 {
                &rcgen::PKCS_ECDSA_P256_SHA256
            } else {
                &rcgen::PKCS_ECDSA_P384_SHA384
            };
            let (private, public) = asymmetric(kind);
            (
                EncodingKey::from_ec_pem(private.as_bytes()).expect("ec key"),
                JwtKey::ec_pem(public).expect("ec public key"),
            )
        }
        // EdDSA, the last of the list.
        _ => {
            let (private, public) = asymmetric(&rcgen::PKCS_ED25519);
            (
                EncodingKey::from_ed_pem(private.as_bytes()).expect("ed key"),
                JwtKey::ed_pem(public).expect("ed public key"),
            )
        }
    }
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://id.example.com",
        "aud": "api",
        "sub": "user-12345",
        "scope": "orders:read orders:write profile",
        "iat": now,
        "exp": now + 3600,
    });
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("token")
}

fn jwt(key: JwtKey, cached: bool) -> JwtAuth {
    let builder = JwtAuth::builder().issuer(
        Issuer::new("https://id.example.com")
            .audience("api")
            .key(key),
    );
    let builder = if cached { builder } else { builder.no_cache() };
    builder.build().expect("jwt auth")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("auth");
    for alg in tollgate::auth::ALGORITHMS {
        let (signing, verifying) = keys(alg);
        let token = token(alg, &signing);
        let auth = jwt(verifying, false);
        auth.verify(&token).expect("the bench token verifies");
        group.bench_function(format!("jwt_uncached/{alg:?}"), |b| {
            b.iter(|| auth.verify(black_box(&token)));
        });
    }

    let (signing, verifying) = keys(Algorithm::RS256);
    let token = token(Algorithm::RS256, &signing);
    let cached = jwt(verifying, true);
    assert!(cached.verify(&token).is_ok());
    group.bench_function("jwt_cache_hit/RS256", |b| {
        b.iter(|| cached.verify(black_box(&token)));
    });

    // The whole method as the layer calls it: header lookup, hash, store.
    let store = MemoryApiKeyStore::new();
    for i in 0..10_000 {
        store.insert(&format!("key-{i:08}"), Consumer::new(format!("c{i}")));
    }
    store.insert(
        "tg_live_3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c1e",
        Consumer::new("partner").plan("standard"),
    );
    let api_key = ApiKeyAuth::new(store);
    let (parts, ()) = Request::get("/orders")
        .header("x-api-key", "tg_live_3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c1e")
        .body(())
        .expect("request")
        .into_parts();
    assert!(matches!(api_key.authenticate(&parts), Verdict::Accept(_)));
    group.bench_function("api_key/10k_keys", |b| {
        b.iter(|| api_key.authenticate(black_box(&parts)));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
