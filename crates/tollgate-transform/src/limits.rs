//! Request limits that answer with problem+json: [`RequestBodyLimitLayer`]
//! (413) and [`HeaderLimitLayer`] (431).
//!
//! tower-http's `RequestBodyLimitLayer` answers a too-long
//! `Content-Length` with a plain-text 413 and lets the inner service see a
//! body error for a chunked body that runs over; here both cases end in
//! the same 413 problem, so clients get one kind of answer.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, header::CONTENT_LENGTH};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tollgate_core::{BoxError, ConfigError, ConfigErrorKind, Problem, body::ResponseBody};
use tower::{Layer, Service};

/// Refuses request bodies over `max` bytes with 413 problem+json.
///
/// A `Content-Length` over the limit is refused before the inner service
/// is called. A body without one (chunked) streams through a counter: when
/// it runs over, the body ends with an error (the upstream sees an aborted
/// request) and the answer is the 413 problem, whatever the inner service
/// made of the broken body.
///
/// ```
/// use tollgate_transform::RequestBodyLimitLayer;
///
/// let limit = RequestBodyLimitLayer::new(1024 * 1024)?; // 1 MiB
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RequestBodyLimitLayer {
    max: u64,
}

impl RequestBodyLimitLayer {
    /// At most `max` bytes of request body.
    ///
    /// # Errors
    ///
    /// When `max` is 0 (use a method route to refuse bodies altogether).
    pub fn new(max: u64) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "a body limit must be at least 1 byte",
            ));
        }
        Ok(Self { max })
    }
}

impl<S> Layer<S> for RequestBodyLimitLayer {
    type Service = RequestBodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBodyLimit {
            inner,
            max: self.max,
        }
    }
}

/// The service of [`RequestBodyLimitLayer`].
#[derive(Clone, Debug)]
pub struct RequestBodyLimit<S> {
    inner: S,
    max: u64,
}

impl<S> RequestBodyLimit<S> {
    tollgate_core::inner_service_accessors!();
}

impl<S, B, ResBody> Service<Request<B>> for RequestBodyLimit<S>
where
    S: Service<Request<LimitedBody<B>>, Response = Response<ResBody>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max) || req.body().size_hint().lower() > self.max {
            let problem = too_large(self.max).for_request(&req);
            return LimitFuture {
                state: LimitState::Problem {
                    problem: Some(problem),
                },
            };
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let max = self.max;
        let instance = req.uri().path().to_owned();
        let req = req.map(|body| LimitedBody {
            body,
            remaining: max,
            exceeded: Arc::clone(&exceeded),
        });
        LimitFuture {
            state: LimitState::Inner {
                future: self.inner.call(req),
                exceeded: Some(exceeded),
                max,
                instance,
            },
        }
    }
}

fn too_large(max: u64) -> Problem {
    Problem::payload_too_large().detail(format!("the request body is larger than {max} bytes"))
}

pin_project! {
    /// The response future of [`RequestBodyLimit`].
    pub struct LimitFuture<F> {
        #[pin]
        state: LimitState<F>,
    }
}

pin_project! {
    #[project = LimitStateProj]
    enum LimitState<F> {
        Inner {
            #[pin]
            future: F,
            // The body limit's flag; `None` for the header limit.
            exceeded: Option<Arc<AtomicBool>>,
            max: u64,
            instance: String,
        },
        Problem {
            problem: Option<Problem>,
        },
    }
}

impl<F, ResBody, E> Future for LimitFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            LimitStateProj::Inner {
                future,
                exceeded,
                max,
                instance,
            } => {
                let res = std::task::ready!(future.poll(cx))?;
                if exceeded.as_ref().is_some_and(|e| e.load(Ordering::Acquire)) {
                    let problem = too_large(*max).instance(std::mem::take(instance));
                    return Poll::Ready(Ok(problem.into_response()));
                }
                Poll::Ready(Ok(res.map(ResponseBody::inner)))
            }
            LimitStateProj::Problem { problem } => match problem.take() {
                Some(problem) => Poll::Ready(Ok(problem.into_response())),
                None => Poll::Pending,
            },
        }
    }
}

impl<F> std::fmt::Debug for LimitFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LimitFuture")
    }
}

pin_project! {
    /// A request body that errors once it has yielded more than the limit.
    pub struct LimitedBody<B> {
        #[pin]
        body: B,
        remaining: u64,
        exceeded: Arc<AtomicBool>,
    }
}

/// The error a [`LimitedBody`] ends with when it runs over.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body over the limit")
    }
}

impl std::error::Error for BodyTooLarge {}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match std::task::ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        this.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(BodyTooLarge.into())));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The configuration of a [`HeaderLimitLayer`]; `HeaderLimitLayer::try_from`
/// runs the checks of [`HeaderLimitLayer::new`]. Both keys are required.
///
/// ```toml
/// header_limit = { max_count = 100, max_bytes = 16384 }
/// ```
///
/// ```
/// use tollgate_transform::{HeaderLimitConfig, HeaderLimitLayer};
///
/// let limit = HeaderLimitLayer::try_from(&HeaderLimitConfig::new(100, 16 * 1024))?;
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct HeaderLimitConfig {
    /// The most header fields.
    pub max_count: usize,
    /// The most bytes of header names and values together.
    pub max_bytes: usize,
}

impl HeaderLimitConfig {
    /// At most `max_count` header fields and `max_bytes` bytes of them.
    #[must_use]
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            max_count,
            max_bytes,
        }
    }
}

impl TryFrom<&HeaderLimitConfig> for HeaderLimitLayer {
    type Error = ConfigError;

    fn try_from(config: &HeaderLimitConfig) -> Result<Self, ConfigError> {
        Self::new(config.max_count, config.max_bytes)
    }
}

/// Refuses requests with too many headers, or too many header bytes
/// (names and values together), with 431 problem+json. Tighter than the
/// server's own parser limits, per route or gateway.
#[derive(Clone, Copy, Debug)]
pub struct HeaderLimitLayer {
    max_count: usize,
    max_bytes: usize,
}

impl HeaderLimitLayer {
    /// At most `max_count` header fields and `max_bytes` bytes of them.
    ///
    /// # Errors
    ///
    /// When either is 0.
    pub fn new(max_count: usize, max_bytes: usize) -> Result<Self, ConfigError> {
        if max_count == 0 || max_bytes == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "header limits must be at least 1",
            ));
        }
        Ok(Self {
            max_count,
            max_bytes,
        })
    }

    fn check<B>(&self, req: &Request<B>) -> Option<Problem> {
        let headers = req.headers();
        if headers.len() > self.max_count {
            return Some(
                Problem::headers_too_large()
                    .detail(format!("more than {} header fields", self.max_count)),
            );
        }
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        (bytes > self.max_bytes).then(|| {
            Problem::headers_too_large().detail(format!(
                "more than {} bytes of header fields",
                self.max_bytes
            ))
        })
    }
}

impl<S> Layer<S> for HeaderLimitLayer {
    type Service = HeaderLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeaderLimit {
            inner,
            limits: *self,
        }
    }
}

/// The service of [`HeaderLimitLayer`].
#[derive(Clone, Debug)]
pub struct HeaderLimit<S> {
    inner: S,
    limits: HeaderLimitLayer,
}

impl<S> HeaderLimit<S> {
    tollgate_core::inner_service_accessors!();
}

impl<S, B, ResBody> Service<Request<B>> for HeaderLimit<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(problem) = self.limits.check(&req) {
            return LimitFuture {
                state: LimitState::Problem {
                    problem: Some(problem.for_request(&req)),
                },
            };
        }
        LimitFuture {
            state: LimitState::Inner {
                future: self.inner.call(req),
                exceeded: None,
                max: 0,
                instance: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_limit_config_runs_the_layers_checks() {
        let layer = HeaderLimitLayer::try_from(&HeaderLimitConfig::new(2, 100)).unwrap();
        let req = Request::get("/")
            .header("a", "1")
            .header("b", "2")
            .header("c", "3")
            .body(())
            .unwrap();
        assert!(layer.check(&req).is_some(), "three fields are over two");
        let err = HeaderLimitLayer::try_from(&HeaderLimitConfig::new(0, 100)).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidValue);
        assert!(HeaderLimitLayer::try_from(&HeaderLimitConfig::new(1, 0)).is_err());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn header_limit_config_deserialises() {
        let parse = |json: &str| serde_json::from_str::<HeaderLimitConfig>(json);
        assert_eq!(
            parse(r#"{"max_count": 100, "max_bytes": 16384}"#).unwrap(),
            HeaderLimitConfig::new(100, 16_384)
        );
        let err = parse(r#"{"max_count": 100}"#).unwrap_err().to_string();
        assert!(err.contains("missing field `max_bytes`"), "{err}");
        let err = parse(r#"{"max_count": 1, "max_bytes": 1, "max": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `max`"), "{err}");
        assert!(parse(r#"{"max_count": -1, "max_bytes": 1}"#).is_err());
    }
}
