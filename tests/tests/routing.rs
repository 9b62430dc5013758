//! The routing table through a running gateway: prefixes, hosts, methods,
//! headers, API versions, rewrites, rejections and build-time errors.
//!
//! Every upstream is a `named_echo_router`, so each answer says which
//! upstream the route reached and what URI it saw.

#![expect(
    clippy::expect_used,
    reason = "helpers outside #[test] fns fail the test with a message"
)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::timeout;
use tollgate::{
    Gateway, GatewayBuilder, PathRewrite, Route, Upstream,
    core::problem::{BAD_REQUEST, METHOD_NOT_ALLOWED, ROUTE_NOT_FOUND},
};
use tollgate_tests::{
    RunningGateway, assert_problem, body_json, client, echo_router, empty, named_echo_router,
    raw_exchange, spawn_gateway, spawn_upstream,
};

/// Safety bound for one request: a bug fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(10);

/// A builder with one running `named_echo_router` upstream per name.
async fn with_upstreams(names: &[&str]) -> GatewayBuilder {
    let mut builder = Gateway::builder();
    for name in names {
        let addr = spawn_upstream(named_echo_router(name)).await;
        builder = builder.upstream(Upstream::builder(*name).endpoint(format!("http://{addr}")));
    }
    builder
}

async fn serve_routes(builder: GatewayBuilder) -> RunningGateway {
    spawn_gateway(builder.build().expect("valid gateway")).await
}

/// Sends `method path` with `headers` through the gateway.
async fn send(
    gw: &RunningGateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut req = Request::builder().method(method).uri(gw.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(empty()).expect("request");
    timeout(BOUND, client().request(req))
        .await
        .expect("gateway answered in time")
        .expect("request sent")
}

/// Which upstream answered `GET path` (with `headers`), and the URI it saw.
async fn reached(gw: &RunningGateway, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let res = send(gw, Method::GET, path, headers).await;
    assert_eq!(res.status(), StatusCode::OK, "GET {path} {headers:?}");
    let json = body_json(res).await;
    let name = json["upstream"].as_str().unwrap_or_default().to_owned();
    let uri = json["uri"].as_str().unwrap_or_default().to_owned();
    (name, uri)
}

async fn upstream_for(gw: &RunningGateway, path: &str) -> String {
    reached(gw, path, &[]).await.0
}

#[tokio::test]
async fn longest_prefix_wins_whatever_the_registration_order() {
    let routes = [
        Route::prefix("/api").to("api"),
        Route::prefix("/api/users").to("users"),
        Route::prefix("/api/users/admin").to("admin"),
    ];
    // Shortest first, longest first, and mixed.
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let mut builder = with_upstreams(&["api", "users", "admin"]).await;
        for i in order {
            builder = builder.route(routes[i].clone());
        }
        let gw = serve_routes(builder).await;
        for (path, want) in [
            ("/api", "api"),
            ("/api/orders/1", "api"),
            ("/api/users", "users"),
            ("/api/users/42", "users"),
            ("/api/users/admin", "admin"),
            ("/api/users/admin/settings", "admin"),
        ] {
            assert_eq!(
                upstream_for(&gw, path).await,
                want,
                "{path} with order {order:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_prefix_matches_only_at_a_segment_boundary() {
    let gw = serve_routes(
        with_upstreams(&["api", "users"])
            .await
            .route(Route::prefix("/api").to("api"))
            .route(Route::prefix("/api/users").to("users")),
    )
    .await;
    assert_eq!(
        reached(&gw, "/api/users", &[]).await,
        ("users".into(), "/api/users".into())
    );
    assert_eq!(
        reached(&gw, "/api/users/42", &[]).await,
        ("users".into(), "/api/users/42".into())
    );
    assert_eq!(
        reached(&gw, "/api/users?x=1", &[]).await,
        ("users".into(), "/api/users?x=1".into())
    );
    // `/api/usersX` is not below `/api/users`: the shorter route takes it.
    assert_eq!(
        reached(&gw, "/api/usersX", &[]).await,
        ("api".into(), "/api/usersX".into())
    );

    // Without a shorter route, it is not found at all.
    let gw = serve_routes(
        with_upstreams(&["users"])
            .await
            .route(Route::prefix("/api/users").to("users")),
    )
    .await;
    let res = send(&gw, Method::GET, "/api/usersX", &[]).await;
    let problem = assert_problem(res, 404, ROUTE_NOT_FOUND).await;
    assert_eq!(problem["instance"], "/api/usersX");
}

#[tokio::test]
async fn hosts_match_exactly_case_insensitively_without_port_and_by_wildcard() {
    let gw = serve_routes(
        with_upstreams(&["exact", "wildcard", "default"])
            .await
            .route(Route::prefix("/").host("api.example.com").to("exact"))
            .route(Route::prefix("/").host("*.example.com").to("wildcard"))
            .route(Route::prefix("/").to("default")),
    )
    .await;
    for (host, want) in [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("api.example.com:8443", "exact"),
        ("shop.example.com", "wildcard"),
        ("a.b.example.com:80", "wildcard"),
        ("SHOP.EXAMPLE.COM", "wildcard"),
        // The wildcard needs a subdomain.
        ("example.com", "default"),
        ("badexample.com", "default"),
        ("api.example.org", "default"),
    ] {
        let (name, _) = reached(&gw, "/x", &[("host", host)]).await;
        assert_eq!(name, want, "Host: {host}");
    }

    // A host-only gateway answers 404 for any other host.
    let gw = serve_routes(
        with_upstreams(&["exact"])
            .await
            .route(Route::prefix("/").host("api.example.com").to("exact")),
    )
    .await;
    let res = send(&gw, Method::GET, "/x", &[("host", "other.example.com")]).await;
    assert_problem(res, 404, ROUTE_NOT_FOUND).await;
}

/// An exact host is more specific than a wildcard that also matches it, as
/// in nginx's `server_name` and Envoy's virtual hosts, so it should win
/// whichever was registered first.
#[tokio::test]
async fn an_exact_host_beats_a_wildcard_whatever_the_registration_order() {
    let gw = serve_routes(
        with_upstreams(&["exact", "wildcard"])
            .await
            .route(Route::prefix("/").host("*.example.com").to("wildcard"))
            .route(Route::prefix("/").host("api.example.com").to("exact")),
    )
    .await;
    let (name, _) = reached(&gw, "/x", &[("host", "shop.example.com")]).await;
    assert_eq!(name, "wildcard");
    let (name, _) = reached(&gw, "/x", &[("host", "api.example.com")]).await;
    assert_eq!(name, "exact", "Host: api.example.com");
}

#[tokio::test]
async fn methods_match_and_only_a_wrong_method_is_405_with_allow() {
    let gw = serve_routes(
        with_upstreams(&["reader", "writer", "api"])
            .await
            .route(
                Route::prefix("/items")
                    .method(Method::GET)
                    .method(Method::HEAD)
                    .to("reader"),
            )
            .route(Route::prefix("/items").method(Method::POST).to("writer"))
            // Below /api, a route for every method backs up a GET-only one.
            .route(Route::prefix("/api").to("api"))
            .route(Route::prefix("/api/items").method(Method::GET).to("reader")),
    )
    .await;

    let res = send(&gw, Method::GET, "/items/1", &[]).await;
    assert_eq!(body_json(res).await["upstream"], "reader");
    let res = send(&gw, Method::POST, "/items", &[]).await;
    let json = body_json(res).await;
    assert_eq!(json["upstream"], "writer");
    assert_eq!(json["method"], "POST");

    let res = send(&gw, Method::DELETE, "/items/1", &[]).await;
    let allow = res
        .headers()
        .get(header::ALLOW)
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .expect("405 carries Allow");
    let mut allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
    allowed.sort_unstable();
    assert_eq!(allowed, ["GET", "HEAD", "POST"], "Allow: {allow}");
    let problem = assert_problem(res, 405, METHOD_NOT_ALLOWED).await;
    assert_eq!(problem["instance"], "/items/1");

    // Another route takes what the method-restricted one refuses: no 405.
    let res = send(&gw, Method::DELETE, "/api/items/1", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await["upstream"], "api");
    let res = send(&gw, Method::GET, "/api/items/1", &[]).await;
    assert_eq!(body_json(res).await["upstream"], "reader");

    // A path nothing matches is 404, not 405.
    let res = send(&gw, Method::DELETE, "/other", &[]).await;
    assert_problem(res, 404, ROUTE_NOT_FOUND).await;
}

#[tokio::test]
async fn headers_match_by_value_and_by_presence() {
    let gw = serve_routes(
        with_upstreams(&["acme", "debug", "default"])
            .await
            .route(Route::prefix("/api").header("x-tenant", "acme").to("acme"))
            .route(Route::prefix("/api").header_present("x-debug").to("debug"))
            .route(Route::prefix("/api").to("default")),
    )
    .await;
    for (headers, want) in [
        (&[][..], "default"),
        (&[("x-tenant", "acme")][..], "acme"),
        (&[("x-tenant", "globex")][..], "default"),
        // Values are compared exactly.
        (&[("x-tenant", "ACME")][..], "default"),
        (&[("x-debug", "")][..], "debug"),
        (&[("x-debug", "1")][..], "debug"),
    ] {
        let (name, _) = reached(&gw, "/api/x", headers).await;
        assert_eq!(name, want, "{headers:?}");
    }

    // When a header route is the only one, a request without the header
    // is not found.
    let gw = serve_routes(
        with_upstreams(&["acme"])
            .await
            .route(Route::prefix("/api").header("x-tenant", "acme").to("acme")),
    )
    .await;
    let res = send(&gw, Method::GET, "/api/x", &[]).await;
    assert_problem(res, 404, ROUTE_NOT_FOUND).await;
}

#[tokio::test]
async fn api_versions_go_by_prefix_and_by_header() {
    let gw = serve_routes(
        with_upstreams(&["v1", "v2"])
            .await
            .route(Route::prefix("/api/users").to("v1"))
            .route(
                Route::prefix("/api/v2/users")
                    .replace_prefix("/api/users")
                    .to("v2"),
            )
            .route(
                Route::prefix("/api/users")
                    .header("x-api-version", "2")
                    .to("v2"),
            ),
    )
    .await;
    assert_eq!(
        reached(&gw, "/api/users/42", &[]).await,
        ("v1".into(), "/api/users/42".into())
    );
    assert_eq!(
        reached(&gw, "/api/v2/users/42", &[]).await,
        ("v2".into(), "/api/users/42".into())
    );
    assert_eq!(
        reached(&gw, "/api/users/42", &[("x-api-version", "2")]).await,
        ("v2".into(), "/api/users/42".into())
    );
    assert_eq!(
        reached(&gw, "/api/users/42", &[("x-api-version", "1")]).await,
        ("v1".into(), "/api/users/42".into())
    );
}

#[tokio::test]
async fn paths_are_rewritten_before_they_go_upstream() {
    let gw = serve_routes(
        with_upstreams(&["echo"])
            .await
            .route(Route::prefix("/keep").to("echo"))
            .route(
                Route::prefix("/api/users")
                    .replace_prefix("/users")
                    .to("echo"),
            )
            .route(Route::prefix("/svc").strip_prefix().to("echo"))
            .route(
                Route::prefix("/t")
                    .rewrite(PathRewrite::Template("/v2/users/{rest}".into()))
                    .to("echo"),
            )
            .route(
                Route::prefix("/whole")
                    .rewrite(PathRewrite::Template("/mirror{path}".into()))
                    .to("echo"),
            ),
    )
    .await;
    for (path, want) in [
        ("/keep/a/b?q=1", "/keep/a/b?q=1"),
        ("/api/users/42", "/users/42"),
        ("/api/users", "/users"),
        (
            "/api/users/42?fields=name&x=%20y",
            "/users/42?fields=name&x=%20y",
        ),
        ("/svc/a/b", "/a/b"),
        ("/svc", "/"),
        ("/svc?q=1", "/?q=1"),
        ("/t/42", "/v2/users/42"),
        ("/t/42/orders?x=1", "/v2/users/42/orders?x=1"),
        ("/whole/a", "/mirror/whole/a"),
        // Percent-encoding passes through untouched.
        ("/api/users/a%2Fb", "/users/a%2Fb"),
    ] {
        let (_, uri) = reached(&gw, path, &[]).await;
        assert_eq!(uri, want, "{path}");
    }
}

#[tokio::test]
async fn an_unmatched_path_is_404_problem_json_naming_the_path() {
    let gw = serve_routes(
        with_upstreams(&["users"])
            .await
            .route(Route::prefix("/api/users").to("users")),
    )
    .await;
    let res = send(&gw, Method::GET, "/nowhere/at/all?x=1", &[]).await;
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    let problem = assert_problem(res, 404, ROUTE_NOT_FOUND).await;
    assert_eq!(problem["instance"], "/nowhere/at/all");
    assert!(problem["title"].is_string(), "{problem}");
}

/// An upstream that counts the requests it gets.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let router = Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "reached" }
    });
    (spawn_upstream(router).await, hits)
}

#[tokio::test]
async fn dot_segments_are_400_and_never_forwarded() {
    let (addr, hits) = counting_upstream().await;
    let gw = serve_routes(
        Gateway::builder()
            .upstream(Upstream::builder("users").endpoint(format!("http://{addr}")))
            .route(Route::prefix("/api/users").to("users")),
    )
    .await;

    // Sent raw: a well-behaved client would normalise these away.
    for path in [
        "/api/users/../admin",
        "/api/users/./42",
        "/api/users/..",
        "/api/users/%2e%2e/admin",
        "/api/users/%2E%2e",
        "/api/users/.%2E/admin",
    ] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(gw.addr, head.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{path}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{path}: {answer}"
        );
        assert!(answer.contains(BAD_REQUEST), "{path}: {answer}");
    }
    // The encoded form through an ordinary client, too.
    let res = send(&gw, Method::GET, "/api/users/%2e%2e/admin", &[]).await;
    let problem = assert_problem(res, 400, BAD_REQUEST).await;
    assert_eq!(problem["instance"], "/api/users/%2e%2e/admin");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a dot-segment path reached the upstream"
    );

    // Dots inside a segment are fine, and the counter does count.
    let head = "GET /api/users/..well-known/a.b HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(gw.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

fn users() -> tollgate::UpstreamBuilder {
    Upstream::builder("users").endpoint("http://127.0.0.1:9")
}

fn build_error(builder: GatewayBuilder) -> String {
    builder
        .build()
        .expect_err("the configuration is invalid")
        .to_string()
}

#[test]
fn build_errors_name_the_route_or_upstream() {
    assert_eq!(
        build_error(
            Gateway::builder()
                .upstream(users())
                .route(Route::prefix("/api/users").name("users").to("userz"))
        ),
        "route \"users\" (/api/users): unknown upstream \"userz\""
    );
    assert_eq!(
        build_error(
            Gateway::builder()
                .upstream(users())
                .route(Route::prefix("/api/orders").to("orders"))
        ),
        "route \"/api/orders\": unknown upstream \"orders\""
    );
    assert_eq!(
        build_error(
            Gateway::builder()
                .upstream(users())
                .route(Route::prefix("/api").name("first").to("users"))
                .route(Route::prefix("/api/").name("second").to("users"))
        ),
        "route \"second\" (/api/): matches the same requests as route \"first\""
    );
    assert_eq!(
        build_error(
            Gateway::builder()
                .upstream(users())
                .route(Route::prefix("/api").host("A.example.com").to("users"))
                .route(Route::prefix("/api").host("a.example.com").to("users"))
        ),
        "route \"/api\": matches the same requests as route \"/api\""
    );
    assert_eq!(
        build_error(
            Gateway::builder()
                .upstream(Upstream::builder("users").endpoint("users.internal:80"))
                .route(Route::prefix("/api/users").to("users"))
        ),
        "upstream \"users\": endpoint \"users.internal:80\": relative URL without a scheme"
    );
    assert_eq!(
        build_error(
            Gateway::builder()
                .upstream(Upstream::builder("users").endpoint("ftp://users.internal"))
        ),
        "upstream \"users\": endpoint \"ftp://users.internal\": the scheme must be http or https"
    );
    assert_eq!(
        build_error(Gateway::builder().upstream(users()).upstream(users())),
        "upstream \"users\" is registered twice"
    );
    assert_eq!(
        build_error(
            Gateway::builder()
                .upstream(users())
                .route(Route::prefix("/api").name("api"))
        ),
        "route \"api\" (/api): has no target: call .to(upstream) or .split(..)"
    );

    // The same routes, correctly named, build.
    let _router = Gateway::builder()
        .upstream(users())
        .route(Route::prefix("/api").name("first").to("users"))
        .route(Route::prefix("/api/users").name("second").to("users"))
        .build()
        .expect("valid gateway");
}

#[tokio::test]
async fn user_handlers_merged_in_take_their_paths_and_the_gateway_the_rest() {
    let gateway = with_upstreams(&["users"])
        .await
        .route(Route::prefix("/api/users").to("users"))
        .build()
        .expect("valid gateway");
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the handler" }))
        .route("/api/users/me", get(|| async { "me, from the handler" }))
        .merge(gateway);
    let gw = spawn_gateway(app).await;

    let res = send(&gw, Method::GET, "/hello", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        tollgate_tests::body_bytes(res).await,
        "hello from the handler"
    );
    let res = send(&gw, Method::GET, "/api/users/me", &[]).await;
    assert_eq!(
        tollgate_tests::body_bytes(res).await,
        "me, from the handler"
    );
    assert_eq!(
        reached(&gw, "/api/users/42", &[]).await,
        ("users".into(), "/api/users/42".into())
    );
    let res = send(&gw, Method::GET, "/nowhere", &[]).await;
    assert_problem(res, 404, ROUTE_NOT_FOUND).await;
}

#[tokio::test]
async fn the_gateway_runs_under_plain_axum_serve_with_connect_info() {
    let addr = spawn_upstream(echo_router()).await;
    let gateway = Gateway::builder()
        .upstream(Upstream::builder("echo").endpoint(format!("http://{addr}")))
        .route(Route::prefix("/").to("echo"))
        .build()
        .expect("valid gateway");
    let (listener, gw_addr) = tollgate_tests::listener().await;
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            gateway.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let req = Request::get(format!("http://{gw_addr}/users/7?x=1"))
        .header("x-forwarded-for", "203.0.113.9")
        .body(empty())
        .expect("request");
    let res = timeout(BOUND, client().request(req))
        .await
        .expect("gateway answered in time")
        .expect("request sent");
    assert_eq!(res.status(), StatusCode::OK);
    let json: Value = body_json(res).await;
    assert_eq!(json["uri"], "/users/7?x=1");
    // The peer address comes from axum's ConnectInfo and is appended.
    assert_eq!(
        json["headers"]["x-forwarded-for"],
        serde_json::json!(["203.0.113.9, 127.0.0.1"]),
        "{json}"
    );
    assert_eq!(
        json["headers"]["x-forwarded-proto"],
        serde_json::json!(["http"])
    );
    server.abort();
}
