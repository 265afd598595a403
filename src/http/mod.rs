//! The webhook listener (public: sipgate posts here): the router, its layers
//! and its state. [`guards`] decides who may post, [`webhook`] answers a push,
//! `recording` keeps each request and its answer for `ListRecentRequests`.
//! [`router`] opens no socket, so most HTTP tests drive it with `oneshot`.

mod error;
pub mod guards;
mod recording;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{FromRef, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

pub use error::WebhookError;
pub use guards::Guards;
pub use webhook::Webhook;

use crate::{
    bridge::BridgeStatuses,
    recent::RecentRequests,
    store::{StorageState, Store, WriterHandle},
    telemetry::WebhookOutcome,
};

/// Longest a request may take before it is answered 408; graceful shutdown
/// waits for requests in flight, so none may take forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The listener's state; handlers take the part they need (`FromRef`).
#[derive(Clone)]
pub struct HttpState {
    pub guards: Arc<Guards>,
    pub webhook: Arc<Webhook>,
    /// Behind an `Arc`: axum clones the state for every request.
    pub readiness: Arc<Readiness>,
    /// The last webhook requests, for `ListRecentRequests`.
    pub recent: Arc<RecentRequests>,
}

impl FromRef<HttpState> for Arc<Guards> {
    fn from_ref(state: &HttpState) -> Self {
        state.guards.clone()
    }
}

impl FromRef<HttpState> for Arc<Webhook> {
    fn from_ref(state: &HttpState) -> Self {
        state.webhook.clone()
    }
}

impl FromRef<HttpState> for Arc<Readiness> {
    fn from_ref(state: &HttpState) -> Self {
        state.readiness.clone()
    }
}

/// What `/readyz` checks: the writer runs, its last transaction committed,
/// the database answers, no in-process bridge has stopped (the body lists
/// the bridges).
#[derive(Clone)]
pub struct Readiness {
    pub writer: WriterHandle,
    pub store: Store,
    pub bridges: BridgeStatuses,
}

/// The webhook router, with its layers; no sockets.
pub fn router(state: HttpState) -> Router {
    let body_limit = state.webhook.body_limit;
    let recorder = recording::Recorder {
        recent: state.recent.clone(),
        guards: state.guards.clone(),
    };
    let webhooks = Router::new()
        .route("/api/v1/sipgate/{direction}", post(webhook::without_token))
        .route("/api/v1/sipgate/{direction}/", post(webhook::without_token))
        .route(
            "/api/v1/sipgate/{token}/{direction}",
            post(webhook::with_token),
        )
        .route(
            "/api/v1/sipgate/{token}/{direction}/",
            post(webhook::with_token),
        )
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(middleware::from_fn_with_state(body_limit, too_large_as_xml))
        .layer(middleware::from_fn_with_state(recorder, recording::record));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/announcements/{file}", get(announcement))
        .merge(webhooks)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// A call-flow announcement file, by the content hash in its URL
/// (`/announcements/{sha256}.wav`): the path names one content only, so
/// it is cached for good. Anything else is 404.
async fn announcement(
    State(webhook): State<Arc<Webhook>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    let found = file.strip_suffix(".wav").and_then(|sha256| {
        let flows = webhook.settings.live().flows.clone()?;
        flows.file(sha256)
    });
    match found {
        Some(bytes) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "audio/wav"),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such announcement\n").into_response(),
    }
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    if let StorageState::Failing { reason } = readiness.writer.storage_health().state() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: storage failing: {reason}\n"),
        )
            .into_response();
    }
    if readiness.writer.is_running() && readiness.store.ping().await {
        bridges_readyz(&readiness.bridges)
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database or writer unavailable\n",
        )
            .into_response()
    }
}

/// With storage ready: ready unless an in-process bridge stopped; the body
/// lists the bridges either way.
fn bridges_readyz(bridges: &BridgeStatuses) -> Response {
    let report = bridges.report();
    match report.check() {
        Ok(()) => (StatusCode::OK, format!("ready\n{}", report.lines)).into_response(),
        Err(reason) => {
            let body = format!("not ready: {reason}\n{}", report.lines);
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

/// The limit layer refuses a body whose declared length is too large before
/// any handler runs; give that refusal the same XML form (and count) as
/// every other one.
async fn too_large_as_xml(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let mut entry = recording::entry_for(request.extensions());
    let response = next.run(request).await;
    let is_xml = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/xml"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_xml {
        WebhookOutcome::TooLarge.count();
        tracing::warn!(limit, "webhook refused: declared body too large");
        let mut refusal = WebhookError::PayloadTooLarge(limit).respond(entry.as_mut());
        recording::attach(&mut refusal, entry);
        return refusal;
    }
    response
}

#[cfg(test)]
mod tests;
