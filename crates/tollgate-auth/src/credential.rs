//! Where credentials are read from: `Authorization: Bearer`, a header, a
//! cookie or a query parameter. Every reader refuses duplicates and
//! oversized values before anything is parsed.

use http::{HeaderMap, HeaderName, HeaderValue, Uri, header, request::Parts};

use crate::AuthError;

/// Where a credential is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    Bearer,
    /// The whole value of a header, e.g. `X-Api-Key`.
    Header(HeaderName),
    /// A cookie by name.
    Cookie(String),
    /// A query parameter by name (RFC 6750 §2.3 for tokens). Query strings
    /// end up in logs of every proxy on the way; prefer a header.
    Query(String),
}

/// What a request carries for one source.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'a> {
    Absent,
    Present(&'a str),
    Invalid(AuthError),
}

impl CredentialSource {
    /// Finds the credential in the request head, bounded by `max_len`
    /// bytes. A source given twice is malformed, never "pick one".
    pub(crate) fn find<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &'a Uri,
        max_len: usize,
    ) -> Found<'a> {
        let found = match self {
            Self::Bearer => bearer(headers),
            Self::Header(name) => single_header(headers, name),
            Self::Cookie(name) => cookie(headers, name),
            Self::Query(name) => query(uri, name),
        };
        match found {
            Found::Present(value) if value.len() > max_len => Found::Invalid(AuthError::TooLarge),
            Found::Present("") => Found::Invalid(AuthError::Malformed),
            other => other,
        }
    }

    /// Removes this credential from the request: the `Authorization`
    /// header only when it is a `Bearer` one (a `Basic` header meant for
    /// the upstream stays), a header, one cookie of the `Cookie` header(s),
    /// or one query parameter (the others keep their bytes and order).
    pub(crate) fn strip(&self, parts: &mut Parts) {
        match self {
            Self::Bearer => {
                if bearer_or_invalid(&parts.headers) {
                    parts.headers.remove(header::AUTHORIZATION);
                }
            }
            Self::Header(name) => {
                parts.headers.remove(name);
            }
            Self::Cookie(name) => strip_cookie(&mut parts.headers, name),
            Self::Query(name) => {
                if let Some(uri) = without_query_params(&parts.uri, std::slice::from_ref(name)) {
                    parts.uri = uri;
                }
            }
        }
    }
}

/// Removes the cookie `name` from every `Cookie` field, dropping fields
/// left empty.
fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let fields: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    if fields.is_empty() {
        return;
    }
    let is_named = |pair: &str| pair.trim().split_once('=').is_some_and(|(k, _)| k == name);
    headers.remove(header::COOKIE);
    for field in fields {
        let Ok(text) = field.to_str() else {
            // Not text: not ours to edit.
            headers.append(header::COOKIE, field);
            continue;
        };
        if !text.split(';').any(is_named) {
            headers.append(header::COOKIE, field);
            continue;
        }
        let kept: Vec<&str> = text
            .split(';')
            .filter(|p| !is_named(p))
            .map(str::trim)
            .collect();
        if !kept.is_empty()
            && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
        {
            headers.append(header::COOKIE, value);
        }
    }
}

/// `uri` without the query parameters named in `names`; the other
/// parameters keep their bytes and order.
pub(crate) fn without_query_params(uri: &Uri, names: &[String]) -> Option<Uri> {
    let query = uri.query()?;
    let is_credential = |pair: &&str| {
        let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
        names.iter().any(|n| n == key)
    };
    if !query.split('&').any(|pair| is_credential(&pair)) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_credential(p)).collect();
    let mut target = uri.path().to_owned();
    if !kept.is_empty() {
        target.push('?');
        target.push_str(&kept.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().ok()?);
    Uri::from_parts(parts).ok()
}

fn single_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Found<'a> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Found::Absent;
    };
    if values.next().is_some() {
        return Found::Invalid(AuthError::Malformed);
    }
    match visible_ascii(value) {
        Some(value) => Found::Present(value.trim()),
        None => Found::Invalid(AuthError::Malformed),
    }
}

/// `value` as text when it is ASCII: the same answer as
/// `HeaderValue::to_str` (a header value never holds other control bytes
/// than tab, nor DEL), but checked a word at a time instead of byte by
/// byte, which for a 600-byte token was the larger part of finding it.
fn visible_ascii(value: &http::HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    if bytes.is_ascii() {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

fn bearer(headers: &HeaderMap) -> Found<'_> {
    match single_header(headers, &header::AUTHORIZATION) {
        Found::Present(value) => {
            // The scheme is case-insensitive (RFC 9110 §11.1); another
            // scheme (Basic, DPoP …) is not ours to judge.
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if scheme.eq_ignore_ascii_case("bearer") {
                Found::Present(token.trim_start())
            } else {
                Found::Absent
            }
        }
        other => other,
    }
}

/// Whether [`bearer`] finds a token or an invalid header: the same answer
/// without checking a bearer token's bytes, which [`bearer`] already did
/// for the request this strips (a bearer token's header goes whether it is
/// valid or not).
fn bearer_or_invalid(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return false;
    };
    if values.next().is_some() {
        return true;
    }
    let bytes = value.as_bytes().trim_ascii();
    let scheme = bytes.split(|b| *b == b' ').next().unwrap_or_default();
    scheme.eq_ignore_ascii_case(b"bearer") || !bytes.is_ascii()
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Found<'a> {
    let mut found = None;
    // HTTP/2 may split cookies over several header fields (RFC 9113 §8.2.3).
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for pair in value.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k == name {
                if found.is_some() {
                    return Found::Invalid(AuthError::Malformed);
                }
                found = Some(v.trim_matches('"'));
            }
        }
    }
    found.map_or(Found::Absent, Found::Present)
}

fn query<'a>(uri: &'a Uri, name: &str) -> Found<'a> {
    let Some(query) = uri.query() else {
        return Found::Absent;
    };
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            if found.is_some() {
                return Found::Invalid(AuthError::Malformed);
            }
            found = Some(v);
        }
    }
    // Tokens and keys are base64url or hex; a value that needs
    // percent-decoding is not one we issued.
    match found {
        Some(v) if v.contains('%') || v.contains('+') => Found::Invalid(AuthError::Malformed),
        Some(v) => Found::Present(v),
        None => Found::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_absent() {
        let uri = Uri::from_static("/");
        let h = headers(&[("authorization", "bEaReR abc.def.ghi")]);
        assert_eq!(
            CredentialSource::Bearer.find(&h, &uri, 100),
            Found::Present("abc.def.ghi")
        );
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(CredentialSource::Bearer.find(&h, &uri, 100), Found::Absent);
        let h = headers(&[("authorization", "Bearer ")]);
        assert_eq!(
            CredentialSource::Bearer.find(&h, &uri, 100),
            Found::Invalid(AuthError::Malformed)
        );
    }

    /// The strip's quick check removes exactly the headers that `bearer`
    /// reports as a token or as invalid.
    #[test]
    fn the_strip_check_agrees_with_bearer() {
        let values: [&[u8]; 12] = [
            b"Bearer abc.def.ghi",
            b"bEaReR   spaced",
            b"Bearer",
            b"Bearer ",
            b"Basic dXNlcjpwYXNz",
            b"Bearer caf\xc3\xa9",
            b"B\xc3\xa9arer token",
            b"Basic caf\xc3\xa9",
            b"Bearer\ttab",
            b"DPoP token",
            b"",
            b"bearertoken",
        ];
        for bytes in values {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                http::HeaderValue::from_bytes(bytes).unwrap(),
            );
            let found = !matches!(bearer(&h), Found::Absent);
            assert_eq!(bearer_or_invalid(&h), found, "{bytes:?}");
        }
        let h = headers(&[("authorization", "Basic a"), ("authorization", "Basic b")]);
        assert!(bearer_or_invalid(&h));
        assert!(!matches!(bearer(&h), Found::Absent));
        assert!(!bearer_or_invalid(&HeaderMap::new()));
    }

    #[test]
    fn the_ascii_check_agrees_with_to_str() {
        let values: [&[u8]; 6] = [
            b"Bearer abc.def",
            b"tab\there",
            b"caf\xc3\xa9",
            b"\xff\xfe",
            b"",
            b"~!#$%&'*+-.^_`|",
        ];
        for bytes in values {
            let value = http::HeaderValue::from_bytes(bytes).unwrap();
            assert_eq!(visible_ascii(&value), value.to_str().ok(), "{bytes:?}");
        }
    }

    #[test]
    fn duplicates_and_oversized_values_are_refused() {
        let uri = Uri::from_static("/?token=a&token=b");
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            CredentialSource::Bearer.find(&h, &uri, 100),
            Found::Invalid(AuthError::Malformed)
        );
        assert_eq!(
            CredentialSource::Query("token".into()).find(&h, &uri, 100),
            Found::Invalid(AuthError::Malformed)
        );
        let h = headers(&[("x-api-key", "0123456789")]);
        assert_eq!(
            CredentialSource::Header(HeaderName::from_static("x-api-key")).find(&h, &uri, 5),
            Found::Invalid(AuthError::TooLarge)
        );
    }

    #[test]
    fn credential_query_params_are_removed_and_the_rest_kept() {
        let names = vec!["api_key".to_owned()];
        let uri = Uri::from_static("/a?x=1&api_key=s3cret&y=%2F");
        assert_eq!(without_query_params(&uri, &names).unwrap(), "/a?x=1&y=%2F");
        let uri = Uri::from_static("/a?api_key=s3cret");
        assert_eq!(without_query_params(&uri, &names).unwrap(), "/a");
        assert!(without_query_params(&Uri::from_static("/a?x=1"), &names).is_none());
    }

    #[test]
    fn cookies_across_fields_and_query_parameters() {
        let uri = Uri::from_static("/x?a=1&access_token=tok&b");
        let h = headers(&[("cookie", "a=1; session=s1"), ("cookie", "other=2")]);
        assert_eq!(
            CredentialSource::Cookie("session".into()).find(&h, &uri, 100),
            Found::Present("s1")
        );
        let h2 = headers(&[("cookie", "session=s1"), ("cookie", "session=s2")]);
        assert_eq!(
            CredentialSource::Cookie("session".into()).find(&h2, &uri, 100),
            Found::Invalid(AuthError::Malformed)
        );
        assert_eq!(
            CredentialSource::Query("access_token".into()).find(&h, &uri, 100),
            Found::Present("tok")
        );
        assert_eq!(
            CredentialSource::Query("nope".into()).find(&h, &uri, 100),
            Found::Absent
        );
    }
}
