//! CORS from plain data: [`CorsConfig`] builds tower-http's [`CorsLayer`],
//! refusing the combinations tower-http would panic on.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tollgate_core::{ConfigError, ConfigErrorKind};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

/// The configuration of a tower-http [`CorsLayer`]. `"*"` alone in a list
/// means any; `CorsLayer::try_from` refuses what the Fetch standard (and
/// tower-http, with a panic) forbids: credentials with any `"*"`, `"*"`
/// mixed with names, and malformed origins, methods or header names.
///
/// ```toml
/// [cors]
/// allow_origins = ["https://app.example.com"]   # or ["*"]
/// allow_methods = ["GET", "POST"]               # or ["*"]
/// allow_headers = ["content-type", "authorization"]
/// expose_headers = ["x-request-id"]
/// allow_credentials = true
/// max_age = "10m"
/// ```
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_http::cors::CorsLayer;
/// use tollgate_transform::CorsConfig;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = CorsConfig::default();
/// config.allow_origins = vec!["https://app.example.com".into()];
/// config.allow_methods = vec!["GET".into()];
/// let svc = ServiceBuilder::new()
///     .layer(CorsLayer::try_from(&config)?)
///     .service_fn(|_req: Request<()>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(()))
///     });
/// let res = svc
///     .oneshot(Request::get("/").header("origin", "https://app.example.com").body(())?)
///     .await?;
/// assert_eq!(res.status(), StatusCode::OK);
/// assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example.com");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct CorsConfig {
    /// Origins allowed (`scheme://host[:port]`), or `["*"]` for any. At
    /// least one.
    pub allow_origins: Vec<String>,
    /// Methods allowed in preflights, or `["*"]`.
    pub allow_methods: Vec<String>,
    /// Request headers allowed in preflights, or `["*"]`.
    pub allow_headers: Vec<String>,
    /// Response headers the browser exposes to scripts, or `["*"]`.
    pub expose_headers: Vec<String>,
    /// Whether `Access-Control-Allow-Credentials: true` is sent.
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[cfg_attr(
        feature = "serde",
        serde(with = "tollgate_core::serde_util::option_duration")
    )]
    pub max_age: Option<Duration>,
}

/// A list from a [`CorsConfig`]: nothing, any (`"*"`), or names.
enum List<T> {
    Any,
    Items(Vec<T>),
}

// === impl CorsConfig ===

impl TryFrom<&CorsConfig> for CorsLayer {
    type Error = ConfigError;

    fn try_from(config: &CorsConfig) -> Result<Self, ConfigError> {
        if config.allow_origins.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Missing,
                "allow_origins: CORS needs at least one origin, or \"*\"",
            ));
        }
        let origins = list("allow_origins", &config.allow_origins, origin)?;
        let methods = list("allow_methods", &config.allow_methods, |m| {
            Method::from_bytes(m.as_bytes()).map_err(|_| format!("{m:?} is not a method"))
        })?;
        let headers = list("allow_headers", &config.allow_headers, header_name)?;
        let expose = list("expose_headers", &config.expose_headers, header_name)?;
        if config.allow_credentials {
            for (key, any) in [
                ("allow_origins", matches!(origins, List::Any)),
                ("allow_methods", matches!(methods, List::Any)),
                ("allow_headers", matches!(headers, List::Any)),
                ("expose_headers", matches!(expose, List::Any)),
            ] {
                if any {
                    return Err(invalid(format!(
                        "{key}: \"*\" cannot be combined with allow_credentials (the Fetch standard forbids it)"
                    )));
                }
            }
        }
        let mut layer = Self::new()
            .allow_origin(match origins {
                List::Any => AllowOrigin::any(),
                List::Items(items) => AllowOrigin::list(items),
            })
            .allow_methods(match methods {
                List::Any => AllowMethods::any(),
                List::Items(items) => AllowMethods::list(items),
            })
            .allow_headers(match headers {
                List::Any => AllowHeaders::any(),
                List::Items(items) => AllowHeaders::list(items),
            })
            .expose_headers(match expose {
                List::Any => ExposeHeaders::any(),
                List::Items(items) => ExposeHeaders::list(items),
            })
            .allow_credentials(config.allow_credentials);
        if let Some(max_age) = config.max_age {
            layer = layer.max_age(max_age);
        }
        Ok(layer)
    }
}

/// `["*"]` as any, else each item parsed; `"*"` among others is an error.
fn list<T>(
    key: &str,
    items: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<List<T>, ConfigError> {
    if let [only] = items
        && only == "*"
    {
        return Ok(List::Any);
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item == "*" {
                return Err(invalid(format!(
                    "{key}[{i}]: \"*\" means any and cannot be listed with others"
                )));
            }
            parse(item).map_err(|e| invalid(format!("{key}[{i}]: {e}")))
        })
        .collect::<Result<_, _>>()
        .map(List::Items)
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing more
/// (no path, query, user or spaces).
fn origin(text: &str) -> Result<HeaderValue, String> {
    let bad = || format!("{text:?} is not an origin (scheme://host[:port])");
    let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
    let valid_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    // A host (punycode, as browsers send it), an IPv6 literal, a port.
    let valid_host = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~:[]%".contains(c));
    if !valid_scheme || !valid_host {
        return Err(bad());
    }
    HeaderValue::from_str(text).map_err(|_| bad())
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(name).map_err(|_| format!("{name:?} is not a header name"))
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidValue, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response, StatusCode, header};
    use tower::{ServiceBuilder, ServiceExt};

    fn config(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            allow_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            ..CorsConfig::default()
        }
    }

    async fn preflight(layer: CorsLayer, origin: &str) -> Response<()> {
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_req: Request<()>| async {
                Ok::<_, std::convert::Infallible>(Response::new(()))
            });
        svc.oneshot(
            Request::options("/")
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn every_field_reaches_the_preflight_answer() {
        let config = CorsConfig {
            allow_origins: vec!["https://a.example".into(), "http://localhost:3000".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["content-type".into()],
            expose_headers: vec!["x-request-id".into()],
            allow_credentials: true,
            max_age: Some(Duration::from_secs(600)),
        };
        let res = preflight(
            CorsLayer::try_from(&config).unwrap(),
            "http://localhost:3000",
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET,POST");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "content-type");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
        let res = preflight(
            CorsLayer::try_from(&config).unwrap(),
            "https://evil.example",
        )
        .await;
        assert!(
            !res.headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
    }

    #[tokio::test]
    async fn a_star_means_any() {
        let mut any = config(&["*"]);
        any.allow_methods = vec!["*".into()];
        any.allow_headers = vec!["*".into()];
        any.expose_headers = vec!["*".into()];
        let res = preflight(CorsLayer::try_from(&any).unwrap(), "https://x.example").await;
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_METHODS], "*");
    }

    #[test]
    fn forbidden_combinations_are_errors_not_panics() {
        for key in [
            "allow_origins",
            "allow_methods",
            "allow_headers",
            "expose_headers",
        ] {
            let mut c = config(&["https://a.example"]);
            c.allow_credentials = true;
            match key {
                "allow_origins" => c.allow_origins = vec!["*".into()],
                "allow_methods" => c.allow_methods = vec!["*".into()],
                "allow_headers" => c.allow_headers = vec!["*".into()],
                _ => c.expose_headers = vec!["*".into()],
            }
            let err = CorsLayer::try_from(&c).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("{key}: \"*\" cannot be combined")),
                "{err}"
            );
        }
        let err = CorsLayer::try_from(&config(&["*", "https://a.example"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "allow_origins[0]: \"*\" means any and cannot be listed with others"
        );
        let err = CorsLayer::try_from(&CorsConfig::default()).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Missing);
        for bad in [
            "a.example",
            "https://a.example/",
            "https://",
            "1http://a",
            "https://a b",
        ] {
            let err = CorsLayer::try_from(&config(&[bad])).unwrap_err();
            assert!(err.to_string().contains("is not an origin"), "{bad}: {err}");
        }
        let mut c = config(&["https://a.example"]);
        c.allow_methods = vec!["GE T".into()];
        assert!(
            CorsLayer::try_from(&c)
                .unwrap_err()
                .to_string()
                .contains("not a method")
        );
        let mut c = config(&["https://a.example"]);
        c.expose_headers = vec!["bad header".into()];
        assert_eq!(
            CorsLayer::try_from(&c).unwrap_err().to_string(),
            "expose_headers[0]: \"bad header\" is not a header name"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn config_deserialises() {
        let parse = |json: &str| serde_json::from_str::<CorsConfig>(json);
        assert_eq!(parse("{}").unwrap(), CorsConfig::default());
        let c = parse(
            r#"{"allow_origins": ["*"], "allow_methods": ["GET"], "allow_headers": ["a"],
                "expose_headers": ["b"], "allow_credentials": false, "max_age": "1h"}"#,
        )
        .unwrap();
        assert_eq!(c.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(c.expose_headers, ["b"]);
        let err = parse(r#"{"allow_origin": ["*"]}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `allow_origin`"), "{err}");
        assert!(parse(r#"{"max_age": "forever"}"#).is_err());
    }
}
