//! Many identical instances (issue #7 item 5): two gateways on different
//! ports, started from one config file, sharing one Redis. Both serve, and
//! a quota holds across them.

use http::Request;
use tollgate::config::{ConfigFile, Server};
use tollgate_tests::{
    client, config_head, empty, named_echo_router, redis_support::RedisServer, spawn_upstream,
};

const ROUTES: &str = r#"
[[routes]]
name = "users"
prefix = "/api/users"
to = "users"

[routes.rate_limit]
key = [[{ header = "x-api-key" }]]
plans = [{ name = "free", quotas = [{ count = 5, per = "minute" }] }]
default_plan = "free"
headers_on_allowed = true

[routes.rate_limit.redis]
url = "${REDIS_URL}"
prefix = "${REDIS_PREFIX}"
"#;

#[tokio::test]
async fn two_instances_share_one_quota_through_redis() {
    let Some(redis) = RedisServer::start() else {
        eprintln!("redis-server is not installed; skipping (.ci/run installs it)");
        return;
    };
    let users = spawn_upstream(named_echo_router("users")).await;
    let env = {
        let users = format!("http://{users}");
        let redis = redis.url();
        let prefix = format!("tollgate-test-{}", std::process::id());
        move |name: &str| match name {
            "USERS_URL" => Some(users.clone()),
            "REDIS_URL" => Some(redis.clone()),
            "REDIS_PREFIX" => Some(prefix.clone()),
            _ => None,
        }
    };
    let config = config_head("users", "${USERS_URL}") + ROUTES;
    // One file, two processes' worth of gateways.
    let a = Server::start(ConfigFile::parse_with(&config, &env).expect("parses"))
        .await
        .expect("instance a starts");
    let b = Server::start(ConfigFile::parse_with(&config, &env).expect("parses"))
        .await
        .expect("instance b starts");
    assert_ne!(a.local_addr(), b.local_addr());

    let send = |addr: std::net::SocketAddr, key: &'static str| async move {
        let req = Request::get(format!("http://{addr}/api/users/1"))
            .header("x-api-key", key)
            .body(empty())
            .expect("request");
        client().request(req).await.expect("response")
    };
    // Five requests of the minute, alternating between the instances.
    let mut remaining = Vec::new();
    for i in 0..5 {
        let addr = if i % 2 == 0 {
            a.local_addr()
        } else {
            b.local_addr()
        };
        let res = send(addr, "key-1").await;
        assert_eq!(res.status(), 200, "request {i}");
        remaining.push(
            res.headers()
                .get("ratelimit")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
    }
    // The counter is shared: both instances now refuse this key...
    assert_eq!(send(a.local_addr(), "key-1").await.status(), 429);
    assert_eq!(send(b.local_addr(), "key-1").await.status(), 429);
    // ...and only this key.
    assert_eq!(send(b.local_addr(), "key-2").await.status(), 200);
    // Each answer counted down the one shared quota, whichever instance
    // gave it.
    let left: Vec<Option<&str>> = remaining
        .iter()
        .map(|v| {
            v.as_deref()
                .and_then(|v| v.split(";r=").nth(1)?.split(';').next())
        })
        .collect();
    assert_eq!(
        left,
        [Some("4"), Some("3"), Some("2"), Some("1"), Some("0")],
        "{remaining:?}"
    );
    a.shutdown().await.expect("a stops");
    b.shutdown().await.expect("b stops");
}
