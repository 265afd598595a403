//! The internal gRPC listener: Settings, Flows, CallEvents, CallLog, Diagnostics, plus standard
//! health and reflection (v1 and v1alpha) so generic tools work without the
//! proto files. An optional bearer token guards every call to the sidecar's
//! own services; health and reflection stay open, since probes (Kubernetes'
//! gRPC probe, grpc_health_probe) cannot send metadata and neither reveals
//! anything but the API's shape and whether it serves.

pub mod calls;
pub mod convert;
pub mod diagnostics;
pub mod events;
pub mod flows;
pub mod settings;
mod status;
pub mod wire;

use std::{future::Future, sync::Arc};

use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, service::Interceptor};

use crate::{
    config::{GrpcListenerConfig, Secret},
    fanout::Fanout,
    grpc::wire::generated::call_events_server::CallEventsServer,
    listener::Conn,
    proto::{
        call_log_server::CallLogServer, diagnostics_server::DiagnosticsServer,
        flows_server::FlowsServer, settings_server::SettingsServer,
    },
    recent::RecentRequests,
    settings::SettingsManager,
    store::{Store, WriterHandle},
};

/// What the gRPC listener serves from.
#[derive(Clone)]
pub struct GrpcState {
    pub settings: Arc<SettingsManager>,
    pub store: Store,
    pub writer: WriterHandle,
    pub fanout: Fanout,
    /// `authorization: Bearer <token>` required on every call when set.
    pub token: Option<Secret>,
    /// Cancelled when the server begins shutting down; ends live streams.
    pub streams_end: CancellationToken,
    /// The last webhook requests, for `Diagnostics`.
    pub recent: Arc<RecentRequests>,
    /// The webhook URLs' base as an evaluated reply shows it, secrets
    /// redacted (`Flows.EvaluateFlows`).
    pub reply_base: Arc<str>,
}

/// Who made a change, for the audit trail: the peer address plus the
/// client's self-description (`x-sidecar-client`, else `user-agent`).
pub fn client_identity<T>(request: &Request<T>) -> String {
    let peer = request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    let described = ["x-sidecar-client", "user-agent"]
        .iter()
        .find_map(|k| request.metadata().get(*k).and_then(|v| v.to_str().ok()))
        .map(|s| s.chars().take(200).collect::<String>());
    match described {
        Some(d) => format!("{peer} ({d})"),
        None => peer,
    }
}

/// Requires `authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<str>>,
}

impl BearerAuth {
    pub fn new(token: Option<&str>) -> Self {
        BearerAuth {
            token: token.map(Arc::from),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if bool::from(g.as_bytes().ct_eq(expected.as_bytes())) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated(
                "this server requires 'authorization: Bearer <token>' (--grpc-token)",
            )),
        }
    }
}

/// Reports NOT_SERVING for "" and every service while the writer's
/// transactions fail, SERVING again once one commits.
async fn storage_health(
    reporter: tonic_health::server::HealthReporter,
    health: crate::store::StorageHealth,
) {
    use crate::store::StorageState;
    use tonic::server::NamedService;
    use tonic_health::ServingStatus;
    let names = [
        "",
        <SettingsServer<settings::SettingsService> as NamedService>::NAME,
        <FlowsServer<flows::FlowsService> as NamedService>::NAME,
        <CallEventsServer<events::EventsService> as NamedService>::NAME,
        <CallLogServer<calls::CallLogService> as NamedService>::NAME,
    ];
    let mut changes = health.subscribe();
    loop {
        let healthy = matches!(*changes.borrow_and_update(), StorageState::Healthy);
        let status = if healthy {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in names {
            reporter.set_service_status(name, status).await;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Serves the gRPC API on the connections of `incoming` until `shutdown`
/// completes. `incoming` has done the TLS handshake and enforces the
/// connection cap and deadlines (see [`crate::listener`]); here: HTTP/2
/// keep-alive PINGs and the cap on concurrent streams per connection.
pub async fn serve(
    state: GrpcState,
    incoming: impl futures::Stream<Item = std::io::Result<Conn>> + Send + 'static,
    limits: GrpcListenerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let auth = BearerAuth::new(state.token.as_ref().map(|t| t.expose()));
    let country_code: Arc<str> = state.settings.country_code().into();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SettingsServer<settings::SettingsService>>()
        .await;
    health_reporter
        .set_serving::<FlowsServer<flows::FlowsService>>()
        .await;
    health_reporter
        .set_serving::<CallEventsServer<events::EventsService>>()
        .await;
    health_reporter
        .set_serving::<CallLogServer<calls::CallLogService>>()
        .await;
    health_reporter
        .set_serving::<DiagnosticsServer<diagnostics::DiagnosticsService>>()
        .await;
    tokio::spawn(storage_health(
        health_reporter,
        state.writer.storage_health(),
    ));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");

    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.max_streams_per_connection)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(SettingsServer::with_interceptor(
            settings::SettingsService::new(state.settings.clone()),
            auth.clone(),
        ))
        .add_service(FlowsServer::with_interceptor(
            flows::FlowsService::new(state.settings.clone(), state.reply_base.clone()),
            auth.clone(),
        ))
        .add_service(CallEventsServer::with_interceptor(
            events::EventsService::new(
                state.store.clone(),
                state.fanout.clone(),
                country_code.clone(),
                state.streams_end.clone(),
            ),
            auth.clone(),
        ))
        .add_service(CallLogServer::with_interceptor(
            calls::CallLogService::new(state.store, state.writer, country_code),
            auth.clone(),
        ))
        .add_service(DiagnosticsServer::with_interceptor(
            diagnostics::DiagnosticsService::new(state.recent),
            auth,
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
