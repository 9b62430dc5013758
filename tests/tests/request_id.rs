//! `tollgate-request-id`'s layers around a running gateway: request ids
//! echoed and forwarded, `traceparent` propagated, and client IPs resolved
//! from trusted proxies with the forwarded chain the upstream sees.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use axum::Router;
use serde_json::Value;
use tollgate::{
    Gateway, Route, Upstream,
    request_id::{ClientIpConfig, ClientIpLayer, RequestIdLayer, TraceparentLayer},
};
use tollgate_tests::{echo_router, get_ok_json, spawn_gateway, spawn_upstream};

async fn gateway_with(client_ip: ClientIpLayer) -> tollgate_tests::RunningGateway {
    let up = spawn_upstream(echo_router()).await;
    let router: Router = Gateway::builder()
        .upstream(Upstream::builder("up").endpoint(format!("http://{up}")))
        .route(Route::prefix("/").to("up"))
        .build()
        .unwrap()
        .layer(client_ip)
        .layer(TraceparentLayer::new())
        .layer(RequestIdLayer::x_request_id());
    spawn_gateway(router).await
}

fn first(echo: &Value, name: &str) -> Option<String> {
    echo["headers"][name][0].as_str().map(str::to_owned)
}

#[tokio::test]
async fn request_id_is_forwarded_and_echoed_and_traceparent_propagated() {
    let gw = gateway_with(ClientIpLayer::peer_only()).await;
    let (headers, seen) = get_ok_json(
        gw.url("/x"),
        &[
            ("x-request-id", "forged id with spaces"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    )
    .await;
    let echoed = headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        first(&seen, "x-request-id").as_deref(),
        Some(echoed.as_str())
    );
    assert_ne!(echoed, "forged id with spaces");
    assert!(uuid_like(&echoed), "{echoed}");
    let tp = first(&seen, "traceparent").unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the gateway's own span goes upstream"
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn untrusted_peer_cannot_forge_the_chain() {
    let gw = gateway_with(ClientIpLayer::peer_only()).await;
    let (_, seen) = get_ok_json(
        gw.url("/x"),
        &[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")],
    )
    .await;
    assert_eq!(
        first(&seen, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert!(seen["headers"].get("forwarded").is_none(), "{seen}");
}

#[tokio::test]
async fn trusted_peer_keeps_the_chain_and_the_gateway_appends_the_peer() {
    let mut config = ClientIpConfig::default();
    config.trusted_proxies = vec!["127.0.0.1".into()];
    let gw = gateway_with(ClientIpLayer::from_config(&config).unwrap()).await;
    let (_, seen) = get_ok_json(
        gw.url("/x"),
        &[("x-forwarded-for", "198.51.100.4, garbage!, 203.0.113.9")],
    )
    .await;
    assert_eq!(
        first(&seen, "x-forwarded-for").as_deref(),
        Some("198.51.100.4, garbage!, 203.0.113.9, 127.0.0.1"),
        "the chain goes on untouched, with the peer appended"
    );
}
