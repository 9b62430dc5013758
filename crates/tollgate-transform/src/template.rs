//! Templates: text with variables filled from the request, parsed once
//! when the rules are built and rendered per request.
//!
//! | variable              | value                                                        |
//! |-----------------------|--------------------------------------------------------------|
//! | `{request_id}`        | the [`RequestId`] extension                                  |
//! | `{client_ip}`         | the [`ClientIp`] extension                                   |
//! | `{identity.subject}`  | [`Identity::subject`]                                        |
//! | `{identity.consumer}` | [`Identity::consumer`]                                       |
//! | `{identity.plan}`     | [`Identity::plan`]                                           |
//! | `{claim.<name>}`      | a claim: a string, number or boolean; `a.b` reads nested objects |
//! | `{header.<name>}`     | the first value of a request header (visible ASCII)          |
//! | `{path.<param>}`      | a [`PathParams`] entry, e.g. a named group of a path regex rule |
//! | `{query.<name>}`      | the first query parameter `name`, percent-decoded            |
//!
//! Anything else is literal text; `{{` and `}}` stand for `{` and `}`.
//! An unknown variable or an unbalanced brace is a [`ConfigError`].
//!
//! ```
//! use tollgate_transform::Template;
//!
//! let t = Template::parse("user={identity.subject} req={request_id}")?;
//! assert_eq!(t.variables().count(), 2);
//! assert!(Template::parse("{nope}").is_err());
//! assert!(Template::parse("{{literal}}")?.is_literal());
//! # Ok::<(), tollgate_core::ConfigError>(())
//! ```

use std::{fmt, io::Write as _, ops::Range, sync::Arc};

use http::{HeaderName, request::Parts};
use tollgate_core::{ClientIp, ConfigError, ConfigErrorKind, Identity, RequestId};

/// A parsed template. See the [module docs](self).
#[derive(Clone)]
pub struct Template {
    source: Arc<str>,
    pieces: Box<[Piece]>,
}

#[derive(Clone, Debug)]
enum Piece {
    Literal(Box<str>),
    /// A variable and its text between the braces (for error details).
    Var(Var, Box<str>),
}

#[derive(Clone, Debug)]
enum Var {
    RequestId,
    ClientIp,
    Subject,
    Consumer,
    Plan,
    /// The claim name as written, and its dot-separated segments.
    Claim(Box<str>, Box<[Box<str>]>),
    Header(HeaderName),
    Path(Box<str>),
    Query(Box<str>),
}

/// What to do when a template variable has no value on a request (or the
/// rendered text cannot be used, e.g. it is not a valid header value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum OnMissing {
    /// Leave the header, parameter or field out and go on (the default).
    #[default]
    Skip,
    /// Answer 400 problem+json `bad-request`, naming the variable.
    Reject,
}

/// A template variable without a value on this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingValue<'t> {
    var: &'t str,
}

/// Path parameters of a request, for `{path.<param>}`.
///
/// A regex path rule of [`RequestRules`](crate::RequestRules) inserts them
/// as a request extension: every named group of the pattern by its name,
/// and every group by its number (`{path.1}`). Any layer before the
/// transform may insert its own instead.
#[derive(Clone, Debug, Default)]
pub struct PathParams {
    source: String,
    entries: Vec<(Arc<str>, Range<usize>)>,
}

// === impl Template ===

impl Template {
    /// Parses `source`.
    ///
    /// # Errors
    ///
    /// An unknown variable, an empty name, an invalid header name, or an
    /// unbalanced `{` or `}`.
    pub fn parse(source: &str) -> Result<Self, ConfigError> {
        let bad = |msg: String| {
            ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("template {source:?}: {msg}"),
            )
        };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if tail.starts_with('}') {
                return Err(bad("unmatched `}` (write `}}` for a literal brace)".into()));
            } else {
                let end = tail
                    .find('}')
                    .ok_or_else(|| bad("unclosed `{` (write `{{` for a literal brace)".into()))?;
                let name = &tail[1..end];
                let var = parse_var(name).map_err(bad)?;
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
                }
                pieces.push(Piece::Var(var, name.into()));
                rest = &tail[end + 1..];
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal.into()));
        }
        Ok(Self {
            source: source.into(),
            pieces: pieces.into(),
        })
    }

    /// The template as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the template has no variables.
    #[must_use]
    pub fn is_literal(&self) -> bool {
        self.variables().next().is_none()
    }

    /// The literal text of a template without variables.
    #[must_use]
    pub fn literal_text(&self) -> Option<String> {
        let mut out = String::new();
        for piece in &*self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Var(..) => return None,
            }
        }
        Some(out)
    }

    /// The variables, as written between the braces.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(_, name) => Some(&**name),
            Piece::Literal(_) => None,
        })
    }

    /// Appends the rendered template to `out`, reading the request's
    /// extensions, headers and query. Allocates nothing but `out`'s growth.
    ///
    /// # Errors
    ///
    /// The first variable without a value; `out` then holds a partial
    /// rendering.
    pub fn render(&self, parts: &Parts, out: &mut Vec<u8>) -> Result<(), MissingValue<'_>> {
        for piece in &*self.pieces {
            match piece {
                Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Var(var, name) => {
                    if !render_var(var, parts, out) {
                        return Err(MissingValue { var: name });
                    }
                }
            }
        }
        Ok(())
    }

    /// The rendered value without copying it, for a template that is one
    /// variable whose value the request holds as text: `None` for any
    /// other template (render it with [`render`](Self::render)).
    pub(crate) fn as_stored<'p>(
        &self,
        parts: &'p Parts,
    ) -> Option<Result<&'p [u8], MissingValue<'_>>> {
        let [Piece::Var(var, name)] = &*self.pieces else {
            return None;
        };
        Some(var_bytes(var, parts)?.ok_or(MissingValue { var: name }))
    }
}

fn parse_var(name: &str) -> Result<Var, String> {
    let rest_of = |prefix: &str| -> Result<Option<Box<str>>, String> {
        match name.strip_prefix(prefix) {
            Some("") => Err(format!("`{{{name}}}` needs a name after `{prefix}`")),
            Some(rest) => Ok(Some(rest.into())),
            None => Ok(None),
        }
    };
    Ok(match name {
        "request_id" => Var::RequestId,
        "client_ip" => Var::ClientIp,
        "identity.subject" => Var::Subject,
        "identity.consumer" => Var::Consumer,
        "identity.plan" => Var::Plan,
        _ => {
            if let Some(claim) = rest_of("claim.")? {
                if claim.split('.').any(str::is_empty) {
                    return Err(format!("`{{{name}}}`: empty claim path segment"));
                }
                let segments = claim.split('.').map(Box::from).collect();
                Var::Claim(claim, segments)
            } else if let Some(header) = rest_of("header.")? {
                let header = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("`{{{name}}}`: not a valid header name"))?;
                Var::Header(header)
            } else if let Some(param) = rest_of("path.")? {
                Var::Path(param)
            } else if let Some(param) = rest_of("query.")? {
                Var::Query(param)
            } else {
                return Err(format!(
                    "unknown variable `{{{name}}}` (known: request_id, client_ip, \
                     identity.subject, identity.consumer, identity.plan, claim.*, \
                     header.*, path.*, query.*)"
                ));
            }
        }
    })
}

/// The value of `var` as the request holds it: `Some` for a variable
/// whose value is stored text (`Some(None)` when it has none), `None` for
/// one whose value must be formatted or decoded.
fn var_bytes<'p>(var: &Var, parts: &'p Parts) -> Option<Option<&'p [u8]>> {
    let ext = &parts.extensions;
    let identity = || ext.get::<Identity>();
    let text = match var {
        Var::RequestId => {
            return Some(
                ext.get::<RequestId>()
                    .map(|id| id.header_value().as_bytes()),
            );
        }
        Var::Subject => identity().and_then(|i| i.subject.as_deref()),
        Var::Consumer => identity().and_then(|i| i.consumer.as_deref()),
        Var::Plan => identity().and_then(|i| i.plan.as_deref()),
        Var::Header(name) => parts.headers.get(name).and_then(|v| v.to_str().ok()),
        Var::Path(param) => ext.get::<PathParams>().and_then(|p| p.get(param)),
        Var::ClientIp | Var::Claim(..) | Var::Query(_) => return None,
    };
    Some(text.map(str::as_bytes))
}

/// Writes the value of `var`; `false` when it has none.
fn render_var(var: &Var, parts: &Parts, out: &mut Vec<u8>) -> bool {
    if let Some(value) = var_bytes(var, parts) {
        return value.map(|v| out.extend_from_slice(v)).is_some();
    }
    let ext = &parts.extensions;
    let text = |out: &mut Vec<u8>, s: Option<&str>| {
        s.map(|s| out.extend_from_slice(s.as_bytes())).is_some()
    };
    match var {
        Var::RequestId
        | Var::Subject
        | Var::Consumer
        | Var::Plan
        | Var::Header(_)
        // Stored text, answered by `var_bytes` above.
        | Var::Path(_) => false,
        Var::ClientIp => ext
            .get::<ClientIp>()
            .is_some_and(|ip| write!(out, "{}", ip.0).is_ok()),
        Var::Claim(whole, segments) => {
            let Some(identity) = ext.get::<Identity>() else {
                return false;
            };
            // A claim whose own name has dots ("https://x/roles") wins
            // over a nested path.
            let value = identity.claim(whole).or_else(|| {
                let (first, rest) = segments.split_first()?;
                rest.iter()
                    .try_fold(identity.claim(first)?, |v, s| v.as_object()?.get(&**s))
            });
            match value {
                Some(serde_json::Value::String(s)) => text(out, Some(s)),
                Some(serde_json::Value::Number(n)) => write!(out, "{n}").is_ok(),
                Some(serde_json::Value::Bool(b)) => {
                    text(out, Some(if *b { "true" } else { "false" }))
                }
                _ => false,
            }
        }
        Var::Query(param) => parts
            .uri
            .query()
            .and_then(|q| crate::request::query::find(q, param))
            .map(|raw| crate::request::query::decode_into(raw, out))
            .is_some(),
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&&*self.source).finish()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl std::str::FromStr for Template {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// === impl MissingValue ===

impl MissingValue<'_> {
    /// The variable, as written between the braces (from the
    /// configuration, never from the request).
    #[must_use]
    pub fn variable(&self) -> &str {
        self.var
    }
}

impl fmt::Display for MissingValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no value for template variable {{{}}}", self.var)
    }
}

// === impl PathParams ===

impl PathParams {
    /// Parameters from `(name, value)` pairs.
    pub fn from_pairs<I, N, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<Arc<str>>,
        V: AsRef<str>,
    {
        let mut this = Self::default();
        for (name, value) in pairs {
            let start = this.source.len();
            this.source.push_str(value.as_ref());
            this.entries.push((name.into(), start..this.source.len()));
        }
        this
    }

    /// The value of parameter `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| &**n == name)
            .and_then(|(_, range)| self.source.get(range.clone()))
    }

    /// The captures of `regex` on `path`, by group name and number.
    pub(crate) fn from_captures(
        path: &str,
        names: &[Option<Arc<str>>],
        numbers: &[Arc<str>],
        captures: &regex::Captures<'_>,
    ) -> Self {
        let mut entries = Vec::with_capacity(names.len() * 2);
        for (i, m) in captures.iter().enumerate().skip(1) {
            let Some(m) = m else { continue };
            if let Some(Some(name)) = names.get(i) {
                entries.push((Arc::clone(name), m.range()));
            }
            if let Some(number) = numbers.get(i) {
                entries.push((Arc::clone(number), m.range()));
            }
        }
        Self {
            source: path.to_owned(),
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use std::net::{IpAddr, Ipv4Addr};

    fn render(t: &str, parts: &Parts) -> Result<String, String> {
        let t = Template::parse(t).unwrap();
        let mut out = Vec::new();
        t.render(parts, &mut out)
            .map_err(|m| m.variable().to_owned())?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn parts() -> Parts {
        let (mut parts, ()) = Request::get("/u/7?a=1&name=J%C3%B6rg+B&x")
            .header("x-client", "web")
            .body(())
            .unwrap()
            .into_parts();
        let mut claims = serde_json::Map::new();
        claims.insert("tenant".into(), "acme".into());
        claims.insert("level".into(), 3.into());
        claims.insert("admin".into(), true.into());
        claims.insert("org".into(), serde_json::json!({"id": "o-1", "n": [1]}));
        claims.insert("a.b".into(), "dotted".into());
        parts.extensions.insert(
            Identity::subject("42")
                .with_plan("free")
                .with_claims(claims),
        );
        parts.extensions.insert(RequestId::from_static("r-1"));
        parts
            .extensions
            .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
        parts
            .extensions
            .insert(PathParams::from_pairs([("id", "7")]));
        parts
    }

    #[test]
    fn renders_every_variable() {
        let p = parts();
        let t = "{request_id}|{client_ip}|{identity.subject}|{identity.plan}|{claim.tenant}|\
                 {claim.level}|{claim.admin}|{claim.org.id}|{claim.a.b}|{header.X-Client}|\
                 {path.id}|{query.name}|{query.x}|{{x}}";
        assert_eq!(
            render(t, &p).unwrap(),
            "r-1|203.0.113.7|42|free|acme|3|true|o-1|dotted|web|7|Jörg B||{x}"
        );
    }

    #[test]
    fn missing_values_name_the_variable() {
        let p = parts();
        for t in [
            "{identity.consumer}",
            "{claim.nope}",
            "{claim.org.n}",
            "{claim.org}",
            "{header.x-nope}",
            "{path.nope}",
            "{query.nope}",
        ] {
            assert_eq!(render(t, &p).unwrap_err(), &t[1..t.len() - 1]);
        }
        let (bare, ()) = Request::get("/").body(()).unwrap().into_parts();
        assert_eq!(render("{request_id}", &bare).unwrap_err(), "request_id");
        assert_eq!(render("{client_ip}", &bare).unwrap_err(), "client_ip");
    }

    #[test]
    fn bad_templates_are_config_errors() {
        for t in [
            "{",
            "}",
            "a}b",
            "{x",
            "{nope}",
            "{claim.}",
            "{header.}",
            "{header.a b}",
            "{claim.a..b}",
            "{path.}",
            "{query.}",
        ] {
            assert!(Template::parse(t).is_err(), "{t}");
        }
        let t = Template::parse("a{{b}}c").unwrap();
        assert_eq!(t.literal_text().as_deref(), Some("a{b}c"));
        assert!(!Template::parse("{path.x}").unwrap().is_literal());
    }
}
