//! The OpenTelemetry export (feature `otel`): a gateway sends its server
//! spans over OTLP/HTTP to a local collector, which decodes the protobuf
//! bodies; the spans join the caller's trace, and the `traceparent`
//! forwarded upstream carries the exported span's id.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] fns"
)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, routing::post};
use http::{Request, StatusCode};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode as SpanStatus},
};
use prost::Message;
use tollgate::{
    Gateway, Route, Upstream,
    observe::{ObserveLayer, otel::OtlpExporter},
    request_id::{ClientIpLayer, RequestIdLayer},
};
use tollgate_tests::{body_json, client, echo_router, empty, spawn_gateway, spawn_upstream};
use tracing_subscriber::prelude::*;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// An OTLP/HTTP collector on its own thread and runtime (the export waits
/// for it while the test's runtime is blocked in `force_flush`). Returns
/// its address and the spans it has received.
fn spawn_collector() -> (SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::clone(&spans);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (listener, addr) = tollgate_tests::listener().await;
            let app = Router::new().route(
                "/v1/traces",
                post(move |body: Bytes| async move {
                    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
                        return StatusCode::BAD_REQUEST;
                    };
                    let mut spans = received.lock().unwrap();
                    for resource in export.resource_spans {
                        for scope in resource.scope_spans {
                            spans.extend(scope.spans);
                        }
                    }
                    StatusCode::OK
                }),
            );
            tx.send(addr).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (rx.recv().unwrap(), spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv: &&KeyValue| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// Waits until the collector holds `n` spans, flushing the exporter.
async fn wait_for(exporter: &OtlpExporter, spans: &Mutex<Vec<Span>>, n: usize) -> Vec<Span> {
    for _ in 0..50 {
        // The server spans end when the response bodies end, on the
        // gateway's tasks: let them run before flushing.
        tokio::time::sleep(Duration::from_millis(20)).await;
        exporter.force_flush().unwrap();
        let got = spans.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
    }
    panic!("the collector received {:?}", spans.lock().unwrap());
}

#[tokio::test]
async fn server_spans_join_the_callers_trace_and_reach_the_collector() {
    let (collector, spans) = spawn_collector();
    let exporter = OtlpExporter::builder()
        .endpoint(format!("http://{collector}"))
        .service_name("tollgate-test")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(exporter.layer());
    let _guard = tracing::subscriber::set_default(subscriber);

    let users = spawn_upstream(echo_router()).await;
    let (closed, dead) = tollgate_tests::listener().await;
    drop(closed);
    let router = Gateway::builder()
        .request_id(RequestIdLayer::x_request_id())
        .trace_context(true)
        .client_ip(ClientIpLayer::peer_only())
        .observe(ObserveLayer::access_log_only())
        .upstream(Upstream::builder("users").endpoint(format!("http://{users}")))
        .upstream(Upstream::builder("dead").endpoint(format!("http://{dead}")))
        .route(Route::prefix("/api/users").name("users").to("users"))
        .route(Route::prefix("/api/dead").name("dead").to("dead"))
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;

    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let req = Request::get(gw.url("/api/users/42"))
        .header("traceparent", &traceparent)
        .body(empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let echo = body_json(res).await;
    let forwarded = echo["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(forwarded.len(), 55, "{forwarded}");
    assert_eq!(&forwarded[3..35], TRACE_ID, "the upstream joins the trace");
    let gateway_span = &forwarded[36..52];
    assert_ne!(gateway_span, CALLER_SPAN, "the gateway's own span");

    // No traceparent, an upstream that is down: a new trace, a 502.
    let res = client()
        .request(Request::get(gw.url("/api/dead/x")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    drop(res);

    let got = wait_for(&exporter, &spans, 2).await;
    assert_eq!(got.len(), 2, "one span per request: {got:#?}");

    let ok = got
        .iter()
        .find(|s| str_attr(s, "http.route") == Some("users"))
        .unwrap_or_else(|| panic!("no span for the users route: {got:#?}"));
    assert_eq!(hex(&ok.trace_id), TRACE_ID);
    assert_eq!(hex(&ok.parent_span_id), CALLER_SPAN);
    assert_eq!(hex(&ok.span_id), gateway_span, "the id sent upstream");
    assert_eq!(ok.name, "GET users");
    assert_eq!(ok.kind, SpanKind::Server as i32);
    assert_eq!(str_attr(ok, "http.request.method"), Some("GET"));
    assert_eq!(str_attr(ok, "url.path"), Some("/api/users/42"));
    assert_eq!(str_attr(ok, "client.address"), Some("127.0.0.1"));
    assert_eq!(int_attr(ok, "http.response.status_code"), Some(200));
    let status = ok.status.clone().unwrap_or_default();
    assert_ne!(status.code, SpanStatus::Error as i32);
    assert!(ok.end_time_unix_nano >= ok.start_time_unix_nano);

    let failed = got
        .iter()
        .find(|s| str_attr(s, "http.route") == Some("dead"))
        .unwrap_or_else(|| panic!("no span for the dead route: {got:#?}"));
    assert_eq!(failed.name, "GET dead");
    assert!(failed.parent_span_id.is_empty(), "a root span");
    assert_ne!(hex(&failed.trace_id), TRACE_ID);
    assert_eq!(int_attr(failed, "http.response.status_code"), Some(502));
    assert_eq!(str_attr(failed, "error.type"), Some("502"));
    let status = failed.status.clone().unwrap_or_default();
    assert_eq!(status.code, SpanStatus::Error as i32);

    exporter.shutdown().unwrap();
}
