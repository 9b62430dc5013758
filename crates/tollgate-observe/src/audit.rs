//! The audit trail: security decisions on the tracing target
//! [`TARGET`] (`tollgate::audit`).
//!
//! Every event carries the request id, the subject, the route, the outcome
//! and the reason. Callers pass names and reasons, never credentials: no
//! function here accepts a token, and the reason is meant to be a short
//! constant such as `"expired"` or `"missing scope"`.
//!
//! ```
//! use tollgate_core::RequestId;
//! use tollgate_observe::audit;
//!
//! let id = RequestId::from_static("r-1");
//! audit::event(Some(&id), Some("user-42"), Some("users"), "denied", "expired token");
//! ```

use std::{fs::File, io, path::Path, sync::Mutex};

use tollgate_core::RequestId;
use tracing::Subscriber;
use tracing_subscriber::{Layer, filter::Targets, registry::LookupSpan};

/// The tracing target of audit events.
pub const TARGET: &str = "tollgate::audit";

/// Emits one audit event on [`TARGET`].
///
/// `outcome` is what was decided (`allowed`, `denied`, `rate-limited`,
/// `reloaded` …) and `reason` why. Absent values are left out of the event.
pub fn event(
    request_id: Option<&RequestId>,
    subject: Option<&str>,
    route: Option<&str>,
    outcome: &str,
    reason: &str,
) {
    tracing::info!(
        target: TARGET,
        request_id = request_id.and_then(RequestId::as_str),
        subject,
        route,
        outcome,
        reason,
        "audit"
    );
}

/// A `tracing_subscriber` layer that appends the audit events, and only
/// them, to the file at `path` as JSON lines (created when missing).
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
///
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer())
///     .with(tollgate_observe::audit::file_layer("audit.jsonl")?)
///     .init();
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// When the file cannot be opened for appending.
pub fn file_layer<S>(path: impl AsRef<Path>) -> io::Result<impl Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let file = File::options().create(true).append(true).open(path)?;
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE));
    Ok(layer)
}
