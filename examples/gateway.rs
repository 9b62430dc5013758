//! A gateway run from a TOML config file (see `docs/config.md` and the
//! samples in `examples/configs/`).
//!
//! ```sh
//! cargo run --release --example gateway -- --config examples/configs/seed-routing.toml
//! cargo run --release --example gateway -- --config FILE --check   # validate and exit
//! kill -HUP <pid>                                                  # reload the file
//! kill -USR1 <pid>                                                 # reopen the log files
//! ```
//!
//! The file is also reloaded when its content changes (checked every two
//! seconds; `--no-watch` turns that off). `--workers N` sets the worker
//! threads (one: a current-thread runtime; default: one per core, or
//! `TOKIO_WORKER_THREADS`). A config that does not build is
//! refused and the running one kept. After log rotation renamed the
//! access log or the audit trail, SIGUSR1 (or `POST /reopen_logs` on the
//! admin listener) opens them again at their paths. Ctrl-C or SIGTERM
//! drain and stop.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use tollgate::{
    config::{ConfigFile, Server},
    observe::{AccessLogWriter, JsonLines},
};
use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

struct Args {
    config: PathBuf,
    check: bool,
    watch: bool,
    workers: Option<usize>,
}

fn usage() -> String {
    "usage: gateway --config FILE [--check] [--no-watch] [--workers N]".to_owned()
}

fn parse_args() -> Result<Args, String> {
    let mut config = None;
    let mut check = false;
    let mut watch = true;
    let mut workers = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => config = Some(args.next().ok_or_else(usage)?.into()),
            "--check" => check = true,
            "--no-watch" => watch = false,
            "--workers" => {
                let n = args.next().ok_or_else(usage)?;
                match n.parse::<usize>() {
                    Ok(n) if n > 0 => workers = Some(n),
                    _ => return Err(format!("--workers: {n:?} is not a positive number")),
                }
            }
            "--help" | "-h" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(Args {
        config: config.ok_or_else(usage)?,
        check,
        watch,
        workers,
    })
}

// mimalloc instead of the system allocator: a gateway allocates and frees
// a few dozen small objects per request, and glibc's malloc and free took
// about a tenth of the gateway's instructions under load (docs/benchmarks.md,
// "Serving"). A program embedding tollgate picks its own allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    // One worker thread: a current-thread runtime, with no work stealing
    // and no cross-thread wake-ups. More: tokio's multi-thread runtime.
    // `--workers`, else TOKIO_WORKER_THREADS, else one per core.
    let workers = args.workers.or_else(|| {
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
    });
    let runtime = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let file = match ConfigFile::load(&args.config) {
        Ok(file) => file,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        // Everything but binding the listeners: TLS files and every layer.
        let checked = file.tls_config().and_then(|_| file.build()).map(|_| ());
        return match checked {
            Ok(()) => {
                eprintln!("{}: ok", args.config.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        };
    }

    // The access log goes where `[observe] access_log` says: the server
    // opens it and writes each request's line there itself (a file is
    // buffered and flushed every second). The audit trail is a `tracing`
    // target; it goes to `audit_log` by a layer of the subscriber, and
    // every other event is one JSON line on stdout.
    let audit_log = match file.config().observe.as_ref() {
        Some(observe) => match AccessLogWriter::open(&observe.audit_log) {
            Ok(audit) => Some(audit),
            Err(err) => {
                eprintln!("observe: cannot open the audit log: {err}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let audit_target = tollgate::core::audit::TARGET;
    // Standard output gets the rest: the audit trail only when it has no
    // file of its own. That is a static directive of the one `EnvFilter`,
    // decided once per callsite. (A second per-layer filter nested around
    // this one cost HTTP/2 a third of its throughput: hyper's and h2's
    // disabled `trace!` callsites were then asked about per event.)
    if audit_log.is_some()
        && let Ok(directive) = format!("{audit_target}=off").parse()
    {
        filter = filter.add_directive(directive);
    }
    tracing_subscriber::registry()
        .with(audit_log.as_ref().map(|w| w.target_layer(audit_target)))
        .with(JsonLines::stdout().with_filter(filter))
        .init();

    let server = match Server::start(file).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(writer) = audit_log {
        server.reloader().set_audit_log(writer);
    }
    #[cfg(unix)]
    if let Err(err) = server.reloader().reload_on_sighup() {
        eprintln!("cannot listen for SIGHUP: {err}");
    }
    #[cfg(unix)]
    if let Err(err) = server.reloader().reopen_logs_on_sigusr1() {
        eprintln!("cannot listen for SIGUSR1: {err}");
    }
    if args.watch {
        server.reloader().watch_file(Duration::from_secs(2));
    }
    tracing::info!(
        listen = %server.local_addr(),
        admin = server.admin_addr().map(|a| a.to_string()),
        "gateway running"
    );
    match server.run_until(tollgate::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
