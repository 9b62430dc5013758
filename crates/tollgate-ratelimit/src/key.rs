//! What a limit is keyed by: the consumer, the subject, the client IP, a
//! header, the route, a closure, or a combination of these.

use std::{fmt, io::Write, sync::Arc};

use http::{Extensions, HeaderMap, HeaderName, Method, Request, Uri};
use tollgate_core::{ClientIp, ConnectionInfo, Identity, RouteName};

/// The longest key value accepted from one source; a longer one counts as
/// missing (so the limiter falls back or rejects, per [`MissingKey`]).
pub const MAX_KEY_LEN: usize = 1024;

/// What a limit is keyed by. See the [crate docs](crate) for an example.
///
/// A key is a list of alternatives tried in order ([`Key::or`]); each
/// alternative is one or more parts that must all be present
/// ([`Key::and`]). A part is missing when its extension or header is
/// absent, empty, longer than [`MAX_KEY_LEN`] bytes or holds control
/// characters.
#[derive(Clone)]
#[must_use]
pub struct Key {
    alternatives: Vec<Vec<KeyPart>>,
}

/// One source of a key value.
#[derive(Clone)]
#[non_exhaustive]
pub enum KeyPart {
    /// `Identity.consumer` (the API key's owner).
    Consumer,
    /// `Identity.subject` (the JWT `sub`).
    Subject,
    /// `Identity.consumer`, else `Identity.subject`.
    Identity,
    /// The `ClientIp` extension, resolved by the request-id crate from the
    /// peer and the trusted proxies; never a raw header.
    ClientIp,
    /// A request header's value.
    Header(HeaderName),
    /// The `RouteName` extension.
    Route,
    /// One constant key: everyone shares the quota.
    Global,
    /// A closure.
    Custom(CustomKey),
}

/// A user closure that returns a key value, or `None` when it has none.
#[derive(Clone)]
pub struct CustomKey(Arc<dyn Fn(&KeyRequest<'_>) -> Option<String> + Send + Sync>);

/// What a [`CustomKey`] closure sees of the request.
#[derive(Debug)]
pub struct KeyRequest<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (`Identity`, `ClientIp`, `RouteName` …).
    pub extensions: &'a Extensions,
}

/// What happens when no alternative of the key is present or valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum MissingKey {
    /// Fall back to the identity (consumer, then subject), then the client
    /// IP (`ClientIp`, then the connection's peer address); reject when
    /// even that is missing.
    #[default]
    Fallback,
    /// Reject with 400 problem+json.
    Reject,
}

/// Why no key could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// No alternative was present.
    Missing,
    /// A value was present but too long or not printable.
    Invalid,
}

/// A key made for one request.
#[derive(Debug)]
pub(crate) struct MadeKey {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fell_back: bool,
}

// === impl Key ===

impl Key {
    fn part(part: KeyPart) -> Self {
        Self {
            alternatives: vec![vec![part]],
        }
    }

    /// `Identity.consumer`.
    pub fn consumer() -> Self {
        Self::part(KeyPart::Consumer)
    }

    /// `Identity.subject`.
    pub fn subject() -> Self {
        Self::part(KeyPart::Subject)
    }

    /// `Identity.consumer`, else `Identity.subject`.
    pub fn identity() -> Self {
        Self::part(KeyPart::Identity)
    }

    /// The `ClientIp` extension.
    pub fn client_ip() -> Self {
        Self::part(KeyPart::ClientIp)
    }

    /// A header's value. Clients choose header values freely: combine it
    /// with the client IP, or use it only behind authentication.
    pub fn header(name: HeaderName) -> Self {
        Self::part(KeyPart::Header(name))
    }

    /// The `RouteName` extension.
    pub fn route() -> Self {
        Self::part(KeyPart::Route)
    }

    /// One key for every request.
    pub fn global() -> Self {
        Self::part(KeyPart::Global)
    }

    /// A closure of the request; `None` means missing.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&KeyRequest<'_>) -> Option<String> + Send + Sync + 'static,
    {
        Self::part(KeyPart::Custom(CustomKey(Arc::new(f))))
    }

    /// A key from explicit alternatives of parts.
    pub fn from_parts(alternatives: Vec<Vec<KeyPart>>) -> Self {
        Self { alternatives }
    }

    /// Both keys at once, e.g. `Key::consumer().and(Key::route())`: every
    /// alternative of `self` combined with every alternative of `other`.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "reads as Key::consumer().and(Key::route())"
    )]
    pub fn and(self, other: Self) -> Self {
        let mut alternatives =
            Vec::with_capacity(self.alternatives.len() * other.alternatives.len());
        for a in &self.alternatives {
            for b in &other.alternatives {
                alternatives.push(a.iter().chain(b).cloned().collect());
            }
        }
        Self { alternatives }
    }

    /// `other` when `self` is missing.
    pub fn or(mut self, other: Self) -> Self {
        self.alternatives.extend(other.alternatives);
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.alternatives.is_empty() || self.alternatives.iter().any(Vec::is_empty)
    }

    /// The key of `req`: the first alternative whose parts are all present
    /// and valid, then the fallback when `missing` says so.
    pub(crate) fn make<B>(
        &self,
        req: &Request<B>,
        missing: MissingKey,
    ) -> Result<MadeKey, KeyError> {
        let mut bytes = Vec::with_capacity(64);
        let mut error = KeyError::Missing;
        for parts in &self.alternatives {
            bytes.clear();
            match write_parts(parts, req, &mut bytes) {
                Ok(()) => {
                    return Ok(MadeKey {
                        bytes,
                        fell_back: false,
                    });
                }
                Err(KeyError::Invalid) => error = KeyError::Invalid,
                Err(KeyError::Missing) => {}
            }
        }
        if missing == MissingKey::Reject {
            return Err(error);
        }
        for part in [KeyPart::Identity, KeyPart::ClientIp] {
            bytes.clear();
            if write_part(&part, req, &mut bytes).is_ok() {
                return Ok(MadeKey {
                    bytes,
                    fell_back: true,
                });
            }
        }
        // The peer address when no ClientIp layer runs in front.
        bytes.clear();
        if let Some(info) = req.extensions().get::<ConnectionInfo>() {
            bytes.extend_from_slice(b"ip=");
            let _ = write!(bytes, "{}", info.remote.ip());
            return Ok(MadeKey {
                bytes,
                fell_back: true,
            });
        }
        Err(error)
    }
}

impl Default for Key {
    /// The identity (consumer, then subject), else the client IP.
    fn default() -> Self {
        Self::identity().or(Self::client_ip())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Key").field(&self.alternatives).finish()
    }
}

impl fmt::Debug for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Consumer => f.write_str("Consumer"),
            Self::Subject => f.write_str("Subject"),
            Self::Identity => f.write_str("Identity"),
            Self::ClientIp => f.write_str("ClientIp"),
            Self::Header(name) => f.debug_tuple("Header").field(name).finish(),
            Self::Route => f.write_str("Route"),
            Self::Global => f.write_str("Global"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl fmt::Debug for CustomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomKey(..)")
    }
}

/// Writes every part, separated by 0x1f (never in a valid value).
fn write_parts<B>(parts: &[KeyPart], req: &Request<B>, out: &mut Vec<u8>) -> Result<(), KeyError> {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0x1f);
        }
        write_part(part, req, out)?;
    }
    Ok(())
}

fn write_part<B>(part: &KeyPart, req: &Request<B>, out: &mut Vec<u8>) -> Result<(), KeyError> {
    let ext = req.extensions();
    let identity = || ext.get::<Identity>();
    match part {
        KeyPart::Consumer => tagged(
            out,
            b"consumer=",
            identity().and_then(|i| i.consumer.as_deref()),
        ),
        KeyPart::Subject => tagged(
            out,
            b"subject=",
            identity().and_then(|i| i.subject.as_deref()),
        ),
        KeyPart::Identity => {
            let id = identity().ok_or(KeyError::Missing)?;
            match (&id.consumer, &id.subject) {
                (Some(c), _) => tagged(out, b"consumer=", Some(c)),
                (None, Some(s)) => tagged(out, b"subject=", Some(s)),
                (None, None) => Err(KeyError::Missing),
            }
        }
        KeyPart::ClientIp => {
            let ip = ext.get::<ClientIp>().ok_or(KeyError::Missing)?;
            out.extend_from_slice(b"ip=");
            let _ = write!(out, "{ip}");
            Ok(())
        }
        KeyPart::Header(name) => {
            let value = req.headers().get(name).map(http::HeaderValue::as_bytes);
            out.extend_from_slice(b"h:");
            out.extend_from_slice(name.as_str().as_bytes());
            tagged_bytes(out, b"=", value)
        }
        KeyPart::Route => tagged(
            out,
            b"route=",
            ext.get::<RouteName>().map(RouteName::as_str),
        ),
        KeyPart::Global => {
            out.push(b'*');
            Ok(())
        }
        KeyPart::Custom(CustomKey(f)) => {
            let view = KeyRequest {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                extensions: ext,
            };
            tagged(out, b"custom=", f(&view).as_deref())
        }
    }
}

fn tagged(out: &mut Vec<u8>, tag: &[u8], value: Option<&str>) -> Result<(), KeyError> {
    tagged_bytes(out, tag, value.map(str::as_bytes))
}

fn tagged_bytes(out: &mut Vec<u8>, tag: &[u8], value: Option<&[u8]>) -> Result<(), KeyError> {
    let value = value.ok_or(KeyError::Missing)?;
    if value.is_empty() {
        return Err(KeyError::Missing);
    }
    if value.len() > MAX_KEY_LEN || value.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(KeyError::Invalid);
    }
    out.extend_from_slice(tag);
    out.extend_from_slice(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    fn req() -> Request<()> {
        Request::new(())
    }

    fn with<T: Clone + Send + Sync + 'static>(mut req: Request<()>, ext: T) -> Request<()> {
        req.extensions_mut().insert(ext);
        req
    }

    fn made(key: &Key, req: &Request<()>) -> Result<String, KeyError> {
        key.make(req, MissingKey::Reject)
            .map(|k| String::from_utf8_lossy(&k.bytes).into_owned())
    }

    const IP: ClientIp = ClientIp(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));

    #[test]
    fn every_key_kind() {
        let id = Identity::consumer("acme").with_plan("free");
        let mut both = Identity::subject("u-1");
        both.consumer = Some("acme".into());
        let r = with(with(with(req(), both), IP), RouteName::new("users"));
        assert_eq!(made(&Key::consumer(), &r).unwrap(), "consumer=acme");
        assert_eq!(made(&Key::subject(), &r).unwrap(), "subject=u-1");
        assert_eq!(made(&Key::identity(), &r).unwrap(), "consumer=acme");
        assert_eq!(
            made(&Key::identity(), &with(req(), Identity::subject("u-2"))).unwrap(),
            "subject=u-2"
        );
        assert_eq!(made(&Key::client_ip(), &r).unwrap(), "ip=203.0.113.9");
        assert_eq!(made(&Key::route(), &r).unwrap(), "route=users");
        assert_eq!(made(&Key::global(), &r).unwrap(), "*");
        assert_eq!(
            made(&Key::consumer().and(Key::route()), &r).unwrap(),
            "consumer=acme\u{1f}route=users"
        );
        let custom = Key::custom(|r| Some(format!("{}{}", r.method, r.uri.path())));
        assert_eq!(made(&custom, &r).unwrap(), "custom=GET/");
        let mut h = with(req(), id);
        h.headers_mut().insert("x-api-key", "k1".parse().unwrap());
        let header = Key::header(HeaderName::from_static("x-api-key"));
        assert_eq!(made(&header, &h).unwrap(), "h:x-api-key=k1");
        assert_eq!(made(&Key::subject(), &h), Err(KeyError::Missing));
    }

    #[test]
    fn alternatives_are_tried_in_order() {
        let key = Key::consumer().or(Key::client_ip());
        assert_eq!(made(&key, &with(req(), IP)).unwrap(), "ip=203.0.113.9");
        assert_eq!(made(&key, &req()), Err(KeyError::Missing));
    }

    #[test]
    fn huge_or_garbage_values_are_invalid_and_fall_back_or_reject() {
        let header = Key::header(HeaderName::from_static("x-api-key"));
        for bad in ["x".repeat(MAX_KEY_LEN + 1).into_bytes(), b"a\x01b".to_vec()] {
            let mut r = with(req(), IP);
            r.headers_mut().insert(
                "x-api-key",
                http::HeaderValue::from_bytes(&bad)
                    .unwrap_or(http::HeaderValue::from_static("a\tb")),
            );
            assert_eq!(made(&header, &r), Err(KeyError::Invalid));
            let fb = header.make(&r, MissingKey::Fallback).unwrap();
            assert!(fb.fell_back);
            assert_eq!(fb.bytes, b"ip=203.0.113.9");
        }
        let mut r = req();
        r.headers_mut()
            .insert("x-api-key", "x".repeat(MAX_KEY_LEN).parse().unwrap());
        assert!(made(&header, &r).is_ok(), "exactly 1 KiB is accepted");
    }

    #[test]
    fn fallback_uses_the_identity_then_the_ip_then_the_peer() {
        let key = Key::header(HeaderName::from_static("x-api-key"));
        let fb = |r: &Request<()>| {
            key.make(r, MissingKey::Fallback)
                .map(|k| String::from_utf8_lossy(&k.bytes).into_owned())
        };
        assert_eq!(
            fb(&with(with(req(), IP), Identity::consumer("c"))).unwrap(),
            "consumer=c"
        );
        assert_eq!(fb(&with(req(), IP)).unwrap(), "ip=203.0.113.9");
        let peer: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        assert_eq!(
            fb(&with(req(), ConnectionInfo::new(peer))).unwrap(),
            "ip=198.51.100.1"
        );
        assert_eq!(fb(&req()), Err(KeyError::Missing));
    }
}
