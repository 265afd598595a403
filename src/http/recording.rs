//! Puts every request to the webhook routes into the recent-requests ring
//! ([`crate::recent`]). The middleware notes what the request line says and
//! how long the answer took; the handler (or the body-limit refusal) hands
//! over what only it knows, in the response's extensions: the event's
//! fields, the decision, the reason, the reply, the seq.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{Extensions, HeaderMap},
    middleware::Next,
    response::Response,
};

use super::guards::Guards;
use crate::recent::{self, RecentRequest, RecentRequests};

/// What the middleware needs.
#[derive(Clone)]
pub struct Recorder {
    pub recent: Arc<RecentRequests>,
    pub guards: Arc<Guards>,
}

/// In a request's extensions while its entry is recorded: the handler fills
/// an entry only then (`--recent-requests 0` costs nothing).
#[derive(Clone, Copy)]
pub(super) struct Recording;

/// The handler's part of the entry, in the response's extensions.
#[derive(Clone)]
struct Noted(Box<RecentRequest>);

/// An empty entry to fill when this request is recorded.
pub(super) fn entry_for(extensions: &Extensions) -> Option<RecentRequest> {
    extensions
        .get::<Recording>()
        .map(|_| RecentRequest::default())
}

/// Hands `entry` (if any) to the middleware with the response.
pub(super) fn attach(response: &mut Response, entry: Option<RecentRequest>) {
    if let Some(entry) = entry {
        response.extensions_mut().insert(Noted(Box::new(entry)));
    }
}

/// The event fields of a form, for the entry of a push refused after its
/// body was read (bad signature, an event the sidecar does not know).
pub(super) fn note_form(entry: &mut RecentRequest, body: &[u8]) {
    let Ok(fields) = crate::sipgate::form::parse_form(body) else {
        return;
    };
    for (key, value) in &fields {
        match key.as_str() {
            "event" => entry.kind = crate::EventKind::parse(value),
            "callId" => entry.call_id = recent::field(value),
            "direction" => entry.direction = crate::Direction::parse(value),
            "from" => entry.from = recent::field(value),
            "to" => entry.to = recent::field(value),
            _ => {}
        }
    }
}

pub(super) async fn record(
    State(recorder): State<Recorder>,
    mut request: Request,
    next: Next,
) -> Response {
    if recorder.recent.capacity() == 0 {
        return next.run(request).await;
    }
    let started = Instant::now();
    let received_at_ms = crate::now_ms();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let remote_addr = remote(&recorder.guards, peer, request.headers());
    let method = request.method().as_str().to_owned();
    let path = recent::redact_path(request.uri().path());
    request.extensions_mut().insert(Recording);

    let mut response = next.run(request).await;

    let mut entry = response
        .extensions_mut()
        .remove::<Noted>()
        .map(|n| *n.0)
        .unwrap_or_default();
    entry.received_at_ms = received_at_ms;
    entry.remote_addr = remote_addr;
    entry.method = method;
    entry.path = path;
    entry.status = response.status().as_u16();
    entry.duration_us = duration_us(started.elapsed());
    recorder.recent.push(entry);
    response
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The TCP peer, or behind a trusted proxy the client it forwarded for
/// followed by the proxy: `217.116.118.254 via 127.0.0.1:41234`.
fn remote(guards: &Guards, peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
    let Some(peer) = peer else {
        return "unknown".into();
    };
    match guards.forwarded_source(peer.ip(), headers) {
        Some(client) => format!("{client} via {peer}"),
        None => peer.to_string(),
    }
}
