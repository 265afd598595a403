//! The gRPC token rules: health and reflection (v1 and v1alpha) answer
//! without the token, since probes cannot send metadata; the sidecar's own
//! services refuse a call without it or with a wrong one.

mod common;

use common::*;
use futures::StreamExt;
use sipgate_sidecar::{
    config::Secret,
    proto::{
        self, call_events_client::CallEventsClient, call_log_client::CallLogClient,
        diagnostics_client::DiagnosticsClient, settings_client::SettingsClient,
    },
};
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

const TOKEN: &str = "grpc-s3cret";

async fn guarded_server() -> TestServer {
    TestServer::start_with(|c| c.grpc_token = Some(Secret::new(TOKEN))).await
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

#[tokio::test]
async fn health_answers_without_the_token() {
    let server = guarded_server().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in [
        "",
        "sidecar.v1.CallEvents",
        "sidecar.v1.Settings",
        "sidecar.v1.CallLog",
        "sidecar.v1.Diagnostics",
    ] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of '{service}' without a token: {e}"))
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service}");
    }
    server.stop().await;
}

async fn services_v1(channel: Channel) -> Vec<String> {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1 without a token")
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("a service list");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

async fn services_v1alpha(channel: Channel) -> Vec<String> {
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1alpha without a token")
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("a service list");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_answer_without_the_token() {
    let server = guarded_server().await;
    for services in [
        services_v1(server.channel().await).await,
        services_v1alpha(server.channel().await).await,
    ] {
        for expected in [
            "sidecar.v1.CallEvents",
            "sidecar.v1.CallLog",
            "sidecar.v1.Settings",
            "sidecar.v1.Diagnostics",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} in {services:?}"
            );
        }
    }
    server.stop().await;
}

/// The request with `token` as bearer token, or none.
fn wrap<T>(token: Option<&str>, message: T) -> Request<T> {
    match token {
        Some(t) => with_token(message, t),
        None => Request::new(message),
    }
}

#[tokio::test]
async fn every_sidecar_service_requires_the_token() {
    let server = guarded_server().await;
    let channel = server.channel().await;
    let mut settings = SettingsClient::new(channel.clone());
    let mut events = CallEventsClient::new(channel.clone());
    let mut calls = CallLogClient::new(channel.clone());
    let mut diagnostics = DiagnosticsClient::new(channel);
    let list = || proto::ListEventsRequest {
        after_seq: 0,
        limit: 1,
        ..Default::default()
    };

    for token in [None, Some("wrong-token")] {
        let errors = [
            settings
                .get_settings(wrap(token, proto::GetSettingsRequest {}))
                .await
                .unwrap_err(),
            events.list_events(wrap(token, list())).await.unwrap_err(),
            events
                .subscribe(wrap(token, proto::SubscribeRequest::default()))
                .await
                .err()
                .unwrap(),
            calls
                .list_calls(wrap(token, proto::ListCallsRequest::default()))
                .await
                .unwrap_err(),
            diagnostics
                .list_recent_requests(wrap(token, proto::ListRecentRequestsRequest::default()))
                .await
                .unwrap_err(),
        ];
        for status in errors {
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{token:?}: {status:?}"
            );
        }
    }

    settings
        .get_settings(with_token(proto::GetSettingsRequest {}, TOKEN))
        .await
        .expect("settings with the token");
    let page = events
        .list_events(with_token(list(), TOKEN))
        .await
        .expect("events with the token");
    assert_eq!(page.into_inner().head_seq, 0);
    calls
        .list_calls(with_token(proto::ListCallsRequest::default(), TOKEN))
        .await
        .expect("calls with the token");
    diagnostics
        .list_recent_requests(with_token(
            proto::ListRecentRequestsRequest::default(),
            TOKEN,
        ))
        .await
        .expect("diagnostics with the token");
    server.stop().await;
}
