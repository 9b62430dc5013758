//! [`IdleTimer`]: how long an operation has been waiting, bounded; and
//! [`IdleTimeout`], a body that may not wait longer than a timeout for its
//! next frame. The server's send timeout bounds socket writes with the
//! same timer.
//!
//! Written here rather than taken from tower-http's `TimeoutBody`: that
//! body does not forward `size_hint` and `is_end_stream` (the proxy needs
//! them for `Content-Length` framing and HTTP/2 `END_STREAM`), it makes a
//! new timer after every frame where this one re-arms its own, and it cannot
//! tell the layer that set it up that it fired.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};

use crate::BoxError;

pin_project! {
    /// A body that ends in an [`IdleTimedOut`] error when its next frame
    /// takes longer than the timeout to come.
    ///
    /// The timer ([`IdleTimer`]) starts at the first read that has to wait,
    /// and each frame disarms it: the timeout bounds each wait, not the
    /// whole body. A body
    /// whose frames are always ready never makes a timer. Without a timeout
    /// (`None`) the body passes through untouched. `size_hint` and
    /// `is_end_stream` are the inner body's.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http_body_util::{BodyExt, Full};
    /// use tollgate_core::body::IdleTimeout;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = IdleTimeout::new(Full::new("ready".into()), Some(Duration::from_secs(5)));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "ready");
    /// # }
    /// ```
    pub struct IdleTimeout<B> {
        #[pin]
        body: B,
        #[pin]
        timer: IdleTimer,
        timed_out: Option<Arc<AtomicBool>>,
    }
}

pin_project! {
    /// Bounds each wait of an operation (a body's next frame, a socket
    /// write) by a timeout.
    ///
    /// Call [`progressed`](Self::progressed) when the operation goes
    /// through and [`poll_waited`](Self::poll_waited) when it has to wait.
    /// The timer is made at the first wait and re-armed at the first wait
    /// after progress, so an operation that keeps going through costs a
    /// store, and one that never waits never makes a timer.
    #[derive(Debug)]
    pub struct IdleTimer {
        timeout: Option<Duration>,
        // Whether `sleep` counts the current wait.
        armed: bool,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl IdleTimer {
    /// A timer for waits of at most `timeout` (`None`: unbounded).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            armed: false,
            sleep: None,
        }
    }

    /// The operation went through: its next wait starts afresh.
    #[inline]
    pub fn progressed(self: Pin<&mut Self>) {
        *self.project().armed = false;
    }

    /// The operation has to wait: `Ready` with the timeout once this wait
    /// has lasted that long, else `Pending` (with `cx` woken then).
    pub fn poll_waited(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Duration> {
        let mut this = self.project();
        let Some(timeout) = *this.timeout else {
            return Poll::Pending;
        };
        match this.sleep.as_mut().as_pin_mut() {
            Some(sleep) if !*this.armed => sleep.reset(Instant::now() + timeout),
            Some(_) => {}
            None => this.sleep.set(Some(sleep(timeout))),
        }
        *this.armed = true;
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| timeout),
            None => Poll::Pending,
        }
    }
}

/// The error an [`IdleTimeout`] body ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleTimedOut(Duration);

impl IdleTimedOut {
    /// The timeout that ran out.
    pub fn timeout(&self) -> Duration {
        self.0
    }
}

impl fmt::Display for IdleTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no body data for {} s", self.0.as_secs_f64())
    }
}

impl std::error::Error for IdleTimedOut {}

impl<B> IdleTimeout<B> {
    /// `body`, bounded by `timeout` between frames (`None`: unbounded).
    pub fn new(body: B, timeout: Option<Duration>) -> Self {
        Self {
            body,
            timer: IdleTimer::new(timeout),
            timed_out: None,
        }
    }

    /// The same, also setting `flag` when the timeout fires, for the layer
    /// that has to answer for it.
    pub fn flagging(body: B, timeout: Duration, flag: Arc<AtomicBool>) -> Self {
        Self {
            body,
            timer: IdleTimer::new(Some(timeout)),
            timed_out: Some(flag),
        }
    }
}

impl<B> Body for IdleTimeout<B>
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
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            this.timer.progressed();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = ready!(this.timer.poll_waited(cx));
        if let Some(flag) = this.timed_out {
            flag.store(true, Ordering::Release);
        }
        Poll::Ready(Some(Err(Box::new(IdleTimedOut(timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> fmt::Debug for IdleTimeout<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("timeout", &self.timer.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn channel_body() -> (
        mpsc::Sender<Bytes>,
        impl Body<Data = Bytes, Error = std::convert::Infallible>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        });
        (tx, StreamBody::new(stream))
    }

    /// Frames that keep coming reset the timer; a silence as long as the
    /// timeout ends the body with the error, and sets the flag.
    #[tokio::test(start_paused = true)]
    async fn each_wait_is_bounded_not_the_whole_body() {
        let (tx, body) = channel_body();
        let flag = Arc::new(AtomicBool::new(false));
        let mut body = Box::pin(IdleTimeout::flagging(body, T, Arc::clone(&flag)));
        for _ in 0..3 {
            // The read waits, then its frame comes before the timeout.
            let read = tokio::spawn(async move {
                let frame = body.frame().await;
                (body, frame)
            });
            tokio::time::advance(T * 3 / 4).await;
            let _ = tx.send(Bytes::from_static(b"chunk")).await;
            let (back, frame) = read.await.unwrap_or_else(|e| panic!("{e}"));
            body = back;
            assert!(matches!(frame, Some(Ok(_))), "{frame:?}");
        }
        assert!(!flag.load(Ordering::Acquire));
        let read = body.frame().await;
        let Some(Err(err)) = read else {
            panic!("expected the timeout, got {read:?}");
        };
        assert_eq!(err.downcast_ref::<IdleTimedOut>(), Some(&IdleTimedOut(T)));
        assert!(flag.load(Ordering::Acquire));
        drop(tx);
    }

    /// Without a timeout the body waits as long as it takes, and the
    /// inner body's hints pass through.
    #[tokio::test(start_paused = true)]
    async fn no_timeout_passes_through() {
        let (tx, body) = channel_body();
        let mut body = Box::pin(IdleTimeout::new(body, None));
        let read = tokio::spawn(async move { body.frame().await.map(|f| f.is_ok()) });
        tokio::time::advance(T * 100).await;
        let _ = tx.send(Bytes::from_static(b"late")).await;
        assert_eq!(read.await.ok().flatten(), Some(true));

        let full = IdleTimeout::new(
            http_body_util::Full::new(Bytes::from_static(b"abc")),
            Some(T),
        );
        assert_eq!(full.size_hint().exact(), Some(3));
        let empty = IdleTimeout::new(http_body_util::Empty::<Bytes>::new(), Some(T));
        assert!(empty.is_end_stream());
    }
}
