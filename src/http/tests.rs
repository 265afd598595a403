//! The router driven with `oneshot`: no socket, a real store and writer.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode, header},
};
use tower::ServiceExt;

use super::*;
use crate::{
    config::{Secret, SignatureMode},
    settings::{Change, SettingsManager},
    sipgate::signature::SignatureVerifier,
    store::testing::Harness,
};

struct Fixture {
    harness: Harness,
    state: HttpState,
}

async fn fixture(guards: Guards) -> Fixture {
    let harness = Harness::new(16).await;
    let settings = Arc::new(
        SettingsManager::load(Arc::new(harness.store.clone()), "49".into(), None)
            .await
            .expect("settings load"),
    );
    let webhook = Webhook {
        settings,
        verifier: SignatureVerifier::sipgate(),
        signature: SignatureMode::Off,
        writer: harness.writer.clone(),
        reply_deadline: Duration::from_secs(5),
        body_limit: 1024,
        public_url: Some("https://pbx.example.com".into()),
        listen_addr: ([127, 0, 0, 1], 8080).into(),
        webhook_token: guards.webhook_token.clone(),
        basic_auth: guards.basic_auth.clone(),
    };
    let state = HttpState {
        guards: Arc::new(guards),
        webhook: Arc::new(webhook),
        readiness: Arc::new(Readiness {
            writer: harness.writer.clone(),
            store: harness.store.clone(),
            bridges: Default::default(),
        }),
        recent: Arc::new(crate::recent::RecentRequests::new(16)),
    };
    Fixture { harness, state }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: String,
}

async fn send(state: &HttpState, request: Request<Body>) -> Answer {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.into())
        .unwrap()
}

const NEW_CALL: &str = "event=newCall&direction=in&from=492111234567&to=4930600000000&callId=c1";

#[tokio::test]
async fn health_and_readiness_answer() {
    let f = fixture(Guards::default()).await;
    let health = send(
        &f.state,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok\n")
    );
    let ready = send(
        &f.state,
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (StatusCode::OK, "ready\n")
    );
    f.harness.stop().await;
}

#[tokio::test]
async fn a_blocked_caller_is_rejected_and_the_event_stored() {
    let f = fixture(Guards::default()).await;
    f.state
        .webhook
        .settings
        .update(
            "test",
            Change::add_block("+49 211 1234567", "", "49").unwrap(),
        )
        .await
        .unwrap();
    let answer = send(&f.state, post("/api/v1/sipgate/in", NEW_CALL)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/xml; charset=UTF-8");
    assert!(
        answer.body.contains("<Reject reason=\"busy\"/>"),
        "{}",
        answer.body
    );
    assert!(
        answer
            .body
            .contains("onAnswer=\"https://pbx.example.com/api/v1/sipgate/in\""),
        "{}",
        answer.body
    );
    // The newCall and the synthetic hangup that ends the rejected call.
    assert_eq!(f.harness.store.head_seq().await.unwrap(), 2);
    f.harness.stop().await;
}

#[tokio::test]
async fn refusals_are_xml_and_store_nothing() {
    let f = fixture(Guards {
        webhook_token: Some(Secret::new("right")),
        ..Guards::default()
    })
    .await;
    let wrong = send(&f.state, post("/api/v1/sipgate/wrong/in", NEW_CALL)).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("<Error>wrong webhook token</Error>"));

    // Declared too large: refused by the limit layer before any handler.
    let declared = send(&f.state, post("/api/v1/sipgate/right/in", vec![b'a'; 2000])).await;
    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(declared.content_type, "application/xml; charset=UTF-8");
    assert!(
        declared.body.contains("larger than 1024 bytes"),
        "{}",
        declared.body
    );

    // Streamed with no length: cut off while reading.
    let chunks = futures::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; 500]))),
    );
    let streamed = send(
        &f.state,
        post("/api/v1/sipgate/right/in", Body::from_stream(chunks)),
    )
    .await;
    assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        streamed.body.contains("larger than 1024 bytes"),
        "{}",
        streamed.body
    );

    let undecodable = send(&f.state, post("/api/v1/sipgate/%ff/in", NEW_CALL)).await;
    assert_eq!(undecodable.status, StatusCode::BAD_REQUEST);
    assert_eq!(undecodable.content_type, "application/xml; charset=UTF-8");
    assert!(
        undecodable.body.contains("<Error>the path is not valid"),
        "{}",
        undecodable.body
    );

    let no_direction = send(&f.state, post("/api/v1/sipgate/right/sideways", NEW_CALL)).await;
    assert_eq!(no_direction.status, StatusCode::NOT_FOUND);

    assert_eq!(f.harness.store.head_seq().await.unwrap(), 0);
    let accepted = send(&f.state, post("/api/v1/sipgate/right/in", NEW_CALL)).await;
    assert_eq!(accepted.status, StatusCode::OK);
    assert_eq!(f.harness.store.head_seq().await.unwrap(), 1);
    f.harness.stop().await;
}

#[tokio::test]
async fn the_allow_list_sees_the_tcp_peer() {
    let f = fixture(Guards {
        allow_sources: vec!["217.116.118.254/32".parse().unwrap()],
        ..Guards::default()
    })
    .await;
    let from = |peer: &str| {
        let mut request = post("/api/v1/sipgate/in", NEW_CALL);
        let addr: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(addr));
        request
    };
    let stranger = send(&f.state, from("198.51.100.7:4444")).await;
    assert_eq!(stranger.status, StatusCode::FORBIDDEN);
    assert!(stranger.body.contains("198.51.100.7 is not allowed"));
    let sipgate = send(&f.state, from("217.116.118.254:4444")).await;
    assert_eq!(sipgate.status, StatusCode::OK);
    f.harness.stop().await;
}
