//! `tollgate-transform` request rules against a real server and a real
//! client: an axum app on 127.0.0.1 whose handler echoes what the rules
//! left of the request.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, extract::Request as AxumRequest, routing::post};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};
use tollgate::core::{ClientIp, Identity, RequestId, body::BoxBody, problem};
use tollgate_tests::{
    ClientBody, assert_problem, body_bytes, body_json, client, echo_router, empty, full,
    spawn_gateway,
};
use tollgate_transform::{
    BySelector, Classifier, OnMissing, RequestRules, RequestRulesConfig, RequestTransformLayer,
};
use tower::util::MapRequestLayer;

/// Puts what the earlier layers would have set: a request id, the client
/// IP and (unless `x-anonymous` is sent) an identity with claims.
fn context(mut req: Request<Body>) -> Request<Body> {
    let ext = req.extensions_mut();
    ext.insert(RequestId::from_static("req-1"));
    ext.insert(ClientIp(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))));
    if !req.headers().contains_key("x-anonymous") {
        let mut claims = serde_json::Map::new();
        claims.insert("tenant".into(), "acme".into());
        claims.insert("level".into(), 3.into());
        claims.insert("org".into(), json!({"id": "o-1"}));
        let mut identity = Identity::subject("u-42").with_claims(claims);
        identity.consumer = Some("app-7".into());
        req.extensions_mut().insert(identity);
    }
    req
}

/// The echo upstream (plus `POST /raw`, which answers the body bytes as
/// received) behind `layer`, counting the requests that reach it.
async fn gateway(
    layer: RequestTransformLayer,
) -> (tollgate_tests::RunningGateway, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = echo_router()
        .route("/raw", post(|body: Bytes| async move { body }))
        .layer(MapRequestLayer::new(move |req: Request<Body>| {
            counter.fetch_add(1, Ordering::SeqCst);
            req
        }))
        .layer(layer)
        .layer(MapRequestLayer::new(context));
    (spawn_gateway(app).await, hits)
}

async fn send(req: Request<ClientBody>) -> http::Response<hyper::body::Incoming> {
    tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .unwrap()
        .unwrap()
}

fn header<'v>(echo: &'v Value, name: &str) -> Vec<&'v str> {
    echo["headers"][name]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn header_rules_set_add_remove_rename() {
    let rules = RequestRules::builder()
        .set_header("x-user-id", "{identity.subject}")
        .add_header("x-tag", "gateway")
        .remove_header("cookie")
        .rename_header("x-old", "x-new")
        .set_header("x-literal", "on")
        .build()
        .unwrap();
    let (gw, _) = gateway(RequestTransformLayer::new(rules)).await;
    let req = Request::get(gw.url("/h"))
        .header("x-user-id", "forged")
        .header("x-tag", "client")
        .header("cookie", "session=secret")
        .header("x-old", "a")
        .header("x-old", "b")
        .header("x-new", "replaced")
        .body(empty())
        .unwrap();
    let echo = body_json(send(req).await).await;
    assert_eq!(header(&echo, "x-user-id"), ["u-42"]);
    assert_eq!(header(&echo, "x-tag"), ["client", "gateway"]);
    assert!(header(&echo, "cookie").is_empty());
    assert!(header(&echo, "x-old").is_empty());
    assert_eq!(header(&echo, "x-new"), ["a", "b"]);
    assert_eq!(header(&echo, "x-literal"), ["on"]);
}

#[tokio::test]
async fn templates_fill_every_variable() {
    let rules = RequestRules::builder()
        .rewrite_regex("^/users/(?P<id>[0-9]+)$", "/v2/users/{path.id}")
        .set_header("x-request-id", "{request_id}")
        .set_header("x-forwarded-for", "{client_ip}")
        .set_header("x-user", "{identity.subject}/{identity.consumer}")
        .set_header("x-claims", "{claim.tenant},{claim.level},{claim.org.id}")
        .set_header(
            "x-echo",
            "client={header.x-client} id={path.id} q={query.q}",
        )
        .set_header("x-braces", "{{literal}}")
        .build()
        .unwrap();
    let (gw, _) = gateway(RequestTransformLayer::new(rules)).await;
    let req = Request::get(gw.url("/users/7?q=hello%20world"))
        .header("x-client", "mobile")
        .body(empty())
        .unwrap();
    let echo = body_json(send(req).await).await;
    assert_eq!(echo["uri"], "/v2/users/7?q=hello%20world");
    assert_eq!(header(&echo, "x-request-id"), ["req-1"]);
    assert_eq!(header(&echo, "x-forwarded-for"), ["203.0.113.9"]);
    assert_eq!(header(&echo, "x-user"), ["u-42/app-7"]);
    assert_eq!(header(&echo, "x-claims"), ["acme,3,o-1"]);
    assert_eq!(
        header(&echo, "x-echo"),
        ["client=mobile id=7 q=hello world"]
    );
    assert_eq!(header(&echo, "x-braces"), ["{literal}"]);
}

#[tokio::test]
async fn missing_value_skips_or_rejects_per_rule() {
    let rules = RequestRules::builder()
        .set_header("x-user-id", "{identity.subject}")
        .set_header("x-kept", "yes")
        .build()
        .unwrap();
    let (gw, hits) = gateway(RequestTransformLayer::new(rules)).await;
    let req = Request::get(gw.url("/skip"))
        .header("x-anonymous", "1")
        .header("x-user-id", "forged")
        .body(empty())
        .unwrap();
    let echo = body_json(send(req).await).await;
    // Skipped: the set does not happen, the client's value stays.
    assert_eq!(header(&echo, "x-user-id"), ["forged"]);
    assert_eq!(header(&echo, "x-kept"), ["yes"]);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let strict = RequestRules::builder()
        .on_missing(OnMissing::Reject)
        .set_header("x-user-id", "{identity.subject}")
        .set_header("x-from", "{header.x-from}")
        .build()
        .unwrap();
    let (gw, hits) = gateway(RequestTransformLayer::new(strict)).await;
    let req = Request::get(gw.url("/reject"))
        .header("x-anonymous", "1")
        .body(empty())
        .unwrap();
    let problem = assert_problem(send(req).await, 400, problem::BAD_REQUEST).await;
    assert_eq!(
        problem["detail"],
        "no value for template variable {identity.subject}"
    );
    assert_eq!(problem["request_id"], "req-1");
    // A header value that cannot be a template value is rejected without
    // being echoed.
    let req = Request::get(gw.url("/reject"))
        .header("x-from", &b"caf\xe9<script>"[..])
        .body(empty())
        .unwrap();
    let problem = assert_problem(send(req).await, 400, problem::BAD_REQUEST).await;
    assert_eq!(
        problem["detail"],
        "no value for template variable {header.x-from}"
    );
    assert!(!problem.to_string().contains("script"));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn path_rewrites_by_prefix_and_regex() {
    let rules = RequestRules::builder()
        .rewrite_prefix("/api", "/")
        .rewrite_regex("^/files/(.*)$", "/store/{path.1}")
        .build()
        .unwrap();
    let (gw, hits) = gateway(RequestTransformLayer::new(rules)).await;
    for (from, to) in [
        ("/api/users?x=1", "/users?x=1"),
        ("/api", "/"),
        ("/apiary", "/apiary"),
        ("/files/a/b.txt", "/store/a/b.txt"),
    ] {
        let echo = body_json(send(Request::get(gw.url(from)).body(empty()).unwrap()).await).await;
        assert_eq!(echo["uri"], to, "{from}");
    }
    // A rewrite into a dot-segment is not a valid path: 400, not forwarded.
    let before = hits.load(Ordering::SeqCst);
    let res = send(Request::get(gw.url("/files/..")).body(empty()).unwrap()).await;
    assert_problem(res, 400, problem::BAD_REQUEST).await;
    assert_eq!(hits.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn query_rules_add_remove_rename_keep_the_rest() {
    let rules = RequestRules::builder()
        .remove_query("api_key")
        .rename_query("q", "search")
        .add_query("tenant", "{claim.tenant}")
        .add_query("who", "{identity.subject} & co")
        .build()
        .unwrap();
    let (gw, _) = gateway(RequestTransformLayer::new(rules)).await;
    let req = Request::get(gw.url("/s?b=%7e%41+x&api_key=k&q=a%20b&%61pi_key=k2&flag"))
        .body(empty())
        .unwrap();
    let echo = body_json(send(req).await).await;
    assert_eq!(
        echo["uri"],
        "/s?b=%7e%41+x&search=a%20b&flag&tenant=acme&who=u-42%20%26%20co"
    );
}

/// A chunked body of `parts` (no length known up front).
fn chunked(parts: Vec<&'static [u8]>) -> ClientBody {
    let stream = futures_util::stream::iter(
        parts
            .into_iter()
            .map(|p| Ok::<_, Infallible>(Frame::data(Bytes::from_static(p)))),
    );
    BoxBody::new(StreamBody::new(stream))
}

fn json_rules() -> RequestRules {
    RequestRules::builder()
        .json_add("/meta/source", json!("gateway"))
        .json_set("/meta/caller", "{identity.subject}")
        .json_remove("/user/password")
        .json_rename("/user/mail", "/user/email")
        .json_remove("/debug")
        .body_limit(1024)
        .build()
        .unwrap()
}

#[tokio::test]
async fn json_body_edits_nested_fields_and_fixes_framing() {
    let (gw, _) = gateway(RequestTransformLayer::new(json_rules())).await;
    let body: &'static [u8] =
        br#"{"user":{"name":"Ann","password":"s3cret","mail":"a@x"},"debug":true,"n":[1,2]}"#;
    for (name, body) in [
        ("sized", full(body)),
        ("chunked", chunked(vec![&body[..10], &body[10..]])),
    ] {
        let req = Request::post(gw.url("/users"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body)
            .unwrap();
        let echo = body_json(send(req).await).await;
        let sent: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({"user": {"name": "Ann", "email": "a@x"}, "n": [1, 2],
                   "meta": {"source": "gateway", "caller": "u-42"}}),
            "{name}"
        );
        let len = echo["body"].as_str().unwrap().len().to_string();
        assert_eq!(header(&echo, "content-length"), [len.as_str()], "{name}");
        assert!(header(&echo, "transfer-encoding").is_empty(), "{name}");
    }
    // `+json` types are JSON too.
    let req = Request::post(gw.url("/users"))
        .header("content-type", "application/vnd.api+json")
        .body(full(r#"{"debug":1,"k":2}"#))
        .unwrap();
    let echo = body_json(send(req).await).await;
    let sent: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["debug"], Value::Null);
    assert_eq!(sent["k"], 2);
}

#[tokio::test]
async fn json_array_at_the_root_is_forwarded_unchanged() {
    let (gw, _) = gateway(RequestTransformLayer::new(json_rules())).await;
    let body = r#"[ {"debug": true},  {"user": {"password": "x"}} ]"#;
    let req = Request::post(gw.url("/raw"))
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap();
    let res = send(req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_bytes(res).await, body.as_bytes());
}

#[tokio::test]
async fn non_json_and_non_utf8_bodies() {
    let (gw, hits) = gateway(RequestTransformLayer::new(json_rules())).await;
    let bytes: &'static [u8] = b"\xff\xfe{\"debug\":true}\x00\x80";
    // Not JSON by content type: forwarded byte for byte.
    for ct in ["text/plain", "application/octet-stream"] {
        let req = Request::post(gw.url("/raw"))
            .header("content-type", ct)
            .body(full(bytes))
            .unwrap();
        let res = send(req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_bytes(res).await, bytes);
    }
    let req = Request::post(gw.url("/raw")).body(full(bytes)).unwrap();
    assert_eq!(body_bytes(send(req).await).await, bytes);
    // Labelled JSON but not UTF-8: 400, not forwarded.
    let before = hits.load(Ordering::SeqCst);
    let req = Request::post(gw.url("/raw"))
        .header("content-type", "application/json")
        .body(full(bytes))
        .unwrap();
    assert_problem(send(req).await, 400, problem::BAD_REQUEST).await;
    assert_eq!(hits.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn invalid_json_is_400() {
    let (gw, hits) = gateway(RequestTransformLayer::new(json_rules())).await;
    for body in [r#"{"a": "#, "{'a': 1}", "nul", r#"{"a":1} trailing"#] {
        let req = Request::post(gw.url("/users"))
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap();
        let problem = assert_problem(send(req).await, 400, problem::BAD_REQUEST).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("the request body is not valid JSON"),
            "{detail}"
        );
    }
    // An empty JSON body is nothing to edit: forwarded.
    let req = Request::post(gw.url("/raw"))
        .header("content-type", "application/json")
        .body(empty())
        .unwrap();
    assert_eq!(send(req).await.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn over_limit_body_is_413_and_nothing_is_forwarded() {
    let (gw, hits) = gateway(RequestTransformLayer::new(json_rules())).await;
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048)).into_bytes();
    let big: &'static [u8] = big.leak();
    // With a Content-Length: refused before reading.
    let req = Request::post(gw.url("/users"))
        .header("content-type", "application/json")
        .body(full(big))
        .unwrap();
    let problem = assert_problem(send(req).await, 413, problem::PAYLOAD_TOO_LARGE).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("1024-byte limit")
    );
    // Chunked, no length: refused once the limit is passed.
    let req = Request::post(gw.url("/users"))
        .header("content-type", "application/json")
        .body(chunked(big.chunks(300).collect()))
        .unwrap();
    assert_problem(send(req).await, 413, problem::PAYLOAD_TOO_LARGE).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // Exactly at the limit is fine.
    let at = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1024 - 10));
    assert_eq!(at.len(), 1024);
    let req = Request::post(gw.url("/users"))
        .header("content-type", "application/json")
        .body(full(at))
        .unwrap();
    assert_eq!(send(req).await.status(), StatusCode::OK);
}

/// The upstream reads three chunks of the body, then answers; the client's
/// body never ends. The layer must not wait for the end of a body no rule
/// reads: not JSON, or JSON with no JSON rule.
#[tokio::test]
async fn endless_slow_body_streams_through() {
    let cases = [
        (json_rules(), "text/plain"),
        (
            RequestRules::builder()
                .set_header("x-a", "1")
                .build()
                .unwrap(),
            "application/json",
        ),
    ];
    for (rules, ct) in cases {
        let app = Router::new()
            .route(
                "/stream",
                post(|req: AxumRequest| async move {
                    let mut stream = req.into_body().into_data_stream();
                    let mut got = Vec::new();
                    for _ in 0..3 {
                        match stream.next().await {
                            Some(Ok(chunk)) => got.extend_from_slice(&chunk),
                            _ => break,
                        }
                    }
                    got
                }),
            )
            .layer(RequestTransformLayer::new(rules))
            .layer(MapRequestLayer::new(context));
        let gw = spawn_gateway(app).await;
        let endless = futures_util::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from("tick;"))),
                n + 1,
            ))
        });
        let req = Request::post(gw.url("/stream"))
            .header("content-type", ct)
            .body(BoxBody::new(StreamBody::new(endless)))
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), client().request(req))
            .await
            .unwrap_or_else(|_| panic!("{ct}: the layer waited for the end of the body"))
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"tick;tick;tick;", "{ct}");
    }
}

#[tokio::test]
async fn rule_sets_by_client_class() {
    let mobile = RequestRules::builder()
        .set_header("x-view", "minimal")
        .build()
        .unwrap();
    let web = RequestRules::builder()
        .set_header("x-view", "rich")
        .build()
        .unwrap();
    let default = RequestRules::builder()
        .set_header("x-view", "default")
        .build()
        .unwrap();
    let classes = Classifier::new()
        .header("x-client")
        .unwrap()
        .user_agent("mobile", "(?i)android|iphone")
        .unwrap()
        .user_agent("web", "(?i)mozilla")
        .unwrap();
    let selector = BySelector::by_class(classes)
        .class("mobile", mobile)
        .class("web", web)
        .default(default);
    let (gw, _) = gateway(RequestTransformLayer::by_class(selector)).await;
    for (headers, view) in [
        (vec![("x-client", "mobile")], "minimal"),
        (vec![("x-client", "WEB")], "rich"),
        (
            vec![("user-agent", "Mozilla/5.0 (iPhone; CPU OS 17)")],
            "minimal",
        ),
        (vec![("user-agent", "Mozilla/5.0 (X11; Linux)")], "rich"),
        (vec![("x-client", "web"), ("user-agent", "Android")], "rich"),
        (vec![("x-client", "tv")], "default"),
        (vec![], "default"),
    ] {
        let mut req = Request::get(gw.url("/c"));
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let echo = body_json(send(req.body(empty()).unwrap()).await).await;
        assert_eq!(header(&echo, "x-view"), [view], "{headers:?}");
    }
    // No default: a request of no class passes untouched.
    let only = BySelector::by_class(Classifier::new().header("x-client").unwrap()).class(
        "web",
        RequestRules::builder()
            .set_header("x-view", "rich")
            .build()
            .unwrap(),
    );
    let (gw, _) = gateway(RequestTransformLayer::by_class(only)).await;
    let echo = body_json(send(Request::get(gw.url("/c")).body(empty()).unwrap()).await).await;
    assert!(header(&echo, "x-view").is_empty());
}

/// The other two sources of a class: a closure of your own, tried first
/// here, and a claim of the verified identity.
#[tokio::test]
async fn rule_sets_by_closure_and_by_claim() {
    let view = |name: &str| {
        RequestRules::builder()
            .set_header("x-view", name)
            .build()
            .unwrap()
    };
    let classes = Classifier::new()
        .custom(|parts| {
            let query = parts.uri.query()?;
            query.strip_prefix("app=").map(str::to_owned)
        })
        .claim("tenant");
    let selector = BySelector::by_class(classes)
        .class("partner", view("partner"))
        .class("acme", view("tenant"))
        .default(view("default"));
    let (gw, _) = gateway(RequestTransformLayer::by_class(selector)).await;
    for (path, anonymous, expected) in [
        // The closure answers first, whatever the identity says.
        ("/c?app=partner", false, "partner"),
        ("/c?app=Partner", true, "partner"),
        // No answer, or an empty one, from the closure: the claim decides.
        ("/c", false, "tenant"),
        ("/c?app=", false, "tenant"),
        // Neither source gives a class.
        ("/c", true, "default"),
        ("/c?app=unknown", false, "default"),
    ] {
        let mut req = Request::get(gw.url(path));
        if anonymous {
            req = req.header("x-anonymous", "1");
        }
        let echo = body_json(send(req.body(empty()).unwrap()).await).await;
        assert_eq!(header(&echo, "x-view"), [expected], "{path} {anonymous}");
    }
}

#[tokio::test]
async fn bad_input_is_a_clean_4xx_or_a_pass_through() {
    let rules = RequestRules::builder()
        .set_header("x-q", "{query.q}")
        .set_header("x-copy", "{header.x-raw}")
        .rename_query("q", "query")
        .add_query("who", "{header.x-raw}")
        .rewrite_regex("^/p/(?P<rest>.*)$", "/{path.rest}")
        .build()
        .unwrap();
    let (gw, _) = gateway(RequestTransformLayer::new(rules)).await;
    // A query value that decodes to a control character cannot be a
    // header value: skipped, the request goes on.
    let echo = body_json(
        send(
            Request::get(gw.url("/x?q=a%0D%0Ab%00"))
                .body(empty())
                .unwrap(),
        )
        .await,
    )
    .await;
    assert!(header(&echo, "x-q").is_empty());
    assert_eq!(echo["uri"], "/x?query=a%0D%0Ab%00");
    // Non-ASCII header bytes: no value, skipped; the header itself goes on.
    let req = Request::get(gw.url("/x"))
        .header("x-raw", &b"\xff\xfe"[..])
        .body(empty())
        .unwrap();
    let echo = body_json(send(req).await).await;
    assert!(header(&echo, "x-copy").is_empty());
    assert_eq!(header(&echo, "x-raw").len(), 1);
    assert_eq!(echo["uri"], "/x");
    // A huge query string.
    let huge = format!("/x?q={}&{}", "v".repeat(8000), "k=v&".repeat(1500));
    let res = send(Request::get(gw.url(&huge)).body(empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let echo = body_json(res).await;
    assert!(echo["uri"].as_str().unwrap().starts_with("/x?query=vvv"));
    // Odd paths into a regex rewrite: valid ones pass, others are 400.
    for (path, status) in [
        ("/p/a%2F..%2Fb", 200),
        ("/p/./x", 400),
        ("/p/", 200),
        ("/p/%00", 200),
    ] {
        let res = send(Request::get(gw.url(path)).body(empty()).unwrap()).await;
        assert_eq!(res.status().as_u16(), status, "{path}");
    }
}

#[test]
fn config_deserializes_and_refuses_unknown_fields() {
    let config: RequestRulesConfig = serde_json::from_value(json!({
        "headers": [
            {"set": {"name": "x-user-id", "value": "{identity.subject}", "on_missing": "reject"}},
            {"remove": {"name": "cookie"}}
        ],
        "path": [{"prefix": {"from": "/api", "to": "/"}}],
        "query": [{"rename": {"from": "q", "to": "search"}}],
        "json": [{"add": {"pointer": "/a/b", "value": [1, 2]}}],
        "body_limit": 4096
    }))
    .unwrap();
    assert!(RequestRules::try_from(&config).is_ok());
    let unknown = serde_json::from_value::<RequestRulesConfig>(
        json!({"headers": [{"set": {"name": "x", "value": "y", "nope": 1}}]}),
    );
    assert!(unknown.is_err());
    assert!(serde_json::from_value::<RequestRulesConfig>(json!({"bodylimit": 1})).is_err());
}

#[test]
fn layer_fits_axum_and_is_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>(_: &T) {}
    let layer = RequestTransformLayer::new(json_rules());
    assert_traits(&layer);
    let router: Router = Router::new()
        .route("/", post(|| async { "ok" }))
        .layer(layer);
    assert_traits(&router);
}
