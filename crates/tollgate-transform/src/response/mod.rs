//! Response rules: headers, status mapping and JSON body filtering.
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tollgate_transform::{ResponseRules, ResponseTransformLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let rules = ResponseRules::builder()
//!     .remove_server_headers()             // Server, X-Powered-By, …
//!     .map_status(404, 410)
//!     .deny("/internal_id")
//!     .deny("/debug_info")
//!     .deny("/items/*/cost_price")
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(ResponseTransformLayer::new(rules))
//!     .service_fn(|_req: Request<()>| async {
//!         let body = r#"{"id":1,"name":"Ada","internal_id":7,"debug_info":{"db":"x"}}"#;
//!         Ok::<_, std::convert::Infallible>(
//!             Response::builder()
//!                 .header("content-type", "application/json")
//!                 .header("server", "users/1.2")
//!                 .header("content-length", body.len())
//!                 .body(Full::new(bytes::Bytes::from(body)))
//!                 .unwrap(),
//!         )
//!     });
//! let res = svc.oneshot(Request::new(())).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! assert!(res.headers().get("server").is_none());
//! assert_eq!(res.headers()["content-length"], "21"); // corrected
//! let body = res.into_body().collect().await?.to_bytes();
//! assert_eq!(&body[..], br#"{"id":1,"name":"Ada"}"#);
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/transform.md` for the path syntax and how bodies,
//! compression and limits are handled.

mod body;
mod encoding;
mod filter;
mod headers;
mod json_path;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode,
    header::{
        ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
        IF_RANGE, RANGE, VARY,
    },
    response::Parts,
    uri::PathAndQuery,
};
use http_body::Body;
use pin_project_lite::pin_project;
use tollgate_core::{ConfigError, ConfigErrorKind, Problem, RequestId};
use tower::{Layer, Service};

pub use body::TransformedBody;
pub use headers::{HeadersFuture, ResponseHeaders, ResponseHeadersLayer};

use self::{
    encoding::{Accepted, DecodeError, Decoder, Encoding},
    filter::{Action, JsonFilter, Pattern},
    json_path::JsonPath,
};
use crate::{BySelector, scan::surely_absent};

/// The default limit of a body a rule reads: 1 MiB, decoded.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Headers [`ResponseRulesBuilder::remove_server_headers`] removes: they
/// name the upstream's software and version.
pub const SERVER_HEADERS: [&str; 4] = [
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
];

/// Headers a rule may not touch: they frame the message or say how the
/// body is encoded, which this layer manages itself.
const FRAMING_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// Headers that describe the exact bytes of a body, removed when the body
/// is rewritten (with `ETag` and `Accept-Ranges`).
const DIGEST_HEADERS: [&str; 4] = ["content-md5", "digest", "content-digest", "repr-digest"];

/// What to do with a body larger than the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum OnTooLarge {
    /// Answer 502 problem+json (`bad-gateway`).
    #[default]
    Reject,
    /// Send the body untouched: what was read, then the rest, streaming.
    PassThrough,
}

/// What to do with a body that is not valid JSON (or not UTF-8, or
/// nested deeper than 128 levels, or corrupt in its content coding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum OnMalformed {
    /// Answer 502 problem+json (`bad-gateway`): a deny-list fails closed.
    #[default]
    Reject,
    /// Send the body untouched.
    PassThrough,
}

// === config ===

/// The configuration of [`ResponseRules`]; `ResponseRules::try_from` runs
/// the same checks as [`ResponseRulesBuilder::build`], which fills one.
///
/// ```
/// use tollgate_transform::{ResponseRules, ResponseRulesConfig, StatusMapping};
///
/// let mut config = ResponseRulesConfig::default();
/// config.status.push(StatusMapping::new(404, 410));
/// config.body.deny.push("/debug_info".into());
/// let rules = ResponseRules::try_from(&config)?;
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ResponseRulesConfig {
    /// Header rules.
    pub headers: HeaderRulesConfig,
    /// Status mappings.
    pub status: Vec<StatusMapping>,
    /// JSON body rules.
    pub body: BodyRulesConfig,
}

/// Header rules of a [`ResponseRulesConfig`], applied in this order:
/// remove, rename, set, add.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct HeaderRulesConfig {
    /// Remove the [`SERVER_HEADERS`].
    pub remove_server_headers: bool,
    /// Headers to remove.
    pub remove: Vec<String>,
    /// Headers to rename (every value moves).
    pub rename: Vec<HeaderRename>,
    /// Headers to set, replacing any value.
    pub set: Vec<HeaderEntry>,
    /// Headers to add, beside any value.
    pub add: Vec<HeaderEntry>,
}

/// A header rename.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct HeaderRename {
    /// The upstream's name.
    pub from: String,
    /// The name the client sees.
    pub to: String,
}

impl HeaderRename {
    /// `from` becomes `to`.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
        }
    }
}

/// A header and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct HeaderEntry {
    /// The header name.
    pub name: String,
    /// The value.
    pub value: String,
}

impl HeaderEntry {
    /// `name: value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// An upstream status and the one the client sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct StatusMapping {
    /// The upstream's status.
    pub from: u16,
    /// The status the client sees.
    pub to: u16,
}

impl StatusMapping {
    /// `from` becomes `to`.
    pub fn new(from: u16, to: u16) -> Self {
        Self { from, to }
    }
}

/// JSON body rules of a [`ResponseRulesConfig`]. Paths are described in
/// `docs/transform.md`: `/a/b`, `*`, `**`, RFC 6901 escapes.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct BodyRulesConfig {
    /// Fields removed.
    pub deny: Vec<String>,
    /// When not empty, only these fields (and the objects and arrays on
    /// the way to them) are kept.
    pub allow: Vec<String>,
    /// Fields written under another name.
    pub rename: Vec<FieldRename>,
    /// Fields set to a literal JSON value.
    pub add: Vec<FieldAdd>,
    /// The largest body read, decoded, in bytes (default
    /// [`DEFAULT_BODY_LIMIT`]).
    pub limit: Option<usize>,
    /// What to do past the limit.
    pub on_too_large: OnTooLarge,
    /// What to do with a body that is not valid JSON.
    pub on_malformed: OnMalformed,
}

/// A field rename: the member at `path` is written as `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct FieldRename {
    /// The path of the member.
    pub path: String,
    /// Its new name (a name, not a path).
    pub to: String,
}

impl FieldRename {
    /// The member at `path` is written as `to`.
    pub fn new(path: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            to: to.into(),
        }
    }
}

/// An added field: the last token of `path` is set to `value` in every
/// object the rest of the path matches.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct FieldAdd {
    /// The path; its last token is a plain name.
    pub path: String,
    /// The value.
    pub value: serde_json::Value,
}

impl FieldAdd {
    /// Sets `path` to `value`.
    pub fn new(path: impl Into<String>, value: serde_json::Value) -> Self {
        Self {
            path: path.into(),
            value,
        }
    }
}

// === rules ===

/// A compiled set of response rules: build one with
/// [`ResponseRules::builder`] or from a [`ResponseRulesConfig`], and use it
/// with [`ResponseTransformLayer`]. See the [module docs](self) for an
/// example.
#[derive(Clone, Debug)]
#[must_use]
pub struct ResponseRules {
    inner: Arc<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    /// Whether a status or header rule exists (one test per response
    /// instead of five).
    head: bool,
    remove: Vec<HeaderName>,
    rename: Vec<(HeaderName, HeaderName)>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    status: Vec<(StatusCode, StatusCode)>,
    filter: JsonFilter,
    limit: usize,
    on_too_large: OnTooLarge,
    on_malformed: OnMalformed,
}

/// Builds [`ResponseRules`]; every check runs in [`build`](Self::build).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ResponseRulesBuilder {
    config: ResponseRulesConfig,
}

impl ResponseRules {
    /// A builder with no rules.
    pub fn builder() -> ResponseRulesBuilder {
        ResponseRulesBuilder::default()
    }

    /// Whether a rule reads the body.
    #[must_use]
    pub fn reads_body(&self) -> bool {
        !self.inner.filter.is_empty()
    }

    /// The body limit, in decoded bytes.
    #[must_use]
    pub fn body_limit(&self) -> usize {
        self.inner.limit
    }

    /// Applies the status and header rules.
    fn apply_head(&self, parts: &mut Parts) {
        self.map_status(&mut parts.status);
        self.apply_headers(&mut parts.headers);
    }

    /// Applies the status and header rules to `res` where it is: no move
    /// of its head.
    fn apply_in_place<B>(&self, res: &mut Response<B>) {
        self.map_status(res.status_mut());
        self.apply_headers(res.headers_mut());
    }

    /// Whether a status or header rule exists.
    fn has_head_rules(&self) -> bool {
        self.inner.head
    }

    fn map_status(&self, status: &mut StatusCode) {
        if let Some((_, to)) = self.inner.status.iter().find(|(from, _)| from == status) {
            *status = *to;
        }
    }

    fn apply_headers(&self, headers: &mut HeaderMap) {
        let rules = &self.inner;
        // A name a scan of a small map shows absent is not looked up:
        // most responses carry none of the server headers.
        for name in &rules.remove {
            if !surely_absent(headers, name) {
                headers.remove(name);
            }
        }
        for (from, to) in &rules.rename {
            if surely_absent(headers, from) {
                continue;
            }
            if let http::header::Entry::Occupied(entry) = headers.entry(from) {
                let (_, values) = entry.remove_entry_mult();
                let values: Vec<HeaderValue> = values.collect();
                for value in values {
                    headers.append(to, value);
                }
            }
        }
        for (name, value) in &rules.set {
            headers.insert(name, value.clone());
        }
        for (name, value) in &rules.add {
            headers.append(name, value.clone());
        }
    }
}

impl TryFrom<&ResponseRulesConfig> for ResponseRules {
    type Error = ConfigError;

    fn try_from(config: &ResponseRulesConfig) -> Result<Self, ConfigError> {
        let headers = &config.headers;
        let mut remove = Vec::new();
        if headers.remove_server_headers {
            remove.extend(SERVER_HEADERS.iter().map(|n| HeaderName::from_static(n)));
        }
        for name in &headers.remove {
            remove.push(rule_header_name(name)?);
        }
        let rename: Vec<(HeaderName, HeaderName)> = headers
            .rename
            .iter()
            .map(|r| Ok((rule_header_name(&r.from)?, rule_header_name(&r.to)?)))
            .collect::<Result<_, ConfigError>>()?;
        let entries = |list: &[HeaderEntry]| {
            list.iter()
                .map(|e| {
                    let value = HeaderValue::from_str(&e.value)
                        .map(crate::intern::header_value)
                        .map_err(|_| {
                            invalid(format!("bad value for response header {:?}", e.name))
                        })?;
                    Ok((rule_header_name(&e.name)?, value))
                })
                .collect::<Result<Vec<_>, ConfigError>>()
        };
        let set = entries(&headers.set)?;
        let add = entries(&headers.add)?;

        let mut status: Vec<(StatusCode, StatusCode)> = Vec::new();
        for m in &config.status {
            let code = |n: u16| {
                StatusCode::from_u16(n)
                    .ok()
                    .filter(|s| !s.is_informational())
                    .ok_or_else(|| invalid(format!("status mapping {n}: not a final status")))
            };
            let (from, to) = (code(m.from)?, code(m.to)?);
            if matches!(to, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
                return Err(invalid(format!(
                    "status mapping {from} -> {to}: a {to} response has no body, map to it upstream"
                )));
            }
            if status.iter().any(|(f, _)| *f == from) {
                return Err(ConfigError::new(
                    ConfigErrorKind::Duplicate,
                    format!("status {from} is mapped twice"),
                ));
            }
            status.push((from, to));
        }

        let body = &config.body;
        let mut patterns = Vec::new();
        for path in &body.deny {
            patterns.push(pattern(path, Action::Deny)?);
        }
        for path in &body.allow {
            patterns.push(pattern(path, Action::Allow)?);
        }
        for r in &body.rename {
            let to = json_string(&r.to);
            patterns.push(pattern(&r.path, Action::Rename(to))?);
        }
        for a in &body.add {
            let path = JsonPath::parse(&a.path)?;
            let Some(name) = path.last_name() else {
                return Err(invalid(format!(
                    "added field {:?}: the path must end with a name, not '*'",
                    a.path
                )));
            };
            let key = json_string(&String::from_utf8_lossy(name));
            let value = serde_json::to_vec(&a.value)
                .map_err(|e| invalid(format!("added field {:?}: {e}", a.path)))?;
            patterns.push(Pattern {
                path,
                action: Action::Add(key, value.into()),
            });
        }
        let limit = body.limit.unwrap_or(DEFAULT_BODY_LIMIT);
        if limit == 0 {
            return Err(invalid("the body limit must be at least 1 byte"));
        }
        let head = !(status.is_empty()
            && remove.is_empty()
            && rename.is_empty()
            && set.is_empty()
            && add.is_empty());
        Ok(Self {
            inner: Arc::new(Compiled {
                head,
                remove,
                rename,
                set,
                add,
                status,
                filter: JsonFilter::new(patterns),
                limit,
                on_too_large: body.on_too_large,
                on_malformed: body.on_malformed,
            }),
        })
    }
}

impl TryFrom<ResponseRulesConfig> for ResponseRules {
    type Error = ConfigError;

    fn try_from(config: ResponseRulesConfig) -> Result<Self, ConfigError> {
        Self::try_from(&config)
    }
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidValue, message)
}

fn rule_header_name(name: &str) -> Result<HeaderName, ConfigError> {
    let parsed = HeaderName::try_from(name)
        .map(crate::intern::header_name)
        .map_err(|_| invalid(format!("bad response header name {name:?}")))?;
    if FRAMING_HEADERS.contains(&parsed.as_str()) {
        return Err(invalid(format!(
            "response header {name:?} frames the message; rules cannot change it"
        )));
    }
    Ok(parsed)
}

fn pattern(path: &str, action: Action) -> Result<Pattern, ConfigError> {
    Ok(Pattern {
        path: JsonPath::parse(path)?,
        action,
    })
}

/// `s` as a JSON string literal, quotes included.
fn json_string(s: &str) -> Box<[u8]> {
    serde_json::Value::from(s).to_string().into_bytes().into()
}

// === impl ResponseRulesBuilder ===

impl ResponseRulesBuilder {
    /// Removes header `name`.
    pub fn remove_header(mut self, name: &str) -> Self {
        self.config.headers.remove.push(name.to_owned());
        self
    }

    /// Removes the headers that name the upstream's software:
    /// [`SERVER_HEADERS`] (`Server`, `X-Powered-By`, …).
    pub fn remove_server_headers(mut self) -> Self {
        self.config.headers.remove_server_headers = true;
        self
    }

    /// Renames header `from` to `to`, with all its values.
    pub fn rename_header(mut self, from: &str, to: &str) -> Self {
        self.config.headers.rename.push(HeaderRename::new(from, to));
        self
    }

    /// Sets header `name` to `value`, replacing any value.
    pub fn set_header(mut self, name: &str, value: &str) -> Self {
        self.config.headers.set.push(HeaderEntry::new(name, value));
        self
    }

    /// Adds `value` to header `name`, beside any value.
    pub fn add_header(mut self, name: &str, value: &str) -> Self {
        self.config.headers.add.push(HeaderEntry::new(name, value));
        self
    }

    /// Answers `to` where the upstream answered `from` (e.g. 404 → 410).
    pub fn map_status(mut self, from: u16, to: u16) -> Self {
        self.config.status.push(StatusMapping::new(from, to));
        self
    }

    /// Removes the JSON field(s) at `path`.
    pub fn deny(mut self, path: &str) -> Self {
        self.config.body.deny.push(path.to_owned());
        self
    }

    /// Keeps the JSON field(s) at `path`; once any path is allowed, fields
    /// no allowed path reaches are removed.
    pub fn allow(mut self, path: &str) -> Self {
        self.config.body.allow.push(path.to_owned());
        self
    }

    /// Writes the JSON member(s) at `path` under the name `to`.
    pub fn rename_field(mut self, path: &str, to: &str) -> Self {
        self.config.body.rename.push(FieldRename::new(path, to));
        self
    }

    /// Sets the JSON member at `path` to `value`, in every object the path
    /// without its last token matches.
    pub fn add_field(mut self, path: &str, value: serde_json::Value) -> Self {
        self.config.body.add.push(FieldAdd::new(path, value));
        self
    }

    /// The largest body read, in decoded bytes (default 1 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config.body.limit = Some(bytes);
        self
    }

    /// What to do with a body past the limit (default: 502).
    pub fn on_too_large(mut self, action: OnTooLarge) -> Self {
        self.config.body.on_too_large = action;
        self
    }

    /// What to do with a body that is not valid JSON (default: 502).
    pub fn on_malformed(mut self, action: OnMalformed) -> Self {
        self.config.body.on_malformed = action;
        self
    }

    /// The configuration built so far.
    #[must_use]
    pub fn config(&self) -> &ResponseRulesConfig {
        &self.config
    }

    /// Checks and compiles the rules.
    ///
    /// # Errors
    ///
    /// A bad header name or value, a rule on a framing header
    /// (`Content-Length`, `Transfer-Encoding`, `Content-Encoding`, …), a
    /// status mapping to 1xx, 204 or 304 or mapping a status twice, a bad
    /// path, an added field whose path ends in a wildcard, a zero limit.
    pub fn build(self) -> Result<ResponseRules, ConfigError> {
        ResponseRules::try_from(&self.config)
    }
}

// === layer ===

/// Applies [`ResponseRules`] to the responses of the inner service: one
/// set for every request, or one per client class (chosen from the
/// request). See the [module docs](self) for an example.
///
/// - Status and header rules apply to every response but the layer's own
///   problems.
/// - A body is read only when a JSON rule exists, the response is JSON
///   (`application/json` or `*+json`), in identity, gzip, br or zstd, and
///   may have a body (not HEAD, 204 or 304). Everything else streams.
/// - On routes with JSON rules, `Range` and `If-Range` are removed from
///   requests: a partial body cannot be filtered.
#[derive(Clone, Debug)]
#[must_use]
pub struct ResponseTransformLayer {
    rules: Arc<BySelector<ResponseRules>>,
}

impl ResponseTransformLayer {
    /// The same rules for every response.
    pub fn new(rules: ResponseRules) -> Self {
        Self::by_class(BySelector::always(rules))
    }

    /// Rules by client class; a request of no class with no default gets
    /// its response untouched.
    pub fn by_class(rules: BySelector<ResponseRules>) -> Self {
        Self {
            rules: Arc::new(rules),
        }
    }
}

impl<S> Layer<S> for ResponseTransformLayer {
    type Service = ResponseTransform<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseTransform {
            inner,
            rules: Arc::clone(&self.rules),
        }
    }
}

/// The service of [`ResponseTransformLayer`].
#[derive(Clone, Debug)]
pub struct ResponseTransform<S> {
    inner: S,
    rules: Arc<BySelector<ResponseRules>>,
}

impl<S> ResponseTransform<S> {
    /// A [`ResponseTransformLayer`] with `rules`.
    pub fn layer(rules: ResponseRules) -> ResponseTransformLayer {
        ResponseTransformLayer::new(rules)
    }

    tollgate_core::inner_service_accessors!();
}

/// What a call keeps of its request for the response.
struct CallCtx {
    rules: Arc<ResponseRules>,
    /// Set when a rule may read the body of this request's response.
    body: Option<BodyCtx>,
}

// === impl CallCtx ===

impl CallCtx {
    /// Whether a body rule reads `res`: there are body rules for this
    /// request, and the response may have a body and says it is JSON.
    fn reads<B>(&self, res: &Response<B>) -> bool {
        self.body.is_some() && may_have_body(res.status()) && is_json(res.headers())
    }
}

/// What a body rule needs from the request, kept cheaply (reference
/// counts, no parsing) because most responses never need it: the
/// `Accept-Encoding` values are parsed only when a body is re-encoded.
/// It lives in every future of a route with body rules, so it holds the
/// path alone rather than the whole URI (40 bytes, not 88).
struct BodyCtx {
    /// All `Accept-Encoding` fields as one list (joined only when the
    /// client sent several, which RFC 9110 makes equivalent).
    accept_encoding: Option<HeaderValue>,
    request_id: Option<RequestId>,
    /// The request's path and query; `None` when the target has no path
    /// (authority form).
    path: Option<PathAndQuery>,
}

// === impl BodyCtx ===

impl BodyCtx {
    /// Keeps what a body rule may need, and removes `Range` and `If-Range`
    /// from the request: a partial body cannot be filtered, so the whole
    /// one is asked for.
    fn take<B>(req: &mut Request<B>) -> Self {
        let headers = req.headers_mut();
        // One pass over the names instead of three hash lookups: most
        // requests carry none of them, and comparing a standard name is
        // one byte while hashing it runs FNV over sixteen (two enum
        // discriminants).
        let (mut ranges, mut accept) = (false, false);
        for name in headers.keys() {
            ranges |= *name == RANGE || *name == IF_RANGE;
            accept |= *name == ACCEPT_ENCODING;
        }
        if ranges {
            headers.remove(RANGE);
            headers.remove(IF_RANGE);
        }
        let accept_encoding = accept
            .then(|| joined(&headers.get_all(ACCEPT_ENCODING)))
            .flatten();
        let uri = req.uri();
        Self {
            accept_encoding,
            request_id: req.extensions().get::<RequestId>().cloned(),
            path: (!uri.path().is_empty())
                .then(|| uri.path_and_query().cloned())
                .flatten(),
        }
    }

    /// The request's path, as `Uri::path` gives it.
    fn path(&self) -> &str {
        self.path.as_ref().map_or("", PathAndQuery::path)
    }
}

/// The values of a list-based field as one value.
fn joined(values: &http::header::GetAll<'_, HeaderValue>) -> Option<HeaderValue> {
    let mut iter = values.iter();
    let first = iter.next()?;
    let Some(second) = iter.next() else {
        return Some(first.clone());
    };
    let mut list = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(iter) {
        list.extend_from_slice(b", ");
        list.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&list).ok()
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ResponseTransform<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<TransformedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.rules.with_rules(req, |rules, mut req| {
            let ctx = rules.map(|rules| CallCtx {
                rules: Arc::clone(rules),
                body: (rules.reads_body() && req.method() != Method::HEAD)
                    .then(|| BodyCtx::take(&mut req)),
            });
            let future = self.inner.call(req);
            ResponseFuture {
                state: State::Waiting { future, ctx },
            }
        })
    }
}

// === future ===

pin_project! {
    /// The response future of [`ResponseTransform`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Waiting { #[pin] future: F, ctx: Option<CallCtx> },
        Reading { read: Option<Box<Reading<B>>> },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<TransformedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Waiting { future, ctx } => {
                    let res = ready!(future.poll(cx))?;
                    // A response no body rule reads, most of them, is
                    // decided here, without moving the context out or the
                    // response through `start`: each move of either is a
                    // `memcpy`.
                    if !ctx.as_ref().is_some_and(|ctx| ctx.reads(&res)) {
                        let rules = ctx.as_ref().map(|ctx| &*ctx.rules);
                        return Poll::Ready(Ok(stream(rules, res)));
                    }
                    // `reads` holds: there is a context with a body part.
                    let Some(CallCtx {
                        rules,
                        body: Some(body_ctx),
                    }) = ctx.take()
                    else {
                        return Poll::Ready(Ok(stream(None, res)));
                    };
                    match start(rules, body_ctx, res) {
                        Ok(res) => return Poll::Ready(Ok(res)),
                        Err(read) => state.set(State::Reading { read: Some(read) }),
                    }
                }
                StateProj::Reading { read } => {
                    let Some(reading) = read.as_mut() else {
                        // Polled after completion: nothing sensible to give.
                        return Poll::Pending;
                    };
                    let end = ready!(reading.poll(cx));
                    let Some(reading) = read.take() else {
                        return Poll::Pending;
                    };
                    return Poll::Ready(Ok(reading.finish(end)));
                }
            }
        }
    }
}

/// Starts on a response a body rule reads ([`CallCtx::reads`]): done now
/// (`Ok`), or its body read first.
fn start<B>(
    rules: Arc<ResponseRules>,
    body_ctx: BodyCtx,
    res: Response<B>,
) -> Result<Response<TransformedBody<B>>, Box<Reading<B>>>
where
    B: Body<Data = Bytes>,
{
    let (mut parts, body) = res.into_parts();
    let Some(encoding) = Encoding::from_header(parts.headers.get(CONTENT_ENCODING)) else {
        tracing::warn!(
            content_encoding = ?parts.headers.get(CONTENT_ENCODING),
            "response body in an unknown content coding passes through untouched"
        );
        rules.apply_head(&mut parts);
        return Ok(Response::from_parts(parts, TransformedBody::stream(body)));
    };
    let limit = rules.inner.limit;
    let mut reading = Reading {
        rules,
        ctx: body_ctx,
        parts,
        body: Box::pin(body),
        raw: Vec::new(),
        raw_len: 0,
        decoder: None,
        encoding,
        trailers: None,
    };
    // A declared length past the limit is known too large without reading.
    if declared_length(&reading.parts.headers).is_some_and(|len| len > limit as u64) {
        return Ok(Box::new(reading).finish(End::TooLarge));
    }
    match Decoder::new(encoding, limit) {
        Ok(decoder) => reading.decoder = decoder,
        Err(_) => return Ok(Box::new(reading).finish(End::Corrupt)),
    }
    Err(Box::new(reading))
}

/// The response with the status and header rules applied, if any, its
/// body streaming. A response no body rule reads is decided on the
/// response in place: no move of its head, no allocation.
fn stream<B>(rules: Option<&ResponseRules>, mut res: Response<B>) -> Response<TransformedBody<B>> {
    if let Some(rules) = rules.filter(|rules| rules.has_head_rules()) {
        rules.apply_in_place(&mut res);
    }
    res.map(TransformedBody::stream)
}

fn may_have_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// `application/json` or `<type>/<anything>+json`, parameters aside.
///
/// Byte by byte rather than through `str` searches: every response of a
/// route with body rules asks, and most answers are no. Only a yes checks
/// the whole value is what `HeaderValue::to_str` accepts (visible ASCII
/// and tabs); a value it refuses is not JSON.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = content_type(headers) else {
        return false;
    };
    let bytes = value.as_bytes();
    let mime = match bytes.iter().position(|&b| b == b';') {
        Some(end) => &bytes[..end],
        None => bytes,
    }
    .trim_ascii();
    // Both JSON forms end in `json`: most other types stop here.
    if !(mime.len() > 4 && mime[mime.len() - 4..].eq_ignore_ascii_case(b"json")) {
        return false;
    }
    let Some(slash) = mime.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (kind, subtype) = (&mime[..slash], &mime[slash + 1..]);
    let json = (kind.eq_ignore_ascii_case(b"application") && subtype.eq_ignore_ascii_case(b"json"))
        || (subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json"));
    json && bytes.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
}

/// The first `Content-Type` value, as `HeaderMap::get` gives it.
///
/// A response with few names is scanned instead: `get` hashes the name
/// (FNV over nine bytes for a standard one) and probes, about 110
/// instructions, while a step of the scan is about 15 and most responses
/// name their type among the first few headers. Past
/// [`SCAN_NAMES`](crate::scan::SCAN_NAMES) names the hash lookup is the
/// cheaper bet.
fn content_type(headers: &HeaderMap) -> Option<&HeaderValue> {
    crate::scan::first_value(headers, &CONTENT_TYPE)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How reading a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The whole body was read.
    Complete,
    /// The body (raw or decoded) grew past the limit.
    TooLarge,
    /// The content coding is corrupt.
    Corrupt,
    /// The upstream body failed.
    Failed,
}

/// A body being read for a rule.
struct Reading<B> {
    rules: Arc<ResponseRules>,
    ctx: BodyCtx,
    parts: Parts,
    body: Pin<Box<B>>,
    /// What was read, as received (kept to pass the body through).
    raw: Vec<Bytes>,
    raw_len: usize,
    decoder: Option<Decoder>,
    encoding: Encoding,
    trailers: Option<HeaderMap>,
}

impl<B> Reading<B>
where
    B: Body<Data = Bytes>,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let limit = self.rules.inner.limit;
        loop {
            let Some(frame) = ready!(self.body.as_mut().poll_frame(cx)) else {
                return Poll::Ready(End::Complete);
            };
            let Ok(frame) = frame else {
                return Poll::Ready(End::Failed);
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.trailers = Some(trailers);
                    }
                    continue;
                }
            };
            // Kept before any check, so a pass-through replays it.
            self.raw_len = self.raw_len.saturating_add(data.len());
            let decoded = self.decoder.as_mut().map(|d| d.write(&data));
            self.raw.push(data);
            if self.raw_len > limit {
                return Poll::Ready(End::TooLarge);
            }
            match decoded {
                Some(Err(DecodeError::TooLarge)) => return Poll::Ready(End::TooLarge),
                Some(Err(DecodeError::Corrupt)) => return Poll::Ready(End::Corrupt),
                _ => {}
            }
        }
    }

    /// The response, once reading has ended.
    fn finish(self: Box<Self>, end: End) -> Response<TransformedBody<B>> {
        let end = match end {
            End::Complete => return self.complete(),
            other => other,
        };
        let give_up = match end {
            End::TooLarge => self.rules.inner.on_too_large == OnTooLarge::PassThrough,
            End::Corrupt => self.rules.inner.on_malformed == OnMalformed::PassThrough,
            End::Complete | End::Failed => false,
        };
        if give_up {
            return (*self).pass_through(true);
        }
        let detail = match end {
            End::TooLarge => format!(
                "the upstream response body is larger than the limit of {} bytes",
                self.rules.inner.limit
            ),
            End::Failed => "the upstream response body failed".to_owned(),
            End::Corrupt | End::Complete => {
                "the upstream response body is not valid in its content encoding".to_owned()
            }
        };
        (*self).reject(detail)
    }

    fn complete(mut self: Box<Self>) -> Response<TransformedBody<B>> {
        let decoded = match self.decoder.take() {
            Some(decoder) => match decoder.finish() {
                Ok(decoded) => Bytes::from(decoded),
                Err(DecodeError::TooLarge) => return self.finish(End::TooLarge),
                Err(DecodeError::Corrupt) => return self.finish(End::Corrupt),
            },
            None => concat(&self.raw, self.raw_len),
        };
        if decoded.is_empty() {
            return (*self).pass_through(false);
        }
        match self.rules.inner.filter.apply(&decoded) {
            Ok(None) => (*self).pass_through(false),
            Ok(Some(filtered)) => (*self).rewritten(filtered),
            Err(_) if self.rules.inner.on_malformed == OnMalformed::PassThrough => {
                (*self).pass_through(false)
            }
            Err(_) => (*self).reject("the upstream response body is not valid JSON".to_owned()),
        }
    }

    /// The body as received: what was read, then (`rest`) the remainder.
    fn pass_through(mut self, rest: bool) -> Response<TransformedBody<B>> {
        self.rules.apply_head(&mut self.parts);
        let rest = rest.then_some(self.body);
        Response::from_parts(
            self.parts,
            TransformedBody::replay(self.raw, self.trailers, rest),
        )
    }

    fn rewritten(mut self, filtered: Vec<u8>) -> Response<TransformedBody<B>> {
        let headers = &mut self.parts.headers;
        let mut body = filtered;
        if self.encoding != Encoding::Identity {
            let encoded = Accepted::from_values(self.ctx.accept_encoding.as_ref())
                .accepts(self.encoding)
                .then(|| self.encoding.encode(&body).ok())
                .flatten();
            match encoded {
                Some(encoded) => body = encoded,
                None => {
                    headers.remove(CONTENT_ENCODING);
                }
            }
            add_vary_accept_encoding(headers);
        }
        headers.remove(ETAG);
        headers.remove(ACCEPT_RANGES);
        for name in DIGEST_HEADERS {
            headers.remove(name);
        }
        if headers.contains_key(CONTENT_LENGTH) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        self.rules.apply_head(&mut self.parts);
        Response::from_parts(
            self.parts,
            TransformedBody::full(Bytes::from(body), self.trailers),
        )
    }

    fn reject(self, detail: String) -> Response<TransformedBody<B>> {
        let problem = Problem::bad_gateway()
            .detail(detail)
            .instance(self.ctx.path())
            .request_id(self.ctx.request_id.as_ref());
        problem_response(problem)
    }
}

/// A problem as a response with this layer's body.
fn problem_response<B>(problem: Problem) -> Response<TransformedBody<B>> {
    let body = serde_json::to_vec(&problem.to_json()).unwrap_or_default();
    let (parts, _) = problem.into_response::<B>().into_parts();
    Response::from_parts(parts, TransformedBody::full(Bytes::from(body), None))
}

fn concat(chunks: &[Bytes], len: usize) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut buf = BytesMut::with_capacity(len);
            for chunk in many {
                buf.extend_from_slice(chunk);
            }
            buf.freeze()
        }
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it (or `*`) is there.
fn add_vary_accept_encoding(headers: &mut HeaderMap) {
    let present = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.eq_ignore_ascii_case("accept-encoding")
        });
    if !present {
        headers.append(VARY, HeaderValue::from_static("accept-encoding"));
    }
}

impl<B> TransformedBody<B> {
    #[cfg(test)]
    fn is_stream(&self) -> bool {
        format!("{self:?}") == "TransformedBody::Stream"
    }
}

#[cfg(test)]
mod tests;
