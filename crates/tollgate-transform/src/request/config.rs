//! Plain-data configuration of the request rules, mirroring
//! [`RequestRulesBuilder`](crate::RequestRulesBuilder) one to one; with the
//! `serde` feature it deserialises (unknown fields are errors).

use crate::OnMissing;

/// The request rules as plain data; `RequestRules::try_from` runs the same
/// checks as [`RequestRulesBuilder::build`](crate::RequestRulesBuilder::build).
///
/// ```
/// use tollgate_transform::{RequestRules, RequestRulesConfig, request::HeaderRule};
///
/// let mut config = RequestRulesConfig::default();
/// config.headers.push(HeaderRule::set("x-user-id", "{identity.subject}"));
/// let rules = RequestRules::try_from(config)?;
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct RequestRulesConfig {
    /// Header rules, applied in order.
    pub headers: Vec<HeaderRule>,
    /// Path rewrites; the first that matches applies.
    pub path: Vec<PathRule>,
    /// Query parameter rules.
    pub query: Vec<QueryRule>,
    /// JSON body rules, applied in order.
    pub json: Vec<JsonRule>,
    /// The most body bytes the JSON rules read (default 1 MiB).
    pub body_limit: Option<usize>,
}

/// A header rule. Values are [templates](crate::template).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum HeaderRule {
    /// Replaces every value of `name`.
    Set {
        /// The header.
        name: String,
        /// A template.
        value: String,
        /// When a variable has no value.
        #[cfg_attr(feature = "serde", serde(default))]
        on_missing: OnMissing,
    },
    /// Adds a value, keeping the others.
    Add {
        /// The header.
        name: String,
        /// A template.
        value: String,
        /// When a variable has no value.
        #[cfg_attr(feature = "serde", serde(default))]
        on_missing: OnMissing,
    },
    /// Removes every value.
    Remove {
        /// The header.
        name: String,
    },
    /// Moves every value of `from` to `to`, replacing `to`'s values; nothing
    /// happens when `from` is absent.
    Rename {
        /// The header sent.
        from: String,
        /// The header forwarded.
        to: String,
    },
}

/// A path rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum PathRule {
    /// Replaces the leading segments `from` with `to` (`/api` + `/users`
    /// becomes `/` + `users` → `/users`). Matches whole segments only.
    Prefix {
        /// The prefix sent, starting with `/`.
        from: String,
        /// Its replacement, starting with `/`.
        to: String,
    },
    /// When `pattern` (a regular expression) matches the path, the path
    /// becomes the template `to`, where `{path.<name>}` and `{path.<n>}`
    /// are the pattern's groups.
    Regex {
        /// The regular expression, matched against the raw path.
        pattern: String,
        /// A template for the new path.
        to: String,
        /// When a variable has no value.
        #[cfg_attr(feature = "serde", serde(default))]
        on_missing: OnMissing,
    },
}

/// A query parameter rule. Names are compared percent-decoded; the
/// parameters no rule touches are forwarded byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum QueryRule {
    /// Appends `name=value` (the value percent-encoded).
    Add {
        /// The parameter.
        name: String,
        /// A template.
        value: String,
        /// When a variable has no value.
        #[cfg_attr(feature = "serde", serde(default))]
        on_missing: OnMissing,
    },
    /// Removes every parameter named `name`.
    Remove {
        /// The parameter.
        name: String,
    },
    /// Renames every parameter `from`, keeping its value as sent.
    Rename {
        /// The parameter sent.
        from: String,
        /// The parameter forwarded.
        to: String,
    },
}

/// A JSON body rule. Pointers are `/a/b` (RFC 6901 escapes `~0`, `~1`);
/// a numeric segment indexes an array on the way.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum JsonRule {
    /// Sets the member to a JSON value, adding missing parent objects.
    Add {
        /// Where.
        pointer: String,
        /// The value.
        value: serde_json::Value,
    },
    /// Sets the member to the string a template renders.
    Set {
        /// Where.
        pointer: String,
        /// A template.
        value: String,
        /// When a variable has no value.
        #[cfg_attr(feature = "serde", serde(default))]
        on_missing: OnMissing,
    },
    /// Removes the member.
    Remove {
        /// Where.
        pointer: String,
    },
    /// Moves the member to another pointer.
    Rename {
        /// From.
        from: String,
        /// To.
        to: String,
    },
}

impl HeaderRule {
    /// [`HeaderRule::Set`], skipping when a value is missing.
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::Set {
            name: name.into(),
            value: value.into(),
            on_missing: OnMissing::Skip,
        }
    }
}
