use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock},
    time::Duration,
};

use http::HeaderValue;
use tokio::sync::watch;

/// The id of one request, set by the request-id layer and echoed everywhere:
/// logs, problem bodies, the upstream request and the response.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

/// The address of the client, resolved once per request from the peer
/// address and the trusted proxies. Nothing else parses `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// What the server knows about the connection a request came in on.
///
/// `tollgate::serve` inserts it into every request. When the gateway runs
/// under another server, the facade copies it from axum's `ConnectInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The peer's address (the previous hop, not necessarily the client),
    /// or, on a listener that reads the PROXY protocol, the source address
    /// the balancer's header gave (see [`proxied_by`](Self::proxied_by)).
    pub remote: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub secure: bool,
    /// The peer that sent a PROXY protocol header (an L4 load balancer),
    /// when `remote` came from that header; `None` when `remote` is the
    /// peer itself.
    pub proxied_by: Option<SocketAddr>,
}

/// The server's shutdown, seen from work that outlives its request: an
/// upgraded connection (a WebSocket tunnel) keeps running after the
/// response that opened it, so the connection drain of the server does not
/// see it.
///
/// `tollgate::serve` inserts one `Drain` into every request. Whoever takes
/// over an upgraded connection holds a [`DrainGuard`] from
/// [`guard`](Self::guard) for as long as the tunnel runs: the server counts
/// the guards, waits for them (within its drain time) after shutdown
/// begins, then [`close`](Self::close)s, and every guard's
/// [`closed`](DrainGuard::closed) completes so the tunnel shuts both sides.
/// Without a `Drain` in the request (another server), nothing tracks the
/// tunnel.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tollgate_core::Drain;
///
/// let drain = Drain::new();
/// let mut guard = drain.guard();
/// assert_eq!(drain.active(), 1);
/// drain.close();
/// guard.closed().await;
/// drop(guard);
/// drain.idle().await;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Drain(Arc<watch::Sender<bool>>);

/// One tracked piece of work (an upgraded connection); see [`Drain`].
/// Dropping it tells the server the work is done.
#[derive(Debug)]
#[must_use = "the work is tracked only while the guard is held"]
pub struct DrainGuard(watch::Receiver<bool>);

/// The W3C trace context of a request (`traceparent`): the trace it
/// belongs to and the span the gateway opened for it, which is the parent
/// of the upstream call.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The 16-byte trace id.
    pub trace_id: [u8; 16],
    /// The gateway's 8-byte span id (`parent-id` in the header sent upstream).
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

/// The span id the caller sent in its `traceparent` (the `parent-id`
/// field): the parent of the gateway's own span.
///
/// The trace-context layer inserts it next to [`TraceContext`] only when
/// the request came with a valid `traceparent`; a trace the gateway starts
/// has no parent. An OpenTelemetry exporter reads it to join the gateway's
/// span to the caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParentSpanId(pub [u8; 8]);

/// Why a request to an upstream failed. The proxy puts it into the
/// extensions of the problem response it returns, so metrics can count
/// upstream errors by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// No connection could be made (refused, unreachable, TLS handshake).
    Connect,
    /// Connecting or waiting for the response headers took too long.
    Timeout,
    /// The connection was reset or closed before the response was complete.
    Reset,
    /// The upstream sent something that is not valid HTTP.
    Protocol,
}

/// The name of the route that matched, for metrics labels and logs.
///
/// It is the route's configured name, never the raw path, so label
/// cardinality stays bounded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteName(Arc<str>);

/// A slot that an observing layer (access log, metrics) puts into the
/// request extensions before calling the layers inside it, which fill it in:
/// the route table records the route name, the proxy the upstream call.
///
/// Layers inside only write to a slot that is there, so nothing is
/// allocated when no one observes. Each field is written at most once.
#[derive(Clone, Debug, Default)]
pub struct Observed(Arc<ObservedInner>);

#[derive(Debug, Default)]
struct ObservedInner {
    route: OnceLock<RouteName>,
    identity: OnceLock<Identity>,
    upstream: OnceLock<UpstreamCall>,
}

/// What the proxy did for a request: which upstream and endpoint, how long
/// until the response headers, and how it failed, if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamCall {
    /// The upstream's name.
    pub upstream: Arc<str>,
    /// The endpoint, `scheme://authority`.
    pub endpoint: Arc<str>,
    /// From sending the request to the response headers (or the failure).
    pub latency: Duration,
    /// Why it failed, when it did.
    pub error: Option<UpstreamErrorKind>,
    /// How many times the request was sent again to another endpoint after
    /// its connection failed (the upstream's `retries`); `endpoint` is the
    /// last one tried.
    pub retries: u32,
}

/// The client's path and query before a path rewrite changed them, put
/// into the request extensions so that problems name the path the client
/// sent (their `instance`), not the internal one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalPath(pub http::uri::PathAndQuery);

/// Who is calling, as established by an auth layer.
///
/// Later layers read it: scope checks, rate-limit keys and plans, header
/// transforms (`X-User-Id`), composition.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Identity {
    /// The subject (`sub` of a JWT, the user of an introspected token).
    pub subject: Option<Arc<str>>,
    /// The consumer (the application or API key owner).
    pub consumer: Option<Arc<str>>,
    /// The rate-limit plan, e.g. `free` or `standard`.
    pub plan: Option<Arc<str>>,
    /// Granted scopes.
    pub scopes: Arc<[Arc<str>]>,
    /// Granted roles.
    pub roles: Arc<[Arc<str>]>,
    /// How the caller authenticated.
    pub method: Option<AuthMethod>,
    /// The verified claims, when the credential carried any.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

/// How an [`Identity`] was established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMethod {
    /// A verified JSON Web Token.
    Jwt,
    /// An API key.
    ApiKey,
    /// An opaque token checked by OAuth2 introspection (RFC 7662).
    Introspection,
    /// A verified TLS client certificate.
    ClientCertificate,
    /// A method defined outside tollgate.
    Custom,
}

// === impl RequestId ===

impl RequestId {
    /// A request id from a header value.
    #[must_use]
    pub fn new(value: HeaderValue) -> Self {
        Self(value)
    }

    /// A request id from a static string.
    ///
    /// # Panics
    ///
    /// When `id` is not a valid header value; meant for constants.
    #[must_use]
    pub const fn from_static(id: &'static str) -> Self {
        Self(HeaderValue::from_static(id))
    }

    /// The id as a header value.
    #[must_use]
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as text, when it is visible ASCII.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        self.0.to_str().ok()
    }

    /// The header value.
    #[must_use]
    pub fn into_header_value(self) -> HeaderValue {
        self.0
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&self.0).finish()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str().unwrap_or("<non-ascii>"))
    }
}

// === impl ClientIp ===

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// === impl ConnectionInfo ===

impl ConnectionInfo {
    /// Info for a connection from `remote`.
    #[must_use]
    pub fn new(remote: SocketAddr) -> Self {
        Self {
            remote,
            local: None,
            secure: false,
            proxied_by: None,
        }
    }

    /// The connection carries `client`'s traffic, relayed by the peer: a
    /// PROXY protocol header named `client` as the source. `remote` becomes
    /// `client`, and the peer's address moves to
    /// [`proxied_by`](Self::proxied_by).
    ///
    /// ```
    /// use tollgate_core::ConnectionInfo;
    ///
    /// let balancer = "10.0.0.2:41000".parse().unwrap();
    /// let client = "203.0.113.7:52000".parse().unwrap();
    /// let info = ConnectionInfo::new(balancer).proxied_for(client);
    /// assert_eq!(info.remote, client);
    /// assert_eq!(info.proxied_by, Some(balancer));
    /// ```
    #[must_use]
    pub fn proxied_for(mut self, client: SocketAddr) -> Self {
        self.proxied_by = Some(self.remote);
        self.remote = client;
        self
    }

    /// Sets the local address.
    #[must_use]
    pub fn with_local(mut self, local: SocketAddr) -> Self {
        self.local = Some(local);
        self
    }

    /// Marks the connection as TLS.
    #[must_use]
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }
}

// === impl Drain ===

impl Drain {
    /// A drain with no guards, not closed.
    #[must_use]
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }

    /// Tracks one piece of work until the guard is dropped.
    pub fn guard(&self) -> DrainGuard {
        DrainGuard(self.0.subscribe())
    }

    /// How many guards are held.
    #[must_use]
    pub fn active(&self) -> usize {
        self.0.receiver_count()
    }

    /// Completes when no guard is held.
    pub async fn idle(&self) {
        self.0.closed().await;
    }

    /// Tells every guard, present and future, to wind its work down.
    pub fn close(&self) {
        self.0.send_replace(true);
    }

    /// Whether [`close`](Self::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        *self.0.borrow()
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

// === impl DrainGuard ===

impl DrainGuard {
    /// Completes once the server closes the drain (its drain time is over)
    /// or is gone.
    pub async fn closed(&mut self) {
        // An error means every `Drain` is gone: no server waits any more.
        let _ = self.0.wait_for(|closed| *closed).await;
    }
}

// === impl Observed ===

impl Observed {
    /// An empty slot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the route name (the first one wins).
    pub fn set_route(&self, route: &RouteName) {
        let _ = self.0.route.set(route.clone());
    }

    /// The route name, when a route matched.
    #[must_use]
    pub fn route(&self) -> Option<&RouteName> {
        self.0.route.get()
    }

    /// Records the caller's identity (the first one wins).
    pub fn set_identity(&self, identity: &Identity) {
        let _ = self.0.identity.set(identity.clone());
    }

    /// The caller's identity, when an auth layer established one.
    #[must_use]
    pub fn identity(&self) -> Option<&Identity> {
        self.0.identity.get()
    }

    /// Records the upstream call (the first one wins).
    pub fn set_upstream(&self, call: UpstreamCall) {
        let _ = self.0.upstream.set(call);
    }

    /// The upstream call, when the request was forwarded.
    #[must_use]
    pub fn upstream(&self) -> Option<&UpstreamCall> {
        self.0.upstream.get()
    }
}

// === impl UpstreamCall ===

impl UpstreamCall {
    /// A call to `endpoint` of `upstream` that took `latency`.
    #[must_use]
    pub fn new(
        upstream: Arc<str>,
        endpoint: Arc<str>,
        latency: Duration,
        error: Option<UpstreamErrorKind>,
    ) -> Self {
        Self {
            upstream,
            endpoint,
            latency,
            error,
            retries: 0,
        }
    }

    /// The same call, sent again `retries` times before.
    #[must_use]
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
}

// === impl UpstreamErrorKind ===

impl UpstreamErrorKind {
    /// The kind as a metrics label: `connect`, `timeout`, `reset` or `protocol`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
        }
    }
}

impl fmt::Display for UpstreamErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl TraceContext ===

impl TraceContext {
    /// The trace id as 32 lowercase hex digits.
    #[must_use]
    pub fn trace_id_hex(&self) -> String {
        String::from_utf8_lossy(&self.trace_id_hex_bytes()).into_owned()
    }

    /// The trace id as 32 lowercase hex ASCII digits, without allocating.
    #[must_use]
    pub fn trace_id_hex_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&self.trace_id, &mut out);
        out
    }

    /// The `traceparent` header value: `00-{trace-id}-{span-id}-{flags}`.
    #[must_use]
    pub fn traceparent(&self) -> String {
        String::from_utf8_lossy(&self.traceparent_bytes()).into_owned()
    }

    /// The `traceparent` value as bytes, built without allocating.
    #[must_use]
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        hex_into(&self.trace_id, &mut out[3..35]);
        hex_into(&self.span_id, &mut out[36..52]);
        hex_into(&[self.flags], &mut out[53..55]);
        out
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TraceContext")
            .field(&self.traceparent())
            .finish()
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

// === impl RouteName ===

impl RouteName {
    /// A route name.
    #[must_use]
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Identity ===

impl Identity {
    /// An identity for `subject`.
    #[must_use]
    pub fn subject(subject: impl Into<Arc<str>>) -> Self {
        Self {
            subject: Some(subject.into()),
            ..Self::default()
        }
    }

    /// An identity for a consumer (e.g. the owner of an API key).
    #[must_use]
    pub fn consumer(consumer: impl Into<Arc<str>>) -> Self {
        Self {
            consumer: Some(consumer.into()),
            ..Self::default()
        }
    }

    /// Sets the plan.
    #[must_use]
    pub fn with_plan(mut self, plan: impl Into<Arc<str>>) -> Self {
        self.plan = Some(plan.into());
        self
    }

    /// Sets the scopes.
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the roles.
    #[must_use]
    pub fn with_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Sets how the caller authenticated.
    #[must_use]
    pub fn with_method(mut self, method: AuthMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Sets the verified claims.
    #[must_use]
    pub fn with_claims(mut self, claims: serde_json::Map<String, serde_json::Value>) -> Self {
        self.claims = Some(Arc::new(claims));
        self
    }

    /// Whether the identity holds `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| &**s == scope)
    }

    /// Whether the identity holds `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| &**r == role)
    }

    /// A claim of the verified token, when there is one.
    #[must_use]
    pub fn claim(&self, name: &str) -> Option<&serde_json::Value> {
        self.claims.as_ref()?.get(name)
    }
}

// === impl AuthMethod ===

impl AuthMethod {
    /// A short lower-case name, as used in logs and metrics labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::ApiKey => "api_key",
            Self::Introspection => "introspection",
            Self::ClientCertificate => "client_certificate",
            Self::Custom => "custom",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_scopes() {
        let mut claims = serde_json::Map::new();
        claims.insert("tenant".into(), "acme".into());
        let id = Identity::subject("42")
            .with_plan("free")
            .with_scopes(["read", "write"])
            .with_roles(["admin"])
            .with_method(AuthMethod::Jwt)
            .with_claims(claims);
        assert!(id.has_scope("read"));
        assert!(!id.has_scope("admin"));
        assert!(id.has_role("admin"));
        assert_eq!(id.claim("tenant"), Some(&serde_json::Value::from("acme")));
        assert_eq!(id.method.map(AuthMethod::as_str), Some("jwt"));
        assert_eq!(id.plan.as_deref(), Some("free"));
    }

    #[test]
    fn traceparent_renders_lowercase_hex() {
        let ctx = TraceContext {
            trace_id: [0xab; 16],
            span_id: [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
            flags: 1,
        };
        assert_eq!(
            ctx.traceparent(),
            "00-abababababababababababababababab-0102030405060708-01"
        );
        assert_eq!(ctx.trace_id_hex().len(), 32);
    }

    #[test]
    fn observed_slot_is_shared_and_written_once() {
        let slot = Observed::new();
        let inner = slot.clone();
        inner.set_route(&RouteName::new("users"));
        inner.set_route(&RouteName::new("other"));
        assert_eq!(slot.route().map(RouteName::as_str), Some("users"));
        assert!(slot.upstream().is_none());
        inner.set_upstream(UpstreamCall::new(
            "users".into(),
            "http://127.0.0.1:9".into(),
            Duration::from_millis(3),
            Some(UpstreamErrorKind::Timeout),
        ));
        assert_eq!(
            slot.upstream().and_then(|c| c.error),
            Some(UpstreamErrorKind::Timeout)
        );
    }

    #[tokio::test]
    async fn drain_counts_guards_and_closes_them() {
        let drain = Drain::new();
        drain.idle().await;
        let mut first = drain.guard();
        let second = drain.clone().guard();
        assert_eq!(drain.active(), 2);
        drop(second);
        assert_eq!(drain.active(), 1);
        assert!(!drain.is_closed());
        drain.close();
        first.closed().await;
        // A guard taken after the close is closed at once.
        drain.guard().closed().await;
        drop(first);
        drain.idle().await;
        assert_eq!(drain.active(), 0);
    }

    #[test]
    fn request_id_display() {
        assert_eq!(RequestId::from_static("abc").to_string(), "abc");
        let raw = RequestId::new(HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(raw.to_string(), "<non-ascii>");
    }
}
