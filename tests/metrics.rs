//! The Prometheus listener.

mod common;

use common::*;

#[tokio::test]
async fn metrics_count_requests_by_outcome() {
    let server =
        TestServer::start_with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics_addr = server.running.as_ref().unwrap().metrics_addr.unwrap();
    server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "m1"),
        )
        .await;
    server
        .post("/api/v1/sipgate/in", "event=ringing&callId=1")
        .await;
    let text = server
        .client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("sidecar_webhook_requests_total{outcome=\"accepted\"}"),
        "{text}"
    );
    assert!(
        text.contains("sidecar_webhook_requests_total{outcome=\"bad_request\"}"),
        "{text}"
    );
    assert!(
        text.contains("sidecar_decision_latency_seconds_bucket"),
        "{text}"
    );
}
