//! Reloading a running config on SIGHUP and when its file changes. In a
//! binary of its own: the test sends SIGHUP to this process.

#![expect(clippy::expect_used, reason = "test helpers outside #[test] fns")]

use std::time::Duration;

use http::{Request, StatusCode};
use tollgate::config::{ConfigFile, Server};
use tollgate_tests::{client, config_head, empty, named_echo_router, spawn_upstream};

async fn status(url: String) -> StatusCode {
    let req = Request::get(url).body(empty()).expect("request");
    client().request(req).await.expect("response").status()
}

/// Asks until `url` answers `want`, for at most five seconds.
async fn until(url: &str, want: u16) -> bool {
    for _ in 0..100 {
        if status(url.to_owned()).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn sighup_and_a_changed_file_reload_the_config() {
    let users = spawn_upstream(named_echo_router("users")).await;
    let head = config_head("users", &format!("http://{users}"));
    let route = |prefix: &str| format!("\n[[routes]]\nprefix = \"{prefix}\"\nto = \"users\"\n");
    let dir = std::env::temp_dir().join(format!("tollgate-signals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, format!("{head}{}", route("/a"))).expect("write");
    let server = Server::start(ConfigFile::load(&path).expect("loads"))
        .await
        .expect("starts");
    let base = format!("http://{}", server.local_addr());
    assert_eq!(status(format!("{base}/a")).await, 200);

    // SIGHUP: the file is read again.
    let hangup = server
        .reloader()
        .reload_on_sighup()
        .expect("signal handler");
    std::fs::write(&path, format!("{head}{}", route("/b"))).expect("write");
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    assert!(
        until(&format!("{base}/b"), 200).await,
        "SIGHUP did not reload"
    );
    assert_eq!(status(format!("{base}/a")).await, 404);
    hangup.abort();

    // A change of the file's content, without a signal.
    let watch = server.reloader().watch_file(Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(250)).await;
    std::fs::write(&path, format!("{head}{}", route("/c"))).expect("write");
    assert!(
        until(&format!("{base}/c"), 200).await,
        "the file change was not seen"
    );
    // A broken save is refused; the running config keeps serving.
    std::fs::write(&path, format!("{head}{}\nnonsense = 1\n", route("/d"))).expect("write");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(format!("{base}/c")).await, 200);
    assert_eq!(status(format!("{base}/d")).await, 404);
    watch.abort();
    server.shutdown().await.expect("clean shutdown");
}
