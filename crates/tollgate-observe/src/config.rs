//! Plain-data configuration of [`ObserveLayer`] and of the access-log
//! destination; with the `serde` feature it deserialises (unknown fields
//! are errors).

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tracing::Subscriber;
use tracing_subscriber::{
    Layer as _,
    filter::{Filtered, Targets},
    fmt::MakeWriter,
};

use crate::{ACCESS_TARGET, JsonLines, Metrics, ObserveBuilder, ObserveLayer};

/// The configuration of an [`ObserveLayer`] and its access log.
///
/// ```toml
/// [observe]
/// metrics = true            # record into the gateway's Metrics (default true)
/// log_query = false         # the access log's `path` without the query (default)
/// server_spans = true       # OpenTelemetry server spans, feature `otel` (default: with an OTLP exporter)
/// access_log = "stdout"     # or "stderr", "off", { file = "/var/log/tollgate/access.log" }
/// ```
///
/// What the gateway calls, once at start-up (without the builder's
/// `access_log`, the layer emits `tollgate::access` events instead, which
/// [`AccessLogWriter::layer`] in the subscriber writes as the same lines):
///
/// ```
/// use tollgate_observe::{AccessLogWriter, Metrics, ObserveConfig};
///
/// # fn main() -> std::io::Result<()> {
/// let config = ObserveConfig::default();
/// // 1. The destination.
/// let access_log = AccessLogWriter::open(&config.access_log)?;
/// // 2. The tower layer that writes each request's line there and records
/// //    the metrics.
/// let metrics = Metrics::new();
/// let observe = config
///     .builder(Some(metrics.clone()))
///     .access_log(access_log.clone())
///     .build();
/// // 3. On a configuration reload, the same writer switches destination
/// //    (the old file is flushed and closed); the layer keeps writing to it.
/// access_log.reopen(&config.access_log)?;
/// // 4. After log rotation renamed the file, open the same path again
/// //    (standard output has nothing to reopen).
/// assert!(!access_log.reopen_file()?);
/// // 5. At shutdown, flush what is buffered (dropping the last clone does too).
/// access_log.flush()?;
/// # let _ = observe;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ObserveConfig {
    /// Whether the request metrics are recorded (default `true`).
    pub metrics: bool,
    /// Whether the access log's `path` includes the query string
    /// (default `false`: queries often carry personal data or tokens).
    pub log_query: bool,
    /// Whether each request opens an OpenTelemetry server span; only read
    /// with the `otel` feature. Unset (the default): once an
    /// `OtlpExporter` layer exists in the process (see
    /// `ObserveBuilder::server_spans`).
    pub server_spans: Option<bool>,
    /// Where the access log goes (default standard output).
    pub access_log: AccessLogConfig,
    /// Where the audit trail (target `tollgate::audit`) goes (default
    /// standard output): the same choices as `access_log`. Every auth
    /// decision is an audit event, so under load a file (buffered) costs
    /// far less than a terminal or pipe written line by line.
    pub audit_log: AccessLogConfig,
}

/// Where the access log goes: `"stdout"`, `"stderr"`, `"off"` or
/// `{ file = "path" }` (appended to, created if missing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum AccessLogConfig {
    /// Standard output.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
    /// Nowhere.
    Off,
    /// A file, appended to.
    File(PathBuf),
}

/// The access-log destination: a [`MakeWriter`] for [`JsonLines`],
/// shared by its clones, whose destination can change while serving
/// ([`reopen`](Self::reopen)).
///
/// A file is written through a 64 KiB buffer, flushed when it fills, every
/// second by a background task (when opened inside a tokio runtime;
/// outside one, after every line), on [`flush`](Self::flush), on
/// [`reopen`](Self::reopen) and when the last clone is dropped. Standard
/// output and error are written line by line.
#[derive(Clone)]
pub struct AccessLogWriter {
    shared: Arc<Shared>,
}

/// The tracing layer that writes `tollgate::access` events as JSON lines
/// to an [`AccessLogWriter`]; see [`AccessLogWriter::layer`].
pub type AccessLogLayer<S> = Filtered<JsonLines<AccessLogWriter>, Targets, S>;

struct Shared {
    destination: Mutex<Destination>,
    /// Counts file openings, so the flusher of a replaced file stops.
    files: AtomicU64,
}

enum Destination {
    Off,
    Stdout,
    Stderr,
    File {
        path: PathBuf,
        out: BufWriter<File>,
        flush_each_line: bool,
    },
}

/// How often a background task flushes a buffered file.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The buffer of a file destination.
const BUFFER: usize = 64 * 1024;

// === impl ObserveConfig ===

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            metrics: true,
            log_query: false,
            server_spans: None,
            access_log: AccessLogConfig::default(),
            audit_log: AccessLogConfig::default(),
        }
    }
}

impl ObserveConfig {
    /// The layer: the access log, and metrics recorded into `metrics` when
    /// [`metrics`](Self::metrics) is on (`None` records none).
    pub fn layer(&self, metrics: Option<Metrics>) -> ObserveLayer {
        self.builder(metrics).build()
    }

    /// The layer's builder, set as [`layer`](Self::layer) sets it, for
    /// what the config does not hold: the gateway adds the
    /// [`access_log`](ObserveBuilder::access_log) writer it opened from
    /// [`access_log`](Self::access_log).
    pub fn builder(&self, metrics: Option<Metrics>) -> ObserveBuilder {
        let mut builder = ObserveLayer::builder().log_query(self.log_query);
        if let Some(metrics) = metrics.filter(|_| self.metrics) {
            builder = builder.metrics(metrics);
        }
        #[cfg(feature = "otel")]
        if let Some(on) = self.server_spans {
            builder = builder.server_spans(on);
        }
        builder
    }
}

// === impl AccessLogWriter ===

impl AccessLogWriter {
    /// Opens the destination (a file is created if missing and appended
    /// to). Inside a tokio runtime, a file also gets a task that flushes
    /// it every second, which ends with the last clone.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened for appending.
    pub fn open(config: &AccessLogConfig) -> io::Result<Self> {
        let writer = Self {
            shared: Arc::new(Shared {
                destination: Mutex::new(Destination::Off),
                files: AtomicU64::new(0),
            }),
        };
        writer.reopen(config)?;
        Ok(writer)
    }

    /// Switches to another destination, flushing the old one first. On
    /// error the old destination stays.
    ///
    /// # Errors
    ///
    /// When the new file cannot be opened for appending.
    pub fn reopen(&self, config: &AccessLogConfig) -> io::Result<()> {
        let next = match config {
            AccessLogConfig::Stdout => Destination::Stdout,
            AccessLogConfig::Stderr => Destination::Stderr,
            AccessLogConfig::Off => Destination::Off,
            AccessLogConfig::File(path) => self.open_file(path)?,
        };
        let mut destination = self.shared.lock();
        if !matches!(config, AccessLogConfig::File(_)) {
            // No file now: the flusher of the previous one stops.
            self.shared.files.fetch_add(1, Ordering::Relaxed);
        }
        destination.replace(next)
    }

    /// Opens the file again at the same path, for log rotation: after
    /// `logrotate` (or an operator) renames the file, lines keep going to
    /// the renamed one until this is called; from then on they go to a
    /// new file at the configured path (created if missing and appended
    /// to, as [`open`](Self::open) does). What is buffered is flushed into
    /// the old file first. Standard output, standard error and `off` have
    /// nothing to reopen.
    ///
    /// Returns whether a file was reopened. Writers wait while the file is
    /// opened, so no line goes to the old file after this returns.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened again (its directory is gone, the
    /// permissions changed): the old file stays and is written to, so no
    /// line is lost. Or the old file's write error when flushing it; the
    /// new file is written to from then on.
    pub fn reopen_file(&self) -> io::Result<bool> {
        let mut destination = self.shared.lock();
        let Destination::File { path, .. } = &*destination else {
            return Ok(false);
        };
        // Under the lock: a concurrent `reopen` to another destination
        // cannot be undone by reopening the path it left.
        let next = self.open_file(&path.clone())?;
        destination.replace(next)?;
        Ok(true)
    }

    /// Writes out what is buffered.
    ///
    /// # Errors
    ///
    /// The file's write error.
    pub fn flush(&self) -> io::Result<()> {
        self.shared.lock().flush()
    }

    /// The tracing layer writing the access-log events (target
    /// [`ACCESS_TARGET`]) as JSON lines here; add it to the subscriber
    /// with `tracing_subscriber::registry().with(writer.layer())`.
    pub fn layer<S: Subscriber>(&self) -> AccessLogLayer<S> {
        self.target_layer(ACCESS_TARGET)
    }

    /// The tracing layer writing the events of `target` (and its
    /// children) as JSON lines here, at any level: with
    /// [`audit::TARGET`](crate::audit::TARGET), the audit trail's
    /// destination (`ObserveConfig::audit_log`).
    pub fn target_layer<S: Subscriber>(&self, target: &'static str) -> AccessLogLayer<S> {
        JsonLines::new(self.clone())
            .with_filter(Targets::new().with_target(target, tracing::Level::TRACE))
    }

    /// `path` opened for appending, with a flusher when inside a tokio
    /// runtime; the flusher of the file opened before it stops.
    fn open_file(&self, path: &Path) -> io::Result<Destination> {
        let file = open_append(path)?;
        let flusher = tokio::runtime::Handle::try_current().ok();
        let nth = self.shared.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(runtime) = &flusher {
            runtime.spawn(flush_periodically(Arc::downgrade(&self.shared), nth));
        }
        Ok(Destination::File {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(BUFFER, file),
            flush_each_line: flusher.is_none(),
        })
    }
}

impl fmt::Debug for AccessLogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let destination = match &*self.shared.lock() {
            Destination::Off => "off".to_owned(),
            Destination::Stdout => "stdout".to_owned(),
            Destination::Stderr => "stderr".to_owned(),
            Destination::File { path, .. } => path.display().to_string(),
        };
        f.debug_struct("AccessLogWriter")
            .field("destination", &destination)
            .finish()
    }
}

impl<'a> MakeWriter<'a> for AccessLogWriter {
    type Writer = &'a Self;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl io::Write for &AccessLogWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut destination = self.shared.lock();
        match &mut *destination {
            Destination::Off => {}
            Destination::Stdout => io::stdout().lock().write_all(line)?,
            Destination::Stderr => io::stderr().lock().write_all(line)?,
            Destination::File {
                out,
                flush_each_line,
                ..
            } => {
                out.write_all(line)?;
                if *flush_each_line {
                    out.flush()?;
                }
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.shared.lock().flush()
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Destination> {
        // A panic while writing a line leaves nothing half-valid behind.
        self.destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Destination {
    /// Flushes this destination, then switches to `next` (even when the
    /// flush failed: dropping the old writer tries once more).
    fn replace(&mut self, next: Self) -> io::Result<()> {
        let flushed = self.flush();
        *self = next;
        flushed
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Off => Ok(()),
            Self::Stdout => io::stdout().flush(),
            Self::Stderr => io::stderr().flush(),
            Self::File { out, .. } => out.flush(),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

/// Flushes every [`FLUSH_EVERY`] until the writer is gone or has
/// switched from the `file`-th file opened.
async fn flush_periodically(shared: Weak<Shared>, file: u64) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.files.load(Ordering::Relaxed) != file {
            return;
        }
        let mut destination = shared.lock();
        // A failed flush is retried on the next tick; the line is not lost
        // from the buffer.
        let _ = destination.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "tollgate-observe-{}-{name}.log",
            std::process::id()
        ))
    }

    fn emit(writer: &AccessLogWriter, path: &str) {
        use tracing_subscriber::prelude::*;
        let subscriber = tracing_subscriber::registry().with(writer.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "tollgate::access", path, status = 200u64, "request");
            tracing::info!(target: "tollgate::audit", path, "not an access line");
        });
    }

    #[test]
    fn config_layer_follows_the_settings() {
        let metrics = Metrics::new();
        let layer = ObserveConfig::default().layer(Some(metrics.clone()));
        assert!(layer.config.metrics.is_some());
        assert!(!layer.config.log_query);
        let config = ObserveConfig {
            metrics: false,
            log_query: true,
            ..ObserveConfig::default()
        };
        let layer = config.layer(Some(metrics));
        assert!(layer.config.metrics.is_none(), "metrics off");
        assert!(layer.config.log_query);
        assert!(
            ObserveConfig::default()
                .layer(None)
                .config
                .metrics
                .is_none()
        );
    }

    #[test]
    fn a_file_access_log_is_appended_and_flushed() {
        let path = temp_path("append");
        std::fs::write(&path, "earlier\n").unwrap();
        let writer = AccessLogWriter::open(&AccessLogConfig::File(path.clone())).unwrap();
        emit(&writer, "/a");
        // Outside a runtime every line is flushed at once.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], "earlier");
        let line: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(line["path"], "/a");
        assert_eq!(line["target"], "tollgate::access");

        writer.reopen(&AccessLogConfig::Off).unwrap();
        emit(&writer, "/b");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "off writes nothing"
        );
        assert!(format!("{writer:?}").contains("off"));
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn a_buffered_file_is_flushed_in_the_background_and_on_drop() {
        tokio::time::pause();
        let path = temp_path("buffered");
        let _ = std::fs::remove_file(&path);
        let writer = AccessLogWriter::open(&AccessLogConfig::File(path.clone())).unwrap();
        emit(&writer, "/a");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "buffered");
        tokio::time::sleep(FLUSH_EVERY * 2).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        emit(&writer, "/b");
        writer.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        emit(&writer, "/c");
        drop(writer);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_unwritable_file_is_an_error_naming_it() {
        let path = PathBuf::from("/nonexistent-dir/access.log");
        let err = AccessLogWriter::open(&AccessLogConfig::File(path)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("access log /nonexistent-dir/access.log: "),
            "{err}"
        );
        let writer = AccessLogWriter::open(&AccessLogConfig::Stderr).unwrap();
        let err = writer.reopen(&AccessLogConfig::File("/nonexistent-dir/a.log".into()));
        assert!(err.is_err());
        assert!(
            format!("{writer:?}").contains("stderr"),
            "the old destination stays"
        );
    }

    #[test]
    fn reopen_file_follows_a_rename_and_keeps_the_old_file_on_error() {
        let dir = temp_path("rotate");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (path, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
        let writer = AccessLogWriter::open(&AccessLogConfig::File(path.clone())).unwrap();
        emit(&writer, "/before");
        std::fs::rename(&path, &rotated).unwrap();
        emit(&writer, "/renamed");
        assert!(writer.reopen_file().unwrap(), "a file was reopened");
        emit(&writer, "/after");
        let lines = |file: &Path| std::fs::read_to_string(file).unwrap().lines().count();
        assert_eq!(lines(&rotated), 2, "the lines before the reopen");
        assert_eq!(lines(&path), 1, "the new file");

        // The directory is gone: the open fails, the old file stays.
        let moved = temp_path("rotate-moved");
        let _ = std::fs::remove_dir_all(&moved);
        std::fs::rename(&dir, &moved).unwrap();
        let err = writer.reopen_file().unwrap_err();
        assert!(err.to_string().starts_with("access log "), "{err}");
        emit(&writer, "/kept");
        assert_eq!(lines(&moved.join("access.log")), 2, "still the old file");
        assert!(format!("{writer:?}").contains("access.log"));
        std::fs::remove_dir_all(&moved).unwrap();

        let stdout = AccessLogWriter::open(&AccessLogConfig::Stdout).unwrap();
        assert!(!stdout.reopen_file().unwrap(), "nothing to reopen");
        let off = AccessLogWriter::open(&AccessLogConfig::Off).unwrap();
        assert!(!off.reopen_file().unwrap(), "nothing to reopen");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn config_deserialises() {
        let parse = |json: &str| serde_json::from_str::<ObserveConfig>(json);
        assert_eq!(parse("{}").unwrap(), ObserveConfig::default());
        let config = parse(
            r#"{"metrics": false, "log_query": true, "server_spans": false,
                "access_log": {"file": "/var/log/access.log"}}"#,
        )
        .unwrap();
        assert!(!config.metrics && config.log_query);
        assert_eq!(config.server_spans, Some(false));
        assert_eq!(
            config.access_log,
            AccessLogConfig::File("/var/log/access.log".into())
        );
        for (text, expected) in [
            ("stdout", AccessLogConfig::Stdout),
            ("stderr", AccessLogConfig::Stderr),
            ("off", AccessLogConfig::Off),
        ] {
            let config = parse(&format!(r#"{{"access_log": "{text}"}}"#)).unwrap();
            assert_eq!(config.access_log, expected);
        }
        let err = parse(r#"{"access_log": "syslog"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `syslog`"), "{err}");
        let err = parse(r#"{"acess_log": "off"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `acess_log`"), "{err}");
        // A destination table has one key.
        assert!(parse(r#"{"access_log": {"file": "/a", "rotate": true}}"#).is_err());
        assert!(parse(r#"{"access_log": {"pipe": "/a"}}"#).is_err());
    }
}
