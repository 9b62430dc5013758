//! Request limits (413, 431) and CORS per route through the `Gateway`
//! builder.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::Request as AxumRequest};
use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tollgate::{
    Gateway, Route, Upstream,
    auth::{ApiKeyAuth, AuthLayer, Consumer, MemoryApiKeyStore},
    core::{
        body::BoxBody,
        problem::{HEADERS_TOO_LARGE, PAYLOAD_TOO_LARGE, UNAUTHORIZED},
    },
    transform::{HeaderLimitLayer, RequestBodyLimitLayer},
};
use tollgate_tests::{assert_problem, client, empty, full, spawn_gateway, spawn_upstream};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// An upstream that counts requests and reads their bodies to the end.
async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hits);
    let router = Router::new().fallback(move |req: AxumRequest| {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
            format!("{body:?}")
        }
    });
    (spawn_upstream(router).await, hits)
}

fn keys() -> AuthLayer {
    let keys = MemoryApiKeyStore::new();
    keys.insert("k-1", Consumer::new("app"));
    AuthLayer::new(ApiKeyAuth::new(keys))
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_declared_or_streamed() {
    let (upstream, hits) = counting_upstream().await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(
            Route::prefix("/up")
                .body_limit(RequestBodyLimitLayer::new(1024).unwrap())
                .to("svc"),
        )
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;

    let ok = Request::post(gw.url("/up"))
        .body(full(vec![b'a'; 1024]))
        .unwrap();
    assert_eq!(client().request(ok).await.unwrap().status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Declared too long: refused before anything is forwarded.
    let big = Request::post(gw.url("/up"))
        .body(full(vec![b'a'; 1025]))
        .unwrap();
    let res = client().request(big).await.unwrap();
    assert_problem(res, 413, PAYLOAD_TOO_LARGE).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Chunked, no length: cut off when it runs over, still a 413.
    let chunks = stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'b'; 512])))),
    );
    let streamed = Request::post(gw.url("/up"))
        .body(BoxBody::new(StreamBody::new(chunks)))
        .unwrap();
    let res = client().request(streamed).await.unwrap();
    assert_problem(res, 413, PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let (upstream, hits) = counting_upstream().await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(
            Route::prefix("/h")
                .header_limit(HeaderLimitLayer::new(10, 512).unwrap())
                .to("svc"),
        )
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;
    let mut req = Request::get(gw.url("/h"));
    for i in 0..12 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let res = client().request(req.body(empty()).unwrap()).await.unwrap();
    assert_problem(res, 431, HEADERS_TOO_LARGE).await;
    let req = Request::get(gw.url("/h")).header("x-big", "v".repeat(600));
    let res = client().request(req.body(empty()).unwrap()).await.unwrap();
    assert_problem(res, 431, HEADERS_TOO_LARGE).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let res = client()
        .request(Request::get(gw.url("/h")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn cors_preflight_is_answered_before_auth() {
    let (upstream, hits) = counting_upstream().await;
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(["https://app.example".parse().unwrap()]))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([http::header::HeaderName::from_static("x-api-key")])
        .max_age(Duration::from_secs(600));
    let router = Gateway::builder()
        .upstream(Upstream::builder("svc").endpoint(format!("http://{upstream}")))
        .route(Route::prefix("/api").cors(cors).auth(keys()).to("svc"))
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;

    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri(gw.url("/api/orders"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key")
        .body(empty())
        .unwrap();
    let res = client().request(preflight).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(res.headers()["access-control-max-age"], "600");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a preflight never goes upstream"
    );

    // A refused request still carries the CORS headers, so the browser
    // lets the page read the problem.
    let req = Request::get(gw.url("/api/orders"))
        .header("origin", "https://app.example")
        .body(empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_problem(res, 401, UNAUTHORIZED).await;

    // An origin not on the list gets no CORS headers.
    let req = Request::get(gw.url("/api/orders"))
        .header("origin", "https://evil.example")
        .header("x-api-key", "k-1")
        .body(empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}
