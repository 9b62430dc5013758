//! The future of [`Observe`](crate::Observe).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;

use crate::{ObserveBody, record::Record};

pin_project! {
    /// The response future of [`Observe`](crate::Observe).
    ///
    /// Dropping it before the inner service answers (the client went away)
    /// still writes the access log, with status 499.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        record: Option<Box<Record>>,
    }
}

// === impl ResponseFuture ===

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, record: Box<Record>) -> Self {
        Self {
            inner,
            record: Some(record),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ObserveBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = {
            // The inner service runs inside the request's server span.
            #[cfg(feature = "otel")]
            let _entered = this
                .record
                .as_deref()
                .and_then(Record::server_span)
                .map(tracing::Span::enter);
            this.inner.poll(cx)
        };
        let result = ready!(polled);
        let Some(mut record) = this.record.take() else {
            // Polled after completion: an inner future that returns twice
            // gets an unobserved body rather than a panic.
            return Poll::Ready(result.map(|res| res.map(ObserveBody::unobserved)));
        };
        match result {
            Ok(res) => {
                record.response(&res);
                Poll::Ready(Ok(res.map(|body| ObserveBody::new(body, record))))
            }
            Err(err) => {
                record.failed();
                drop(record);
                Poll::Ready(Err(err))
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
