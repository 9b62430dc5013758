//! Request rules: headers, path, query and JSON body, applied before the
//! inner service sees the request.
//!
//! Order on each request: the path rewrite (which sets [`PathParams`]),
//! then the header rules, the query rules, and last the JSON body rules.
//! Every template sees the request as the earlier rules left it.
//!
//! See the [crate docs](crate) for an example.

mod config;
pub(crate) mod json;
mod layer;
pub(crate) mod query;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Uri,
    header::{CONTENT_LENGTH, CONTENT_TYPE, Entry, InvalidHeaderValue, TRANSFER_ENCODING},
    request::Parts,
    uri::PathAndQuery,
};
use regex::Regex;
use tollgate_core::{ConfigError, ConfigErrorKind, Problem, RequestId};

pub use config::{HeaderRule, JsonRule, PathRule, QueryRule, RequestRulesConfig};
pub use layer::{RequestTransform, RequestTransformLayer, ResponseFuture};

use crate::{MissingValue, OnMissing, PathParams, Template};
use json::Pointer;

/// The body the inner service gets: the client's body, streaming
/// untouched, or the rewritten JSON.
pub type RequestBody<B> = tollgate_core::body::ResponseBody<B>;

/// The default limit of a body the JSON rules read: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// Compiled, validated request rules. Build them with
/// [`RequestRules::builder`] or from a [`RequestRulesConfig`].
#[derive(Clone, Debug)]
pub struct RequestRules {
    headers: Box<[HeaderOp]>,
    path: Box<[PathOp]>,
    query: Box<[QueryOp]>,
    json: Box<[JsonOp]>,
    body_limit: usize,
}

/// Builds [`RequestRules`]; checks happen in [`build`](Self::build).
///
/// ```
/// use tollgate_transform::{OnMissing, RequestRules};
///
/// let rules = RequestRules::builder()
///     .rewrite_prefix("/api", "/")
///     .on_missing(OnMissing::Reject)          // for the rules below
///     .set_header("x-user-id", "{identity.subject}")
///     .on_missing(OnMissing::Skip)
///     .set_header("x-request-id", "{request_id}")
///     .remove_header("cookie")
///     .remove_query("api_key")
///     .json_set("/meta/caller", "{identity.subject}")
///     .json_remove("/debug")
///     .build()?;
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct RequestRulesBuilder {
    config: RequestRulesConfig,
    on_missing: OnMissing,
}

#[derive(Clone, Debug)]
enum HeaderOp {
    Set(HeaderName, Value, OnMissing),
    Add(HeaderName, Value, OnMissing),
    Remove(HeaderName),
    Rename(HeaderName, HeaderName),
}

/// A header value: made at build time when the template is literal.
#[derive(Clone, Debug)]
enum Value {
    Literal(HeaderValue),
    Template(Template),
}

#[derive(Clone, Debug)]
enum PathOp {
    Prefix {
        from: Box<str>,
        to: Box<str>,
    },
    Regex {
        regex: Regex,
        names: Arc<[Option<Arc<str>>]>,
        numbers: Arc<[Arc<str>]>,
        to: Template,
        on_missing: OnMissing,
    },
}

#[derive(Clone, Debug)]
enum QueryOp {
    /// The name is stored percent-encoded.
    Add(Box<str>, Template, OnMissing),
    Remove(Box<str>),
    /// From (decoded), to (encoded).
    Rename(Box<str>, Box<str>),
}

#[derive(Clone, Debug)]
enum JsonOp {
    Add(Pointer, serde_json::Value),
    Set(Pointer, Template, OnMissing),
    Remove(Pointer),
    Rename(Pointer, Pointer),
}

/// Why a request was refused.
type Reject = Box<Problem>;

// === impl RequestRulesBuilder ===

impl RequestRulesBuilder {
    /// What the rules added after this call do when a template variable
    /// has no value ([`OnMissing::Skip`] until changed).
    pub fn on_missing(mut self, on_missing: OnMissing) -> Self {
        self.on_missing = on_missing;
        self
    }

    /// Sets header `name` to the template `value`, replacing its values.
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value, on_missing) = (name.into(), value.into(), self.on_missing);
        self.config.headers.push(HeaderRule::Set {
            name,
            value,
            on_missing,
        });
        self
    }

    /// Adds a value (a template) to header `name`.
    pub fn add_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value, on_missing) = (name.into(), value.into(), self.on_missing);
        self.config.headers.push(HeaderRule::Add {
            name,
            value,
            on_missing,
        });
        self
    }

    /// Removes header `name`.
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.config.headers.push(HeaderRule::Remove { name });
        self
    }

    /// Moves the values of header `from` to `to`.
    pub fn rename_header(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let (from, to) = (from.into(), to.into());
        self.config.headers.push(HeaderRule::Rename { from, to });
        self
    }

    /// Replaces the leading path segments `from` with `to`.
    pub fn rewrite_prefix(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let (from, to) = (from.into(), to.into());
        self.config.path.push(PathRule::Prefix { from, to });
        self
    }

    /// When `pattern` matches the path, the path becomes the template
    /// `to`; the groups are `{path.<name>}` and `{path.<n>}` there and in
    /// every later template.
    pub fn rewrite_regex(mut self, pattern: impl Into<String>, to: impl Into<String>) -> Self {
        let (pattern, to, on_missing) = (pattern.into(), to.into(), self.on_missing);
        self.config.path.push(PathRule::Regex {
            pattern,
            to,
            on_missing,
        });
        self
    }

    /// Appends query parameter `name` with the template `value`.
    pub fn add_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value, on_missing) = (name.into(), value.into(), self.on_missing);
        self.config.query.push(QueryRule::Add {
            name,
            value,
            on_missing,
        });
        self
    }

    /// Removes query parameter `name`.
    pub fn remove_query(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.config.query.push(QueryRule::Remove { name });
        self
    }

    /// Renames query parameter `from` to `to`.
    pub fn rename_query(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let (from, to) = (from.into(), to.into());
        self.config.query.push(QueryRule::Rename { from, to });
        self
    }

    /// Sets the JSON member at `pointer` to `value`.
    pub fn json_add(mut self, pointer: impl Into<String>, value: serde_json::Value) -> Self {
        let pointer = pointer.into();
        self.config.json.push(JsonRule::Add { pointer, value });
        self
    }

    /// Sets the JSON member at `pointer` to the string of the template
    /// `value`.
    pub fn json_set(mut self, pointer: impl Into<String>, value: impl Into<String>) -> Self {
        let (pointer, value, on_missing) = (pointer.into(), value.into(), self.on_missing);
        self.config.json.push(JsonRule::Set {
            pointer,
            value,
            on_missing,
        });
        self
    }

    /// Removes the JSON member at `pointer`.
    pub fn json_remove(mut self, pointer: impl Into<String>) -> Self {
        let pointer = pointer.into();
        self.config.json.push(JsonRule::Remove { pointer });
        self
    }

    /// Moves the JSON member at `from` to `to`.
    pub fn json_rename(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let (from, to) = (from.into(), to.into());
        self.config.json.push(JsonRule::Rename { from, to });
        self
    }

    /// The most body bytes the JSON rules read (default 1 MiB); a larger
    /// body gets 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config.body_limit = Some(bytes);
        self
    }

    /// Checks and compiles the rules.
    ///
    /// # Errors
    ///
    /// A bad header name, template, literal header value, path, regular
    /// expression, JSON pointer or a zero body limit.
    pub fn build(self) -> Result<RequestRules, ConfigError> {
        RequestRules::try_from(self.config)
    }
}

// === impl RequestRules ===

impl RequestRules {
    /// A builder with no rules.
    pub fn builder() -> RequestRulesBuilder {
        RequestRulesBuilder::default()
    }

    /// Whether the JSON rules read this request's body: there are some and
    /// the content type is JSON.
    #[inline]
    fn reads_body(&self, headers: &HeaderMap) -> bool {
        !self.json.is_empty() && headers.get(CONTENT_TYPE).is_some_and(is_json)
    }

    /// Applies the path, header and query rules.
    fn apply_head(&self, parts: &mut Parts) -> Result<(), Reject> {
        let path = self.rewrite_path(parts)?;
        // No `reserve` for the names the rules insert: removals and
        // renames often leave the map's capacity enough, and a reserve
        // counted from the inserts alone grew it on every request.
        for op in &*self.headers {
            op.apply(parts)?;
        }
        let query = self.rewrite_query(parts)?;
        if path.is_none() && query.is_none() {
            return Ok(());
        }
        let mut pq = path.unwrap_or_else(|| parts.uri.path().to_owned());
        let query = match query {
            Some(query) => Some(query),
            None => parts.uri.query().map(str::to_owned),
        };
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            pq.push('?');
            pq.push_str(&query);
        }
        let pq = PathAndQuery::try_from(pq)
            .map_err(|_| bad_request("the rewritten request target is not valid"))?;
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(pq);
        parts.uri = Uri::from_parts(uri)
            .map_err(|_| bad_request("the rewritten request target is not valid"))?;
        Ok(())
    }

    /// The new path, when a rule matched; inserts [`PathParams`] for a regex.
    fn rewrite_path(&self, parts: &mut Parts) -> Result<Option<String>, Reject> {
        for op in &*self.path {
            let path = parts.uri.path();
            match op {
                PathOp::Prefix { from, to } => {
                    let Some(rest) = strip_segments(path, from) else {
                        continue;
                    };
                    let rest = rest.strip_prefix('/').unwrap_or(rest);
                    let mut new = String::with_capacity(to.len() + rest.len() + 1);
                    new.push_str(to.strip_suffix('/').unwrap_or(to));
                    if !rest.is_empty() {
                        new.push('/');
                        new.push_str(rest);
                    }
                    if new.is_empty() {
                        new.push('/');
                    }
                    return Ok(Some(new));
                }
                PathOp::Regex {
                    regex,
                    names,
                    numbers,
                    to,
                    on_missing,
                } => {
                    let Some(captures) = regex.captures(path) else {
                        continue;
                    };
                    let params = PathParams::from_captures(path, names, numbers, &captures);
                    parts.extensions.insert(params);
                    let mut out = Vec::with_capacity(path.len());
                    let rendered = match to.render(parts, &mut out) {
                        Ok(()) => String::from_utf8(out).ok().filter(|p| is_valid_path(p)),
                        Err(missing) => {
                            return missing_value(*on_missing, &missing.to_string()).map(|()| None);
                        }
                    };
                    return match rendered {
                        Some(path) => Ok(Some(path)),
                        None => Err(bad_request("the rewritten path is not a valid path")),
                    };
                }
            }
        }
        Ok(None)
    }

    /// The new query, when a rule changed it.
    fn rewrite_query(&self, parts: &Parts) -> Result<Option<String>, Reject> {
        if self.query.is_empty() {
            return Ok(None);
        }
        let original = parts.uri.query().unwrap_or("");
        let mut out = String::with_capacity(original.len() + 32);
        let mut changed = false;
        let push_sep = |out: &mut String| {
            if !out.is_empty() {
                out.push('&');
            }
        };
        for pair in original.split('&').filter(|_| !original.is_empty()) {
            let (name, rest) = pair.split_at(pair.find('=').unwrap_or(pair.len()));
            let op = self.query.iter().find(|op| match op {
                QueryOp::Remove(n) | QueryOp::Rename(n, _) => query::name_eq(name, n),
                QueryOp::Add(..) => false,
            });
            match op {
                Some(QueryOp::Remove(_)) => changed = true,
                Some(QueryOp::Rename(_, to)) => {
                    changed = true;
                    push_sep(&mut out);
                    out.push_str(to);
                    out.push_str(rest);
                }
                _ => {
                    push_sep(&mut out);
                    out.push_str(pair);
                }
            }
        }
        let mut value = Vec::new();
        for op in &*self.query {
            let QueryOp::Add(name, template, on_missing) = op else {
                continue;
            };
            value.clear();
            if let Err(missing) = template.render(parts, &mut value) {
                missing_value(*on_missing, &missing.to_string())?;
                continue;
            }
            changed = true;
            push_sep(&mut out);
            out.push_str(name);
            out.push('=');
            query::encode_into(&value, &mut out);
        }
        Ok(changed.then_some(out))
    }

    /// Applies the JSON rules to a body; `None` when nothing changed
    /// (the original bytes go on).
    fn apply_json(&self, parts: &Parts, body: &[u8]) -> Result<Option<Bytes>, Reject> {
        if body.is_empty() {
            return Ok(None);
        }
        let mut doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            bad_request(format!(
                "the request body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if !doc.is_object() {
            // Field rules apply to objects; an array or a scalar goes on as sent.
            return Ok(None);
        }
        let mut changed = false;
        let mut scratch = Vec::new();
        for op in &*self.json {
            changed |= match op {
                JsonOp::Add(pointer, value) => pointer.insert(&mut doc, value.clone()),
                JsonOp::Set(pointer, template, on_missing) => {
                    scratch.clear();
                    let rendered = match template.render(parts, &mut scratch) {
                        Ok(()) => String::from_utf8(std::mem::take(&mut scratch))
                            .map_err(|_| format!("template for {} is not UTF-8", pointer.as_str())),
                        Err(missing) => Err(missing.to_string()),
                    };
                    match rendered {
                        Ok(text) => pointer.insert(&mut doc, text.into()),
                        Err(why) => {
                            missing_value(*on_missing, &why)?;
                            false
                        }
                    }
                }
                JsonOp::Remove(pointer) => pointer.remove(&mut doc).is_some(),
                JsonOp::Rename(from, to) => match from.remove(&mut doc) {
                    Some(value) => {
                        if !to.insert(&mut doc, value.clone()) {
                            // The target cannot hold it: put it back.
                            from.insert(&mut doc, value);
                            false
                        } else {
                            true
                        }
                    }
                    None => false,
                },
            };
        }
        if !changed {
            return Ok(None);
        }
        serde_json::to_vec(&doc)
            .map(|v| Some(Bytes::from(v)))
            .map_err(|_| {
                Box::new(Problem::internal().detail("the edited JSON body could not be written"))
            })
    }
}

/// Sets the framing headers of a body now fully known.
fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
}

/// Skips (`Ok`) or rejects with a 400 naming the variable. `what` comes
/// from the configuration, never from the request.
fn missing_value(on_missing: OnMissing, what: &str) -> Result<(), Reject> {
    match on_missing {
        OnMissing::Skip => Ok(()),
        OnMissing::Reject => Err(bad_request(what.to_owned())),
    }
}

fn bad_request(detail: impl Into<std::borrow::Cow<'static, str>>) -> Reject {
    Box::new(Problem::bad_request().detail(detail))
}

/// Fills `instance` and `request_id` from the request.
fn finish(problem: Problem, parts: &Parts) -> Problem {
    problem
        .instance(parts.uri.path())
        .request_id(parts.extensions.get::<RequestId>())
}

/// `application/json` or `application/<anything>+json`, parameters ignored.
fn is_json(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// The rest of `path` after the whole leading segments `prefix`.
fn strip_segments<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// An origin-form path: starts with `/`, no query, fragment or dot
/// segment, and only characters a URI path may hold.
fn is_valid_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains(['?', '#'])
        && !path.split('/').any(|s| s == "." || s == "..")
        && PathAndQuery::try_from(path).is_ok_and(|pq| pq.path() == path)
}

// === impl HeaderOp ===

impl HeaderOp {
    fn apply(&self, parts: &mut Parts) -> Result<(), Reject> {
        // Names go to the map by reference: `http` clones one only for a
        // new header. A clone made here was copied on with loads that
        // span the clone's stores, a stall per copy that cost five rules
        // 40-80 ns (docs/benchmarks.md, transforms round 6).
        match self {
            Self::Set(name, Value::Literal(value), _) => {
                parts.headers.insert(name, value.clone());
            }
            Self::Add(name, Value::Literal(value), _) => {
                parts.headers.append(name, value.clone());
            }
            Self::Set(name, Value::Template(template), on_missing)
            | Self::Add(name, Value::Template(template), on_missing) => {
                let value = match render(template, parts) {
                    Ok(value) => value,
                    Err(why) => return missing_value(*on_missing, &why),
                };
                if matches!(self, Self::Set(..)) {
                    parts.headers.insert(name, value);
                } else {
                    parts.headers.append(name, value);
                }
            }
            Self::Remove(name) => {
                parts.headers.remove(name);
            }
            Self::Rename(from, to) => {
                // One lookup of `from` whether it holds one value or several.
                let Entry::Occupied(entry) = parts.headers.entry(from) else {
                    return Ok(());
                };
                if entry.iter().nth(1).is_none() {
                    // The common case, one value: no list to collect.
                    let value = entry.remove();
                    parts.headers.insert(to, value);
                    return Ok(());
                }
                let (_, values) = entry.remove_entry_mult();
                let mut values = values.collect::<Vec<_>>().into_iter();
                if let Some(first) = values.next() {
                    parts.headers.insert(to, first);
                    for value in values {
                        parts.headers.append(to, value);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The most capacity [`SCRATCH`] keeps between values.
const SCRATCH_KEEP: usize = 4096;

thread_local! {
    /// Where header templates are rendered before their value is made; it
    /// keeps its capacity, so a warm thread renders without allocating.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The size of the chunks that rendered header values share.
const VALUES_CHUNK: usize = 1024;

thread_local! {
    /// Where rendered header values are made (see [`shared_value`]).
    static VALUES: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// A header value of `bytes`, made in this thread's chunk: the value holds
/// a slice of the chunk and a reference count on it, instead of an
/// allocation of its own (about 170 instructions for `malloc`, the copy
/// and `free`, against some 60). When the chunk is used up, `reserve`
/// takes it back if every value made from it has been dropped, as it has
/// when requests do not overlap, or starts another, so a value keeps at
/// most one chunk alive. A value longer than a quarter chunk is allocated
/// on its own.
fn shared_value(bytes: &[u8]) -> Result<HeaderValue, InvalidHeaderValue> {
    if bytes.len() > VALUES_CHUNK / 4 {
        return HeaderValue::from_bytes(bytes);
    }
    VALUES.with_borrow_mut(|chunk| {
        if chunk.capacity() == 0 {
            // Sets the size `reserve` gives every later chunk.
            *chunk = BytesMut::with_capacity(VALUES_CHUNK);
        }
        chunk.extend_from_slice(bytes);
        // `from_maybe_shared` keeps a `Bytes` as it is, without a copy.
        HeaderValue::from_maybe_shared(chunk.split().freeze())
    })
}

/// The header value of `template`, or why there is none (from the
/// configuration). A literal value is cloned where it is inserted
/// instead: passed through a `Result`, the clone's one-byte flag was
/// stored as a byte and loaded back as part of a word, a load the core
/// cannot forward from that store (docs/benchmarks.md, transforms round
/// 6).
fn render(template: &Template, parts: &Parts) -> Result<HeaderValue, String> {
    let value = |rendered: Result<&[u8], MissingValue<'_>>| match rendered {
        Ok(bytes) => shared_value(bytes).map_err(|_| {
            format!(
                "template {} gave an invalid header value",
                template.as_str()
            )
        }),
        Err(missing) => Err(missing.to_string()),
    };
    // A lone variable such as `{identity.subject}` is copied straight
    // from the request into the value.
    if let Some(stored) = template.as_stored(parts) {
        return value(stored);
    }
    SCRATCH.with_borrow_mut(|out| {
        // Rendered into this thread's buffer, then copied once into the
        // value.
        out.clear();
        let rendered = template.render(parts, out).map(|()| &out[..]);
        let value = value(rendered);
        if out.capacity() > SCRATCH_KEEP {
            // A rare long value does not stay with the thread.
            *out = Vec::new();
        }
        value
    })
}

// === compile ===

fn invalid(msg: String) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidValue, msg)
}

fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::try_from(name)
        .map(crate::intern::header_name)
        .map_err(|_| invalid(format!("bad header name {name:?}")))
}

fn header_value(value: &str) -> Result<Value, ConfigError> {
    let template = Template::parse(value)?;
    Ok(match template.literal_text() {
        Some(text) => Value::Literal(
            HeaderValue::try_from(text)
                .map(crate::intern::header_value)
                .map_err(|_| invalid(format!("bad header value {value:?}")))?,
        ),
        None => Value::Template(template),
    })
}

fn pointer(p: &str) -> Result<Pointer, ConfigError> {
    Pointer::parse(p).map_err(invalid)
}

fn query_name(name: &str) -> Result<Box<str>, ConfigError> {
    if name.is_empty() {
        return Err(invalid("empty query parameter name".into()));
    }
    let mut encoded = String::new();
    query::encode_into(name.as_bytes(), &mut encoded);
    Ok(encoded.into())
}

fn compile_path(rule: &PathRule) -> Result<PathOp, ConfigError> {
    Ok(match rule {
        PathRule::Prefix { from, to } => {
            if !from.starts_with('/') || !is_valid_path(to) {
                return Err(invalid(format!(
                    "path prefix rewrite {from:?} -> {to:?}: both must be paths starting with `/`"
                )));
            }
            PathOp::Prefix {
                from: from.as_str().into(),
                to: to.as_str().into(),
            }
        }
        PathRule::Regex {
            pattern,
            to,
            on_missing,
        } => {
            let regex = Regex::new(pattern)
                .map_err(|e| invalid(format!("path pattern {pattern:?}: {e}")))?;
            let to = Template::parse(to)?;
            let names: Arc<[Option<Arc<str>>]> =
                regex.capture_names().map(|n| n.map(Arc::from)).collect();
            let numbers: Arc<[Arc<str>]> = (0..regex.captures_len())
                .map(|i| Arc::from(i.to_string()))
                .collect();
            for var in to.variables() {
                if let Some(param) = var.strip_prefix("path.")
                    && !names.iter().flatten().any(|n| &**n == param)
                    && !numbers.iter().skip(1).any(|n| &**n == param)
                {
                    return Err(invalid(format!(
                        "path rewrite {pattern:?}: the pattern has no group `{param}`"
                    )));
                }
            }
            PathOp::Regex {
                regex,
                names,
                numbers,
                to,
                on_missing: *on_missing,
            }
        }
    })
}

impl TryFrom<RequestRulesConfig> for RequestRules {
    type Error = ConfigError;

    fn try_from(config: RequestRulesConfig) -> Result<Self, Self::Error> {
        Self::try_from(&config)
    }
}

impl TryFrom<&RequestRulesConfig> for RequestRules {
    type Error = ConfigError;

    fn try_from(config: &RequestRulesConfig) -> Result<Self, Self::Error> {
        let headers: Box<[HeaderOp]> = config
            .headers
            .iter()
            .map(|rule| {
                Ok(match rule {
                    HeaderRule::Set {
                        name,
                        value,
                        on_missing,
                    } => HeaderOp::Set(header_name(name)?, header_value(value)?, *on_missing),
                    HeaderRule::Add {
                        name,
                        value,
                        on_missing,
                    } => HeaderOp::Add(header_name(name)?, header_value(value)?, *on_missing),
                    HeaderRule::Remove { name } => HeaderOp::Remove(header_name(name)?),
                    HeaderRule::Rename { from, to } => {
                        HeaderOp::Rename(header_name(from)?, header_name(to)?)
                    }
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        let path = config
            .path
            .iter()
            .map(compile_path)
            .collect::<Result<_, _>>()?;
        let query = config
            .query
            .iter()
            .map(|rule| {
                Ok(match rule {
                    QueryRule::Add {
                        name,
                        value,
                        on_missing,
                    } => QueryOp::Add(query_name(name)?, Template::parse(value)?, *on_missing),
                    QueryRule::Remove { name } => {
                        query_name(name)?;
                        QueryOp::Remove(name.as_str().into())
                    }
                    QueryRule::Rename { from, to } => {
                        query_name(from)?;
                        QueryOp::Rename(from.as_str().into(), query_name(to)?)
                    }
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        let json = config
            .json
            .iter()
            .map(|rule| {
                Ok(match rule {
                    JsonRule::Add { pointer: p, value } => JsonOp::Add(pointer(p)?, value.clone()),
                    JsonRule::Set {
                        pointer: p,
                        value,
                        on_missing,
                    } => JsonOp::Set(pointer(p)?, Template::parse(value)?, *on_missing),
                    JsonRule::Remove { pointer: p } => JsonOp::Remove(pointer(p)?),
                    JsonRule::Rename { from, to } => JsonOp::Rename(pointer(from)?, pointer(to)?),
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        let body_limit = config.body_limit.unwrap_or(DEFAULT_BODY_LIMIT);
        if body_limit == 0 {
            return Err(invalid("the JSON body limit must be above 0".into()));
        }
        Ok(Self {
            headers,
            path,
            query,
            json,
            body_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str) -> Parts {
        Request::get(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn prefix_rewrites_whole_segments() {
        let rules = RequestRules::builder()
            .rewrite_prefix("/api", "/")
            .build()
            .unwrap();
        for (from, to) in [
            ("/api/users?a=1", "/users?a=1"),
            ("/api", "/"),
            ("/apix/users", "/apix/users"),
        ] {
            let mut p = parts(from);
            rules.apply_head(&mut p).unwrap();
            assert_eq!(p.uri, to);
        }
        let v2 = RequestRules::builder()
            .rewrite_prefix("/api/", "/v2/")
            .build()
            .unwrap();
        let mut p = parts("/api/users");
        v2.apply_head(&mut p).unwrap();
        assert_eq!(p.uri, "/v2/users");
    }

    #[test]
    fn regex_rewrites_reject_bad_results() {
        let rules = RequestRules::builder()
            .rewrite_regex("^/u/(?P<id>[^/]+)(.*)$", "/users/{path.id}{path.2}")
            .build()
            .unwrap();
        let mut p = parts("/u/42/orders");
        rules.apply_head(&mut p).unwrap();
        assert_eq!(p.uri, "/users/42/orders");
        assert_eq!(
            p.extensions.get::<PathParams>().unwrap().get("id"),
            Some("42")
        );
        let mut dots = parts("/u/../x");
        assert!(rules.apply_head(&mut dots).is_err());
        assert!(
            RequestRules::builder()
                .rewrite_regex("^/u/(?P<id>.+)$", "/users/{path.nope}")
                .build()
                .is_err()
        );
        assert!(
            RequestRules::builder()
                .rewrite_regex("(", "/")
                .build()
                .is_err()
        );
        assert!(
            RequestRules::builder()
                .rewrite_prefix("api", "/")
                .build()
                .is_err()
        );
    }

    #[test]
    fn query_rules_keep_other_parameters_byte_for_byte() {
        let rules = RequestRules::builder()
            .remove_query("api_key")
            .rename_query("q", "search")
            .add_query("from", "{header.x-from}")
            .build()
            .unwrap();
        let mut p = parts("/s?a=%7e%41+b&%61pi_key=s&q=x%20y&&z&api_key=t");
        p.headers
            .insert("x-from", HeaderValue::from_static("a b&c"));
        rules.apply_head(&mut p).unwrap();
        assert_eq!(p.uri, "/s?a=%7e%41+b&search=x%20y&&z&from=a%20b%26c");
        let mut empty = parts("/s?api_key=1");
        rules.apply_head(&mut empty).unwrap();
        assert_eq!(empty.uri, "/s");
    }

    #[test]
    fn json_content_types() {
        for (ct, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("application/+json", false),
            ("text/json", false),
            ("application/jsonx", false),
            ("text/plain", false),
        ] {
            assert_eq!(is_json(&HeaderValue::from_static(ct)), json, "{ct}");
        }
    }

    /// Rendered values share a per-thread chunk: values kept alive across
    /// many requests (so chunks fill up and new ones start), values dropped
    /// at once (so a chunk is taken back) and values longer than the
    /// shared size all keep their own bytes.
    #[test]
    fn rendered_values_keep_their_bytes() {
        let rules = RequestRules::builder()
            .set_header("x-a", "{header.x-in}")
            .set_header("x-b", "<{header.x-in}>")
            .build()
            .unwrap();
        let mut kept = Vec::new();
        for i in 0..600 {
            let input = if i % 100 == 7 {
                "y".repeat(VALUES_CHUNK)
            } else {
                format!("v{i}")
            };
            let mut p = parts("/");
            p.headers
                .insert("x-in", HeaderValue::try_from(&input).unwrap());
            rules.apply_head(&mut p).unwrap();
            assert_eq!(p.headers["x-a"], input.as_str());
            assert_eq!(p.headers["x-b"], format!("<{input}>").as_str());
            if i % 2 == 0 {
                kept.push((input, p.headers));
            }
        }
        for (input, headers) in &kept {
            assert_eq!(headers["x-a"], input.as_str());
            assert_eq!(headers["x-b"], format!("<{input}>").as_str());
        }
    }

    /// A template that is one stored variable takes the direct path; it
    /// gives what rendering gives, and a missing value still names the
    /// variable.
    #[test]
    fn lone_variables_match_rendering() {
        let mut p = parts("/p?q=a%20b");
        p.headers.insert("x-in", HeaderValue::from_static("in"));
        p.extensions
            .insert(tollgate_core::Identity::subject("sub").with_plan("gold"));
        p.extensions.insert(RequestId::from_static("r-1"));
        p.extensions.insert(PathParams::from_pairs([("id", "7")]));
        for (var, want) in [
            ("{request_id}", "r-1"),
            ("{identity.subject}", "sub"),
            ("{identity.plan}", "gold"),
            ("{header.x-in}", "in"),
            ("{path.id}", "7"),
            ("{query.q}", "a b"),
        ] {
            let rules = RequestRules::builder()
                .set_header("x-out", var)
                .build()
                .unwrap();
            let mut q = p.clone();
            rules.apply_head(&mut q).unwrap();
            assert_eq!(q.headers["x-out"], want, "{var}");
        }
        let reject = RequestRules::builder()
            .on_missing(OnMissing::Reject)
            .set_header("x-out", "{identity.consumer}")
            .build()
            .unwrap();
        let problem = reject.apply_head(&mut p.clone()).unwrap_err();
        assert!(
            problem.to_json()["detail"]
                .as_str()
                .unwrap()
                .contains("{identity.consumer}")
        );
    }

    #[test]
    fn bad_config_is_refused() {
        let b = RequestRules::builder;
        assert!(b().set_header("bad header", "x").build().is_err());
        assert!(b().set_header("x", "bad\nvalue").build().is_err());
        assert!(b().set_header("x", "{nope}").build().is_err());
        assert!(b().json_remove("a").build().is_err());
        assert!(b().add_query("", "x").build().is_err());
        assert!(b().body_limit(0).build().is_err());
    }
}
