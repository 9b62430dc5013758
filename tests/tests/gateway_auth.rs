//! Auth through the `Gateway` builder: `Route::auth`, per-route layers in
//! order, and identity headers stripped on every route.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns fail the test by panicking"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use http::{Request, StatusCode};
use serde_json::{Value, json};
use tollgate::{
    Gateway, Route, Upstream,
    auth::{AuthLayer, IdentityHeaders, Issuer, JwtAuth, JwtKey, Requirement},
    core::problem::{FORBIDDEN, UNAUTHORIZED},
};
use tollgate_tests::{
    assert_problem, body_json, client, echo_router, empty, spawn_gateway, spawn_upstream,
};

const SECRET: &str = "gateway-auth-test-secret-of-some-length";

fn token(scope: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u-7", "scope": scope, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn auth() -> AuthLayer {
    let jwt = JwtAuth::builder()
        .issuer(Issuer::any().key(JwtKey::hmac(SECRET)))
        .build()
        .unwrap();
    AuthLayer::new(jwt)
        .require_scopes(Requirement::all(["orders:read"]))
        .forward_identity(IdentityHeaders::default())
}

async fn get(url: String, headers: &[(&str, &str)]) -> http::Response<hyper::body::Incoming> {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    client().request(req.body(empty()).unwrap()).await.unwrap()
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

#[tokio::test]
async fn a_route_with_auth_checks_and_forwards_the_identity() {
    let upstream = spawn_upstream(echo_router()).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(
            Route::prefix("/api/orders")
                .name("orders")
                .replace_prefix("/orders")
                .auth(auth())
                .to("svc"),
        )
        .route(Route::prefix("/public").name("public").to("svc"))
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;

    let res = get(gw.url("/api/orders/1"), &[]).await;
    let problem = assert_problem(res, 401, UNAUTHORIZED).await;
    assert_eq!(problem["reason"], "missing");
    // The path the client sent, not the rewritten one.
    assert_eq!(problem["instance"], "/api/orders/1");

    let bearer = format!("Bearer {}", token("orders:read"));
    let res = get(
        gw.url("/api/orders/1"),
        &[("authorization", &bearer), ("x-user-id", "admin")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let echo = body_json(res).await;
    assert_eq!(header(&echo, "x-user-id"), Some("u-7"), "{echo}");
    assert_eq!(header(&echo, "x-scopes"), Some("orders:read"), "{echo}");
    assert_eq!(header(&echo, "authorization"), None, "{echo}");

    let bearer = format!("Bearer {}", token("profile"));
    let res = get(gw.url("/api/orders/1"), &[("authorization", &bearer)]).await;
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"tollgate\", error=\"insufficient_scope\", error_description=\"insufficient_scope\", scope=\"orders:read\""
    );
    assert_problem(res, 403, FORBIDDEN).await;
}

#[tokio::test]
async fn forged_identity_headers_are_stripped_on_routes_without_auth() {
    let upstream = spawn_upstream(echo_router()).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(Route::prefix("/orders").auth(auth()).to("svc"))
        .route(Route::prefix("/public").to("svc"))
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;
    let res = get(
        gw.url("/public/x"),
        &[
            ("x-user-id", "admin"),
            ("x-consumer", "root"),
            ("x-scopes", "orders:write"),
            ("x-other", "kept"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let echo = body_json(res).await;
    assert_eq!(header(&echo, "x-user-id"), None, "{echo}");
    assert_eq!(header(&echo, "x-consumer"), None, "{echo}");
    assert_eq!(header(&echo, "x-scopes"), None, "{echo}");
    assert_eq!(header(&echo, "x-other"), Some("kept"), "{echo}");
}

#[tokio::test]
async fn without_forwarding_no_header_is_stripped() {
    let upstream = spawn_upstream(echo_router()).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(Route::prefix("/public").to("svc"))
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;
    let echo = body_json(get(gw.url("/public"), &[("x-user-id", "7")]).await).await;
    assert_eq!(header(&echo, "x-user-id"), Some("7"), "{echo}");
}

/// A per-route layer runs after auth: it sees the identity.
#[tokio::test]
async fn route_layers_run_after_auth() {
    use tollgate::core::{Identity, OnRequest, RequestHook};

    #[derive(Clone)]
    struct Tag;
    impl RequestHook for Tag {
        fn on_request<B>(&self, req: &mut Request<B>) {
            let seen = req
                .extensions()
                .get::<Identity>()
                .and_then(|i| i.subject.as_deref())
                .unwrap_or("none")
                .to_owned();
            if let Ok(value) = http::HeaderValue::try_from(seen) {
                req.headers_mut().insert("x-layer-saw", value);
            }
        }
    }

    let upstream = spawn_upstream(echo_router()).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(
            Route::prefix("/orders")
                .auth(auth())
                .layer(tower::layer::layer_fn(|inner| OnRequest::new(inner, Tag)))
                .to("svc"),
        )
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;
    let bearer = format!("Bearer {}", token("orders:read"));
    let echo = body_json(get(gw.url("/orders"), &[("authorization", &bearer)]).await).await;
    assert_eq!(header(&echo, "x-layer-saw"), Some("u-7"), "{echo}");
}
