//! The admin listener (issue #7): `/healthz`, `/readyz` with the auth,
//! upstream and Redis probes of a real gateway, `/metrics` and `/config`,
//! served with `tollgate::serve` on 127.0.0.1:0 and asked over HTTP.
//!
//! Every wait is a bounded poll, never a sleep that asserts timing.

#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns fail the test with a message"
)]

use std::time::Duration;

use http::{Request, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tollgate::{
    Gateway, GatewayBuilder, Health, Route, Upstream,
    admin::{Admin, ConfigSnapshot},
    auth::{Algorithm, AuthLayer, Issuer, JwtAuth},
    core::problem::ROUTE_NOT_FOUND,
    observe::{Metrics, ObserveLayer},
    ratelimit::{Quota, RateLimitLayer, RedisStore},
};
use tollgate_tests::{
    RunningGateway, assert_problem,
    auth_support::{ISSUER, JwksMode, JwksServer, Signer, eventually, family, jwks},
    body_bytes, body_json, client, echo_router, empty,
    redis_support::RedisServer,
    spawn_gateway, spawn_upstream,
};

/// `GET url`.
async fn get(url: &str) -> http::Response<Incoming> {
    let req = Request::get(url).body(empty()).expect("a request");
    client().request(req).await.expect("an answer")
}

/// `/readyz` of `admin`: the status and the JSON report.
async fn readyz(admin: &RunningGateway) -> (StatusCode, Value) {
    let res = get(&admin.url("/readyz")).await;
    let status = res.status();
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    (status, body_json(res).await)
}

/// The check called `name` in a `/readyz` report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name:?} in {report}"))
}

/// The names of the checks in a `/readyz` report.
fn names(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `/readyz` until it answers `want`, then returns the report.
async fn readyz_until(admin: &RunningGateway, want: StatusCode) -> Value {
    eventually(&format!("/readyz answers {want}"), move || async move {
        readyz(admin).await.0 == want
    })
    .await;
    let (status, report) = readyz(admin).await;
    assert_eq!(status, want, "{report}");
    report
}

/// An admin listener serving `health` only.
async fn admin_for(health: &Health) -> RunningGateway {
    spawn_gateway(Admin::new().health(health.clone()).router()).await
}

/// A port that was free a moment ago: connections to it are refused.
async fn closed_port() -> std::net::SocketAddr {
    let (listener, addr) = tollgate_tests::listener().await;
    drop(listener);
    addr
}

/// A gateway to an echo upstream called `users`, with `health`.
async fn gateway_to_users(health: &Health) -> GatewayBuilder {
    let users = spawn_upstream(echo_router()).await;
    Gateway::builder()
        .upstream(Upstream::builder("users").endpoint(format!("http://{users}")))
        .health(health.clone())
}

/// A config server with an admin listener and one route to an echo
/// upstream called `users`; `server` is more of its `[server]` table.
async fn config_server_to_users(server: &str) -> tollgate::config::Server {
    use tollgate::config::{ConfigFile, Server};

    let users = spawn_upstream(echo_router()).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"users\"\nendpoints = [\"http://{users}\"]\n\n\
         [[routes]]\nprefix = \"/\"\nto = \"users\"\n"
    );
    Server::start(ConfigFile::parse(&text).expect("parses"))
        .await
        .expect("starts")
}

#[tokio::test]
async fn healthz_is_ok_and_metrics_count_gateway_requests() {
    let metrics = Metrics::new();
    let gateway = gateway_to_users(&Health::new())
        .await
        .route(Route::prefix("/api").name("api").to("users"))
        .observe(ObserveLayer::with_metrics(metrics.clone()))
        .build()
        .expect("a gateway");
    let gateway = spawn_gateway(gateway).await;
    let admin = spawn_gateway(Admin::new().metrics(metrics).router()).await;

    let res = get(&admin.url("/healthz")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_bytes(res).await, "ok");

    let res = get(&gateway.url("/api/users/42")).await;
    assert_eq!(res.status(), StatusCode::OK);
    body_bytes(res).await;
    let res = get(&admin.url("/metrics")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|v| v.starts_with("application/openmetrics-text")),
        "{:?}",
        res.headers()
    );
    // The sample is recorded when the client's response ends: poll.
    let url = &admin.url("/metrics");
    eventually(
        "tollgate_requests_total for route api",
        move || async move {
            let text = String::from_utf8_lossy(&body_bytes(get(url).await).await).into_owned();
            text.lines()
                .any(|l| l.starts_with("tollgate_requests_total{") && l.contains("route=\"api\""))
        },
    )
    .await;

    // No readiness probes: ready, with no checks.
    let (status, report) = readyz(&admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report, json!({ "ready": true, "checks": [] }));
}

#[tokio::test]
async fn readyz_is_503_until_the_jwks_keys_load() {
    let server = JwksServer::start(JwksMode::Status500).await;
    let jwt = JwtAuth::builder()
        .issuer(
            Issuer::new(ISSUER)
                .jwks_url(server.url())
                .algorithms(family(Algorithm::ES256)),
        )
        .refresh_interval(Duration::from_millis(100))
        .min_refetch_interval(Duration::from_millis(50))
        .build()
        .expect("a JWT layer");
    let health = Health::new();
    let _gateway = gateway_to_users(&health)
        .await
        .route(
            Route::prefix("/api")
                .name("api")
                .to("users")
                .auth(AuthLayer::new(jwt.clone())),
        )
        .build()
        .expect("a gateway");
    let admin = admin_for(&health).await;

    let (status, report) = readyz(&admin).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{report}");
    assert_eq!(report["ready"], false);
    assert_eq!(names(&report), ["upstream users", "auth api"]);
    assert_eq!(
        check(&report, "auth api"),
        &json!({ "name": "auth api", "ready": false, "detail": "keys not loaded" })
    );
    assert_eq!(
        check(&report, "upstream users"),
        &json!({ "name": "upstream users", "ready": true })
    );

    // Still not ready after a failed fetch.
    let jwt_ref = &jwt;
    eventually("a failed JWKS fetch", move || async move {
        jwt_ref.fetch_stats().failures >= 1
    })
    .await;
    assert_eq!(readyz(&admin).await.0, StatusCode::SERVICE_UNAVAILABLE);

    // The provider recovers: the next fetch loads the keys.
    server.set_keys(jwks(&[&Signer::fresh_es256("k1")]));
    let report = readyz_until(&admin, StatusCode::OK).await;
    assert_eq!(report["ready"], true);
    assert_eq!(check(&report, "auth api")["ready"], true);
}

#[tokio::test]
async fn readyz_is_503_while_the_redis_of_a_rate_limit_is_down() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::open(&redis.url())
        .expect("a Redis URL")
        .timeout(Duration::from_millis(300))
        .retry_every(Duration::from_millis(50));
    let limit = RateLimitLayer::builder()
        .name("shared")
        .quota(Quota::per_second(1000))
        .store(store)
        .build()
        .expect("a rate limit");
    let in_memory = RateLimitLayer::per_key(Quota::per_second(1000)).expect("a rate limit");
    let health = Health::new();
    // The same layer gateway-wide and on a route: one check. The
    // in-memory one has nothing to reach: no check.
    let _gateway = gateway_to_users(&health)
        .await
        .rate_limit(limit.clone())
        .route(Route::prefix("/a").to("users").rate_limit(limit))
        .route(Route::prefix("/b").to("users").rate_limit(in_memory))
        .build()
        .expect("a gateway");
    let admin = admin_for(&health).await;

    let report = readyz_until(&admin, StatusCode::OK).await;
    assert_eq!(names(&report), ["upstream users", "redis shared"]);
    assert_eq!(check(&report, "redis shared")["ready"], true);

    redis.kill();
    let report = readyz_until(&admin, StatusCode::SERVICE_UNAVAILABLE).await;
    let redis_check = check(&report, "redis shared");
    assert_eq!(redis_check["ready"], false, "{report}");
    assert!(
        redis_check["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("redis: ")),
        "{report}"
    );
    assert_eq!(check(&report, "upstream users")["ready"], true);

    redis.restart();
    let report = readyz_until(&admin, StatusCode::OK).await;
    assert_eq!(check(&report, "redis shared")["ready"], true);
}

#[tokio::test]
async fn readyz_is_503_when_the_only_endpoint_of_an_upstream_cools_off() {
    let down = closed_port().await;
    let health = Health::new();
    let gateway = gateway_to_users(&health)
        .await
        .upstream(
            Upstream::builder("orders")
                .endpoint(format!("http://{down}"))
                // Long enough that the test never sees it end.
                .cooloff(Duration::from_secs(600)),
        )
        .route(Route::prefix("/users").to("users"))
        .route(Route::prefix("/orders").to("orders"))
        .build()
        .expect("a gateway");
    let gateway = spawn_gateway(gateway).await;
    let admin = admin_for(&health).await;

    // No connection was refused yet.
    let report = readyz_until(&admin, StatusCode::OK).await;
    assert_eq!(names(&report), ["upstream users", "upstream orders"]);

    let res = get(&gateway.url("/orders/1")).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let (status, report) = readyz(&admin).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{report}");
    let orders = check(&report, "upstream orders");
    assert_eq!(orders["ready"], false, "{report}");
    assert!(orders["detail"].is_string(), "{report}");
    assert_eq!(check(&report, "upstream users")["ready"], true);
}

#[tokio::test]
async fn a_failed_build_keeps_the_old_probes_and_a_new_one_swaps_them() {
    let health = Health::new();
    let admin = admin_for(&health).await;
    let _first = gateway_to_users(&health)
        .await
        .route(Route::prefix("/users").to("users"))
        .build()
        .expect("a gateway");
    let (status, report) = readyz(&admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&report), ["upstream users"]);

    // "orders" builds, then the route to an unknown upstream fails.
    let down = closed_port().await;
    let failed = Gateway::builder()
        .upstream(Upstream::builder("orders").endpoint(format!("http://{down}")))
        .route(Route::prefix("/orders").to("orderz"))
        .health(health.clone())
        .build();
    assert!(failed.is_err());
    assert_eq!(names(&readyz(&admin).await.1), ["upstream users"]);

    let _second = Gateway::builder()
        .upstream(Upstream::builder("orders").endpoint(format!("http://{down}")))
        .route(Route::prefix("/orders").to("orders"))
        .health(health.clone())
        .build_service()
        .expect("a gateway service");
    assert_eq!(names(&readyz(&admin).await.1), ["upstream orders"]);
}

#[tokio::test]
async fn config_serves_the_snapshot_and_unknown_paths_are_404_problems() {
    let snapshot = ConfigSnapshot::new(json!({ "upstreams": [{ "name": "users" }] }));
    let admin = spawn_gateway(Admin::new().config(snapshot.clone()).router()).await;

    let res = get(&admin.url("/config")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        body_json(res).await,
        json!({ "upstreams": [{ "name": "users" }] })
    );

    // A reload puts a new snapshot in: served at once.
    snapshot.set(json!({ "upstreams": [], "secret": "[redacted]" }));
    let res = get(&admin.url("/config")).await;
    assert_eq!(
        body_json(res).await,
        json!({ "upstreams": [], "secret": "[redacted]" })
    );

    let problem = assert_problem(get(&admin.url("/nope")).await, 404, ROUTE_NOT_FOUND).await;
    assert_eq!(problem["instance"], "/nope", "{problem}");
    // Not given metrics: no /metrics.
    assert_problem(get(&admin.url("/metrics")).await, 404, ROUTE_NOT_FOUND).await;

    // Without a snapshot, /config is not routed.
    let bare = spawn_gateway(Admin::new().router()).await;
    assert_problem(get(&bare.url("/config")).await, 404, ROUTE_NOT_FOUND).await;
}

/// `Health::shutdown_after`: once the signal comes, `/readyz` fails with a
/// first check `shutdown` while the public listener keeps serving new
/// connections for the delay; then the server stops accepting and returns.
#[tokio::test]
async fn readyz_fails_once_a_shutdown_begins_and_serving_goes_on_for_the_delay() {
    let health = Health::new();
    let admin = admin_for(&health).await;
    let router = gateway_to_users(&health)
        .await
        .route(Route::prefix("/").to("users"))
        .build()
        .expect("builds");
    let (listener, addr) = tollgate_tests::listener().await;
    let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
    let shutdown = health.shutdown_after(
        async move {
            let _ = signalled.await;
        },
        Duration::from_secs(2),
    );
    let server = tokio::spawn(tollgate::serve(listener, router, shutdown).into_future());
    let url = format!("http://{addr}/x");
    assert_eq!(get(&url).await.status(), StatusCode::OK);
    let report = readyz_until(&admin, StatusCode::OK).await;
    assert_eq!(names(&report), ["upstream users"]);

    signal.send(()).expect("the server waits");
    let report = readyz_until(&admin, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(names(&report), ["shutdown", "upstream users"]);
    assert_eq!(
        check(&report, "shutdown"),
        &json!({"name": "shutdown", "ready": false, "detail": "shutting down"})
    );
    assert!(health.is_shutting_down());
    // A new connection during the delay (each `get` opens one) is served.
    assert_eq!(get(&url).await.status(), StatusCode::OK);

    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server returns after the delay")
        .expect("joins")
        .expect("a clean shutdown");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// `[server] shutdown_delay`: `config::Server::shutdown` fails `/readyz`
/// on the admin listener and keeps the public one serving for the delay.
#[tokio::test]
async fn the_config_servers_shutdown_delay_fails_readiness_first() {
    let server = config_server_to_users("shutdown_delay = \"2s\"\n").await;
    let addr = server.local_addr();
    let admin_addr = server.admin_addr().expect("an admin listener");
    let readyz = format!("http://{admin_addr}/readyz");
    assert_eq!(get(&readyz).await.status(), StatusCode::OK);

    let stopping = tokio::spawn(server.shutdown());
    eventually("/readyz fails", || async {
        get(&readyz).await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let report = body_json(get(&readyz).await).await;
    assert_eq!(names(&report)[0], "shutdown", "{report}");
    assert_eq!(
        get(&format!("http://{addr}/x")).await.status(),
        StatusCode::OK
    );

    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the shutdown ends after the delay")
        .expect("joins")
        .expect("a clean shutdown");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(admin_addr).await.is_err());
}

/// `POST /healthcheck/fail` takes the instance out of its load balancer:
/// `/readyz` fails with a first check `draining` while the gateway keeps
/// serving; `POST /healthcheck/ok` puts it back. Both answer the state,
/// only `POST` does it, and the config server's admin listener has them.
/// A shutdown is not undone by `ok`.
#[tokio::test]
async fn healthcheck_fail_and_ok_take_the_instance_out_and_back() {
    let server = config_server_to_users("").await;
    let public = format!("http://{}/x", server.local_addr());
    let admin = server.admin_addr().expect("an admin listener");
    let readyz_url = format!("http://{admin}/readyz");
    let post = async |path: &str| {
        let req = Request::post(format!("http://{admin}{path}"))
            .body(empty())
            .expect("a request");
        client().request(req).await.expect("an answer")
    };
    assert_eq!(get(&readyz_url).await.status(), StatusCode::OK);

    // A GET changes nothing.
    let res = get(&format!("http://{admin}/healthcheck/fail")).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get(&readyz_url).await.status(), StatusCode::OK);

    let res = post("/healthcheck/fail").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await, json!({ "draining": true }));
    let res = get(&readyz_url).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let report = body_json(res).await;
    assert_eq!(names(&report), ["draining", "upstream users"]);
    assert_eq!(
        check(&report, "draining"),
        &json!({
            "name": "draining",
            "ready": false,
            "detail": "taken out of the load balancer by an operator"
        })
    );
    // Still serving.
    assert_eq!(get(&public).await.status(), StatusCode::OK);

    let res = post("/healthcheck/ok").await;
    assert_eq!(body_json(res).await, json!({ "draining": false }));
    let res = get(&readyz_url).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(names(&body_json(res).await), ["upstream users"]);

    // A web page cannot post to the admin listener: a browser's request
    // carries `Origin` or `Sec-Fetch-Site`, and is refused before it acts.
    for (name, value) in [
        ("origin", "https://attacker.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let req = Request::post(format!("http://{admin}/healthcheck/fail"))
            .header(name, value)
            .body(empty())
            .expect("a request");
        let res = client().request(req).await.expect("an answer");
        assert_problem(res, 403, tollgate::core::problem::FORBIDDEN).await;
        assert_eq!(get(&readyz_url).await.status(), StatusCode::OK, "{name}");
    }

    // After a shutdown begins, `ok` does not make the instance ready.
    let health = Health::new();
    let admin = admin_for(&health).await;
    health.begin_shutdown();
    let req = Request::post(admin.url("/healthcheck/ok"))
        .body(empty())
        .expect("a request");
    assert_eq!(
        client().request(req).await.expect("an answer").status(),
        StatusCode::OK
    );
    let (status, report) = readyz(&admin).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(names(&report), ["shutdown"]);
    server.shutdown().await.expect("a clean shutdown");
}
