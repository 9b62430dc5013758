//! A request id in a configured header, and malformed input (an incoming
//! id, a `traceparent`, an `X-Forwarded-For` entry) noted in the log
//! without failing the request. Alone in its test binary: a log capture is per thread, and another
//! test hitting the same log callsite without one at the same moment could
//! leave that callsite's interest cached as "never".

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use axum::Router;
use serde_json::Value;
use tollgate::{
    Gateway, Route, Upstream,
    request_id::{ClientIpConfig, ClientIpLayer, RequestIdLayer},
};
use tollgate_tests::{
    echo_router, get_ok_json, observe_support::Capture, spawn_gateway, spawn_upstream,
};

fn first(echo: &Value, name: &str) -> Option<String> {
    echo["headers"][name][0].as_str().map(str::to_owned)
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// A gateway whose ids go in `X-Correlation-Id` and where incoming ids are
/// trusted when well-formed; the log capture installed first.
async fn correlation_gateway() -> tollgate_tests::RunningGateway {
    let mut trusted = ClientIpConfig::default();
    trusted.trusted_proxies = vec!["127.0.0.1".into()];
    let up = spawn_upstream(echo_router()).await;
    let router: Router = Gateway::builder()
        .upstream(Upstream::builder("up").endpoint(format!("http://{up}")))
        .route(Route::prefix("/").to("up"))
        .request_id(
            RequestIdLayer::new(http::HeaderName::from_static("x-correlation-id"))
                .trust_incoming(true),
        )
        .trace_context(true)
        .client_ip(ClientIpLayer::from_config(&trusted).unwrap())
        .build()
        .unwrap();
    spawn_gateway(router).await
}

#[tokio::test]
async fn a_configured_header_and_bad_ids_traces_and_chains_noted_in_the_log() {
    let (capture, _guard) = Capture::install();
    let gw = correlation_gateway().await;

    // A well-formed incoming id is kept, forwarded and echoed in the
    // configured header; nothing is set in `X-Request-Id`.
    let (headers, seen) = get_ok_json(gw.url("/x"), &[("x-correlation-id", "trace-42.a:b")]).await;
    assert_eq!(headers["x-correlation-id"], "trace-42.a:b");
    assert_eq!(
        first(&seen, "x-correlation-id").as_deref(),
        Some("trace-42.a:b")
    );
    assert!(headers.get("x-request-id").is_none());
    assert_eq!(first(&seen, "x-request-id"), None);

    // A malformed one (a quote and a space, and far too long) is replaced
    // by a UUID, and the original goes to the log, escaped and cut to 128
    // characters, next to the id that replaced it.
    let hostile = format!("\"forged line {}", "x".repeat(300));
    let (headers, seen) = get_ok_json(gw.url("/x"), &[("x-correlation-id", &hostile)]).await;
    let id = headers["x-correlation-id"].to_str().unwrap().to_owned();
    assert!(uuid_like(&id), "{id}");
    assert_eq!(
        first(&seen, "x-correlation-id").as_deref(),
        Some(id.as_str())
    );
    let logged = capture.events("tollgate::request_id");
    assert_eq!(logged.len(), 1, "{:?}", capture.all());
    assert_eq!(logged[0].get("request_id"), Some(id.as_str()));
    let original = logged[0].get("original").unwrap();
    // `?` formatting: the quote is escaped, the text is cut.
    assert!(original.starts_with("\"\\\"forged line xxx"), "{original}");
    assert_eq!(original.chars().filter(|&c| c == 'x').count(), 128 - 13);

    // A malformed `traceparent` and a garbage `X-Forwarded-For` entry do not
    // fail the request either: a new trace is started, the client is the
    // last good hop, and each is noted in the log.
    let (headers, seen) = get_ok_json(
        gw.url("/x"),
        &[
            ("traceparent", "00-not-a-trace-01"),
            ("x-forwarded-for", "198.51.100.4, garbage!"),
        ],
    )
    .await;
    assert!(headers.contains_key("x-correlation-id"));
    let sent = first(&seen, "traceparent").unwrap();
    assert!(sent.starts_with("00-") && sent.len() == 55, "{sent}");
    let noted = capture.events("tollgate::request_id");
    assert!(
        noted
            .iter()
            .any(|e| e.get("message") == Some("malformed traceparent replaced")),
        "{noted:?}"
    );
    let noted = capture.events("tollgate::client_ip");
    assert_eq!(noted.len(), 1, "{noted:?}");
    // The garbage is the first hop from the right: the trusted peer itself
    // is the last good one.
    assert_eq!(noted[0].get("client"), Some("127.0.0.1"));
}
