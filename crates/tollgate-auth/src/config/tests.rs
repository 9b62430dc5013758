//! The configs read from JSON (TOML goes through the same derives).
#![cfg(feature = "serde")]

use std::time::Duration;

use http::Request;
use serde_json::json;
use tollgate_core::ConfigErrorKind;

use super::*;
use crate::Algorithm;

fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn parts(req: Request<()>) -> Parts {
    req.into_parts().0
}

fn hs256(secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn exp() -> u64 {
    crate::cache::now_unix() + 600
}

// --- JwtConfig ---

#[test]
fn jwt_defaults_are_the_builders() {
    let config: JwtConfig = parse(json!({})).unwrap();
    assert_eq!(config, JwtConfig::default());
    assert_eq!(config.sources, [TokenSourceConfig::Bearer]);
    assert_eq!(config.leeway, Duration::from_secs(60));
    assert_eq!(config.required_claims, ["exp"]);
    assert_eq!(
        config.cache,
        Some(CacheConfig {
            max_entries: 10_000,
            ttl: Duration::from_secs(300)
        })
    );
    assert_eq!(config.claims.scopes, ["scope", "scp"]);
    assert_eq!(config.refresh_interval, Duration::from_secs(300));
    assert_eq!(config.min_refetch_interval, Duration::from_secs(30));
    assert_eq!(config.fetch_timeout, Duration::from_secs(10));
    assert_eq!(config.max_token_len, 8 * 1024);
    assert!(!config.allow_insecure_http);
}

#[test]
fn jwt_every_field_is_read() {
    let config: JwtConfig = parse(json!({
        "issuers": [{
            "issuer": "https://id.example.com",
            "audiences": ["a", "b"],
            "algorithms": ["HS256", "RS256"],
            "keys": [
                { "secret": "s3cret", "kid": "k1", "algorithms": ["HS512"] },
                { "public_key_file": "/etc/key.pem" },
                { "public_key_pem": "-----BEGIN PUBLIC KEY-----" }
            ],
            "jwks": "{\"keys\": []}",
            "jwks_url": "https://id.example.com/jwks.json",
            "discovery": true
        }],
        "sources": ["bearer", { "header": "x-token" }, { "cookie": "session" }, { "query": "access_token" }],
        "leeway": "5s",
        "required_claims": ["exp", "sub"],
        "claims": { "scopes": ["scp"], "roles": ["realm_access.roles"], "consumer": ["azp"], "plan": ["tier"] },
        "cache": { "max_entries": 5, "ttl": "1m 30s" },
        "refresh_interval": "10m",
        "min_refetch_interval": 1,
        "fetch_timeout": "250ms",
        "allow_insecure_http": true,
        "max_token_len": 4096
    }))
    .unwrap();
    let issuer = &config.issuers[0];
    assert_eq!(issuer.issuer.as_deref(), Some("https://id.example.com"));
    assert_eq!(issuer.audiences, ["a", "b"]);
    assert_eq!(issuer.algorithms, [Algorithm::HS256, Algorithm::RS256]);
    assert_eq!(issuer.keys[0].secret, Some(Secret::new("s3cret")));
    assert_eq!(issuer.keys[0].kid.as_deref(), Some("k1"));
    assert_eq!(issuer.keys[0].algorithms, [Algorithm::HS512]);
    assert_eq!(
        issuer.keys[1].public_key_file.as_deref(),
        Some(std::path::Path::new("/etc/key.pem"))
    );
    assert!(issuer.keys[2].public_key_pem.is_some());
    assert_eq!(issuer.jwks.as_deref(), Some("{\"keys\": []}"));
    assert_eq!(
        issuer.jwks_url.as_ref().map(HttpUrl::as_str),
        Some("https://id.example.com/jwks.json")
    );
    assert!(issuer.discovery);
    assert_eq!(
        config.sources,
        [
            TokenSourceConfig::Bearer,
            TokenSourceConfig::Header("x-token".into()),
            TokenSourceConfig::Cookie("session".into()),
            TokenSourceConfig::Query("access_token".into()),
        ]
    );
    assert_eq!(config.leeway, Duration::from_secs(5));
    assert_eq!(config.required_claims, ["exp", "sub"]);
    assert_eq!(config.claims.roles, ["realm_access.roles"]);
    assert_eq!(config.claims.consumer, ["azp"]);
    assert_eq!(config.claims.plan, ["tier"]);
    assert_eq!(config.claims.scopes, ["scp"]);
    assert_eq!(
        config.cache,
        Some(CacheConfig {
            max_entries: 5,
            ttl: Duration::from_secs(90)
        })
    );
    assert_eq!(config.refresh_interval, Duration::from_secs(600));
    assert_eq!(config.min_refetch_interval, Duration::from_secs(1));
    assert_eq!(config.fetch_timeout, Duration::from_millis(250));
    assert!(config.allow_insecure_http);
    assert_eq!(config.max_token_len, 4096);
}

#[test]
fn jwt_cache_can_be_off() {
    for off in [json!("off"), json!(false)] {
        let config: JwtConfig = parse(json!({ "cache": off })).unwrap();
        assert_eq!(config.cache, None);
    }
    let err = parse::<JwtConfig>(json!({ "cache": true })).unwrap_err();
    assert!(err.contains("\"off\" or a table"), "{err}");
    let err = parse::<JwtConfig>(json!({ "cache": { "size": 1 } })).unwrap_err();
    assert!(err.contains("unknown field `size`"), "{err}");
}

#[test]
fn jwt_unknown_keys_and_bad_values_are_errors() {
    let err = parse::<JwtConfig>(json!({ "leway": "5s" })).unwrap_err();
    assert!(err.contains("unknown field `leway`"), "{err}");
    let err = parse::<JwtConfig>(json!({ "issuers": [{ "iss": "x" }] })).unwrap_err();
    assert!(err.contains("unknown field `iss`"), "{err}");
    let err = parse::<JwtConfig>(json!({ "issuers": [{ "keys": [{ "pem": "x" }] }] })).unwrap_err();
    assert!(err.contains("unknown field `pem`"), "{err}");
    let err = parse::<JwtConfig>(json!({ "issuers": [{ "algorithms": ["none"] }] })).unwrap_err();
    assert!(err.contains("unknown variant `none`"), "{err}");
    let err = parse::<JwtConfig>(json!({ "leeway": "soon" })).unwrap_err();
    assert!(err.contains("bad duration"), "{err}");
    let err = parse::<JwtConfig>(json!({ "sources": ["basic"] })).unwrap_err();
    assert!(err.contains("unknown variant `basic`"), "{err}");
    let err = parse::<JwtConfig>(json!({ "claims": { "subject": ["sub"] } })).unwrap_err();
    assert!(err.contains("unknown field `subject`"), "{err}");
}

#[test]
fn urls_are_checked_while_reading() {
    let err = parse::<IssuerConfig>(json!({ "jwks_url": "/jwks.json" })).unwrap_err();
    assert!(err.starts_with("relative URL without a base"), "{err}");
    let err = parse::<IssuerConfig>(json!({ "jwks_url": "ftp://x/jwks" })).unwrap_err();
    assert!(err.contains("unsupported URL scheme `ftp`"), "{err}");
    let err = "/x".parse::<HttpUrl>().unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::InvalidUrl);
    assert_eq!(err.to_string(), "relative URL without a base");
    let url = HttpUrl::try_from("https://id.example.com/jwks").unwrap();
    assert_eq!(String::from(url.clone()), "https://id.example.com/jwks");
    assert_eq!(url.to_string(), url.as_str());
}

#[test]
fn a_jwt_config_builds_a_working_authenticator() {
    let config: JwtConfig = parse(json!({
        "issuers": [{ "issuer": "me", "audiences": ["api"], "keys": [{ "secret": "s3cret", "kid": "k1" }] }],
        "sources": [{ "cookie": "session" }],
        "claims": { "plan": ["tier"] },
        "cache": "off"
    }))
    .unwrap();
    let jwt = JwtAuth::try_from(&config).unwrap();
    assert!(jwt.is_ready());
    let token = hs256(
        "s3cret",
        &json!({ "iss": "me", "aud": "api", "sub": "u1", "tier": "gold", "exp": exp() }),
    );
    let req = Request::get("/")
        .header("cookie", format!("session={token}"))
        .body(())
        .unwrap();
    let Verdict::Accept(identity) = jwt.authenticate(&parts(req)) else {
        panic!("the cookie's token is accepted");
    };
    assert_eq!(identity.subject.as_deref(), Some("u1"));
    assert_eq!(identity.plan.as_deref(), Some("gold"));
    // Only the cookie is a source now.
    let req = Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    assert!(matches!(jwt.authenticate(&parts(req)), Verdict::Absent));
    let other = hs256("other", &json!({ "iss": "me", "aud": "api", "exp": exp() }));
    assert!(matches!(
        jwt.verify(&other),
        Err(crate::AuthError::BadSignature)
    ));
}

#[test]
fn jwt_try_from_runs_the_builders_checks() {
    let build = |value| JwtAuth::try_from(&parse::<JwtConfig>(value).unwrap()).unwrap_err();
    let err = build(json!({}));
    assert!(err.to_string().contains("at least one issuer"), "{err}");
    let err = build(json!({ "issuers": [{ "issuer": "x" }] }));
    assert_eq!(
        err.to_string(),
        "issuers[0]: an issuer needs keys, a JWKS URL or discovery"
    );
    let err = build(json!({ "issuers": [{ "keys": [{}] }] }));
    assert_eq!(
        err.to_string(),
        "issuers[0]: keys[0]: a key needs exactly one of `secret`, `public_key_pem` and `public_key_file`"
    );
    let err =
        build(json!({ "issuers": [{ "keys": [{ "secret": "s", "public_key_file": "/k.pem" }] }] }));
    assert!(err.to_string().contains("exactly one of"), "{err}");
    let err = build(json!({ "issuers": [{ "keys": [{ "secret": "" }] }] }));
    assert_eq!(err.to_string(), "issuers[0]: keys[0]: `secret` is empty");
    let err =
        build(json!({ "issuers": [{ "keys": [{ "secret": "s", "algorithms": ["RS256"] }] }] }));
    assert!(
        err.to_string().contains("cannot be used with this key"),
        "{err}"
    );
    let err =
        build(json!({ "issuers": [{ "keys": [{ "public_key_file": "/nonexistent/key.pem" }] }] }));
    assert!(
        err.to_string().contains("cannot read /nonexistent/key.pem"),
        "{err}"
    );
    let err = build(json!({ "issuers": [{ "keys": [{ "public_key_pem": "not a pem" }] }] }));
    assert!(err.to_string().contains("`public_key_pem`"), "{err}");
    let err = build(json!({ "issuers": [{ "jwks": "{}" }] }));
    assert!(err.to_string().starts_with("issuers[0]: jwks: "), "{err}");
    let err = build(
        json!({ "issuers": [{ "issuer": "x", "jwks_url": "https://x/j", "discovery": true }] }),
    );
    assert!(err.to_string().contains("exclude each other"), "{err}");
    // Remote keys are fetched in the background, which needs a runtime.
    let err = build(json!({ "issuers": [{ "jwks_url": "https://id.example.com/jwks" }] }));
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    let err = build(
        json!({ "sources": [{ "header": "bad header" }], "issuers": [{ "keys": [{ "secret": "s" }] }] }),
    );
    assert_eq!(
        err.to_string(),
        "sources[0]: \"bad header\" is not a header name"
    );
    let err = build(json!({ "sources": [], "issuers": [{ "keys": [{ "secret": "s" }] }] }));
    assert!(err.to_string().contains("credential source"), "{err}");
    let err = build(
        json!({ "issuers": [{ "keys": [{ "secret": "s" }] }, { "issuer": "b", "keys": [{ "secret": "s" }] }] }),
    );
    assert!(err.to_string().contains("without `iss`"), "{err}");
}

// --- ApiKeyConfig ---

#[test]
fn api_key_defaults_and_fields() {
    let config: ApiKeyConfig = parse(json!({})).unwrap();
    assert_eq!(config, ApiKeyConfig::default());
    assert_eq!(config.header, "x-api-key");
    let config: ApiKeyConfig = parse(json!({
        "header": "x-key",
        "query": "api_key",
        "keys": [
            { "key": "k-1", "consumer": "partner", "plan": "gold", "scopes": ["a"], "roles": ["r"] },
            { "key_sha256": "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08", "consumer": "ci" }
        ]
    }))
    .unwrap();
    assert_eq!(config.keys[0].plan.as_deref(), Some("gold"));
    assert_eq!(config.keys[0].roles, ["r"]);
    let auth = ApiKeyAuth::try_from(&config).unwrap();
    let judge = |req: Request<()>| match auth.authenticate(&parts(req)) {
        Verdict::Accept(identity) => Some(identity),
        _ => None,
    };
    let id = judge(Request::get("/").header("x-key", "k-1").body(()).unwrap()).unwrap();
    assert_eq!(id.consumer.as_deref(), Some("partner"));
    assert_eq!(id.plan.as_deref(), Some("gold"));
    assert_eq!(&*id.scopes, [std::sync::Arc::from("a")]);
    // sha256("test")
    let id = judge(Request::get("/?api_key=test").body(()).unwrap()).unwrap();
    assert_eq!(id.consumer.as_deref(), Some("ci"));
    assert!(
        judge(
            Request::get("/")
                .header("x-api-key", "k-1")
                .body(())
                .unwrap()
        )
        .is_none()
    );
}

#[test]
fn api_key_secrets_stay_out_of_debug() {
    let config: ApiKeyConfig =
        parse(json!({ "keys": [{ "key": "hunter2", "consumer": "c" }] })).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("Secret(***)"), "{debug}");
}

#[test]
fn api_key_errors() {
    let err =
        parse::<ApiKeyConfig>(json!({ "keys": [{ "key": "k", "consumer": "c", "owner": "x" }] }))
            .unwrap_err();
    assert!(err.contains("unknown field `owner`"), "{err}");
    let build = |value| ApiKeyAuth::try_from(&parse::<ApiKeyConfig>(value).unwrap()).unwrap_err();
    let err = build(json!({ "keys": [{ "consumer": "c" }] }));
    assert_eq!(
        err.to_string(),
        "keys[0]: exactly one of `key` and `key_sha256` is needed"
    );
    let err = build(json!({ "keys": [{ "key": "k", "key_sha256": "00", "consumer": "c" }] }));
    assert!(err.to_string().contains("exactly one of"), "{err}");
    let err = build(json!({ "keys": [{ "key_sha256": "abc", "consumer": "c" }] }));
    assert!(
        err.to_string()
            .starts_with("keys[0]: an API key hash is 64 hex"),
        "{err}"
    );
    let err = build(json!({ "keys": [{ "key": "k", "consumer": "" }] }));
    assert_eq!(err.kind(), ConfigErrorKind::Missing);
    let err = build(json!({ "keys": [{ "key": "", "consumer": "c" }] }));
    assert_eq!(err.to_string(), "keys[0]: `key` is empty");
    let err = build(json!({ "keys": [
        { "key": "test", "consumer": "a" },
        { "key_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "consumer": "b" }
    ] }));
    assert_eq!(err.kind(), ConfigErrorKind::Duplicate);
    assert_eq!(err.to_string(), "keys[1]: the same key as an earlier entry");
    let err = build(json!({ "header": "" }));
    assert!(err.to_string().starts_with("header: "), "{err}");
    let err = build(json!({ "query": "" }));
    assert!(err.to_string().contains("empty"), "{err}");
}

// --- IntrospectionConfig ---

#[test]
fn introspection_defaults_fields_and_errors() {
    let config: IntrospectionConfig = parse(json!({
        "endpoint": "https://id.example.com/introspect",
        "client_id": "gw",
        "client_secret": "s"
    }))
    .unwrap();
    assert_eq!(
        config,
        IntrospectionConfig::new(
            "https://id.example.com/introspect".parse().unwrap(),
            "gw",
            Secret::new("s")
        )
    );
    assert_eq!(config.cache_ttl, Duration::from_secs(60));
    assert_eq!(config.negative_cache_ttl, Duration::from_secs(10));
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(config.max_cache_entries, 10_000);
    assert!(Introspection::try_from(&config).is_ok());

    let config: IntrospectionConfig = parse(json!({
        "endpoint": "http://id.internal/introspect",
        "client_id": "gw",
        "client_secret": "s",
        "cache_ttl": "2m",
        "negative_cache_ttl": "1s",
        "max_cache_entries": 3,
        "timeout": "750ms",
        "max_token_len": 100,
        "allow_insecure_http": true
    }))
    .unwrap();
    assert_eq!(config.cache_ttl, Duration::from_secs(120));
    assert_eq!(config.negative_cache_ttl, Duration::from_secs(1));
    assert_eq!(config.max_cache_entries, 3);
    assert_eq!(config.timeout, Duration::from_millis(750));
    assert_eq!(config.max_token_len, 100);
    assert!(Introspection::try_from(&config).is_ok());
    let mut plain = config;
    plain.allow_insecure_http = false;
    assert!(
        Introspection::try_from(&plain).is_err(),
        "plain HTTP refused"
    );
    plain.allow_insecure_http = true;
    plain.client_id.clear();
    let err = Introspection::try_from(&plain).unwrap_err();
    assert!(err.to_string().contains("client credentials"), "{err}");

    let err = parse::<IntrospectionConfig>(json!({ "client_id": "gw", "client_secret": "s" }))
        .unwrap_err();
    assert!(err.contains("missing field `endpoint`"), "{err}");
    let err = parse::<IntrospectionConfig>(json!({
        "endpoint": "introspect", "client_id": "gw", "client_secret": "s"
    }))
    .unwrap_err();
    assert!(err.starts_with("relative URL without a base"), "{err}");
    let err = parse::<IntrospectionConfig>(json!({
        "endpoint": "https://x/i", "client_id": "gw", "client_secret": "s", "ttl": "1s"
    }))
    .unwrap_err();
    assert!(err.contains("unknown field `ttl`"), "{err}");
}

// --- ProviderConfig ---

#[test]
fn providers_are_tagged_by_type_and_keep_unknown_keys_errors() {
    let jwt: ProviderConfig =
        parse(json!({ "type": "jwt", "issuers": [{ "keys": [{ "secret": "s" }] }] })).unwrap();
    assert!(matches!(jwt, ProviderConfig::Jwt(_)));
    let keys: ProviderConfig = parse(json!({ "keys": [], "type": "api_key" })).unwrap();
    assert_eq!(keys, ProviderConfig::ApiKey(ApiKeyConfig::default()));
    let intro: ProviderConfig = parse(json!({
        "type": "introspection", "endpoint": "https://x/i", "client_id": "c", "client_secret": "s"
    }))
    .unwrap();
    assert!(matches!(intro, ProviderConfig::Introspection(_)));

    let err = parse::<ProviderConfig>(json!({ "type": "jwt", "issuer": [] })).unwrap_err();
    assert!(err.contains("unknown field `issuer`"), "{err}");
    let err = parse::<ProviderConfig>(json!({ "type": "api_key", "header": "x", "secret": 1 }))
        .unwrap_err();
    assert!(err.contains("unknown field `secret`"), "{err}");
    let err = parse::<ProviderConfig>(json!({ "type": "saml" })).unwrap_err();
    assert!(err.contains("unknown variant `saml`"), "{err}");
    let err = parse::<ProviderConfig>(json!({ "keys": [] })).unwrap_err();
    assert!(err.contains("missing field `type`"), "{err}");
    let err = parse::<ProviderConfig>(json!({
        "type": "introspection", "endpoint": "/i", "client_id": "c", "client_secret": "s"
    }))
    .unwrap_err();
    assert!(err.contains("relative URL without a base"), "{err}");
}

#[test]
fn built_providers_delegate() {
    let jwt = parse::<ProviderConfig>(
        json!({ "type": "jwt", "issuers": [{ "keys": [{ "secret": "s" }] }] }),
    )
    .unwrap()
    .build()
    .unwrap();
    assert!(jwt.is_ready());
    assert_eq!(Authenticator::scheme(&jwt), Scheme::Bearer);
    assert_eq!(jwt.credential_sources(), [CredentialSource::Bearer]);
    let keys = parse::<ProviderConfig>(
        json!({ "type": "api_key", "keys": [{ "key": "k", "consumer": "c" }] }),
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(Authenticator::scheme(&keys), Scheme::ApiKey);
    let req = Request::get("/").header("x-api-key", "k").body(()).unwrap();
    assert!(matches!(keys.authenticate(&parts(req)), Verdict::Accept(_)));
    let err = parse::<ProviderConfig>(json!({ "type": "jwt" }))
        .unwrap()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("at least one issuer"), "{err}");
}

// --- AuthPolicyConfig ---

fn providers() -> impl Fn(&str) -> Option<Provider> {
    let keys = parse::<ProviderConfig>(
        json!({ "type": "api_key", "keys": [{ "key": "k", "consumer": "c", "scopes": ["a"] }] }),
    )
    .unwrap()
    .build()
    .unwrap();
    let jwt = parse::<ProviderConfig>(
        json!({ "type": "jwt", "issuers": [{ "keys": [{ "secret": "s" }] }] }),
    )
    .unwrap()
    .build()
    .unwrap();
    move |name| match name {
        "keys" => Some(keys.clone()),
        "jwt" => Some(jwt.clone()),
        _ => None,
    }
}

#[test]
fn policy_defaults_and_fields() {
    let policy: AuthPolicyConfig = parse(json!({ "providers": ["jwt"] })).unwrap();
    assert_eq!(policy, AuthPolicyConfig::new(["jwt"]));
    assert!(!policy.optional && !policy.keep_credentials);
    assert_eq!(policy.forward_identity, None);
    let layer = policy.build(providers()).unwrap();
    assert!(layer.identity_header_names().is_empty());
    assert!(layer.is_ready());

    let policy: AuthPolicyConfig = parse(json!({
        "providers": ["jwt", "keys"],
        "optional": true,
        "require_scopes": ["a", "b"],
        "require_roles": { "any": ["admin", "ops"] },
        "forward_identity": { "subject": "x-sub", "roles": "x-roles", "plan": "x-plan" },
        "keep_credentials": true
    }))
    .unwrap();
    assert_eq!(
        policy.require_scopes,
        Some(RequirementConfig::All(vec!["a".into(), "b".into()]))
    );
    assert_eq!(
        policy.require_roles,
        Some(RequirementConfig::Any(vec!["admin".into(), "ops".into()]))
    );
    let headers = policy.forward_identity.clone().unwrap();
    assert_eq!(headers.subject.as_deref(), Some("x-sub"));
    assert_eq!(headers.consumer, None);
    let layer = policy.build(providers()).unwrap();
    let names: Vec<_> = layer
        .identity_header_names()
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
    assert_eq!(names, ["x-sub", "x-roles", "x-plan"]);

    let all: AuthPolicyConfig =
        parse(json!({ "providers": ["jwt"], "require_scopes": { "all": ["a"] } })).unwrap();
    assert_eq!(
        all.require_scopes,
        Some(RequirementConfig::All(vec!["a".into()]))
    );
    let on: AuthPolicyConfig =
        parse(json!({ "providers": ["jwt"], "forward_identity": true })).unwrap();
    assert_eq!(on.forward_identity, Some(IdentityHeadersConfig::default()));
    let names = on.build(providers()).unwrap().identity_header_names();
    assert_eq!(
        names,
        IdentityHeaders::default()
            .names()
            .cloned()
            .collect::<Vec<_>>()
    );
    let off: AuthPolicyConfig =
        parse(json!({ "providers": ["jwt"], "forward_identity": false })).unwrap();
    assert_eq!(off.forward_identity, None);
}

#[test]
fn policy_errors() {
    let err = parse::<AuthPolicyConfig>(json!({ "provider": ["jwt"] })).unwrap_err();
    assert!(err.contains("unknown field `provider`"), "{err}");
    let err =
        parse::<AuthPolicyConfig>(json!({ "require_scopes": { "some": ["a"] } })).unwrap_err();
    assert!(err.contains("unknown variant `some`"), "{err}");
    let err = parse::<AuthPolicyConfig>(json!({ "require_scopes": "a" })).unwrap_err();
    assert!(err.contains("a list (all of them)"), "{err}");
    let err =
        parse::<AuthPolicyConfig>(json!({ "forward_identity": { "user": "x" } })).unwrap_err();
    assert!(err.contains("unknown field `user`"), "{err}");
    let err = parse::<AuthPolicyConfig>(json!({ "forward_identity": "yes" })).unwrap_err();
    assert!(err.contains("true, false or a table"), "{err}");

    let err = AuthPolicyConfig::default().build(providers()).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Missing);
    assert!(err.to_string().contains("at least one provider"), "{err}");
    let err = AuthPolicyConfig::new(["jwt", "ldap"])
        .build(providers())
        .unwrap_err();
    assert_eq!(err.to_string(), "unknown auth provider \"ldap\"");
    let mut bad = AuthPolicyConfig::new(["jwt"]);
    bad.forward_identity = Some(IdentityHeadersConfig {
        subject: Some("bad name".into()),
        ..IdentityHeadersConfig::none()
    });
    let err = bad.build(providers()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "forward_identity: subject: \"bad name\" is not a header name"
    );
}

#[tokio::test]
async fn a_policy_layer_checks_requirements() {
    use tower::{ServiceExt, service_fn};

    let policy: AuthPolicyConfig = parse(json!({
        "providers": ["keys"],
        "require_scopes": { "any": ["a", "z"] },
        "require_roles": ["admin"]
    }))
    .unwrap();
    let layer = policy.build(providers()).unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_req: Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        }));
    let res = svc
        .clone()
        .oneshot(
            Request::get("/")
                .header("x-api-key", "k")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        http::StatusCode::FORBIDDEN,
        "the role is missing"
    );
    let res = svc
        .oneshot(Request::get("/").body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::UNAUTHORIZED);
}

// --- TOML, as the gateway reads it ---

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    providers: std::collections::BTreeMap<String, ProviderConfig>,
}

/// The key path and the message of a TOML file's error.
fn toml_error(text: &str) -> (String, String) {
    let de = toml::Deserializer::parse(text).unwrap();
    let err = serde_path_to_error::deserialize::<_, File>(de).unwrap_err();
    (err.path().to_string(), err.inner().to_string())
}

#[test]
fn toml_errors_keep_the_key_path_and_line() {
    let (path, message) = toml_error(
        r#"
[providers.users]
type = "jwt"
leeway = "30s"
[[providers.users.issuers]]
issuer = "https://id.example.com"
jwks_url = "/jwks.json"
"#,
    );
    assert_eq!(path, "providers.users.issuers[0].jwks_url");
    assert!(message.contains("line 7"), "{message}");
    assert!(message.contains("relative URL without a base"), "{message}");

    let (path, message) = toml_error(
        r#"
[providers.intro]
type = "introspection"
endpoint = "https://x/i"
client_id = "c"
client_secret = "s"
cache_tll = "1s"
"#,
    );
    assert_eq!(path, "providers.intro.cache_tll");
    assert!(message.contains("line 7"), "{message}");
    assert!(message.contains("unknown field `cache_tll`"), "{message}");

    // Once the kind is known, an unknown key is the variant's own error.
    let (path, message) = toml_error("[providers.k]\ntype = \"api_key\"\nkeys = []\nzz = 1\n");
    assert_eq!(path, "providers.k.zz");
    assert!(message.contains("line 4"), "{message}");
    assert!(
        message.contains("unknown field `zz`, expected one of `header`"),
        "{message}"
    );
}

#[test]
fn keys_before_the_type_still_count() {
    let file: File = toml::from_str(
        r#"
[providers.keys]
header = "x-key"
type = "api_key"
keys = [{ key = "k", consumer = "c" }]
"#,
    )
    .unwrap();
    let ProviderConfig::ApiKey(config) = &file.providers["keys"] else {
        panic!("an api_key provider");
    };
    assert_eq!(config.header, "x-key");
    assert_eq!(config.keys.len(), 1);
    // Errors in buffered keys lose the position, not the error.
    let (path, message) = toml_error("[providers.k]\nheder = \"x\"\ntype = \"api_key\"\n");
    assert_eq!(path, "providers.k.heder");
    assert!(message.contains("unknown field `heder`"), "{message}");
    let (path, message) = toml_error("[providers.k]\nheader = \"x\"\ntype = \"jwt\"\n");
    assert_eq!(path, "providers.k");
    assert!(
        message.contains("`type` is `jwt` but the table has keys of `api_key`"),
        "{message}"
    );
    let (_, message) = toml_error("[providers.k]\nheader = \"x\"\n");
    assert!(message.contains("missing field `type`"), "{message}");
    let (_, message) = toml_error("[providers.k]\nallow_insecure_http = \"yes\"\ntype = \"jwt\"\n");
    assert!(message.contains("invalid type"), "{message}");
}
