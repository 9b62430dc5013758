//! Why a request was not authenticated or not authorized, as a safe
//! category that never contains token or key material.

use std::fmt;

use http::{HeaderValue, header::WWW_AUTHENTICATE};
use tollgate_core::Problem;

use crate::Scheme;

/// Why a credential was refused, or could not be checked.
///
/// The [`reason`](Self::reason) is a short constant that goes into the
/// problem body (member `reason`), the `WWW-Authenticate` challenge, the
/// audit trail and the auth-failure metric. It never carries any part of
/// the credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential was presented.
    Missing,
    /// The credential is not well-formed: not three base64url segments,
    /// invalid JSON, the same header sent twice.
    Malformed,
    /// The credential is larger than the configured limit.
    TooLarge,
    /// The token's `alg` is `none`, unknown, or not allowed for the key.
    UnsupportedAlgorithm,
    /// The signature does not verify.
    BadSignature,
    /// The token names a `kid` that is not in the key set.
    UnknownKey,
    /// `exp` is in the past.
    Expired,
    /// `nbf` or `iat` is in the future.
    NotYetValid,
    /// `iss` is not an accepted issuer.
    WrongIssuer,
    /// `aud` does not contain an accepted audience.
    WrongAudience,
    /// A required claim is absent.
    MissingClaim,
    /// The API key is unknown or revoked.
    InvalidApiKey,
    /// The authorization server says the token is not active.
    Inactive,
    /// No signing keys are loaded yet (503).
    KeysUnavailable,
    /// The introspection endpoint or key store could not be reached (503).
    Unavailable,
    /// The identity lacks a required scope (403).
    InsufficientScope,
    /// The identity lacks a required role (403).
    InsufficientRole,
}

impl AuthError {
    /// The safe category, e.g. `expired`.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::BadSignature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::InvalidApiKey => "invalid_api_key",
            Self::Inactive => "inactive",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Unavailable => "unavailable",
            Self::InsufficientScope => "insufficient_scope",
            Self::InsufficientRole => "insufficient_role",
        }
    }

    /// A sentence for the problem's `detail`.
    fn detail(self) -> &'static str {
        match self {
            Self::Missing => "this route needs credentials",
            Self::Malformed => "the credential is malformed",
            Self::TooLarge => "the credential is larger than the limit",
            Self::UnsupportedAlgorithm => "the token's algorithm is not accepted",
            Self::BadSignature => "the token's signature does not verify",
            Self::UnknownKey => "the token was signed with an unknown key",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::WrongIssuer => "the token's issuer is not accepted",
            Self::WrongAudience => "the token is not meant for this audience",
            Self::MissingClaim => "the token lacks a required claim",
            Self::InvalidApiKey => "the API key is unknown or revoked",
            Self::Inactive => "the token is not active",
            Self::KeysUnavailable => "no signing keys are loaded yet",
            Self::Unavailable => "the identity provider could not be reached",
            Self::InsufficientScope => "the credential lacks a required scope",
            Self::InsufficientRole => "the credential lacks a required role",
        }
    }

    /// Whether the credential could not be checked (503) rather than
    /// being refused.
    #[must_use]
    pub fn is_unavailable(self) -> bool {
        matches!(self, Self::KeysUnavailable | Self::Unavailable)
    }

    /// Whether the caller is known but not allowed (403).
    #[must_use]
    pub fn is_forbidden(self) -> bool {
        matches!(self, Self::InsufficientScope | Self::InsufficientRole)
    }

    /// The RFC 6750 `error` code.
    fn bearer_error(self) -> Option<&'static str> {
        match self {
            // §3.1: no error code when the request carried no credentials.
            Self::Missing => None,
            Self::Malformed => Some("invalid_request"),
            Self::InsufficientScope | Self::InsufficientRole => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    /// The problem+json answer: 401 with a `WWW-Authenticate` challenge
    /// per accepted scheme, 403 with `insufficient_scope`, or 503.
    pub(crate) fn to_problem(self, schemes: &[Scheme], scope: Option<&str>) -> Problem {
        let problem = if self.is_unavailable() {
            Problem::auth_unavailable()
        } else if self.is_forbidden() {
            Problem::forbidden()
        } else {
            Problem::unauthorized()
        };
        let mut problem = problem
            .detail(self.detail())
            .member("reason", self.reason());
        if self.is_unavailable() {
            return problem.retry_after(std::time::Duration::from_secs(1));
        }
        for scheme in schemes {
            if let Some(value) = self.challenge(*scheme, scope) {
                problem = problem.header(WWW_AUTHENTICATE, value);
            }
        }
        problem
    }

    fn challenge(self, scheme: Scheme, scope: Option<&str>) -> Option<HeaderValue> {
        let mut value = match scheme {
            Scheme::Bearer => String::from("Bearer realm=\"tollgate\""),
            Scheme::ApiKey => String::from("ApiKey realm=\"tollgate\""),
        };
        if let Some(error) = self.bearer_error() {
            value.push_str(", error=\"");
            value.push_str(error);
            value.push_str("\", error_description=\"");
            value.push_str(self.reason());
            value.push('"');
        }
        if let (true, Some(scope)) = (self.is_forbidden(), scope) {
            // Scope tokens are configuration, never client input; quotes
            // and backslashes are not allowed in them (RFC 6749 §3.3).
            value.push_str(", scope=\"");
            value.extend(scope.chars().filter(|c| *c != '"' && *c != '\\'));
            value.push('"');
        }
        HeaderValue::from_str(&value).ok()
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for AuthError {}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn expired_token_challenge_names_the_reason_only() {
        let problem = AuthError::Expired.to_problem(&[Scheme::Bearer], None);
        assert_eq!(problem.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem.member_value("reason"), Some("expired"));
        let res = problem.into_response::<tollgate_core::body::BoxBody>();
        assert_eq!(
            res.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"expired\""
        );
    }

    #[test]
    fn missing_credentials_challenge_has_no_error_code() {
        let res = AuthError::Missing
            .to_problem(&[Scheme::Bearer, Scheme::ApiKey], None)
            .into_response::<tollgate_core::body::BoxBody>();
        let challenges: Vec<_> = res.headers().get_all(WWW_AUTHENTICATE).iter().collect();
        assert_eq!(
            challenges,
            ["Bearer realm=\"tollgate\"", "ApiKey realm=\"tollgate\""]
        );
    }

    #[test]
    fn insufficient_scope_is_403_with_the_scope() {
        let problem =
            AuthError::InsufficientScope.to_problem(&[Scheme::Bearer], Some("orders:read"));
        assert_eq!(problem.status(), StatusCode::FORBIDDEN);
        let res = problem.into_response::<tollgate_core::body::BoxBody>();
        assert!(
            res.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .ends_with("error=\"insufficient_scope\", error_description=\"insufficient_scope\", scope=\"orders:read\"")
        );
    }

    #[test]
    fn unavailable_is_503_with_retry_after() {
        let problem = AuthError::KeysUnavailable.to_problem(&[Scheme::Bearer], None);
        assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
        let res = problem.into_response::<tollgate_core::body::BoxBody>();
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
        assert!(res.headers().get(WWW_AUTHENTICATE).is_none());
    }
}
