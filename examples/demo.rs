//! The tollgate demo: a gateway on 127.0.0.1:8080 (or `TOLLGATE_ADDR`) in
//! front of three in-process services (users, orders, products).
//!
//! ```sh
//! cargo run --release --example demo
//! curl -s http://127.0.0.1:8080/api/users/42   # reaches the users service as /users/42
//! ```
//!
//! Stop it with Ctrl-C: in-flight requests are drained first.

#[path = "support/demo_app.rs"]
mod demo_app;

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let addr: SocketAddr = std::env::var("TOLLGATE_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()
        .map_err(|e| format!("TOLLGATE_ADDR: {e}"))?;
    let services = demo_app::start_services().await?;
    let router = demo_app::gateway(services).build()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;

    tracing::info!(%addr, users = %services.users, orders = %services.orders, products = %services.products, "tollgate demo listening");
    eprintln!("\ntollgate demo on http://{addr} — try:\n");
    for line in demo_app::curl_lines(addr) {
        eprintln!("  {line}");
    }
    eprintln!("\nCtrl-C to stop.\n");

    tollgate::serve(listener, router, tollgate::shutdown_signal()).await?;
    Ok(())
}
