//! End-to-end tests of the response rules of `tollgate-transform` (issue
//! #6): a real gateway on 127.0.0.1 whose route goes through a
//! `ResponseTransformLayer` and `tollgate::proxy::Upstream` to a real
//! upstream (axum, or raw TCP for chunked framing), driven by a real
//! HTTP client.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns"
)]

use std::{
    io::{Read, Write},
    net::SocketAddr,
    time::Duration,
};

use axum::{Router, body::Body, response::Response, routing::get};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tollgate::{core::problem, proxy::Upstream};
use tollgate_tests::{
    RunningGateway, assert_problem, body_bytes, client, empty, read_head, spawn_gateway,
    spawn_raw_upstream, spawn_upstream,
};
use tollgate_transform::{
    BySelector, Classifier, OnMalformed, OnTooLarge, ResponseRules, ResponseRulesConfig,
    ResponseTransformLayer,
};

// === setup ===

const USER: &str = r#"{"id": 1, "name": "Ada", "internal_id": "u-9", "debug_info": {"db": "users-3", "ms": 4}, "profile": {"bio": "math", "avatar": "a.png"}}"#;

const ORDER: &str = r#"{
  "id": 7,
  "items": [
    {"sku": "a", "price": 10, "cost_price": 6},
    {"sku": "b", "price": 20, "cost_price": 11, "tags": ["x"]}
  ],
  "data": {"secret": 1, "public": {"secret": 2, "deeper": [{"secret": 3, "ok": true}]}}
}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn brotli_encode(data: &[u8]) -> Vec<u8> {
    let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    e.write_all(data).unwrap();
    e.flush().unwrap();
    e.into_inner()
}

fn brotli_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(data, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn response(content_type: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut res = Response::builder().header("content-type", content_type);
    for (k, v) in headers {
        res = res.header(*k, *v);
    }
    res.body(body.into()).unwrap()
}

fn json_response(body: &'static str) -> Response {
    response(
        "application/json",
        &[
            ("etag", "\"v1\""),
            ("server", "users/1.2"),
            ("x-powered-by", "Express"),
        ],
        body,
    )
}

/// The upstream: one route per kind of response.
fn upstream_router() -> Router {
    Router::new()
        .route(
            "/user",
            get(|| async { json_response(USER) }).head(|| async { json_response(USER) }),
        )
        .route("/order", get(|| async { json_response(ORDER) }))
        .route(
            "/array",
            get(|| async { json_response(r#"[{"id":1,"secret":"a"},{"id":2,"secret":"b"}]"#) }),
        )
        .route(
            "/missing",
            get(|| async {
                let mut res = json_response(r#"{"error":"no such user","trace":"at users.rs:42"}"#);
                *res.status_mut() = StatusCode::NOT_FOUND;
                res
            }),
        )
        .route(
            "/malformed",
            get(|| async { json_response(r#"{"id": 1, "secret": "#) }),
        )
        .route(
            "/latin1",
            get(|| async { response("application/json", &[], &b"{\"name\": \"caf\xe9\"}"[..]) }),
        )
        .route(
            "/problem",
            get(|| async {
                response(
                    "application/problem+json",
                    &[],
                    r#"{"type":"x","internal_id":3}"#,
                )
            }),
        )
        .route(
            "/gzip",
            get(|| async {
                response(
                    "application/json",
                    &[("content-encoding", "gzip"), ("etag", "\"g\"")],
                    gzip(USER.as_bytes()),
                )
            }),
        )
        .route(
            "/br",
            get(|| async {
                response(
                    "application/json",
                    &[("content-encoding", "br")],
                    brotli_encode(USER.as_bytes()),
                )
            }),
        )
        .route(
            "/zstd",
            get(|| async {
                response(
                    "application/json",
                    &[("content-encoding", "zstd")],
                    zstd::encode_all(USER.as_bytes(), 3).unwrap(),
                )
            }),
        )
        .route(
            "/compress",
            get(|| async {
                response(
                    "application/json",
                    &[("content-encoding", "compress")],
                    &b"\x1f\x9d\x90opaque"[..],
                )
            }),
        )
        .route(
            "/bomb",
            get(|| async {
                // 8 MiB of spaces inside a valid document, a few KiB on the wire.
                let mut doc = b"{\"a\":".to_vec();
                doc.resize(8 << 20, b' ');
                doc.extend_from_slice(b"1}");
                response(
                    "application/json",
                    &[("content-encoding", "gzip")],
                    gzip(&doc),
                )
            }),
        )
        .route(
            "/big",
            get(|| async { response("application/json", &[], big_json()) }),
        )
        .route(
            "/no-content",
            get(|| async {
                let mut res = json_response("");
                *res.status_mut() = StatusCode::NO_CONTENT;
                res
            }),
        )
        .route(
            "/not-modified",
            get(|| async {
                let mut res = json_response("");
                *res.status_mut() = StatusCode::NOT_MODIFIED;
                res
            }),
        )
        .route(
            "/text",
            get(|| async { response("text/plain", &[], r#"{"secret": 1}"#) }),
        )
        .route(
            "/endless",
            get(|| async {
                // A slow stream that never ends.
                let ticks = futures_util::stream::unfold(0u64, |n| async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(format!("tick {n}\n"))),
                        n + 1,
                    ))
                });
                response("text/event-stream", &[], Body::from_stream(ticks))
            }),
        )
}

/// A JSON document of about 200 KiB.
fn big_json() -> Vec<u8> {
    let items: Vec<Value> = (0..2000)
        .map(|i| json!({"id": i, "name": format!("item {i}"), "secret": "s".repeat(60)}))
        .collect();
    serde_json::to_vec(&json!({ "items": items })).unwrap()
}

async fn gateway_to(addr: SocketAddr, layer: ResponseTransformLayer) -> RunningGateway {
    let proxy = Upstream::builder("up")
        .endpoint(format!("http://{addr}"))
        .build::<axum::body::Body>()
        .unwrap();
    let router = Router::new().fallback_service(tower::Layer::layer(&layer, proxy));
    spawn_gateway(router).await
}

async fn gateway(rules: ResponseRules) -> RunningGateway {
    let upstream = spawn_upstream(upstream_router()).await;
    gateway_to(upstream, ResponseTransformLayer::new(rules)).await
}

async fn send(
    gw: &RunningGateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<Incoming> {
    let mut req = Request::builder().method(method).uri(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        client().request(req.body(empty()).unwrap()),
    )
    .await
    .expect("a response within 10 s")
    .unwrap()
}

async fn get_json(gw: &RunningGateway, path: &str, headers: &[(&str, &str)]) -> (HeaderMap, Value) {
    let res = send(gw, Method::GET, path, headers).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    let headers = res.headers().clone();
    let bytes = body_bytes(res).await;
    if let Some(len) = headers.get("content-length") {
        assert_eq!(
            len.to_str().unwrap(),
            bytes.len().to_string(),
            "content-length of {path}"
        );
    }
    (headers, serde_json::from_slice(&bytes).unwrap())
}

fn seed_rules() -> ResponseRules {
    ResponseRules::builder()
        .deny("/internal_id")
        .deny("/debug_info")
        .build()
        .unwrap()
}

// === rules ===

#[tokio::test]
async fn the_seed_example_removes_internal_fields_and_fixes_content_length() {
    let gw = gateway(seed_rules()).await;
    let res = send(&gw, Method::GET, "/user", &[]).await;
    let declared: usize = res.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        res.headers().get("etag").is_none(),
        "a rewritten body has no upstream ETag"
    );
    let bytes = body_bytes(res).await;
    assert_eq!(declared, bytes.len());
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        body,
        json!({"id": 1, "name": "Ada", "profile": {"bio": "math", "avatar": "a.png"}})
    );
}

#[tokio::test]
async fn header_rules_and_status_mapping_apply_without_reading_the_body() {
    let rules = ResponseRules::builder()
        .remove_server_headers()
        .rename_header("etag", "x-upstream-etag")
        .set_header("cache-control", "no-store")
        .add_header("x-gateway", "tollgate")
        .map_status(404, 410)
        .build()
        .unwrap();
    let gw = gateway(rules).await;
    let res = send(&gw, Method::GET, "/missing", &[]).await;
    assert_eq!(res.status(), StatusCode::GONE);
    let h = res.headers();
    assert!(h.get("server").is_none());
    assert!(h.get("x-powered-by").is_none());
    assert_eq!(h["x-upstream-etag"], "\"v1\"");
    assert!(h.get("etag").is_none());
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-gateway"], "tollgate");
    // No body rule: the body is the upstream's, byte for byte.
    let body = body_bytes(res).await;
    assert_eq!(
        &body[..],
        br#"{"error":"no such user","trace":"at users.rs:42"}"#
    );
}

#[tokio::test]
async fn nested_and_wildcard_paths() {
    let rules = ResponseRules::builder()
        .deny("/items/*/cost_price")
        .deny("/data/**/secret")
        .build()
        .unwrap();
    let gw = gateway(rules).await;
    let (_, body) = get_json(&gw, "/order", &[]).await;
    assert_eq!(
        body,
        json!({
            "id": 7,
            "items": [{"sku": "a", "price": 10}, {"sku": "b", "price": 20, "tags": ["x"]}],
            "data": {"public": {"deeper": [{"ok": true}]}},
        })
    );
}

#[tokio::test]
async fn arrays_at_the_root() {
    let rules = ResponseRules::builder().deny("/*/secret").build().unwrap();
    let gw = gateway(rules).await;
    let (_, body) = get_json(&gw, "/array", &[]).await;
    assert_eq!(body, json!([{"id": 1}, {"id": 2}]));
}

#[tokio::test]
async fn allow_list_rename_and_add() {
    let rules = ResponseRules::builder()
        .allow("/id")
        .allow("/items/*/sku")
        .allow("/items/*/price")
        .rename_field("/items/*/price", "amount")
        .add_field("/items/*/currency", json!("EUR"))
        .add_field("/api_version", json!({"major": 2}))
        .build()
        .unwrap();
    let gw = gateway(rules).await;
    let (_, body) = get_json(&gw, "/order", &[]).await;
    assert_eq!(
        body,
        json!({
            "id": 7,
            "items": [
                {"sku": "a", "amount": 10, "currency": "EUR"},
                {"sku": "b", "amount": 20, "currency": "EUR"}
            ],
            "api_version": {"major": 2},
        })
    );
}

#[tokio::test]
async fn rules_from_a_config_file_and_json_subtypes() {
    let config: ResponseRulesConfig = serde_json::from_value(json!({
        "headers": {"remove": ["server"]},
        "body": {"deny": ["/internal_id"]}
    }))
    .unwrap();
    let gw = gateway(ResponseRules::try_from(config).unwrap()).await;
    let res = send(&gw, Method::GET, "/problem", &[]).await;
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(&body_bytes(res).await[..], br#"{"type":"x"}"#);
}

// === body handling ===

#[tokio::test]
async fn malformed_json_is_502_or_unchanged_by_configuration() {
    let gw = gateway(seed_rules()).await;
    let res = send(&gw, Method::GET, "/malformed", &[]).await;
    let problem = assert_problem(res, 502, problem::BAD_GATEWAY).await;
    assert!(!problem["detail"].as_str().unwrap().contains("secret"));

    let rules = ResponseRules::builder()
        .deny("/secret")
        .on_malformed(OnMalformed::PassThrough)
        .build()
        .unwrap();
    let gw = gateway(rules).await;
    let res = send(&gw, Method::GET, "/malformed", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"v1\"");
    assert_eq!(&body_bytes(res).await[..], br#"{"id": 1, "secret": "#);
}

#[tokio::test]
async fn a_non_utf8_body_is_malformed() {
    let gw = gateway(seed_rules()).await;
    let res = send(&gw, Method::GET, "/latin1", &[]).await;
    assert_problem(res, 502, problem::BAD_GATEWAY).await;

    let rules = ResponseRules::builder()
        .deny("/name")
        .on_malformed(OnMalformed::PassThrough)
        .build()
        .unwrap();
    let gw = gateway(rules).await;
    let res = send(&gw, Method::GET, "/latin1", &[]).await;
    assert_eq!(&body_bytes(res).await[..], b"{\"name\": \"caf\xe9\"}");
}

/// A raw upstream that answers with `Transfer-Encoding: chunked`, the body
/// split in `chunks`.
async fn chunked_upstream(content_type: &'static str, chunks: Vec<Vec<u8>>) -> SocketAddr {
    spawn_raw_upstream(move |mut stream| {
        let chunks = chunks.clone();
        async move {
            use tokio::io::AsyncWriteExt;
            if read_head(&mut stream).await.is_none() {
                return;
            }
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            )
            .into_bytes();
            for chunk in &chunks {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
        }
    })
    .await
}

#[tokio::test]
async fn chunked_upstream_responses_are_rewritten() {
    let chunks = USER.as_bytes().chunks(9).map(<[u8]>::to_vec).collect();
    let upstream = chunked_upstream("application/json", chunks).await;
    let gw = gateway_to(upstream, ResponseTransformLayer::new(seed_rules())).await;
    let res = send(&gw, Method::GET, "/", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let framing = (
        res.headers().get("content-length").cloned(),
        res.headers().get("transfer-encoding").cloned(),
    );
    let bytes = body_bytes(res).await;
    match framing {
        (Some(len), None) => assert_eq!(len.to_str().unwrap(), bytes.len().to_string()),
        (None, Some(te)) => assert_eq!(te, "chunked"),
        other => panic!("bad framing {other:?}"),
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["name"], "Ada");
    assert!(body.get("internal_id").is_none());
}

#[tokio::test]
async fn over_the_limit_is_502_or_passes_through_whole() {
    // Declared length past the limit.
    let rules = |on| {
        ResponseRules::builder()
            .deny("/items/*/secret")
            .body_limit(64 * 1024)
            .on_too_large(on)
            .build()
            .unwrap()
    };
    let gw = gateway(rules(OnTooLarge::Reject)).await;
    let res = send(&gw, Method::GET, "/big", &[]).await;
    let problem = assert_problem(res, 502, problem::BAD_GATEWAY).await;
    assert!(problem["detail"].as_str().unwrap().contains("65536"));

    let gw = gateway(rules(OnTooLarge::PassThrough)).await;
    let res = send(&gw, Method::GET, "/big", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(&body_bytes(res).await[..], &big_json()[..]);

    // Chunked, no declared length: read up to the limit, then the part
    // read and the rest stream on untouched.
    let big = big_json();
    let chunks: Vec<Vec<u8>> = big.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let upstream = chunked_upstream("application/json", chunks).await;
    let gw = gateway_to(
        upstream,
        ResponseTransformLayer::new(rules(OnTooLarge::PassThrough)),
    )
    .await;
    let res = send(&gw, Method::GET, "/", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(&body_bytes(res).await[..], &big[..]);
    let gw = gateway_to(
        upstream,
        ResponseTransformLayer::new(rules(OnTooLarge::Reject)),
    )
    .await;
    let res = send(&gw, Method::GET, "/", &[]).await;
    assert_problem(res, 502, problem::BAD_GATEWAY).await;
}

#[tokio::test]
async fn head_204_and_304_stay_valid() {
    let rules = ResponseRules::builder()
        .deny("/internal_id")
        .add_field("/added", json!(1))
        .remove_server_headers()
        .build()
        .unwrap();
    let gw = gateway(rules).await;
    let res = send(&gw, Method::HEAD, "/user", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("server").is_none());
    assert!(body_bytes(res).await.is_empty());
    for path in ["/no-content", "/not-modified"] {
        let res = send(&gw, Method::GET, path, &[]).await;
        assert!(matches!(res.status().as_u16(), 204 | 304));
        assert!(res.headers().get("content-length").is_none(), "{path}");
        assert_eq!(res.headers()["etag"], "\"v1\"", "{path}");
        assert!(body_bytes(res).await.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn an_endless_non_json_stream_is_not_buffered() {
    let gw = gateway(seed_rules()).await;
    let res = send(&gw, Method::GET, "/endless", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body().into_data_stream();
    let mut seen = String::new();
    // The first ticks arrive while the upstream keeps streaming.
    for _ in 0..3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("a chunk within 5 s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("tick 0\n"), "{seen}");
}

// === compression ===

#[tokio::test]
async fn gzip_is_re_encoded_when_accepted_else_sent_identity() {
    let gw = gateway(seed_rules()).await;
    let res = send(
        &gw,
        Method::GET,
        "/gzip",
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["vary"], "accept-encoding");
    assert!(res.headers().get("etag").is_none());
    let body: Value = serde_json::from_slice(&gunzip(&body_bytes(res).await)).unwrap();
    assert_eq!(body["id"], 1);
    assert!(body.get("internal_id").is_none() && body.get("debug_info").is_none());

    let res = send(&gw, Method::GET, "/gzip", &[("accept-encoding", "br")]).await;
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(res.headers()["vary"], "accept-encoding");
    let (_, body) = {
        let declared = res.headers().get("content-length").cloned();
        let bytes = body_bytes(res).await;
        if let Some(len) = declared {
            assert_eq!(len.to_str().unwrap(), bytes.len().to_string());
        }
        ((), serde_json::from_slice::<Value>(&bytes).unwrap())
    };
    assert_eq!(
        body,
        json!({"id": 1, "name": "Ada", "profile": {"bio": "math", "avatar": "a.png"}})
    );
}

#[tokio::test]
async fn br_and_zstd_are_decoded_and_re_encoded() {
    let gw = gateway(seed_rules()).await;
    let res = send(&gw, Method::GET, "/br", &[("accept-encoding", "br")]).await;
    assert_eq!(res.headers()["content-encoding"], "br");
    let body: Value = serde_json::from_slice(&brotli_decode(&body_bytes(res).await)).unwrap();
    assert!(body.get("internal_id").is_none() && body["name"] == "Ada");

    let res = send(&gw, Method::GET, "/zstd", &[("accept-encoding", "zstd")]).await;
    assert_eq!(res.headers()["content-encoding"], "zstd");
    let decoded = zstd::decode_all(&body_bytes(res).await[..]).unwrap();
    let body: Value = serde_json::from_slice(&decoded).unwrap();
    assert!(body.get("debug_info").is_none() && body["id"] == 1);

    let (_, body) = get_json(&gw, "/zstd", &[]).await;
    assert!(body.get("debug_info").is_none() && body["id"] == 1);
}

#[tokio::test]
async fn an_unknown_encoding_passes_untouched() {
    let (capture, _guard) = tollgate_tests::observe_support::Capture::install();
    let gw = gateway(seed_rules()).await;
    let res = send(
        &gw,
        Method::GET,
        "/compress",
        &[("accept-encoding", "compress")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-encoding"], "compress");
    assert_eq!(&body_bytes(res).await[..], b"\x1f\x9d\x90opaque");
    // With a warning that names the coding.
    let warned: Vec<_> = capture
        .events("tollgate_transform::response")
        .into_iter()
        .filter(|e| {
            e.get("message")
                .is_some_and(|m| m.contains("unknown content coding"))
        })
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", capture.all());
    assert!(
        warned[0]
            .get("content_encoding")
            .is_some_and(|v| v.contains("compress")),
        "{warned:?}"
    );
}

#[tokio::test]
async fn a_zip_bomb_stops_at_the_decoded_limit() {
    let gw = gateway(seed_rules()).await;
    let res = send(&gw, Method::GET, "/bomb", &[("accept-encoding", "gzip")]).await;
    assert_problem(res, 502, problem::BAD_GATEWAY).await;
}

// === client classes ===

#[tokio::test]
async fn mobile_gets_a_minimal_payload_and_web_a_rich_one() {
    let classes = BySelector::by_class(Classifier::new().header("x-client").unwrap())
        .class(
            "mobile",
            ResponseRules::builder()
                .allow("/id")
                .allow("/name")
                .build()
                .unwrap(),
        )
        .class("web", seed_rules())
        .default(
            ResponseRules::builder()
                .deny("/**/internal_id")
                .deny("/debug_info")
                .deny("/profile")
                .build()
                .unwrap(),
        );
    let upstream = spawn_upstream(upstream_router()).await;
    let gw = gateway_to(upstream, ResponseTransformLayer::by_class(classes)).await;

    let (_, mobile) = get_json(&gw, "/user", &[("x-client", "mobile")]).await;
    assert_eq!(mobile, json!({"id": 1, "name": "Ada"}));
    let (_, web) = get_json(&gw, "/user", &[("x-client", "web")]).await;
    assert_eq!(
        web,
        json!({"id": 1, "name": "Ada", "profile": {"bio": "math", "avatar": "a.png"}})
    );
    let (_, other) = get_json(&gw, "/user", &[]).await;
    assert_eq!(other, json!({"id": 1, "name": "Ada"}));
}
