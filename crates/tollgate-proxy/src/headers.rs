//! Hop-by-hop headers (RFC 9110 §7.6.1) and the forwarding headers
//! (`X-Forwarded-*`, RFC 7239 `Forwarded`).

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{CONNECTION, FORWARDED, TE, TRAILER, TRANSFER_ENCODING, UPGRADE},
};

/// `Keep-Alive` and `Proxy-Connection` are not in `http::header`.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Which forwarding headers the proxy writes to the upstream request.
///
/// The defaults: `X-Forwarded-For` appended, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` set, RFC 7239 `Forwarded` off, `Host` set to the
/// upstream's authority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ForwardedHeaders {
    /// Append the client address to `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// Set `X-Forwarded-Proto` to the scheme the client used.
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Host` to the host the client asked for.
    pub x_forwarded_host: bool,
    /// Append an RFC 7239 `Forwarded` element (`for`, `proto`, `host`).
    pub forwarded: bool,
    /// Keep the client's `Host` header instead of the upstream's authority.
    pub preserve_host: bool,
}

impl Default for ForwardedHeaders {
    fn default() -> Self {
        Self {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            forwarded: false,
            preserve_host: false,
        }
    }
}

/// Whether `headers` ask for a protocol upgrade: an `Upgrade` header and an
/// `upgrade` token in `Connection` (which may read `keep-alive, Upgrade`).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the hop-by-hop headers: `Connection` and every header it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding` and
/// `Upgrade`.
///
/// With `upgrade`, the `Upgrade` header is kept and `Connection` is set to
/// `upgrade`, so that the next hop sees a valid upgrade. A `TE: trailers`
/// request header is kept as well, as Envoy does: gRPC needs it end to end.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them: one pass over the names is cheaper
    // than a hashed removal of each.
    if !headers.keys().any(is_hop_by_hop) {
        if upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    if headers.contains_key(CONNECTION) {
        // Named headers are collected first: the map cannot be changed
        // while the Connection values are borrowed. This runs only when a
        // Connection header is present.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == UPGRADE) {
                headers.remove(&name);
            }
        }
        headers.remove(CONNECTION);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(TRAILER);
    headers.remove(TRANSFER_ENCODING);
    if headers.contains_key(TE) {
        let trailers_only = headers
            .get_all(TE)
            .iter()
            .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !trailers_only {
            headers.remove(TE);
        }
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Appends `ip` to `X-Forwarded-For`, folding several incoming fields into one.
pub(crate) fn append_x_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    if !headers.contains_key(X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR, ip_header(ip));
        return;
    }
    let mut buf = BytesMut::with_capacity(64);
    for value in headers.get_all(X_FORWARDED_FOR) {
        buf.put_slice(value.as_bytes());
        buf.put_slice(b", ");
    }
    write_ip(&mut buf, ip);
    if let Ok(value) = HeaderValue::from_maybe_shared(buf.freeze()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// Appends an RFC 7239 element: `for=…;proto=…;host=…`.
pub(crate) fn append_forwarded(
    headers: &mut HeaderMap,
    ip: Option<IpAddr>,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    let mut buf = BytesMut::with_capacity(96);
    for value in headers.get_all(FORWARDED) {
        buf.put_slice(value.as_bytes());
        buf.put_slice(b", ");
    }
    match ip {
        Some(IpAddr::V4(v4)) => {
            buf.put_slice(b"for=");
            write_ip(&mut buf, IpAddr::V4(v4));
        }
        Some(IpAddr::V6(v6)) => {
            buf.put_slice(b"for=\"[");
            write_ip(&mut buf, IpAddr::V6(v6));
            buf.put_slice(b"]\"");
        }
        None => buf.put_slice(b"for=unknown"),
    }
    buf.put_slice(b";proto=");
    buf.put_slice(proto.as_bytes());
    if let Some(host) = host.filter(|h| is_token_safe(h.as_bytes())) {
        buf.put_slice(b";host=");
        buf.put_slice(host.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(buf.freeze()) {
        headers.insert(FORWARDED, value);
    }
}

/// A host can go into `Forwarded` unquoted when it is a plain `host[:port]`.
fn is_token_safe(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
}

/// `ip` as a header value. A worker sees the same few client addresses
/// (the load balancer in front, or a handful of clients) again and again, so
/// the last one rendered on this thread is kept: formatting an address
/// costs more than the rest of the header work together.
fn ip_header(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, value)) = last.as_ref()
            && *cached == ip
        {
            return value.clone();
        }
        let mut buf = BytesMut::with_capacity(40);
        write_ip(&mut buf, ip);
        let value = HeaderValue::from_maybe_shared(buf.freeze())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *last = Some((ip, value.clone()));
        value
    })
}

fn write_ip(buf: &mut BytesMut, ip: IpAddr) {
    use std::fmt::Write;
    // Writing to a BytesMut never fails.
    let _ = write!(buf, "{ip}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn removes_fixed_and_named_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "3");
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_on_upgrade() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
        ]);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn garbage_connection_tokens_are_ignored() {
        let mut h = map(&[("connection", " , ,bad header name, close")]);
        h.append(CONNECTION, HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
    }

    #[test]
    fn x_forwarded_for_appends_and_folds() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        append_x_forwarded_for(&mut h, "::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, ::1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn x_forwarded_for_is_set_when_absent() {
        let mut h = HeaderMap::new();
        append_x_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        let mut h = HeaderMap::new();
        append_x_forwarded_for(&mut h, "10.0.0.2".parse().unwrap());
        assert_eq!(
            h["x-forwarded-for"], "10.0.0.2",
            "the cache follows the address"
        );
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("example.com:8080");
        append_forwarded(&mut h, Some("::1".parse().unwrap()), "https", Some(&host));
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=https;host=example.com:8080"
        );
        append_forwarded(&mut h, Some("10.0.0.1".parse().unwrap()), "http", None);
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=https;host=example.com:8080, for=10.0.0.1;proto=http"
        );
    }
}
