//! The gRPC listener itself: the bearer token, health and reflection.

mod common;

use common::*;
use sipgate_sidecar::proto;

#[tokio::test]
async fn grpc_token_guards_the_services_but_not_health() {
    let server = TestServer::start_with(|c| {
        c.grpc_token = Some(sipgate_sidecar::config::Secret::new("let-me-in"));
    })
    .await;
    let denied = server
        .settings()
        .await
        .get_settings(proto::GetSettingsRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);

    let channel = server.channel().await;
    let token: tonic::metadata::MetadataValue<_> = "Bearer let-me-in".parse().unwrap();
    let with_token = move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", token.clone());
        Ok(req)
    };
    let mut settings = proto::settings_client::SettingsClient::with_interceptor(
        channel.clone(),
        with_token.clone(),
    );
    assert!(
        settings
            .get_settings(proto::GetSettingsRequest {})
            .await
            .is_ok()
    );

    let mut health = tonic_health::pb::health_client::HealthClient::with_interceptor(
        channel.clone(),
        with_token.clone(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "sidecar.v1.Settings".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    // Probes send no metadata: health answers without the token
    // (tests/grpc_auth.rs covers reflection and the other services).
    let mut unauthenticated_health = tonic_health::pb::health_client::HealthClient::new(channel);
    assert!(
        unauthenticated_health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new()
            })
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start().await;
    let channel = server.channel().await;

    let mut v1_client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = v1_client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "sidecar.v1.Settings",
        "sidecar.v1.CallEvents",
        "sidecar.v1.CallLog",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "sidecar.v1.Settings".into(),
            ),
        ),
    };
    let mut stream = alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}
