//! Starting up next to a database that is not there yet, and telling
//! systemd (`Type=notify`) when the server is ready and when it stops.
//!
//! A PostgreSQL server that comes up after the sidecar (a host booting, a
//! database restarting) is waited for: the open is retried with backoff,
//! the webhook port answers every request with 503 and the reason
//! meanwhile (`/readyz` says why; sipgate treats it as no answer), and the
//! log and `systemctl status` say it. A SQLite file that cannot be opened
//! is a setup error and fails at once, as do a URL that does not parse and a
//! server that refuses (a wrong password, an untrusted certificate).

use std::str::FromStr as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Opens the store; for PostgreSQL, waits for it (see the module doc),
/// answering on `webhooks` meanwhile.
pub(crate) async fn open_store(database: &str, webhooks: &TcpListener) -> anyhow::Result<Store> {
    if !crate::store::is_postgres(database) {
        return Ok(Store::open(database).await?);
    }
    // A URL that does not parse will not parse later either.
    sqlx::postgres::PgConnectOptions::from_str(database).map_err(|e| {
        anyhow::anyhow!(
            "--database is not a usable PostgreSQL URL ({}): {e}",
            crate::text::redact_url_password(database)
        )
    })?;
    let mut wait = FIRST_RETRY;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let reason = match Store::open(database).await {
            Ok(store) => {
                if attempt > 1 {
                    tracing::warn!(attempt, "PostgreSQL reachable: starting");
                }
                return Ok(store);
            }
            Err(error @ StoreError::Unreachable { .. }) => error.to_string(),
            Err(error) => return Err(error.into()),
        };
        tracing::warn!(
            attempt,
            retry_in_secs = wait.as_secs(),
            %reason,
            "PostgreSQL cannot be reached at start; retrying (the webhook port answers 503 meanwhile)"
        );
        notify(&[sd_notify::NotifyState::Status(&format!(
            "waiting for PostgreSQL (attempt {attempt}): {reason}"
        ))]);
        let retry = tokio::time::sleep(wait);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                accepted = webhooks.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(not_ready(stream, reason.clone()));
                    }
                }
            }
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// Answers every request on `stream` with 503 and why.
async fn not_ready(stream: tokio::net::TcpStream, reason: String) {
    let body = Bytes::from(format!(
        "not ready: the database cannot be reached yet, retrying: {reason}\n"
    ));
    let service = hyper::service::service_fn(move |_request| {
        let body = body.clone();
        async move {
            hyper::Response::builder()
                .status(hyper::StatusCode::SERVICE_UNAVAILABLE)
                .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header(hyper::header::CONNECTION, "close")
                .body(Full::new(body))
        }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(Duration::from_secs(10), connection).await;
}

/// Tells systemd the server is ready, and that it stops once `shutdown`
/// fires. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.
pub(crate) fn notify_ready(shutdown: CancellationToken) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    tokio::spawn(async move {
        shutdown.cancelled().await;
        notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping: finishing in-flight webhooks"),
        ]);
    });
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::debug!(%error, "cannot notify systemd");
    }
}
