//! Reopening the config server's log files for log rotation: after the
//! access log is renamed (what logrotate's default `create` mode does),
//! `Reloader::reopen_logs` and the admin listener's `POST /reopen_logs`
//! send the next lines to a new file at the configured path, and a reopen
//! that cannot open the new file keeps writing to the old one. SIGUSR1 is
//! tested in `config_signals.rs`, the binary of the signal tests.

#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns fail the test with a message"
)]

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use http::{Request, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tollgate::{
    config::{ConfigFile, Server},
    core::problem::{INTERNAL, ROUTE_NOT_FOUND},
    observe::{AccessLogConfig, AccessLogWriter},
};
use tollgate_tests::{assert_problem, body_json, client, echo_router, empty, spawn_upstream};

/// A config gateway to an echo upstream with `observe` (an `[observe]`
/// table or nothing), and an admin listener on 127.0.0.1:0.
async fn start(observe: &str) -> Server {
    let backend = spawn_upstream(echo_router()).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{observe}\n\
         [[upstreams]]\nname = \"backend\"\nendpoints = [\"http://{backend}\"]\n\
         [[routes]]\nname = \"all\"\nprefix = \"/\"\nto = \"backend\"\n"
    );
    Server::start(ConfigFile::parse(&text).expect("parses"))
        .await
        .expect("starts")
}

/// [`start`] with the access log in `access.log` of a fresh temp
/// directory for the test `name`: the server, the directory and the log.
async fn start_logging(name: &str) -> (Server, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tollgate-reopen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let access = dir.join("access.log");
    let server = start(&format!("[observe]\naccess_log = {{ file = {access:?} }}")).await;
    (server, dir, access)
}

/// `method url` with an empty body.
async fn send(method: &str, url: String) -> http::Response<Incoming> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(empty())
        .expect("a request");
    client().request(req).await.expect("an answer")
}

/// `GET path` on the public listener, which must answer 200.
async fn request(server: &Server, path: &str) {
    let res = send("GET", format!("http://{}{path}", server.local_addr())).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
}

/// The `path` member of every line of `file`.
fn paths(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).expect("a JSON line");
            line["path"].as_str().expect("a path").to_owned()
        })
        .collect()
}

/// Flushes the logs of `server`, checks that each file has the `paths`
/// it is paired with, shuts the server down and removes `dir`.
async fn check_and_stop(server: Server, dir: &Path, files: &[(&Path, &[&str])]) {
    server.reloader().flush_logs();
    for (file, want) in files {
        assert_eq!(paths(file), *want, "{}", file.display());
    }
    server.shutdown().await.expect("clean shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

/// `Reloader::reopen_logs` after a rename: the renamed file keeps the
/// lines written before, the new file at the configured path gets the
/// lines after; the audit trail's writer set on the reloader is reopened
/// too.
#[tokio::test]
async fn reopen_logs_sends_lines_to_a_new_file_after_a_rename() {
    let (server, dir, access) = start_logging("reloader").await;
    let audit = dir.join("audit.log");
    let audit_log =
        AccessLogWriter::open(&AccessLogConfig::File(audit.clone())).expect("an audit log");
    server.reloader().set_audit_log(audit_log.clone());
    let audit_line = |path: &str| {
        (&audit_log)
            .write_all(format!("{}\n", json!({ "path": path })).as_bytes())
            .expect("written");
    };

    request(&server, "/before").await;
    audit_line("/audit/before");
    let (rotated, audit_rotated) = (dir.join("access.log.1"), dir.join("audit.log.1"));
    std::fs::rename(&access, &rotated).expect("rename");
    std::fs::rename(&audit, &audit_rotated).expect("rename");
    request(&server, "/renamed").await;

    let reopened = server.reloader().reopen_logs().expect("reopened");
    assert_eq!(reopened, 2, "the access log and the audit trail");
    request(&server, "/after").await;
    audit_line("/audit/after");

    let files: [(&Path, &[&str]); 4] = [
        (&rotated, &["/before", "/renamed"]),
        (&access, &["/after"]),
        (&audit_rotated, &["/audit/before"]),
        (&audit, &["/audit/after"]),
    ];
    check_and_stop(server, &dir, &files).await;
}

/// `POST /reopen_logs` on the admin listener does the same and answers
/// `{"reopened": 1}`; `GET` there is a 405, as axum answers a route asked
/// with another method.
#[tokio::test]
async fn post_reopen_logs_on_the_admin_listener_reopens_the_access_log() {
    let (server, dir, access) = start_logging("admin").await;
    let admin = server.admin_addr().expect("an admin listener");
    let url = format!("http://{admin}/reopen_logs");

    request(&server, "/before").await;
    let rotated = dir.join("access.log.1");
    std::fs::rename(&access, &rotated).expect("rename");

    let res = send("GET", url.clone()).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[header::ALLOW], "POST");
    assert!(!access.exists(), "a GET reopens nothing");

    let res = send("POST", url).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(body_json(res).await, json!({ "reopened": 1 }));
    request(&server, "/after").await;
    check_and_stop(
        server,
        &dir,
        &[(&rotated, &["/before"]), (&access, &["/after"])],
    )
    .await;
}

/// A config server with no log writer (no `[observe]` table) has no
/// `/reopen_logs`: a 404 like any unknown admin path.
#[tokio::test]
async fn without_an_access_log_the_admin_listener_has_no_reopen_logs() {
    let server = start("").await;
    assert!(server.reloader().access_log().is_none());
    let admin = server.admin_addr().expect("an admin listener");
    let res = send("POST", format!("http://{admin}/reopen_logs")).await;
    assert_problem(res, 404, ROUTE_NOT_FOUND).await;
    assert_eq!(server.reloader().reopen_logs().expect("nothing to do"), 0);
    server.shutdown().await.expect("clean shutdown");
}

/// The log's directory is gone (moved away, so the old file can still be
/// read): the reopen cannot create the new file, reports it (an error from
/// `reopen_logs`, a 500 problem+json from the admin listener) and the
/// lines keep going to the old file.
#[tokio::test]
async fn a_reopen_that_cannot_open_the_file_keeps_the_old_one() {
    let (server, dir, access) = start_logging("gone").await;
    let admin = server.admin_addr().expect("an admin listener");

    request(&server, "/before").await;
    let moved = dir.with_extension("moved");
    let _ = std::fs::remove_dir_all(&moved);
    std::fs::rename(&dir, &moved).expect("move the directory away");

    let err = server
        .reloader()
        .reopen_logs()
        .expect_err("the directory is gone");
    assert!(
        err.to_string()
            .starts_with(&format!("access log {}: ", access.display())),
        "{err}"
    );
    request(&server, "/after-reopen").await;
    let res = send("POST", format!("http://{admin}/reopen_logs")).await;
    let problem = assert_problem(res, 500, INTERNAL).await;
    let detail = problem["detail"].as_str().expect("a detail");
    assert!(
        detail.starts_with("a log file could not be reopened: access log "),
        "{problem}"
    );
    request(&server, "/after-post").await;

    assert!(!dir.exists(), "nothing was created");
    let old: &[&str] = &["/before", "/after-reopen", "/after-post"];
    check_and_stop(server, &moved, &[(&moved.join("access.log"), old)]).await;
}
