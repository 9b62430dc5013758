//! The audit trail: security decisions on the tracing target
//! [`TARGET`] (`tollgate::audit`).
//!
//! The events are emitted with [`event`] (defined in `tollgate-core`, so
//! every layer that decides can emit them); this module adds
//! [`file_layer`], which writes them to their own JSON-lines file.

use std::{fs::File, io, path::Path, sync::Mutex};

use tracing::Subscriber;
use tracing_subscriber::{Layer, filter::Targets, registry::LookupSpan};

pub use tollgate_core::audit::{TARGET, event};

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
