//! Rate limits and in-flight limits through the `Gateway` builder, and the
//! metrics the auth and rate-limit rejections feed.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns fail the test by panicking"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{Router, routing};
use http::{Request, StatusCode};
use serde_json::json;
use tollgate::{
    Gateway, Route, Upstream,
    auth::{ApiKeyAuth, AuthLayer, Consumer, Issuer, JwtAuth, JwtKey, MemoryApiKeyStore},
    core::problem::{RATE_LIMITED, SERVICE_UNAVAILABLE, UNAUTHORIZED},
    observe::{Metrics, ObserveLayer},
    ratelimit::{ConcurrencyLimitLayer, Key, Plan, Quota, RateLimitLayer},
};
use tollgate_tests::{
    assert_problem, client, echo_router, empty,
    observe_support::{parse_exposition, value},
    spawn_gateway, spawn_upstream,
};

const SECRET: &str = "gateway-policies-test-secret-0123456789";

fn auth() -> AuthLayer {
    let keys = MemoryApiKeyStore::new();
    keys.insert("k-free", Consumer::new("free-app").plan("free"));
    keys.insert("k-partner", Consumer::new("partner-app").plan("partner"));
    let jwt = JwtAuth::builder()
        .issuer(Issuer::any().key(JwtKey::hmac(SECRET)))
        .build()
        .unwrap();
    AuthLayer::new(jwt).or(ApiKeyAuth::new(keys))
}

fn plans() -> RateLimitLayer {
    RateLimitLayer::builder()
        .key(Key::consumer().or(Key::client_ip()))
        .plan(Plan::new("free").quota(Quota::per_minute(2).burst(2)))
        .plan(Plan::unlimited("partner"))
        .default_plan("free")
        .build()
        .unwrap()
}

async fn get(url: String, headers: &[(&str, &str)]) -> http::Response<hyper::body::Incoming> {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    client().request(req.body(empty()).unwrap()).await.unwrap()
}

/// The route's rate limit runs after its auth, so the quota follows the
/// consumer's plan; rejections are counted by plan and by reason.
#[tokio::test]
async fn route_rate_limits_follow_the_plan_and_are_counted() {
    let upstream = spawn_upstream(echo_router()).await;
    let metrics = Metrics::new();
    let router = Gateway::builder()
        .observe(ObserveLayer::with_metrics(metrics.clone()))
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(
            Route::prefix("/orders")
                .name("orders")
                .auth(auth())
                .rate_limit(plans())
                .to("svc"),
        )
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;

    for _ in 0..2 {
        let res = get(gw.url("/orders"), &[("x-api-key", "k-free")]).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = get(gw.url("/orders"), &[("x-api-key", "k-free")]).await;
    assert!(res.headers().contains_key("retry-after"));
    let problem = assert_problem(res, 429, RATE_LIMITED).await;
    assert_eq!(problem["plan"], "free", "{problem}");
    // The partner plan is unlimited.
    for _ in 0..5 {
        let res = get(gw.url("/orders"), &[("x-api-key", "k-partner")]).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    // Auth runs first: a bad key never reaches the limiter.
    let res = get(gw.url("/orders"), &[("x-api-key", "k-nope")]).await;
    assert_problem(res, 401, UNAUTHORIZED).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "x", "exp": now - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let res = get(
        gw.url("/orders"),
        &[("authorization", &format!("Bearer {expired}"))],
    )
    .await;
    assert_problem(res, 401, UNAUTHORIZED).await;

    let samples = parse_exposition(&metrics.render());
    assert_eq!(
        value(&samples, "tollgate_rate_limited_total", &[("plan", "free")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "tollgate_auth_failures_total",
            &[("reason", "invalid_api_key")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "tollgate_auth_failures_total",
            &[("reason", "expired")]
        ),
        Some(1.0)
    );
}

/// One gateway-wide limit: every route counts against the same quota.
#[tokio::test]
async fn a_gateway_rate_limit_is_shared_by_every_route() {
    let upstream = spawn_upstream(echo_router()).await;
    let router = Gateway::builder()
        .rate_limit(
            RateLimitLayer::builder()
                .key(Key::client_ip())
                .quota(Quota::per_minute(3).burst(3))
                .build()
                .unwrap(),
        )
        .client_ip(tollgate::request_id::ClientIpLayer::peer_only())
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(Route::prefix("/a").to("svc"))
        .route(Route::prefix("/b").to("svc"))
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;
    for path in ["/a", "/b", "/a"] {
        assert_eq!(get(gw.url(path), &[]).await.status(), StatusCode::OK);
    }
    assert_problem(get(gw.url("/b"), &[]).await, 429, RATE_LIMITED).await;
}

/// Past the in-flight cap a route answers 503 at once, before auth.
#[tokio::test]
async fn the_in_flight_limit_sheds_load_before_auth() {
    let slow = Router::new().route(
        "/slow",
        routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "done"
        }),
    );
    let upstream = spawn_upstream(slow).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(
            Route::prefix("/slow")
                .concurrency_limit(ConcurrencyLimitLayer::new(1).unwrap())
                .auth(auth())
                .to("svc"),
        )
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;
    let first = tokio::spawn(get(gw.url("/slow"), &[("x-api-key", "k-partner")]));
    // Wait until the first request holds the only slot.
    let mut shed = None;
    for _ in 0..100 {
        // No credentials: a 401 means auth ran, a 503 that the cap did first.
        let res = get(gw.url("/slow"), &[]).await;
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some(res);
            break;
        }
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let res = shed.expect("a request past the cap was shed");
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, 503, SERVICE_UNAVAILABLE).await;
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
}

/// A route layer whose service is not ready until a gate opens: its
/// readiness is awaited with the request's task waker, and the request
/// goes through once the gate opens. (The route's stack asks every layer
/// for readiness once without a waker, then falls back to waiting.)
#[tokio::test]
async fn a_route_layer_that_is_not_ready_at_once_is_awaited() {
    use std::{
        convert::Infallible,
        sync::{Arc, Mutex},
        task::{Context, Poll, Waker},
    };

    use tower::Service;

    /// Open or not, and the waker of whoever waits.
    #[derive(Default)]
    struct Gate {
        open: bool,
        waiting: Option<Waker>,
    }

    #[derive(Clone)]
    struct Gated<S> {
        inner: S,
        gate: Arc<Mutex<Gate>>,
    }

    impl<S, R> Service<R> for Gated<S>
    where
        S: Service<R, Error = Infallible>,
    {
        type Response = S::Response;
        type Error = Infallible;
        type Future = S::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            let mut gate = self.gate.lock().unwrap();
            if gate.open {
                return self.inner.poll_ready(cx);
            }
            gate.waiting = Some(cx.waker().clone());
            Poll::Pending
        }

        fn call(&mut self, req: R) -> S::Future {
            self.inner.call(req)
        }
    }

    let gate = Arc::new(Mutex::new(Gate::default()));
    let layer_gate = Arc::clone(&gate);
    let upstream = spawn_upstream(echo_router()).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(
            Route::prefix("/gated")
                .layer(tower::layer::layer_fn(move |inner| Gated {
                    inner,
                    gate: Arc::clone(&layer_gate),
                }))
                .to("svc"),
        )
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;

    let request = tokio::spawn(get(gw.url("/gated"), &[]));
    // The request waits at the gate: its readiness was asked with a waker.
    tokio::time::timeout(Duration::from_secs(5), async {
        while gate.lock().unwrap().waiting.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the request reaches the gate");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!request.is_finished(), "the request passed a closed gate");
    let waker = {
        let mut gate = gate.lock().unwrap();
        gate.open = true;
        gate.waiting.take()
    };
    waker.expect("a waker to wake").wake();
    let res = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the request goes through once the gate opens")
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
