//! Response compression for a route: tower-http's `CompressionLayer`
//! (gzip, brotli, zstd, deflate, streamed, chosen by `Accept-Encoding`),
//! with the rules an intermediary owes the representation: compressible
//! media types only, `Cache-Control: no-transform` respected, and a strong
//! `ETag` made weak when the body is re-encoded (RFC 9110, 8.8.3 and
//! 7.7), as nginx's `gzip` and Envoy's compressor do.

use std::task::{Context, Poll};

use axum::body::Body;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode,
    header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG},
};
use tollgate_core::{ConfigError, ConfigErrorKind};
use tower::{Layer, Service};
use tower_http::{
    CompressionLevel,
    compression::{
        CompressionBody, CompressionLayer,
        predicate::{Predicate, SizeAbove},
    },
};

/// The smallest body compressed by default, in bytes: below it the
/// encoding's own overhead eats the gain.
pub const DEFAULT_MIN_COMPRESS_SIZE: u64 = 256;

/// The media types compressed by default: text, JSON, XML, JavaScript and
/// SVG (a type matches an entry equal to it or, for an entry ending in
/// `/`, starting with it; `+json` and `+xml` suffixes count as JSON and
/// XML). `text/event-stream` is never compressed: a stream of events
/// would wait in the encoder.
pub const DEFAULT_COMPRESSIBLE_TYPES: &[&str] = &[
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "image/svg+xml",
];

/// An encoding [`Compression`] may answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Encoding {
    /// `gzip`.
    Gzip,
    /// `br` (brotli).
    Br,
    /// `zstd`.
    Zstd,
    /// `deflate`.
    Deflate,
}

/// How hard to compress; see [`Compression::level`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Level {
    /// Least CPU, larger bodies.
    Fastest,
    /// Each encoding's default (gzip 6 in tower-http's encoder, brotli 4,
    /// zstd 3).
    #[default]
    Default,
    /// Smallest bodies, most CPU: gzip and deflate 9, brotli 11, zstd 19
    /// (the highest of zstd's regular levels; tower-http's own "best" is
    /// 22, an "ultra" level that took about 600 MB and 50 s for one
    /// 10 MB answer). Brotli 11 and zstd 19 each encode several hundred
    /// times slower than their defaults, and any client that asks for
    /// `br` or `zstd` chooses them; keep `Best` off public routes, or
    /// leave [`Encoding::Br`] and [`Encoding::Zstd`] out with it.
    Best,
}

/// Compresses a route's responses for clients that ask for it
/// (`Accept-Encoding`), with tower-http's [`CompressionLayer`]; pass it to
/// [`Route::compression`](crate::Route::compression). The body is encoded
/// as it streams, never buffered whole.
///
/// A response is compressed when:
///
/// - the client accepts one of the [`encodings`](Self::encodings) (all
///   four by default; the client's `q` values choose);
/// - it is not encoded already (`Content-Encoding`), not a range (`206`
///   with `Content-Range`), and has no `Cache-Control: no-transform`;
/// - its `Content-Type` is in [`content_types`](Self::content_types)
///   ([`DEFAULT_COMPRESSIBLE_TYPES`]), never `text/event-stream`;
/// - its size, when known, is at least [`min_size`](Self::min_size)
///   ([`DEFAULT_MIN_COMPRESS_SIZE`]); for `HEAD`, the `Content-Length`
///   `GET` would have, so both get the same headers;
/// - it has content: not a `1xx`, `204` or `304`.
///
/// A compressed response loses `Content-Length` and `Accept-Ranges`,
/// gains `Vary: Accept-Encoding`, and a strong `ETag` becomes weak
/// (`W/"…"`): the compressed bytes are another representation.
///
/// ```
/// use tollgate::{Route, compression::{Compression, Encoding, Level}};
///
/// let route = Route::prefix("/api/users").to("users").compression(
///     Compression::new()
///         .encodings([Encoding::Zstd, Encoding::Br, Encoding::Gzip])
///         .min_size(1024)
///         .level(Level::Fastest),
/// );
/// # let _ = route;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[must_use]
pub struct Compression {
    encodings: Vec<Encoding>,
    min_size: u64,
    level: Level,
    content_types: Vec<String>,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            encodings: vec![
                Encoding::Zstd,
                Encoding::Br,
                Encoding::Gzip,
                Encoding::Deflate,
            ],
            min_size: DEFAULT_MIN_COMPRESS_SIZE,
            level: Level::Default,
            content_types: DEFAULT_COMPRESSIBLE_TYPES
                .iter()
                .map(|&t| t.to_owned())
                .collect(),
        }
    }
}

// === impl Compression ===

impl Compression {
    /// Every encoding, bodies of 256 bytes and more, the default level,
    /// the default media types.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encodings offered; the client's `Accept-Encoding` chooses among
    /// them.
    pub fn encodings(mut self, encodings: impl IntoIterator<Item = Encoding>) -> Self {
        self.encodings = encodings.into_iter().collect();
        self
    }

    /// The smallest body compressed, in bytes (when the size is known from
    /// `Content-Length` or the body; a streamed body of unknown size is
    /// compressed).
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// How hard to compress.
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// The media types compressed: `"application/json"` matches that type
    /// (and `application/…+json` ones), `"text/"` every `text/` type.
    pub fn content_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.content_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Checks the settings: at least one encoding and one media type.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] of kind `InvalidValue` saying what is missing.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.encodings.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "compression: no encoding is given",
            ));
        }
        if self.content_types.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "compression: no content type is given",
            ));
        }
        Ok(())
    }

    fn compression_layer(&self) -> CompressionLayer<Compressible> {
        let on = |e| self.encodings.contains(&e);
        CompressionLayer::new()
            .gzip(on(Encoding::Gzip))
            .br(on(Encoding::Br))
            .zstd(on(Encoding::Zstd))
            .deflate(on(Encoding::Deflate))
            .quality(quality(self.level))
            .compress_when(Compressible {
                min_size: self.min_size,
                types: self
                    .content_types
                    .iter()
                    .map(|t| t.to_ascii_lowercase())
                    .collect(),
            })
    }
}

/// tower-http's level for `level`. One level serves every encoding, each
/// clamping it to its own range: 19 is gzip's and deflate's 9, brotli's
/// 11 and zstd's 19, never zstd's "ultra" levels 20 to 22 (tower-http's
/// `Best`), whose memory zstd's own command line refuses without
/// `--ultra`.
fn quality(level: Level) -> CompressionLevel {
    match level {
        Level::Fastest => CompressionLevel::Fastest,
        Level::Default => CompressionLevel::Default,
        Level::Best => CompressionLevel::Precise(BEST_LEVEL),
    }
}

/// The level of [`Level::Best`]: zstd's highest regular level, over
/// every other encoding's highest.
const BEST_LEVEL: i32 = 19;

/// Whether a response may be compressed: [`Compression`]'s rules past
/// those tower-http applies itself (already encoded, ranges).
#[derive(Clone, Debug)]
pub struct Compressible {
    min_size: u64,
    types: std::sync::Arc<[String]>,
}

impl Predicate for Compressible {
    fn should_compress<B>(&self, response: &Response<B>) -> bool
    where
        B: http_body::Body,
    {
        let status = response.status();
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            // No content to encode.
            return false;
        }
        // The answer to `HEAD` has no body and the `Content-Length` of
        // `GET`'s: that decides, so both get the same headers.
        let head = response
            .extensions()
            .get::<Inside>()
            .is_some_and(|inside| inside.head);
        let big_enough = if head {
            response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_none_or(|len| len >= self.min_size)
        } else {
            SizeAbove::new(self.min_size).should_compress(response)
        };
        compressible_type(&self.types, response.headers())
            && !no_transform(response.headers())
            && big_enough
    }
}

/// Whether the response's media type is one of `types` (lower case), and
/// not an event stream.
fn compressible_type(types: &[String], headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "text/event-stream" {
        return false;
    }
    let suffix_of = |base: &str| -> Option<&'static str> {
        match base {
            "application/json" => Some("+json"),
            "application/xml" => Some("+xml"),
            _ => None,
        }
    };
    types.iter().any(|t| {
        if t.ends_with('/') {
            essence.starts_with(t.as_str())
        } else {
            essence == *t
                || suffix_of(t)
                    .is_some_and(|s| essence.starts_with("application/") && essence.ends_with(s))
        }
    })
}

/// `Cache-Control: no-transform` (RFC 9111, 5.2.2.6): an intermediary must
/// not change the content.
fn no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
}

impl<S> Layer<S> for Compression {
    type Service = CompressionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CompressionService {
            inner: self.compression_layer().layer(Marked { inner }),
        }
    }
}

/// The service of [`Compression`].
#[derive(Clone)]
pub struct CompressionService<S> {
    inner: tower_http::compression::Compression<Marked<S>, Compressible>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CompressionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressionService").finish_non_exhaustive()
    }
}

/// Notes, on each response from inside, what the outside needs to undo
/// or keep: its status and whether it came encoded.
#[derive(Clone, Debug)]
pub struct Marked<S> {
    inner: S,
}

/// What the response was like before tower-http saw it.
#[derive(Clone, Copy, Debug)]
struct Inside {
    /// Its status: tower-http turns any answer into a `406` when the
    /// client refuses `identity` and every encoding offered.
    status: StatusCode,
    /// It came with a `Content-Encoding` of its own.
    encoded: bool,
    /// It answers a `HEAD` request.
    head: bool,
}

impl<S> Service<Request<Body>> for Marked<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = futures_util::future::MapOk<S::Future, fn(Response<Body>) -> Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        use futures_util::TryFutureExt;
        let mark: fn(_) -> _ = if req.method() == Method::HEAD {
            mark_head
        } else {
            mark
        };
        self.inner.call(req).map_ok(mark)
    }
}

fn mark(res: Response<Body>) -> Response<Body> {
    mark_inside(res, false)
}

fn mark_head(res: Response<Body>) -> Response<Body> {
    mark_inside(res, true)
}

fn mark_inside(mut res: Response<Body>, head: bool) -> Response<Body> {
    let inside = Inside {
        status: res.status(),
        encoded: res.headers().contains_key(CONTENT_ENCODING),
        head,
    };
    res.extensions_mut().insert(inside);
    res
}

impl<S> Service<Request<Body>> for CompressionService<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = futures_util::future::MapOk<
        tower_http::compression::ResponseFuture<
            futures_util::future::MapOk<S::Future, fn(Response<Body>) -> Response<Body>>,
            Compressible,
        >,
        fn(Response<CompressionBody<Body>>) -> Response<Body>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        use futures_util::TryFutureExt;
        self.inner.call(req).map_ok(finish as fn(_) -> _)
    }
}

/// Undoes tower-http's `406` and weakens a strong `ETag` of a response
/// encoded here.
///
/// When the client refuses `identity` and every encoding offered
/// (`identity;q=0`, `*;q=0`), tower-http keeps the body and headers it
/// got from inside and only sets the status to `406`: after the upstream
/// has run, with the upstream's body and type under it, a `101` upgrade
/// included. The answer as it came is the one to send (RFC 9110, 12.5.3
/// lets a server ignore the header, as nginx and Envoy do), so its status
/// is put back; the body goes out unencoded.
///
/// A strong `ETag` of a body encoded here becomes weak: the encoded bytes
/// differ from those the tag was made for. The answer to `HEAD` keeps the
/// encoded headers and no body: the encoder would write its frame of an
/// empty body, and HTTP/2 would send it.
fn finish(mut res: Response<CompressionBody<Body>>) -> Response<Body> {
    let Some(inside) = res.extensions_mut().remove::<Inside>() else {
        return res.map(Body::new);
    };
    *res.status_mut() = inside.status;
    let encoded_here = !inside.encoded && res.headers().contains_key(CONTENT_ENCODING);
    let mut res = if encoded_here && inside.head {
        res.map(|_| Body::empty())
    } else {
        res.map(Body::new)
    };
    if encoded_here
        && let Some(tag) = res.headers().get(ETAG)
        && !tag.as_bytes().starts_with(b"W/")
        && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", tag.as_bytes()].concat())
    {
        res.headers_mut().insert(ETAG, weak);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(CONTENT_TYPE),
                    HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")),
                )
            })
            .collect()
    }

    #[test]
    fn media_types_match_by_essence_prefix_and_suffix() {
        let types: Vec<String> = DEFAULT_COMPRESSIBLE_TYPES
            .iter()
            .map(|&t| t.to_owned())
            .collect();
        let yes = [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            "application/atom+xml",
            "text/html",
            "text/csv",
            "image/svg+xml",
        ];
        let no = [
            "image/png",
            "application/octet-stream",
            "application/grpc",
            "text/event-stream",
            "application/zip",
            "video/mp4",
            "json",
            "",
        ];
        for t in yes {
            assert!(
                compressible_type(&types, &headers(&[("content-type", t)])),
                "{t}"
            );
        }
        for t in no {
            assert!(
                !compressible_type(&types, &headers(&[("content-type", t)])),
                "{t}"
            );
        }
        assert!(!compressible_type(&types, &HeaderMap::new()), "no type");
    }

    #[test]
    fn no_transform_is_found_among_directives() {
        assert!(no_transform(&headers(&[(
            "cache-control",
            "public, No-Transform"
        )])));
        assert!(!no_transform(&headers(&[("cache-control", "no-store")])));
        assert!(!no_transform(&HeaderMap::new()));
    }

    #[test]
    fn best_is_zstd_19_not_an_ultra_level() {
        assert!(matches!(
            quality(Level::Best),
            CompressionLevel::Precise(BEST_LEVEL)
        ));
        assert_eq!(BEST_LEVEL, 19);
        assert!(matches!(quality(Level::Default), CompressionLevel::Default));
    }

    #[test]
    fn settings_are_checked() {
        assert!(Compression::new().check().is_ok());
        assert!(Compression::new().encodings([]).check().is_err());
        let none: [&str; 0] = [];
        assert!(Compression::new().content_types(none).check().is_err());
    }
}
