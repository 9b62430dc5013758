//! [`ConcurrencyLimitLayer`]: a maximum of requests in flight, answering
//! 503 problem+json past it (load shedding).
//!
//! tower's `ConcurrencyLimit` does not fit on its own: it waits in
//! `poll_ready` until a permit frees (axum treats routes as always ready,
//! so the wait would just queue requests), it releases the permit when the
//! response *future* completes rather than when the response *body* ends
//! (a streamed download would no longer count), and with `LoadShed` in
//! front the rejection becomes an error instead of a response, which
//! breaks axum's `Infallible` bound. So this layer takes a permit with
//! `tokio::sync::Semaphore::try_acquire_owned` in `call` and keeps it in
//! the response body until the body ends or is dropped.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tollgate_core::{ConfigError, Problem, body::ResponseBody};
use tower_layer::Layer;
use tower_service::Service;

use crate::quota::invalid;

/// Limits the requests in flight through the services it makes (all of
/// them share one limit). See [`ConcurrencyLimit`].
#[derive(Clone)]
#[must_use]
pub struct ConcurrencyLimitLayer {
    semaphore: Arc<Semaphore>,
    max: usize,
    retry_after: Duration,
}

/// At most `max` requests in flight: one more is answered 503
/// problem+json with `Retry-After`, at once. A request counts from `call`
/// until its response body ends or is dropped.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tollgate_ratelimit::ConcurrencyLimitLayer;
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = ConcurrencyLimitLayer::new(1)?;
/// let mut svc = layer.layer(service_fn(|_: Request<()>| async {
///     Ok::<_, Infallible>(Response::new(String::from("ok")))
/// }));
/// let held = svc.ready().await?.call(Request::new(())).await?; // body not ended yet
/// let res = svc.ready().await?.call(Request::new(())).await?;
/// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(res.headers()["retry-after"], "1");
/// drop(held);
/// let res = svc.ready().await?.call(Request::new(())).await?;
/// assert_eq!(res.status(), StatusCode::OK);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    semaphore: Arc<Semaphore>,
    retry_after: Duration,
}

pin_project! {
    /// The response future of [`ConcurrencyLimit`].
    pub struct ConcurrencyFuture<F> {
        #[pin]
        kind: FutureKind<F>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F> {
        Inner { #[pin] fut: F, permit: Option<OwnedSemaphorePermit> },
        Rejected { problem: Option<Problem> },
    }
}

pin_project! {
    /// A response body that holds a concurrency permit until it ends or is
    /// dropped.
    pub struct PermitBody<B> {
        #[pin]
        body: B,
        permit: Option<OwnedSemaphorePermit>,
    }
}

// === impl ConcurrencyLimitLayer ===

impl ConcurrencyLimitLayer {
    /// At most `max` requests in flight; `Retry-After: 1` past it.
    ///
    /// # Errors
    ///
    /// When `max` is 0 or larger than tokio's semaphore allows.
    pub fn new(max: usize) -> Result<Self, ConfigError> {
        if max == 0 || max > Semaphore::MAX_PERMITS {
            return Err(invalid("max in flight must be at least 1"));
        }
        Ok(Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
            retry_after: Duration::from_secs(1),
        })
    }

    /// The `Retry-After` of a rejection (rounded up to whole seconds, at
    /// least 1).
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = wait;
        self
    }

    /// Requests in flight now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            semaphore: self.semaphore.clone(),
            retry_after: self.retry_after,
        }
    }
}

impl fmt::Debug for ConcurrencyLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("max", &self.max)
            .field("in_flight", &self.in_flight())
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

// === impl ConcurrencyLimit ===

impl<S> ConcurrencyLimit<S> {
    /// A layer: [`ConcurrencyLimitLayer::new`].
    ///
    /// # Errors
    ///
    /// When `max` is 0.
    pub fn layer(max: usize) -> Result<ConcurrencyLimitLayer, ConfigError> {
        ConcurrencyLimitLayer::new(max)
    }

    tollgate_core::inner_service_accessors!();
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ConcurrencyLimit<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResponseBody<PermitBody<ResB>>>;
    type Error = S::Error;
    type Future = ConcurrencyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let kind = match self.semaphore.clone().try_acquire_owned() {
            Ok(permit) => FutureKind::Inner {
                fut: self.inner.call(req),
                permit: Some(permit),
            },
            Err(_) => FutureKind::Rejected {
                problem: Some(
                    Problem::service_unavailable()
                        .detail("too many requests in flight")
                        .retry_after(self.retry_after)
                        .for_request(&req),
                ),
            },
        };
        ConcurrencyFuture { kind }
    }
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("available", &self.semaphore.available_permits())
            .finish_non_exhaustive()
    }
}

// === impl ConcurrencyFuture ===

impl<F, B, E> Future for ConcurrencyFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<PermitBody<B>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Inner { fut, permit } => {
                let res = ready!(fut.poll(cx))?;
                let permit = permit.take();
                Poll::Ready(Ok(
                    res.map(|body| ResponseBody::inner(PermitBody { body, permit }))
                ))
            }
            FutureKindProj::Rejected { problem } => {
                let problem = problem.take().unwrap_or_else(Problem::internal);
                Poll::Ready(Ok(problem.into_response()))
            }
        }
    }
}

impl<F> fmt::Debug for ConcurrencyFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyFuture").finish_non_exhaustive()
    }
}

// === impl PermitBody ===

impl<B> Body for PermitBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // The end, or an error: the request no longer counts.
            this.permit.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> fmt::Debug for PermitBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermitBody")
            .field("holds_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
