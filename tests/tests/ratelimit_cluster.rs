//! `tollgate-ratelimit`'s Redis store against a real three-node Redis
//! Cluster (`redis-server --cluster-enabled yes`, joined with
//! `redis-cli --cluster create`): keys spread over the nodes, several
//! windows decided atomically on one slot, and two limiter instances
//! sharing one quota.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use http::{Request, Response, StatusCode};
use tollgate::core::{ClientIp, Identity, body::ResponseBody};
use tollgate_ratelimit::{Key, Quota, RateLimitLayer, RedisStore, StoreFailure};
use tollgate_tests::redis_support::RedisCluster;
use tower::{Service, ServiceBuilder, ServiceExt};

type Res = Response<ResponseBody<String>>;

async fn ok(_: Request<()>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("ok".into()))
}

/// A request from `consumer` (the limiter's key).
fn request(consumer: &str) -> Request<()> {
    let mut req = Request::get("/api").body(()).unwrap();
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
    req.extensions_mut()
        .insert(Identity::consumer(consumer.to_owned()));
    req
}

/// A layer keyed by consumer over its own cluster connection; store errors
/// answer 503, so none can pass for an admission.
fn cluster_layer(cluster: &RedisCluster, name: &str, quotas: &[Quota]) -> RateLimitLayer {
    let store = RedisStore::open_cluster(cluster.nodes())
        .unwrap()
        .timeout(Duration::from_secs(1));
    let mut builder = RateLimitLayer::builder()
        .name(name)
        .key(Key::consumer())
        .headers_on_allowed(true)
        .store(store)
        .on_store_error(StoreFailure::FailClosed);
    for &quota in quotas {
        builder = builder.quota(quota);
    }
    builder.build().unwrap()
}

fn service(
    layer: &RateLimitLayer,
) -> impl Service<Request<()>, Response = Res, Error = Infallible> + Clone + use<> {
    ServiceBuilder::new().layer(layer.clone()).service_fn(ok)
}

async fn send<S>(svc: &S, consumer: &str) -> Res
where
    S: Service<Request<()>, Response = Res, Error = Infallible> + Clone,
{
    svc.clone().oneshot(request(consumer)).await.unwrap()
}

async fn count_ok<S>(svc: &S, consumer: &str, n: usize) -> usize
where
    S: Service<Request<()>, Response = Res, Error = Infallible> + Clone,
{
    let mut admitted = 0;
    for _ in 0..n {
        if send(svc, consumer).await.status() == StatusCode::OK {
            admitted += 1;
        }
    }
    admitted
}

/// How many scripts one node has cached (`INFO memory`).
fn cached_scripts(cluster: &RedisCluster, port: u16) -> u64 {
    let info = cluster.cli(port, &["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("number_of_cached_scripts:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn many_keys_spread_over_the_nodes_are_each_limited_exactly() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let layer = cluster_layer(&cluster, "spread", &[Quota::per_minute(3)]);
    let svc = service(&layer);
    let consumers: Vec<String> = (0..60).map(|i| format!("consumer-{i}")).collect();
    for consumer in &consumers {
        assert_eq!(count_ok(&svc, consumer, 5).await, 3, "{consumer}");
    }
    let counts = cluster.key_counts();
    assert_eq!(counts.iter().sum::<u64>(), 60, "one key per consumer");
    let nodes_used = counts.iter().filter(|&&n| n > 0).count();
    assert!(nodes_used >= 2, "keys on {nodes_used} node(s): {counts:?}");
    // The script was loaded (after NOSCRIPT) on every node that decided.
    for (&port, &n) in cluster.ports().iter().zip(&counts) {
        if n > 0 {
            assert_eq!(cached_scripts(&cluster, port), 1, "node {port}");
        }
    }
    // Script caches emptied on every node: EVALSHA meets NOSCRIPT on each
    // node again, and the store loads the script again by itself.
    for &port in cluster.ports() {
        assert_eq!(cluster.cli(port, &["SCRIPT", "FLUSH"]), "OK");
    }
    for consumer in &consumers[..20] {
        assert_eq!(count_ok(&svc, consumer, 1).await, 0, "{consumer}: spent");
        let fresh = format!("{consumer}-fresh");
        assert_eq!(count_ok(&svc, &fresh, 5).await, 3, "{fresh}");
    }
    let stats = layer.stats().snapshot();
    assert_eq!(stats.store_errors, 0, "{stats:?}");
}

#[tokio::test]
async fn several_windows_are_decided_atomically_in_the_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let layer = cluster_layer(
        &cluster,
        "windows",
        &[Quota::per_second(2), Quota::per_hour(3)],
    );
    let svc = service(&layer);
    let consumers = ["alice", "bob", "carol", "dave"];
    for c in consumers {
        assert_eq!(count_ok(&svc, c, 5).await, 2, "{c}: per second");
    }
    // Both windows' keys of each consumer are on one node (one slot).
    let keys = cluster.keys();
    for c in consumers {
        let holders: Vec<&Vec<String>> = keys
            .iter()
            .filter(|node| node.iter().any(|k| k.contains(c)))
            .collect();
        assert_eq!(holders.len(), 1, "{c}'s keys on one node: {keys:?}");
        let mine: Vec<&String> = holders[0].iter().filter(|k| k.contains(c)).collect();
        assert_eq!(mine.len(), 2, "{c}: one key per window: {mine:?}");
        let slots: Vec<String> = mine
            .iter()
            .map(|k| {
                let raw = k.replace("\\x1f", "\x1f");
                cluster.cli(cluster.ports()[0], &["CLUSTER", "KEYSLOT", &raw])
            })
            .collect();
        assert_eq!(slots[0], slots[1], "{c}: {mine:?}");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for c in consumers {
        assert_eq!(count_ok(&svc, c, 5).await, 1, "{c}: per hour, 3 in all");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for c in consumers {
        // Refused by the hour window, the second window loses nothing.
        let res = send(&svc, c).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{c}");
        let state = res.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(state.contains("\"default-second\";r=2;"), "{c}: {state}");
        assert!(state.contains("\"default-hour\";r=0;"), "{c}: {state}");
    }
    assert_eq!(layer.stats().snapshot().store_errors, 0);
}

#[tokio::test]
async fn two_instances_share_one_quota_through_the_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let quota = Quota::per_minute(20);
    // Two "gateway instances": two layers, each with its own connection.
    let a = cluster_layer(&cluster, "shared", &[quota]);
    let b = cluster_layer(&cluster, "shared", &[quota]);
    let (sa, sb) = (service(&a), service(&b));
    let consumers: Vec<String> = (0..6).map(|i| format!("tenant-{i}")).collect();
    for consumer in &consumers {
        let mut admitted = 0;
        for _ in 0..25 {
            admitted += count_ok(&sa, consumer, 1).await + count_ok(&sb, consumer, 1).await;
        }
        assert!(
            (19..=21).contains(&admitted),
            "{consumer}: {admitted} admitted of 20"
        );
        let res = send(&sa, consumer).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let nodes_used = cluster.key_counts().iter().filter(|&&n| n > 0).count();
    assert!(nodes_used >= 2, "6 keys on {nodes_used} node(s)");
    assert_eq!(a.stats().snapshot().store_errors, 0);
    assert_eq!(b.stats().snapshot().store_errors, 0);
}
