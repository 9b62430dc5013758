use std::fmt;

/// A configuration error, found when a layer or the gateway is built.
///
/// Configuration is checked once, at build time, so a running gateway never
/// discovers a bad setting on its first request. The message names the item
/// at fault (a route, an upstream, a key path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
}

/// What kind of [`ConfigError`] this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A URL could not be parsed or has an unsupported scheme.
    InvalidUrl,
    /// A route refers to an upstream that was never registered.
    UnknownUpstream,
    /// Two routes (or two upstreams) are the same.
    Duplicate,
    /// A value is out of range or malformed.
    InvalidValue,
    /// Something required is missing.
    Missing,
    /// TLS material could not be loaded.
    Tls,
}

// === impl ConfigError ===

impl ConfigError {
    /// A new error of `kind` with a message that names what is wrong.
    pub fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What kind of error this is.
    #[must_use]
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The message, without the kind.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with the place it was found, e.g. `route "/api"`.
    #[must_use]
    pub fn context(mut self, place: impl fmt::Display) -> Self {
        self.message = format!("{place}: {}", self.message);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_the_message() {
        let err = ConfigError::new(ConfigErrorKind::InvalidUrl, "relative URL without a base")
            .context("upstream \"users\"");
        assert_eq!(
            err.to_string(),
            "upstream \"users\": relative URL without a base"
        );
        assert_eq!(err.kind(), ConfigErrorKind::InvalidUrl);
    }
}
