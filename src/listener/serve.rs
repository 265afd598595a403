//! Serving accepted connections: the webhook router over hyper, the gRPC
//! connections handed to tonic.

use std::{io, sync::Arc};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use super::{Conn, Listener, Throttle, WARN_EVERY};
use crate::{config::HttpListenerConfig, sipgate::xml, tls};

/// Serves `router` on the webhook listener until `shutdown`; connections
/// still open when `deadline` fires are dropped.
pub async fn serve_http(
    listener: Listener,
    router: Router,
    config: HttpListenerConfig,
    shutdown: CancellationToken,
    deadline: CancellationToken,
) {
    let router = limit_webhooks(router, config.max_in_flight);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true);
    if config.http2 {
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(u32::try_from(config.max_in_flight).unwrap_or(u32::MAX));
    } else {
        builder = builder.http1_only();
    }
    let builder = Arc::new(builder);
    let stats = listener.stats();
    let tracker = TaskTracker::new();
    let serve = {
        let shutdown = shutdown.clone();
        let deadline = deadline.clone();
        move |conn: Conn| {
            let builder = builder.clone();
            let router = router.clone();
            let shutdown = shutdown.clone();
            let deadline = deadline.clone();
            async move { serve_http_connection(conn, &builder, router, shutdown, deadline).await }
        }
    };
    listener
        .accept_loop(shutdown, deadline, tracker.clone(), serve)
        .await;
    tracker.close();
    if stats.open() > 0 {
        tracing::info!(
            open = stats.open(),
            "webhook listener closed; waiting for open connections"
        );
    }
    tracker.wait().await;
}

async fn serve_http_connection(
    conn: Conn,
    builder: &auto::Builder<TokioExecutor>,
    router: Router,
    shutdown: CancellationToken,
    deadline: CancellationToken,
) {
    let peer = conn.peer();
    let over_tls = conn.is_tls();
    let service = router.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if over_tls {
            request.extensions_mut().insert(tls::OverTls);
        }
        request
    });
    let connection =
        builder.serve_connection(TokioIo::new(conn), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                ended = connection.as_mut() => ended,
                _ = deadline.cancelled() => {
                    tracing::debug!(%peer, "webhook connection dropped at the shutdown deadline");
                    return;
                }
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
    }
}

/// At most `max` webhooks at once; the next is answered 503 with the usual
/// XML error, before its body is read.
fn limit_webhooks(router: Router, max: usize) -> Router {
    let slots = Arc::new(Semaphore::new(max));
    let warnings = Arc::new(Throttle::new(WARN_EVERY));
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let slots = slots.clone();
            let warnings = warnings.clone();
            async move {
                if !request.uri().path().starts_with("/api/v1/sipgate/") {
                    return next.run(request).await;
                }
                let Ok(_slot) = slots.try_acquire_owned() else {
                    crate::telemetry::WebhookOutcome::Overloaded.count();
                    if let Some(held) = warnings.ready() {
                        tracing::warn!(
                            limit = max,
                            more_since_last_line = held,
                            "webhook refused with 503: too many in flight (--max-webhooks-in-flight)"
                        );
                    }
                    return overloaded();
                };
                next.run(request).await
            }
        },
    ))
}

fn overloaded() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=UTF-8"),
            ),
            (header::RETRY_AFTER, HeaderValue::from_static("1")),
        ],
        xml::render_error("too many webhooks in flight; try again"),
    )
        .into_response()
}

/// Accepts on the gRPC listener until `shutdown` and yields the connections
/// (handshakes done) for tonic; `deadline` drops them later.
pub fn grpc_incoming(
    listener: Listener,
    shutdown: CancellationToken,
    deadline: CancellationToken,
) -> (ReceiverStream<io::Result<Conn>>, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(64);
    let tracker = TaskTracker::new();
    let serve = move |conn: Conn| {
        let sender = sender.clone();
        async move {
            // Fails only when tonic stopped taking connections: shutting down.
            let _ = sender.send(Ok(conn)).await;
        }
    };
    let task = tokio::spawn(listener.accept_loop(shutdown, deadline, tracker, serve));
    (ReceiverStream::new(receiver), task)
}
