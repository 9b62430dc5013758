//! Response compression on a route (`Route::compression`, a route's
//! `compression` table): each encoding decoded back to the upstream's
//! bytes, the client's choice, and what is left alone (small bodies,
//! bodies already encoded, `no-transform`, images, event streams, ranges,
//! clients that ask for nothing or send a garbled `Accept-Encoding`); a
//! strong `ETag` made weak; streamed bodies; the config table and its
//! errors. A real upstream and gateway on 127.0.0.1, a real client.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the test by panicking"
)]

use std::io::{Read, Write};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use bytes::Bytes;
use http::Request;
use tollgate::{
    Gateway, Route, Upstream,
    compression::{Compression, Encoding, Level},
};
use tollgate_tests::{RunningGateway, body_bytes, client, empty, spawn_gateway, spawn_upstream};

/// A JSON body of about `n` bytes.
fn json_of(n: usize) -> String {
    let items: Vec<String> = (0..n / 32)
        .map(|i| format!("{{\"id\":{i},\"name\":\"user {i}\"}}"))
        .collect();
    format!("[{}]", items.join(","))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(data).unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

fn upstream() -> Router {
    let json = || json_of(4096);
    Router::new()
        .route(
            "/json",
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::ETAG, "\"v1\""),
                        (header::ACCEPT_RANGES, "bytes"),
                    ],
                    json(),
                )
            }),
        )
        .route(
            "/weak",
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::ETAG, "W/\"v2\""),
                    ],
                    json(),
                )
            }),
        )
        .route(
            "/small",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{\"a\":1}") }),
        )
        .route(
            "/encoded",
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CONTENT_ENCODING, "gzip"),
                        (header::ETAG, "\"g1\""),
                    ],
                    gzip(json().as_bytes()),
                )
            }),
        )
        .route(
            "/no-transform",
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "public, no-transform"),
                    ],
                    json(),
                )
            }),
        )
        .route(
            "/png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![0u8; 4096]) }),
        )
        .route(
            "/events",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    "data: x\n\n".repeat(400),
                )
            }),
        )
        .route("/untyped", get(|| async { vec![b'a'; 4096] }))
        .route(
            "/no-content",
            get(|| async {
                (
                    StatusCode::NO_CONTENT,
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::ETAG, "\"n1\""),
                    ],
                )
            }),
        )
        .route(
            "/range",
            get(move || async move {
                (
                    StatusCode::PARTIAL_CONTENT,
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CONTENT_RANGE, "bytes 0-2047/9000"),
                    ],
                    json()[..2048].to_owned(),
                )
            }),
        )
        .route(
            "/stream",
            get(move || async move {
                // 64 chunks of unknown total size.
                let chunks =
                    (0..64).map(move |_| Ok::<_, std::io::Error>(Bytes::from(json_of(1024))));
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(futures_util::stream::iter(chunks)),
                )
                    .into_response()
            }),
        )
}

async fn gateway(compression: Compression) -> RunningGateway {
    let up = spawn_upstream(upstream()).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("app").endpoint(format!("http://{up}")))
        .route(Route::prefix("/").to("app").compression(compression))
        .build()
        .unwrap();
    spawn_gateway(router).await
}

/// `GET path` with `Accept-Encoding: accept` (none when empty): status,
/// headers, body bytes.
async fn fetch(gw: &RunningGateway, path: &str, accept: &str) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::get(gw.url(path));
    if !accept.is_empty() {
        req = req.header(header::ACCEPT_ENCODING, accept);
    }
    let res = client().request(req.body(empty()).unwrap()).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, body_bytes(res).await)
}

fn encoding_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap())
}

/// Every encoding, chosen by the client, decodes to the upstream's bytes;
/// the compressed answer has no `Content-Length` and no `Accept-Ranges`,
/// says `Vary: Accept-Encoding`, and its strong `ETag` is weak; `q`
/// values choose; a client that asks for nothing gets the bytes as they
/// came, strong `ETag` and length included.
#[tokio::test]
async fn each_encoding_decodes_to_the_upstream_bytes() {
    let gw = gateway(Compression::new()).await;
    let original = json_of(4096);
    for encoding in ["gzip", "br", "zstd", "deflate"] {
        let (status, headers, body) = fetch(&gw, "/json", encoding).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(encoding_of(&headers), Some(encoding));
        assert!(
            body.len() < original.len() / 3,
            "{encoding}: {} bytes",
            body.len()
        );
        assert_eq!(decode(encoding, &body), original.as_bytes(), "{encoding}");
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        assert!(headers.get(header::ACCEPT_RANGES).is_none());
        assert_eq!(headers[header::VARY], "accept-encoding");
        assert_eq!(headers[header::ETAG], "W/\"v1\"", "{encoding}");
    }
    // The client's preference.
    let (_, headers, _) = fetch(&gw, "/json", "gzip;q=0.5, br;q=0.9, zstd;q=0.1").await;
    assert_eq!(encoding_of(&headers), Some("br"));
    // A weak tag stays as it is.
    let (_, headers, _) = fetch(&gw, "/weak", "gzip").await;
    assert_eq!(headers[header::ETAG], "W/\"v2\"");
    // Nothing asked: untouched.
    let (_, headers, body) = fetch(&gw, "/json", "").await;
    assert_eq!(encoding_of(&headers), None);
    assert_eq!(body, original.as_bytes());
    assert_eq!(headers[header::ETAG], "\"v1\"");
    assert_eq!(
        headers[header::CONTENT_LENGTH],
        original.len().to_string().as_str()
    );
}

/// What is never compressed: a body under `min_size`, one already
/// encoded (passed through byte for byte, its encoding kept), one with
/// `Cache-Control: no-transform`, an image, an event stream, a body
/// without a type, and a range. The already encoded body keeps its strong
/// `ETag`.
#[tokio::test]
async fn what_is_left_alone() {
    let gw = gateway(Compression::new()).await;
    for path in [
        "/small",
        "/no-transform",
        "/png",
        "/events",
        "/untyped",
        "/range",
    ] {
        let (status, headers, _) = fetch(&gw, path, "gzip, br, zstd").await;
        assert!(status.is_success(), "{path}: {status}");
        assert_eq!(encoding_of(&headers), None, "{path}");
    }
    let (_, headers, body) = fetch(&gw, "/encoded", "br, gzip").await;
    assert_eq!(encoding_of(&headers), Some("gzip"));
    assert_eq!(
        headers[header::ETAG],
        "\"g1\"",
        "the upstream's own encoding: its tag"
    );
    assert_eq!(body, gzip(json_of(4096).as_bytes()));
    assert_eq!(decode("gzip", &body), json_of(4096).as_bytes());
}

/// A streamed body of unknown size is compressed as it streams; a
/// garbled `Accept-Encoding` is a clean answer, compressed with what can
/// be read of it or not at all.
#[tokio::test]
async fn streamed_bodies_and_garbled_accept_encoding() {
    let gw = gateway(Compression::new()).await;
    let (_, headers, body) = fetch(&gw, "/stream", "zstd").await;
    assert_eq!(encoding_of(&headers), Some("zstd"));
    assert_eq!(decode("zstd", &body), json_of(1024).repeat(64).as_bytes());
    for garbled in [
        ",,;;q=,,,",
        "gzip;q=abc",
        "*;q=2",
        "br;q=-1, identity;q=x",
        "gzip;;;q=0.5;;, ;br",
    ] {
        let (status, headers, body) = fetch(&gw, "/json", garbled).await;
        assert_eq!(status, StatusCode::OK, "{garbled:?}");
        let decoded = match encoding_of(&headers) {
            Some(e) => decode(e, &body),
            None => body.to_vec(),
        };
        assert_eq!(decoded, json_of(4096).as_bytes(), "{garbled:?}");
    }
}

/// The settings: only the encodings offered are used, `min_size` and the
/// media types are read, and the route's `compression` table in a config
/// file sets them, with bad values refused at their key.
#[tokio::test]
async fn settings_in_code_and_in_the_config_file() {
    let gw = gateway(
        Compression::new()
            .encodings([Encoding::Gzip])
            .min_size(5)
            .level(Level::Best)
            .content_types(["image/png", "application/json"]),
    )
    .await;
    let (_, headers, _) = fetch(&gw, "/json", "br, zstd").await;
    assert_eq!(encoding_of(&headers), None, "br and zstd are not offered");
    let (_, headers, _) = fetch(&gw, "/json", "br, gzip").await;
    assert_eq!(encoding_of(&headers), Some("gzip"));
    let (_, headers, body) = fetch(&gw, "/small", "gzip").await;
    assert_eq!(encoding_of(&headers), Some("gzip"), "7 bytes are over 5");
    assert_eq!(decode("gzip", &body), b"{\"a\":1}");
    let (_, headers, _) = fetch(&gw, "/png", "gzip").await;
    assert_eq!(encoding_of(&headers), Some("gzip"), "image/png is listed");

    let up = spawn_upstream(upstream()).await;
    let config = |table: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = false\n\
             [[upstreams]]\nname = \"app\"\nendpoints = [\"http://{up}\"]\n\
             [[routes]]\nprefix = \"/\"\nto = \"app\"\n{table}\n"
        )
    };
    let file = tollgate::config::ConfigFile::parse(&config(
        "compression = { encodings = [\"zstd\"], min_size = 100, level = \"fastest\" }",
    ))
    .unwrap();
    let server = tollgate::config::Server::start(file).await.unwrap();
    let url = format!("http://{}/json", server.local_addr());
    let req = Request::get(&url)
        .header(header::ACCEPT_ENCODING, "gzip, zstd")
        .body(empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "zstd");
    assert_eq!(
        decode("zstd", &body_bytes(res).await),
        json_of(4096).as_bytes()
    );
    server.shutdown().await.unwrap();

    for (table, message) in [
        (
            "compression = { encodings = [\"lzma\"] }",
            "unknown variant `lzma`, expected one of `gzip`, `br`, `zstd`, `deflate`",
        ),
        (
            "compression = { level = 11 }",
            "routes[0].compression.level: wanted string or table",
        ),
        ("compression = { brotli = true }", "unknown field `brotli`"),
        (
            "compression = { encodings = [] }",
            "routes[0].compression: compression: no encoding is given",
        ),
    ] {
        let err = match tollgate::config::ConfigFile::parse(&config(table)) {
            Err(e) => e.to_string(),
            Ok(file) => match tollgate::config::Server::start(file).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{table} was taken"),
            },
        };
        assert!(err.contains(message), "{table}: {err}");
    }
}

/// A client that refuses `identity` and every encoding offered
/// (`identity;q=0`, `*;q=0`) still gets the upstream's answer, status
/// included, as it came: tower-http's `CompressionLayer` would turn any
/// answer into a `406` carrying the upstream's body after the upstream
/// has run, a `101` upgrade included, which breaks the WebSocket.
#[tokio::test]
async fn a_client_refusing_every_encoding_gets_the_answer_as_it_came() {
    let gw = gateway(Compression::new().encodings([Encoding::Gzip])).await;
    for (path, accept) in [
        ("/json", "identity;q=0"),
        ("/json", "*;q=0"),
        ("/json", "br, identity;q=0"),
        ("/png", "identity;q=0"),
        ("/range", "*;q=0"),
    ] {
        let (status, headers, body) = fetch(&gw, path, accept).await;
        assert!(status.is_success(), "{path} {accept:?}: {status}");
        assert_eq!(encoding_of(&headers), None, "{path} {accept:?}");
        assert!(!body.is_empty(), "{path} {accept:?}");
    }
    let (status, _, body) = fetch(&gw, "/json", "identity;q=0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json_of(4096).as_bytes());

    // A WebSocket through the same compressed route upgrades.
    let ws = tollgate_tests::spawn_ws_echo().await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("ws").endpoint(format!("http://{ws}")))
        .route(
            Route::prefix("/ws")
                .to("ws")
                .compression(Compression::new()),
        )
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        gw.url("/ws").replacen("http://", "ws://", 1),
    )
    .unwrap();
    req.headers_mut()
        .insert(header::ACCEPT_ENCODING, "identity;q=0".parse().unwrap());
    let (mut ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap();
    let echoed = futures_util::StreamExt::next(&mut ws)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, tokio_tungstenite::tungstenite::Message::text("hi"));
}

/// `HEAD` answers with the headers `GET` would get: the upstream's
/// answer to `HEAD` has an empty body and the `GET`'s `Content-Length`,
/// and the size of the body (nothing) must not decide. A `204` is never
/// encoded, even with `min_size(0)`: it has no content to encode.
#[tokio::test]
async fn head_answers_like_get_and_no_content_is_left_alone() {
    let gw = gateway(Compression::new()).await;
    let (_, get_headers, _) = fetch(&gw, "/json", "gzip").await;
    let req = Request::head(gw.url("/json"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    let head = res.headers().clone();
    assert!(body_bytes(res).await.is_empty());
    for name in [header::CONTENT_ENCODING, header::VARY, header::ETAG] {
        assert_eq!(head.get(&name), get_headers.get(&name), "{name}");
    }
    assert!(head.get(header::CONTENT_LENGTH).is_none());

    let gw = gateway(Compression::new().min_size(0)).await;
    for _ in 0..2 {
        // Twice on one pooled connection: nothing stray is left on it.
        let (status, headers, body) = fetch(&gw, "/no-content", "gzip").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(encoding_of(&headers), None);
        assert_eq!(headers[header::ETAG], "\"n1\"");
        assert!(body.is_empty());
    }
}
