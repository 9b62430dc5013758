//! Client IP resolution: the peer address, or, when the peer is a trusted
//! proxy, the right-most address in `X-Forwarded-For` (or RFC 7239
//! `Forwarded`) that is not itself a trusted proxy.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{HeaderMap, HeaderName, Request, header::FORWARDED};
use ipnet::IpNet;
use tollgate_core::{
    ClientIp, ConfigError, ConfigErrorKind, ConnectionInfo, OnRequest, RequestHook,
};
use tower::Layer;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Which header carries the chain of addresses from trusted proxies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ForwardedSource {
    /// `X-Forwarded-For`. The default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters.
    Forwarded,
}

/// The plain-data configuration of a [`ClientIpLayer`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ClientIpConfig {
    /// Trusted proxies, as CIDRs (`10.0.0.0/8`) or single addresses.
    pub trusted_proxies: Vec<String>,
    /// The header read from trusted proxies.
    pub source: ForwardedSource,
    /// Keep forwarding headers from untrusted peers instead of removing
    /// them before the request goes on. Off by default: an upstream then
    /// only sees a chain the gateway vouches for.
    pub keep_untrusted_headers: bool,
}

/// Resolves the [`ClientIp`] of every request. See the [crate docs](crate).
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientIpLayer {
    shared: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    trusted: Box<[IpNet]>,
    source: ForwardedSource,
    keep_untrusted_headers: bool,
}

/// The service of [`ClientIpLayer`]: tollgate-core's [`OnRequest`] with
/// the layer as the hook.
pub type ResolveClientIp<S> = OnRequest<S, ClientIpLayer>;

// === impl ClientIpLayer ===

impl ClientIpLayer {
    /// A layer that trusts no proxy: the client is the peer, and forwarding
    /// headers from it are removed.
    pub fn peer_only() -> Self {
        Self {
            shared: Arc::new(Settings {
                trusted: Box::new([]),
                source: ForwardedSource::XForwardedFor,
                keep_untrusted_headers: false,
            }),
        }
    }

    /// A layer from its configuration.
    ///
    /// # Errors
    ///
    /// When a trusted proxy is neither a CIDR nor an address.
    pub fn from_config(config: &ClientIpConfig) -> Result<Self, ConfigError> {
        let mut trusted = Vec::with_capacity(config.trusted_proxies.len());
        for (i, item) in config.trusted_proxies.iter().enumerate() {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        ConfigErrorKind::InvalidValue,
                        format!("trusted_proxies[{i}]: {item:?} is not a CIDR or an IP address"),
                    )
                })?;
            trusted.push(net);
        }
        Ok(Self {
            shared: Arc::new(Settings {
                trusted: trusted.into_boxed_slice(),
                source: config.source,
                keep_untrusted_headers: config.keep_untrusted_headers,
            }),
        })
    }
}

impl TryFrom<ClientIpConfig> for ClientIpLayer {
    type Error = ConfigError;

    fn try_from(config: ClientIpConfig) -> Result<Self, Self::Error> {
        Self::from_config(&config)
    }
}

impl<S> Layer<S> for ClientIpLayer {
    type Service = ResolveClientIp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OnRequest::new(inner, self.clone())
    }
}

// === impl ClientIpLayer as a hook ===

impl RequestHook for ClientIpLayer {
    fn on_request<B>(&self, req: &mut Request<B>) {
        let peer = req
            .extensions()
            .get::<ConnectionInfo>()
            .map(|c| c.remote.ip());
        if let Some(peer) = peer {
            let settings = &*self.shared;
            let trusted_peer = settings.is_trusted(peer);
            let client = if trusted_peer {
                settings.resolve(peer, req.headers())
            } else {
                peer
            };
            if !trusted_peer && !settings.keep_untrusted_headers {
                let headers = req.headers_mut();
                headers.remove(X_FORWARDED_FOR);
                headers.remove(FORWARDED);
            }
            req.extensions_mut().insert(ClientIp(client));
        }
    }
}

// === impl Settings ===

impl Settings {
    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Walks the chain right to left from a trusted peer, skipping trusted
    /// hops. The first untrusted hop is the client. A malformed entry stops
    /// the walk: the last good hop to its right is taken, and it is logged.
    fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer;
        let values = match self.source {
            ForwardedSource::XForwardedFor => headers.get_all(X_FORWARDED_FOR),
            ForwardedSource::Forwarded => headers.get_all(FORWARDED),
        };
        let Ok(joined) = values
            .iter()
            .map(|v| v.to_str())
            .collect::<Result<Vec<_>, _>>()
        else {
            tracing::info!(target: "tollgate::client_ip", %peer, "forwarding header is not visible ASCII; using the peer");
            return peer;
        };
        let entries = joined.iter().flat_map(|v| v.split(',')).collect::<Vec<_>>();
        for entry in entries.iter().rev() {
            let parsed = match self.source {
                ForwardedSource::XForwardedFor => parse_node(entry.trim()),
                ForwardedSource::Forwarded => forwarded_for(entry),
            };
            let Some(ip) = parsed else {
                let shown: String = entry.trim().chars().take(64).collect();
                tracing::info!(target: "tollgate::client_ip", entry = ?shown, client = %client, "malformed forwarding entry; stopping at the last good hop");
                return client;
            };
            client = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        client
    }
}

/// An IPv4-mapped IPv6 address as IPv4, so `::ffff:10.0.0.1` matches
/// `10.0.0.0/8`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = node.parse::<SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    let inner = node.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

/// The `for=` parameter of one `Forwarded` element, unquoted.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    parse_node(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    fn layer(trusted: &[&str], source: ForwardedSource) -> ClientIpLayer {
        ClientIpLayer::from_config(&ClientIpConfig {
            trusted_proxies: trusted.iter().map(|s| (*s).to_owned()).collect(),
            source,
            keep_untrusted_headers: false,
        })
        .unwrap()
    }

    async fn resolve(
        layer: ClientIpLayer,
        peer: &str,
        headers: &[(&str, &str)],
    ) -> (Option<IpAddr>, Option<String>) {
        let svc =
            ServiceBuilder::new()
                .layer(layer)
                .service(service_fn(|req: Request<()>| async move {
                    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
                    let xff = req
                        .headers()
                        .get("x-forwarded-for")
                        .map(|v| v.to_str().unwrap().to_owned());
                    Ok::<_, Infallible>((ip, xff))
                }));
        let mut b = Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(()).unwrap();
        req.extensions_mut()
            .insert(ConnectionInfo::new(SocketAddr::new(
                peer.parse().unwrap(),
                4000,
            )));
        svc.oneshot(req).await.unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test]
    async fn untrusted_peer_is_the_client_and_its_forwarding_headers_go() {
        let l = layer(&["10.0.0.0/8"], ForwardedSource::XForwardedFor);
        let (client, xff) = resolve(l, "203.0.113.7", &[("x-forwarded-for", "1.1.1.1")]).await;
        assert_eq!(client, ip("203.0.113.7"));
        assert_eq!(xff, None, "a forged chain is not forwarded");
    }

    #[tokio::test]
    async fn trusted_hops_are_skipped_right_to_left() {
        let l = layer(
            &["10.0.0.0/8", "192.168.1.1"],
            ForwardedSource::XForwardedFor,
        );
        let (client, xff) = resolve(
            l.clone(),
            "10.0.0.2",
            &[
                ("x-forwarded-for", "6.6.6.6, 198.51.100.4, 192.168.1.1"),
                ("x-forwarded-for", "10.1.1.1"),
            ],
        )
        .await;
        assert_eq!(
            client,
            ip("198.51.100.4"),
            "the left-most entry is not trusted blindly"
        );
        assert!(xff.is_some(), "a trusted chain is kept");
        // Every hop trusted: the left-most one.
        let (client, _) =
            resolve(l, "10.0.0.2", &[("x-forwarded-for", "10.9.9.9, 10.8.8.8")]).await;
        assert_eq!(client, ip("10.9.9.9"));
    }

    #[tokio::test]
    async fn ipv6_ports_and_mapped_addresses() {
        let l = layer(
            &["2001:db8::/32", "10.0.0.0/8"],
            ForwardedSource::XForwardedFor,
        );
        let (client, _) = resolve(
            l.clone(),
            "2001:db8::1",
            &[(
                "x-forwarded-for",
                "[2001:db9::5]:443, ::ffff:10.0.0.9, 2001:db8::7",
            )],
        )
        .await;
        assert_eq!(client, ip("2001:db9::5"));
        let (client, _) = resolve(
            l,
            "::ffff:10.0.0.1",
            &[("x-forwarded-for", "203.0.113.9:5000")],
        )
        .await;
        assert_eq!(
            client,
            ip("203.0.113.9"),
            "a v4-mapped peer matches a v4 CIDR"
        );
    }

    #[tokio::test]
    async fn garbage_never_fails_and_falls_back_to_the_last_good_hop() {
        let l = layer(&["10.0.0.0/8"], ForwardedSource::XForwardedFor);
        for (chain, expected) in [
            ("not-an-ip, 10.0.0.5", "10.0.0.5"),
            ("1.2.3.4, 999.1.1.1", "10.0.0.2"),
            ("", "10.0.0.2"),
            (" , ,", "10.0.0.2"),
            ("1.2.3.4, unknown, 10.0.0.3", "10.0.0.3"),
        ] {
            let (client, _) = resolve(l.clone(), "10.0.0.2", &[("x-forwarded-for", chain)]).await;
            assert_eq!(client, ip(expected), "{chain:?}");
        }
    }

    #[tokio::test]
    async fn rfc7239_forwarded() {
        let l = layer(&["10.0.0.0/8"], ForwardedSource::Forwarded);
        let (client, _) = resolve(
            l.clone(),
            "10.0.0.2",
            &[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\", For=10.0.0.7")],
        )
        .await;
        assert_eq!(client, ip("2001:db8:cafe::17"));
        let (client, _) =
            resolve(l, "10.0.0.2", &[("forwarded", "for=_hidden, for=10.0.0.3")]).await;
        assert_eq!(client, ip("10.0.0.3"), "an obfuscated node stops the walk");
    }

    #[test]
    fn bad_cidrs_are_config_errors() {
        let err = ClientIpLayer::from_config(&ClientIpConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.0/99".into()],
            ..ClientIpConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "trusted_proxies[1]: \"10.0.0.0/99\" is not a CIDR or an IP address"
        );
    }
}
