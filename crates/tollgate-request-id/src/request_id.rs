//! Request ids: generated (UUID v7), or accepted from the client when
//! configured and well-formed; put in the `RequestId` extension, forwarded
//! upstream and echoed on the response.
//!
//! The id generator, [`MakeUuidV7`], is a tower-http [`MakeRequestId`], so
//! it also plugs into tower-http's `SetRequestId`. The layer itself does
//! not stack tower-http's `SetRequestId` and `PropagateRequestId`: those
//! put tower-http's own `RequestId` into the request and the response
//! extensions, next to tollgate's, which costs two extension inserts and
//! two copies of the id per request for an extension nothing here reads.
//! [`RequestIds`] does the same work in one pass: it refuses an untrusted
//! or malformed incoming id, sets the header and the one
//! `tollgate_core::RequestId` extension the other layers read, and echoes
//! the id on the response.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tollgate_core::{ConfigError, ConfigErrorKind, RequestId};
use tower::{Layer, Service};
use tower_http::request_id::MakeRequestId;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Adds request ids. See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
#[must_use]
pub struct RequestIdLayer {
    header: HeaderName,
    trust_incoming: bool,
}

/// The plain-data configuration of a [`RequestIdLayer`];
/// `RequestIdLayer::try_from` checks the header name.
///
/// ```toml
/// header = "x-request-id"   # the default
/// trust_incoming = false    # the default
/// ```
///
/// ```
/// use tollgate_request_id::{RequestIdConfig, RequestIdLayer};
///
/// let mut config = RequestIdConfig::default();
/// config.header = "x-correlation-id".into();
/// let layer = RequestIdLayer::try_from(&config)?;
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct RequestIdConfig {
    /// The header carrying the id (default `x-request-id`).
    pub header: String,
    /// Keeps a well-formed incoming id instead of replacing it (default
    /// `false`); see [`RequestIdLayer::trust_incoming`].
    pub trust_incoming: bool,
}

/// The service of [`RequestIdLayer`].
///
/// It keeps a trusted, well-formed incoming id or replaces it with a new
/// UUID v7 (logging the refused one next to its replacement), sets the id
/// header for the upstream, inserts the [`RequestId`] extension and
/// echoes the id on the response.
#[derive(Clone, Debug)]
pub struct RequestIds<S> {
    inner: S,
    header: HeaderName,
    trust_incoming: bool,
}

/// Generates UUID v7 ids, which sort by time.
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeUuidV7;

pin_project! {
    /// The future of [`RequestIds`]: sets the id header on the response
    /// unless the inner service set one.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        header: HeaderName,
        id: Option<HeaderValue>,
    }
}

// === impl RequestIdLayer ===

impl RequestIdLayer {
    /// Ids in `X-Request-Id`; incoming ids are replaced.
    pub fn x_request_id() -> Self {
        Self::new(X_REQUEST_ID)
    }

    /// Ids in `header`; incoming ids are replaced.
    pub fn new(header: HeaderName) -> Self {
        Self {
            header,
            trust_incoming: false,
        }
    }

    /// Keeps a well-formed incoming id (at most [`MAX_ID_LEN`] characters
    /// of `A-Z a-z 0-9 - _ . : / + =`) instead of replacing it. Turn it on
    /// when the clients or the proxy in front are trusted to send ids.
    pub fn trust_incoming(mut self, trust: bool) -> Self {
        self.trust_incoming = trust;
        self
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIds {
            inner,
            header: self.header.clone(),
            trust_incoming: self.trust_incoming,
        }
    }
}

// === impl RequestIdConfig ===

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self {
            header: X_REQUEST_ID.as_str().to_owned(),
            trust_incoming: false,
        }
    }
}

impl TryFrom<&RequestIdConfig> for RequestIdLayer {
    type Error = ConfigError;

    fn try_from(config: &RequestIdConfig) -> Result<Self, ConfigError> {
        let header = HeaderName::try_from(config.header.as_str()).map_err(|_| {
            ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("header: {:?} is not a header name", config.header),
            )
        })?;
        Ok(Self::new(header).trust_incoming(config.trust_incoming))
    }
}

// === impl RequestIds ===

impl<S> RequestIds<S> {
    tollgate_core::inner_service_accessors!();
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for RequestIds<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        // The incoming id is only looked up when it may be kept.
        let kept = self
            .trust_incoming
            .then(|| req.headers().get(&self.header))
            .flatten()
            .filter(|id| is_valid_id(id.as_bytes()))
            .cloned();
        let id = match kept {
            Some(id) => id,
            None => {
                let id = MakeUuidV7::header_value();
                if let Some(refused) = req.headers_mut().insert(&self.header, id.clone()) {
                    log_refused(&refused, &id);
                }
                id
            }
        };
        req.extensions_mut().insert(RequestId::new(id.clone()));
        ResponseFuture {
            inner: self.inner.call(req),
            header: self.header.clone(),
            id: Some(id),
        }
    }
}

/// Logs an incoming id that was refused next to the one that replaced it,
/// escaped and cut to the accepted length, so a hostile id cannot forge
/// log lines.
fn log_refused(original: &HeaderValue, id: &HeaderValue) {
    let shown: String = String::from_utf8_lossy(original.as_bytes())
        .chars()
        .take(MAX_ID_LEN)
        .collect();
    tracing::info!(
        target: "tollgate::request_id",
        original = ?shown,
        request_id = %RequestId::new(id.clone()),
        "incoming request id replaced"
    );
}

/// `1..=128` characters of `A-Z a-z 0-9 - _ . : / + =`.
#[must_use]
pub fn is_valid_id(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

// === impl MakeUuidV7 ===

impl MakeUuidV7 {
    /// A new id as a header value.
    ///
    /// The text is written into a fixed buffer that the header value then
    /// shares: the copies for the request header, the extension and the
    /// response echo are reference counts, not allocations.
    fn header_value() -> HeaderValue {
        // One counter context per thread rather than uuid's process-wide
        // one behind a mutex (`Uuid::now_v7`): ids stay ordered within a
        // thread, and by millisecond across threads, which is what a
        // time-sorted id promises; no lock on the request path.
        thread_local! {
            static CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
        }
        static LOCAL: uuid::timestamp::context::ThreadLocalContext<uuid::ContextV7> =
            uuid::timestamp::context::ThreadLocalContext::new(&CONTEXT);
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid::Uuid::new_v7(uuid::Timestamp::now(&LOCAL))
            .hyphenated()
            .encode_lower(&mut buf);
        // Hex digits and dashes: always a valid header value.
        HeaderValue::from_maybe_shared(Bytes::from_owner(buf))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
    }
}

impl MakeRequestId for MakeUuidV7 {
    fn make_request_id<B>(
        &mut self,
        _request: &Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        Some(tower_http::request_id::RequestId::new(Self::header_value()))
    }
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take()
            && let http::header::Entry::Vacant(echo) = res.headers_mut().entry(&*this.header)
        {
            echo.insert(id);
        }
        Poll::Ready(Ok(res))
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt};

    async fn echo_id(req: Request<()>) -> Result<Response<String>, Infallible> {
        let id = req
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let header = req
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        assert_eq!(id, header, "extension and forwarded header agree");
        Ok(Response::new(id))
    }

    fn req(id: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri("/");
        if let Some(id) = id {
            b = b.header("x-request-id", id);
        }
        b.body(()).unwrap()
    }

    #[tokio::test]
    async fn generates_a_uuid_v7_and_echoes_it() {
        let svc = ServiceBuilder::new()
            .layer(RequestIdLayer::x_request_id())
            .service_fn(echo_id);
        let res = svc.clone().oneshot(req(None)).await.unwrap();
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let seen = res.into_body();
        assert_eq!(echoed, seen);
        let uuid = uuid::Uuid::parse_str(&seen).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        let other = svc.oneshot(req(None)).await.unwrap();
        assert_ne!(other.into_body(), seen, "a new id per request");
    }

    #[test]
    fn ids_sort_by_time_within_a_thread_and_never_repeat() {
        let batch = || {
            (0..2_000)
                .map(|_| MakeUuidV7::header_value().as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        let here = batch();
        assert!(here.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        let there = std::thread::spawn(batch).join().unwrap();
        let all: std::collections::HashSet<_> = here.iter().chain(&there).collect();
        assert_eq!(all.len(), 4_000, "no id repeats across threads");
    }

    #[tokio::test]
    async fn incoming_ids_are_replaced_unless_trusted_and_well_formed() {
        let untrusted = ServiceBuilder::new()
            .layer(RequestIdLayer::x_request_id())
            .service_fn(echo_id);
        let res = untrusted.oneshot(req(Some("client-id-1"))).await.unwrap();
        assert_ne!(res.into_body(), "client-id-1");

        let trusted = ServiceBuilder::new()
            .layer(RequestIdLayer::x_request_id().trust_incoming(true))
            .service_fn(echo_id);
        let res = trusted
            .clone()
            .oneshot(req(Some("client-id-1")))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-request-id"], "client-id-1");
        assert_eq!(res.into_body(), "client-id-1");

        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in [
            long.as_str(),
            "has space",
            "semi;colon",
            "quote\"",
            "new\u{7f}line",
        ] {
            let mut r = req(None);
            if let Ok(v) = HeaderValue::from_str(bad) {
                r.headers_mut().insert("x-request-id", v);
            }
            let res = trusted.clone().oneshot(r).await.unwrap();
            let id = res.into_body();
            assert_ne!(id, bad);
            assert!(
                uuid::Uuid::parse_str(&id).is_ok(),
                "{bad:?} replaced by {id}"
            );
        }
    }

    #[test]
    fn id_charset() {
        assert!(is_valid_id(b"abc-DEF_0.9:/+="));
        assert!(is_valid_id("a".repeat(MAX_ID_LEN).as_bytes()));
        assert!(!is_valid_id(b""));
        assert!(!is_valid_id("a".repeat(MAX_ID_LEN + 1).as_bytes()));
        assert!(!is_valid_id(b"a b"));
        assert!(!is_valid_id(b"a\xffb"));
    }

    #[test]
    fn fits_axum() {
        fn assert_layer<L: Clone + Send + Sync + 'static>(_: &L) {}
        let layer = RequestIdLayer::x_request_id();
        assert_layer(&layer);
        let _router: axum::Router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .layer(layer);
    }

    #[tokio::test]
    async fn a_config_builds_the_layer_it_describes() {
        let config = RequestIdConfig::default();
        assert_eq!(config.header, "x-request-id");
        assert!(!config.trust_incoming);
        let svc = ServiceBuilder::new()
            .layer(RequestIdLayer::try_from(&config).unwrap())
            .service_fn(echo_id);
        let res = svc.oneshot(req(Some("abc"))).await.unwrap();
        assert_ne!(res.body(), "abc", "not trusted by default");

        let mut config = RequestIdConfig {
            trust_incoming: true,
            ..RequestIdConfig::default()
        };
        let svc = ServiceBuilder::new()
            .layer(RequestIdLayer::try_from(&config).unwrap())
            .service_fn(echo_id);
        let res = svc.oneshot(req(Some("abc"))).await.unwrap();
        assert_eq!(res.body(), "abc");
        assert_eq!(res.headers()["x-request-id"], "abc");

        config.header = "bad header".into();
        let err = RequestIdLayer::try_from(&config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header: \"bad header\" is not a header name"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn config_deserialises_with_defaults_and_refuses_unknown_keys() {
        let parse = |json: &str| serde_json::from_str::<RequestIdConfig>(json);
        assert_eq!(parse("{}").unwrap(), RequestIdConfig::default());
        let config = parse(r#"{"header": "x-correlation-id", "trust_incoming": true}"#).unwrap();
        assert_eq!(config.header, "x-correlation-id");
        assert!(config.trust_incoming);
        let err = parse(r#"{"trust": true}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `trust`"), "{err}");
        assert!(parse(r#"{"trust_incoming": "yes"}"#).is_err());
    }
}
