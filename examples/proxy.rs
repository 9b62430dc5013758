//! The smallest useful gateway: every path forwarded unchanged to one or
//! more upstreams. The load comparison with nginx uses it.
//!
//! ```sh
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 \
//!     --upstream http://127.0.0.1:9000 [--upstream http://127.0.0.1:9001] \
//!     [--workers N] [--balance p2c|round-robin] [--pool worker|hyper-util]
//! ```
//!
//! `--workers N` runs N worker threads (default: one per core), each with
//! its own current-thread runtime, its own `SO_REUSEPORT` listener and its
//! own upstream connection pool, so nothing is shared on the hot path.
//! `--pool` picks that pool: `worker` (the default here, `PoolKind::Worker`,
//! made for exactly this one-gateway-per-worker shape) or `hyper-util`
//! (hyper-util's pooled client, the library's default).

use std::net::SocketAddr;

use tollgate::{Balance, Gateway, Route, Upstream, proxy::PoolKind};

struct Args {
    listen: SocketAddr,
    upstreams: Vec<String>,
    workers: usize,
    balance: Balance,
    pool: PoolKind,
}

const USAGE: &str = "usage: proxy [--listen ADDR] --upstream URL [--upstream URL ...] [--workers N] [--balance p2c|round-robin] [--pool worker|hyper-util]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?,
        upstreams: Vec::new(),
        workers: std::thread::available_parallelism().map_or(1, usize::from),
        balance: Balance::LeastRequest,
        pool: PoolKind::Worker,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--upstream" => args.upstreams.push(value()?),
            "--workers" => {
                args.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?;
                if args.workers == 0 {
                    return Err("--workers must be at least 1".into());
                }
            }
            "--balance" => {
                args.balance = match value()?.as_str() {
                    "p2c" | "least-request" => Balance::LeastRequest,
                    "round-robin" | "rr" => Balance::RoundRobin,
                    other => return Err(format!("--balance: unknown policy {other:?}")),
                }
            }
            "--pool" => {
                args.pool = match value()?.as_str() {
                    "worker" => PoolKind::Worker,
                    "hyper-util" => PoolKind::HyperUtil,
                    other => return Err(format!("--pool: unknown pool {other:?}")),
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.upstreams.is_empty() {
        return Err(format!("at least one --upstream is needed\n{USAGE}"));
    }
    Ok(args)
}

/// The gateway as a plain service: it has no handlers of its own, so
/// axum's router is left out of the hot path.
fn gateway(args: &Args) -> Result<tollgate::GatewayService, tollgate::ConfigError> {
    Gateway::builder()
        .upstream(
            Upstream::builder("backend")
                .endpoints(args.upstreams.iter().cloned())
                .balance(args.balance)
                .pool(args.pool),
        )
        .route(Route::prefix("/").name("all").to("backend"))
        .build_service()
}

fn listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    // One listener per worker on the same address: the kernel spreads the
    // connections.
    tollgate::ListenOptions::new()
        .reuse_port(true)
        .backlog(4096)
        .bind(addr)
}

/// One worker: a current-thread runtime with its own listener and gateway.
fn worker(args: &Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let router = gateway(args)?;
        let listener = listener(args.listen)?;
        tollgate::serve(listener, router, tollgate::shutdown_signal()).await?;
        Ok(())
    })
}

// mimalloc, as in `examples/gateway.rs`: the system allocator's malloc and
// free were a tenth of the proxy's user time (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    // Fail early, on the main thread, on a bad upstream URL.
    if let Err(err) = gateway(&args) {
        eprintln!("proxy: {err}");
        std::process::exit(2);
    }
    tracing::info!(listen = %args.listen, workers = args.workers, upstreams = ?args.upstreams, "proxy starting");
    let result = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..args.workers)
            .map(|_| scope.spawn(|| worker(&args)))
            .collect();
        let mut result = worker(&args);
        for handle in handles {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => result = Err(err),
                Err(_) => result = Err("a worker thread panicked".into()),
            }
        }
        result
    });
    if let Err(err) = result {
        eprintln!("proxy: {err}");
        std::process::exit(1);
    }
}
