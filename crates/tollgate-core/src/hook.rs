//! [`OnRequest`]: the one middleware shape for layers that only change the
//! request before the inner service sees it (path rewrites, trace context,
//! client IP resolution).

use std::task::{Context, Poll};

use http::Request;
use tower_service::Service;

/// Something that changes a request in place: the whole of a middleware
/// that needs nothing from the response.
pub trait RequestHook {
    /// Changes `req` before it goes on.
    fn on_request<B>(&self, req: &mut Request<B>);
}

/// A service that runs a [`RequestHook`] on each request, then calls the
/// inner service. Readiness, errors and the response are the inner
/// service's.
///
/// ```
/// use std::convert::Infallible;
/// use http::Request;
/// use tollgate_core::{OnRequest, RequestHook};
/// use tower::{ServiceExt, service_fn};
///
/// #[derive(Clone)]
/// struct Tag;
///
/// impl RequestHook for Tag {
///     fn on_request<B>(&self, req: &mut Request<B>) {
///         req.headers_mut().insert("x-tag", http::HeaderValue::from_static("1"));
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = OnRequest::new(
///     service_fn(|req: Request<()>| async move { Ok::<_, Infallible>(req.headers().contains_key("x-tag")) }),
///     Tag,
/// );
/// assert!(svc.oneshot(Request::new(())).await.unwrap());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct OnRequest<S, H> {
    inner: S,
    hook: H,
}

// === impl OnRequest ===

impl<S, H> OnRequest<S, H> {
    /// Runs `hook` in front of `inner`.
    pub fn new(inner: S, hook: H) -> Self {
        Self { inner, hook }
    }

    /// The hook.
    pub fn hook(&self) -> &H {
        &self.hook
    }

    crate::inner_service_accessors!();
}

impl<S, H, B> Service<Request<B>> for OnRequest<S, H>
where
    S: Service<Request<B>>,
    H: RequestHook,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        self.hook.on_request(&mut req);
        self.inner.call(req)
    }
}
