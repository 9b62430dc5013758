//! The audit trail: security decisions on the tracing target
//! [`TARGET`] (`tollgate::audit`).
//!
//! Every event carries the request id, the subject, the route, the outcome
//! and the reason. Callers pass names and reasons, never credentials: no
//! function here accepts a token, and the reason is meant to be a short
//! constant such as `"expired"` or `"missing scope"`.
//!
//! The layers that decide (auth, rate limits, reloads, admin actions) call
//! [`event`]; `tollgate-observe` can write the events to their own
//! JSON-lines file.
//!
//! ```
//! use tollgate_core::{RequestId, audit};
//!
//! let id = RequestId::from_static("r-1");
//! audit::event(Some(&id), Some("user-42"), Some("users"), "denied", "expired");
//! ```

use crate::RequestId;

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
        // A `&str` field, not a format string: the same `message`, without
        // formatting `fmt::Arguments` on every authenticated request.
        message = "audit",
        request_id = request_id.and_then(RequestId::as_str),
        subject,
        route,
        outcome,
        reason,
    );
}
