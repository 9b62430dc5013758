//! Running a gateway from a config file: listeners, the admin listener,
//! hot reload on SIGHUP or a file change, reopening the log files on
//! SIGUSR1 (log rotation), and shutdown.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use axum::{Router, body::Body};
use http::{Request, Response};
use tokio::{sync::watch, task::JoinSet};
use tollgate_observe::{AccessLogWriter, Metrics};

/// The slots of [`Shared::logs`].
const ACCESS: usize = 0;
const AUDIT: usize = 1;
use tower::{Layer, Service};

use super::{BuildState, ConfigFile, ConfigFileError, GatewayConfig, ServerConfig};
use crate::{
    Health, LayeredFuture, LayeredService, Serve,
    admin::{Admin, ConfigSnapshot},
    hsts_layer, redirect_to_https, serve,
};

/// The public service of a config-driven gateway: each request runs on
/// the build current when it arrived, so a reload never disturbs a
/// request in flight. There is no axum router in front: a config gateway
/// has no handlers of its own, so the routes and global layers are called
/// directly.
#[derive(Clone, Debug)]
pub struct ReloadableService {
    current: Arc<ArcSwap<LayeredService>>,
}

impl Service<Request<Body>> for ReloadableService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = LayeredFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.current.load().call_shared(req)
    }
}

/// Builds a config into a router, and rebuilds it on reload.
///
/// A reload parses and builds the new config completely, and only then
/// swaps it in; a config that fails either way is refused, logged and
/// audited, and the running one stays. Upstreams (their pools) and rate
/// limits (their counters) whose config is unchanged carry over.
/// Listener settings (`[server]`, `[admin]`) take effect on restart only:
/// a reload that changes them is refused.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

struct Shared {
    current: Arc<ArcSwap<LayeredService>>,
    /// The running config and what its build keeps for the next one.
    state: Mutex<(ConfigFile, BuildState)>,
    metrics: Metrics,
    health: Health,
    snapshot: ConfigSnapshot,
    /// The access log's writer (opened here) and the audit trail's (set
    /// by the application), moved to the new
    /// `observe.access_log`/`observe.audit_log` on reload.
    logs: Mutex<[Option<AccessLogWriter>; 2]>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// Builds `file` into a router.
    ///
    /// # Errors
    ///
    /// As [`ConfigFile::gateway_builder`], and the checks of
    /// [`GatewayBuilder::build`](crate::GatewayBuilder::build) placed on
    /// the `routes` or `upstreams` key.
    pub fn new(file: ConfigFile) -> Result<Self, ConfigFileError> {
        let metrics = Metrics::new();
        let health = Health::new();
        health.report_to(&metrics);
        let mut initial = BuildState::with_metrics(metrics.clone());
        let access_log = open_access_log(&file)?;
        if let Some(writer) = &access_log {
            initial = initial.with_access_log(writer.clone());
        }
        let (router, state) = build_router(&file, &initial, &health)?;
        let snapshot = ConfigSnapshot::new(file.redacted());
        Ok(Self {
            shared: Arc::new(Shared {
                current: Arc::new(ArcSwap::from_pointee(router)),
                state: Mutex::new((file, state)),
                metrics,
                health,
                snapshot,
                logs: Mutex::new([access_log, None]),
            }),
        })
    }

    /// The service to serve; it follows every reload.
    pub fn service(&self) -> ReloadableService {
        ReloadableService {
            current: Arc::clone(&self.shared.current),
        }
    }

    /// The metrics every build of this gateway records into.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The readiness probes of the running build (auth keys, upstreams,
    /// Redis), for `/readyz`.
    pub fn health(&self) -> &Health {
        &self.shared.health
    }

    /// The running config with its secrets redacted, for `/config`.
    pub fn snapshot(&self) -> &ConfigSnapshot {
        &self.shared.snapshot
    }

    /// The admin router of this gateway: `/healthz`, `/readyz` (the
    /// running build's probes), `/metrics` and `/config` (redacted), each
    /// following every reload; `POST /healthcheck/fail` and `/ok`; and
    /// `POST /reopen_logs`
    /// ([`reopen_logs`](Self::reopen_logs)) when a log writer is set by
    /// then, which [`Server::start`] finds when the config it starts with
    /// has an `[observe]` table.
    pub fn admin_router(&self) -> Router {
        let admin = Admin::new()
            .metrics(self.shared.metrics.clone())
            .health(self.shared.health.clone())
            .config(self.shared.snapshot.clone());
        let admin = if self.logs().iter().any(Option::is_some) {
            let this = self.clone();
            admin.reopen_logs(move || this.reopen_logs())
        } else {
            admin
        };
        admin.router()
    }

    /// The config now running.
    pub fn current(&self) -> ConfigFile {
        self.lock().0.clone()
    }

    /// Re-reads the file the running config came from and swaps it in.
    ///
    /// # Errors
    ///
    /// The running config was not read from a file, or the new one is
    /// refused (see [`reload_from`](Self::reload_from)).
    pub fn reload(&self) -> Result<(), ConfigFileError> {
        let path = self.lock().0.path().map(PathBuf::from);
        let Some(path) = path else {
            return Err(self.refused(ConfigFileError::new(
                "",
                "the running config was not read from a file",
            )));
        };
        match ConfigFile::load(&path) {
            Ok(file) => self.reload_from(file),
            Err(err) => Err(self.refused(err)),
        }
    }

    /// Builds `file` and swaps it in. In-flight requests finish on the
    /// old router.
    ///
    /// # Errors
    ///
    /// The new config does not build, or changes `[server]` or `[admin]`;
    /// the running config stays. Either way the outcome is logged and
    /// audited (`reloaded` or `rejected`, reason `config reload: …`).
    pub fn reload_from(&self, file: ConfigFile) -> Result<(), ConfigFileError> {
        let mut guard = self.lock();
        let (running, state) = &mut *guard;
        if let Err(err) = restart_only(running.config(), &file) {
            return Err(self.refused(err));
        }
        if state.access_log().is_none() {
            // The first config with an `[observe]` table opens the log.
            match open_access_log(&file) {
                Ok(Some(writer)) => {
                    self.logs()[ACCESS] = Some(writer.clone());
                    *state = std::mem::take(state).with_access_log(writer);
                }
                Ok(None) => {}
                Err(err) => return Err(self.refused(err)),
            }
        }
        match build_router(&file, state, &self.shared.health) {
            Ok((router, next)) => {
                self.move_logs(running.config(), file.config());
                self.shared.current.store(Arc::new(router));
                self.shared.snapshot.set(file.redacted());
                *state = next;
                *running = file;
                tracing::info!("config reloaded");
                tollgate_core::audit::event(None, None, None, "reloaded", "config reload: applied");
                Ok(())
            }
            Err(err) => Err(self.refused(err)),
        }
    }

    /// The access log's writer: opened from `observe.access_log` by the
    /// first config with an `[observe]` table, written to by every build
    /// from then on, and moved when a reload changes the destination.
    pub fn access_log(&self) -> Option<AccessLogWriter> {
        self.logs()[ACCESS].clone()
    }

    /// The audit trail's destination to move when `observe.audit_log`
    /// changes on reload (see [`AccessLogWriter::target_layer`]).
    pub fn set_audit_log(&self, writer: AccessLogWriter) {
        self.logs()[AUDIT] = Some(writer);
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, [Option<AccessLogWriter>; 2]> {
        self.shared
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Flushes the access log and the audit trail, where they were set.
    pub fn flush_logs(&self) {
        for writer in self.logs().iter().flatten() {
            if let Err(err) = writer.flush() {
                tracing::warn!(error = %err, "log flush failed");
            }
        }
    }

    /// Opens the access log's and the audit trail's files again at the
    /// same paths, for log rotation: after `logrotate` renames them, lines
    /// go to the renamed files until this runs (see
    /// [`AccessLogWriter::reopen_file`]). What each holds buffered is
    /// flushed into its old file first. Called by
    /// [`reopen_logs_on_sigusr1`](Self::reopen_logs_on_sigusr1) and by the
    /// admin listener's `POST /reopen_logs`.
    ///
    /// Returns how many files were reopened: a log written to standard
    /// output or error, or off, has none, and a log that was not set is
    /// skipped.
    ///
    /// # Errors
    ///
    /// The first log that could not be reopened (each failure is also
    /// logged as a warning). Both logs are tried; one whose new file
    /// cannot be opened keeps writing to its old file.
    pub fn reopen_logs(&self) -> io::Result<usize> {
        let logs = self.logs().clone();
        let mut reopened = 0;
        let mut failed = None;
        for (writer, log) in logs.iter().zip(["access", "audit"]) {
            let Some(writer) = writer else { continue };
            match writer.reopen_file() {
                Ok(true) => reopened += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %err, log, "cannot reopen a log file");
                    failed.get_or_insert(err);
                }
            }
        }
        match failed {
            Some(err) => Err(err),
            None => {
                tracing::info!(reopened, "log files reopened");
                Ok(reopened)
            }
        }
    }

    fn move_logs(&self, running: &GatewayConfig, next: &GatewayConfig) {
        let destinations = |c: &GatewayConfig| {
            c.observe
                .as_ref()
                .map(|o| [o.access_log.clone(), o.audit_log.clone()])
        };
        let Some(to) = destinations(next) else { return };
        let from = destinations(running);
        let logs = self.logs().clone();
        for (i, writer) in logs.iter().enumerate() {
            let (Some(writer), Some(to)) = (writer, to.get(i)) else {
                continue;
            };
            if from.as_ref().and_then(|f| f.get(i)) == Some(to) {
                continue;
            }
            if let Err(err) = writer.reopen(to) {
                tracing::warn!(error = %err, "cannot move a log; it stays where it was");
            }
        }
    }

    fn refused(&self, err: ConfigFileError) -> ConfigFileError {
        tracing::warn!(error = %err, "config reload refused; keeping the running config");
        tollgate_core::audit::event(
            None,
            None,
            None,
            "rejected",
            &format!("config reload: {err}"),
        );
        err
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (ConfigFile, BuildState)> {
        // A panic while holding the lock cannot leave the pair half
        // written: both are replaced together after the build.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reloads on every SIGHUP until the runtime stops (abort the handle
    /// to stop earlier).
    ///
    /// # Errors
    ///
    /// When the signal handler cannot be installed.
    #[cfg(unix)]
    pub fn reload_on_sighup(&self) -> io::Result<tokio::task::JoinHandle<()>> {
        // Logged and audited by `reload`.
        self.on_signal(tokio::signal::unix::SignalKind::hangup(), |this| {
            let _ = this.reload();
        })
    }

    /// Reopens the log files ([`reopen_logs`](Self::reopen_logs)) on every
    /// SIGUSR1 until the runtime stops (abort the handle to stop earlier),
    /// as nginx and Traefik do: logrotate's `postrotate` sends it after
    /// renaming the files. Failures are logged as warnings.
    ///
    /// # Errors
    ///
    /// When the signal handler cannot be installed.
    #[cfg(unix)]
    pub fn reopen_logs_on_sigusr1(&self) -> io::Result<tokio::task::JoinHandle<()>> {
        // Logged by `reopen_logs`.
        self.on_signal(tokio::signal::unix::SignalKind::user_defined1(), |this| {
            let _ = this.reopen_logs();
        })
    }

    /// Runs `work` on the blocking pool (it reads or opens files) on every
    /// `kind` of signal, one at a time.
    #[cfg(unix)]
    fn on_signal(
        &self,
        kind: tokio::signal::unix::SignalKind,
        work: fn(&Self),
    ) -> io::Result<tokio::task::JoinHandle<()>> {
        let mut signals = tokio::signal::unix::signal(kind)?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            while signals.recv().await.is_some() {
                this.blocking(work).await;
            }
        }))
    }

    /// Checks the config file every `every` and reloads when its content
    /// changed (abort the handle to stop).
    ///
    /// The file is polled rather than watched with inotify: editors that
    /// save by renaming and Kubernetes' config-map symlink swaps replace
    /// the file a watch is attached to, while comparing the content every
    /// few seconds sees every kind of change at the cost of one small
    /// read.
    pub fn watch_file(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let path = this.lock().0.path().map(PathBuf::from);
            let Some(path) = path else { return };
            let mut last = tokio::fs::read(&path).await.ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = tokio::fs::read(&path).await.ok();
                if now.is_some() && now != last {
                    last = now;
                    this.reload_blocking().await;
                }
            }
        })
    }

    async fn reload_blocking(&self) {
        // Logged and audited by `reload`; building reads files.
        self.blocking(|this| {
            let _ = this.reload();
        })
        .await;
    }

    /// Runs `work` on this reloader on tokio's blocking pool.
    async fn blocking(&self, work: impl FnOnce(&Self) + Send + 'static) {
        let this = self.clone();
        if let Err(err) = tokio::task::spawn_blocking(move || work(&this)).await {
            tracing::warn!(error = %err, "config server task failed");
        }
    }
}

/// `[server]` and `[admin]` are bound at start: a reload cannot move them.
/// `serve` with the `[server]` settings; the public listener and the
/// HTTPS redirect share them.
fn with_server_settings<S, F>(serve: Serve<S, F>, server: &ServerConfig) -> Serve<S, F> {
    let serve = serve
        .drain_timeout(server.drain_timeout)
        .header_read_timeout(server.header_read_timeout)
        .body_read_timeout(server.body_read_timeout)
        .send_timeout(server.send_timeout)
        .max_connections(server.max_connections.get())
        .max_header_size(server.max_header_size)
        .max_headers(server.max_headers.get())
        .http2(server.http2);
    // The settings that are off unless set.
    fn set<S, T>(serve: S, value: Option<T>, with: impl FnOnce(S, T) -> S) -> S {
        match value {
            Some(value) => with(serve, value),
            None => serve,
        }
    }
    let serve = set(serve, server.max_requests_per_connection, |serve, n| {
        serve.max_requests_per_connection(n.get())
    });
    let serve = set(serve, server.max_connection_age, Serve::max_connection_age);
    set(serve, server.proxy_protocol.clone(), Serve::proxy_protocol)
}

fn restart_only(running: &GatewayConfig, next: &ConfigFile) -> Result<(), ConfigFileError> {
    let moved = if running.server != next.config().server {
        "server"
    } else if running.admin != next.config().admin {
        "admin"
    } else {
        return Ok(());
    };
    Err(next.error_at(
        moved,
        "listener settings change only on restart; the reload was refused",
    ))
}

/// The access log's writer for `file`'s `observe.access_log`, when it has
/// an `[observe]` table.
fn open_access_log(file: &ConfigFile) -> Result<Option<AccessLogWriter>, ConfigFileError> {
    let Some(observe) = &file.config().observe else {
        return Ok(None);
    };
    AccessLogWriter::open(&observe.access_log)
        .map(Some)
        .map_err(|e| file.error_at("observe.access_log", e.to_string()))
}

fn build_router(
    file: &ConfigFile,
    state: &BuildState,
    health: &Health,
) -> Result<(LayeredService, BuildState), ConfigFileError> {
    let (builder, next) = file.gateway_builder_with(state)?;
    Ok((file.finish_layered(builder.health(health.clone()))?, next))
}

impl ConfigFile {
    /// Builds the gateway's router, as [`Server`] serves it, without
    /// binding anything: what `--check` runs.
    ///
    /// # Errors
    ///
    /// As [`gateway_builder`](Self::gateway_builder), and the checks of
    /// [`GatewayBuilder::build`](crate::GatewayBuilder::build) (duplicate
    /// or unknown upstreams, overlapping routes), placed on `upstreams` or
    /// `routes`.
    pub fn build(&self) -> Result<Router, ConfigFileError> {
        self.finish(self.gateway_builder()?)
    }

    fn finish(&self, builder: crate::GatewayBuilder) -> Result<Router, ConfigFileError> {
        Ok(Router::new().fallback_service(self.finish_layered(builder)?))
    }

    /// The gateway of `builder` with what the file adds around it (HSTS),
    /// as [`Server`] serves it: without axum's router in front.
    fn finish_layered(
        &self,
        builder: crate::GatewayBuilder,
    ) -> Result<LayeredService, ConfigFileError> {
        let mut service = builder.build_layered().map_err(|e| {
            let message = e.to_string();
            let key = self.key_named_in(&message);
            self.error_at(&key, message)
        })?;
        if let Some(hsts) = self
            .config()
            .server
            .tls
            .as_ref()
            .and_then(|t| t.hsts.as_ref())
        {
            service = LayeredService::new(
                hsts_layer(hsts.max_age, hsts.include_subdomains).layer(service),
            );
        }
        Ok(service)
    }

    /// The route or upstream a builder error names (`route "users" (…)`,
    /// `upstream "users" …`), as a key path.
    fn key_named_in(&self, message: &str) -> String {
        let config = self.config();
        let route = config.routes.iter().position(|r| {
            let name = r.name.as_deref().unwrap_or(&r.prefix);
            message.starts_with(&format!("route \"{name}\""))
        });
        if let Some(i) = route {
            return format!("routes[{i}]");
        }
        let upstream = config
            .upstreams
            .iter()
            .position(|u| message.contains(&format!("upstream \"{}\"", u.name)));
        match upstream {
            Some(i) if message.starts_with("upstream") => format!("upstreams[{i}]"),
            _ if message.starts_with("upstream") => "upstreams".to_owned(),
            _ => "routes".to_owned(),
        }
    }
}

/// A gateway running from a config file: the public listener (with TLS
/// when configured), the admin listener, the plain-HTTP redirect
/// listener, and reloads.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let file = tollgate::config::ConfigFile::load("gateway.toml")?;
/// let server = tollgate::config::Server::start(file).await?;
/// server.reloader().reload_on_sighup()?;
/// server.reloader().reopen_logs_on_sigusr1()?;
/// server.run_until(tollgate::shutdown_signal()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    reloader: Reloader,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    redirect_addr: Option<SocketAddr>,
    shutdown_delay: Duration,
    stop: watch::Sender<bool>,
    tasks: JoinSet<io::Result<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Builds the gateway and binds its listeners.
    ///
    /// # Errors
    ///
    /// The config does not build, the TLS files cannot be read, or a
    /// listener cannot be bound.
    pub async fn start(file: ConfigFile) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let tls = file.tls_config()?;
        let config = file.config().clone();
        let reloader = Reloader::new(file)?;
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut background = Vec::new();

        let listen = config.server.listen_options();
        let listener = listen.bind(config.server.listen)?;
        let local_addr = listener.local_addr()?;
        let mut public = with_server_settings(
            serve(listener, reloader.service(), stopped(&stop)),
            &config.server,
        )
        .metrics(reloader.metrics().clone());
        if let Some(tls) = tls {
            tls.report_to(reloader.metrics());
            #[cfg(unix)]
            if config
                .server
                .tls
                .as_ref()
                .is_some_and(|t| t.reload_on_sighup)
            {
                background.push(tls.reload_on_sighup()?);
            }
            public = public.tls(tls);
        }
        tasks.spawn(public.into_future());

        let redirect_addr = match config.server.tls.as_ref().and_then(|t| t.redirect_http) {
            Some(addr) => {
                let listener = listen.bind(addr)?;
                let addr = listener.local_addr()?;
                let redirect = with_server_settings(
                    redirect_to_https(listener, local_addr.port(), stopped(&stop)),
                    &config.server,
                );
                tasks.spawn(redirect.into_future());
                Some(addr)
            }
            None => None,
        };

        let admin_addr = if config.admin.enabled {
            // With `reuse_port`, the admin listener's too: a new gateway
            // started beside the old one for a hand-over needs its address.
            let listener = listen.bind(config.admin.listen)?;
            let addr = listener.local_addr()?;
            let admin = reloader.admin_router();
            tasks.spawn(serve(listener, admin, stopped(&stop)).into_future());
            Some(addr)
        } else {
            None
        };
        Ok(Self {
            reloader,
            local_addr,
            admin_addr,
            redirect_addr,
            shutdown_delay: config.server.shutdown_delay,
            stop,
            tasks,
            background,
        })
    }

    /// The public listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The plain-HTTP redirect listener's address, when it runs.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    /// The reload handle.
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// A listener failed.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> io::Result<()> {
        signal.await;
        self.shutdown().await
    }

    /// Fails readiness at once and keeps serving for `[server]
    /// shutdown_delay` (see [`Health::shutdown_after`]); then stops
    /// accepting, lets in-flight requests finish within the drain time, and
    /// returns when every listener is closed.
    ///
    /// [`Health::shutdown_after`]: crate::Health::shutdown_after
    ///
    /// # Errors
    ///
    /// A listener failed.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.reloader
            .health()
            .shutdown_after(std::future::ready(()), self.shutdown_delay)
            .await;
        let _ = self.stop.send(true);
        let reloader = self.reloader.clone();
        for task in &self.background {
            task.abort();
        }
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Err(err)) if result.is_ok() => result = Err(err),
                Err(err) if result.is_ok() => result = Err(io::Error::other(err)),
                _ => {}
            }
        }
        reloader.flush_logs();
        result
    }
}

fn stopped(stop: &watch::Sender<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}
