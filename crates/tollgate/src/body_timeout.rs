//! The request body read timeout: a client that stops sending its request
//! body for longer than the timeout gets a 408 problem, and its connection
//! is closed (HTTP/1) or its stream reset (HTTP/2).
//!
//! Written here rather than with tower-http's `TimeoutBody`: that body does
//! not forward `size_hint` and `is_end_stream`, which the proxy needs to
//! keep a request's `Content-Length` framing and HTTP/2 `END_STREAM`, and
//! it makes a new timer after every frame where this one resets its own.
//! It also has no way to tell the connection that the body, not the
//! upstream, failed, which is what turns the answer into a 408.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Version, header::CONNECTION};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};
use tollgate_core::{BoxError, Problem, body::ResponseBody};

/// What a request with a body needs to answer 408 when the body stalls.
#[derive(Debug)]
pub(crate) struct Stall {
    stalled: Arc<AtomicBool>,
    version: Version,
    path: String,
    timeout: Duration,
}

/// `req` as the service gets it: its body, when it has one, stops with an
/// error after `timeout` without data; the [`Stall`] then tells
/// [`Stall::answer`] to answer 408. A request without a body (a `GET`)
/// costs nothing more than a branch.
pub(crate) fn watch<B>(req: Request<B>, timeout: Duration) -> (Request<Body>, Option<Stall>)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if req.body().is_end_stream() {
        return (req.map(Body::new), None);
    }
    let stall = Stall {
        stalled: Arc::new(AtomicBool::new(false)),
        version: req.version(),
        path: req.uri().path().to_owned(),
        timeout,
    };
    let stalled = Arc::clone(&stall.stalled);
    let req = req.map(|body| {
        Body::new(StallBody {
            body,
            timeout,
            sleep: None,
            stalled,
        })
    });
    (req, Some(stall))
}

impl Stall {
    /// `res`, or a 408 problem when the request body stalled before the
    /// service answered: whatever a layer made of the body's error (the
    /// proxy's 502, a transform's 400), the client is the one that failed.
    pub(crate) fn answer<B>(self, res: Response<B>) -> Response<ResponseBody<B>> {
        if !self.stalled.load(Ordering::Acquire) {
            return res.map(ResponseBody::inner);
        }
        let secs = self.timeout.as_secs_f64();
        let mut res = Problem::request_timeout()
            .detail(format!(
                "the request body stalled: nothing came for {secs} s"
            ))
            .instance(self.path)
            .into_response();
        if self.version <= Version::HTTP_11 {
            // The rest of the body is still on the wire: the connection
            // cannot carry another request.
            res.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

pin_project! {
    /// A request body that ends in an error, and marks `stalled`, when no
    /// frame comes for `timeout` while it is being read.
    struct StallBody<B> {
        #[pin]
        body: B,
        timeout: Duration,
        // Made at the first read that has to wait, then reset after each
        // frame.
        #[pin]
        sleep: Option<Sleep>,
        stalled: Arc<AtomicBool>,
    }
}

/// The error a stalled body ends with.
#[derive(Debug)]
struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no request body data for {} s", self.0.as_secs_f64())
    }
}

impl std::error::Error for BodyStalled {}

impl<B> http_body::Body for StallBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                sleep.reset(Instant::now() + *this.timeout);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.as_mut().as_pin_mut().is_none() {
            this.sleep.set(Some(sleep(*this.timeout)));
        }
        let Some(sleep) = this.sleep.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        ready!(sleep.poll(cx));
        this.stalled.store(true, Ordering::Release);
        Poll::Ready(Some(Err(Box::new(BodyStalled(*this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn channel_request() -> (
        mpsc::Sender<Bytes>,
        Request<impl http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        });
        (tx, Request::new(StreamBody::new(stream)))
    }

    /// Data that keeps coming resets the timer; a silence as long as the
    /// timeout ends the body and marks the stall, and the answer is 408.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_ends_and_answers_408() {
        let (tx, req) = channel_request();
        let (req, stall) = watch(req, T);
        let Some(stall) = stall else {
            panic!("a body that has not ended is watched");
        };
        let mut body = req.into_body();
        for _ in 0..3 {
            tokio::time::advance(T / 2).await;
            let _ = tx.send(Bytes::from_static(b"chunk")).await;
            let frame = body.frame().await;
            assert!(matches!(frame, Some(Ok(_))), "{frame:?}");
        }
        let read = body.frame().await;
        let Some(Err(err)) = read else {
            panic!("expected the stall error, got {read:?}");
        };
        assert!(err.to_string().contains("no request body data"), "{err}");

        let res = stall.answer(Response::new(()));
        assert_eq!(res.status(), http::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(res.headers()[CONNECTION], "close");
        drop(tx);
    }

    /// Without a stall the service's response passes as it is, and a
    /// request without a body is not watched.
    #[tokio::test(start_paused = true)]
    async fn no_stall_no_change() {
        let (tx, req) = channel_request();
        let (_, stall) = watch(req, T);
        let res = stall
            .map(|s| s.answer(Response::new(())))
            .map(|r| r.status());
        assert_eq!(res, Some(http::StatusCode::OK));
        drop(tx);
        let (_, stall) = watch(Request::new(http_body_util::Empty::<Bytes>::new()), T);
        assert!(stall.is_none());
    }
}
