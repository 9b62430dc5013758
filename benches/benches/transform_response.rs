//! Response rules (issue #6): JSON filtering of 1 KiB and 100 KiB bodies
//! through the whole `ResponseTransform` service (read, filter, new
//! `Content-Length`, collect), in MB/s, with a deny-list of wildcard
//! paths (target: at least 300 MB/s on 100 KiB); the same work done with
//! `serde_json::Value` as a baseline; and the cost of a route whose rules
//! never touch the body against the same service without the layer, for
//! a 1 KiB response and for a 1 MiB one streamed in 64 frames (in MB/s:
//! what the layer adds per frame). The `headers_only` rows run the same
//! header rules through `ResponseTransformLayer::headers_only`, as a
//! gateway route does when no rule reads the body.
//!
//! Every service here answers at once with a full body, so a call
//! completes on its first poll and no runtime is measured.
//!
//! `cargo bench -p tollgate-benches --bench transform_response`
//!
//! Each iteration of a service row is one call of [`iteration`], which is
//! never inlined, so callgrind gives the instructions of exactly one
//! request: its inclusive cost divided by its number of calls (see
//! docs/benchmarks.md).

#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]

use std::{
    convert::Infallible,
    hint::black_box,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tollgate_transform::{ResponseRules, ResponseTransformLayer};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const DENY: [&str; 4] = [
    "/internal_id",
    "/debug_info",
    "/items/*/cost_price",
    "/items/*/meta/**/secret",
];

/// A JSON document of about `size` bytes: an order with items, each with
/// a cost price and a nested secret the deny-list removes.
fn document(size: usize) -> Bytes {
    let item = |i: usize| {
        json!({
            "id": i, "sku": format!("SKU-{i:06}"), "name": "Blue widget, large",
            "price": 1999, "cost_price": 1203, "qty": 3, "tags": ["a", "b"],
            "meta": {"warehouse": "north", "audit": {"secret": "s3cr3t", "by": "job-7"}},
        })
    };
    let mut items = Vec::new();
    loop {
        let doc = json!({
            "id": 42, "internal_id": "ord-9f8e", "status": "shipped",
            "debug_info": {"db": "orders-3", "ms": 12},
            "items": items,
        });
        let bytes = serde_json::to_vec(&doc).expect("serialise");
        if bytes.len() >= size {
            return Bytes::from(bytes);
        }
        items.push(item(items.len()));
    }
}

fn rules() -> ResponseRules {
    DENY.iter()
        .fold(ResponseRules::builder(), |b, path| b.deny(path))
        .build()
        .expect("rules")
}

fn upstream(
    body: Bytes,
    content_type: &'static str,
) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone {
    service_fn(move |_: Request<()>| {
        let body = body.clone();
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", content_type)
                    .header("content-length", body.len())
                    .header("server", "orders/1.0")
                    .body(Full::new(body))
                    .expect("response"),
            )
        }
    })
}

/// One call of a row: [`call`], never inlined. Setup calls `call`
/// itself, so its one-off calls (the 100 KiB check) stay out of this
/// function's instruction count.
#[inline(never)]
fn iteration<R, S, B>(svc: &S) -> R::Output
where
    R: Read,
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: ResBody,
{
    call::<R, S, B>(svc)
}

/// One call and its whole body, read by `R`, on the first poll.
#[inline(always)]
fn call<R, S, B>(svc: &S) -> R::Output
where
    R: Read,
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: ResBody,
{
    async {
        let res = svc.clone().oneshot(Request::new(())).await.expect("call");
        R::read(res.into_body()).await
    }
    .now_or_never()
    .expect("completes at once")
}

/// A response body a row can read.
trait ResBody: Body<Data = Bytes, Error: std::fmt::Debug> {}

impl<B: Body<Data = Bytes, Error: std::fmt::Debug>> ResBody for B {}

/// How a row reads the response body.
trait Read {
    type Output;

    async fn read<B: ResBody>(body: B) -> Self::Output;
}

/// The whole body as one `Bytes`.
struct Collect;

impl Read for Collect {
    type Output = Bytes;

    async fn read<B: ResBody>(body: B) -> Bytes {
        body.collect().await.expect("body").to_bytes()
    }
}

/// Frame by frame to the end, as a server writing the body would: the
/// data is counted, not copied.
struct Drain;

impl Read for Drain {
    type Output = usize;

    async fn read<B: ResBody>(body: B) -> usize {
        let mut body = pin!(body);
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("frame").into_data() {
                len += black_box(data).len();
            }
        }
        len
    }
}

/// The size of a streamed frame.
const FRAME: usize = 16 * 1024;
/// The number of frames of a streamed response: 1 MiB in all.
const FRAMES: usize = 64;

/// The streamed response's body: the frames of a list built once, given
/// one by one. A frame is a copy of a static `Bytes` (no allocation, no
/// reference count), so the body itself costs next to nothing per frame.
struct Frames {
    frames: Arc<[Bytes]>,
    next: usize,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = self.frames.get(self.next).cloned();
        self.next += 1;
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len()
    }

    fn size_hint(&self) -> SizeHint {
        let left = self.frames.get(self.next..).unwrap_or_default();
        SizeHint::with_exact(left.iter().map(|f| f.len() as u64).sum())
    }
}

/// 1 MiB as [`FRAMES`] static frames of [`FRAME`] bytes.
fn frames() -> Arc<[Bytes]> {
    let data: &'static [u8] = Box::leak(vec![b'x'; FRAME * FRAMES].into_boxed_slice());
    data.chunks(FRAME).map(Bytes::from_static).collect()
}

/// An upstream that answers a `text/plain` body of `frames`, streaming.
fn streaming_upstream(
    frames: Arc<[Bytes]>,
) -> impl Service<Request<()>, Response = Response<Frames>, Error = Infallible> + Clone {
    let len: usize = frames.iter().map(Bytes::len).sum();
    service_fn(move |_: Request<()>| {
        let body = Frames {
            frames: Arc::clone(&frames),
            next: 0,
        };
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "text/plain")
                    .header("content-length", len)
                    .header("server", "files/1.0")
                    .body(body)
                    .expect("response"),
            )
        }
    })
}

/// The baseline: parse into a `Value`, remove the same fields, serialise.
fn with_value(body: &[u8]) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(body).expect("JSON");
    if let Some(map) = doc.as_object_mut() {
        map.remove("internal_id");
        map.remove("debug_info");
        if let Some(Value::Array(items)) = map.get_mut("items") {
            for item in items {
                if let Some(item) = item.as_object_mut() {
                    item.remove("cost_price");
                    if let Some(meta) = item.get_mut("meta") {
                        strip_secret(meta);
                    }
                }
            }
        }
    }
    serde_json::to_vec(&doc).expect("serialise")
}

fn strip_secret(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("secret");
            map.values_mut().for_each(strip_secret);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_secret),
        _ => {}
    }
}

fn json_filter(c: &mut Criterion) {
    let mut group = c.benchmark_group("transform_response/json_filter");
    for (label, size) in [("1KiB", 1024), ("100KiB", 100 * 1024)] {
        let body = document(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        let svc = ServiceBuilder::new()
            .layer(ResponseTransformLayer::new(rules()))
            .service(upstream(body.clone(), "application/json"));
        let out = call::<Collect, _, _>(&svc);
        assert!(out.len() < body.len(), "the deny-list removed nothing");
        assert_eq!(
            serde_json::from_slice::<Value>(&out).expect("JSON"),
            serde_json::from_slice::<Value>(&with_value(&body)).expect("JSON"),
        );
        group.bench_function(format!("deny_wildcards_{label}"), |b| {
            b.iter(|| black_box(iteration::<Collect, _, _>(&svc)));
        });
        group.bench_function(format!("serde_json_value_baseline_{label}"), |b| {
            b.iter(|| black_box(with_value(black_box(&body))));
        });
    }
    group.finish();
}

fn pass_through(c: &mut Criterion) {
    let mut group = c.benchmark_group("transform_response/pass_through");
    let body = document(1024);
    let bare = upstream(body.clone(), "application/json");
    group.bench_function("without_layer", |b| {
        b.iter(|| black_box(iteration::<Collect, _, _>(&bare)))
    });
    // The counterpart of `body_rules_non_json`: the same `text/plain`
    // response without the layer.
    let bare_text = upstream(body.clone(), "text/plain");
    group.bench_function("without_layer_non_json", |b| {
        b.iter(|| black_box(iteration::<Collect, _, _>(&bare_text)));
    });
    let headers_only = ResponseRules::builder()
        .remove_server_headers()
        .set_header("cache-control", "no-store")
        .map_status(404, 410)
        .build()
        .expect("rules");
    let svc = ServiceBuilder::new()
        .layer(ResponseTransformLayer::new(headers_only.clone()))
        .service(bare.clone());
    group.bench_function("header_rules", |b| {
        b.iter(|| black_box(iteration::<Collect, _, _>(&svc)))
    });
    // The same rules as a route applies them (`Route::transform_response`):
    // no rule reads a body, so the layer leaves the body of its own type.
    let headers_layer = ResponseTransformLayer::new(headers_only.clone())
        .headers_only()
        .expect("no rule reads the body");
    let svc = ServiceBuilder::new()
        .layer(headers_layer.clone())
        .service(bare.clone());
    group.bench_function("headers_only", |b| {
        b.iter(|| black_box(iteration::<Collect, _, _>(&svc)))
    });
    // Body rules, but a response they never read (not JSON).
    let svc = ServiceBuilder::new()
        .layer(ResponseTransformLayer::new(rules()))
        .service(upstream(body, "text/plain"));
    group.bench_function("body_rules_non_json", |b| {
        b.iter(|| black_box(iteration::<Collect, _, _>(&svc)))
    });

    // The same three cases on a 1 MiB body in 64 frames: the layer should
    // add its fixed cost and nothing per frame.
    let frames = frames();
    let len: usize = frames.iter().map(Bytes::len).sum();
    group.throughput(Throughput::Bytes(len as u64));
    let bare = streaming_upstream(frames);
    assert_eq!(call::<Drain, _, _>(&bare), len);
    group.bench_function("stream_1MiB/without_layer", |b| {
        b.iter(|| black_box(iteration::<Drain, _, _>(&bare)));
    });
    let svc = ServiceBuilder::new()
        .layer(ResponseTransformLayer::new(headers_only))
        .service(bare.clone());
    assert_eq!(call::<Drain, _, _>(&svc), len);
    group.bench_function("stream_1MiB/header_rules", |b| {
        b.iter(|| black_box(iteration::<Drain, _, _>(&svc)));
    });
    let svc = ServiceBuilder::new()
        .layer(headers_layer)
        .service(bare.clone());
    assert_eq!(call::<Drain, _, _>(&svc), len);
    group.bench_function("stream_1MiB/headers_only", |b| {
        b.iter(|| black_box(iteration::<Drain, _, _>(&svc)));
    });
    let svc = ServiceBuilder::new()
        .layer(ResponseTransformLayer::new(rules()))
        .service(bare);
    assert_eq!(call::<Drain, _, _>(&svc), len);
    group.bench_function("stream_1MiB/body_rules_non_json", |b| {
        b.iter(|| black_box(iteration::<Drain, _, _>(&svc)));
    });
    group.finish();
}

criterion_group!(benches, json_filter, pass_through);
criterion_main!(benches);
