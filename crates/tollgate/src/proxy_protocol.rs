//! HAProxy's PROXY protocol on a listener
//! ([`Serve::proxy_protocol`](crate::Serve::proxy_protocol),
//! `[server.proxy_protocol]` in the config file).
//!
//! An L4 (TCP) load balancer that does not keep client addresses (AWS's
//! NLB with IP targets, a NAT-ing balancer, HAProxy in TCP mode) can say
//! who the client is in a header it writes before the client's bytes:
//! version 1 is a line of text, version 2 a binary block. With it on, every
//! connection must start with one; its source address becomes the
//! connection's [`ConnectionInfo::remote`], so client IPs, rate-limit keys,
//! `X-Forwarded-For` and the access log name the client rather than the
//! balancer. The header is parsed by the `ppp` crate.

use std::{
    fmt, io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::{io::AsyncReadExt, net::TcpStream};
use tollgate_core::ConnectionInfo;

/// The longest header taken. Version 1's is at most 107 bytes; version 2's
/// is 16 plus its addresses and TLVs, which balancers keep short (AWS adds
/// a VPC endpoint id, HAProxy a summary of the client's TLS). A longer one
/// is refused, so a peer cannot make a connection hold more than this.
pub const MAX_PROXY_HEADER: usize = 4096;

/// Reads a PROXY protocol header (version 1 or 2) at the start of every
/// connection, before TLS and HTTP; see [`Serve::proxy_protocol`].
///
/// [`Serve::proxy_protocol`]: crate::Serve::proxy_protocol
///
/// ```
/// use tollgate::ProxyProtocol;
///
/// // Only the balancers' subnet may connect; they must send the header.
/// let proxy_protocol = ProxyProtocol::new().allow_from(["10.0.0.0/16".parse().unwrap()]);
/// # let _ = proxy_protocol;
///
/// // The balancers must send it; anyone else (a probe inside the
/// // cluster) is served as a plain connection, its own address.
/// let proxy_protocol = ProxyProtocol::new()
///     .allow_from(["10.0.0.0/16".parse().unwrap()])
///     .others(tollgate::ProxyProtocolOthers::Direct);
/// # let _ = proxy_protocol;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ProxyProtocol {
    /// The peers that may connect, as networks (`10.0.0.0/16`) or single
    /// addresses: a connection from any other peer is closed before
    /// anything is read from it, so a client that reaches the listener
    /// around the balancer cannot claim an address of its choosing. Empty
    /// (the default): any peer, which is only safe when the network lets
    /// nothing but the balancers reach the listener.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::peers"))]
    pub allow_from: Vec<IpNet>,
    /// What a connection from a peer outside a non-empty `allow_from`
    /// gets (default [`ProxyProtocolOthers::Close`]).
    pub others: ProxyProtocolOthers,
}

/// What [`ProxyProtocol`] does with a peer outside its `allow_from`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ProxyProtocolOthers {
    /// Closed before anything is read from it (`"close"`).
    #[default]
    Close,
    /// Served as a plain connection, without a header and under its own
    /// address (`"direct"`): probes and clients inside the network that
    /// reach the listener without the balancer. A header such a peer
    /// sends is not read, so it claims nothing (it reaches HTTP as a bad
    /// request). Envoy's `allow_requests_without_proxy_protocol`, for the
    /// peers not trusted to send one.
    Direct,
}

impl ProxyProtocol {
    /// Every connection must start with a header, from any peer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Only these peers may connect (see
    /// [`allow_from`](Self#structfield.allow_from)); added to those already
    /// allowed.
    #[must_use]
    pub fn allow_from(mut self, peers: impl IntoIterator<Item = IpNet>) -> Self {
        self.allow_from.extend(peers);
        self
    }

    /// What peers outside [`allow_from`](Self#structfield.allow_from) get
    /// (see [`ProxyProtocolOthers`]).
    #[must_use]
    pub fn others(mut self, others: ProxyProtocolOthers) -> Self {
        self.others = others;
        self
    }

    fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.allow_from.is_empty() || self.allow_from.iter().any(|net| net.contains(&peer))
    }

    /// Reads the header from `stream` within `timeout`, taking exactly its
    /// bytes: what follows (a TLS handshake, a request) stays in the
    /// socket. The connection's info with the header's source address (or
    /// as it was, for a peer served directly), or `None` when the
    /// connection is to be closed (logged at debug: a peer not allowed, no
    /// header, a bad or overlong one, the time up).
    pub(crate) async fn accept(
        &self,
        stream: &mut TcpStream,
        info: ConnectionInfo,
        timeout: Duration,
    ) -> Option<ConnectionInfo> {
        let peer = info.remote;
        if !self.allows(peer.ip()) {
            if self.others == ProxyProtocolOthers::Direct {
                return Some(info);
            }
            tracing::debug!(%peer, "peer not allowed to send a PROXY protocol header; closing");
            return None;
        }
        match tokio::time::timeout(timeout, read_header(stream)).await {
            Ok(Ok(Some(client))) => Some(info.proxied_for(client)),
            // LOCAL (the balancer's own health check) or no address given:
            // the peer speaks for itself.
            Ok(Ok(None)) => Some(info),
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "bad PROXY protocol header; closing");
                None
            }
            Err(_) => {
                tracing::debug!(
                    %peer,
                    "no PROXY protocol header within the header read timeout; closing"
                );
                None
            }
        }
    }
}

/// Why a header was refused.
#[derive(Debug)]
enum HeaderError {
    Io(io::Error),
    Closed,
    TooLong,
    Invalid(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => write!(f, "reading the header: {err}"),
            Self::Closed => f.write_str("the peer closed before a whole header"),
            Self::TooLong => write!(f, "longer than {MAX_PROXY_HEADER} bytes"),
            Self::Invalid(why) => f.write_str(why),
        }
    }
}

impl From<io::Error> for HeaderError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

/// Reads one header; the client's address, or `None` when the header gives
/// none to use.
///
/// Peeks, so that nothing past the header leaves the socket: bytes peeked
/// while the header is still incomplete are all header and are taken;
/// once it is complete, exactly its remaining bytes are. (The reader after
/// this one, rustls or hyper, then reads the socket itself, with no
/// buffer to hand over.)
async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    let mut header = Vec::with_capacity(128);
    let mut chunk = [0u8; CHUNK];
    loop {
        let room = MAX_PROXY_HEADER - header.len();
        if room == 0 {
            return Err(HeaderError::TooLong);
        }
        let peeked = stream.peek(&mut chunk[..room.min(CHUNK)]).await?;
        if peeked == 0 {
            return Err(HeaderError::Closed);
        }
        let taken = header.len();
        header.extend_from_slice(&chunk[..peeked]);
        let parsed = HeaderResult::parse(&header);
        // A version-1 line is judged once it has ended, or once it is too
        // long to be one, not by `ppp`'s idea of completeness: `ppp` takes
        // a line that ends with fields missing (`PROXY TCP4 1.2.3.4\r\n`)
        // for one still arriving, which would swallow the bytes after it,
        // and a line cut just before its last field for a bad one.
        let wait = if header.starts_with(b"PROXY ") {
            !header.contains(&b'\n') && header.len() < V1_MAX
        } else {
            parsed.is_incomplete()
        };
        if wait {
            stream.read_exact(&mut chunk[..peeked]).await?;
            continue;
        }
        let (len, client) = match parsed {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_client(h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_client(&h)?),
            HeaderResult::V1(Err(err)) => return Err(HeaderError::Invalid(err.to_string())),
            HeaderResult::V2(Err(err)) => return Err(HeaderError::Invalid(err.to_string())),
        };
        // The header was incomplete with `taken` bytes and is complete
        // within `taken + peeked`.
        let rest = len.saturating_sub(taken).min(peeked);
        stream.read_exact(&mut chunk[..rest]).await?;
        return Ok(client);
    }
}

/// What one peek looks at.
const CHUNK: usize = 512;

/// The longest version-1 line, `\r\n` included.
const V1_MAX: usize = 107;

/// A client address as the rest of the gateway sees it: an IPv4 client
/// that a balancer listening on IPv6 names as `::ffff:a.b.c.d` is
/// `a.b.c.d`, for client IPs, rate-limit keys and trusted-proxy checks.
fn client(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into().to_canonical(), port)
}

fn v1_client(addresses: v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(client(a.source_address, a.source_port)),
        v1::Addresses::Tcp6(a) => Some(client(a.source_address, a.source_port)),
        v1::Addresses::Unknown => None,
    }
}

fn v2_client(header: &v2::Header<'_>) -> Result<Option<SocketAddr>, HeaderError> {
    if header.command == v2::Command::Local {
        return Ok(None);
    }
    if header.protocol == v2::Protocol::Datagram {
        return Err(HeaderError::Invalid(
            "a UDP source on a TCP listener".to_owned(),
        ));
    }
    Ok(match header.addresses {
        v2::Addresses::IPv4(a) => Some(client(a.source_address, a.source_port)),
        v2::Addresses::IPv6(a) => Some(client(a.source_address, a.source_port)),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    })
}

/// The config file's peer list: a network or a single address each.
#[cfg(feature = "serde")]
mod de {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, de::Error};

    pub(super) fn peers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        D::Error::custom(format!("{item:?} is not a network or an IP address"))
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncWriteExt, net::TcpListener};

    use super::*;

    /// A connected pair: what the test writes on `client` is read by
    /// `read_header` on the server side.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        out.push(0x20 | command);
        out.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    /// Reads the header, then what is left in the socket.
    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
        let (mut client, mut server) = pair().await;
        client.write_all(bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let result = read_header(&mut server).await;
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        (result, rest)
    }

    #[tokio::test]
    async fn a_v1_header_gives_the_client_and_leaves_the_rest() {
        let (result, rest) =
            read(b"PROXY TCP4 203.0.113.7 10.0.0.1 52000 443\r\nGET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(result.unwrap(), Some("203.0.113.7:52000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");

        let (result, rest) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 52000 443\r\nX").await;
        assert_eq!(
            result.unwrap(),
            Some("[2001:db8::7]:52000".parse().unwrap())
        );
        assert_eq!(rest, b"X");

        let (result, rest) = read(b"PROXY UNKNOWN\r\nX").await;
        assert_eq!(result.unwrap(), None);
        assert_eq!(rest, b"X");

        // An IPv4 client named in IPv6 by a balancer listening on `::`.
        let (result, _) =
            read(b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:10.0.0.1 52000 443\r\n").await;
        assert_eq!(result.unwrap(), Some("203.0.113.7:52000".parse().unwrap()));
    }

    /// A line that has ended is judged at once, fields missing or not:
    /// the bytes after it are never taken for more of it.
    #[tokio::test]
    async fn an_ended_line_with_fields_missing_is_refused_at_once() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"PROXY TCP4 203.0.113.7\r\nGET / HTTP/1.1\r\n")
            .await
            .unwrap();
        // The peer stays open: a reader that waited for more would hang.
        let result = tokio::time::timeout(Duration::from_secs(5), read_header(&mut server))
            .await
            .expect("judged without waiting");
        assert!(matches!(result, Err(HeaderError::Invalid(_))), "{result:?}");
        drop(client);
    }

    #[tokio::test]
    async fn a_v2_header_gives_the_client_and_leaves_the_rest() {
        let v4 = [203, 0, 113, 7, 10, 0, 0, 1, 0xcb, 0x20, 0x01, 0xbb];
        // A TLV (type 0x04, NOOP) after the addresses.
        let mut bytes = v2(1, 0x11, &v4, &[0x04, 0, 2, 0, 0]);
        bytes.extend_from_slice(b"GET /");
        let (result, rest) = read(&bytes).await;
        assert_eq!(result.unwrap(), Some("203.0.113.7:52000".parse().unwrap()));
        assert_eq!(rest, b"GET /");

        let mut v6 = Vec::new();
        v6.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend_from_slice(&[0xcb, 0x20, 0x01, 0xbb]);
        let (result, _) = read(&v2(1, 0x21, &v6, &[])).await;
        assert_eq!(
            result.unwrap(),
            Some("[2001:db8::7]:52000".parse().unwrap())
        );

        // LOCAL: the balancer's own connection, addresses or not.
        let (result, rest) = read(&[v2(0, 0x11, &v4, &[]), b"X".to_vec()].concat()).await;
        assert_eq!(result.unwrap(), None);
        assert_eq!(rest, b"X");
        let (result, _) = read(&v2(1, 0x00, &[], &[])).await;
        assert_eq!(result.unwrap(), None);

        // UDP over IPv4 on a TCP listener.
        let (result, _) = read(&v2(1, 0x12, &v4, &[])).await;
        assert!(matches!(result, Err(HeaderError::Invalid(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_header_sent_a_byte_at_a_time_is_read_whole() {
        let (mut client, mut server) = pair().await;
        let writer = tokio::spawn(async move {
            for byte in b"PROXY TCP4 198.51.100.9 10.0.0.1 40000 80\r\nok" {
                client.write_all(&[*byte]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            client
        });
        let result = read_header(&mut server).await.unwrap();
        assert_eq!(result, Some("198.51.100.9:40000".parse().unwrap()));
        drop(writer.await.unwrap());
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"ok");
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PROXY TCP4 300.0.0.1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 70000 443\r\n",
            b"PROXY TCP9 a b 1 2\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            let (result, _) = read(bytes).await;
            assert!(
                matches!(result, Err(HeaderError::Invalid(_))),
                "{bytes:?}: {result:?}"
            );
        }
        // A version-1 line with no end.
        let (result, _) = read(&[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat()).await;
        assert!(matches!(result, Err(HeaderError::Invalid(_))), "{result:?}");
        // Cut short.
        let (result, _) = read(b"PROXY TCP4 203.0.113.7").await;
        assert!(matches!(result, Err(HeaderError::Closed)), "{result:?}");
        // A version-2 header longer than the limit.
        let huge = v2(1, 0x11, &[0; 12], &vec![0; MAX_PROXY_HEADER]);
        let (mut client, mut server) = pair().await;
        let writer = tokio::spawn(async move {
            // The reader stops early; the rest may not be wanted.
            let _ = client.write_all(&huge).await;
            client
        });
        let result = read_header(&mut server).await;
        assert!(matches!(result, Err(HeaderError::TooLong)), "{result:?}");
        drop(server);
        drop(writer.await.unwrap());
    }

    /// Arbitrary bytes never panic the parser, and whatever it decides,
    /// it takes no byte past the header: what is left is the input's tail.
    #[tokio::test]
    async fn arbitrary_bytes_get_an_answer_and_nothing_past_the_header_is_taken() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..300 {
            let random: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
            // Most start like a header, to get past the first check.
            let prefix: &[u8] = match round % 3 {
                0 => b"PROXY ",
                1 => b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c",
                _ => b"",
            };
            let bytes = [prefix, &random].concat();
            let (result, rest) = read(&bytes).await;
            assert!(bytes.ends_with(&rest), "round {round}");
            if result.is_ok() {
                assert!(rest.len() < bytes.len(), "round {round}");
            }
        }
    }

    #[test]
    fn peers_match_by_network_and_canonical_address() {
        let any = ProxyProtocol::new();
        assert!(any.allows("192.0.2.1".parse().unwrap()));
        let some = ProxyProtocol::new().allow_from([
            "10.0.0.0/16".parse().unwrap(),
            IpNet::from("192.0.2.5".parse::<IpAddr>().unwrap()),
        ]);
        assert!(some.allows("10.0.200.1".parse().unwrap()));
        assert!(some.allows("192.0.2.5".parse().unwrap()));
        assert!(some.allows("::ffff:10.0.0.9".parse().unwrap()));
        assert!(!some.allows("10.1.0.1".parse().unwrap()));
        assert!(!some.allows("192.0.2.6".parse().unwrap()));
    }
}
