use std::convert::Infallible;

use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};

use super::*;
use crate::scan::SCAN_NAMES;

fn json_response(body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len())
        .header(ETAG, "\"v1\"")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn run(
    rules: ResponseRules,
    req: Request<()>,
    res: Response<Full<Bytes>>,
) -> Response<TransformedBody<Full<Bytes>>> {
    let svc = ServiceBuilder::new()
        .layer(ResponseTransformLayer::new(rules))
        .service_fn(move |_req: Request<()>| {
            let res = res.clone();
            async move { Ok::<_, Infallible>(res) }
        });
    svc.oneshot(req).await.unwrap()
}

#[test]
fn build_rejects_bad_rules() {
    let bad = [
        ResponseRules::builder().remove_header("bad header"),
        ResponseRules::builder().remove_header("content-length"),
        ResponseRules::builder().rename_header("server", "transfer-encoding"),
        ResponseRules::builder().add_header("x-a", "bad\nvalue"),
        ResponseRules::builder().map_status(404, 304),
        ResponseRules::builder().map_status(404, 204),
        ResponseRules::builder().map_status(100, 200),
        ResponseRules::builder().map_status(404, 1000),
        ResponseRules::builder().deny("internal_id"),
        ResponseRules::builder().allow("/a~2"),
        ResponseRules::builder().rename_field("/data/**", "x"),
        ResponseRules::builder().add_field("/items/*", json!(1)),
        ResponseRules::builder().body_limit(0),
    ];
    for builder in bad {
        let config = builder.config().clone();
        let err = builder.build().unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidValue, "{config:?}");
    }
    let twice = ResponseRules::builder()
        .map_status(404, 410)
        .map_status(404, 400)
        .build()
        .unwrap_err();
    assert_eq!(twice.kind(), ConfigErrorKind::Duplicate);
}

#[cfg(feature = "serde")]
#[test]
fn config_deserialises_and_denies_unknown_fields() {
    let config: ResponseRulesConfig = serde_json::from_value(json!({
        "headers": {"remove_server_headers": true, "rename": [{"from": "x-a", "to": "x-b"}]},
        "status": [{"from": 404, "to": 410}],
        "body": {
            "deny": ["/internal_id"],
            "add": [{"path": "/v", "value": {"n": 1}}],
            "limit": 1024,
            "on_too_large": "pass_through",
            "on_malformed": "reject"
        }
    }))
    .unwrap();
    assert_eq!(config.body.on_too_large, OnTooLarge::PassThrough);
    assert!(ResponseRules::try_from(config).is_ok());
    let unknown = serde_json::from_value::<ResponseRulesConfig>(json!({"body": {"dney": []}}));
    assert!(unknown.is_err());
}

#[tokio::test]
async fn headers_and_status_without_body_rules_stream() {
    let rules = ResponseRules::builder()
        .remove_server_headers()
        .rename_header("x-upstream-id", "x-id")
        .set_header("cache-control", "no-store")
        .add_header("x-gateway", "tollgate")
        .map_status(404, 410)
        .build()
        .unwrap();
    let mut upstream = json_response(r#"{"a":1}"#);
    *upstream.status_mut() = StatusCode::NOT_FOUND;
    let h = upstream.headers_mut();
    h.insert("server", HeaderValue::from_static("nginx"));
    h.insert("x-powered-by", HeaderValue::from_static("php"));
    h.append("x-upstream-id", HeaderValue::from_static("1"));
    h.append("x-upstream-id", HeaderValue::from_static("2"));
    h.insert("cache-control", HeaderValue::from_static("max-age=60"));
    let res = run(rules, Request::new(()), upstream).await;
    assert_eq!(res.status(), StatusCode::GONE);
    let h = res.headers();
    assert!(h.get("server").is_none() && h.get("x-powered-by").is_none());
    assert_eq!(h.get_all("x-id").iter().collect::<Vec<_>>(), ["1", "2"]);
    assert!(h.get("x-upstream-id").is_none());
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-gateway"], "tollgate");
    assert_eq!(h[ETAG], "\"v1\"");
    assert!(res.body().is_stream());
}

#[test]
fn headers_only_is_offered_only_when_no_rule_set_reads_bodies() {
    let heads = || {
        ResponseRules::builder()
            .remove_server_headers()
            .map_status(404, 410)
            .build()
            .unwrap()
    };
    let body = || ResponseRules::builder().deny("/x").build().unwrap();
    let by_client = || crate::Classifier::new().header("x-client").unwrap();
    assert!(
        ResponseTransformLayer::new(heads())
            .headers_only()
            .is_some()
    );
    assert!(
        ResponseTransformLayer::new(ResponseRules::builder().build().unwrap())
            .headers_only()
            .is_some()
    );
    assert!(ResponseTransformLayer::new(body()).headers_only().is_none());
    let classes = |web: ResponseRules, default: ResponseRules| {
        ResponseTransformLayer::by_class(
            BySelector::by_class(by_client())
                .class("mobile", heads())
                .class("web", web)
                .default(default),
        )
    };
    assert!(classes(heads(), heads()).headers_only().is_some());
    assert!(classes(body(), heads()).headers_only().is_none());
    assert!(classes(heads(), body()).headers_only().is_none());
}

/// `req` through `layer` in front of `upstream`.
async fn through<L, S>(
    layer: &L,
    upstream: S,
    req: Request<()>,
) -> <L::Service as Service<Request<()>>>::Response
where
    L: Layer<S>,
    L::Service: Service<Request<()>, Error = Infallible>,
{
    layer.layer(upstream).oneshot(req).await.unwrap()
}

/// The headers-only layer gives every class the head the full layer
/// gives it, and the upstream's body itself: same type, same frames,
/// same trailers.
#[tokio::test]
async fn headers_only_gives_the_full_layers_head_and_the_body_untouched() {
    let shape = |name: &'static str| {
        ResponseRules::builder()
            .remove_server_headers()
            .set_header("x-shape", name)
            .map_status(404, 410)
            .build()
            .unwrap()
    };
    let full = ResponseTransformLayer::by_class(
        BySelector::by_class(crate::Classifier::new().header("x-client").unwrap())
            .class("mobile", shape("mobile"))
            .class("web", shape("web")),
    );
    let headers = full.headers_only().unwrap();
    let upstream = || {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"not "))),
            Ok(Frame::data(Bytes::from_static(b"json"))),
            Ok(Frame::trailers(HeaderMap::from_iter([(
                HeaderName::from_static("x-sum"),
                HeaderValue::from_static("7"),
            )]))),
        ];
        let mut res = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
        *res.status_mut() = StatusCode::NOT_FOUND;
        res.headers_mut()
            .insert("server", HeaderValue::from_static("nginx"));
        res
    };
    for client in [Some("mobile"), Some("WEB"), Some("tv"), None] {
        let req = || {
            let mut req = Request::new(());
            if let Some(client) = client {
                req.headers_mut()
                    .insert("x-client", HeaderValue::from_static(client));
            }
            req
        };
        let svc = tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(upstream()) });
        let via_full = through(&full, svc, req()).await;
        let via_headers = through(&headers, svc, req()).await;
        assert_eq!(via_headers.status(), via_full.status(), "{client:?}");
        assert_eq!(via_headers.headers(), via_full.headers(), "{client:?}");
        let expected = match client {
            Some("mobile") => Some("mobile"),
            Some("WEB") => Some("web"),
            _ => None,
        };
        assert_eq!(
            via_headers
                .headers()
                .get("x-shape")
                .map(|v| v.to_str().unwrap()),
            expected,
            "{client:?}"
        );
        assert_eq!(
            via_headers.status() == StatusCode::GONE,
            expected.is_some(),
            "{client:?}"
        );
        let collected = via_headers.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "7");
        assert_eq!(&collected.to_bytes()[..], b"not json");
    }
}

/// Removals and renames give the same headers whether the response is
/// small enough to be scanned for the names (absent ones are then not
/// looked up) or not, with several values under one name.
#[tokio::test]
async fn header_rules_agree_on_small_and_large_responses() {
    let rules = ResponseRules::builder()
        .remove_server_headers()
        .remove_header("x-debug")
        .rename_header("x-upstream-id", "x-id")
        .rename_header("x-absent", "x-never")
        .build()
        .unwrap();
    for padding in [0, SCAN_NAMES - 3, SCAN_NAMES + 5] {
        let mut upstream = Response::new(Full::new(Bytes::new()));
        let h = upstream.headers_mut();
        for i in 0..padding {
            h.append(
                HeaderName::try_from(format!("x-pad-{i}")).unwrap(),
                HeaderValue::from_static("p"),
            );
        }
        h.append("x-powered-by", HeaderValue::from_static("php"));
        h.append("x-powered-by", HeaderValue::from_static("asp"));
        h.append("x-upstream-id", HeaderValue::from_static("1"));
        h.append("x-upstream-id", HeaderValue::from_static("2"));
        let res = run(rules.clone(), Request::new(()), upstream).await;
        let h = res.headers();
        assert!(h.get("x-powered-by").is_none(), "{padding}");
        assert!(h.get("x-upstream-id").is_none(), "{padding}");
        assert_eq!(h.get_all("x-id").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert!(h.get("x-never").is_none() && h.get("server").is_none());
        assert_eq!(h.keys_len(), padding + 1, "{padding}");
    }
}

#[tokio::test]
async fn a_rewrite_fixes_length_and_drops_validators() {
    let rules = ResponseRules::builder().deny("/secret").build().unwrap();
    let mut upstream = json_response(r#"{"id": 1, "secret": "s"}"#);
    upstream
        .headers_mut()
        .insert("content-digest", HeaderValue::from_static("sha-256=:x:"));
    upstream
        .headers_mut()
        .insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let res = run(rules.clone(), Request::new(()), upstream).await;
    assert_eq!(res.headers()[CONTENT_LENGTH], "8");
    for gone in ["etag", "content-digest", "accept-ranges"] {
        assert!(res.headers().get(gone).is_none(), "{gone}");
    }
    assert_eq!(
        &res.into_body().collect().await.unwrap().to_bytes()[..],
        br#"{"id":1}"#
    );

    // Nothing to remove: the body and its validators are untouched.
    let res = run(rules, Request::new(()), json_response(r#"{"id": 1}"#)).await;
    assert_eq!(res.headers()[ETAG], "\"v1\"");
    assert_eq!(
        &res.into_body().collect().await.unwrap().to_bytes()[..],
        br#"{"id": 1}"#
    );
}

#[tokio::test]
async fn non_json_head_and_no_content_are_not_read() {
    let rules = ResponseRules::builder().deny("/secret").build().unwrap();
    let mut text = json_response(r#"{"secret":1}"#);
    text.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let res = run(rules.clone(), Request::new(()), text).await;
    assert!(res.body().is_stream());

    let head = Request::head("/").body(()).unwrap();
    let res = run(rules.clone(), head, json_response(r#"{"secret":1}"#)).await;
    assert!(res.body().is_stream());

    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        let mut upstream = json_response("");
        *upstream.status_mut() = status;
        let res = run(rules.clone(), Request::new(()), upstream).await;
        assert!(res.body().is_stream());
    }
}

#[test]
fn json_content_types() {
    let is = |v: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
        is_json(&h)
    };
    assert!(is("application/json"));
    assert!(is("Application/JSON; charset=utf-8"));
    assert!(is("application/problem+json"));
    assert!(is("application/vnd.api+json"));
    assert!(!is("text/plain"));
    assert!(!is("application/jsonl"));
    assert!(!is("application/+json"));
    assert!(!is("json"));
    assert!(is(" application/json\t; charset=utf-8"));
    assert!(is("text/plain+json"));
    let mut h = HeaderMap::new();
    let value = HeaderValue::from_bytes(b"application/json; x=\xff").unwrap();
    h.insert(CONTENT_TYPE, value);
    assert!(!is_json(&h), "not visible ASCII, as `to_str` refuses");
    assert!(!is_json(&HeaderMap::new()));
}

/// The scan of a short map and the lookup in a long one find the same
/// value: the first `Content-Type`, wherever it is among the names.
#[test]
fn content_type_by_scan_or_lookup() {
    for names in [0, 3, SCAN_NAMES - 1, SCAN_NAMES, SCAN_NAMES + 5] {
        let mut h = HeaderMap::new();
        for i in 0..names {
            h.append(
                HeaderName::try_from(format!("x-h{i}")).unwrap(),
                HeaderValue::from_static("v"),
            );
            // Extra values: the scan walks values, not only names.
            h.append(
                HeaderName::try_from(format!("x-h{i}")).unwrap(),
                HeaderValue::from_static("w"),
            );
        }
        assert_eq!(content_type(&h), None, "{names}");
        h.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(content_type(&h), h.get(CONTENT_TYPE), "{names}");
        assert_eq!(content_type(&h).unwrap(), "text/plain");
        assert!(!is_json(&h));
    }
}

#[tokio::test]
async fn a_failing_body_is_502_and_trailers_survive() {
    let rules = ResponseRules::builder().deny("/secret").build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(ResponseTransformLayer::new(rules.clone()))
        .service_fn(|_req: Request<()>| async {
            let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"{\"a\":"))),
                Err(std::io::Error::other("reset")),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            Ok::<_, Infallible>(
                Response::builder()
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
                    .unwrap(),
            )
        });
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(res.extensions().get::<Problem>().is_some());

    let svc = ServiceBuilder::new()
        .layer(ResponseTransformLayer::new(rules))
        .service_fn(|_req: Request<()>| async {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-sum", HeaderValue::from_static("1"));
            let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"{\"a\":1,"))),
                Ok(http_body::Frame::data(Bytes::from_static(b"\"secret\":2}"))),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            Ok::<_, Infallible>(
                Response::builder()
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
                    .unwrap(),
            )
        });
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-sum"], "1");
    assert_eq!(&collected.to_bytes()[..], br#"{"a":1}"#);
}

#[test]
fn fits_axum() {
    fn assert_send_sync<T: Clone + Send + Sync>(_: &T) {}
    let layer = ResponseTransformLayer::new(ResponseRules::builder().deny("/x").build().unwrap());
    assert_send_sync(&layer);
    let router: axum::Router = axum::Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .layer(layer);
    assert_send_sync(&router);
}

/// A route with body rules never asks for a partial body: a 206 of JSON
/// could not be filtered. `Range` and `If-Range` go; other headers stay,
/// and routes without body rules keep them.
#[tokio::test]
async fn range_requests_are_dropped_only_where_bodies_are_read() {
    let seen = |rules: ResponseRules| async move {
        let svc = ServiceBuilder::new()
            .layer(ResponseTransformLayer::new(rules))
            .service_fn(|req: Request<()>| async move {
                let names: Vec<String> = req
                    .headers()
                    .keys()
                    .map(|k| k.as_str().to_owned())
                    .collect();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(names.join(",")))))
            });
        let req = Request::get("/")
            .header("range", "bytes=0-10")
            .header("if-range", "\"v1\"")
            .header("accept-encoding", "gzip")
            .header("accept-encoding", "br")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    };
    let with_body = seen(ResponseRules::builder().deny("/secret").build().unwrap()).await;
    assert_eq!(with_body, "accept-encoding");
    let headers_only = seen(
        ResponseRules::builder()
            .remove_server_headers()
            .build()
            .unwrap(),
    )
    .await;
    assert_eq!(headers_only, "range,if-range,accept-encoding");
}

/// A problem the layer answers names the request's path (not its query)
/// and id, which the call keeps before the request goes upstream; a target
/// without a path (authority form) gives an empty `instance`, as before.
#[tokio::test]
async fn a_problem_names_the_path_and_request_id() {
    let problem = |target: &'static str| async move {
        let rules = ResponseRules::builder().deny("/secret").build().unwrap();
        let mut req = Request::get(target).body(()).unwrap();
        req.extensions_mut().insert(RequestId::from_static("r-7"));
        let res = run(rules, req, json_response("{\"secret\":")).await;
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let named = problem("/orders/7?page=2").await;
    assert_eq!(named["instance"], "/orders/7");
    assert_eq!(named["request_id"], "r-7");
    let absolute = problem("https://example.com").await;
    assert_eq!(absolute["instance"], "/");
    let authority = problem("example.com:443").await;
    assert_eq!(authority["instance"], "");
}
