//! A refused reload keeps the running config, and every reload is
//! audited. Alone in its test binary: the audit events are captured with a
//! thread-local subscriber, and another test emitting the same event on
//! another thread at the same moment could leave its callsite cached as
//! uninteresting (a race in tracing's interest cache).

#![expect(clippy::expect_used, reason = "test helpers outside #[test] fns")]

use http::{Request, StatusCode};
use tollgate::config::{ConfigFile, Server};
use tollgate_tests::{
    client, config_head, empty, named_echo_router, observe_support::Capture, spawn_upstream,
};

async fn status(url: String) -> StatusCode {
    let req = Request::get(url).body(empty()).expect("request");
    client().request(req).await.expect("response").status()
}

fn config(upstream: &str, routes: &[(&str, &str)]) -> String {
    let mut text = config_head("users", upstream);
    for (prefix, to) in routes {
        text.push_str(&format!(
            "\n[[routes]]\nprefix = \"{prefix}\"\nto = \"{to}\"\n"
        ));
    }
    text
}

#[tokio::test]
async fn a_bad_reload_keeps_the_running_config_and_is_audited() {
    let (capture, _guard) = Capture::install();
    let users = spawn_upstream(named_echo_router("users")).await;
    let upstream = format!("http://{users}");
    let dir = std::env::temp_dir().join(format!("tollgate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config(&upstream, &[("/api/users", "users")])).expect("write");
    let server = Server::start(ConfigFile::load(&path).expect("loads"))
        .await
        .expect("starts");
    let base = format!("http://{}", server.local_addr());

    // A route to an upstream that does not exist: refused, placed.
    let broken = config(
        &upstream,
        &[("/api/users", "users"), ("/api/orders", "orders")],
    );
    std::fs::write(&path, broken).expect("write");
    let err = server.reloader().reload().expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:15: routes[1]: route \"/api/orders\": unknown upstream \"orders\"",
            path.display()
        )
    );
    // The running config still serves, unchanged.
    assert_eq!(status(format!("{base}/api/users/1")).await, 200);
    assert_eq!(status(format!("{base}/api/orders/1")).await, 404);
    // Moving the listener needs a restart: refused as well.
    let moved = config(&upstream, &[("/api/users", "users")]).replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(&path, moved).expect("write");
    let err = server.reloader().reload().expect_err("refused");
    assert!(
        err.to_string()
            .contains("server: listener settings change only on restart"),
        "{err}"
    );
    // Not TOML: refused.
    std::fs::write(&path, "[[routes]\n").expect("write");
    server.reloader().reload().expect_err("refused");

    let audits = capture.events(tollgate::core::audit::TARGET);
    let rejected: Vec<_> = audits
        .iter()
        .filter(|e| e.get("outcome") == Some("rejected"))
        .collect();
    assert_eq!(rejected.len(), 3, "{audits:?}");
    assert!(
        rejected[0]
            .get("reason")
            .is_some_and(|r| r.contains("unknown upstream \"orders\"")),
        "{audits:?}"
    );

    // A good file again: applied and audited.
    let good = config(
        &upstream,
        &[("/api/users", "users"), ("/api/orders", "users")],
    );
    std::fs::write(&path, good).expect("write");
    server.reloader().reload().expect("applies");
    assert_eq!(status(format!("{base}/api/orders/1")).await, 200);
    assert!(
        capture
            .events(tollgate::core::audit::TARGET)
            .iter()
            .any(|e| e.get("outcome") == Some("reloaded"))
    );
    server.shutdown().await.expect("clean shutdown");
}
