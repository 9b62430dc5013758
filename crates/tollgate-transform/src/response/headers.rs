//! [`ResponseHeadersLayer`]: response rules that never read a body, with
//! the body left as the inner service gave it.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{ResponseRules, ResponseTransformLayer};
use crate::BySelector;

/// The status and header rules of a [`ResponseTransformLayer`] none of
/// whose rule sets reads a body, applied to the response in place: the
/// response body is the inner service's own, untouched and of its own
/// type, so a streamed body costs nothing per frame (a
/// [`TransformedBody`](super::TransformedBody) matches its kinds on every
/// frame).
///
/// Made by [`ResponseTransformLayer::headers_only`]; tollgate's
/// `Route::transform_response` uses it whenever it can.
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tollgate_transform::{ResponseRules, ResponseTransformLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let rules = ResponseRules::builder()
///     .remove_server_headers()
///     .set_header("cache-control", "no-store")
///     .map_status(404, 410)
///     .build()?;
/// let layer = ResponseTransformLayer::new(rules)
///     .headers_only()
///     .expect("no rule reads the body");
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_req: Request<()>| async {
///         Ok::<_, std::convert::Infallible>(
///             Response::builder()
///                 .status(404)
///                 .header("server", "users/1.2")
///                 .body(Full::new(bytes::Bytes::from_static(b"gone")))
///                 .unwrap(),
///         )
///     });
/// // The body keeps its type: `Full<Bytes>`.
/// let res: Response<Full<bytes::Bytes>> = svc.oneshot(Request::new(())).await?;
/// assert_eq!(res.status(), StatusCode::GONE);
/// assert!(res.headers().get("server").is_none());
/// assert_eq!(res.headers()["cache-control"], "no-store");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ResponseHeadersLayer {
    rules: Arc<BySelector<ResponseRules>>,
}

impl ResponseTransformLayer {
    /// This layer as a [`ResponseHeadersLayer`], when none of its rule
    /// sets reads a body (no deny- or allow-list, field rename or field
    /// addition): the same responses, with the body left of the inner
    /// service's type. `None` when a rule set reads bodies.
    #[must_use]
    pub fn headers_only(&self) -> Option<ResponseHeadersLayer> {
        (!self.rules.all().any(|rules| rules.reads_body())).then(|| ResponseHeadersLayer {
            rules: Arc::clone(&self.rules),
        })
    }
}

impl<S> Layer<S> for ResponseHeadersLayer {
    type Service = ResponseHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseHeaders {
            inner,
            rules: Arc::clone(&self.rules),
        }
    }
}

/// The service of [`ResponseHeadersLayer`].
#[derive(Clone, Debug)]
pub struct ResponseHeaders<S> {
    inner: S,
    rules: Arc<BySelector<ResponseRules>>,
}

impl<S> ResponseHeaders<S> {
    tollgate_core::inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ResponseHeaders<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = HeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.rules.with_rules(req, |rules, req| {
            HeadersFuture::new(self.inner.call(req), rules)
        })
    }
}

pin_project! {
    /// The response future of [`ResponseHeaders`].
    pub struct HeadersFuture<F> {
        #[pin]
        future: F,
        // `None` when the request's class has no rules, or its rules
        // have no status or header rule.
        rules: Option<Arc<ResponseRules>>,
    }
}

impl<F> HeadersFuture<F> {
    fn new(future: F, rules: Option<&Arc<ResponseRules>>) -> Self {
        Self {
            future,
            rules: rules.filter(|rules| rules.has_head_rules()).cloned(),
        }
    }
}

impl<F> fmt::Debug for HeadersFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeadersFuture")
    }
}

impl<F, B, E> Future for HeadersFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.future.poll(cx))?;
        if let Some(rules) = this.rules.take() {
            rules.apply_in_place(&mut res);
        }
        Poll::Ready(Ok(res))
    }
}
