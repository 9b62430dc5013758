//! [`RequestTransformLayer`], its service and its future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response, header::CONTENT_LENGTH, request::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use tollgate_core::{Problem, body::ResponseBody};
use tower::{Layer, Service};

use super::{RequestBody, RequestRules, finish, set_length};
use crate::BySelector;

/// Applies [`RequestRules`] to each request, the same rules for all or a
/// rule set per client class.
///
/// A body no rule reads streams through untouched; a JSON body the rules
/// edit is read up to the rules' limit (413 past it). Refusals are
/// problem+json responses. See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
#[must_use]
pub struct RequestTransformLayer {
    rules: Arc<BySelector<RequestRules>>,
}

/// The service of [`RequestTransformLayer`].
#[derive(Clone, Debug)]
pub struct RequestTransform<S> {
    inner: S,
    rules: Arc<BySelector<RequestRules>>,
}

// === impl RequestTransformLayer ===

impl RequestTransformLayer {
    /// The same rules for every request.
    pub fn new(rules: RequestRules) -> Self {
        Self::by_class(BySelector::always(rules))
    }

    /// Rules by client class; a request of no class and no default passes
    /// untouched.
    pub fn by_class(rules: BySelector<RequestRules>) -> Self {
        Self {
            rules: Arc::new(rules),
        }
    }
}

impl<S> Layer<S> for RequestTransformLayer {
    type Service = RequestTransform<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTransform {
            inner,
            rules: Arc::clone(&self.rules),
        }
    }
}

// === impl RequestTransform ===

impl<S> RequestTransform<S> {
    tollgate_core::inner_service_accessors!();

    /// Wraps `inner` with `layer`'s rules.
    pub fn layer(layer: &RequestTransformLayer, inner: S) -> Self {
        layer.layer(inner)
    }
}

impl<S, B, ResBody> Service<Request<B>> for RequestTransform<S>
where
    S: Service<Request<RequestBody<B>>, Response = Response<ResBody>> + Clone,
    B: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let rules = (self.rules.fixed()).unwrap_or_else(|| self.rules.select(&parts));
        let Some(rules) = rules else {
            return ResponseFuture::inner(
                self.inner
                    .call(Request::from_parts(parts, RequestBody::inner(body))),
            );
        };
        if let Err(problem) = rules.apply_head(&mut parts) {
            return ResponseFuture::problem(finish(*problem, &parts));
        }
        if !rules.reads_body(&parts.headers) || body.is_end_stream() {
            return ResponseFuture::inner(
                self.inner
                    .call(Request::from_parts(parts, RequestBody::inner(body))),
            );
        }
        let limit = rules.body_limit;
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| body.size_hint().lower());
        if declared > limit as u64 {
            return ResponseFuture::problem(too_large(limit, &parts));
        }
        let rules = Arc::clone(rules);
        // The inner service was made ready for this call; the clone takes
        // its place for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let capacity = usize::try_from(declared).unwrap_or(0).min(limit);
        ResponseFuture {
            state: State::Reading {
                body,
                buf: Vec::with_capacity(capacity),
                pending: Some(Box::new(Pending {
                    inner,
                    parts,
                    rules,
                })),
            },
        }
    }
}

fn too_large(limit: usize, parts: &Parts) -> Problem {
    finish(
        Problem::payload_too_large().detail(format!(
            "the JSON request body is larger than the {limit}-byte limit of the transform"
        )),
        parts,
    )
}

struct Pending<S> {
    inner: S,
    parts: Parts,
    rules: Arc<RequestRules>,
}

pin_project! {
    /// The response future of [`RequestTransform`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RequestBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<RequestBody<B>>>,
    {
        Reading {
            #[pin]
            body: B,
            buf: Vec<u8>,
            // Boxed: the future of every request is as large as its
            // largest state, and most requests never read a body.
            pending: Option<Box<Pending<S>>>,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
        Problem {
            // Boxed for the same reason: a problem is about 190 bytes,
            // more than many inner futures.
            problem: Option<Box<Problem>>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>>,
{
    fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    fn problem(problem: Problem) -> Self {
        Self {
            state: State::Problem {
                problem: Some(Box::new(problem)),
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>, Response = Response<ResBody>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Inner { future } => {
                    return future
                        .poll(cx)
                        .map(|res| res.map(|res| res.map(ResponseBody::inner)));
                }
                StateProj::Problem { problem } => {
                    return match problem.take() {
                        Some(problem) => Poll::Ready(Ok(problem.into_response())),
                        // Polled after completion.
                        None => Poll::Pending,
                    };
                }
                StateProj::Reading {
                    mut body,
                    buf,
                    pending,
                } => {
                    let Some(call) = pending.as_ref() else {
                        return Poll::Pending;
                    };
                    let limit = call.rules.body_limit;
                    let read = loop {
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                // Trailers of a JSON body are dropped.
                                if let Ok(data) = frame.into_data() {
                                    if buf.len() + data.len() > limit {
                                        break Err(Box::new(too_large(limit, &call.parts)));
                                    }
                                    buf.extend_from_slice(&data);
                                }
                            }
                            Some(Err(_)) => {
                                break Err(Box::new(finish(
                                    Problem::bad_request()
                                        .detail("the request body could not be read"),
                                    &call.parts,
                                )));
                            }
                            None => break Ok(()),
                        }
                    };
                    let Some(call) = pending.take() else {
                        return Poll::Pending;
                    };
                    let mut call = *call;
                    let edited = read.and_then(|()| {
                        call.rules
                            .apply_json(&call.parts, buf)
                            .map_err(|problem| Box::new(finish(*problem, &call.parts)))
                    });
                    match edited {
                        Ok(edited) => {
                            let bytes = edited.unwrap_or_else(|| Bytes::from(std::mem::take(buf)));
                            set_length(&mut call.parts.headers, bytes.len());
                            let req = Request::from_parts(call.parts, RequestBody::full(bytes));
                            State::Inner {
                                future: call.inner.call(req),
                            }
                        }
                        Err(problem) => State::Problem {
                            problem: Some(problem),
                        },
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("transform::request::ResponseFuture")
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::Full;
    use tower::util::BoxService;

    use super::*;

    /// A request future is as small as its inner future and a body read
    /// allow: the rare states (the read's request head, a problem) are
    /// boxed. Behind a boxed inner future, 72 bytes rather than 200.
    #[test]
    fn the_future_stays_small() {
        type Inner = BoxService<Request<RequestBody<Full<Bytes>>>, Response<()>, Infallible>;
        let size = std::mem::size_of::<ResponseFuture<Inner, Full<Bytes>>>();
        assert!(size <= 72, "{size} bytes");
    }
}
