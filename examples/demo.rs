//! The tollgate demo: a gateway on 127.0.0.1:8080 (or `TOLLGATE_ADDR`) in
//! front of three in-process services (users, orders, products), with an
//! admin listener on 127.0.0.1:9901 (or `TOLLGATE_ADMIN_ADDR`) serving
//! `/metrics`, `/healthz`, `/readyz` and `/upstreams` (the services are
//! health-checked every five seconds). Every request gets an id, a trace and one
//! JSON access-log line on stdout. `/api/orders` needs the scope
//! `orders:read`: the demo prints a JWT and an API key that have it.
//!
//! ```sh
//! cargo run --release --example demo
//! curl -s http://127.0.0.1:8080/api/users/42   # reaches the users service as /users/42
//! curl -s http://127.0.0.1:9901/metrics        # Prometheus metrics
//! ```
//!
//! Stop it with Ctrl-C: in-flight requests are drained first.

#[path = "support/demo_app.rs"]
mod demo_app;

use std::{future::IntoFuture, net::SocketAddr};

use tollgate::{
    admin::Admin,
    observe::{JsonLines, Metrics},
};
use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One JSON line per event on stdout: access logs, audit events, the rest.
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::registry()
        .with(JsonLines::stdout().with_filter(filter))
        .init();

    let addr: SocketAddr = std::env::var("TOLLGATE_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()
        .map_err(|e| format!("TOLLGATE_ADDR: {e}"))?;
    let admin_addr: SocketAddr = std::env::var("TOLLGATE_ADMIN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9901".to_owned())
        .parse()
        .map_err(|e| format!("TOLLGATE_ADMIN_ADDR: {e}"))?;
    let services = demo_app::start_services().await?;
    let metrics = Metrics::new();
    let auth = demo_app::DemoAuth::new()?;
    let health = tollgate::Health::new();
    let router = demo_app::gateway(services, &metrics, &auth)?
        .health(health.clone())
        .build()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let admin = tokio::net::TcpListener::bind(admin_addr).await?;
    let admin_addr = admin.local_addr()?;
    tokio::spawn(
        tollgate::serve(
            admin,
            Admin::new().metrics(metrics).health(health).router(),
            std::future::pending(),
        )
        .into_future(),
    );

    tracing::info!(%addr, users = %services.users, orders = %services.orders, products = %services.products, "tollgate demo listening");
    eprintln!("\ntollgate demo on http://{addr} — try:\n");
    for line in demo_app::curl_lines(addr, &auth) {
        eprintln!("  {line}");
    }
    eprintln!("\n  # past the free plan's quota: 429 with Retry-After and RateLimit headers");
    eprintln!("  {}", demo_app::curl_loop_line(addr, &auth));
    eprintln!("\n  curl -s http://{admin_addr}/metrics");
    eprintln!("  curl -s http://{admin_addr}/readyz");
    eprintln!("  curl -s http://{admin_addr}/upstreams   # each endpoint's health check");
    eprintln!("\nCtrl-C to stop.\n");

    tollgate::serve(listener, router, tollgate::shutdown_signal()).await?;
    Ok(())
}
