//! RFC 9457 problem details: every answer the gateway makes itself.
//!
//! A [`Problem`] renders as `application/problem+json` with the members
//! `type`, `title`, `status`, `detail`, `instance` and `request_id`, and is
//! also put into the response extensions so access logs and metrics can read
//! it without parsing JSON.
//!
//! The `type` URIs are the constants of this module: they are stable and can
//! be matched on by clients.

use std::{borrow::Cow, time::Duration};

use bytes::Bytes;
use http::{
    HeaderName, HeaderValue, Response, StatusCode,
    header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER},
};

use crate::{OriginalPath, RequestId, body::ResponseBody};

/// The content type of a problem.
pub const CONTENT_TYPE_PROBLEM: &str = "application/problem+json";

macro_rules! problem_types {
    ($( $(#[$doc:meta])* $konst:ident = $slug:literal; )*) => {
        $(
            $(#[$doc])*
            pub const $konst: &str = concat!("urn:tollgate:problem:", $slug);
        )*
    };
}

problem_types! {
    /// No route matches the request (404).
    ROUTE_NOT_FOUND = "route-not-found";
    /// A route matches the path but not the method (405).
    METHOD_NOT_ALLOWED = "method-not-allowed";
    /// The request is malformed and was not forwarded (400).
    BAD_REQUEST = "bad-request";
    /// Credentials are missing or invalid (401).
    UNAUTHORIZED = "unauthorized";
    /// Credentials are valid but do not grant access (403).
    FORBIDDEN = "forbidden";
    /// Credentials could not be checked: the identity provider is down or
    /// no signing keys are loaded yet (503).
    AUTH_UNAVAILABLE = "auth-unavailable";
    /// The request body is larger than the limit (413).
    PAYLOAD_TOO_LARGE = "payload-too-large";
    /// The request headers are too many or too large (431).
    HEADERS_TOO_LARGE = "headers-too-large";
    /// The request target is longer than the server accepts (414).
    URI_TOO_LONG = "uri-too-long";
    /// The client stopped sending its request body for longer than the
    /// server waits (408).
    REQUEST_TIMEOUT = "request-timeout";
    /// A quota was exceeded (429).
    RATE_LIMITED = "rate-limited";
    /// The gateway is overloaded or a dependency is down (503).
    SERVICE_UNAVAILABLE = "service-unavailable";
    /// No connection could be made to the upstream (502).
    UPSTREAM_UNAVAILABLE = "upstream-unavailable";
    /// The upstream answered with something that is not valid HTTP, or reset
    /// the connection (502).
    BAD_GATEWAY = "bad-gateway";
    /// The upstream did not answer in time (504).
    GATEWAY_TIMEOUT = "gateway-timeout";
    /// The gateway failed in a way it did not expect (500).
    INTERNAL = "internal";
}

/// An RFC 9457 problem, the body of every rejection the gateway makes.
///
/// Build one with a named constructor, refine it, then turn it into a
/// response with [`Problem::into_response`]. See the [crate docs](crate) for
/// an example.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Problem {
    status: StatusCode,
    type_uri: &'static str,
    title: &'static str,
    detail: Option<Cow<'static, str>>,
    instance: Option<String>,
    request_id: Option<RequestId>,
    retry_after: Option<Duration>,
    headers: Vec<(HeaderName, HeaderValue)>,
    members: Vec<(&'static str, Cow<'static, str>)>,
}

// === impl Problem ===

impl Problem {
    /// A problem with a custom `type`, `status` and `title`.
    ///
    /// Prefer the named constructors; this one is for layers outside
    /// tollgate. `type_uri` should be a constant.
    pub fn new(status: StatusCode, type_uri: &'static str, title: &'static str) -> Self {
        Self {
            status,
            type_uri,
            title,
            detail: None,
            instance: None,
            request_id: None,
            retry_after: None,
            headers: Vec::new(),
            members: Vec::new(),
        }
    }

    /// 404: no route matches the request.
    pub fn route_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, ROUTE_NOT_FOUND, "No route matches")
    }

    /// 405: a route matches the path but not the method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            METHOD_NOT_ALLOWED,
            "Method not allowed",
        )
    }

    /// 400: the request is malformed.
    pub fn bad_request() -> Self {
        Self::new(StatusCode::BAD_REQUEST, BAD_REQUEST, "Bad request")
    }

    /// 401: credentials are missing or invalid.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED, "Unauthorized")
    }

    /// 503: the credentials could not be checked because the identity
    /// provider is unreachable or no keys are loaded yet.
    pub fn auth_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            AUTH_UNAVAILABLE,
            "Authentication unavailable",
        )
    }

    /// 403: credentials do not grant access.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, FORBIDDEN, "Forbidden")
    }

    /// 413: the request body is too large.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            PAYLOAD_TOO_LARGE,
            "Payload too large",
        )
    }

    /// 431: the request headers are too many or too large.
    pub fn headers_too_large() -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HEADERS_TOO_LARGE,
            "Request header fields too large",
        )
    }

    /// 414: the request target is too long.
    pub fn uri_too_long() -> Self {
        Self::new(StatusCode::URI_TOO_LONG, URI_TOO_LONG, "URI too long")
    }

    /// 408: the client stopped sending its request body.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
            "Request timeout",
        )
    }

    /// 429: a quota was exceeded. Add [`Problem::retry_after`].
    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            RATE_LIMITED,
            "Too many requests",
        )
    }

    /// 503: the gateway or a dependency is unavailable.
    pub fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVICE_UNAVAILABLE,
            "Service unavailable",
        )
    }

    /// 502: no connection could be made to the upstream.
    pub fn upstream_unavailable() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            UPSTREAM_UNAVAILABLE,
            "Upstream unavailable",
        )
    }

    /// 502: the upstream sent an invalid response or reset the connection.
    pub fn bad_gateway() -> Self {
        Self::new(StatusCode::BAD_GATEWAY, BAD_GATEWAY, "Bad gateway")
    }

    /// 504: the upstream did not answer in time.
    pub fn gateway_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            GATEWAY_TIMEOUT,
            "Gateway timeout",
        )
    }

    /// 500: an unexpected failure inside the gateway.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            INTERNAL,
            "Internal error",
        )
    }

    /// Sets the human-readable `detail`. A 5xx detail never repeats upstream text.
    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets `instance`, usually the request path.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Sets `request_id` (a no-op for `None`, so callers can pass
    /// `req.extensions().get()` directly).
    pub fn request_id(mut self, id: Option<&RequestId>) -> Self {
        if let Some(id) = id {
            self.request_id = Some(id.clone());
        }
        self
    }

    /// Fills `instance` and `request_id` from a request.
    ///
    /// A request whose target is not a path (authority form) gets no
    /// `instance`.
    pub fn for_request<B>(self, req: &http::Request<B>) -> Self {
        self.for_head(req.uri(), req.extensions())
    }

    /// As [`for_request`](Self::for_request), from a request's parts.
    pub fn for_parts(self, parts: &http::request::Parts) -> Self {
        self.for_head(&parts.uri, &parts.extensions)
    }

    /// The `instance` is the path the client sent: the [`OriginalPath`]
    /// when a rewrite changed it, else the request's own.
    fn for_head(self, uri: &http::Uri, extensions: &http::Extensions) -> Self {
        let path = extensions
            .get::<OriginalPath>()
            .map_or_else(|| uri.path(), |original| original.0.path());
        let this = if path.is_empty() {
            self
        } else {
            self.instance(path)
        };
        this.request_id(extensions.get::<RequestId>())
    }

    /// Sets `Retry-After`, in whole seconds rounded up and never 0.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Adds a response header, e.g. `WWW-Authenticate`.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `type` URI, one of this module's constants.
    #[must_use]
    pub fn type_uri(&self) -> &'static str {
        self.type_uri
    }

    /// The `title`.
    #[must_use]
    pub fn title(&self) -> &'static str {
        self.title
    }

    /// Adds an extension member (RFC 9457 §3.2) with a string value, such
    /// as `reason` on an authentication failure or `plan` on a rate-limit
    /// rejection. Metrics read the well-known ones from the response
    /// extensions; names that clash with the standard members are ignored.
    pub fn member(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        if !matches!(
            name,
            "type" | "title" | "status" | "detail" | "instance" | "request_id"
        ) {
            self.members.retain(|(n, _)| *n != name);
            self.members.push((name, value.into()));
        }
        self
    }

    /// The value of the extension member `name`, if set.
    #[must_use]
    pub fn member_value(&self, name: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The `detail`, if set.
    #[must_use]
    pub fn detail_str(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The problem as a JSON document.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::with_capacity(6);
        map.insert("type".into(), self.type_uri.into());
        map.insert("title".into(), self.title.into());
        map.insert("status".into(), self.status.as_u16().into());
        if let Some(detail) = &self.detail {
            map.insert("detail".into(), detail.as_ref().into());
        }
        if let Some(instance) = &self.instance {
            map.insert("instance".into(), instance.as_str().into());
        }
        if let Some(id) = self.request_id.as_ref().and_then(RequestId::as_str) {
            map.insert("request_id".into(), id.into());
        }
        for (name, value) in &self.members {
            map.insert((*name).into(), value.as_ref().into());
        }
        serde_json::Value::Object(map)
    }

    /// Renders the problem as a response with any body type.
    ///
    /// The problem itself is also inserted into the response extensions.
    pub fn into_response<B>(self) -> Response<ResponseBody<B>> {
        // Serialising a Value of strings and numbers cannot fail.
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        let mut res = Response::new(ResponseBody::full(Bytes::from(body)));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PROBLEM));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(wait) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
        }
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        res.extensions_mut().insert(self);
        res
    }
}

/// Whole seconds, rounded up, never 0.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::BoxBody;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_every_member() {
        let res = Problem::gateway_timeout()
            .detail("upstream \"users\" did not answer within 30s")
            .instance("/api/users/1")
            .request_id(Some(&RequestId::from_static("r-1")))
            .into_response::<BoxBody>();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(res.headers()[CONTENT_TYPE], CONTENT_TYPE_PROBLEM);
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["type"], GATEWAY_TIMEOUT);
        assert_eq!(json["title"], "Gateway timeout");
        assert_eq!(json["status"], 504);
        assert_eq!(
            json["detail"],
            "upstream \"users\" did not answer within 30s"
        );
        assert_eq!(json["instance"], "/api/users/1");
        assert_eq!(json["request_id"], "r-1");
    }

    #[test]
    fn extension_members_render_and_cannot_replace_standard_ones() {
        let problem = Problem::unauthorized()
            .member("reason", "malformed")
            .member("reason", "expired")
            .member("status", "200");
        assert_eq!(problem.member_value("reason"), Some("expired"));
        let json = problem.to_json();
        assert_eq!(json["reason"], "expired");
        assert_eq!(json["status"], 401);
        assert_eq!(json.as_object().map(serde_json::Map::len), Some(4));
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        let res = Problem::rate_limited()
            .retry_after(Duration::from_millis(1500))
            .into_response::<BoxBody>();
        assert_eq!(res.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn problem_is_in_the_extensions() {
        let res = Problem::bad_gateway().into_response::<BoxBody>();
        let problem = res.extensions().get::<Problem>().unwrap();
        assert_eq!(problem.type_uri(), BAD_GATEWAY);
        assert_eq!(problem.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn absent_members_are_omitted() {
        let json = Problem::forbidden().to_json();
        let obj = json.as_object().unwrap();
        assert!(!obj.contains_key("detail"));
        assert!(!obj.contains_key("instance"));
        assert!(!obj.contains_key("request_id"));
    }
}
