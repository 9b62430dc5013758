//! The client for calls to identity providers (JWKS, discovery,
//! introspection): reqwest with timeouts, no redirects, bounded bodies, and
//! HTTPS required except to loopback addresses.

use std::{net::IpAddr, time::Duration};

use serde::de::DeserializeOwned;
use tollgate_core::{ConfigError, ConfigErrorKind};
use url::Url;

/// The largest document accepted from an identity provider.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    allow_http: bool,
}

impl HttpClient {
    pub(crate) fn new(timeout: Duration, allow_http: bool) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A key set or a token verdict comes from the URL configured,
            // not from wherever a response points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                ConfigError::new(ConfigErrorKind::InvalidValue, format!("HTTP client: {e}"))
            })?;
        Ok(Self { client, allow_http })
    }

    pub(crate) fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Refuses plain HTTP to anything but loopback unless allowed: keys or
    /// verdicts fetched in clear text can be replaced on the way.
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), String> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.allow_http || is_loopback(url) => Ok(()),
            "http" => Err(format!(
                "{url} is plain HTTP; use HTTPS or allow insecure HTTP explicitly"
            )),
            other => Err(format!("{url}: unsupported scheme {other:?}")),
        }
    }

    /// GETs `url` and returns its body, at most [`MAX_BODY`] bytes.
    pub(crate) async fn get(&self, url: &Url) -> Result<Vec<u8>, String> {
        let res = self
            .client
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        read_body(res).await
    }
}

/// GETs `url` and parses its JSON body.
pub(crate) async fn fetch_json<T: DeserializeOwned>(
    client: &HttpClient,
    url: &Url,
) -> Result<T, String> {
    let body = client.get(url).await?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: invalid JSON: {e}"))
}

/// A successful response's body, bounded.
pub(crate) async fn read_body(mut res: reqwest::Response) -> Result<Vec<u8>, String> {
    let status = res.status();
    if !status.is_success() {
        return Err(format!("{}: status {status}", res.url()));
    }
    if res.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(format!("{}: body larger than {MAX_BODY} bytes", res.url()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| format!("{}: {e}", res.url()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("{}: body larger than {MAX_BODY} bytes", res.url()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Parses a configured URL.
pub(crate) fn parse_url(what: &str, url: &str) -> Result<Url, ConfigError> {
    Url::parse(url)
        .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidUrl, format!("{what}: {e}")))
}
