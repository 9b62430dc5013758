//! The declarative config file: every sample parses and builds, bad files
//! give exact errors, a gateway runs from a file, reloads keep state, and
//! bad reloads keep the running config.

#![expect(clippy::expect_used, reason = "test helpers outside #[test] fns")]

use std::{collections::HashMap, path::PathBuf};

use http::{Request, StatusCode};
use serde_json::Value;
use tollgate::config::{ConfigFile, Server};
use tollgate_tests::{
    client, config_head, config_head_with, empty, get_json, named_echo_router, spawn_upstream,
};

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/configs")
}

fn env_from(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    move |name| map.get(name).cloned()
}

/// A self-signed certificate for `api.test`, written once per test run:
/// (the certificate, its PEM file, its key file).
fn test_cert() -> &'static (rcgen::CertifiedKey<rcgen::KeyPair>, PathBuf, PathBuf) {
    static CERT: std::sync::OnceLock<(rcgen::CertifiedKey<rcgen::KeyPair>, PathBuf, PathBuf)> =
        std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tollgate-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = rcgen::generate_simple_self_signed(vec!["api.test".to_owned()]).expect("cert");
        let (cert_file, key_file) = (dir.join("gw.pem"), dir.join("gw.key"));
        std::fs::write(&cert_file, cert.cert.pem()).expect("write cert");
        std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("write key");
        (cert, cert_file, key_file)
    })
}

/// The values the samples take from the environment, for a test run.
fn sample_env() -> Vec<(&'static str, String)> {
    let (_, cert_file, key_file) = test_cert();
    vec![
        ("LISTEN_ADDR", "127.0.0.1:0".into()),
        ("ADMIN_ADDR", "127.0.0.1:0".into()),
        ("REDIRECT_ADDR", "127.0.0.1:0".into()),
        ("UPSTREAM_URL", "http://127.0.0.1:9".into()),
        (
            "BENCH_JWT_SECRET",
            "a-bench-secret-of-thirty-two-bytes!".into(),
        ),
        ("TLS_CERT_FILE", cert_file.display().to_string()),
        ("TLS_KEY_FILE", key_file.display().to_string()),
        ("BENCH_CERT", cert_file.display().to_string()),
        ("BENCH_KEY", key_file.display().to_string()),
        ("TLS_SERVER_NAME", "api.test".to_owned()),
        (
            "JWT_SECRET",
            "a-jwt-secret-of-at-least-32-bytes!!".to_owned(),
        ),
        ("API_KEY", "demo-key-0123456789".to_owned()),
    ]
}

#[tokio::test]
async fn every_sample_config_parses_and_builds() {
    let mut seen = 0;
    let env = env_from(&sample_env());
    for entry in std::fs::read_dir(samples_dir()).expect("examples/configs") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read sample");
        let file = ConfigFile::parse_with(&text, &env)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Everything `--check` does: the TLS files and every layer.
        file.tls_config()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let _router = file
            .build()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(
        seen >= 1,
        "no sample configs found in {}",
        samples_dir().display()
    );
}

fn parse_err(text: &str) -> String {
    ConfigFile::parse_with(text, &|_| None)
        .and_then(|f| f.build().map(|_| ()))
        .expect_err("the config must be refused")
        .to_string()
}

#[test]
fn bad_configs_name_the_line_and_the_key() {
    let upstream = "[[upstreams]]\nname = \"users\"\nendpoints = [\"http://127.0.0.1:1\"]\n";

    // An unknown key, deep in a route.
    let text = format!(
        "{upstream}\n[[routes]]\nprefix = \"/a\"\nto = \"users\"\nrewrite = \"keep\"\nretries = 3\n"
    );
    assert_eq!(
        parse_err(&text),
        "line 9: routes[0].retries: unknown field `retries`, expected one of `name`, `prefix`, `hosts`, \
         `methods`, `headers`, `headers_present`, `to`, `split`, `split_override_header`, \
         `rewrite`, `concurrency_limit`, `compression`, `cors`, `body_limit`, `header_limit`, `auth`, \
         `rate_limit`, `transform_request`, `transform_request_by_class`, `transform_response`, \
         `transform_response_by_class`"
    );

    // A value of the wrong type.
    assert_eq!(
        parse_err("[server]\nlisten = \"localhost\"\n"),
        "line 2: server.listen: invalid socket address syntax"
    );

    // A duration that is not one.
    assert_eq!(
        parse_err(&format!("{upstream}connect_timeout = \"5 parsecs\"\n")),
        "line 4: upstreams[0].connect_timeout: bad duration \"5 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"
    );

    // A route to an upstream that does not exist: a build error, placed.
    let text =
        format!("{upstream}\n[[routes]]\nname = \"orders\"\nprefix = \"/o\"\nto = \"orders\"\n");
    assert_eq!(
        parse_err(&text),
        "line 5: routes[0]: route \"orders\" (/o): unknown upstream \"orders\""
    );

    // A bad quota inside a rate limit.
    let text = format!(
        "{upstream}\n[[routes]]\nprefix = \"/o\"\nto = \"users\"\n\n[routes.rate_limit]\n\
         plans = [{{ name = \"free\", quotas = [{{ count = 5, per = \"fortnight\" }}] }}]\n"
    );
    let err = parse_err(&text);
    assert!(
        err.starts_with(
            "line 10: routes[0].rate_limit.plans[0].quotas[0].per: unknown variant `fortnight`"
        ),
        "{err}"
    );

    // A secret that is not in the environment.
    assert_eq!(
        parse_err("[[upstreams]]\nname = \"u\"\nendpoints = [\"${UPSTREAM_URL}\"]\n"),
        "line 3: environment variable UPSTREAM_URL is not set"
    );

    // A relative key-set URL: the URL parser's message, at its key.
    let text = "[auth.providers.users]\ntype = \"jwt\"\n\n[[auth.providers.users.issuers]]\n\
                algorithms = [\"RS256\"]\njwks_url = \"/jwks.json\"\n";
    assert_eq!(
        parse_err(text),
        "line 6: auth.providers.users.issuers[0].jwks_url: relative URL without a base"
    );

    // A route naming a provider that does not exist.
    let text = format!(
        "{upstream}\n[[routes]]\nprefix = \"/o\"\nto = \"users\"\nauth = {{ providers = [\"ldap\"] }}\n"
    );
    let err = parse_err(&text);
    assert!(err.starts_with("line 8: routes[0].auth: "), "{err}");
    assert!(err.contains("unknown auth provider \"ldap\""), "{err}");

    // An HTTP/2 window past what the protocol allows.
    assert_eq!(
        parse_err("[server.http2]\ninitial_stream_window_size = 4294967295\n"),
        "line 2: server.http2.initial_stream_window_size: 4294967295 is not within 65535..=2147483647"
    );

    // An HTTP/2 ping interval shorter than a second.
    assert_eq!(
        parse_err("[server.http2]\nkeep_alive_interval = \"10ms\"\n"),
        "line 2: server.http2.keep_alive_interval: 10ms is shorter than 1s"
    );

    // A connection limit of zero would serve nothing.
    assert_eq!(
        parse_err("[server]\nmax_connections = 0\n"),
        "line 2: server.max_connections: invalid value: integer `0`, expected a nonzero usize"
    );

    // A head limit under hyper's smallest read buffer, and no headers at all.
    assert_eq!(
        parse_err("[server]\nmax_header_size = 4096\n"),
        "line 2: server.max_header_size: 4096 is under 8192 bytes"
    );
    assert_eq!(
        parse_err("[server]\nmax_headers = 0\n"),
        "line 2: server.max_headers: invalid value: integer `0`, expected a nonzero usize"
    );

    // A TLS version tollgate does not speak.
    assert_eq!(
        parse_err("[server.tls]\ncertificates = []\nmin_version = \"1.1\"\n"),
        "line 3: server.tls.min_version: unknown variant `1.1`, expected `1.2` or `1.3`"
    );

    // A connection age under a second would close connections before
    // their first request.
    assert_eq!(
        parse_err("[server]\nmax_connection_age = \"500ms\"\n"),
        "line 2: server.max_connection_age: 500ms is shorter than 1s"
    );

    // A PROXY protocol peer that is neither a network nor an address.
    assert_eq!(
        parse_err("[server.proxy_protocol]\nallow_from = [\"10.0.0.0/8\", \"balancer\"]\n"),
        "line 2: server.proxy_protocol.allow_from: \"balancer\" is not a network or an IP address"
    );
    assert_eq!(
        parse_err("[server.proxy_protocol]\nversion = 2\n"),
        "line 2: server.proxy_protocol.version: unknown field `version`, expected `allow_from` or `others`"
    );
    assert_eq!(
        parse_err("[server.proxy_protocol]\nothers = \"open\"\n"),
        "line 2: server.proxy_protocol.others: unknown variant `open`, expected `close` or `direct`"
    );

    // Not TOML at all.
    assert!(parse_err("[server\nlisten = 1\n").starts_with("line 1: "));
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("tollgate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[admin]\nenabled = \"yes\"\n").expect("write");
    let err = ConfigFile::load(&path).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: admin.enabled: invalid type: string \"yes\", expected a boolean",
            path.display()
        )
    );
    let missing = ConfigFile::load(dir.join("missing.toml")).expect_err("refused");
    assert!(
        missing.to_string().contains("cannot read the file"),
        "{missing}"
    );
}

async fn get(url: String, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let (status, _, body) = get_json(url, headers).await;
    (status, body)
}

#[tokio::test]
async fn the_seed_routing_table_runs_from_its_sample() {
    let mut env = sample_env();
    for name in ["users", "orders", "products", "v2"] {
        let addr = spawn_upstream(named_echo_router(name)).await;
        let key = match name {
            "users" => "USERS_URL",
            "orders" => "ORDERS_URL",
            "products" => "PRODUCTS_URL",
            _ => "V2_URL",
        };
        env.push((key, format!("http://{addr}")));
    }
    let text = std::fs::read_to_string(samples_dir().join("seed-routing.toml")).expect("sample");
    let file = ConfigFile::parse_with(&text, &env_from(&env)).expect("parses");
    let server = Server::start(file).await.expect("starts");
    let base = format!("http://{}", server.local_addr());

    for (path, upstream, uri) in [
        ("/api/users/42", "users", "/users/42"),
        ("/api/orders/7?x=1", "orders", "/orders/7?x=1"),
        ("/api/products", "products", "/products"),
        ("/api/v2/users/42", "v2", "/users/42"),
    ] {
        let (status, body) = get(format!("{base}{path}"), &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["upstream"], upstream, "{path}");
        assert_eq!(body["uri"], uri, "{path}");
    }
    let (_, body) = get(format!("{base}/api/users/42"), &[("x-api-version", "2")]).await;
    assert_eq!(
        (body["upstream"].as_str(), body["uri"].as_str()),
        (Some("v2"), Some("/users/42"))
    );
    let (status, body) = get(format!("{base}/api/nothing"), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], 404);

    let admin = server.admin_addr().expect("admin runs");
    let res = client()
        .request(
            Request::get(format!("http://{admin}/healthz"))
                .body(empty())
                .expect("req"),
        )
        .await
        .expect("admin answers");
    assert_eq!(res.status(), 200);
    server.shutdown().await.expect("clean shutdown");
}

fn limited(extra_route: &str, per_minute: u32, upstream: &str) -> String {
    let head = config_head("users", upstream);
    format!(
        r#"{head}
[[routes]]
name = "users"
prefix = "/api/users"
to = "users"
rewrite = {{ replace_prefix = "/users" }}

[routes.rate_limit]
key = [["client_ip"]]
plans = [{{ name = "all", quotas = [{{ count = {per_minute}, per = "minute" }}] }}]
default_plan = "all"
{extra_route}
"#
    )
}

#[tokio::test]
async fn a_reload_swaps_routes_and_keeps_counters_of_unchanged_limits() {
    let users = spawn_upstream(named_echo_router("users")).await;
    let upstream = format!("http://{users}");
    let file = ConfigFile::parse(&limited("", 2, &upstream)).expect("parses");
    let server = Server::start(file).await.expect("starts");
    let base = format!("http://{}", server.local_addr());
    let reloader = server.reloader().clone();

    assert_eq!(get(format!("{base}/api/users/1"), &[]).await.0, 200);
    assert_eq!(get(format!("{base}/api/users/2"), &[]).await.0, 200);
    assert_eq!(get(format!("{base}/api/other"), &[]).await.0, 404);

    // A new route; the users route and its limit are unchanged.
    let other = "\n[[routes]]\nname = \"other\"\nprefix = \"/api/other\"\nto = \"users\"\n";
    reloader
        .reload_from(ConfigFile::parse(&limited(other, 2, &upstream)).expect("parses"))
        .expect("reload applies");
    let (status, body) = get(format!("{base}/api/other"), &[]).await;
    assert_eq!(
        (status, body["uri"].as_str()),
        (StatusCode::OK, Some("/api/other"))
    );
    // The third request of the minute is refused: the counter survived.
    let (status, body) = get(format!("{base}/api/users/3"), &[]).await;
    assert_eq!(status, 429, "{body}");

    // Changing the limit itself starts it afresh.
    reloader
        .reload_from(ConfigFile::parse(&limited(other, 3, &upstream)).expect("parses"))
        .expect("reload applies");
    assert_eq!(get(format!("{base}/api/users/4"), &[]).await.0, 200);
    server.shutdown().await.expect("clean shutdown");
}

/// An echo upstream that counts the TCP connections it accepted.
async fn counting_upstream(
    name: &str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use axum::serve::ListenerExt;
    use std::sync::{Arc, atomic::AtomicUsize, atomic::Ordering};
    let (listener, addr) = tollgate_tests::listener().await;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let listener = listener.tap_io(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let router = named_echo_router(name);
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, count)
}

#[tokio::test]
async fn a_reload_keeps_the_connection_pool_of_an_unchanged_upstream() {
    use std::sync::atomic::Ordering;
    let (users, users_conns) = counting_upstream("users").await;
    let (orders, orders_conns) = counting_upstream("orders").await;
    let config = |orders_timeout: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
enabled = false

[[upstreams]]
name = "users"
endpoints = ["http://{users}"]

[[upstreams]]
name = "orders"
endpoints = ["http://{orders}"]
connect_timeout = "{orders_timeout}"

[[routes]]
prefix = "/users"
to = "users"

[[routes]]
prefix = "/orders"
to = "orders"
"#
        )
    };
    let server = Server::start(ConfigFile::parse(&config("2s")).expect("parses"))
        .await
        .expect("starts");
    let base = format!("http://{}", server.local_addr());
    // Sequential requests: one pooled connection to each upstream.
    for _ in 0..3 {
        assert_eq!(get(format!("{base}/users/1"), &[]).await.0, 200);
        assert_eq!(get(format!("{base}/orders/1"), &[]).await.0, 200);
    }
    assert_eq!(users_conns.load(Ordering::SeqCst), 1);
    assert_eq!(orders_conns.load(Ordering::SeqCst), 1);

    // Only `orders` changes: its pool starts afresh, `users` keeps its own.
    server
        .reloader()
        .reload_from(ConfigFile::parse(&config("3s")).expect("parses"))
        .expect("applies");
    for _ in 0..3 {
        assert_eq!(get(format!("{base}/users/1"), &[]).await.0, 200);
        assert_eq!(get(format!("{base}/orders/1"), &[]).await.0, 200);
    }
    assert_eq!(
        users_conns.load(Ordering::SeqCst),
        1,
        "the users pool was kept"
    );
    assert_eq!(
        orders_conns.load(Ordering::SeqCst),
        2,
        "the orders pool is new"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    use axum::{Router, routing::get as get_route};
    use std::time::Duration;
    // A slow upstream: the request is in flight while the reload happens.
    let slow = spawn_upstream(Router::new().route(
        "/slow",
        get_route(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        }),
    ))
    .await;
    let config = |prefix: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = false\n\
             [[upstreams]]\nname = \"slow\"\nendpoints = [\"http://{slow}\"]\n\
             [[routes]]\nprefix = \"{prefix}\"\nto = \"slow\"\nrewrite = {{ replace_prefix = \"/slow\" }}\n"
        )
    };
    let server = Server::start(ConfigFile::parse(&config("/old")).expect("parses"))
        .await
        .expect("starts");
    let base = format!("http://{}", server.local_addr());
    let in_flight = tokio::spawn({
        let url = format!("{base}/old");
        async move {
            let res = client()
                .request(Request::get(url).body(empty()).expect("request"))
                .await
                .expect("response");
            (res.status(), tollgate_tests::body_bytes(res).await)
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .reloader()
        .reload_from(ConfigFile::parse(&config("/new")).expect("parses"))
        .expect("applies");
    let (status, body) = in_flight.await.expect("joined");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"done"[..]));
    assert_eq!(get(format!("{base}/old"), &[]).await.0, 404);
    assert_eq!(
        client()
            .request(
                Request::get(format!("{base}/new"))
                    .body(empty())
                    .expect("request")
            )
            .await
            .expect("response")
            .status(),
        200
    );
    server.shutdown().await.expect("clean shutdown");
}

/// `server.max_connections` reaches the listener: past it, a connection
/// waits unserved until an open one closes.
#[tokio::test]
async fn the_connection_limit_comes_from_the_config() {
    use axum::{Router, routing::get as get_route};
    use std::time::Duration;
    use tokio::{io::AsyncWriteExt, net::TcpStream, time::timeout};

    let upstream = spawn_upstream(Router::new().route("/x", get_route(|| async { "x" }))).await;
    let mut text = config_head_with("max_connections = 1\n", "u", &format!("http://{upstream}"));
    text.push_str("[[routes]]\nprefix = \"/\"\nto = \"u\"\n");
    let server = Server::start(ConfigFile::parse(&text).expect("parses"))
        .await
        .expect("starts");
    let addr = server.local_addr();
    let request = b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n";
    async fn answer(stream: &mut TcpStream) -> String {
        let read = timeout(Duration::from_secs(10), tollgate_tests::read_head(stream));
        read.await.expect("in time").expect("a head").0
    }

    let mut open = TcpStream::connect(addr).await.expect("connect");
    open.write_all(request).await.expect("write");
    let first = answer(&mut open).await;
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");

    let mut waiting = TcpStream::connect(addr).await.expect("connect");
    waiting.write_all(request).await.expect("write");
    let early = timeout(
        Duration::from_millis(300),
        tollgate_tests::read_head(&mut waiting),
    )
    .await;
    assert!(early.is_err(), "answered past the limit: {early:?}");

    drop(open);
    let second = answer(&mut waiting).await;
    assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
    drop(waiting);
    server.shutdown().await.expect("clean shutdown");
}

/// `server.max_header_size` and `server.max_headers` reach the listener.
#[tokio::test]
async fn the_head_limits_come_from_the_config() {
    use axum::{Router, routing::get as get_route};
    use tokio::{io::AsyncWriteExt, net::TcpStream};

    let upstream = spawn_upstream(Router::new().route("/x", get_route(|| async { "x" }))).await;
    let mut text = config_head_with(
        "max_header_size = 10000\nmax_headers = 5\n",
        "u",
        &format!("http://{upstream}"),
    );
    text.push_str("[[routes]]\nprefix = \"/\"\nto = \"u\"\n");
    let server = Server::start(ConfigFile::parse(&text).expect("parses"))
        .await
        .expect("starts");
    let addr = server.local_addr();
    async fn status_of(addr: std::net::SocketAddr, extra: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!("GET /x HTTP/1.1\r\nHost: gw\r\n{extra}\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tollgate_tests::read_head(&mut stream),
        );
        let head = read.await.expect("in time").expect("a head").0;
        head.lines().next().unwrap_or_default().to_owned()
    }
    // Over twice the limit: refused however hyper's reads fall.
    let big = format!("X-Big: {}\r\n", "a".repeat(25_000));
    assert_eq!(
        status_of(addr, &big).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let many = "A: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n";
    assert_eq!(
        status_of(addr, many).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(status_of(addr, "A: 1\r\n").await, "HTTP/1.1 200 OK");
    server.shutdown().await.expect("clean shutdown");
}

/// `server.body_read_timeout` reaches the listener: a stalled body gets
/// its 408 after the configured time.
#[tokio::test]
async fn the_body_read_timeout_comes_from_the_config() {
    use axum::{Router, body::Bytes, routing::post};

    let upstream =
        spawn_upstream(Router::new().route("/up", post(|body: Bytes| async move { body }))).await;
    let mut text = config_head_with(
        "body_read_timeout = \"300ms\"\nsend_timeout = \"7s\"\n",
        "u",
        &format!("http://{upstream}"),
    );
    text.push_str("[[routes]]\nprefix = \"/\"\nto = \"u\"\n");
    let file = ConfigFile::parse(&text).expect("parses");
    assert_eq!(
        file.config().server.send_timeout,
        std::time::Duration::from_secs(7)
    );
    let server = Server::start(file).await.expect("starts");
    let answer = tollgate_tests::raw_exchange(
        server.local_addr(),
        b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nhalf",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer.contains("urn:tollgate:problem:request-timeout"),
        "{answer}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_tls_sample_terminates_https_redirects_and_sets_hsts() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (cert, _, _) = test_cert();
    let app = spawn_upstream(named_echo_router("app")).await;
    let mut env = sample_env();
    env.push(("UPSTREAM_URL", format!("http://{app}")));
    let text = std::fs::read_to_string(samples_dir().join("tls.toml")).expect("sample");
    let file = ConfigFile::parse_with(&text, &env_from(&env)).expect("parses");
    let server = Server::start(file).await.expect("starts");

    // HTTPS, HTTP/1.1 over rustls, trusting the test certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("api.test").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{answer}"
    );
    assert!(answer.contains("\"upstream\":\"app\""), "{answer}");

    // Plain HTTP on the redirect listener: 308 to https on the TLS port.
    let redirect = server.redirect_addr().expect("redirect listener");
    let res = client()
        .request(
            Request::get(format!("http://{redirect}/hello?x=1"))
                .header("host", "api.test")
                .body(empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers()["location"],
        format!("https://api.test:{}/hello?x=1", server.local_addr().port()).as_str()
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_admin_listener_serves_readiness_and_the_redacted_config_across_reloads() {
    let users = spawn_upstream(named_echo_router("users")).await;
    let config = |extra: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

[observe]
access_log = "off"

[[upstreams]]
name = "users"
endpoints = ["http://{users}"]

[[routes]]
name = "users"
prefix = "/api/users"
to = "users"
[routes.transform_request]
headers = [{{ set = {{ name = "x-internal-token", value = "${{INTERNAL_TOKEN}}" }} }}]
{extra}
"#
        )
    };
    let env = env_from(&[("INTERNAL_TOKEN", "tok-0123456789".to_owned())]);
    let server = Server::start(ConfigFile::parse_with(&config(""), &env).expect("parses"))
        .await
        .expect("starts");
    let admin = format!("http://{}", server.admin_addr().expect("admin runs"));

    let (status, ready) = get(format!("{admin}/readyz"), &[]).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"][0]["name"], "upstream users");

    let (status, shown) = get(format!("{admin}/config"), &[]).await;
    assert_eq!(status, 200);
    let headers = &shown["routes"][0]["transform_request"]["headers"][0]["set"];
    assert_eq!(headers["name"], "x-internal-token");
    assert_eq!(headers["value"], "[redacted]");
    assert!(!shown.to_string().contains("tok-0123456789"), "{shown}");

    let before = format!("http://{}/api/users/0", server.local_addr());
    assert_eq!(get(before, &[]).await.0, 200);

    // The upstream's only endpoint goes away on reload: not ready, and
    // /config follows.
    let extra = "\n[[upstreams]]\nname = \"gone\"\nendpoints = [\"http://127.0.0.1:9\"]\ncooloff = \"10m\"\n\n[[routes]]\nprefix = \"/gone\"\nto = \"gone\"\n";
    server
        .reloader()
        .reload_from(ConfigFile::parse_with(&config(extra), &env).expect("parses"))
        .expect("applies");
    let base = format!("http://{}", server.local_addr());
    assert_eq!(get(format!("{base}/gone"), &[]).await.0, 502);
    let (status, ready) = get(format!("{admin}/readyz"), &[]).await;
    assert_eq!(status, 503, "{ready}");
    let names: Vec<_> = ready["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["ready"].as_bool(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("upstream users".to_owned(), Some(true)),
            ("upstream gone".to_owned(), Some(false))
        ]
    );
    let (_, shown) = get(format!("{admin}/config"), &[]).await;
    assert_eq!(shown["upstreams"][1]["name"], "gone");

    // One metrics registry across builds: the request before the reload
    // and the one after are both counted.
    assert_eq!(get(format!("{base}/api/users/1"), &[]).await.0, 200);
    let res = client()
        .request(
            Request::get(format!("{admin}/metrics"))
                .body(empty())
                .expect("request"),
        )
        .await
        .expect("response");
    let text = String::from_utf8_lossy(&tollgate_tests::body_bytes(res).await).into_owned();
    let users = tollgate_tests::observe_support::requests_total(&text, "users", "GET", "200");
    assert_eq!(users, Some(2.0), "{text}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn upstream_retries_come_from_the_config() {
    let ok = spawn_upstream(named_echo_router("ok")).await;
    let closed = {
        let (listener, addr) = tollgate_tests::listener().await;
        drop(listener);
        addr
    };
    let config = |retries: u32| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = false\n\n\
             [[upstreams]]\nname = \"users\"\nendpoints = [\"http://{closed}\", \"http://{ok}\"]\n\
             balance = \"round_robin\"\nretries = {retries}\nretry_on_statuses = [502, 503]\n\n\
             [[routes]]\nprefix = \"/\"\nto = \"users\"\n"
        )
    };
    for (retries, want) in [(0, StatusCode::BAD_GATEWAY), (1, StatusCode::OK)] {
        let file = ConfigFile::parse_with(&config(retries), &|_| None).expect("parses");
        let server = Server::start(file).await.expect("starts");
        // The first request picks the endpoint that refuses.
        let req = Request::get(format!("http://{}/x", server.local_addr()))
            .body(empty())
            .expect("a request");
        let res = client().request(req).await.expect("an answer");
        assert_eq!(res.status(), want, "retries = {retries}");
        server.shutdown().await.expect("clean shutdown");
    }
    assert_eq!(
        tollgate_tests::upstream_config_error("retry_on_statuses = [600]"),
        "line 1: upstreams[0]: upstream \"users\": retry_on_statuses: 600 is not an HTTP status"
    );
}

#[test]
fn endpoints_are_urls_or_tables_with_a_weight() {
    let text = "[[upstreams]]\nname = \"users\"\n\
                endpoints = [\"http://127.0.0.1:1\", { url = \"http://127.0.0.1:2\", weight = 3 }, \
                { url = \"http://127.0.0.1:3\" }, { url = \"http://127.0.0.1:4\", weight = 0 }]\n";
    let file = ConfigFile::parse_with(text, &|_| None).expect("parses");
    let weights: Vec<(&str, u32)> = file.config().upstreams[0]
        .endpoints
        .iter()
        .map(|e| (e.url.as_str(), e.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("http://127.0.0.1:1", 1),
            ("http://127.0.0.1:2", 3),
            ("http://127.0.0.1:3", 1),
            ("http://127.0.0.1:4", 0),
        ]
    );
    let _router = file.build().expect("builds");

    let endpoints_error = |endpoints: &str| {
        tollgate_tests::config_error(&format!(
            "[[upstreams]]\nname = \"users\"\nendpoints = {endpoints}\n"
        ))
    };
    assert_eq!(
        endpoints_error("[\"http://127.0.0.1:1\", { url = \"http://127.0.0.1:2\", weight = -1 }]"),
        "line 3: upstreams[0].endpoints[1].weight: invalid value: integer `-1`, expected u32"
    );
    assert_eq!(
        endpoints_error("[{ url = \"http://127.0.0.1:1\", weight = 1001 }]"),
        "line 3: upstreams[0].endpoints[0].weight: 1001 is above the maximum weight, 1000"
    );
    assert_eq!(
        endpoints_error("[{ url = \"http://127.0.0.1:1\", wieght = 2 }]"),
        "line 3: upstreams[0].endpoints[0].wieght: unknown field `wieght`, expected `url` or `weight`"
    );
    assert_eq!(
        endpoints_error("[{ weight = 2 }]"),
        "line 3: upstreams[0].endpoints[0]: missing field `url`"
    );
    assert_eq!(
        endpoints_error("[8080]"),
        "line 3: upstreams[0].endpoints[0]: invalid type: integer `8080`, expected an endpoint URL or a table { url, weight }"
    );
    assert_eq!(
        endpoints_error(
            "[{ url = \"http://127.0.0.1:1\", weight = 0 }, { url = \"http://127.0.0.1:2\", weight = 0 }]"
        ),
        "line 1: upstreams[0]: upstream \"users\": every endpoint has weight 0: at least one must take traffic"
    );
}
