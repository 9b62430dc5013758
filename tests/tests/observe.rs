//! Integration tests of tollgate-observe: access log content, metrics
//! scraped over real HTTP, the in-flight gauge, axum fit and the audit trail,
//! for the layer alone and inside a running gateway.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{Extension, routing::get};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tollgate::core::{
    ClientIp, ConnectionInfo, Identity, Problem, RequestId, RouteName, TraceContext,
    body::ResponseBody, problem,
};
use tollgate::observe::{ACCESS_TARGET, Metrics, Observe, ObserveLayer, admin_router, audit};
use tollgate_tests::observe_support::{Capture, parse_exposition, value};
use tower::{ServiceBuilder, ServiceExt, service_fn};

type TestBody = ResponseBody<Full<Bytes>>;

/// An inner service: `/users…` is the route "users" (named on the
/// response, as the route table will do), `/slow` waits for nothing,
/// everything else is a route-not-found problem.
async fn routes(req: Request<Full<Bytes>>) -> Result<Response<TestBody>, Infallible> {
    if req.uri().path().starts_with("/users") {
        let mut res = Response::new(ResponseBody::inner(Full::new(Bytes::from_static(
            b"hello world",
        ))));
        res.headers_mut()
            .insert(header::SET_COOKIE, "id=secret".parse().unwrap());
        res.extensions_mut().insert(RouteName::new("users"));
        res.extensions_mut().insert(Identity::subject("user-42"));
        Ok(res)
    } else {
        Ok(Problem::route_not_found()
            .for_request(&req)
            .into_response::<Full<Bytes>>())
    }
}

fn secret_request() -> Request<Full<Bytes>> {
    let mut req = Request::get("/users/42?token=secret-query")
        .header(header::AUTHORIZATION, "Bearer secret-token")
        .header(header::COOKIE, "session=secret")
        .header("x-api-key", "secret-key")
        .header(header::USER_AGENT, "test-agent/1.0")
        .header(header::CONTENT_LENGTH, "5")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    req.extensions_mut().insert(RequestId::from_static("req-1"));
    req.extensions_mut().insert(TraceContext {
        trace_id: [0x4b; 16],
        span_id: [1; 8],
        flags: 1,
    });
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
    req
}

#[tokio::test]
async fn access_log_has_every_field_and_no_secret() {
    let (capture, _guard) = Capture::install();
    let svc = ServiceBuilder::new()
        .layer(ObserveLayer::access_log_only())
        .service_fn(routes);

    let res = svc.oneshot(secret_request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::SET_COOKIE], "id=secret");
    assert!(
        capture.events(ACCESS_TARGET).is_empty(),
        "the line is written when the body ends, not at the headers"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello world");

    let events = capture.events(ACCESS_TARGET);
    assert_eq!(events.len(), 1, "{events:?}");
    let line = &events[0];
    assert_eq!(line.get("request_id"), Some("req-1"));
    assert_eq!(
        line.get("trace_id"),
        Some("4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b")
    );
    assert_eq!(line.get("method"), Some("GET"));
    assert_eq!(line.get("path"), Some("/users/42"));
    assert_eq!(line.get("route"), Some("users"));
    assert_eq!(line.get("status"), Some("200"));
    let latency: f64 = line.get("latency_ms").unwrap().parse().unwrap();
    assert!(latency >= 0.0);
    assert_eq!(line.get("client_ip"), Some("203.0.113.7"));
    assert_eq!(line.get("subject"), Some("user-42"));
    assert_eq!(line.get("consumer"), None);
    assert_eq!(line.get("user_agent"), Some("test-agent/1.0"));
    assert_eq!(line.get("problem_type"), None);
    assert_eq!(line.get("bytes_in"), Some("5"));
    assert_eq!(line.get("bytes_out"), Some("11"));

    for event in capture.all() {
        for (name, value) in &event.fields {
            assert!(
                !value.contains("secret"),
                "{}: field {name} = {value:?} leaks a secret",
                event.target
            );
        }
    }
}

#[tokio::test]
async fn query_is_logged_only_when_asked() {
    let (capture, _guard) = Capture::install();
    let svc = ServiceBuilder::new()
        .layer(ObserveLayer::builder().log_query(true).build())
        .service_fn(routes);
    let req = Request::get("/users?page=2").body(Full::default()).unwrap();
    let res = svc.oneshot(req).await.unwrap();
    drop(res);
    let events = capture.events(ACCESS_TARGET);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].get("path"), Some("/users?page=2"));
    assert_eq!(events[0].get("bytes_in"), Some("0"), "exact size hint");
}

#[tokio::test]
async fn problem_responses_log_their_type_and_fall_back_to_the_peer() {
    let (capture, _guard) = Capture::install();
    let metrics = Metrics::new();
    let svc = ServiceBuilder::new()
        .layer(ObserveLayer::with_metrics(metrics.clone()))
        .service_fn(routes);
    let purge = Method::from_bytes(b"PURGE").unwrap();
    let mut req = Request::builder()
        .method(purge)
        .uri("/nope")
        .body(Full::default())
        .unwrap();
    let peer = SocketAddr::from(([192, 0, 2, 1], 4321));
    req.extensions_mut().insert(ConnectionInfo::new(peer));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body = res.into_body().collect().await.unwrap().to_bytes();

    let events = capture.events(ACCESS_TARGET);
    assert_eq!(events.len(), 1);
    let line = &events[0];
    assert_eq!(line.get("method"), Some("PURGE"));
    assert_eq!(line.get("route"), Some("unmatched"));
    assert_eq!(line.get("status"), Some("404"));
    assert_eq!(line.get("problem_type"), Some(problem::ROUTE_NOT_FOUND));
    assert_eq!(line.get("client_ip"), Some("192.0.2.1"));
    assert_eq!(line.get("request_id"), None);
    assert_eq!(line.get("bytes_out"), Some(body.len().to_string().as_str()));

    let samples = parse_exposition(&metrics.render());
    let labels = [
        ("route", "unmatched"),
        ("method", "other"),
        ("status", "404"),
    ];
    assert_eq!(
        value(&samples, "tollgate_requests_total", &labels),
        Some(1.0)
    );
}

#[tokio::test]
async fn route_name_on_the_request_is_used_when_the_response_has_none() {
    let (capture, _guard) = Capture::install();
    let svc = ServiceBuilder::new()
        .layer(ObserveLayer::access_log_only())
        .service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
    let mut req = Request::get("/anything").body(Full::default()).unwrap();
    req.extensions_mut().insert(RouteName::new("outer"));
    drop(svc.oneshot(req).await.unwrap());
    assert_eq!(capture.events(ACCESS_TARGET)[0].get("route"), Some("outer"));
}

#[tokio::test]
async fn in_flight_goes_up_while_pending_and_down_after() {
    let (capture, _guard) = Capture::install();
    let metrics = Metrics::new();
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let svc = ServiceBuilder::new()
        .layer(ObserveLayer::with_metrics(metrics.clone()))
        .service(service_fn({
            let release = release.clone();
            let entered = entered.clone();
            move |_req: Request<Full<Bytes>>| {
                let release = release.clone();
                let entered = entered.clone();
                async move {
                    entered.notify_one();
                    release.notified().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
                }
            }
        }));

    assert_eq!(metrics.in_flight(), 0);
    let pending = tokio::spawn(
        svc.clone()
            .oneshot(Request::get("/").body(Full::default()).unwrap()),
    );
    entered.notified().await;
    assert_eq!(metrics.in_flight(), 1);
    let samples = parse_exposition(&metrics.render());
    assert_eq!(
        value(&samples, "tollgate_in_flight_requests", &[]),
        Some(1.0)
    );

    release.notify_one();
    let res = pending.await.unwrap().unwrap();
    assert_eq!(metrics.in_flight(), 1, "still streaming the body");
    res.into_body().collect().await.unwrap();
    assert_eq!(metrics.in_flight(), 0);

    // A request abandoned before its response is finished too, as a 499.
    let mut abandoned = Box::pin(svc.oneshot(Request::get("/").body(Full::default()).unwrap()));
    tokio::select! {
        _ = &mut abandoned => unreachable!("the service waits for release"),
        () = entered.notified() => {}
    }
    assert_eq!(metrics.in_flight(), 1);
    drop(abandoned);
    assert_eq!(metrics.in_flight(), 0);
    let samples = parse_exposition(&metrics.render());
    let labels = [("route", "unmatched"), ("method", "GET"), ("status", "499")];
    assert_eq!(
        value(&samples, "tollgate_requests_total", &labels),
        Some(1.0)
    );
    let events = capture.events(ACCESS_TARGET);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].get("status"), Some("499"));
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn send(
    client: &Client,
    method: Method,
    url: String,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::default())
        .unwrap();
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn metrics_are_scraped_over_http_and_parsed() {
    let metrics = Metrics::new();
    let other = Metrics::new();
    let gateway = axum::Router::new()
        .route(
            "/users",
            get(|| async { (Extension(RouteName::new("users")), "all users") })
                .post(|| async { (StatusCode::CREATED, Extension(RouteName::new("users"))) }),
        )
        .fallback(|req: Request<axum::body::Body>| async move {
            Problem::route_not_found()
                .for_request(&req)
                .into_response::<axum::body::Body>()
                .map(axum::body::Body::new)
        })
        .layer(ObserveLayer::with_metrics(metrics.clone()));
    let gateway = serve(gateway).await;
    let admin = serve(admin_router(metrics.clone())).await;
    let client = client();

    for _ in 0..3 {
        let (status, _, body) = send(&client, Method::GET, format!("http://{gateway}/users")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"all users");
    }
    let (status, ..) = send(&client, Method::POST, format!("http://{gateway}/users")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, ..) = send(&client, Method::GET, format!("http://{gateway}/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, body) = send(&client, Method::GET, format!("http://{admin}/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");

    // The server finishes a request when it drops the response body, which
    // can be a moment after the client has read it.
    let mut samples = Vec::new();
    for _ in 0..100 {
        let (status, headers, body) =
            send(&client, Method::GET, format!("http://{admin}/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            tollgate::observe::CONTENT_TYPE
        );
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.ends_with("# EOF\n"));
        samples = parse_exposition(text);
        let done = value(
            &samples,
            "tollgate_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")],
        );
        if value(&samples, "tollgate_in_flight_requests", &[]) == Some(0.0) && done == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let requests = |route, method, status| {
        value(
            &samples,
            "tollgate_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("users", "GET", "200"), Some(3.0));
    assert_eq!(requests("users", "POST", "201"), Some(1.0));
    assert_eq!(requests("unmatched", "GET", "404"), Some(1.0));
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "tollgate_requests_total")
            .count(),
        3
    );
    assert_eq!(
        value(&samples, "tollgate_in_flight_requests", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "tollgate_rejections_total",
            &[("type", problem::ROUTE_NOT_FOUND)]
        ),
        Some(1.0)
    );
    let users = [("route", "users")];
    assert_eq!(
        value(&samples, "tollgate_request_duration_seconds_count", &users),
        Some(4.0)
    );
    assert_eq!(
        value(
            &samples,
            "tollgate_request_duration_seconds_bucket",
            &[("route", "users"), ("le", "+Inf")]
        ),
        Some(4.0)
    );
    let sum = value(&samples, "tollgate_request_duration_seconds_sum", &users).unwrap();
    assert!(sum > 0.0 && sum < 10.0, "{sum}");
    assert_eq!(
        value(
            &samples,
            "tollgate_request_duration_seconds_count",
            &[("route", "unmatched")]
        ),
        Some(1.0)
    );
    let buckets = samples
        .iter()
        .filter(|s| {
            s.name == "tollgate_request_duration_seconds_bucket"
                && s.labels.get("route").map(String::as_str) == Some("users")
        })
        .count();
    assert_eq!(buckets, tollgate::observe::LATENCY_BUCKETS.len() + 1);

    // Another registry in the same process saw none of it: only its
    // unlabelled families, at zero.
    let untouched = parse_exposition(&other.render());
    let unlabelled = [
        "tollgate_in_flight_requests",
        "tollgate_connections_open",
        "tollgate_connections_total",
        "tollgate_tunnels_open",
    ];
    assert!(
        untouched
            .iter()
            .all(|s| unlabelled.contains(&s.name.as_str()) && s.value == 0.0),
        "{untouched:?}"
    );
}

#[test]
fn fits_axum_router_layer_and_is_clone_send_sync() {
    fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    assert_clone_send_sync::<ObserveLayer>();
    assert_clone_send_sync::<Metrics>();
    assert_clone_send_sync::<Observe<axum::routing::Route>>();

    let router: axum::Router = axum::Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(ObserveLayer::with_metrics(Metrics::new()))
        .route_layer(ObserveLayer::access_log_only());
    drop(router);
}

#[test]
fn audit_events_carry_their_fields() {
    let (capture, _guard) = Capture::install();
    audit::event(
        Some(&RequestId::from_static("r-9")),
        Some("user-42"),
        Some("admin"),
        "denied",
        "missing scope",
    );
    audit::event(None, None, None, "reloaded", "config file changed");
    let events = capture.events(audit::TARGET);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].get("request_id"), Some("r-9"));
    assert_eq!(events[0].get("subject"), Some("user-42"));
    assert_eq!(events[0].get("route"), Some("admin"));
    assert_eq!(events[0].get("outcome"), Some("denied"));
    assert_eq!(events[0].get("reason"), Some("missing scope"));
    assert_eq!(events[1].get("subject"), None);
    assert_eq!(events[1].get("outcome"), Some("reloaded"));
}

#[test]
fn audit_file_layer_writes_only_audit_events_as_json_lines() {
    use tracing_subscriber::prelude::*;

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path = std::env::temp_dir().join(format!(
        "tollgate-audit-{}-{nanos}.jsonl",
        std::process::id()
    ));
    let subscriber = tracing_subscriber::registry().with(audit::file_layer(&path).unwrap());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "tollgate::access", path = "/x", "request");
        audit::event(
            Some(&RequestId::from_static("r-1")),
            Some("user-42"),
            Some("users"),
            "denied",
            "expired",
        );
        audit::event(None, None, None, "reloaded", "config");
    });
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["target"], "tollgate::audit");
    assert_eq!(lines[0]["request_id"], "r-1");
    assert_eq!(lines[0]["subject"], "user-42");
    assert_eq!(lines[0]["route"], "users");
    assert_eq!(lines[0]["outcome"], "denied");
    assert_eq!(lines[0]["reason"], "expired");
    assert_eq!(lines[1]["outcome"], "reloaded");
    assert!(lines[1].get("subject").is_none());
}

/// A body that sends `chunks` and then fails, or ends with trailers.
struct MockBody {
    chunks: std::collections::VecDeque<Bytes>,
    fail: bool,
    trailers: bool,
}

impl http_body::Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = if let Some(chunk) = self.chunks.pop_front() {
            Some(Ok(http_body::Frame::data(chunk)))
        } else if self.fail {
            self.fail = false;
            Some(Err(std::io::Error::other("upstream reset")))
        } else if self.trailers {
            self.trailers = false;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            Some(Ok(http_body::Frame::trailers(trailers)))
        } else {
            None
        };
        std::task::Poll::Ready(next)
    }
}

async fn respond_with(
    body: MockBody,
) -> (
    Capture,
    tollgate_tests::observe_support::CaptureGuard,
    Response<tollgate::observe::ObserveBody<MockBody>>,
) {
    let (capture, guard) = Capture::install();
    let body = std::sync::Mutex::new(Some(body));
    let svc = ServiceBuilder::new()
        .layer(ObserveLayer::access_log_only())
        .service_fn(move |_req: Request<Full<Bytes>>| {
            let body = body.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(Response::new(body)) }
        });
    let res = svc
        .oneshot(Request::get("/stream").body(Full::default()).unwrap())
        .await
        .unwrap();
    (capture, guard, res)
}

#[tokio::test]
async fn a_body_error_is_logged_with_the_bytes_sent_before_it() {
    let body = MockBody {
        chunks: [Bytes::from_static(b"abc"), Bytes::from_static(b"de")].into(),
        fail: true,
        trailers: false,
    };
    let (capture, _guard, res) = respond_with(body).await;
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(err.to_string(), "upstream reset");
    let events = capture.events(ACCESS_TARGET);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].get("bytes_out"), Some("5"));
    assert_eq!(events[0].get("body_error"), Some("true"));
    assert_eq!(events[0].get("status"), Some("200"));
}

#[tokio::test]
async fn trailers_pass_through_and_the_line_waits_for_them() {
    let body = MockBody {
        chunks: [Bytes::from_static(b"abc")].into(),
        fail: false,
        trailers: true,
    };
    let (capture, _guard, res) = respond_with(body).await;
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "abc");
    assert!(
        capture.events(ACCESS_TARGET).is_empty(),
        "trailers still to come"
    );
    let trailers = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert!(body.frame().await.is_none());
    let events = capture.events(ACCESS_TARGET);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].get("bytes_out"), Some("3"));
    assert_eq!(events[0].get("body_error"), None);
}

#[tokio::test]
async fn the_last_frame_finishes_the_request_and_hints_are_forwarded() {
    use http_body::Body as _;

    let (capture, _guard) = Capture::install();
    let metrics = Metrics::new();
    let svc = ServiceBuilder::new()
        .layer(ObserveLayer::with_metrics(metrics.clone()))
        .service_fn(routes);
    let res = svc
        .oneshot(Request::get("/users").body(Full::default()).unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    assert_eq!(body.size_hint().exact(), Some(11));
    assert!(!body.is_end_stream());
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "hello world");
    assert!(body.is_end_stream());
    assert_eq!(
        metrics.in_flight(),
        0,
        "finished without polling for the end"
    );
    assert_eq!(capture.events(ACCESS_TARGET).len(), 1);
    drop(body);
    assert_eq!(capture.events(ACCESS_TARGET).len(), 1, "exactly once");
}

/// The whole stack inside a running gateway: request id, trace context,
/// client IP and observe layers from the builder, real upstreams, and the
/// admin router scraped over HTTP. The route table and the proxy fill in the
/// route and the upstream call for the access log and the metrics.
#[tokio::test]
async fn a_gateway_logs_and_counts_routes_and_upstreams() {
    use tollgate::{
        Gateway, Route, Upstream,
        request_id::{ClientIpLayer, RequestIdLayer},
    };

    let (capture, _guard) = Capture::install();
    let users = tollgate_tests::spawn_upstream(tollgate_tests::echo_router()).await;
    let (closed, dead) = tollgate_tests::listener().await;
    drop(closed);
    let metrics = Metrics::new();
    let router = Gateway::builder()
        .request_id(RequestIdLayer::x_request_id())
        .trace_context(true)
        .client_ip(ClientIpLayer::peer_only())
        .observe(ObserveLayer::with_metrics(metrics.clone()))
        .upstream(Upstream::builder("users").endpoint(format!("http://{users}")))
        .upstream(Upstream::builder("dead").endpoint(format!("http://{dead}")))
        .route(
            Route::prefix("/api/users")
                .name("users")
                .replace_prefix("/users")
                .to("users"),
        )
        .route(Route::prefix("/api/dead").name("dead").to("dead"))
        .build()
        .unwrap();
    let gw = tollgate_tests::spawn_gateway(router).await;
    let admin = tollgate_tests::spawn_upstream(admin_router(metrics)).await;

    let mut ids = Vec::new();
    for path in [
        "/api/users/1",
        "/api/users/2",
        "/api/users/3",
        "/nope",
        "/api/dead/x",
    ] {
        let req = Request::get(gw.url(path))
            .body(tollgate_tests::empty())
            .unwrap();
        let res = tollgate_tests::client().request(req).await.unwrap();
        ids.push(res.headers()["x-request-id"].to_str().unwrap().to_owned());
        res.into_body().collect().await.unwrap();
    }

    let scrape = Request::get(format!("http://{admin}/metrics"))
        .body(tollgate_tests::empty())
        .unwrap();
    let res = tollgate_tests::client().request(scrape).await.unwrap();
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let samples = parse_exposition(&text);
    let count = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(
        count(
            "tollgate_requests_total",
            &[("route", "users"), ("method", "GET"), ("status", "200")]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        count(
            "tollgate_rejections_total",
            &[("type", problem::ROUTE_NOT_FOUND)]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            "tollgate_rejections_total",
            &[("type", problem::UPSTREAM_UNAVAILABLE)]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            "tollgate_upstream_errors_total",
            &[("upstream", "dead"), ("kind", "connect")]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            "tollgate_upstream_duration_seconds_count",
            &[("upstream", "users")]
        ),
        Some(3.0)
    );
    assert_eq!(count("tollgate_in_flight_requests", &[]), Some(0.0));

    let lines = capture.events(ACCESS_TARGET);
    assert_eq!(lines.len(), 5, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first.get("request_id"), Some(ids[0].as_str()));
    assert_eq!(first.get("route"), Some("users"));
    assert_eq!(first.get("upstream"), Some("users"));
    assert_eq!(
        first.get("endpoint"),
        Some(format!("http://{users}").as_str())
    );
    assert!(first.get("upstream_latency_ms").is_some());
    assert_eq!(first.get("client_ip"), Some("127.0.0.1"));
    assert_eq!(first.get("trace_id").map(str::len), Some(32));
    let dead_line = &lines[4];
    assert_eq!(dead_line.get("route"), Some("dead"));
    assert_eq!(dead_line.get("upstream_error"), Some("connect"));
    assert_eq!(
        dead_line.get("problem_type"),
        Some(problem::UPSTREAM_UNAVAILABLE)
    );
    assert_eq!(lines[3].get("route"), Some("unmatched"));
}

/// A request whose first endpoint refused the connection and that went to
/// the second: the access line says so (`upstream_retries`, the endpoint
/// that answered) and `tollgate_upstream_retries_total` counts it.
#[tokio::test]
async fn a_retried_request_is_logged_and_counted() {
    let (capture, _guard) = Capture::install();
    let metrics = Metrics::new();
    let closed = {
        let (listener, addr) = tollgate_tests::listener().await;
        drop(listener);
        addr
    };
    let ok = tollgate_tests::spawn_upstream(tollgate_tests::echo_router()).await;
    let gateway = tollgate::Gateway::builder()
        .observe(ObserveLayer::with_metrics(metrics.clone()))
        .upstream(
            tollgate::Upstream::builder("users")
                .endpoint(format!("http://{closed}"))
                .endpoint(format!("http://{ok}"))
                .balance(tollgate::Balance::RoundRobin)
                .retries(2),
        )
        .route(tollgate::Route::prefix("/").name("all").to("users"))
        .build()
        .unwrap();
    let gateway = tollgate_tests::spawn_gateway(gateway).await;
    let req = Request::get(gateway.url("/x"))
        .body(tollgate_tests::empty())
        .unwrap();
    let res = tollgate_tests::client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();

    tollgate_tests::auth_support::eventually("the access line", || async {
        !capture.events(ACCESS_TARGET).is_empty()
    })
    .await;
    let events = capture.events(ACCESS_TARGET);
    let line = &events[0];
    assert_eq!(line.get("upstream_retries"), Some("1"), "{line:?}");
    let endpoint = format!("http://{ok}");
    assert_eq!(line.get("endpoint"), Some(endpoint.as_str()), "{line:?}");
    let text = metrics.render();
    assert!(
        text.contains("tollgate_upstream_retries_total{upstream=\"users\"} 1\n"),
        "{text}"
    );
}
