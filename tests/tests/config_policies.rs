//! Config files with every policy: the bench's full stack end to end, an
//! auth provider's key set kept across reloads, and per-client-class
//! response shapes, all built from TOML; and the access log the server
//! opens itself and moves on reload.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tollgate::config::{ConfigFile, Server};
use tollgate_tests::{
    auth_support::{JwksMode, JwksServer, Signer, claims, eventually, jwks},
    config_head, echo_router, spawn_upstream,
};

const SECRET: &str = "a-bench-secret-of-thirty-two-bytes!";

fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<&str, String> = pairs.into_iter().collect();
    move |name| map.get(name).cloned()
}

use tollgate_tests::get_json as send;

#[tokio::test]
async fn the_full_stack_bench_config_applies_every_policy() {
    let backend = spawn_upstream(echo_router()).await;
    let run_dir = std::env::temp_dir().join(format!("tollgate-full-stack-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).expect("run dir");
    let env = env_of(vec![
        ("LISTEN_ADDR", "127.0.0.1:0".into()),
        ("UPSTREAM_URL", format!("http://{backend}")),
        ("BENCH_JWT_SECRET", SECRET.into()),
        ("RUN_DIR", run_dir.display().to_string()),
    ]);
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/configs/bench-full-stack.toml");
    let text = std::fs::read_to_string(path).expect("sample");
    let file = ConfigFile::parse_with(&text, &env).expect("parses");
    // No subscriber: the server opens the access log and writes to it.
    let server = Server::start(file).await.expect("starts");
    let writer = server.reloader().access_log().expect("an access log");
    let base = format!("http://{}", server.local_addr());

    // No token: 401 problem, never forwarded.
    let (status, headers, body) = send(format!("{base}/users/1"), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(headers.contains_key("x-request-id"));

    // A token with only `sub` and `exp`: forwarded unchanged, with the id,
    // the identity header and the literal header rule.
    let token = Signer::hmac(Algorithm::HS256, SECRET.as_bytes()).sign(&claims("user-7"));
    let bearer = format!("Bearer {token}");
    let (status, headers, echo) =
        send(format!("{base}/users/1?q=2"), &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["uri"], "/users/1?q=2");
    assert_eq!(echo["headers"]["x-user-id"], json!(["user-7"]));
    assert_eq!(echo["headers"]["x-gateway"], json!(["tollgate"]));
    let id = headers["x-request-id"].to_str().expect("ascii").to_owned();
    assert_eq!(echo["headers"]["x-request-id"], json!([id]));
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the token is not forwarded"
    );

    // The access log is a file with one JSON line per request.
    server.shutdown().await.expect("clean shutdown");
    writer.flush().expect("flush");
    let log = std::fs::read_to_string(run_dir.join("tollgate-access.log")).expect("access log");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    let last = lines.last().expect("a line");
    assert_eq!(last["request_id"], id.as_str());
    assert_eq!(last["status"], 200);
    assert_eq!(last["subject"], "user-7");
    assert_eq!(last["upstream"], "backend");
    assert_eq!(last["endpoint"], format!("http://{backend}"));
    assert!(!log.contains(&token), "the token is never logged");
}

#[tokio::test]
async fn a_reload_keeps_the_key_set_of_an_unchanged_provider() {
    let signer = Signer::of(Algorithm::RS256);
    let keys = JwksServer::start(JwksMode::Keys(jwks(&[&signer]))).await;
    let backend = spawn_upstream(echo_router()).await;
    let config = |extra_route: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
enabled = false

[auth.providers.users]
type = "jwt"
allow_insecure_http = true
refresh_interval = "1h"
[[auth.providers.users.issuers]]
algorithms = ["RS256"]
jwks_url = "{jwks}"

[[upstreams]]
name = "backend"
endpoints = ["http://{backend}"]

[[routes]]
prefix = "/api"
to = "backend"
auth = {{ providers = ["users"] }}
{extra_route}
"#,
            jwks = keys.url()
        )
    };
    let server = Server::start(ConfigFile::parse(&config("")).expect("parses"))
        .await
        .expect("starts");
    let base = format!("http://{}", server.local_addr());
    let bearer = format!("Bearer {}", signer.sign(&claims("ann")));
    eventually("the key set is fetched", || async {
        send(format!("{base}/api/x"), &[("authorization", &bearer)])
            .await
            .0
            == 200
    })
    .await;
    let fetched = keys.hits();

    // Another route; the provider is unchanged: no new fetch, and the
    // token is accepted at once on the new router.
    let other =
        "[[routes]]\nprefix = \"/other\"\nto = \"backend\"\nauth = { providers = [\"users\"] }\n";
    server
        .reloader()
        .reload_from(ConfigFile::parse(&config(other)).expect("parses"))
        .expect("applies");
    assert_eq!(
        send(format!("{base}/other/x"), &[("authorization", &bearer)])
            .await
            .0,
        200
    );
    assert_eq!(
        keys.hits(),
        fetched,
        "the key set was kept, not fetched again"
    );

    // A changed provider starts afresh: it fetches its keys again.
    let changed = config(other).replace("refresh_interval = \"1h\"", "refresh_interval = \"2h\"");
    server
        .reloader()
        .reload_from(ConfigFile::parse(&changed).expect("parses"))
        .expect("applies");
    eventually("the new provider fetches", || async {
        keys.hits() > fetched
    })
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn mobile_and_web_clients_get_their_own_shape_from_a_config() {
    let users = spawn_upstream(axum::Router::new().fallback(|| async {
        axum::Json(json!({"id": 42, "name": "Ann", "email": "ann@example.com", "internal_id": "x9", "debug_info": {"db": "p1"}}))
    }))
    .await;
    let head = config_head("users", &format!("http://{users}"));
    let text = format!(
        r#"{head}
[[routes]]
prefix = "/api/users"
to = "users"

[routes.transform_response_by_class]
classify = [{{ header = "x-client" }}, {{ user_agent = "(?i)iphone|android", class = "mobile" }}]
[routes.transform_response_by_class.classes.mobile.body]
allow = ["/id", "/name"]
[routes.transform_response_by_class.default.body]
deny = ["/internal_id", "/debug_info"]
"#
    );
    let server = Server::start(ConfigFile::parse(&text).expect("parses"))
        .await
        .expect("starts");
    let base = format!("http://{}", server.local_addr());
    let (_, _, mobile) = send(format!("{base}/api/users/42"), &[("x-client", "mobile")]).await;
    assert_eq!(mobile, json!({"id": 42, "name": "Ann"}));
    let (_, _, phone) = send(
        format!("{base}/api/users/42"),
        &[("user-agent", "MyApp (iPhone; iOS 18)")],
    )
    .await;
    assert_eq!(phone, json!({"id": 42, "name": "Ann"}));
    let (_, _, web) = send(format!("{base}/api/users/42"), &[]).await;
    assert_eq!(
        web,
        json!({"id": 42, "name": "Ann", "email": "ann@example.com"})
    );
    server.shutdown().await.expect("clean shutdown");
}

/// The access log is the server's: opened by the first config with an
/// `[observe]` table (here a reload), written to directly with no
/// subscriber installed, and moved when a reload names another file.
#[tokio::test]
async fn a_reload_opens_and_moves_the_access_log() {
    let backend = spawn_upstream(echo_router()).await;
    let dir = std::env::temp_dir().join(format!("tollgate-log-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (first, second) = (dir.join("first.log"), dir.join("second.log"));
    for file in [&first, &second] {
        let _ = std::fs::remove_file(file);
    }
    let config = |observe: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = false\n{observe}\n\
             [[upstreams]]\nname = \"backend\"\nendpoints = [\"http://{backend}\"]\n\
             [[routes]]\nname = \"all\"\nprefix = \"/\"\nto = \"backend\"\n"
        )
    };
    let observe = |path: &std::path::Path| format!("[observe]\naccess_log = {{ file = {path:?} }}");
    let server = Server::start(ConfigFile::parse(&config("")).expect("parses"))
        .await
        .expect("starts");
    assert!(server.reloader().access_log().is_none(), "no [observe]");
    let base = format!("http://{}", server.local_addr());
    let (status, _, _) = send(format!("{base}/unlogged"), &[]).await;
    assert_eq!(status, 200);

    let reload = |observe: String| {
        server
            .reloader()
            .reload_from(ConfigFile::parse(&config(&observe)).expect("parses"))
    };
    reload(observe(&first)).expect("reloads");
    let (status, _, _) = send(format!("{base}/to/first"), &[]).await;
    assert_eq!(status, 200);
    reload(observe(&second)).expect("reloads");
    let (status, _, _) = send(format!("{base}/to/second"), &[]).await;
    assert_eq!(status, 200);
    server.reloader().flush_logs();

    let paths = |file: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(file)
            .expect("a log file")
            .lines()
            .map(|l| {
                let line: Value = serde_json::from_str(l).expect("a JSON line");
                assert_eq!(line["target"], "tollgate::access", "{line}");
                line["path"].as_str().expect("a path").to_owned()
            })
            .collect()
    };
    assert_eq!(paths(&first), ["/to/first"]);
    assert_eq!(paths(&second), ["/to/second"]);
    server.shutdown().await.expect("clean shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
