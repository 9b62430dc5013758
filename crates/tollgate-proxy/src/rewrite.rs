//! Path rewriting: strip or replace a prefix at a segment boundary, or fill a
//! template. Percent-encoding and the query string pass through byte for byte.

use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, Uri, uri::PathAndQuery};
use tollgate_core::{ConfigError, ConfigErrorKind, OnRequest, RequestHook};
use tower::Layer;

/// Where a path prefix matches: only at a segment boundary.
///
/// Returns what follows the prefix (empty, or starting with `/`).
/// `"/api/users"` matches `"/api/users"` and `"/api/users/42"` but not
/// `"/api/usersX"`; the prefix `"/"` matches every path.
///
/// ```
/// use tollgate_proxy::rewrite::strip_segment_prefix;
/// assert_eq!(strip_segment_prefix("/api/users/42", "/api/users"), Some("/42"));
/// assert_eq!(strip_segment_prefix("/api/users", "/api/users"), Some(""));
/// assert_eq!(strip_segment_prefix("/api/usersX", "/api/users"), None);
/// assert_eq!(strip_segment_prefix("/anything", "/"), Some("/anything"));
/// ```
#[must_use]
pub fn strip_segment_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// How a route rewrites the path before it goes upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum PathRewrite {
    /// Forward the path unchanged. The default.
    #[default]
    Keep,
    /// Remove the route's prefix: `/api/users/42` → `/42` (`/` when nothing
    /// remains).
    StripPrefix,
    /// Replace the route's prefix: with `/users`, `/api/users/42` → `/users/42`.
    ReplacePrefix(String),
    /// Fill a template: `{rest}` is what follows the prefix, without its
    /// leading `/`, and `{path}` is the whole original path. With
    /// `/v2/users/{rest}`, `/api/users/42` → `/v2/users/42`.
    Template(String),
}

pub use tollgate_core::OriginalPath;

/// A [`PathRewrite`] bound to a prefix, checked and ready to apply.
#[derive(Clone, Debug)]
pub struct Rewriter {
    prefix: Box<str>,
    rule: Rule,
}

#[derive(Clone, Debug)]
enum Rule {
    Keep,
    Replace(Box<str>),
    Template(Box<[Piece]>),
}

#[derive(Clone, Debug)]
enum Piece {
    Text(Box<str>),
    Rest,
    Path,
}

/// A layer that rewrites the request path with a [`Rewriter`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RewritePathLayer {
    rewriter: Rewriter,
}

/// A service that rewrites the request path, then calls the inner service:
/// tollgate-core's [`OnRequest`] with a [`Rewriter`] as the hook. Build one
/// with `RewritePath::new(inner, rewriter)` or [`RewritePathLayer`].
///
/// A path that does not start with the prefix (at a segment boundary) is
/// passed on unchanged.
pub type RewritePath<S> = OnRequest<S, Rewriter>;

// === impl Rewriter ===

impl Rewriter {
    /// Binds `rewrite` to `prefix`.
    ///
    /// # Errors
    ///
    /// When the prefix or a replacement does not start with `/`, or a
    /// template has an unknown `{placeholder}` or an unbalanced brace.
    pub fn new(prefix: &str, rewrite: &PathRewrite) -> Result<Self, ConfigError> {
        if !prefix.starts_with('/') {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("prefix {prefix:?} must start with '/'"),
            ));
        }
        let rule = match rewrite {
            PathRewrite::Keep => Rule::Keep,
            PathRewrite::StripPrefix => Rule::Replace("".into()),
            PathRewrite::ReplacePrefix(with) => {
                check_path_text(with)?;
                Rule::Replace(with.trim_end_matches('/').into())
            }
            PathRewrite::Template(template) => {
                check_path_text(template)?;
                Rule::Template(parse_template(template)?)
            }
        };
        Ok(Self {
            prefix: prefix.trim_end_matches('/').into(),
            rule,
        })
    }

    /// Whether the rewriter leaves every path as it is.
    #[must_use]
    pub fn is_keep(&self) -> bool {
        matches!(self.rule, Rule::Keep)
    }

    /// Rewrites the request's path in place and records the client's path
    /// as an [`OriginalPath`] extension when it changed.
    pub fn apply<B>(&self, req: &mut Request<B>) {
        if let Some(uri) = self.rewrite(req.uri()) {
            let original = std::mem::replace(req.uri_mut(), uri);
            if let Some(pq) = original.into_parts().path_and_query {
                req.extensions_mut().insert(OriginalPath(pq));
            }
        }
    }

    /// Rewrites `uri`'s path; the query is kept as it is. Returns `None`
    /// when nothing changes.
    #[must_use]
    pub fn rewrite(&self, uri: &Uri) -> Option<Uri> {
        if matches!(self.rule, Rule::Keep) {
            return None;
        }
        let path = uri.path();
        let rest = strip_segment_prefix(path, &self.prefix)?;
        let mut buf = BytesMut::with_capacity(path.len() + 16);
        match &self.rule {
            Rule::Keep => return None,
            Rule::Replace(with) => {
                buf.put_slice(with.as_bytes());
                buf.put_slice(rest.as_bytes());
                if buf.is_empty() {
                    buf.put_u8(b'/');
                }
            }
            Rule::Template(pieces) => {
                for piece in pieces.iter() {
                    match piece {
                        Piece::Text(text) => buf.put_slice(text.as_bytes()),
                        Piece::Rest => buf.put_slice(rest.trim_start_matches('/').as_bytes()),
                        Piece::Path => buf.put_slice(path.as_bytes()),
                    }
                }
            }
        }
        if let Some(query) = uri.query() {
            buf.put_u8(b'?');
            buf.put_slice(query.as_bytes());
        }
        let pq = PathAndQuery::from_maybe_shared(Bytes::from(buf)).ok()?;
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).ok()
    }
}

fn check_path_text(text: &str) -> Result<(), ConfigError> {
    if !text.starts_with('/') {
        return Err(ConfigError::new(
            ConfigErrorKind::InvalidValue,
            format!("rewrite {text:?} must start with '/'"),
        ));
    }
    if text.contains(['?', '#', ' ']) {
        return Err(ConfigError::new(
            ConfigErrorKind::InvalidValue,
            format!("rewrite {text:?} may not contain '?', '#' or spaces"),
        ));
    }
    Ok(())
}

fn parse_template(template: &str) -> Result<Box<[Piece]>, ConfigError> {
    let bad = |why: String| ConfigError::new(ConfigErrorKind::InvalidValue, why);
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].into()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| bad(format!("template {template:?} has an unclosed '{{'")))?;
        pieces.push(match &after[..close] {
            "rest" => Piece::Rest,
            "path" => Piece::Path,
            other => {
                return Err(bad(format!(
                    "template {template:?} has an unknown placeholder {{{other}}}; use {{rest}} or {{path}}"
                )));
            }
        });
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(bad(format!("template {template:?} has an unmatched '}}'")));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.into()));
    }
    Ok(pieces.into_boxed_slice())
}

// === impl RewritePathLayer ===

impl RewritePathLayer {
    /// A layer applying `rewrite` below `prefix`.
    ///
    /// # Errors
    ///
    /// See [`Rewriter::new`].
    pub fn new(prefix: &str, rewrite: &PathRewrite) -> Result<Self, ConfigError> {
        Ok(Self {
            rewriter: Rewriter::new(prefix, rewrite)?,
        })
    }
}

impl<S> Layer<S> for RewritePathLayer {
    type Service = RewritePath<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OnRequest::new(inner, self.rewriter.clone())
    }
}

impl RequestHook for Rewriter {
    fn on_request<B>(&self, req: &mut Request<B>) {
        self.apply(req);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(prefix: &str, rule: &PathRewrite, uri: &str) -> String {
        let r = Rewriter::new(prefix, rule).unwrap();
        let uri: Uri = uri.parse().unwrap();
        r.rewrite(&uri).unwrap_or(uri).to_string()
    }

    #[test]
    fn replace_prefix_keeps_encoding_and_query() {
        let rule = PathRewrite::ReplacePrefix("/users".into());
        assert_eq!(rw("/api/users", &rule, "/api/users/42"), "/users/42");
        assert_eq!(rw("/api/users", &rule, "/api/users"), "/users");
        assert_eq!(
            rw("/api/users", &rule, "/api/users/a%2Fb%20c?x=%41&y=1+2"),
            "/users/a%2Fb%20c?x=%41&y=1+2"
        );
        assert_eq!(rw("/api/users", &rule, "/api/usersX"), "/api/usersX");
    }

    #[test]
    fn strip_prefix_never_leaves_an_empty_path() {
        assert_eq!(rw("/api", &PathRewrite::StripPrefix, "/api"), "/");
        assert_eq!(rw("/api", &PathRewrite::StripPrefix, "/api?q=1"), "/?q=1");
        assert_eq!(rw("/api/", &PathRewrite::StripPrefix, "/api/x"), "/x");
    }

    #[test]
    fn template_fills_rest_and_path() {
        let rule = PathRewrite::Template("/v2/users/{rest}".into());
        assert_eq!(
            rw("/api/users", &rule, "/api/users/42?a=b"),
            "/v2/users/42?a=b"
        );
        let rule = PathRewrite::Template("/legacy{path}".into());
        assert_eq!(rw("/api", &rule, "/api/x"), "/legacy/api/x");
    }

    #[test]
    fn bad_rules_are_config_errors() {
        for rule in [
            PathRewrite::Template("/x/{nope}".into()),
            PathRewrite::Template("/x/{rest".into()),
            PathRewrite::Template("/x/}".into()),
            PathRewrite::ReplacePrefix("users".into()),
            PathRewrite::ReplacePrefix("/u?x=1".into()),
        ] {
            assert!(Rewriter::new("/api", &rule).is_err(), "{rule:?}");
        }
        assert!(Rewriter::new("api", &PathRewrite::Keep).is_err());
    }

    #[test]
    fn absolute_uris_keep_scheme_and_authority() {
        let rule = PathRewrite::StripPrefix;
        assert_eq!(
            rw("/api", &rule, "https://example.com/api/x?y"),
            "https://example.com/x?y"
        );
    }
}
