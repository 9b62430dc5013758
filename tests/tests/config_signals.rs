//! Reloading a running config on SIGHUP and when its file changes, and
//! reopening its log files on SIGUSR1. In a binary of its own: the tests
//! send SIGHUP and SIGUSR1 to this process. Each installs its handler
//! before sending, and neither signal is handled by the other test, so
//! they can run side by side; a test that sent SIGUSR1 with no handler
//! installed would kill the whole binary.

#![expect(clippy::expect_used, reason = "test helpers outside #[test] fns")]

use std::time::Duration;

use http::{Request, StatusCode};
use tollgate::config::{ConfigFile, Server};
use tollgate_tests::{
    auth_support::eventually, client, config_head, echo_router, empty, named_echo_router,
    spawn_upstream,
};

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

/// The `path` member of every line of the log `file`.
fn logged_paths(file: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .expect("a log file")
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            line["path"].as_str().expect("a path").to_owned()
        })
        .collect()
}

/// Log rotation in logrotate's `create` mode: the access log is renamed,
/// then SIGUSR1 makes the gateway open a new file at the configured path.
#[tokio::test]
async fn sigusr1_reopens_a_renamed_access_log() {
    let backend = spawn_upstream(echo_router()).await;
    let dir = std::env::temp_dir().join(format!("tollgate-sigusr1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (access, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
    let text = format!(
        "{}[observe]\naccess_log = {{ file = {access:?} }}\n\
         [[routes]]\nprefix = \"/\"\nto = \"users\"\n",
        config_head("users", &format!("http://{backend}"))
    );
    let server = Server::start(ConfigFile::parse(&text).expect("parses"))
        .await
        .expect("starts");
    let base = format!("http://{}", server.local_addr());
    assert_eq!(status(format!("{base}/before")).await, 200);

    std::fs::rename(&access, &rotated).expect("rename");
    let user1 = server
        .reloader()
        .reopen_logs_on_sigusr1()
        .expect("signal handler");
    let sent = std::process::Command::new("kill")
        .args(["-USR1", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    // The new file exists once the reopen holds it; writers wait for the
    // switch, so the next line goes there.
    eventually("SIGUSR1 reopens the access log", || {
        std::future::ready(access.exists())
    })
    .await;
    assert_eq!(status(format!("{base}/after")).await, 200);
    server.reloader().flush_logs();

    assert_eq!(logged_paths(&rotated), ["/before"]);
    assert_eq!(logged_paths(&access), ["/after"]);
    user1.abort();
    server.shutdown().await.expect("clean shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
