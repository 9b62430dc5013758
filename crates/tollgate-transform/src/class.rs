//! Client classes for Backends-for-Frontends: which rule set a request
//! gets (a minimal payload for `mobile`, a rich one for `web`).

use std::{fmt, sync::Arc};

use http::{HeaderName, request::Parts};
use regex::Regex;
use tollgate_core::{ConfigError, ConfigErrorKind, Identity};

/// Decides a request's client class, from the first source that gives one.
///
/// ```
/// use tollgate_transform::Classifier;
///
/// let classes = Classifier::new()
///     .header("x-client")?                         // X-Client: mobile|web
///     .user_agent("mobile", "(?i)android|iphone")?  // else by User-Agent
///     .claim("client_class");                       // else a token claim
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Classifier {
    sources: Vec<Source>,
}

#[derive(Clone)]
enum Source {
    /// The value of a header, as the class.
    Header(HeaderName),
    /// This class when the `User-Agent` matches.
    UserAgent(Arc<str>, Regex),
    /// A string claim of the verified identity.
    Claim(Arc<str>),
    /// Your own rule.
    Custom(Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>),
}

/// Longest class name read from a header or a claim; longer values are
/// not a class.
const MAX_CLASS_LEN: usize = 64;

impl Classifier {
    /// No source: every request is unclassified.
    pub fn new() -> Self {
        Self::default()
    }

    /// The class is the value of header `name` (e.g. `X-Client: mobile`).
    ///
    /// # Errors
    ///
    /// When `name` is not a valid header name.
    pub fn header(mut self, name: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::try_from(name).map_err(|_| {
            ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("bad header name {name:?}"),
            )
        })?;
        self.sources.push(Source::Header(name));
        Ok(self)
    }

    /// The class is `class` when the `User-Agent` matches `pattern` (a
    /// regular expression).
    ///
    /// # Errors
    ///
    /// When `pattern` is not a valid regular expression.
    pub fn user_agent(mut self, class: &str, pattern: &str) -> Result<Self, ConfigError> {
        let regex = Regex::new(pattern).map_err(|e| {
            ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("user-agent pattern: {e}"),
            )
        })?;
        self.sources.push(Source::UserAgent(class.into(), regex));
        Ok(self)
    }

    /// The class is the string claim `name` of the caller's identity.
    pub fn claim(mut self, name: &str) -> Self {
        self.sources.push(Source::Claim(name.into()));
        self
    }

    /// The class is what `f` says.
    pub fn custom<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.sources.push(Source::Custom(Arc::new(f)));
        self
    }

    /// The request's class, if any source gives one (lower-cased).
    #[must_use]
    pub fn classify(&self, parts: &Parts) -> Option<String> {
        self.with_class(parts, str::to_ascii_lowercase)
    }

    /// Calls `f` with the class of the first source that gives one, as
    /// the request carries it (trimmed), without copying it.
    fn with_class<T>(&self, parts: &Parts, f: impl FnOnce(&str) -> T) -> Option<T> {
        let valid = |c: &str| !c.is_empty() && c.len() <= MAX_CLASS_LEN;
        for source in &self.sources {
            match source {
                Source::Header(name) => {
                    if let Some(c) = parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::trim)
                        .filter(|c| valid(c))
                    {
                        return Some(f(c));
                    }
                }
                Source::UserAgent(class, regex) => {
                    let matched = parts
                        .headers
                        .get(http::header::USER_AGENT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|ua| regex.is_match(ua));
                    if matched && valid(class) {
                        return Some(f(class));
                    }
                }
                Source::Claim(name) => {
                    if let Some(c) = parts
                        .extensions
                        .get::<Identity>()
                        .and_then(|i| i.claim(name))
                        .and_then(serde_json::Value::as_str)
                        .filter(|c| valid(c))
                    {
                        return Some(f(c));
                    }
                }
                Source::Custom(custom) => {
                    if let Some(c) = custom(parts).filter(|c| valid(c)) {
                        return Some(f(&c));
                    }
                }
            }
        }
        None
    }
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                Source::Header(name) => format!("header {name}"),
                Source::UserAgent(class, regex) => format!("user-agent {regex} => {class}"),
                Source::Claim(name) => format!("claim {name}"),
                Source::Custom(_) => "custom".to_owned(),
            })
            .collect();
        f.debug_struct("Classifier")
            .field("sources", &sources)
            .finish()
    }
}

/// Rule sets by client class, with a default for requests of no known
/// class. Both sides of a transform (request and response rules) select
/// their rules through one.
#[derive(Debug)]
pub struct BySelector<R> {
    classifier: Classifier,
    classes: Vec<(String, Arc<R>)>,
    default: Option<Arc<R>>,
}

impl<R> Clone for BySelector<R> {
    fn clone(&self) -> Self {
        Self {
            classifier: self.classifier.clone(),
            classes: self.classes.clone(),
            default: self.default.clone(),
        }
    }
}

impl<R> BySelector<R> {
    /// The same rules for every request.
    pub fn always(rules: R) -> Self {
        Self {
            classifier: Classifier::new(),
            classes: Vec::new(),
            default: Some(Arc::new(rules)),
        }
    }

    /// Rules chosen by `classifier`; requests of no listed class get none
    /// until [`default`](Self::default) is set.
    pub fn by_class(classifier: Classifier) -> Self {
        Self {
            classifier,
            classes: Vec::new(),
            default: None,
        }
    }

    /// The rules for `class` (compared case-insensitively).
    #[must_use]
    pub fn class(mut self, class: &str, rules: R) -> Self {
        self.classes
            .push((class.to_ascii_lowercase(), Arc::new(rules)));
        self
    }

    /// The rules for requests of no listed class.
    #[must_use]
    pub fn default(mut self, rules: R) -> Self {
        self.default = Some(Arc::new(rules));
        self
    }

    /// The rules for this request, if any.
    #[must_use]
    pub fn select(&self, parts: &Parts) -> Option<&Arc<R>> {
        if self.classes.is_empty() {
            return self.default.as_ref();
        }
        // Compared case-insensitively where the request holds it: no copy.
        self.classifier
            .with_class(parts, |class| {
                self.classes
                    .iter()
                    .find(|(c, _)| c.eq_ignore_ascii_case(class))
                    .map(|(_, rules)| rules)
            })
            .flatten()
            .or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(headers: &[(&str, &str)], identity: Option<Identity>) -> Parts {
        let mut req = Request::get("/");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        if let Some(identity) = identity {
            parts.extensions.insert(identity);
        }
        parts
    }

    #[test]
    fn sources_are_tried_in_order() {
        let classifier = Classifier::new()
            .header("x-client")
            .unwrap()
            .user_agent("mobile", "(?i)iphone")
            .unwrap()
            .claim("class");
        assert_eq!(
            classifier
                .classify(&parts(&[("x-client", " Web ")], None))
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            classifier
                .classify(&parts(&[("user-agent", "Mozilla (iPhone)")], None))
                .as_deref(),
            Some("mobile")
        );
        let mut claims = serde_json::Map::new();
        claims.insert("class".into(), "partner".into());
        let id = Identity::subject("1").with_claims(claims);
        assert_eq!(
            classifier.classify(&parts(&[], Some(id))).as_deref(),
            Some("partner")
        );
        assert_eq!(classifier.classify(&parts(&[], None)), None);
        let long = "x".repeat(65);
        assert_eq!(
            classifier.classify(&parts(&[("x-client", &long)], None)),
            None
        );
    }

    #[test]
    fn selection_falls_back_to_the_default() {
        let selector = BySelector::by_class(Classifier::new().header("x-client").unwrap())
            .class("mobile", 1)
            .class("web", 2)
            .default(0);
        let pick = |h: &[(&str, &str)]| **selector.select(&parts(h, None)).unwrap();
        assert_eq!(pick(&[("x-client", "MOBILE")]), 1);
        assert_eq!(pick(&[("x-client", "web")]), 2);
        assert_eq!(pick(&[("x-client", "tv")]), 0);
        assert_eq!(pick(&[]), 0);
        let none =
            BySelector::by_class(Classifier::new().header("x-client").unwrap()).class("web", 2);
        assert!(none.select(&parts(&[], None)).is_none());
        assert_eq!(
            **BySelector::always(7).select(&parts(&[], None)).unwrap(),
            7
        );
    }
}
