//! The resident memory of the in-memory rate-limit store holding 1 M
//! distinct keys (issue #5: under 200 MB), and after idle keys are evicted.
//!
//! `cargo run --release -p tollgate-benches --example ratelimit_memory`

#![expect(
    clippy::print_stdout,
    clippy::expect_used,
    reason = "a measuring tool prints its figures and stops loudly"
)]

use std::time::Duration;

use tollgate_ratelimit::{Check, Quota, RateLimitLayer};

const KEYS: u32 = 1_000_000;

/// VmRSS from /proc/self/status, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    // 10 per second: a key is back to fresh (evictable) 100 ms after use.
    let layer = RateLimitLayer::per_key(Quota::per_second(10)).expect("layer");
    let store = layer.memory_store().expect("memory store").clone();
    let before = rss_mib();
    let mut key = String::with_capacity(32);
    for i in 0..KEYS {
        key.clear();
        key.push_str("consumer=");
        key.push_str(&i.to_string());
        if !matches!(
            layer.check_key("default", key.as_bytes()),
            Check::Ready(Ok(_))
        ) {
            println!("check failed at key {i}");
        }
    }
    let full = rss_mib();
    println!("keys held: {}", store.len());
    println!("RSS before: {before:.1} MiB");
    println!(
        "RSS with {KEYS} keys: {full:.1} MiB ({:.1} MiB for the keys, {:.0} bytes per key)",
        full - before,
        (full - before) * 1024.0 * 1024.0 / f64::from(KEYS)
    );
    std::thread::sleep(Duration::from_millis(200));
    store.evict_idle();
    println!("keys after eviction: {}", store.len());
    println!("RSS after eviction: {:.1} MiB", rss_mib());
}
