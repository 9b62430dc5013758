//! Rate-limit decisions (issue #5): the in-memory check on a hot key, on
//! one thread (target under 100 ns) and under contention; the whole layer
//! around an inner service that answers at once; Redis decisions per
//! second through one connection, one at a time and pipelined (skipped
//! when `redis-server` is not on PATH).
//!
//! `cargo bench -p tollgate-benches --bench ratelimit`

#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]

use std::{
    convert::Infallible,
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tollgate::core::ClientIp;
use tollgate_ratelimit::{Check, Quota, RateLimitLayer, RedisStore, StoreFailure};
use tollgate_tests::redis_support::RedisServer;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const HOT: &[u8] = b"ip=203.0.113.7";

fn decided(check: &Check) -> bool {
    matches!(check, Check::Ready(Ok(d)) if d.is_allowed())
}

fn memory_layer() -> RateLimitLayer {
    // A quota the bench never exhausts: every check is a full admission.
    RateLimitLayer::per_key(Quota::per_second(1_000_000).burst(1_000_000_000)).expect("layer")
}

fn memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    let layer = memory_layer();
    group.bench_function("memory_check_hot_key", |b| {
        b.iter(|| decided(&layer.check_key("default", black_box(HOT))));
    });
    // Several threads on the same key: the time per check, all threads
    // together (throughput), so a figure below the one-thread one means
    // the threads overlap.
    for threads in [2usize, 4] {
        let layer = Arc::new(memory_layer());
        group.bench_function(format!("memory_check_hot_key_{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(threads as u64);
                let start = tokio::time::Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        let layer = &layer;
                        s.spawn(move || {
                            for _ in 0..per {
                                black_box(decided(&layer.check_key("default", HOT)));
                            }
                        });
                    }
                });
                start.elapsed()
            });
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let svc = ServiceBuilder::new()
        .layer(memory_layer())
        .service(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    group.bench_function("layer_call_memory", |b| {
        b.to_async(&rt).iter(|| async {
            let mut req = Request::new(());
            req.extensions_mut()
                .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
            svc.clone().oneshot(req).await.expect("response").status()
        });
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = RedisStore::open(&server.url())
        .expect("redis url")
        .timeout(Duration::from_secs(2));
    let layer = RateLimitLayer::builder()
        .name("bench")
        .quota(Quota::per_second(1_000_000).burst(1_000_000))
        .store(store)
        .on_store_error(StoreFailure::FailClosed)
        .build()
        .expect("layer");
    let mut group = c.benchmark_group("ratelimit");
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("redis_decision_sequential", |b| {
        b.to_async(&rt).iter(|| async {
            match layer.check_key("default", HOT) {
                Check::Pending(f) => f.await.expect("redis decision").is_allowed(),
                Check::Ready(r) => r.expect("redis decision").is_allowed(),
            }
        });
    });
    // 64 decisions in flight on the one multiplexed connection.
    const DEPTH: u64 = 64;
    group.throughput(criterion::Throughput::Elements(DEPTH));
    group.bench_function("redis_decision_pipelined_64", |b| {
        b.to_async(&rt).iter(|| async {
            let checks = (0..DEPTH).map(|_| async {
                match layer.check_key("default", HOT) {
                    Check::Pending(f) => f.await.expect("redis decision").is_allowed(),
                    Check::Ready(r) => r.expect("redis decision").is_allowed(),
                }
            });
            futures_util::future::join_all(checks).await
        });
    });
    group.finish();
    drop(server);
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
