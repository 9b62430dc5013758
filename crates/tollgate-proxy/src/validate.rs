//! Requests that must not be forwarded, found before routing.

use http::{
    HeaderValue, Method, Request, Version,
    header::{ALLOW, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING},
};
use tollgate_core::{ConnectionInfo, Problem};

/// The methods a gateway forwards: all but CONNECT.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE";

/// Checks a request before it is routed and forwarded, and returns the
/// problem to answer with when it must not go on:
///
/// - `CONNECT` (the gateway is not a forward proxy): 405;
/// - a target that is not a path (authority form, `*`): 400;
/// - an HTTP/1.1 request that came over a connection without `Host`, or
///   any request with several `Host` fields or an invalid one (RFC 9112
///   §3.2): 400;
/// - both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1, the
///   shape of request smuggling): 400, and the connection is closed;
/// - a `.` or `..` path segment, plain or percent-encoded: 400. Once a
///   route strips its prefix, such a path could climb out of the route's
///   space on the upstream.
///
/// The gateway's router runs it on every request; call it yourself when
/// you put an [`Upstream`](crate::Upstream) behind your own routing.
///
/// `None` means the request may go on.
pub fn validate_request<B>(req: &Request<B>) -> Option<Problem> {
    if req.method() == Method::CONNECT {
        // RFC 9110 §15.5.6: a 405 names the methods that are allowed.
        return Some(
            Problem::method_not_allowed()
                .detail("CONNECT is not supported")
                .header(ALLOW, HeaderValue::from_static(ALLOWED_METHODS)),
        );
    }
    let path = req.uri().path();
    if !path.starts_with('/') {
        return Some(Problem::bad_request().detail("the request target is not a path"));
    }
    if let Some(problem) = check_host(req) {
        return Some(problem);
    }
    let headers = req.headers();
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        return Some(
            Problem::bad_request()
                .detail("the request has both Content-Length and Transfer-Encoding")
                .header(CONNECTION, HeaderValue::from_static("close")),
        );
    }
    if has_dot_segment(path) {
        return Some(Problem::bad_request().detail("the path has a '.' or '..' segment"));
    }
    None
}

fn check_host<B>(req: &Request<B>) -> Option<Problem> {
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        // Only requests that came over a connection: in-process callers
        // (`oneshot` in tests and handlers) often build requests without one.
        (None, _)
            if req.version() == Version::HTTP_11
                && req.uri().authority().is_none()
                && req.extensions().get::<ConnectionInfo>().is_some() =>
        {
            Some(Problem::bad_request().detail("the request has no Host header"))
        }
        (Some(_), Some(_)) => {
            Some(Problem::bad_request().detail("the request has more than one Host header"))
        }
        (Some(host), None) if !is_valid_host(host.as_bytes()) => {
            Some(Problem::bad_request().detail("the Host header is not a valid host"))
        }
        _ => None,
    }
}

/// `host [ ":" port ]` (RFC 9110 §7.2) with a reg-name, IPv4 or bracketed
/// IPv6 host, checked without allocating.
fn is_valid_host(bytes: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = bytes.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let (v6, after) = (&rest[..end], &rest[end + 1..]);
        if v6.is_empty()
            || !v6
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match after {
            [] => return true,
            [b':', port @ ..] => (&b"x"[..], port),
            _ => return false,
        }
    } else {
        match bytes.iter().rposition(|&b| b == b':') {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (bytes, &b""[..]),
        }
    };
    let host_ok = !host.is_empty()
        && host.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        });
    let port_ok = port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    host_ok && port_ok && (bytes.last() != Some(&b':'))
}

/// Whether the path has a `.` or `..` segment, plain or percent-encoded
/// (`%2e`, `%2E`), without allocating.
fn has_dot_segment(path: &str) -> bool {
    if !path.contains('.') && !path.contains('%') {
        return false;
    }
    path.split('/').any(|segment| {
        let mut rest = segment.as_bytes();
        let mut dots = 0;
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3
                && rest[0] == b'%'
                && rest[1] == b'2'
                && rest[2] | 0x20 == b'e'
            {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
            if dots > 2 {
                return false;
            }
        }
        dots > 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_plain_and_encoded() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2E/b",
            "/a/.%2e",
            "/a/%2E",
            "/.",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for ok in [
            "/a/b",
            "/a/.well-known/x",
            "/a/..b",
            "/file.txt",
            "/a%2fb",
            "/",
            "/.../x",
            "/%2e%2e%2e",
            "/%2",
        ] {
            assert!(!has_dot_segment(ok), "{ok}");
        }
    }

    #[test]
    fn hosts_are_checked_without_allocating() {
        for ok in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "a_b.local",
        ] {
            assert!(is_valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "example.com:",
            "example.com:port",
            "[::1",
            "[zz]",
            "[::1]x",
            "h\u{80}",
            "a@b",
            "e:123456",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn connect_and_non_path_targets_are_refused() {
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri("example.com:443")
            .body(())
            .unwrap();
        assert_eq!(validate_request(&req).unwrap().status(), 405);
        let req = Request::builder().uri("example.com:80").body(()).unwrap();
        assert_eq!(validate_request(&req).unwrap().status(), 400);
        let req = Request::builder()
            .method(Method::OPTIONS)
            .uri("*")
            .body(())
            .unwrap();
        assert_eq!(validate_request(&req).unwrap().status(), 400);
        let req = Request::builder()
            .uri("http://example.com/ok")
            .body(())
            .unwrap();
        assert!(validate_request(&req).is_none());
    }

    #[test]
    fn framing_conflicts_close_the_connection() {
        let req = Request::builder()
            .uri("/")
            .header(CONTENT_LENGTH, "4")
            .header(TRANSFER_ENCODING, "chunked")
            .body(())
            .unwrap();
        let problem = validate_request(&req).unwrap();
        let res = problem.into_response::<tollgate_core::body::BoxBody>();
        assert_eq!(res.status(), 400);
        assert_eq!(res.headers()[CONNECTION], "close");
    }
}
