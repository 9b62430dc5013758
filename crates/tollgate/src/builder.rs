//! [`Gateway::builder`]: upstreams by name, routes by prefix, host, method
//! and header, compiled into an `axum::Router`.

use std::collections::HashMap;

use std::{convert::Infallible, fmt, sync::Arc};

use axum::{Router, body::Body};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use tollgate_auth::AuthLayer;
use tollgate_core::{BoxError, ConfigError, ConfigErrorKind, RouteName, body::ResponseBody};
use tollgate_observe::{ObserveBody, ObserveLayer};
use tollgate_proxy::{PathRewrite, Upstream, UpstreamBuilder, WeightedSplit, rewrite::Rewriter};
use tollgate_ratelimit::{ConcurrencyLimitLayer, RateLimitLayer};
use tollgate_request_id::{ClientIpLayer, RequestIdLayer, TraceparentLayer};
use tollgate_transform::{
    HeaderLimitLayer, LimitedBody, RequestBody, RequestBodyLimitLayer, RequestTransformLayer,
    ResponseTransformLayer,
};
use tower_http::cors::CorsLayer;

use crate::compression::Compression;

use tower::{
    Layer, Service, ServiceBuilder, ServiceExt,
    layer::util::Stack,
    util::{MapRequest, MapRequestLayer, MapResponseLayer},
};

use crate::{
    Health,
    health::{Probes, RouteProbes},
    routing::{CompiledRoute, GatewayService, LayeredService, Matcher, RouteService},
};

/// The entry point: `Gateway::builder()`.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone, Copy)]
pub struct Gateway;

/// Registers upstreams and routes, then builds an `axum::Router`.
#[derive(Debug, Default)]
#[must_use]
pub struct GatewayBuilder {
    upstreams: Vec<UpstreamBuilder>,
    built_upstreams: Vec<Upstream<Body>>,
    routes: Vec<Route>,
    request_id: Option<RequestIdLayer>,
    trace_context: bool,
    client_ip: Option<ClientIpLayer>,
    observe: Option<ObserveLayer>,
    rate_limit: Option<RateLimitLayer>,
    health: Option<Health>,
}

/// One route: what it matches and where it sends the request.
///
/// A route matches a path prefix at a segment boundary (`/api/users`
/// matches `/api/users/42`, not `/api/usersX`). Among the routes that
/// match, those for an exact host come first, then wildcard hosts, then
/// routes for any host; within each, the longest prefix wins, then the
/// route with more conditions (headers, method), then the one registered
/// first. API versions go by prefix (`/api/v2`) or by header
/// (`.header("x-api-version", "2")`).
#[derive(Debug, Clone)]
#[must_use]
pub struct Route {
    name: Option<String>,
    prefix: String,
    hosts: Vec<String>,
    methods: Vec<Method>,
    headers: Vec<(String, Option<String>)>,
    target: Target,
    rewrite: PathRewrite,
    concurrency: Option<RouteLayer>,
    compression: Option<RouteLayer>,
    cors: Option<RouteLayer>,
    header_limit: Option<RouteLayer>,
    body_limit: Option<RouteLayer>,
    auth: Option<RouteLayer>,
    /// The identity headers the auth layer forwards.
    identity_headers: Vec<HeaderName>,
    rate_limit: Option<RouteLayer>,
    transform_request: Option<RouteLayer>,
    transform_response: Option<RouteLayer>,
    layers: Vec<RouteLayer>,
    /// The auth and rate-limit layers, for readiness probes.
    probes: RouteProbes,
}

/// A per-route layer, type-erased so routes can stack different ones.
#[derive(Clone)]
struct RouteLayer(Arc<dyn Fn(LayeredService) -> LayeredService + Send + Sync>);

impl fmt::Debug for RouteLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteLayer")
    }
}

#[derive(Debug, Clone)]
enum Target {
    None,
    Upstream(String),
    Split {
        backends: Vec<(String, u32)>,
        override_header: Option<String>,
    },
}

// === impl Gateway ===

impl Gateway {
    /// A new, empty builder.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }
}

// === impl GatewayBuilder ===

impl GatewayBuilder {
    /// Registers an upstream; routes refer to it by name.
    pub fn upstream(mut self, upstream: UpstreamBuilder) -> Self {
        self.upstreams.push(upstream);
        self
    }

    /// Registers an upstream that is already built, sharing its connection
    /// pool and endpoint health with every other gateway it is given to
    /// (the declarative config keeps unchanged upstreams across reloads
    /// this way).
    pub fn upstream_service(mut self, upstream: Upstream<Body>) -> Self {
        self.built_upstreams.push(upstream);
        self
    }

    /// Adds a route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Gives every request an id ([`RequestIdLayer`]): generated, or a
    /// trusted incoming one; forwarded upstream and echoed on the response.
    pub fn request_id(mut self, layer: RequestIdLayer) -> Self {
        self.request_id = Some(layer);
        self
    }

    /// Propagates W3C `traceparent`/`tracestate` to the upstreams, or starts
    /// a trace when the client sent none ([`TraceparentLayer`]).
    pub fn trace_context(mut self, on: bool) -> Self {
        self.trace_context = on;
        self
    }

    /// Resolves the [`ClientIp`](tollgate_core::ClientIp) of every request
    /// from the peer and the trusted proxies ([`ClientIpLayer`]).
    pub fn client_ip(mut self, layer: ClientIpLayer) -> Self {
        self.client_ip = Some(layer);
        self
    }

    /// Writes an access-log line per request and records metrics
    /// ([`ObserveLayer`]); serve [`admin_router`](tollgate_observe::admin_router)
    /// with the same `Metrics` to expose them. The secret headers
    /// ([`SENSITIVE_HEADERS`](tollgate_observe::SENSITIVE_HEADERS)) are then
    /// also marked sensitive with tower-http, in front of every layer.
    pub fn observe(mut self, layer: ObserveLayer) -> Self {
        self.observe = Some(layer);
        self
    }

    /// Applies one rate limit to every route, after the route's auth (so
    /// it can key by identity and plan) and before the route's own rate
    /// limit. All routes share its counters; key it by
    /// [`Key::route`](tollgate_ratelimit::Key::route) as well to count
    /// each route apart.
    pub fn rate_limit(mut self, layer: RateLimitLayer) -> Self {
        self.rate_limit = Some(layer);
        self
    }

    /// Reports this gateway's readiness through `health`: when
    /// [`build`](Self::build) or [`build_service`](Self::build_service)
    /// succeeds, the handle's probes become this gateway's (its routes'
    /// auth layers, its upstreams, its Redis-backed rate limits); a failed
    /// build leaves the handle as it was. Serve the handle on `/readyz`
    /// with [`Admin`](crate::admin::Admin).
    pub fn health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    /// Checks everything and builds the router.
    ///
    /// Unmatched requests get a 404 problem; a path matched but not its
    /// method, a 405 with `Allow`. Merge the result with your own handlers
    /// (`Router::merge`), which take precedence over the gateway's routes.
    ///
    /// # Errors
    ///
    /// An upstream with a bad URL or no endpoint, two upstreams with one
    /// name, a route to an unknown upstream, two routes that match the same
    /// requests, or a bad prefix, header or rewrite. The message names the
    /// route or upstream.
    ///
    /// The request id, trace context, client IP and observe layers, when
    /// set, wrap the routes in that order (the request id first), so the
    /// access log sees the id, the trace and the client.
    pub fn build(self) -> Result<Router, ConfigError> {
        Ok(Router::new().fallback_service(self.build_layered()?))
    }

    /// [`build`](Self::build) without the router around it: the routes and
    /// the global layers as one service, for a server that has no handlers
    /// of its own (the config file's), so no request pays for axum's route
    /// lookup, its url-params extension and its boxed fallback.
    pub(crate) fn build_layered(mut self) -> Result<LayeredService, ConfigError> {
        let request_id = self.request_id.take();
        let trace_context = std::mem::take(&mut self.trace_context);
        let client_ip = self.client_ip.take();
        let observe = self.observe.take();
        let observed = observe.is_some();
        // The route table itself, not erased: the stack below is erased
        // once, around it.
        let routes = self.build_service()?;
        // The global layers are one statically composed service (each one
        // present or not: `Either`), erased once, so a request pays one
        // clone and one boxed future for all of them rather than one per
        // layer; and not with `Router::layer`, which boxes each layer in a
        // `BoxCloneSyncService` cloned (with every box inside) per request.
        if !observed && request_id.is_none() && !trace_context && client_ip.is_none() {
            return Ok(LayeredService::new(routes));
        }
        let to_axum: fn(Response<ObserveBody<Body>>) -> Response<Body> = |res| res.map(Body::new);
        let stack = ServiceBuilder::new()
            // Outermost: every layer sees the secret headers marked.
            .option_layer(observed.then(tollgate_observe::sensitive_headers_layer))
            .option_layer(request_id)
            .option_layer(trace_context.then(TraceparentLayer::new))
            .option_layer(client_ip)
            .option_layer(observe.map(|layer| Stack::new(layer, MapResponseLayer::new(to_axum))))
            .service(routes);
        Ok(LayeredService::new(stack))
    }

    /// Like [`build`](Self::build), but returns the gateway as a plain
    /// tower `Service`, without axum's router in front: the leanest way to
    /// run a gateway that has no handlers of its own, with [`serve`](crate::serve).
    /// The request id, trace context and client IP settings are not applied
    /// here: stack those layers around the service with
    /// `tower::ServiceBuilder` when you want them.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_service(self) -> Result<GatewayService, ConfigError> {
        let mut upstreams: HashMap<String, Upstream<Body>> = HashMap::new();
        let mut probes = Probes::default();
        let built = self
            .upstreams
            .into_iter()
            .map(UpstreamBuilder::build::<Body>);
        for upstream in built.chain(self.built_upstreams.into_iter().map(Ok)) {
            let upstream = upstream?;
            probes.upstream(&upstream);
            let name = upstream.name().to_owned();
            if upstreams.insert(name.clone(), upstream).is_some() {
                return Err(ConfigError::new(
                    ConfigErrorKind::Duplicate,
                    format!("upstream \"{name}\" is registered twice"),
                ));
            }
        }
        let mut compiled: Vec<CompiledRoute> = Vec::with_capacity(self.routes.len());
        let mut strip: Vec<HeaderName> = Vec::new();
        for name in self.routes.iter().flat_map(|r| &r.identity_headers) {
            if !strip.contains(name) {
                strip.push(name.clone());
            }
        }
        if let Some(limit) = &self.rate_limit {
            probes.rate_limit(limit);
        }
        let global_limit = self
            .rate_limit
            .map(|layer| route_layer(layer, inner_or_boxed));
        for route in self.routes {
            probes.route(route.display_name(), &route.probes);
            let place = route.place();
            let built = route
                .compile(&upstreams, global_limit.as_ref())
                .map_err(|e| e.context(&place))?;
            if let Some(other) = compiled.iter().find(|c| c.matcher.same_as(&built.matcher)) {
                return Err(ConfigError::new(
                    ConfigErrorKind::Duplicate,
                    format!("matches the same requests as route \"{}\"", other.name),
                )
                .context(&place));
            }
            compiled.push(built);
        }
        if let Some(health) = &self.health {
            health.set(probes);
        }
        Ok(GatewayService::new(compiled, strip))
    }
}

// === impl Route ===

impl Route {
    /// A route for every path below `prefix` (at a segment boundary).
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            name: None,
            prefix: prefix.into(),
            hosts: Vec::new(),
            methods: Vec::new(),
            headers: Vec::new(),
            target: Target::None,
            rewrite: PathRewrite::Keep,
            concurrency: None,
            compression: None,
            cors: None,
            header_limit: None,
            body_limit: None,
            auth: None,
            identity_headers: Vec::new(),
            rate_limit: None,
            transform_request: None,
            transform_response: None,
            layers: Vec::new(),
            probes: RouteProbes::default(),
        }
    }

    /// Names the route for logs, metrics and errors (default: the prefix).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sends matching requests to the upstream called `upstream`.
    pub fn to(mut self, upstream: impl Into<String>) -> Self {
        self.target = Target::Upstream(upstream.into());
        self
    }

    /// Splits matching requests between upstreams by weight (a canary:
    /// `[("users", 95), ("users-canary", 5)]`).
    pub fn split<I, S>(mut self, backends: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let override_header = match self.target {
            Target::Split {
                override_header, ..
            } => override_header,
            _ => None,
        };
        self.target = Target::Split {
            backends: backends.into_iter().map(|(n, w)| (n.into(), w)).collect(),
            override_header,
        };
        self
    }

    /// With [`Route::split`]: a request header whose value names the
    /// upstream to use, for testing a canary.
    pub fn split_override_header(mut self, header: impl Into<String>) -> Self {
        if let Target::Split {
            override_header, ..
        } = &mut self.target
        {
            *override_header = Some(header.into());
        } else {
            self.target = Target::Split {
                backends: Vec::new(),
                override_header: Some(header.into()),
            };
        }
        self
    }

    /// Matches only this host (`Host` header, port ignored, case
    /// insensitive). `*.example.com` matches any subdomain. May be repeated.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// Matches only this method. May be repeated.
    pub fn method(mut self, method: Method) -> Self {
        self.methods.push(method);
        self
    }

    /// Matches only requests with this header and value.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), Some(value.into())));
        self
    }

    /// Matches only requests that carry this header, whatever its value.
    pub fn header_present(mut self, name: impl Into<String>) -> Self {
        self.headers.push((name.into(), None));
        self
    }

    /// Rewrites the path before it goes upstream.
    pub fn rewrite(mut self, rewrite: PathRewrite) -> Self {
        self.rewrite = rewrite;
        self
    }

    /// Removes the prefix: `/api/users/42` → `/42`.
    pub fn strip_prefix(self) -> Self {
        self.rewrite(PathRewrite::StripPrefix)
    }

    /// Authenticates and authorizes this route's requests ([`AuthLayer`]):
    /// JWT, API keys, introspection, required scopes and roles. It runs
    /// after the route matched and the path was rewritten, before any
    /// other per-route layer.
    ///
    /// Identity headers the layer forwards (`X-User-Id` …) are removed
    /// from client requests on every route of the gateway, so a route
    /// without auth cannot be used to pass a forged identity either.
    pub fn auth(mut self, auth: AuthLayer) -> Self {
        self.identity_headers = auth.identity_header_names();
        self.probes.auth = Some(auth.clone());
        self.auth = Some(route_layer(auth, inner_or_boxed));
        self
    }

    /// Rate-limits this route ([`RateLimitLayer`]): after auth, so quotas
    /// can follow the caller's identity and plan; 429 problem+json over
    /// the limit.
    pub fn rate_limit(mut self, layer: RateLimitLayer) -> Self {
        self.probes.rate_limit = Some(layer.clone());
        self.rate_limit = Some(route_layer(layer, inner_or_boxed));
        self
    }

    /// Answers CORS for this route with tower-http's [`CorsLayer`]:
    /// preflight `OPTIONS` requests are answered before auth (they carry
    /// no credentials), and every answer, problems included, gets the
    /// CORS headers.
    pub fn cors(mut self, cors: CorsLayer) -> Self {
        self.cors = Some(route_layer(cors, Body::new));
        self
    }

    /// Compresses this route's responses for clients that accept it
    /// ([`Compression`]: gzip, brotli, zstd or deflate, streamed; only
    /// compressible media types; `no-transform` respected; a strong `ETag`
    /// made weak). It wraps every other layer of the route, so problems
    /// and transformed bodies are compressed too.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = Some(route_layer(compression, Body::new));
        self
    }

    /// Refuses request bodies over `max` bytes with 413 problem+json
    /// ([`RequestBodyLimitLayer`]), before auth.
    pub fn body_limit(mut self, max: RequestBodyLimitLayer) -> Self {
        self.body_limit = Some(rebody_layer::<_, LimitedBody<Body>>(max));
        self
    }

    /// Refuses requests with too many or too large headers with 431
    /// problem+json ([`HeaderLimitLayer`]), before auth.
    pub fn header_limit(mut self, limit: HeaderLimitLayer) -> Self {
        self.header_limit = Some(route_layer(limit, inner_or_boxed));
        self
    }

    /// Rewrites this route's requests ([`RequestTransformLayer`]: headers
    /// from templates, path, query, JSON body) after auth and rate limits,
    /// so templates can use the identity.
    pub fn transform_request(mut self, layer: RequestTransformLayer) -> Self {
        self.transform_request = Some(rebody_layer::<_, RequestBody<Body>>(layer));
        self
    }

    /// Rewrites the upstream's responses ([`ResponseTransformLayer`]:
    /// headers, status, JSON field deny- and allow-lists). It sits next to
    /// the upstream, inside auth and rate limits, so the gateway's own
    /// problems are never filtered.
    ///
    /// When no rule set reads a body, the route applies the rules through
    /// [`ResponseTransformLayer::headers_only`]: the upstream's body
    /// streams on as it came, with nothing added per frame.
    pub fn transform_response(mut self, layer: ResponseTransformLayer) -> Self {
        self.transform_response = Some(match layer.headers_only() {
            Some(headers) => route_layer(headers, Body::new),
            None => route_layer(layer, Body::new),
        });
        self
    }

    /// Caps the requests in flight on this route
    /// ([`ConcurrencyLimitLayer`]): past the cap, 503 problem+json with
    /// `Retry-After` at once, before any other work (auth included).
    pub fn concurrency_limit(mut self, layer: ConcurrencyLimitLayer) -> Self {
        self.concurrency = Some(route_layer(layer, Body::new));
        self
    }

    /// Adds a tower layer in front of this route's upstream, after
    /// [`auth`](Self::auth). Layers run in the order they are added. The
    /// layer must answer rather than fail: its error type is `Infallible`
    /// (problem+json responses, as tollgate's layers give).
    pub fn layer<L, ResBody>(mut self, layer: L) -> Self
    where
        L: Layer<LayeredService> + Send + Sync + 'static,
        L::Service: Service<Request<Body>, Response = Response<ResBody>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        self.layers.push(route_layer(layer, Body::new));
        self
    }

    /// Replaces the prefix: with `/users`, `/api/users/42` → `/users/42`.
    pub fn replace_prefix(self, with: impl Into<String>) -> Self {
        self.rewrite(PathRewrite::ReplacePrefix(with.into()))
    }

    fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.prefix)
    }

    fn place(&self) -> String {
        match &self.name {
            Some(name) => format!("route \"{name}\" ({})", self.prefix),
            None => format!("route \"{}\"", self.prefix),
        }
    }

    fn compile(
        self,
        upstreams: &HashMap<String, Upstream<Body>>,
        global_limit: Option<&RouteLayer>,
    ) -> Result<CompiledRoute, ConfigError> {
        let invalid = |msg: String| ConfigError::new(ConfigErrorKind::InvalidValue, msg);
        let rewriter = Rewriter::new(&self.prefix, &self.rewrite)?;
        let lookup = |name: &str| {
            upstreams.get(name).cloned().ok_or_else(|| {
                ConfigError::new(
                    ConfigErrorKind::UnknownUpstream,
                    format!("unknown upstream \"{name}\""),
                )
            })
        };
        let service = match &self.target {
            Target::None => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Missing,
                    "has no target: call .to(upstream) or .split(..)",
                ));
            }
            Target::Upstream(name) => RouteService::Upstream(lookup(name)?),
            Target::Split {
                backends,
                override_header,
            } => {
                let mut services = Vec::with_capacity(backends.len());
                for (name, weight) in backends {
                    services.push((name.as_str(), *weight, lookup(name)?));
                }
                let mut split = WeightedSplit::new(services)?;
                if let Some(header) = override_header {
                    let header = HeaderName::try_from(header.as_str())
                        .map_err(|_| invalid(format!("bad header name {header:?}")))?;
                    split = split.override_header(header);
                }
                RouteService::Split(split)
            }
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| invalid(format!("bad header name {name:?}")))?;
            let value = value
                .as_deref()
                .map(HeaderValue::try_from)
                .transpose()
                .map_err(|_| invalid(format!("bad value for header {name}")))?;
            headers.push((name, value));
        }
        for host in &self.hosts {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if bare.is_empty() || bare.contains(['/', ':', '*', ' ']) {
                return Err(invalid(format!("bad host {host:?}")));
            }
        }
        let service = self.wrap(service, global_limit);
        Ok(CompiledRoute {
            name: RouteName::new(self.display_name()),
            matcher: Matcher {
                prefix: self.prefix.trim_end_matches('/').into(),
                hosts: self
                    .hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase().into())
                    .collect(),
                methods: self.methods.into(),
                headers: headers.into(),
            },
            rewriter: (!rewriter.is_keep()).then_some(rewriter),
            service,
        })
    }

    /// Stacks the route's layers around its forwarding service, from the
    /// outside in: in-flight limit, compression, CORS, header limit, body limit, auth,
    /// the gateway's rate limit, the route's rate limit, request transform,
    /// response transform, then the route's own layers in the order added.
    fn wrap(&self, service: RouteService, global_limit: Option<&RouteLayer>) -> RouteService {
        let outer = [
            &self.concurrency,
            &self.compression,
            &self.cors,
            &self.header_limit,
            &self.body_limit,
            &self.auth,
            &global_limit.cloned(),
            &self.rate_limit,
            &self.transform_request,
            &self.transform_response,
        ];
        if self.layers.is_empty() && outer.iter().all(|l| l.is_none()) {
            return service;
        }
        let mut service = service.boxed();
        for layer in self.layers.iter().rev() {
            service = (layer.0)(service);
        }
        for layer in outer.into_iter().rev().flatten() {
            service = (layer.0)(service);
        }
        RouteService::Layered(service)
    }
}

/// Type-erases a layer for a route's stack; `into_body` makes its answers
/// axum bodies: `Body::new`, or [`inner_or_boxed`] for one of
/// tollgate's layers that answers with its own problems.
fn route_layer<L, ResBody>(layer: L, into_body: fn(ResBody) -> Body) -> RouteLayer
where
    L: Layer<LayeredService> + Send + Sync + 'static,
    L::Service: Service<Request<Body>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
    ResBody: Send + 'static,
{
    RouteLayer(Arc::new(move |inner| {
        LayeredService::new(
            layer
                .layer(inner)
                .map_response(move |res| res.map(into_body)),
        )
    }))
}

/// The body a layer ([`ResponseBody`]) handed on, as it is: `Body::new`
/// would box it once more per layer (an allocation per message, and one
/// more indirection per frame). The layer's own body (a problem, a
/// rewritten request body) is boxed.
fn inner_or_boxed(body: ResponseBody<Body>) -> Body {
    match body.into_inner() {
        Ok(inner) => inner,
        Err(own) => Body::new(own),
    }
}

/// A request body a layer hands on, made the route's axum `Body`.
trait IntoRouteBody: Send + 'static {
    fn into_route_body(self) -> Body;
}

/// The request rules' body: the client's body as it is, unless a rule
/// rewrote it.
impl IntoRouteBody for RequestBody<Body> {
    fn into_route_body(self) -> Body {
        inner_or_boxed(self)
    }
}

/// The body limit's body counts every frame, so it stays.
impl IntoRouteBody for LimitedBody<Body> {
    fn into_route_body(self) -> Body {
        Body::new(self)
    }
}

/// The service a body-changing layer wraps: the route's stack behind a
/// conversion of the layer's body type `B` back to an axum `Body`.
type Rebody<B> = MapRequest<LayeredService, fn(Request<B>) -> Request<Body>>;

/// [`route_layer`] for one of tollgate's layers that hands on a request
/// body of its own type `B` (a limited or rewritten body): the route's
/// stack behind it gets an axum `Body` back.
fn rebody_layer<L, B>(layer: L) -> RouteLayer
where
    B: IntoRouteBody,
    L: Layer<Rebody<B>> + Send + Sync + 'static,
    L::Service: Service<Request<Body>, Response = Response<ResponseBody<Body>>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    let to_route = MapRequestLayer::new(axum_body::<B> as fn(Request<B>) -> Request<Body>);
    route_layer(Stack::new(to_route, layer), inner_or_boxed)
}

fn axum_body<B: IntoRouteBody>(req: Request<B>) -> Request<Body> {
    req.map(B::into_route_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> UpstreamBuilder {
        Upstream::builder("users").endpoint("http://127.0.0.1:9")
    }

    fn err(builder: GatewayBuilder) -> ConfigError {
        builder.build().unwrap_err()
    }

    #[test]
    fn unknown_upstream_names_the_route() {
        let e = err(Gateway::builder()
            .upstream(users())
            .route(Route::prefix("/api/users").name("users").to("userz")));
        assert_eq!(e.kind(), ConfigErrorKind::UnknownUpstream);
        assert_eq!(
            e.to_string(),
            "route \"users\" (/api/users): unknown upstream \"userz\""
        );
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let e = err(Gateway::builder()
            .upstream(users())
            .route(
                Route::prefix("/api")
                    .to("users")
                    .method(Method::GET)
                    .host("a.com"),
            )
            .route(
                Route::prefix("/api/")
                    .to("users")
                    .host("A.com")
                    .method(Method::GET),
            ));
        assert_eq!(e.kind(), ConfigErrorKind::Duplicate);
        assert_eq!(
            e.to_string(),
            "route \"/api/\": matches the same requests as route \"/api\""
        );
        // Same prefix, different conditions: fine.
        let _router = Gateway::builder()
            .upstream(users())
            .route(Route::prefix("/api").to("users"))
            .route(
                Route::prefix("/api")
                    .to("users")
                    .header("x-api-version", "2"),
            )
            .build()
            .unwrap();
    }

    #[test]
    fn bad_urls_and_values_are_refused() {
        let e = err(Gateway::builder().upstream(Upstream::builder("x").endpoint("x.internal:80")));
        assert_eq!(e.kind(), ConfigErrorKind::InvalidUrl);
        let e = err(Gateway::builder().upstream(users()).upstream(users()));
        assert_eq!(e.to_string(), "upstream \"users\" is registered twice");
        let e = err(Gateway::builder()
            .upstream(users())
            .route(Route::prefix("/a").to("users").header("bad header", "1")));
        assert_eq!(
            e.to_string(),
            "route \"/a\": bad header name \"bad header\""
        );
        let e = err(Gateway::builder()
            .upstream(users())
            .route(Route::prefix("api").to("users")));
        assert_eq!(
            e.to_string(),
            "route \"api\": prefix \"api\" must start with '/'"
        );
        let e = err(Gateway::builder().route(Route::prefix("/a")));
        assert_eq!(e.kind(), ConfigErrorKind::Missing);
        let e = err(Gateway::builder()
            .upstream(users())
            .route(Route::prefix("/a").split([("users", 0)])));
        assert_eq!(e.kind(), ConfigErrorKind::InvalidValue);
    }
}
