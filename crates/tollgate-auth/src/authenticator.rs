//! The interface every authentication method implements, so that methods
//! compose ([`Auth`](crate::Auth)) and users can add their own.

use std::{fmt, future::Future, pin::Pin};

use http::request::Parts;
use tollgate_core::Identity;

use crate::{AuthError, CredentialSource};

/// A boxed future of a verdict that needs I/O (introspection, a remote
/// key store).
pub type VerdictFuture = Pin<Box<dyn Future<Output = Result<Identity, AuthError>> + Send>>;

/// What one method concludes about a request.
#[non_exhaustive]
pub enum Verdict {
    /// The request carries no credential for this method.
    Absent,
    /// The credential is valid.
    Accept(Identity),
    /// The credential is present but invalid, or could not be checked.
    Reject(AuthError),
    /// The answer needs I/O; the future resolves to accept or reject.
    Pending(VerdictFuture),
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("Absent"),
            Self::Accept(id) => f.debug_tuple("Accept").field(id).finish(),
            Self::Reject(e) => f.debug_tuple("Reject").field(e).finish(),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl From<Result<Identity, AuthError>> for Verdict {
    fn from(result: Result<Identity, AuthError>) -> Self {
        match result {
            Ok(identity) => Self::Accept(identity),
            Err(error) => Self::Reject(error),
        }
    }
}

/// The `WWW-Authenticate` scheme a method answers 401s with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `Bearer` (RFC 6750): JWTs and introspected tokens.
    Bearer,
    /// `ApiKey`, for API keys.
    ApiKey,
}

/// An authentication method.
///
/// `authenticate` runs on the request path: it must not block, and it
/// returns [`Verdict::Pending`] only when it really needs I/O. The
/// built-in methods are [`JwtAuth`](crate::JwtAuth),
/// [`ApiKeyAuth`](crate::ApiKeyAuth) and
/// [`Introspection`](crate::Introspection).
pub trait Authenticator: fmt::Debug + Send + Sync + 'static {
    /// Judges the request's credential for this method.
    fn authenticate(&self, parts: &Parts) -> Verdict;

    /// The challenge scheme of this method's 401s.
    fn scheme(&self) -> Scheme;

    /// Where this method reads credentials from: they are removed from
    /// the request before it goes upstream unless credentials are kept
    /// (`Authorization` only when it is a `Bearer` one, a cookie only
    /// itself, a query parameter only itself).
    fn credential_sources(&self) -> Vec<CredentialSource> {
        Vec::new()
    }

    /// Whether the method can judge requests yet (e.g. signing keys are
    /// loaded). Readiness endpoints report it.
    fn is_ready(&self) -> bool {
        true
    }
}
