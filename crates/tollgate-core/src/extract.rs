//! axum integration: handlers extract the gateway's extensions directly,
//! and a [`Problem`] is a response.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tollgate_core::Identity;
//!
//! // 401 problem+json when no auth layer attached an identity.
//! async fn me(identity: Identity) -> String {
//!     identity.subject.as_deref().unwrap_or("-").to_owned()
//! }
//!
//! // Optional: `None` for anonymous callers on an optional-auth route.
//! async fn greet(identity: Option<Identity>) -> String {
//!     match identity.and_then(|i| i.subject) {
//!         Some(subject) => format!("hello {subject}"),
//!         None => "hello stranger".to_owned(),
//!     }
//! }
//!
//! let app: Router = Router::new().route("/me", get(me)).route("/hi", get(greet));
//! ```

use std::convert::Infallible;

use axum_core::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::request::Parts;

use crate::{ClientIp, Identity, Problem, RequestId};

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        Self::into_response::<axum_core::body::Body>(self).map(axum_core::body::Body::new)
    }
}

impl<S: Sync> FromRequestParts<S> for Identity {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            let id = parts.extensions.get::<RequestId>();
            Problem::unauthorized()
                .detail("this resource needs an authenticated caller")
                .member("reason", "missing")
                .request_id(id)
        })
    }
}

impl<S: Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}

impl<S: Sync> FromRequestParts<S> for RequestId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Problem::internal().detail("no request id layer is installed"))
    }
}

impl<S: Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        parts
            .extensions
            .get::<Self>()
            .copied()
            .ok_or_else(|| Problem::internal().detail("no client ip layer is installed"))
    }
}
