//! The compiled route table: host (exact, wildcard, any), prefix (longest
//! wins, at a segment boundary), header and method matching.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use axum::{body::Body, extract::ConnectInfo};
use http::{HeaderName, HeaderValue, Method, Request, Response, header};
use pin_project_lite::pin_project;
use tollgate_core::{ConnectionInfo, Observed, Problem, RouteName};
use tollgate_proxy::{
    PoolFuture, Upstream, WeightedSplit,
    rewrite::{Rewriter, strip_segment_prefix},
    validate_request,
};
use tower::{Service, ServiceExt};

/// A route's service once per-route layers (auth, rate limits, your own)
/// wrap the forwarding: type-erased, because each route stacks different
/// layers, and what every [`Route::layer`](crate::Route::layer) wraps.
///
/// Unlike tower's `BoxCloneSyncService`, a clone is one reference count:
/// tower's clones the boxed service, and with it every boxed stage inside
/// it, and each stage clones its inner service on every request, so a
/// route with n layers made n² allocations per request. Here each call
/// clones only the concrete stage (a few `Arc`s) and boxes its future.
#[derive(Clone)]
pub struct LayeredService(Arc<dyn ErasedService>);

/// A service called through a shared reference: it clones itself (cheap,
/// as every tollgate layer is) and runs the clone to completion.
trait ErasedService: Send + Sync {
    fn call_shared(&self, req: Request<Body>) -> LayeredFuture;
}

/// The future of a [`LayeredService`].
pub type LayeredFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send + 'static>>;

impl<S> ErasedService for S
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    fn call_shared(&self, req: Request<Body>) -> LayeredFuture {
        // Only the call's future is boxed (see `call_now`): a box of
        // `CallNow` would be the size of its `Oneshot`, service and
        // request included.
        match call_now(self.clone(), req) {
            Ok(future) => Box::pin(future),
            Err(oneshot) => Box::pin(oneshot),
        }
    }
}

/// Calls `service` at once when it is ready at once, as tollgate's layers
/// are (each awaits what it needs in its own future); else (`Err`) a
/// `Oneshot` to drive it.
///
/// Readiness is asked once, with a waker that does nothing. A ready
/// service is called there and then, so the request goes straight into
/// the call, where a `Oneshot` would move it into its own state and out
/// again at the first poll. A service that is not ready yet is handed to
/// the `Oneshot`, which asks again with the task's waker.
fn call_now<S, R>(mut service: S, req: R) -> Result<S::Future, tower::util::Oneshot<S, R>>
where
    S: Service<R, Error = Infallible>,
{
    match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => Ok(service.call(req)),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => Err(service.oneshot(req)),
    }
}

pin_project! {
    /// [`call_now`] as one future.
    #[project = CallNowProj]
    pub(crate) enum CallNow<S, R>
    where
        S: Service<R>,
    {
        Called { #[pin] future: S::Future },
        Waiting { #[pin] oneshot: tower::util::Oneshot<S, R> },
    }
}

impl<S, R> CallNow<S, R>
where
    S: Service<R, Error = Infallible>,
{
    pub(crate) fn new(service: S, req: R) -> Self {
        match call_now(service, req) {
            Ok(future) => Self::Called { future },
            Err(oneshot) => Self::Waiting { oneshot },
        }
    }
}

impl<S, R> Future for CallNow<S, R>
where
    S: Service<R, Error = Infallible>,
{
    type Output = Result<S::Response, Infallible>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallNowProj::Called { future } => future.poll(cx),
            CallNowProj::Waiting { oneshot } => oneshot.poll(cx),
        }
    }
}

impl LayeredService {
    /// Erases `service`.
    pub(crate) fn new<S>(service: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self(Arc::new(service))
    }

    /// Calls the service through a shared reference (it is always ready).
    #[cfg(feature = "config")]
    pub(crate) fn call_shared(&self, req: Request<Body>) -> LayeredFuture {
        self.0.call_shared(req)
    }
}

impl Service<Request<Body>> for LayeredService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = LayeredFuture;

    /// Always ready: each stage's readiness is awaited in its own future.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> LayeredFuture {
        self.0.call_shared(req)
    }
}

impl fmt::Debug for LayeredService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LayeredService")
    }
}

/// Where a route sends its requests. Concrete rather than boxed: the hot
/// path clones an `Arc` and calls, with no allocation of its own.
#[derive(Clone, Debug)]
pub(crate) enum RouteService {
    Upstream(Upstream<Body>),
    Split(WeightedSplit<Upstream<Body>>),
    /// Per-route layers in front of one of the above.
    Layered(LayeredService),
}

impl RouteService {
    /// The forwarding as a boxed service, for layers to wrap.
    pub(crate) fn boxed(self) -> LayeredService {
        match self {
            Self::Upstream(upstream) => {
                LayeredService::new(upstream.map_response(|res| res.map(Body::new)))
            }
            Self::Split(split) => LayeredService::new(split.map_response(|res| res.map(Body::new))),
            Self::Layered(service) => service,
        }
    }
}

/// A route matcher, compiled at build time.
#[derive(Debug)]
pub(crate) struct Matcher {
    pub(crate) prefix: Box<str>,
    /// Lower-case hosts; a leading `*.` matches any subdomain.
    pub(crate) hosts: Box<[Box<str>]>,
    /// Empty: any method.
    pub(crate) methods: Box<[Method]>,
    /// A header that must be present, with this value when one is given.
    pub(crate) headers: Box<[(HeaderName, Option<HeaderValue>)]>,
}

#[derive(Debug)]
pub(crate) struct CompiledRoute {
    pub(crate) name: RouteName,
    pub(crate) matcher: Matcher,
    /// `None` when the path goes upstream unchanged.
    pub(crate) rewriter: Option<Rewriter>,
    pub(crate) service: RouteService,
}

/// The gateway as a tower `Service`: validates the request, finds the
/// route, rewrites the path and forwards. Unmatched requests get a 404
/// problem; a path matched but not its method, a 405 with `Allow`.
///
/// [`build`](crate::GatewayBuilder::build) puts it into an `axum::Router`
/// as the fallback; [`build_service`](crate::GatewayBuilder::build_service)
/// returns it alone, for [`serve`](crate::serve) without axum's router in
/// front.
#[derive(Clone, Debug)]
pub struct GatewayService {
    routes: Arc<[CompiledRoute]>,
    /// Identity headers some route forwards: removed from every client
    /// request, so none can carry a forged identity.
    strip: Arc<[HeaderName]>,
}

pin_project! {
    /// The response future of [`GatewayService`].
    pub struct ResponseFuture {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        // Forwarding to an upstream.
        Proxy {
            #[pin]
            inner: tollgate_proxy::ResponseFuture<PoolFuture<Body>>,
        },
        // Through the route's own layers.
        Layered {
            #[pin]
            inner: LayeredFuture,
        },
        // Answered by the gateway itself.
        Ready {
            response: Option<Response<Body>>,
        },
    }
}

enum Found<'a> {
    Route(&'a CompiledRoute),
    /// Some route matches everything but the method.
    MethodNotAllowed(Vec<Method>),
    None,
}

// === impl Matcher ===

impl Matcher {
    /// How specific the host condition is: exact hosts (2) before
    /// wildcards (1) before routes for any host (0), as virtual hosts work
    /// in nginx and Envoy.
    fn host_rank(&self) -> u8 {
        if self.hosts.is_empty() {
            0
        } else if self.hosts.iter().all(|h| h.starts_with("*.")) {
            1
        } else {
            2
        }
    }

    /// Conditions beyond host and prefix, to order otherwise equal routes.
    fn conditions(&self) -> usize {
        usize::from(!self.methods.is_empty()) + self.headers.len()
    }

    fn matches_host(&self, host: Option<&str>) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let Some(host) = host else { return false };
        self.hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    host.len() > suffix.len() + 1
                        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                }
                None => host.eq_ignore_ascii_case(pattern),
            })
    }

    fn matches_headers(&self, headers: &http::HeaderMap) -> bool {
        self.headers.iter().all(|(name, value)| match value {
            Some(value) => headers.get_all(name).iter().any(|v| v == value),
            None => headers.contains_key(name),
        })
    }

    fn matches_method(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    /// Whether two matchers accept exactly the same requests.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        let mut a_hosts: Vec<_> = self.hosts.iter().collect();
        let mut b_hosts: Vec<_> = other.hosts.iter().collect();
        a_hosts.sort();
        b_hosts.sort();
        let mut a_methods: Vec<_> = self.methods.iter().map(Method::as_str).collect();
        let mut b_methods: Vec<_> = other.methods.iter().map(Method::as_str).collect();
        a_methods.sort_unstable();
        b_methods.sort_unstable();
        let key = |h: &(HeaderName, Option<HeaderValue>)| {
            (
                h.0.as_str().to_owned(),
                h.1.as_ref().map(|v| v.as_bytes().to_vec()),
            )
        };
        let mut a_headers: Vec<_> = self.headers.iter().map(key).collect();
        let mut b_headers: Vec<_> = other.headers.iter().map(key).collect();
        a_headers.sort();
        b_headers.sort();
        self.prefix == other.prefix
            && a_hosts == b_hosts
            && a_methods == b_methods
            && a_headers == b_headers
    }
}

// === impl GatewayService ===

impl GatewayService {
    /// Orders routes so that the first match is the right one: the most
    /// specific host first (exact, then wildcard, then any), then the
    /// longest prefix, then the most other conditions (headers, methods),
    /// then registration order.
    pub(crate) fn new(mut routes: Vec<CompiledRoute>, strip: Vec<HeaderName>) -> Self {
        routes.sort_by(|a, b| {
            let (a, b) = (&a.matcher, &b.matcher);
            b.host_rank()
                .cmp(&a.host_rank())
                .then(b.prefix.len().cmp(&a.prefix.len()))
                .then(b.conditions().cmp(&a.conditions()))
        });
        Self {
            routes: routes.into(),
            strip: strip.into(),
        }
    }

    fn find<B>(&self, req: &Request<B>) -> Found<'_> {
        let path = req.uri().path();
        let host = request_host(req);
        let mut allowed: Vec<Method> = Vec::new();
        for route in self.routes.iter() {
            let m = &route.matcher;
            if strip_segment_prefix(path, &m.prefix).is_none()
                || !m.matches_host(host)
                || !m.matches_headers(req.headers())
            {
                continue;
            }
            if m.matches_method(req.method()) {
                return Found::Route(route);
            }
            allowed.extend(m.methods.iter().cloned());
        }
        if allowed.is_empty() {
            Found::None
        } else {
            Found::MethodNotAllowed(allowed)
        }
    }
}

/// The host the client asked for, without the port.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    // RFC 9112 §3.2.2: with an absolute-form target, its authority wins
    // over the Host header.
    if let Some(host) = req.uri().host() {
        return Some(
            host.strip_prefix('[')
                .map_or(host, |h| h.trim_end_matches(']')),
        );
    }
    let raw = req.headers().get(header::HOST)?.to_str().ok()?;
    // `[v6]:port`, `host:port` or `host`.
    if let Some(v6) = raw.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(raw.rsplit_once(':').map_or(raw, |(h, _)| h))
}

impl Service<Request<Body>> for GatewayService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if req.extensions().get::<ConnectionInfo>().is_none()
            && let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>()
        {
            let info = ConnectionInfo::new(*addr);
            req.extensions_mut().insert(info);
        }
        if let Some(problem) = validate_request(&req) {
            return reject(problem.for_request(&req));
        }
        for name in self.strip.iter() {
            req.headers_mut().remove(name);
        }
        match self.find(&req) {
            Found::Route(route) => {
                if let Some(rewriter) = &route.rewriter {
                    rewriter.apply(&mut req);
                }
                if let Some(observed) = req.extensions().get::<Observed>() {
                    observed.set_route(&route.name);
                }
                req.extensions_mut().insert(route.name.clone());
                // Upstreams (and splits of them) are always ready: they
                // connect on demand and have no back-pressure of their own.
                let inner = match &route.service {
                    RouteService::Upstream(upstream) => upstream.clone().call(req),
                    RouteService::Split(split) => split.clone().call(req),
                    RouteService::Layered(service) => {
                        return ResponseFuture {
                            kind: Kind::Layered {
                                inner: service.0.call_shared(req),
                            },
                        };
                    }
                };
                ResponseFuture {
                    kind: Kind::Proxy { inner },
                }
            }
            Found::MethodNotAllowed(mut methods) => {
                let mut seen = Vec::with_capacity(methods.len());
                methods.retain(|m| {
                    let fresh = !seen.contains(m);
                    if fresh {
                        seen.push(m.clone());
                    }
                    fresh
                });
                let allow = methods
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut problem = Problem::method_not_allowed()
                    .detail(format!("{} is not allowed here", req.method()))
                    .for_request(&req);
                if let Ok(allow) = HeaderValue::from_str(&allow) {
                    problem = problem.header(header::ALLOW, allow);
                }
                reject(problem)
            }
            Found::None => reject(Problem::route_not_found().for_request(&req)),
        }
    }
}

fn reject(problem: Problem) -> ResponseFuture {
    ResponseFuture {
        kind: Kind::Ready {
            response: Some(problem.into_response::<Body>().map(Body::new)),
        },
    }
}

// === impl ResponseFuture ===

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Proxy { inner } => {
                inner.poll(cx).map(|res| res.map(|res| res.map(Body::new)))
            }
            KindProj::Layered { inner } => inner.poll(cx),
            KindProj::Ready { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                // Polled after completion: stay pending rather than panic.
                None => Poll::Pending,
            },
        }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gateway::ResponseFuture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_without_port_and_case() {
        let m = Matcher {
            prefix: "/".into(),
            hosts: vec!["api.example.com".into(), "*.example.org".into()].into(),
            methods: Box::new([]),
            headers: Box::new([]),
        };
        assert!(m.matches_host(Some("API.example.com")));
        assert!(m.matches_host(Some("a.example.org")));
        assert!(!m.matches_host(Some("example.org")));
        assert!(!m.matches_host(Some("xexample.org")));
        assert!(!m.matches_host(Some("other.com")));
        assert!(!m.matches_host(None));
        let req = Request::builder()
            .header("host", "api.example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("api.example.com"));
        let req = Request::builder()
            .header("host", "[::1]:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("::1"));
    }
}
