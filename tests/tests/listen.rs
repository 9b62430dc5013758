//! The listening socket (issue #7, serving): `SO_REUSEPORT`, so that a new
//! gateway can start on the address of a running one and take over when it
//! stops, and the accept queue length. Real config servers on 127.0.0.1.

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail the test with a message"
)]

use std::{net::SocketAddr, time::Duration};

use http::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tollgate::{
    ListenOptions,
    config::{ConfigFile, Server},
};
use tollgate_tests::{body_json, empty, named_echo_router, spawn_upstream};

/// A config on `listen` whose one route answers with the upstream's name.
async fn config(listen: &str, server: &str, name: &str) -> ConfigFile {
    let upstream = spawn_upstream(named_echo_router(name)).await;
    let text = format!(
        "[server]\nlisten = \"{listen}\"\n{server}\n[admin]\nenabled = false\n\n\
         [[upstreams]]\nname = \"{name}\"\nendpoints = [\"http://{upstream}\"]\n\n\
         [[routes]]\nprefix = \"/\"\nto = \"{name}\"\n"
    );
    ConfigFile::parse_with(&text, &|_| None).expect("parses")
}

/// Which gateway answers a request on a fresh connection to `addr`.
async fn who_answers(addr: SocketAddr) -> String {
    let stream = TcpStream::connect(addr).await.expect("connects");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("http://{addr}/who"))
        .body(empty())
        .unwrap();
    let res = send.send_request(req).await.expect("an answer");
    assert_eq!(res.status(), 200);
    body_json(res).await["upstream"]
        .as_str()
        .expect("a name")
        .to_owned()
}

/// The documented hand-over with the same config file on both sides: the
/// admin listener's address is shared too.
#[tokio::test]
async fn the_hand_over_works_with_the_admin_listener_on() {
    let upstream = spawn_upstream(named_echo_router("up")).await;
    let config = |listen: &str, admin: &str| {
        let text = format!(
            "[server]\nlisten = \"{listen}\"\nreuse_port = true\n\
             [admin]\nlisten = \"{admin}\"\n\n\
             [[upstreams]]\nname = \"up\"\nendpoints = [\"http://{upstream}\"]\n\n\
             [[routes]]\nprefix = \"/\"\nto = \"up\"\n"
        );
        ConfigFile::parse_with(&text, &|_| None).expect("parses")
    };
    let old = Server::start(config("127.0.0.1:0", "127.0.0.1:0"))
        .await
        .expect("the old gateway starts");
    let (listen, admin) = (
        old.local_addr().to_string(),
        old.admin_addr().expect("an admin listener").to_string(),
    );
    let new = Server::start(config(&listen, &admin))
        .await
        .expect("the new gateway starts on the same addresses");
    old.shutdown().await.expect("clean shutdown");
    assert_eq!(who_answers(new.local_addr()).await, "up");
    new.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn with_reuse_port_a_second_gateway_shares_the_address_and_takes_over() {
    let reuse = "reuse_port = true\n";
    let old = Server::start(config("127.0.0.1:0", reuse, "old").await)
        .await
        .expect("starts");
    let addr = old.local_addr();

    // Without SO_REUSEPORT on its side, the address is taken.
    let refused = Server::start(config(&addr.to_string(), "", "other").await).await;
    let Err(err) = refused else {
        panic!("the address is in use, yet a second gateway started on it")
    };
    let err = err.to_string();
    assert!(err.contains("in use"), "{err}");

    let new = Server::start(config(&addr.to_string(), reuse, "new").await)
        .await
        .expect("starts on the same address");
    assert_eq!(new.local_addr(), addr);
    // The kernel spreads new connections over both.
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.push(who_answers(addr).await);
    }
    assert!(seen.iter().any(|n| n == "old"), "{seen:?}");
    assert!(seen.iter().any(|n| n == "new"), "{seen:?}");

    // The old one stops: every new connection goes to the new one, none
    // is refused.
    old.shutdown().await.expect("clean shutdown");
    for _ in 0..20 {
        assert_eq!(who_answers(addr).await, "new");
    }
    new.shutdown().await.expect("clean shutdown");
}

/// How many of `n` connections to `addr` the kernel completes within a
/// short wait, while nothing accepts them.
async fn completed_connects(addr: SocketAddr, n: usize) -> (usize, Vec<TcpStream>) {
    let attempts =
        (0..n).map(|_| tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)));
    let streams: Vec<TcpStream> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter_map(|r| r.ok().and_then(Result::ok))
        .collect();
    (streams.len(), streams)
}

/// With `max_connections = 1` and one connection open, the gateway stops
/// accepting: further connections wait in the kernel's accept queue, which
/// holds `backlog` of them (plus one, on Linux); past it, the kernel drops
/// the handshake and the client's connect does not complete.
#[tokio::test]
async fn the_backlog_bounds_the_accept_queue() {
    let mut completed = Vec::new();
    for backlog in [1, 64] {
        let server = Server::start(
            config(
                "127.0.0.1:0",
                &format!("max_connections = 1\nbacklog = {backlog}\n"),
                "users",
            )
            .await,
        )
        .await
        .expect("starts");
        let addr = server.local_addr();
        let first = TcpStream::connect(addr).await.expect("the first connects");
        // The first is accepted before the others queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (n, held) = completed_connects(addr, 8).await;
        completed.push(n);
        drop((first, held));
        server.shutdown().await.expect("clean shutdown");
    }
    let (small, large) = (completed[0], completed[1]);
    assert!(small <= 3, "backlog 1 queued {small} of 8");
    assert_eq!(large, 8, "backlog 64 queued {large} of 8");
}

#[tokio::test]
async fn listen_options_bind_with_and_without_reuse_port() {
    let first = ListenOptions::new()
        .reuse_port(true)
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("binds");
    let addr = first.local_addr().expect("an address");
    let second = ListenOptions::new()
        .reuse_port(true)
        .backlog(16)
        .bind(addr)
        .expect("binds the same address");
    assert_eq!(second.local_addr().expect("an address"), addr);
    let err = ListenOptions::new().bind(addr).expect_err("in use");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn binding_outside_a_runtime_is_an_error_not_a_panic() {
    let err = ListenOptions::new()
        .bind("127.0.0.1:0".parse().unwrap())
        .expect_err("no runtime");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[test]
fn the_listener_settings_come_from_the_config() {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\nreuse_port = true\nbacklog = 4096\n";
    let file = ConfigFile::parse_with(text, &|_| None).expect("parses");
    assert_eq!(
        file.config().server.listen_options(),
        ListenOptions::new().reuse_port(true).backlog(4096)
    );
    let defaults = ConfigFile::parse_with("", &|_| None).expect("parses");
    assert_eq!(
        defaults.config().server.listen_options(),
        ListenOptions::new()
    );
    let err = ConfigFile::parse_with("[server]\nbacklog = 0\n", &|_| None)
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert!(
        err.starts_with("line 2: server.backlog: invalid value: integer `0`"),
        "{err}"
    );
}
