//! Smoke tests so the examples never rot: the demo's gateway is built from
//! the example's own code, and the proxy example runs as a process.

#![expect(
    clippy::expect_used,
    reason = "helpers outside #[test] fns fail the test with a message"
)]

#[path = "../../examples/support/demo_app.rs"]
mod demo_app;

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use http::{Request, StatusCode};
use tokio::{process::Command, time::timeout};
use tollgate::core::problem::ROUTE_NOT_FOUND;
use tollgate_tests::{
    RunningGateway, assert_problem, body_json, client, echo_router, empty, spawn_gateway,
    spawn_upstream,
};

/// Safety bound for one request.
const BOUND: Duration = Duration::from_secs(10);

/// Safety bound for `cargo run --example proxy`: it may have to compile the
/// example, or wait for the build directory lock.
const CARGO_BOUND: Duration = Duration::from_secs(300);

async fn get_json(gw: &RunningGateway, path: &str) -> serde_json::Value {
    let res = get(gw.addr, path).await;
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    body_json(res).await
}

async fn get(addr: SocketAddr, path: &str) -> http::Response<hyper::body::Incoming> {
    get_with(addr, path, None).await
}

async fn get_with(
    addr: SocketAddr,
    path: &str,
    header: Option<(&str, &str)>,
) -> http::Response<hyper::body::Incoming> {
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let req = req.body(empty()).expect("request");
    timeout(BOUND, client().request(req))
        .await
        .expect("answered in time")
        .expect("request sent")
}

/// The demo gateway as the example builds it, with fresh credentials.
async fn demo_gateway() -> (axum::Router, demo_app::DemoAuth) {
    let services = demo_app::start_services().await.expect("demo services");
    demo_gateway_for(services)
}

fn demo_gateway_for(services: demo_app::Services) -> (axum::Router, demo_app::DemoAuth) {
    let auth = demo_app::DemoAuth::new().expect("demo credentials");
    let router = demo_app::gateway(services, &tollgate::observe::Metrics::new(), &auth)
        .expect("demo auth")
        .build()
        .expect("demo gateway");
    (router, auth)
}

#[tokio::test]
async fn the_demo_gateway_routes_to_its_services() {
    let services = demo_app::start_services().await.expect("demo services");
    let (router, auth) = demo_gateway_for(services);
    let mut gw = spawn_gateway(router).await;

    let user = get_json(&gw, "/api/users/42").await;
    assert_eq!(user["id"], "42", "{user}");
    assert_eq!(user["name"], "User 42", "{user}");
    assert_eq!(user["seen"]["service"], "users", "{user}");
    assert_eq!(user["seen"]["path"], "/users/42", "{user}");
    assert_eq!(user["seen"]["x_forwarded_for"], "127.0.0.1", "{user}");
    assert_eq!(user["seen"]["x_forwarded_proto"], "http", "{user}");
    assert_eq!(
        user["seen"]["x_forwarded_host"],
        gw.addr.to_string(),
        "{user}"
    );
    assert_eq!(
        user["seen"]["host"],
        services.users.to_string(),
        "the users service sees its own authority as Host: {user}"
    );

    let users = get_json(&gw, "/api/users").await;
    assert!(users.as_array().is_some_and(|a| !a.is_empty()), "{users}");

    let v2 = get_json(&gw, "/api/v2/users/42").await;
    assert_eq!(v2["api_version"], 2, "{v2}");
    assert_eq!(v2["display_name"], "User 42", "{v2}");
    assert_eq!(v2["seen"]["service"], "users", "{v2}");
    assert_eq!(v2["seen"]["path"], "/v2/users/42", "{v2}");

    let bearer = format!("Bearer {}", auth.token);
    let res = get_with(gw.addr, "/api/orders/7", Some(("authorization", &bearer))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let order = body_json(res).await;
    assert_eq!(order["id"], "7", "{order}");
    assert_eq!(order["seen"]["service"], "orders", "{order}");
    assert_eq!(order["seen"]["path"], "/orders/7", "{order}");
    assert_eq!(order["seen"]["x_user_id"], "42", "{order}");
    assert_eq!(order["seen"]["x_scopes"], "orders:read profile", "{order}");
    assert_eq!(order["seen"]["authorization_forwarded"], false, "{order}");

    let res = get_with(gw.addr, "/api/orders/7", Some(("x-api-key", &auth.api_key))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let order = body_json(res).await;
    assert_eq!(order["seen"]["x_consumer"], "demo-app", "{order}");
    assert_eq!(
        order["seen"]["x_user_id"],
        serde_json::Value::Null,
        "{order}"
    );

    let res = get(gw.addr, "/api/orders/7").await;
    let problem = assert_problem(res, 401, tollgate::core::problem::UNAUTHORIZED).await;
    assert_eq!(problem["reason"], "missing", "{problem}");

    // The API key's free plan: one request above was the first of five.
    let loop_line = demo_app::curl_loop_line(gw.addr, &auth);
    assert!(loop_line.contains(&auth.api_key), "{loop_line}");
    for _ in 1..demo_app::FREE_PER_MINUTE {
        let res = get_with(gw.addr, "/api/orders/7", Some(("x-api-key", &auth.api_key))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers().contains_key("ratelimit"),
            "{:?}",
            res.headers()
        );
    }
    let res = get_with(gw.addr, "/api/orders/7", Some(("x-api-key", &auth.api_key))).await;
    assert!(res.headers().contains_key("retry-after"));
    let problem = assert_problem(res, 429, tollgate::core::problem::RATE_LIMITED).await;
    assert_eq!(problem["plan"], "free", "{problem}");

    let product = get_json(&gw, "/api/products/tea").await;
    assert_eq!(product["sku"], "tea", "{product}");
    assert_eq!(product["seen"]["service"], "products", "{product}");
    assert_eq!(product["seen"]["path"], "/products/tea", "{product}");

    let res = get(gw.addr, "/api/nowhere").await;
    let problem = assert_problem(res, 404, ROUTE_NOT_FOUND).await;
    assert_eq!(problem["instance"], "/api/nowhere");

    gw.shutdown();
    let stopped = timeout(BOUND, gw.task).await.expect("stopped in time");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

#[tokio::test]
async fn every_demo_curl_line_answers() {
    let (router, auth) = demo_gateway().await;
    let gw = spawn_gateway(router).await;

    let lines = demo_app::curl_lines(gw.addr, &auth);
    assert!(lines.len() >= 7, "{lines:?}");
    let base = format!("http://{}", gw.addr);
    for line in lines {
        // `curl -s [-H 'Name: value'] http://addr/path`, as printed.
        let rest = line.strip_prefix("curl -s ").expect("a curl line");
        let (header, url) = match rest.strip_prefix("-H '") {
            Some(rest) => {
                let (header, url) = rest.split_once("' ").expect("quoted header");
                (header.split_once(": "), url)
            }
            None => (None, rest),
        };
        let path = url
            .strip_prefix(&base)
            .unwrap_or_else(|| panic!("{line:?} does not target the gateway at {base}"));
        let res = get_with(gw.addr, path, header).await;
        if path.contains("nowhere") {
            assert_problem(res, 404, ROUTE_NOT_FOUND).await;
        } else if path.contains("orders") && header.is_none() {
            assert_problem(res, 401, tollgate::core::problem::UNAUTHORIZED).await;
        } else {
            assert_eq!(res.status(), StatusCode::OK, "{line}");
            let json = body_json(res).await;
            assert!(json["seen"]["service"].is_string(), "{line}: {json}");
        }
    }
}

/// The workspace root, where `cargo run --example proxy` works.
fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `cargo run --quiet --example proxy -- args...` from the workspace root.
/// Cargo replaces itself with the example (exec), so the child's PID is the
/// proxy's.
fn proxy_command(args: &[&str]) -> Command {
    example_command("proxy", args)
}

/// `cargo run --quiet --example NAME -- args...` from the workspace root,
/// its standard output discarded (pipe it to read it).
fn example_command(name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["run", "--quiet", "--example", name, "--"])
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// The demo binary as a user runs it: JSON log lines on its standard
/// output (an access-log line per request), and `/metrics` on its admin
/// listener counting the requests.
#[tokio::test]
async fn the_demo_binary_logs_json_lines_and_serves_metrics() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let (listen, admin) = (free_addr().await, free_addr().await);
    let mut child = example_command("demo", &[])
        .env("TOLLGATE_ADDR", listen.to_string())
        .env("TOLLGATE_ADMIN_ADDR", admin.to_string())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cargo run --example demo");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();

    // Wait until the admin listener answers (the demo may be compiling).
    answers_ok(&mut child, &format!("http://{admin}/healthz"), "the demo").await;

    let res = get(listen, "/api/products/tea").await;
    assert_eq!(res.status(), StatusCode::OK);
    let request_id = res.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();

    // Its access-log line, as JSON, on standard output; before it, the
    // line that names the services' addresses.
    let mut services = None;
    let line = timeout(BOUND, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json["message"] == "tollgate demo listening" {
                services = Some(json.clone());
            }
            if json["target"] == "tollgate::access" && json["request_id"] == request_id.as_str() {
                return json;
            }
        }
        panic!("stdout ended without the access-log line");
    })
    .await
    .expect("the access-log line in time");
    assert_eq!(line["path"], "/api/products/tea", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["route"], "products", "{line}");

    // `curl 127.0.0.1:9901/metrics`, parsed.
    let res = get(admin, "/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(tollgate_tests::body_bytes(res).await.to_vec()).expect("utf-8");
    let served = tollgate_tests::observe_support::requests_total(&text, "products", "GET", "200");
    assert_eq!(served, Some(1.0), "{text}");

    // Each service answers the health check's `GET /healthz` (the probing
    // itself is tested in health_check.rs).
    let services = services.expect("the line naming the services");
    for name in ["users", "orders", "products"] {
        let addr: SocketAddr = services[name]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name}'s address in {services}"));
        let res = get(addr, "/healthz").await;
        assert_eq!(res.status(), StatusCode::OK, "{name}");
    }

    // `curl 127.0.0.1:9901/upstreams`: the three services, each with one
    // endpoint, in balancing.
    let res = get(admin, "/upstreams").await;
    assert_eq!(res.status(), StatusCode::OK);
    let json = tollgate_tests::body_json(res).await;
    let upstreams = json["upstreams"].as_array().expect("a list");
    let names: Vec<&str> = upstreams
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["users", "orders", "products"], "{json}");
    for upstream in upstreams {
        assert_eq!(upstream["healthy_endpoints"], 1, "{json}");
        assert_eq!(
            upstream["endpoints"][0]["passing_health_check"], true,
            "{json}"
        );
    }
}

/// Waits until `url` answers 200, while `child` (`what`, run through
/// `cargo run`, so perhaps compiling first) keeps running.
#[expect(clippy::panic, reason = "a helper that fails the calling test")]
async fn answers_ok(child: &mut tokio::process::Child, url: &str, what: &str) {
    timeout(CARGO_BOUND, async {
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("{what} exited before serving: {status}");
            }
            if let Ok(Ok(res)) = timeout(
                BOUND,
                client().request(Request::get(url).body(empty()).expect("request")),
            )
            .await
                && res.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} answered {url} in time"));
}

/// A port that was free a moment ago.
async fn free_addr() -> SocketAddr {
    let (listener, addr) = tollgate_tests::listener().await;
    drop(listener);
    addr
}

#[tokio::test]
async fn the_proxy_example_forwards_everything_and_stops_on_sigterm() {
    let upstream = spawn_upstream(echo_router()).await;
    let listen = free_addr().await;
    let mut child = proxy_command(&[
        "--listen",
        &listen.to_string(),
        "--upstream",
        &format!("http://{upstream}"),
        "--workers",
        "1",
    ])
    .spawn()
    .expect("spawn cargo run --example proxy");

    // Wait until it answers (it may be compiling first).
    let ready = timeout(CARGO_BOUND, async {
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("the proxy exited before serving: {status}");
            }
            let req = Request::get(format!("http://{listen}/health"))
                .body(empty())
                .expect("request");
            if let Ok(Ok(res)) = timeout(BOUND, client().request(req)).await
                && res.status() == StatusCode::OK
            {
                return body_json(res).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the proxy example answered /health in time");
    assert_eq!(ready["uri"], "/health", "{ready}");

    let res = get(listen, "/users/7?fields=name").await;
    assert_eq!(res.status(), StatusCode::OK);
    let seen = body_json(res).await;
    assert_eq!(seen["uri"], "/users/7?fields=name", "{seen}");
    assert_eq!(seen["method"], "GET", "{seen}");
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "{seen}"
    );
    assert_eq!(
        seen["headers"]["host"],
        serde_json::json!([upstream.to_string()]),
        "{seen}"
    );

    // SIGTERM to the process we started, by its PID: it drains and exits 0.
    let pid = child.id().expect("the proxy is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}: {status}");
    let exit = timeout(BOUND, child.wait())
        .await
        .expect("the proxy exited in time after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "the proxy exited with {exit}");
}

#[tokio::test]
async fn the_proxy_example_refuses_a_bad_upstream_with_exit_code_2() {
    for (args, wants) in [
        (
            &["--upstream", "not a url", "--workers", "1"][..],
            "proxy: upstream \"backend\": endpoint \"not a url\"",
        ),
        (
            &["--upstream", "ftp://127.0.0.1:9"][..],
            "the scheme must be http or https",
        ),
        (&["--workers", "1"][..], "at least one --upstream is needed"),
    ] {
        let output = timeout(
            CARGO_BOUND,
            proxy_command(args).stderr(Stdio::piped()).output(),
        )
        .await
        .expect("the proxy exited in time")
        .expect("run cargo run --example proxy");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(wants), "{args:?}: {stderr}");
    }
}

/// The demo gives every request an id, echoed to the client and seen by
/// the service, and starts a W3C trace for it.
#[tokio::test]
async fn the_demo_adds_request_ids_and_trace_context() {
    let (router, _auth) = demo_gateway().await;
    let gw = tollgate_tests::spawn_gateway(router).await;
    let req = http::Request::get(gw.url("/api/users/42"))
        .body(tollgate_tests::empty())
        .expect("request");
    let res = tollgate_tests::client()
        .request(req)
        .await
        .expect("response");
    let echoed = res.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let json = tollgate_tests::body_json(res).await;
    assert_eq!(json["seen"]["x_request_id"], echoed.as_str(), "{json}");
    let tp = json["seen"]["traceparent"].as_str().expect("a traceparent");
    assert_eq!(tp.len(), 55, "{tp}");
}

/// The seed's example: `POST /api/users` with a token reaches the users
/// service as `POST /users` with the identity, the request id,
/// `X-Forwarded-For` and the same body; the service's `internal_id` and
/// `debug_info` never reach the client, and `X-Client: mobile` gets only
/// `{id, name}`.
#[tokio::test]
async fn the_demo_forwards_post_api_users_with_the_callers_context() {
    let (router, auth) = demo_gateway().await;
    let gw = spawn_gateway(router).await;
    let post = |client_class: Option<&str>| {
        let mut req = Request::post(gw.url("/api/users"))
            .header("authorization", format!("Bearer {}", auth.token))
            .header("content-type", "application/json");
        if let Some(class) = client_class {
            req = req.header("x-client", class);
        }
        req.body(tollgate_tests::full(r#"{"name":"Ada"}"#))
            .expect("request")
    };
    let send = |req| async {
        timeout(BOUND, client().request(req))
            .await
            .expect("answered in time")
            .expect("request sent")
    };

    let res = send(post(None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let request_id = res.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let json = body_json(res).await;
    let seen = &json["seen"];
    assert_eq!(seen["path"], "/users", "{json}");
    assert_eq!(seen["x_user_id"], "42", "{json}");
    assert_eq!(seen["x_request_id"], request_id.as_str(), "{json}");
    assert_eq!(seen["x_forwarded_for"], "127.0.0.1", "{json}");
    assert_eq!(seen["authorization_forwarded"], false, "{json}");
    assert_eq!(json["received_body"]["name"], "Ada", "{json}");
    assert_eq!(json["id"], "123", "{json}");
    assert!(json.get("internal_id").is_none(), "{json}");
    assert!(json.get("debug_info").is_none(), "{json}");

    let res = send(post(Some("mobile"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let json = body_json(res).await;
    assert_eq!(json, serde_json::json!({"id": "123", "name": "Ada"}));
}

/// The first line of `file` that contains `needle`, waiting for it (the
/// gateway flushes its log file every second).
#[expect(clippy::panic, reason = "a helper that fails the calling test")]
async fn line_in(file: &Path, needle: &str) -> String {
    timeout(BOUND, async {
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle} in {} in time", file.display()))
}

/// Sends `signal` (`-TERM`, `-USR1`) to `pid`, a process this test started.
async fn kill(signal: &str, pid: &str) {
    let status = Command::new("kill")
        .args([signal, pid])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

/// The config gateway binary (`examples/gateway.rs`) with an access-log
/// file: the request's line goes to the file and never to standard output,
/// which still gets the gateway's own log lines; after the file is renamed,
/// SIGUSR1 sends the next line to a new file at the same path.
#[tokio::test]
async fn the_config_gateway_logs_access_to_its_file_and_not_to_stdout() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let up = spawn_upstream(echo_router()).await;
    let listen = free_addr().await;
    let dir = std::env::temp_dir().join(format!("tollgate-gw-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let access = dir.join("access.log");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{listen}\"\n[admin]\nenabled = false\n[request_id]\n\
             [observe]\naccess_log = {{ file = {access:?} }}\n\
             [[upstreams]]\nname = \"up\"\nendpoints = [\"http://{up}\"]\n\
             [[routes]]\nname = \"all\"\nprefix = \"/\"\nto = \"up\"\n"
        ),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path").to_owned();
    let mut child = example_command("gateway", &["--config", &config, "--no-watch"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cargo run --example gateway");
    let stdout = child.stdout.take().expect("piped stdout");

    // Serving (the example may be compiling first).
    answers_ok(&mut child, &format!("http://{listen}/ready"), "the gateway").await;
    let res = get(listen, "/logged/once").await;
    assert_eq!(res.status(), StatusCode::OK);

    // The line reaches the file (flushed every second).
    let logged = line_in(&access, "/logged/once").await;
    let logged: serde_json::Value = serde_json::from_str(&logged).expect("a JSON line");
    assert_eq!(logged["target"], "tollgate::access", "{logged}");

    // Log rotation: the file is renamed, SIGUSR1 opens a new one at the
    // configured path (it exists once the reopen holds it, and writers
    // wait for the switch), and the next line goes there.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&access, &rotated).expect("rename the access log");
    let pid = child.id().expect("a running child").to_string();
    kill("-USR1", &pid).await;
    timeout(BOUND, async {
        while !access.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("SIGUSR1 reopened the access log in time");
    let res = get(listen, "/logged/after-rotation").await;
    assert_eq!(res.status(), StatusCode::OK);
    line_in(&access, "/logged/after-rotation").await;
    let old = std::fs::read_to_string(&rotated).expect("the rotated file");
    assert!(old.contains("/logged/once"), "{old}");
    assert!(!old.contains("/logged/after-rotation"), "{old}");

    // Stopped with SIGTERM, its standard output read to the end: the
    // gateway's own lines, and no access-log line.
    kill("-TERM", &pid).await;
    let lines = timeout(BOUND, async {
        let mut lines = BufReader::new(stdout).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    })
    .await
    .expect("standard output closed in time");
    assert!(
        lines.iter().any(|l| l.contains("gateway running")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("tollgate::access")),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
