//! `tollgate-ratelimit` against real servers: an axum app on 127.0.0.1
//! behind the layer, and a real `redis-server` shared by two limiter
//! instances, killed and restarted under each failure mode.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns"
)]

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use axum::{Router, routing::get};
use http::{Request, Response, StatusCode};
use tollgate::core::{ClientIp, Identity, body::ResponseBody, problem};
use tollgate_ratelimit::{
    ConcurrencyLimitLayer, Key, Plan, Quota, RateLimitLayer, RedisStore, StoreFailure,
};
use tollgate_tests::{assert_problem, client, empty, redis_support::RedisServer, spawn_gateway};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type Res = Response<ResponseBody<String>>;

async fn ok(_: Request<()>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("ok".into()))
}

fn request() -> Request<()> {
    let mut req = Request::get("/api").body(()).unwrap();
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
    req
}

fn redis_layer(server: &RedisServer, quota: Quota, failure: StoreFailure) -> RateLimitLayer {
    let store = RedisStore::open(&server.url())
        .unwrap()
        .timeout(Duration::from_millis(300))
        .retry_every(Duration::from_millis(100));
    RateLimitLayer::builder()
        .name("shared")
        .quota(quota)
        .store(store)
        .on_store_error(failure)
        .build()
        .unwrap()
}

fn service(
    layer: &RateLimitLayer,
) -> impl Service<Request<()>, Response = Res, Error = Infallible> + Clone + use<> {
    ServiceBuilder::new().layer(layer.clone()).service_fn(ok)
}

async fn status<S>(svc: &S) -> StatusCode
where
    S: Service<Request<()>, Response = Res, Error = Infallible> + Clone,
{
    svc.clone().oneshot(request()).await.unwrap().status()
}

async fn count_ok<S>(svc: &S, n: usize) -> usize
where
    S: Service<Request<()>, Response = Res, Error = Infallible> + Clone,
{
    let mut admitted = 0;
    for _ in 0..n {
        if status(svc).await == StatusCode::OK {
            admitted += 1;
        }
    }
    admitted
}

/// Sends requests until `want` comes back (Redis back and reconnected),
/// for at most 10 s.
async fn until_status<S>(svc: &S, want: StatusCode)
where
    S: Service<Request<()>, Response = Res, Error = Infallible> + Clone,
{
    for _ in 0..200 {
        if status(svc).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never got {want} within 10 s");
}

#[tokio::test]
async fn end_to_end_through_axum_429_problem_json() {
    let limit = RateLimitLayer::builder()
        .plan(Plan::new("free").quota(Quota::per_minute(100).burst(3)))
        .headers_on_allowed(true)
        .build()
        .unwrap();
    let router = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(limit)
        .layer(ConcurrencyLimitLayer::new(64).unwrap());
    let gw = spawn_gateway(router).await;
    let get = || Request::get(gw.url("/hello")).body(empty()).unwrap();
    for remaining in [2, 1, 0] {
        let res = client().request(get()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["ratelimit-policy"],
            "\"free-minute\";q=100;w=60"
        );
        let state = res.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            state.starts_with(&format!("\"free-minute\";r={remaining};")),
            "{state}"
        );
    }
    let res = client().request(get()).await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(res.headers().contains_key("ratelimit"));
    let json = assert_problem(res, 429, problem::RATE_LIMITED).await;
    assert_eq!(json["plan"], "free");
    assert_eq!(json["instance"], "/hello");
}

#[tokio::test]
async fn two_instances_share_one_quota_through_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_minute(20);
    // Two "gateway instances": two layers, each with its own connection.
    let a = service(&redis_layer(&server, quota, StoreFailure::FailClosed));
    let b = service(&redis_layer(&server, quota, StoreFailure::FailClosed));
    let mut admitted = 0;
    for _ in 0..25 {
        admitted += count_ok(&a, 1).await + count_ok(&b, 1).await;
    }
    assert!((19..=21).contains(&admitted), "{admitted} admitted of 20");
    let res = a.clone().oneshot(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "one request every 3 s: {retry}");
}

#[tokio::test]
async fn several_windows_are_decided_atomically_in_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::open(&server.url()).unwrap();
    let layer = RateLimitLayer::builder()
        .name("windows")
        .quota(Quota::per_second(2))
        .quota(Quota::per_hour(3))
        .headers_on_allowed(true)
        .store(store)
        .build()
        .unwrap();
    let svc = service(&layer);
    assert_eq!(count_ok(&svc, 5).await, 2, "per second");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(count_ok(&svc, 5).await, 1, "per hour: 3 in all");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Refused by the hour window, the second window loses nothing: its
    // full burst is still there (the state shows r=2 for it).
    let res = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let state = res.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(state.contains("\"default-second\";r=2;"), "{state}");
    assert!(state.contains("\"default-hour\";r=0;"), "{state}");
}

#[tokio::test]
async fn redis_down_fail_open_admits_and_counts_then_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let layer = redis_layer(&server, Quota::per_minute(3), StoreFailure::FailOpen);
    let svc = service(&layer);
    assert_eq!(count_ok(&svc, 5).await, 3);
    server.kill();
    assert_eq!(count_ok(&svc, 10).await, 10, "fail-open admits");
    let stats = layer.stats().snapshot();
    assert_eq!(stats.fail_open, 10);
    assert_eq!(stats.outages, 1);
    server.restart();
    // Redis restarted empty: the quota starts again, decided by Redis.
    until_status(&svc, StatusCode::TOO_MANY_REQUESTS).await;
    let errors = layer.stats().snapshot().store_errors;
    assert_eq!(status(&svc).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        layer.stats().snapshot().store_errors,
        errors,
        "Redis decides again"
    );
}

#[tokio::test]
async fn redis_down_fail_closed_answers_503_then_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let layer = redis_layer(&server, Quota::per_minute(3), StoreFailure::FailClosed);
    let svc = service(&layer);
    assert_eq!(count_ok(&svc, 5).await, 3);
    server.kill();
    let res = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    assert_problem(res, 503, problem::SERVICE_UNAVAILABLE).await;
    assert_eq!(count_ok(&svc, 5).await, 0);
    assert_eq!(layer.stats().snapshot().fail_closed, 6);
    server.restart();
    until_status(&svc, StatusCode::OK).await;
    assert_eq!(count_ok(&svc, 5).await, 2, "3 per minute again, from Redis");
    assert_eq!(layer.stats().snapshot().outages, 1);
}

#[tokio::test]
async fn redis_down_falls_back_to_local_limits_divided_by_instances() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let failure = StoreFailure::LocalFallback { instances: 2 };
    let layer = redis_layer(&server, Quota::per_minute(6), failure);
    let svc = service(&layer);
    assert_eq!(count_ok(&svc, 10).await, 6);
    server.kill();
    assert_eq!(count_ok(&svc, 10).await, 3, "6 ÷ 2 instances, locally");
    let stats = layer.stats().snapshot();
    assert_eq!(stats.local_fallback, 10);
    assert_eq!(stats.outages, 1);
    server.restart();
    until_status(&svc, StatusCode::OK).await;
    let before = layer.stats().snapshot().local_fallback;
    assert_eq!(
        count_ok(&svc, 10).await,
        5,
        "6 per minute again, from Redis"
    );
    assert_eq!(layer.stats().snapshot().local_fallback, before);
}

#[tokio::test]
async fn redis_plans_and_keys_separate_buckets() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let layer = RateLimitLayer::builder()
        .name("plans")
        .key(Key::consumer())
        .plan(Plan::new("free").quota(Quota::per_minute(2)))
        .plan(Plan::unlimited("partner"))
        .default_plan("free")
        .store(RedisStore::open(&server.url()).unwrap())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(ok));
    let as_ = |consumer: &str, plan: &str| {
        let mut req = request();
        req.extensions_mut()
            .insert(Identity::consumer(consumer.to_owned()).with_plan(plan.to_owned()));
        req
    };
    let mut admitted = [0; 3];
    for _ in 0..5 {
        for (i, (c, p)) in [("a", "free"), ("b", "free"), ("p", "partner")]
            .iter()
            .enumerate()
        {
            if svc.clone().oneshot(as_(c, p)).await.unwrap().status() == 200 {
                admitted[i] += 1;
            }
        }
    }
    assert_eq!(admitted, [2, 2, 5]);
}
