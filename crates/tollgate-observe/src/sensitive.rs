//! Headers that carry secrets, marked sensitive with tower-http so no
//! layer's `Debug` output (traces, error logs) shows their values.

use http::{
    HeaderName,
    header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE},
};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;

/// `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie` and
/// `X-Api-Key`.
pub const SENSITIVE_HEADERS: [HeaderName; 5] = [
    AUTHORIZATION,
    PROXY_AUTHORIZATION,
    COOKIE,
    SET_COOKIE,
    HeaderName::from_static("x-api-key"),
];

/// tower-http's layer marking [`SENSITIVE_HEADERS`] sensitive on requests
/// and responses. The access log never reads these headers anyway; the mark
/// keeps them out of anything else that formats headers.
pub fn sensitive_headers_layer() -> SetSensitiveHeadersLayer {
    SetSensitiveHeadersLayer::new(SENSITIVE_HEADERS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    #[tokio::test]
    async fn secrets_are_marked_both_ways() {
        let svc = ServiceBuilder::new()
            .layer(sensitive_headers_layer())
            .service(service_fn(|req: Request<()>| async move {
                for name in ["authorization", "cookie", "x-api-key"] {
                    assert!(req.headers()[name].is_sensitive(), "{name}");
                }
                assert!(!req.headers()["user-agent"].is_sensitive());
                let res = Response::builder()
                    .header("set-cookie", "id=secret")
                    .body(())
                    .unwrap();
                Ok::<_, Infallible>(res)
            }));
        let req = Request::builder()
            .header("authorization", "Bearer secret")
            .header("cookie", "a=secret")
            .header("x-api-key", "secret")
            .header("user-agent", "ua")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert!(res.headers()["set-cookie"].is_sensitive());
        assert_eq!(format!("{:?}", res.headers()["set-cookie"]), "Sensitive");
    }
}
