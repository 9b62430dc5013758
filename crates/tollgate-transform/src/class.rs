//! Client classes for Backends-for-Frontends: which rule set a request
//! gets (a minimal payload for `mobile`, a rich one for `web`).

use std::{collections::BTreeMap, fmt, sync::Arc};

use http::{HeaderName, Request, request::Parts};
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

    /// Calls `then` with the rules for `req` and `req` itself. The request
    /// is split into its parts (a move of about 250 bytes out and back)
    /// only when the rules depend on its class; handed on to `then`, not
    /// returned, so the common case moves it no more than a direct call.
    #[inline]
    pub(crate) fn with_rules<B, T>(
        &self,
        req: Request<B>,
        then: impl FnOnce(Option<&Arc<R>>, Request<B>) -> T,
    ) -> T {
        if let Some(rules) = self.fixed() {
            return then(rules, req);
        }
        let (parts, body) = req.into_parts();
        let rules = self.select(&parts);
        then(rules, Request::from_parts(parts, body))
    }

    /// Every rule set: the classes' and the default.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<R>> {
        self.classes
            .iter()
            .map(|(_, rules)| rules)
            .chain(&self.default)
    }

    /// The rules when they do not depend on the request (no classes): a
    /// layer can then skip splitting the request into its parts, which
    /// moves it (about 250 bytes) out and back.
    pub(crate) fn fixed(&self) -> Option<Option<&Arc<R>>> {
        self.classes.is_empty().then_some(self.default.as_ref())
    }
}

/// The plain-data form of a [`Classifier`]: its sources, tried in order.
/// Each is exactly one of `header`, `user_agent` (with `class`) and
/// `claim`; a custom closure has no plain-data form.
///
/// ```toml
/// classify = [
///   { header = "x-client" },                            # X-Client: mobile|web
///   { user_agent = "(?i)android|iphone", class = "mobile" },
///   { claim = "client_class" },
/// ]
/// ```
///
/// ```
/// use tollgate_transform::{ClassSourceConfig, Classifier, ClassifierConfig};
///
/// let config = ClassifierConfig::new(vec![
///     ClassSourceConfig::header("x-client"),
///     ClassSourceConfig::user_agent("mobile", "(?i)iphone"),
/// ]);
/// let classifier = Classifier::try_from(&config)?;
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[non_exhaustive]
pub struct ClassifierConfig {
    /// The sources, first that gives a class wins.
    pub sources: Vec<ClassSourceConfig>,
}

/// One source of a [`ClassifierConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ClassSourceConfig {
    /// The class is this header's value ([`Classifier::header`]).
    pub header: Option<String>,
    /// The class is `class` when the `User-Agent` matches this regular
    /// expression ([`Classifier::user_agent`]).
    pub user_agent: Option<String>,
    /// The class a matching `user_agent` gives.
    pub class: Option<String>,
    /// The class is this string claim of the identity ([`Classifier::claim`]).
    pub claim: Option<String>,
}

/// Rule sets by client class, as plain data: builds a [`BySelector`] of
/// request or response rules. `R` is [`RequestRulesConfig`] or
/// [`ResponseRulesConfig`]; classes are the keys of `classes`
/// (compared case-insensitively).
///
/// ```toml
/// [routes.transform_response]
/// classify = [{ header = "x-client" }, { user_agent = "(?i)android|iphone", class = "mobile" }]
///
/// [routes.transform_response.classes.mobile]     # ResponseRulesConfig
/// body.deny = ["/debug_info", "/items/*/description"]
///
/// [routes.transform_response.default]            # requests of no listed class
/// headers.remove_server_headers = true
/// ```
///
/// ```
/// use tollgate_transform::{
///     ByClassConfig, ClassSourceConfig, ClassifierConfig, ResponseRules, ResponseRulesConfig,
///     ResponseTransformLayer,
/// };
///
/// let mut config = ByClassConfig::<ResponseRulesConfig>::default();
/// config.classify = ClassifierConfig::new(vec![ClassSourceConfig::header("x-client")]);
/// config.classes.insert("mobile".into(), ResponseRulesConfig::default());
/// config.default = Some(ResponseRulesConfig::default());
/// let layer = ResponseTransformLayer::by_class(config.build::<ResponseRules>()?);
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
///
/// [`RequestRulesConfig`]: crate::RequestRulesConfig
/// [`ResponseRulesConfig`]: crate::ResponseRulesConfig
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ByClassConfig<R> {
    /// How a request's class is found.
    pub classify: ClassifierConfig,
    /// The rules of each class.
    pub classes: BTreeMap<String, R>,
    /// The rules of requests of no listed class; without it they get none.
    pub default: Option<R>,
}

// === impl ClassifierConfig ===

impl ClassifierConfig {
    /// These sources, in order.
    #[must_use]
    pub fn new(sources: Vec<ClassSourceConfig>) -> Self {
        Self { sources }
    }
}

impl TryFrom<&ClassifierConfig> for Classifier {
    type Error = ConfigError;

    fn try_from(config: &ClassifierConfig) -> Result<Self, ConfigError> {
        config
            .sources
            .iter()
            .enumerate()
            .try_fold(Self::new(), |classifier, (i, source)| {
                source
                    .add_to(classifier)
                    .map_err(|e| e.context(format!("classify[{i}]")))
            })
    }
}

// === impl ClassSourceConfig ===

impl ClassSourceConfig {
    /// The class is the value of header `name`.
    #[must_use]
    pub fn header(name: impl Into<String>) -> Self {
        Self {
            header: Some(name.into()),
            ..Self::default()
        }
    }

    /// The class is `class` when the `User-Agent` matches `pattern`.
    #[must_use]
    pub fn user_agent(class: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            user_agent: Some(pattern.into()),
            class: Some(class.into()),
            ..Self::default()
        }
    }

    /// The class is the string claim `name`.
    #[must_use]
    pub fn claim(name: impl Into<String>) -> Self {
        Self {
            claim: Some(name.into()),
            ..Self::default()
        }
    }

    fn add_to(&self, classifier: Classifier) -> Result<Classifier, ConfigError> {
        let invalid = |message: &str| ConfigError::new(ConfigErrorKind::InvalidValue, message);
        match (&self.header, &self.user_agent, &self.class, &self.claim) {
            (Some(name), None, None, None) => classifier.header(name),
            (None, Some(pattern), Some(class), None) => {
                class_name(class)?;
                classifier.user_agent(class, pattern)
            }
            (None, Some(_), None, None) => Err(invalid("`user_agent` needs a `class`")),
            (None, None, None, Some(name)) if !name.is_empty() => Ok(classifier.claim(name)),
            (None, None, None, Some(_)) => Err(invalid("`claim` is empty")),
            (_, None, Some(_), _) => Err(invalid("`class` goes with `user_agent`")),
            _ => Err(invalid(
                "a source needs exactly one of `header`, `user_agent` and `claim`",
            )),
        }
    }
}

/// A class name a request can carry: 1 to 64 bytes.
fn class_name(class: &str) -> Result<(), ConfigError> {
    if class.is_empty() || class.len() > MAX_CLASS_LEN {
        return Err(ConfigError::new(
            ConfigErrorKind::InvalidValue,
            format!("class {class:?} must be 1 to {MAX_CLASS_LEN} bytes"),
        ));
    }
    Ok(())
}

// === impl ByClassConfig ===

impl<R> Default for ByClassConfig<R> {
    fn default() -> Self {
        Self {
            classify: ClassifierConfig::default(),
            classes: BTreeMap::new(),
            default: None,
        }
    }
}

impl<R> ByClassConfig<R> {
    /// The selector: each class's rules and the default built with
    /// `T::try_from(&R)` (`RequestRules` or `ResponseRules`).
    ///
    /// # Errors
    ///
    /// Classes without `classify`, no rules at all, a class name that is
    /// empty, too long or listed twice (ignoring case), or a rule set's
    /// own error, prefixed with `classes.<name>` or `default`.
    pub fn build<T>(&self) -> Result<BySelector<T>, ConfigError>
    where
        T: for<'a> TryFrom<&'a R, Error = ConfigError>,
    {
        let rules = |place: &str, config: &R| T::try_from(config).map_err(|e| e.context(place));
        if self.classes.is_empty() {
            return match &self.default {
                Some(default) => Ok(BySelector::always(rules("default", default)?)),
                None => Err(ConfigError::new(
                    ConfigErrorKind::Missing,
                    "no rules: add `classes` or a `default`",
                )),
            };
        }
        if self.classify.sources.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Missing,
                "`classes` need `classify` sources",
            ));
        }
        let mut selector = BySelector::by_class(Classifier::try_from(&self.classify)?);
        let mut seen: Vec<String> = Vec::with_capacity(self.classes.len());
        for (class, config) in &self.classes {
            let place = format!("classes.{class}");
            class_name(class).map_err(|e| e.context(&place))?;
            let lower = class.to_ascii_lowercase();
            if seen.contains(&lower) {
                return Err(ConfigError::new(
                    ConfigErrorKind::Duplicate,
                    format!("{place}: the class is listed twice (classes ignore case)"),
                ));
            }
            selector = selector.class(&lower, rules(&place, config)?);
            seen.push(lower);
        }
        if let Some(default) = &self.default {
            selector = selector.default(rules("default", default)?);
        }
        Ok(selector)
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

    #[test]
    fn classifier_config_builds_the_same_classifier() {
        let config = ClassifierConfig::new(vec![
            ClassSourceConfig::header("x-client"),
            ClassSourceConfig::user_agent("mobile", "(?i)iphone"),
            ClassSourceConfig::claim("class"),
        ]);
        let classifier = Classifier::try_from(&config).unwrap();
        assert_eq!(
            format!("{classifier:?}"),
            r#"Classifier { sources: ["header x-client", "user-agent (?i)iphone => mobile", "claim class"] }"#
        );
        assert_eq!(
            classifier
                .classify(&parts(&[("user-agent", "iPhone")], None))
                .as_deref(),
            Some("mobile")
        );
    }

    #[test]
    fn classifier_config_errors() {
        let err = |source: ClassSourceConfig| {
            Classifier::try_from(&ClassifierConfig::new(vec![
                ClassSourceConfig::claim("c"),
                source,
            ]))
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            err(ClassSourceConfig::default()),
            "classify[1]: a source needs exactly one of `header`, `user_agent` and `claim`"
        );
        let mut both = ClassSourceConfig::header("x-client");
        both.claim = Some("c".into());
        assert!(err(both).contains("exactly one of"));
        let mut lone = ClassSourceConfig::user_agent("m", "x");
        lone.class = None;
        assert_eq!(err(lone), "classify[1]: `user_agent` needs a `class`");
        let mut stray = ClassSourceConfig::header("x-client");
        stray.class = Some("m".into());
        assert_eq!(err(stray), "classify[1]: `class` goes with `user_agent`");
        assert!(err(ClassSourceConfig::header("bad header")).contains("bad header name"));
        assert!(err(ClassSourceConfig::user_agent("m", "(")).contains("user-agent pattern"));
        assert!(err(ClassSourceConfig::user_agent("", "x")).contains("1 to 64 bytes"));
        assert_eq!(
            err(ClassSourceConfig::claim("")),
            "classify[1]: `claim` is empty"
        );
    }

    /// Rules that are a number; `-1` is invalid.
    #[derive(Debug, PartialEq)]
    struct Rules(i32);

    impl TryFrom<&i32> for Rules {
        type Error = ConfigError;

        fn try_from(n: &i32) -> Result<Self, ConfigError> {
            if *n < 0 {
                return Err(ConfigError::new(ConfigErrorKind::InvalidValue, "negative"));
            }
            Ok(Self(*n))
        }
    }

    fn by_class(classes: &[(&str, i32)], default: Option<i32>) -> ByClassConfig<i32> {
        ByClassConfig {
            classify: ClassifierConfig::new(vec![ClassSourceConfig::header("x-client")]),
            classes: classes.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect(),
            default,
        }
    }

    #[test]
    fn by_class_config_selects_like_the_code_api() {
        let selector = by_class(&[("Mobile", 1), ("web", 2)], Some(0))
            .build::<Rules>()
            .unwrap();
        let pick = |h: &[(&str, &str)]| selector.select(&parts(h, None)).map(|r| r.0);
        assert_eq!(pick(&[("x-client", "mobile")]), Some(1));
        assert_eq!(pick(&[("x-client", "WEB")]), Some(2));
        assert_eq!(pick(&[("x-client", "tv")]), Some(0));
        let always = by_class(&[], Some(7)).build::<Rules>().unwrap();
        assert_eq!(always.select(&parts(&[], None)).map(|r| r.0), Some(7));
        let no_default = by_class(&[("web", 2)], None).build::<Rules>().unwrap();
        assert!(no_default.select(&parts(&[], None)).is_none());
    }

    #[test]
    fn by_class_config_errors() {
        let err = |config: ByClassConfig<i32>| config.build::<Rules>().unwrap_err().to_string();
        assert_eq!(
            err(by_class(&[], None)),
            "no rules: add `classes` or a `default`"
        );
        let mut unclassified = by_class(&[("web", 1)], None);
        unclassified.classify = ClassifierConfig::default();
        assert_eq!(err(unclassified), "`classes` need `classify` sources");
        assert_eq!(
            err(by_class(&[("web", 1), ("WEB", 2)], None)),
            "classes.web: the class is listed twice (classes ignore case)"
        );
        assert_eq!(err(by_class(&[("web", -1)], None)), "classes.web: negative");
        assert_eq!(err(by_class(&[("web", 1)], Some(-1))), "default: negative");
        assert!(err(by_class(&[("", 1)], None)).contains("1 to 64 bytes"));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn configs_deserialise() {
        let config: ByClassConfig<crate::ResponseRulesConfig> = serde_json::from_str(
            r#"{
                "classify": [{"header": "x-client"}, {"user_agent": "(?i)iphone", "class": "mobile"}, {"claim": "c"}],
                "classes": {"mobile": {"body": {"deny": ["/debug"]}}},
                "default": {"headers": {"remove_server_headers": true}}
            }"#,
        )
        .unwrap();
        assert_eq!(config.classify.sources.len(), 3);
        assert_eq!(
            config.classify.sources[1],
            ClassSourceConfig::user_agent("mobile", "(?i)iphone")
        );
        assert!(config.default.is_some());
        let selector = config.build::<crate::ResponseRules>().unwrap();
        let rules = selector
            .select(&parts(&[("x-client", "mobile")], None))
            .unwrap();
        assert!(rules.reads_body());

        let err = serde_json::from_str::<ByClassConfig<crate::ResponseRulesConfig>>(
            r#"{"classes": {"mobile": {"bdy": {}}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `bdy`"), "{err}");
        let err = serde_json::from_str::<ByClassConfig<crate::RequestRulesConfig>>(
            r#"{"classify": [{"cookie": "c"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `cookie`"), "{err}");
        let err =
            serde_json::from_str::<ByClassConfig<crate::RequestRulesConfig>>(r#"{"class": {}}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `class`"), "{err}");
    }
}
