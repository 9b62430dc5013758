use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, header};
use http_body::Body;
use tollgate_core::Observed;
use tower::Service;

use crate::{
    future::ResponseFuture,
    layer::{Config, ObserveLayer},
    record::Record,
};

/// Writes one access-log event per request and records the request metrics.
///
/// The response body is wrapped in an [`ObserveBody`](crate::ObserveBody)
/// that counts the bytes sent and finishes the record when the body ends or
/// is dropped, so the logged latency and the duration histogram cover the
/// whole response.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    config: Arc<Config>,
}

// === impl Observe ===

impl<S> Observe<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// A layer that records into `metrics`; see [`ObserveLayer::with_metrics`].
    pub fn layer(metrics: crate::Metrics) -> ObserveLayer {
        ObserveLayer::with_metrics(metrics)
    }

    tollgate_core::inner_service_accessors!();
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Observe<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body,
{
    type Response = Response<crate::ObserveBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        // The slot the route table and the proxy fill in for us.
        let observed = Observed::new();
        req.extensions_mut().insert(observed.clone());
        // The body's exact size when it knows it (hyper's does from
        // `Content-Length`, and is empty without a body), else the header.
        let bytes_in = req.body().size_hint().exact().or_else(|| {
            req.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        });
        // Before the record: the span may rewrite the trace context.
        #[cfg(feature = "otel")]
        let server_span = if self.config.server_spans() {
            crate::otel::ServerSpan::start(&mut req)
        } else {
            None
        };
        // Boxed: the record is moved into the future, then into the body.
        #[cfg_attr(not(feature = "otel"), expect(unused_mut, reason = "set with `otel`"))]
        let mut record = Box::new(Record::start(&req, bytes_in, &self.config, observed));
        #[cfg(feature = "otel")]
        {
            record.server_span = server_span;
        }
        let inner = {
            // The inner service is called inside the request's server span.
            #[cfg(feature = "otel")]
            let _entered = record.server_span().map(tracing::Span::enter);
            self.inner.call(req)
        };
        ResponseFuture::new(inner, record)
    }
}
