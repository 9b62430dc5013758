//! W3C trace context: `traceparent` (and `tracestate`) propagated to the
//! upstream, created when absent or malformed.

use http::{HeaderName, HeaderValue, Request};
use tollgate_core::{OnRequest, ParentSpanId, RequestHook, TraceContext};
use tower::Layer;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Propagates or starts a W3C trace.
///
/// A valid incoming `traceparent` keeps its trace id and flags; the gateway
/// opens its own span (a new parent id) and sends that upstream, with
/// `tracestate` untouched. A missing or malformed one starts a new trace
/// (sampled), and a `tracestate` without a valid `traceparent` is dropped,
/// as the W3C spec asks. Either way the request carries a
/// [`TraceContext`] extension, for logs; a valid incoming one also leaves
/// the caller's span id in a [`ParentSpanId`] extension, so an exporter
/// can join the gateway's span to the caller's.
#[derive(Clone, Copy, Debug, Default)]
#[must_use]
pub struct TraceparentLayer;

/// The service of [`TraceparentLayer`]: tollgate-core's [`OnRequest`]
/// with the layer as the hook.
pub type Traceparent<S> = OnRequest<S, TraceparentLayer>;

impl TraceparentLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for TraceparentLayer {
    type Service = Traceparent<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OnRequest::new(inner, *self)
    }
}

impl RequestHook for TraceparentLayer {
    fn on_request<B>(&self, req: &mut Request<B>) {
        let incoming = req.headers().get(TRACEPARENT);
        let parsed = incoming.and_then(|v| parse(v.as_bytes()));
        let ctx = match parsed {
            Some((trace_id, parent, flags)) => {
                req.extensions_mut().insert(ParentSpanId(parent));
                TraceContext {
                    trace_id,
                    span_id: new_span_id(),
                    flags,
                }
            }
            None => {
                if let Some(bad) = incoming {
                    let shown: String = String::from_utf8_lossy(bad.as_bytes())
                        .chars()
                        .take(64)
                        .collect();
                    tracing::info!(target: "tollgate::request_id", traceparent = ?shown, "malformed traceparent replaced");
                }
                req.headers_mut().remove(TRACESTATE);
                TraceContext {
                    trace_id: new_trace_id(),
                    span_id: new_span_id(),
                    flags: 0x01,
                }
            }
        };
        if let Ok(value) = HeaderValue::from_bytes(&ctx.traceparent_bytes()) {
            req.headers_mut().insert(TRACEPARENT, value);
        }
        req.extensions_mut().insert(ctx);
    }
}

/// `version-traceid-parentid-flags`, lowercase hex (W3C Trace Context §3.2).
/// Returns the trace id, the parent (caller's span) id and the flags.
fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    // Version ff is invalid; version 00 is exactly 55 bytes; later versions
    // may append fields after a dash.
    if version == 0xff
        || (version == 0 && value.len() != 55)
        || (version != 0 && value.len() > 55 && value[55] != b'-')
    {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut parent = [0u8; 8];
    for (i, byte) in parent.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

/// Two lowercase hex digits.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    async fn seen(headers: &[(&str, &str)]) -> (Option<String>, Option<String>, TraceContext) {
        let svc = ServiceBuilder::new()
            .layer(TraceparentLayer::new())
            .service(service_fn(|req: Request<()>| async move {
                let h = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
                let ctx = *req.extensions().get::<TraceContext>().unwrap();
                Ok::<_, Infallible>((h("traceparent"), h("tracestate"), ctx))
            }));
        let mut b = Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        svc.oneshot(b.body(()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn valid_traceparent_keeps_the_trace_with_a_new_span() {
        let (tp, ts, ctx) =
            seen(&[("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE")]).await;
        let tp = tp.unwrap();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(tp.ends_with("-01"));
        assert_ne!(&tp[36..52], "00f067aa0ba902b7", "the gateway's own span");
        assert_eq!(tp, ctx.traceparent());
        assert_eq!(ts.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[tokio::test]
    async fn missing_or_malformed_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let (tp, ts, ctx) = seen(&[("traceparent", bad), ("tracestate", "k=v")]).await;
            let tp = tp.unwrap();
            assert!(parse(tp.as_bytes()).is_some(), "{bad:?} -> {tp}");
            assert!(!tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{bad:?}");
            assert_eq!(ts, None, "tracestate dropped with a bad traceparent");
            assert_eq!(ctx.flags, 1);
        }
        let (tp, _, _) = seen(&[]).await;
        assert_eq!(tp.unwrap().len(), 55);
    }

    #[tokio::test]
    async fn only_a_valid_traceparent_leaves_the_callers_span_id() {
        let parent = |value: Option<&'static str>| async move {
            let svc = ServiceBuilder::new()
                .layer(TraceparentLayer::new())
                .service(service_fn(|req: Request<()>| async move {
                    Ok::<_, Infallible>(req.extensions().get::<ParentSpanId>().copied())
                }));
            let mut b = Request::builder();
            if let Some(value) = value {
                b = b.header("traceparent", value);
            }
            svc.oneshot(b.body(()).unwrap()).await.unwrap()
        };
        assert_eq!(
            parent(Some(VALID)).await,
            Some(ParentSpanId([
                0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7
            ]))
        );
        assert_eq!(parent(Some("garbage")).await, None);
        assert_eq!(parent(None).await, None);
    }

    #[test]
    fn future_versions_parse_their_known_fields() {
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever";
        assert!(parse(v1.as_bytes()).is_some());
    }
}
