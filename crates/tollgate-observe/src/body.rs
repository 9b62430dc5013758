use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::record::Record;

pin_project! {
    /// The response body of [`Observe`](crate::Observe): the inner body,
    /// streaming untouched, with its bytes counted.
    ///
    /// The access-log event is written and the request metrics recorded
    /// when the body ends, fails or is dropped. `size_hint` and
    /// `is_end_stream` are forwarded.
    pub struct ObserveBody<B> {
        #[pin]
        inner: B,
        record: Option<Box<Record>>,
    }
}

// === impl ObserveBody ===

impl<B> ObserveBody<B> {
    pub(crate) fn new(inner: B, record: Box<Record>) -> Self {
        Self {
            inner,
            record: Some(record),
        }
    }

    pub(crate) fn unobserved(inner: B) -> Self {
        Self {
            inner,
            record: None,
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The inner body, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner body (the request is recorded
    /// now, with the bytes counted so far).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for ObserveBody<B>
where
    B: Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(record), Some(data)) = (this.record.as_mut(), frame.data_ref()) {
                    record.sent(data.remaining());
                }
                // The last frame: finish now rather than wait for a poll
                // that a server may never make.
                if inner.is_end_stream() {
                    drop(this.record.take());
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(record) = this.record.as_mut() {
                    record.body_failed();
                }
                drop(this.record.take());
            }
            Poll::Ready(None) => drop(this.record.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for ObserveBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserveBody")
            .field("observed", &self.record.is_some())
            .finish_non_exhaustive()
    }
}
