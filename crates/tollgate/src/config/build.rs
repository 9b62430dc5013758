//! From a [`ConfigFile`] to a [`GatewayBuilder`], keeping the state of
//! unchanged parts across reloads.

use std::collections::HashMap;

use axum::body::Body;
use http::Method;
use tollgate_auth::{Provider, ProviderConfig};
use tollgate_observe::{AccessLogWriter, Metrics};
use tollgate_proxy::{Upstream, UpstreamConfig};
use tollgate_ratelimit::{ConcurrencyLimitLayer, RateLimitConfig, RateLimitLayer};
use tollgate_request_id::{ClientIpLayer, RequestIdLayer};
use tollgate_transform::{
    ByClassConfig, BySelector, HeaderLimitLayer, RequestBodyLimitLayer, RequestTransformLayer,
    ResponseTransformLayer,
};
use tower_http::cors::CorsLayer;

use super::{ConfigFile, ConfigFileError, RouteConfig};
use crate::{Gateway, GatewayBuilder, Route, TlsConfig, tls::ClientAuth};

/// What a gateway built from a config keeps for the next build: the
/// upstreams (and their connection pools), the auth providers (and their
/// key sets and token caches) and the rate limits (and their counters)
/// whose config did not change, and the metrics registry.
///
/// Each [`ConfigFile::gateway_builder_with`] takes the state of the build
/// before and returns the state of its own; a part whose config changed,
/// or that is gone, starts afresh.
#[derive(Debug, Default)]
pub struct BuildState {
    upstreams: HashMap<String, (UpstreamKey, Upstream<Body>)>,
    providers: HashMap<String, (ProviderConfig, Provider)>,
    rate_limits: HashMap<String, (RateLimitConfig, RateLimitLayer)>,
    metrics: Option<Metrics>,
    access_log: Option<AccessLogWriter>,
}

impl BuildState {
    /// An empty state: everything is built new.
    pub fn new() -> Self {
        Self::default()
    }

    /// A state whose builds record metrics into `metrics` (one registry
    /// for the life of the process, whatever is reloaded).
    pub fn with_metrics(metrics: Metrics) -> Self {
        Self {
            metrics: Some(metrics),
            ..Self::default()
        }
    }

    /// The same state, whose builds write the access log straight to
    /// `writer` ([`ObserveBuilder::access_log`]) rather than as `tracing`
    /// events.
    ///
    /// [`ObserveBuilder::access_log`]: tollgate_observe::ObserveBuilder::access_log
    #[must_use]
    pub fn with_access_log(mut self, writer: AccessLogWriter) -> Self {
        self.access_log = Some(writer);
        self
    }

    /// The access-log writer of this state's builds, if any.
    pub fn access_log(&self) -> Option<&AccessLogWriter> {
        self.access_log.as_ref()
    }

    fn provider(
        &self,
        next: &mut Self,
        name: &str,
        config: &ProviderConfig,
    ) -> Result<Provider, tollgate_core::ConfigError> {
        reuse(
            &self.providers,
            &mut next.providers,
            name,
            config,
            ProviderConfig::build,
        )
    }

    fn upstream(
        &self,
        next: &mut Self,
        config: &UpstreamConfig,
    ) -> Result<Upstream<Body>, tollgate_core::ConfigError> {
        reuse(
            &self.upstreams,
            &mut next.upstreams,
            &config.name,
            &UpstreamKey::new(config),
            |key| Upstream::try_from(key.config.clone()),
        )
    }

    fn rate_limit(
        &self,
        next: &mut Self,
        slot: &str,
        config: &RateLimitConfig,
    ) -> Result<RateLimitLayer, tollgate_core::ConfigError> {
        reuse(
            &self.rate_limits,
            &mut next.rate_limits,
            slot,
            config,
            |c| RateLimitLayer::try_from(c),
        )
    }
}

/// The part built for `config` under `key`: the previous build's when its
/// config is the same (sharing its state), else a new one; kept in `next`
/// for the build after.
fn reuse<C, T>(
    previous: &HashMap<String, (C, T)>,
    next: &mut HashMap<String, (C, T)>,
    key: &str,
    config: &C,
    build: impl FnOnce(&C) -> Result<T, tollgate_core::ConfigError>,
) -> Result<T, tollgate_core::ConfigError>
where
    C: Clone + PartialEq,
    T: Clone,
{
    let built = match previous.get(key) {
        Some((old, built)) if old == config => built.clone(),
        _ => build(config)?,
    };
    next.insert(key.to_owned(), (config.clone(), built.clone()));
    Ok(built)
}

/// What decides whether a reload keeps an upstream: its config, and the
/// content of the TLS files it reads (CA bundle, client certificate and
/// key), so that replacing those files and reloading (SIGHUP) rotates
/// them: the upstream is built again, with a new pool.
#[derive(Clone, Debug, PartialEq)]
struct UpstreamKey {
    config: UpstreamConfig,
    /// A hash of each file's content (`None`: unreadable, which the build
    /// reports). Hashes, not contents: a key must not sit in the state,
    /// which is `Debug`.
    files: [Option<u64>; 3],
}

impl UpstreamKey {
    fn new(config: &UpstreamConfig) -> Self {
        let fingerprint = |path: &Option<std::path::PathBuf>| {
            let bytes = std::fs::read(path.as_ref()?).ok()?;
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&bytes, &mut hasher);
            Some(std::hash::Hasher::finish(&hasher))
        };
        Self {
            config: config.clone(),
            files: [
                fingerprint(&config.ca_file),
                fingerprint(&config.client_cert_file),
                fingerprint(&config.client_key_file),
            ],
        }
    }
}

/// A route's request or response rules: one set, or one per client class.
enum Rules<R> {
    One(R),
    ByClass(BySelector<R>),
}

impl ConfigFile {
    /// A [`GatewayBuilder`] for this config, everything built new.
    ///
    /// # Errors
    ///
    /// A value the layers refuse (a bad URL, header name, quota…), placed
    /// on its line and key path.
    pub fn gateway_builder(&self) -> Result<GatewayBuilder, ConfigFileError> {
        self.gateway_builder_with(&BuildState::new())
            .map(|(builder, _)| builder)
    }

    /// A [`GatewayBuilder`] for this config that reuses from `state` the
    /// upstreams and rate limits whose config is unchanged, and the state
    /// to keep for the next build.
    ///
    /// # Errors
    ///
    /// As [`gateway_builder`](Self::gateway_builder).
    pub fn gateway_builder_with(
        &self,
        state: &BuildState,
    ) -> Result<(GatewayBuilder, BuildState), ConfigFileError> {
        let config = &self.config;
        let mut next = BuildState {
            metrics: state.metrics.clone(),
            access_log: state.access_log.clone(),
            ..BuildState::default()
        };
        let mut builder = Gateway::builder().trace_context(config.trace_context);
        if let Some(request_id) = &config.request_id {
            let layer = RequestIdLayer::try_from(request_id)
                .map_err(|e| self.error_at("request_id", e.to_string()))?;
            builder = builder.request_id(layer);
        }
        if let Some(observe) = &config.observe {
            let metrics = observe
                .metrics
                .then(|| next.metrics.get_or_insert_with(Metrics::new).clone());
            let mut layer = observe.builder(metrics);
            if let Some(writer) = &state.access_log {
                layer = layer.access_log(writer.clone());
            }
            builder = builder.observe(layer.build());
        }
        for (name, provider) in &config.auth.providers {
            state
                .provider(&mut next, name, provider)
                .map_err(|e| self.error_at(&format!("auth.providers.{name}"), e.to_string()))?;
        }
        if let Some(client_ip) = &config.client_ip {
            let layer = ClientIpLayer::try_from(client_ip.clone())
                .map_err(|e| self.error_at("client_ip", e.to_string()))?;
            builder = builder.client_ip(layer);
        }
        if let Some(limit) = &config.rate_limit {
            let layer = state
                .rate_limit(&mut next, "rate_limit", limit)
                .map_err(|e| self.error_at("rate_limit", e.to_string()))?;
            builder = builder.rate_limit(layer);
        }
        for (i, upstream) in config.upstreams.iter().enumerate() {
            let built = state
                .upstream(&mut next, upstream)
                .map_err(|e| self.error_at(&format!("upstreams[{i}]"), e.to_string()))?;
            builder = builder.upstream_service(built);
        }
        for (i, route) in config.routes.iter().enumerate() {
            let built = self.route(state, &mut next, i, route)?;
            builder = builder.route(built);
        }
        Ok((builder, next))
    }

    fn route(
        &self,
        state: &BuildState,
        next: &mut BuildState,
        i: usize,
        config: &RouteConfig,
    ) -> Result<Route, ConfigFileError> {
        let at = |key: &str| format!("routes[{i}].{key}");
        let fail = |key: &str, e: &dyn std::fmt::Display| self.error_at(&at(key), e.to_string());
        let mut route = Route::prefix(&config.prefix).rewrite(config.rewrite.clone());
        if let Some(name) = &config.name {
            route = route.name(name);
        }
        for host in &config.hosts {
            route = route.host(host);
        }
        for (j, method) in config.methods.iter().enumerate() {
            let method = Method::from_bytes(method.as_bytes())
                .map_err(|_| fail(&format!("methods[{j}]"), &format!("bad method {method:?}")))?;
            route = route.method(method);
        }
        for (name, value) in &config.headers {
            route = route.header(name, value);
        }
        for name in &config.headers_present {
            route = route.header_present(name);
        }
        route = match (&config.to, config.split.is_empty()) {
            (Some(upstream), true) => route.to(upstream),
            (None, false) => {
                let route =
                    route.split(config.split.iter().map(|s| (s.upstream.clone(), s.weight)));
                match &config.split_override_header {
                    Some(header) => route.split_override_header(header),
                    None => route,
                }
            }
            (Some(_), false) => return Err(fail("to", &"give either `to` or `split`, not both")),
            (None, true) => return Err(fail("prefix", &"the route needs `to` or `split`")),
        };
        if let Some(limit) = &config.concurrency_limit {
            let layer = ConcurrencyLimitLayer::try_from(limit)
                .map_err(|e| fail("concurrency_limit", &e))?;
            route = route.concurrency_limit(layer);
        }
        if let Some(compression) = &config.compression {
            compression.check().map_err(|e| fail("compression", &e))?;
            route = route.compression(compression.clone());
        }
        if let Some(cors) = &config.cors {
            let layer = CorsLayer::try_from(cors).map_err(|e| fail("cors", &e))?;
            route = route.cors(layer);
        }
        if let Some(max) = config.body_limit {
            let layer = RequestBodyLimitLayer::new(max).map_err(|e| fail("body_limit", &e))?;
            route = route.body_limit(layer);
        }
        if let Some(limit) = &config.header_limit {
            let layer = HeaderLimitLayer::try_from(limit).map_err(|e| fail("header_limit", &e))?;
            route = route.header_limit(layer);
        }
        if let Some(auth) = &config.auth {
            let layer = auth
                .build(|name| next.providers.get(name).map(|(_, p)| p.clone()))
                .map_err(|e| fail("auth", &e))?;
            route = route.auth(layer);
        }
        if let Some(limit) = &config.rate_limit {
            let slot = format!("route {}", config.name.as_deref().unwrap_or(&config.prefix));
            let layer = state
                .rate_limit(next, &slot, limit)
                .map_err(|e| fail("rate_limit", &e))?;
            route = route.rate_limit(layer);
        }
        if let Some(rules) = self.rules(
            i,
            "transform_request",
            config.transform_request.as_ref(),
            config.transform_request_by_class.as_ref(),
        )? {
            route = route.transform_request(match rules {
                Rules::One(rules) => RequestTransformLayer::new(rules),
                Rules::ByClass(rules) => RequestTransformLayer::by_class(rules),
            });
        }
        if let Some(rules) = self.rules(
            i,
            "transform_response",
            config.transform_response.as_ref(),
            config.transform_response_by_class.as_ref(),
        )? {
            route = route.transform_response(match rules {
                Rules::One(rules) => ResponseTransformLayer::new(rules),
                Rules::ByClass(rules) => ResponseTransformLayer::by_class(rules),
            });
        }
        Ok(route)
    }

    /// The rules of `key` (one set) or `key_by_class` (a set per client
    /// class) of route `i`: at most one of the two.
    fn rules<C, R>(
        &self,
        i: usize,
        key: &str,
        one: Option<&C>,
        by_class: Option<&ByClassConfig<C>>,
    ) -> Result<Option<Rules<R>>, ConfigFileError>
    where
        R: for<'a> TryFrom<&'a C, Error = tollgate_core::ConfigError>,
    {
        let fail = |key: &str, e: &dyn std::fmt::Display| {
            self.error_at(&format!("routes[{i}].{key}"), e.to_string())
        };
        let by_class_key = format!("{key}_by_class");
        match (one, by_class) {
            (Some(_), Some(_)) => Err(fail(
                &by_class_key,
                &format!("give `{key}` or `{by_class_key}`, not both"),
            )),
            (Some(rules), None) => R::try_from(rules)
                .map(|r| Some(Rules::One(r)))
                .map_err(|e| fail(key, &e)),
            (None, Some(by_class)) => by_class
                .build::<R>()
                .map(|r| Some(Rules::ByClass(r)))
                .map_err(|e| fail(&by_class_key, &e)),
            (None, None) => Ok(None),
        }
    }

    /// The TLS configuration of `[server.tls]`, if any, with its files
    /// read.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or holds no certificate or key, a key
    /// that does not match its certificate, a bad server name.
    pub fn tls_config(&self) -> Result<Option<TlsConfig>, ConfigFileError> {
        let Some(tls) = &self.config.server.tls else {
            return Ok(None);
        };
        let mut builder = TlsConfig::builder()
            .min_version(tls.min_version)
            .session_cache(tls.session_cache)
            .session_tickets(tls.session_tickets)
            .session_timeout(tls.session_timeout);
        for file in &tls.session_ticket_key_files {
            builder = builder.session_ticket_key_file(file);
        }
        if let Some(suites) = &tls.cipher_suites {
            builder = builder.cipher_suites(suites.iter().cloned());
        }
        if let Some(groups) = &tls.key_exchange_groups {
            builder = builder.key_exchange_groups(groups.iter().cloned());
        }
        for cert in &tls.certificates {
            if cert.server_names.is_empty() {
                builder = builder.certificate(&cert.cert_file, &cert.key_file);
            }
            for name in &cert.server_names {
                builder = builder.sni_certificate(name, &cert.cert_file, &cert.key_file);
            }
        }
        if let Some(client) = &tls.client_auth {
            let mut auth = if client.required {
                ClientAuth::required(&client.ca_file)
            } else {
                ClientAuth::optional(&client.ca_file)
            };
            for crl in &client.crl_files {
                auth = auth.crl_file(crl);
            }
            builder = builder.client_auth(auth.crl_only_leaf(client.crl_only_leaf));
        }
        builder
            .build()
            .map(Some)
            .map_err(|e| self.error_at("server.tls", e.to_string()))
    }
}
