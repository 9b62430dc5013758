//! The request body read timeout: a client that stops sending its request
//! body for longer than the timeout gets a 408 problem, and its connection
//! is closed (HTTP/1) or its stream reset (HTTP/2).
//!
//! The body is `tollgate_core`'s [`IdleTimeout`], which sets a flag when
//! it fires: that flag, not the error the layers make of it, decides the
//! answer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Version, header::CONNECTION};
use tollgate_core::{
    BoxError, Problem,
    body::{IdleTimeout, ResponseBody},
};

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
    let req = req.map(|body| Body::new(IdleTimeout::flagging(body, timeout, stalled)));
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

#[cfg(test)]
mod tests {
    use http_body::Frame;
    use http_body_util::{BodyExt, Empty, StreamBody};

    use super::*;

    const T: Duration = Duration::from_secs(5);

    /// A body that never sends.
    fn silent() -> Request<impl http_body::Body<Data = Bytes, Error = std::convert::Infallible>> {
        let stream =
            futures_util::stream::pending::<Result<Frame<Bytes>, std::convert::Infallible>>();
        Request::new(StreamBody::new(stream))
    }

    /// A body that stalls ends, and the answer becomes a 408 that closes
    /// an HTTP/1.1 connection.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_ends_and_the_answer_is_408() {
        let (req, stall) = watch(silent(), T);
        let Some(stall) = stall else {
            panic!("a body that has not ended is watched");
        };
        let read = req.into_body().frame().await;
        let Some(Err(err)) = read else {
            panic!("expected the stall error, got {read:?}");
        };
        assert!(err.to_string().contains("no body data"), "{err}");

        let res = stall.answer(Response::new(()));
        assert_eq!(res.status(), http::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(res.headers()[CONNECTION], "close");
    }

    /// Without a stall the service's response passes as it is, and a
    /// request without a body is not watched.
    #[tokio::test(start_paused = true)]
    async fn no_stall_no_change() {
        let (_req, stall) = watch(silent(), T);
        let status = stall.map(|s| s.answer(Response::new(())).status());
        assert_eq!(status, Some(http::StatusCode::OK));
        let (_, stall) = watch(Request::new(Empty::<Bytes>::new()), T);
        assert!(stall.is_none());
    }
}
