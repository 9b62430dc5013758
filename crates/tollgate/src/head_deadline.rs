//! The header read timeout of a connection, kept by the connection itself
//! instead of by hyper.
//!
//! hyper's own HTTP/1 header read timeout boxes a new tokio timer for every
//! request head, registers it in the runtime's timer wheel and removes it
//! once the head is read, and it makes hyper start reading the next head as
//! soon as a response is written, which is one more read attempt per
//! request. On a keep-alive connection that came to about 1,400
//! instructions per request, a twentieth of a whole proxied request
//! (docs/benchmarks.md, "Serving"). Neither tokio nor hyper-util has a
//! cheaper fit, so the connection keeps its own: one tokio timer for the
//! connection's life, and per request two marks, when its head is read and
//! when its response body ends. The timer only looks at the marks when it
//! fires.
//!
//! The rule is hyper's: a connection must deliver each request head
//! within the timeout of the moment it became idle (when it opened, or
//! when the last response ended). A request in flight, its body included,
//! is never cut off by this timeout. HTTP/2 connections stop the timer at
//! their first request; hyper's keep-alive pings watch them.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::Version;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

/// A connection's marks; see the module docs.
#[derive(Debug)]
pub(crate) struct HeadClock {
    opened: Instant,
    /// Requests whose response body has not ended.
    in_flight: AtomicUsize,
    /// When the connection last became idle, in nanoseconds after
    /// `opened`.
    idle_since: AtomicU64,
    http2: AtomicBool,
}

/// What the connection does when its timer fires.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait until then, and look again.
    At(Instant),
    /// No head came in time: close the connection.
    TimedOut,
    /// An HTTP/2 connection: no more header read timeout.
    Stop,
}

impl HeadClock {
    pub(crate) fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    /// Whether no request has come on the connection yet: none in
    /// flight, none ended.
    pub(crate) fn unused(&self) -> bool {
        self.idle_since.load(Ordering::Relaxed) == 0 && self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Whether the connection speaks HTTP/2 (known from its first
    /// request on).
    pub(crate) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// A request head was read.
    pub(crate) fn head_read(&self, version: Version) {
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A response body ended, or was dropped unfinished, or the request
    /// was dropped before it had a response.
    pub(crate) fn response_ended(&self) {
        // Never 0, which `unused` reads as "no request yet".
        let since = u64::try_from(self.opened.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.idle_since.store(since, Ordering::Relaxed);
        // Release: whoever sees the count drop sees the time stored above.
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    /// The first deadline: `timeout` after the connection opened.
    pub(crate) fn first_deadline(&self, timeout: Duration) -> Instant {
        self.opened + timeout
    }

    /// What to do now that the timer fired.
    pub(crate) fn next(&self, timeout: Duration) -> Next {
        if self.http2.load(Ordering::Relaxed) {
            return Next::Stop;
        }
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Next::At(now + timeout);
        }
        let idle_since =
            self.opened + Duration::from_nanos(self.idle_since.load(Ordering::Relaxed));
        let deadline = idle_since + timeout;
        if deadline <= now {
            Next::TimedOut
        } else {
            Next::At(deadline)
        }
    }
}

pin_project! {
    /// A response body that marks the end of its response on its
    /// connection's [`HeadClock`] when it is dropped, whether it ended or
    /// not. Frames pass through untouched.
    pub(crate) struct MarkEnd<B> {
        #[pin]
        inner: B,
        clock: Arc<HeadClock>,
    }

    impl<B> PinnedDrop for MarkEnd<B> {
        fn drop(this: Pin<&mut Self>) {
            this.clock.response_ended();
        }
    }
}

impl<B> MarkEnd<B> {
    /// `inner`, counted on `clock` until dropped; call after
    /// [`HeadClock::head_read`].
    pub(crate) fn new(inner: B, clock: Arc<HeadClock>) -> Self {
        Self { inner, clock }
    }
}

impl<B: Body<Data = Bytes>> Body for MarkEnd<B> {
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;

    const T: Duration = Duration::from_millis(300);

    fn at(clock: &HeadClock) -> Instant {
        match clock.next(T) {
            Next::At(at) => at,
            other => panic!("{other:?}"),
        }
    }

    /// Idle since it opened, in flight, idle again: each idle stretch gets
    /// the whole timeout from its own start.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_when_the_connection_became_idle() {
        let clock = Arc::new(HeadClock::new());
        assert_eq!(clock.first_deadline(T), clock.opened + T);
        assert_eq!(at(&clock), clock.opened + T);

        tokio::time::advance(Duration::from_millis(200)).await;
        clock.head_read(Version::HTTP_11);
        let body = MarkEnd::new(Full::new(Bytes::from_static(b"x")), Arc::clone(&clock));
        // In flight for longer than the timeout: never timed out.
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(at(&clock), Instant::now() + T);

        drop(body);
        let ended = Instant::now();
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(at(&clock), ended + T);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(clock.next(T), Next::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_and_http2_stops_the_timer() {
        let clock = HeadClock::new();
        tokio::time::advance(T).await;
        assert_eq!(clock.next(T), Next::TimedOut);

        let clock = HeadClock::new();
        clock.head_read(Version::HTTP_2);
        tokio::time::advance(T * 10).await;
        assert_eq!(clock.next(T), Next::Stop);
    }
}
