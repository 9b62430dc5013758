//! Active health checks of upstream endpoints: probes over real
//! connections to real backends on 127.0.0.1:0, endpoints taken out and
//! put back, readiness, the config file, a reload, and HTTPS endpoints
//! behind a private CA. Also endpoint weights, whose weight-0 endpoints
//! are probed and listed but sent nothing.
//!
//! Every wait is a bounded poll, never a sleep that asserts timing.

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail the test with a message"
)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::Request, http::StatusCode, routing::get};
use serde_json::{Value, json};
use tollgate::{
    Gateway, Health, HealthCheck, PassiveHealthCheck, Route, Upstream,
    config::{ConfigFile, Server},
};
use tollgate_tests::{
    RunningGateway, auth_support::eventually, body_json, client, empty, listener, spawn_gateway,
    spawn_upstream,
};

#[expect(dead_code, reason = "shared with tls_server.rs, which uses all of it")]
#[path = "common/tls.rs"]
mod tls;
use tls::Dir;

/// A backend whose health endpoint answers what the test sets; 0 means it
/// never answers. Every other path answers its name.
#[derive(Clone)]
struct Backend {
    name: &'static str,
    health: Arc<AtomicU16>,
    probes: Arc<AtomicUsize>,
    /// The head of the last probe: path and query, and the headers.
    last_probe: Arc<Mutex<Option<(String, Value)>>>,
    served: Arc<AtomicUsize>,
}

impl Backend {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            health: Arc::new(AtomicU16::new(200)),
            probes: Arc::default(),
            last_probe: Arc::default(),
            served: Arc::default(),
        }
    }

    fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    fn router(&self) -> Router {
        let health = self.clone();
        let serve = self.clone();
        Router::new()
            .route(
                "/healthz",
                get(move |req: Request| {
                    let this = health.clone();
                    async move {
                        this.probes.fetch_add(1, Ordering::SeqCst);
                        let headers: serde_json::Map<String, Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default()))
                            })
                            .collect();
                        let target = req.uri().path_and_query().map(ToString::to_string);
                        *this.last_probe.lock().unwrap() =
                            Some((target.unwrap_or_default(), Value::Object(headers)));
                        match this.health.load(Ordering::SeqCst) {
                            0 => std::future::pending::<StatusCode>().await,
                            status => StatusCode::from_u16(status).unwrap(),
                        }
                    }
                }),
            )
            .fallback(move || {
                let this = serve.clone();
                async move {
                    this.served.fetch_add(1, Ordering::SeqCst);
                    Json(json!({ "name": this.name }))
                }
            })
    }

    async fn spawn(&self) -> String {
        format!("http://{}", spawn_upstream(self.router()).await)
    }
}

/// A quick check: every 50 ms, out after 2 failures, back after 2 passes.
fn quick(path: &str) -> HealthCheck {
    HealthCheck::new(path)
        .interval(Duration::from_millis(50))
        .timeout(Duration::from_millis(500))
        .unhealthy_threshold(2)
        .healthy_threshold(2)
}

/// The names of the backends that answered `n` requests to `url`.
async fn answered_by(url: &str, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let req = http::Request::get(url).body(empty()).unwrap();
        let res = client().request(req).await.expect("an answer");
        assert_eq!(res.status(), 200);
        names.push(body_json(res).await["name"].as_str().unwrap().to_owned());
    }
    names
}

/// A gateway sending every path to `upstream`, which must be called
/// `users`.
async fn serve_upstream(upstream: &Upstream<axum::body::Body>) -> RunningGateway {
    let gateway = Gateway::builder()
        .upstream_service(upstream.clone())
        .route(Route::prefix("/").to("users"))
        .build()
        .expect("a gateway");
    spawn_gateway(gateway).await
}

/// A port that was free a moment ago: connections to it are refused.
async fn closed_port() -> std::net::SocketAddr {
    let (listener, addr) = listener().await;
    drop(listener);
    addr
}

#[tokio::test]
async fn an_endpoint_failing_its_check_is_taken_out_and_comes_back() {
    let (a, b) = (Backend::new("a"), Backend::new("b"));
    let upstream = Upstream::builder("users")
        .endpoint(a.spawn().await)
        .endpoint(b.spawn().await)
        .balance(tollgate::Balance::RoundRobin)
        .health_check(quick("/healthz"))
        .build::<axum::body::Body>()
        .expect("an upstream");
    let gateway = serve_upstream(&upstream).await;
    let url = gateway.url("/users/1");

    // Both pass: round robin alternates.
    eventually("both endpoints are probed", || async {
        a.probes() >= 1 && b.probes() >= 1
    })
    .await;
    let names = answered_by(&url, 4).await;
    assert!(
        names.contains(&"a".into()) && names.contains(&"b".into()),
        "{names:?}"
    );

    // `b` still serves requests, but its health endpoint fails: only the
    // active check can take it out.
    b.set_health(503);
    eventually("b is taken out", || async {
        upstream.healthy_endpoint_count() == 1
    })
    .await;
    let served = b.served.load(Ordering::SeqCst);
    assert_eq!(answered_by(&url, 10).await, vec!["a"; 10]);
    assert_eq!(b.served.load(Ordering::SeqCst), served);
    assert!(upstream.is_healthy());

    // It recovers: back in after two good probes.
    b.set_health(204);
    eventually("b is back", || async {
        upstream.healthy_endpoint_count() == 2
    })
    .await;
    let names = answered_by(&url, 4).await;
    assert!(names.contains(&"b".into()), "{names:?}");
}

#[tokio::test]
async fn endpoints_that_hang_or_refuse_are_out_without_any_traffic() {
    let hangs = Backend::new("hangs");
    hangs.set_health(0);
    let refuses = closed_port().await;
    let health = Health::new();
    let upstream = Upstream::builder("orders")
        .endpoint(hangs.spawn().await)
        .endpoint(format!("http://{refuses}"))
        .health_check(quick("/healthz").timeout(Duration::from_millis(100)))
        .build::<axum::body::Body>()
        .expect("an upstream");
    let _gateway = Gateway::builder()
        .upstream_service(upstream.clone())
        .route(Route::prefix("/").to("orders"))
        .health(health.clone())
        .build()
        .expect("a gateway");

    eventually("both endpoints are out", || async {
        upstream.healthy_endpoint_count() == 0
    })
    .await;
    assert!(hangs.probes() >= 2);
    let report = health.check().await;
    assert!(!report.is_ready());
    let check = report
        .check("upstream orders")
        .expect("the upstream's check");
    assert!(!check.is_ready());
    assert_eq!(
        check.detail(),
        Some(
            "no healthy endpoint: all 2 failing their health check or cooling off after a refused connection"
        )
    );
}

#[tokio::test]
async fn probes_send_the_path_host_and_expected_statuses() {
    let backend = Backend::new("a");
    let url = backend.spawn().await;
    let authority = url.trim_start_matches("http://").to_owned();
    // 200 is not among the expected statuses: the endpoint goes out.
    let upstream = Upstream::builder("users")
        .endpoint(url)
        .health_check(quick("/healthz?deep=1").expected_statuses([204]))
        .build::<axum::body::Body>()
        .expect("an upstream");
    eventually("the endpoint is out", || async {
        upstream.healthy_endpoint_count() == 0
    })
    .await;
    let (target, headers) = backend.last_probe.lock().unwrap().clone().expect("a probe");
    assert_eq!(target, "/healthz?deep=1");
    assert_eq!(headers["host"], authority.as_str(), "{headers}");
    assert_eq!(headers["user-agent"], "tollgate-health-check", "{headers}");
    assert_eq!(headers["connection"], "close", "{headers}");

    // Once 204 is what it answers, it is back.
    backend.set_health(204);
    eventually("the endpoint is back", || async {
        upstream.healthy_endpoint_count() == 1
    })
    .await;
    drop(upstream);

    // Another `Host`, and headers of one's own.
    let before = backend.probes();
    let _other = Upstream::builder("users")
        .endpoint(format!("http://{authority}"))
        .health_check(
            quick("/healthz")
                .host("health.internal")
                .header("x-probe", "deep"),
        )
        .build::<axum::body::Body>()
        .expect("an upstream");
    eventually("a probe with the new head", || async {
        backend.probes() > before + 2
    })
    .await;
    let (_, headers) = backend.last_probe.lock().unwrap().clone().expect("a probe");
    assert_eq!(headers["host"], "health.internal", "{headers}");
    assert_eq!(headers["x-probe"], "deep", "{headers}");
    assert_eq!(headers["user-agent"], "tollgate-health-check", "{headers}");
}

#[tokio::test]
async fn probing_stops_when_the_upstream_is_dropped() {
    let backend = Backend::new("a");
    let upstream = Upstream::builder("users")
        .endpoint(backend.spawn().await)
        .health_check(quick("/healthz"))
        .build::<axum::body::Body>()
        .expect("an upstream");
    eventually("probes arrive", || async { backend.probes() >= 2 }).await;
    drop(upstream);
    // A probe already sent may still land; then none.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = backend.probes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(backend.probes(), after, "probes went on after the drop");
}

#[tokio::test]
async fn health_checks_come_from_the_config_and_a_reload_replaces_them() {
    let (a, b) = (Backend::new("a"), Backend::new("b"));
    let (url_a, url_b) = (a.spawn().await, b.spawn().await);
    let config = |check: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[upstreams]]\nname = \"users\"\nendpoints = [\"{url_a}\", \"{url_b}\"]\n{check}\n\
             [[routes]]\nprefix = \"/\"\nto = \"users\"\n"
        )
    };
    let checked = config(
        "[upstreams.health_check]\npath = \"/healthz\"\ninterval = \"50ms\"\n\
         timeout = \"500ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 1\n\
         expected_statuses = [200]\n",
    );
    let parse = |text: &str| ConfigFile::parse_with(text, &|_| None).expect("parses");
    let server = Server::start(parse(&checked)).await.expect("starts");
    let admin = format!(
        "http://{}/readyz",
        server.admin_addr().expect("an admin listener")
    );
    let readyz = || async {
        let req = http::Request::get(&admin).body(empty()).unwrap();
        let res = client().request(req).await.expect("an answer");
        (res.status(), body_json(res).await)
    };

    a.set_health(500);
    eventually("b alone keeps the gateway ready", || async {
        a.probes() >= 2 && readyz().await.0 == 200
    })
    .await;
    // The endpoints' health is a metric of the admin listener.
    let metrics_url = admin.replace("/readyz", "/metrics");
    let metrics = || async {
        let req = http::Request::get(&metrics_url).body(empty()).unwrap();
        let res = client().request(req).await.expect("an answer");
        String::from_utf8(tollgate_tests::body_bytes(res).await.to_vec()).unwrap()
    };
    let sample = |url: &str, value: u8| {
        format!(
            "tollgate_upstream_endpoint_healthy{{upstream=\"users\",endpoint=\"{url}\"}} {value}\n"
        )
    };
    let text = metrics().await;
    assert!(text.contains(&sample(&url_a, 0)), "{text}");
    assert!(text.contains(&sample(&url_b, 1)), "{text}");

    b.set_health(500);
    eventually("/readyz fails", || async { readyz().await.0 == 503 }).await;
    let text = metrics().await;
    assert!(text.contains(&sample(&url_b, 0)), "{text}");

    // And `/upstreams` lists each endpoint's state.
    let upstreams_url = admin.replace("/readyz", "/upstreams");
    let req = http::Request::get(&upstreams_url).body(empty()).unwrap();
    let upstreams = body_json(client().request(req).await.expect("an answer")).await;
    assert_eq!(
        upstreams,
        json!({ "upstreams": [{
            "name": "users",
            "healthy_endpoints": 0,
            "endpoints": [
                { "endpoint": url_a, "healthy": false, "passing_health_check": false, "in_flight": 0, "weight": 1 },
                { "endpoint": url_b, "healthy": false, "passing_health_check": false, "in_flight": 0, "weight": 1 },
            ],
        }]}),
    );
    let (_, report) = readyz().await;
    assert!(
        report.to_string().contains("failing their health check"),
        "{report}"
    );

    // A reload that leaves the upstream as it was keeps it, with its
    // endpoints' state: still out at once. (Were it rebuilt, its endpoints
    // would start in, and stay in for the probes' 500 ms timeout: the
    // health endpoints now never answer.)
    a.set_health(0);
    b.set_health(0);
    let with_route = format!("{checked}\n[[routes]]\nprefix = \"/more\"\nto = \"users\"\n");
    server
        .reloader()
        .reload_from(parse(&with_route))
        .expect("reloads");
    assert_eq!(readyz().await.0, 503);

    // A reload without the check: the upstream is rebuilt, the old probes
    // stop, and the endpoints are in again.
    server
        .reloader()
        .reload_from(parse(&config("")))
        .expect("reloads");
    eventually("/readyz passes", || async { readyz().await.0 == 200 }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = (a.probes(), b.probes());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((a.probes(), b.probes()), after, "the old probes went on");
    server.shutdown().await.expect("clean shutdown");
}

/// The build error of an upstream `users` whose `[upstreams.health_check]`
/// table holds `check`.
fn health_check_error(check: &str) -> String {
    tollgate_tests::upstream_config_error(&format!("[upstreams.health_check]\n{check}"))
}

#[tokio::test]
async fn bad_health_check_settings_are_refused_at_their_key() {
    assert_eq!(
        health_check_error("path = \"healthz\""),
        "line 1: upstreams[0]: upstream \"users\": health_check: path \"healthz\" must start with /"
    );
    assert_eq!(
        health_check_error("path = \"/h\"\nheaders = { \"bad name\" = \"1\" }"),
        "line 1: upstreams[0]: upstream \"users\": health_check: headers: \"bad name\" is not a header name"
    );
    let text = "[[upstreams]]\nname = \"users\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
                [upstreams.health_check]\npath = \"/h\"\nfall = 3\n";
    let err = ConfigFile::parse_with(text, &|_| None)
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert!(
        err.starts_with("line 6: upstreams[0].health_check.fall: unknown field `fall`"),
        "{err}"
    );
}

/// An HTTPS endpoint behind a private CA whose certificate names only
/// `internal.example`: probes verify it with the upstream's CA file and TLS
/// server name; without the name they fail.
#[tokio::test]
async fn probes_use_the_upstreams_tls_settings() {
    let dir = Dir::new();
    let (tls, ca_file) = tls::internal_upstream(&dir);
    let backend = Backend::new("secure");
    let (tcp, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(tcp, backend.router(), std::future::pending())
            .tls(tls)
            .into_future(),
    );
    let endpoint = format!("https://localhost:{}", addr.port());
    let build = |name: Option<&str>| {
        let mut up = Upstream::builder("internal")
            .endpoint(&endpoint)
            .ca_file(&ca_file)
            .health_check(quick("/healthz").unhealthy_threshold(1));
        if let Some(name) = name {
            up = up.tls_server_name(name);
        }
        up.build::<axum::body::Body>().expect("an upstream")
    };
    let good = build(Some("internal.example"));
    eventually("probes arrive over TLS", || async { backend.probes() >= 3 }).await;
    assert_eq!(good.healthy_endpoint_count(), 1);
    drop(good);

    let wrong_name = build(None);
    eventually("a certificate for another name fails", || async {
        wrong_name.healthy_endpoint_count() == 0
    })
    .await;
}

/// A backend answering every request with `status`, counting them; 0
/// never answers.
async fn answering(status: Arc<AtomicU16>, count: Arc<AtomicUsize>) -> String {
    let router = Router::new().fallback(move || {
        let (status, count) = (status.clone(), count.clone());
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            match status.load(Ordering::SeqCst) {
                0 => std::future::pending::<StatusCode>().await,
                s => StatusCode::from_u16(s).unwrap(),
            }
        }
    });
    format!("http://{}", spawn_upstream(router).await)
}

/// Statuses of `n` requests to `url`.
async fn statuses(url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let req = http::Request::get(url).body(empty()).unwrap();
        out.push(
            client()
                .request(req)
                .await
                .expect("an answer")
                .status()
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn failed_responses_in_a_row_take_an_endpoint_out_until_the_ejection_ends() {
    let (good_status, good_count) = (Arc::new(AtomicU16::new(200)), Arc::default());
    let (bad_status, bad_count) = (Arc::new(AtomicU16::new(503)), Arc::<AtomicUsize>::default());
    let upstream = Upstream::builder("users")
        .endpoint(answering(good_status, Arc::clone(&good_count)).await)
        .endpoint(answering(Arc::clone(&bad_status), Arc::clone(&bad_count)).await)
        .balance(tollgate::Balance::RoundRobin)
        .passive_health_check(
            PassiveHealthCheck::new()
                .consecutive_failures(3)
                .ejection_time(Duration::from_secs(1)),
        )
        .build::<axum::body::Body>()
        .expect("an upstream");
    let gateway = serve_upstream(&upstream).await;
    let url = gateway.url("/x");

    // Round robin sends every other request to the failing endpoint until
    // its third 503; then it is out.
    let got = statuses(&url, 20).await;
    assert_eq!(got.iter().filter(|&&s| s == 503).count(), 3, "{got:?}");
    assert_eq!(bad_count.load(Ordering::SeqCst), 3);
    assert_eq!(upstream.healthy_endpoint_count(), 1);
    let status = upstream.endpoint_status();
    assert!(
        status[0].healthy && status[0].out_for.is_none(),
        "{status:?}"
    );
    assert!(
        !status[1].healthy && status[1].passing_health_check,
        "{status:?}"
    );
    assert!(
        status[1]
            .out_for
            .is_some_and(|d| d <= Duration::from_secs(1)),
        "{status:?}"
    );

    // The ejection ends; the endpoint, recovered, is back.
    bad_status.store(200, Ordering::SeqCst);
    eventually("the endpoint is back", || async {
        upstream.healthy_endpoint_count() == 2
    })
    .await;
    statuses(&url, 4).await;
    assert!(bad_count.load(Ordering::SeqCst) > 3);
}

#[tokio::test]
async fn response_timeouts_count_as_failures() {
    let (ok, ok_count) = (Arc::new(AtomicU16::new(200)), Arc::default());
    let (hangs, hang_count) = (Arc::new(AtomicU16::new(0)), Arc::<AtomicUsize>::default());
    let upstream = Upstream::builder("users")
        .endpoint(answering(ok, ok_count).await)
        .endpoint(answering(hangs, Arc::clone(&hang_count)).await)
        .balance(tollgate::Balance::RoundRobin)
        .response_timeout(Some(Duration::from_millis(100)))
        .passive_health_check(PassiveHealthCheck::new().consecutive_failures(2))
        .build::<axum::body::Body>()
        .expect("an upstream");
    let gateway = serve_upstream(&upstream).await;
    let got = statuses(&gateway.url("/x"), 12).await;
    assert_eq!(got.iter().filter(|&&s| s == 504).count(), 2, "{got:?}");
    assert_eq!(hang_count.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.healthy_endpoint_count(), 1);
}

#[tokio::test]
async fn the_passive_check_comes_from_the_config() {
    let (bad, bad_count) = (Arc::new(AtomicU16::new(500)), Arc::<AtomicUsize>::default());
    let endpoint = answering(bad, Arc::clone(&bad_count)).await;
    let (good, good_count) = (Arc::new(AtomicU16::new(200)), Arc::default());
    let other = answering(good, good_count).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = false\n\n\
         [[upstreams]]\nname = \"users\"\nendpoints = [\"{endpoint}\", \"{other}\"]\n\
         balance = \"round_robin\"\n\
         passive_health_check = {{ consecutive_failures = 2, ejection_time = \"10m\", failure_statuses = [500] }}\n\n\
         [[routes]]\nprefix = \"/\"\nto = \"users\"\n"
    );
    let server = Server::start(ConfigFile::parse_with(&text, &|_| None).expect("parses"))
        .await
        .expect("starts");
    let got = statuses(&format!("http://{}/x", server.local_addr()), 10).await;
    assert_eq!(got.iter().filter(|&&s| s == 500).count(), 2, "{got:?}");
    assert_eq!(bad_count.load(Ordering::SeqCst), 2);

    assert_eq!(
        tollgate_tests::upstream_config_error(
            "passive_health_check = { consecutive_failures = 0 }"
        ),
        "line 1: upstreams[0]: upstream \"users\": passive_health_check: consecutive_failures must be at least 1"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[test]
fn an_active_check_needs_a_runtime_and_says_so() {
    let err = Upstream::builder("users")
        .endpoint("http://127.0.0.1:1")
        .health_check(HealthCheck::new("/healthz"))
        .build::<axum::body::Body>()
        .expect_err("no runtime")
        .to_string();
    assert_eq!(
        err,
        "upstream \"users\": health_check: endpoints are probed in the background: build inside a tokio runtime"
    );
}

/// Application errors that make every endpoint answer 500 eject them all,
/// and requests still go to them (all out means all tried); readiness does
/// not fail for it: every gateway instance sees the same 500s, and failing
/// them all would take the whole fleet away.
#[tokio::test]
async fn passive_ejections_do_not_fail_readiness() {
    let (status, count) = (Arc::new(AtomicU16::new(500)), Arc::<AtomicUsize>::default());
    let endpoint = answering(status, Arc::clone(&count)).await;
    let health = Health::new();
    let upstream = Upstream::builder("users")
        .endpoint(endpoint)
        .passive_health_check(PassiveHealthCheck::new().consecutive_failures(2))
        .build::<axum::body::Body>()
        .expect("an upstream");
    let gateway = Gateway::builder()
        .upstream_service(upstream.clone())
        .route(Route::prefix("/").to("users"))
        .health(health.clone())
        .build()
        .expect("a gateway");
    let gateway = spawn_gateway(gateway).await;
    assert_eq!(statuses(&gateway.url("/x"), 4).await, [500; 4]);
    assert_eq!(count.load(Ordering::SeqCst), 4, "all out: all tried");
    assert_eq!(upstream.healthy_endpoint_count(), 0, "ejected");
    let report = health.check().await;
    assert!(report.is_ready(), "{:?}", report.to_json());
}

#[tokio::test]
async fn an_endpoint_listed_twice_is_refused() {
    let err = Upstream::builder("users")
        .endpoint("http://127.0.0.1:9001")
        .endpoint("http://127.0.0.1:9001/")
        .build::<axum::body::Body>()
        .expect_err("refused")
        .to_string();
    assert_eq!(
        err,
        "upstream \"users\": endpoint \"http://127.0.0.1:9001/\" is listed twice"
    );
}

/// Two backends of weights 3 and 1 and a third of weight 0, from the
/// config file: round robin sends exactly 300 and 100 of 400 requests,
/// least request about as many; the weight-0 one gets none, yet is probed
/// and listed by `/upstreams`, and `/config` shows the weights.
#[tokio::test]
async fn endpoint_weights_share_the_traffic_and_weight_zero_gets_none() {
    let (heavy, light, drained) = (
        Backend::new("heavy"),
        Backend::new("light"),
        Backend::new("drained"),
    );
    let (url_h, url_l, url_d) = (
        heavy.spawn().await,
        light.spawn().await,
        drained.spawn().await,
    );
    let endpoints = format!(
        "[{{ url = \"{url_h}\", weight = 3 }}, \"{url_l}\", {{ url = \"{url_d}\", weight = 0 }}]"
    );
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"rr\"\nendpoints = {endpoints}\nbalance = \"round_robin\"\n\
         health_check = {{ path = \"/healthz\", interval = \"50ms\" }}\n\n\
         [[upstreams]]\nname = \"lr\"\nendpoints = {endpoints}\nbalance = \"least_request\"\n\n\
         [[routes]]\nprefix = \"/rr\"\nto = \"rr\"\n\n[[routes]]\nprefix = \"/lr\"\nto = \"lr\"\n"
    );
    let server = Server::start(ConfigFile::parse_with(&text, &|_| None).expect("parses"))
        .await
        .expect("starts");
    let base = format!("http://{}", server.local_addr());
    let served = || [&heavy, &light, &drained].map(|b| b.served.load(Ordering::SeqCst));

    answered_by(&format!("{base}/rr/x"), 400).await;
    assert_eq!(served(), [300, 100, 0], "round robin");

    answered_by(&format!("{base}/lr/x"), 400).await;
    let [h, l, d] = served();
    let (h, l) = (h - 300, l - 100);
    assert_eq!((h + l, d), (400, 0), "least request");
    // 300 expected; the standard deviation is under 9.
    assert!(
        (240..=360).contains(&h),
        "least request: {h} of 400 to weight 3"
    );

    // Weight 0 keeps the endpoint: probed, and listed with its weight.
    eventually("the weight-0 endpoint is probed", || async {
        drained.probes() >= 2
    })
    .await;
    let admin = format!("http://{}", server.admin_addr().expect("an admin listener"));
    let req = http::Request::get(format!("{admin}/upstreams"))
        .body(empty())
        .unwrap();
    let upstreams = body_json(client().request(req).await.expect("an answer")).await;
    let endpoint = |url: &str, weight: u32| json!({ "endpoint": url, "healthy": true, "passing_health_check": true, "in_flight": 0, "weight": weight });
    assert_eq!(
        upstreams["upstreams"][0],
        json!({
            "name": "rr",
            "healthy_endpoints": 3,
            "endpoints": [endpoint(&url_h, 3), endpoint(&url_l, 1), endpoint(&url_d, 0)],
        }),
    );

    // The effective config shows each endpoint as written.
    let req = http::Request::get(format!("{admin}/config"))
        .body(empty())
        .unwrap();
    let shown = body_json(client().request(req).await.expect("an answer")).await;
    assert_eq!(
        shown["upstreams"][0]["endpoints"],
        json!([{ "url": url_h, "weight": 3 }, url_l, { "url": url_d, "weight": 0 }]),
    );
    server.shutdown().await.expect("clean shutdown");
}
