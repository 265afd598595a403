//! The webhook listener: sipgate's pushes in, XML decisions out.
//!
//! Order of checks per request (each failure answers with an XML error and
//! changes nothing): source address, path token, Basic credentials, body size,
//! content type, signature over the raw bytes, form decoding, event fields.
//! Only then is the decision made from the in-memory settings snapshot and the
//! event handed to the writer; the reply waits for the commit at most
//! `reply_deadline`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::{
    App,
    config::SignatureMode,
    decide::{self, Action, Decision},
    sipgate::{
        event::{Direction, Event, EventKind},
        form::parse_form,
        xml::{self, Reply},
    },
    store::writer::{Committed, Intake},
};

/// The webhook router. No sockets: tests drive it with `oneshot`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/sipgate/{direction}", post(webhook_without_token))
        .route("/api/v1/sipgate/{direction}/", post(webhook_without_token))
        .route(
            "/api/v1/sipgate/{token}/{direction}",
            post(webhook_with_token),
        )
        .route(
            "/api/v1/sipgate/{token}/{direction}/",
            post(webhook_with_token),
        )
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.writer.is_running() && app.store.ping().await {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database or writer unavailable\n",
        )
            .into_response()
    }
}

/// Why a push was refused. Each maps to a 4xx with an XML body saying why.
#[derive(Debug)]
pub enum WebhookError {
    Forbidden(String),
    Unauthorized(String),
    /// 401 with a Basic challenge, so sipgate retries with the URL's credentials.
    BasicAuthRequired,
    NotFound(String),
    PayloadTooLarge(usize),
    BadRequest(String),
}

impl WebhookError {
    fn outcome(&self) -> &'static str {
        match self {
            WebhookError::Forbidden(_) => "forbidden_source",
            WebhookError::Unauthorized(_) => "unauthorized",
            WebhookError::BasicAuthRequired => "basic_auth_required",
            WebhookError::NotFound(_) => "not_found",
            WebhookError::PayloadTooLarge(_) => "too_large",
            WebhookError::BadRequest(_) => "bad_request",
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let (status, reason) = match &self {
            WebhookError::Forbidden(r) => (StatusCode::FORBIDDEN, r.clone()),
            WebhookError::Unauthorized(r) => (StatusCode::UNAUTHORIZED, r.clone()),
            WebhookError::BasicAuthRequired => (
                StatusCode::UNAUTHORIZED,
                "HTTP Basic credentials required".to_string(),
            ),
            WebhookError::NotFound(r) => (StatusCode::NOT_FOUND, r.clone()),
            WebhookError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes"),
            ),
            WebhookError::BadRequest(r) => (StatusCode::BAD_REQUEST, r.clone()),
        };
        let mut response = (status, xml_headers(), xml::render_error(&reason)).into_response();
        if matches!(self, WebhookError::BasicAuthRequired) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sipgate-sidecar\""),
            );
        }
        response
    }
}

fn xml_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=UTF-8"),
    )]
}

async fn webhook_without_token(
    State(app): State<Arc<App>>,
    Path(direction): Path<String>,
    request: Request,
) -> Response {
    webhook(app, None, direction, request).await
}

async fn webhook_with_token(
    State(app): State<Arc<App>>,
    Path((token, direction)): Path<(String, String)>,
    request: Request,
) -> Response {
    webhook(app, Some(token), direction, request).await
}

async fn webhook(
    app: Arc<App>,
    token: Option<String>,
    path_direction: String,
    request: Request,
) -> Response {
    let started = Instant::now();
    let result = handle(&app, token.as_deref(), &path_direction, request, started).await;
    let outcome = match &result {
        Ok((outcome, _)) => *outcome,
        Err(e) => {
            tracing::warn!(reason = ?e, "webhook refused");
            e.outcome()
        }
    };
    metrics::counter!("sidecar_webhook_requests_total", "outcome" => outcome).increment(1);
    match result {
        Ok((_, body)) => {
            metrics::histogram!("sidecar_decision_latency_seconds")
                .record(started.elapsed().as_secs_f64());
            (StatusCode::OK, xml_headers(), body).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn handle(
    app: &App,
    token: Option<&str>,
    path_direction: &str,
    request: Request,
    started: Instant,
) -> Result<(&'static str, String), WebhookError> {
    let config = &app.config;
    let path_direction = Direction::parse(path_direction).ok_or_else(|| {
        WebhookError::NotFound(format!(
            "unknown path segment '{path_direction}': use /in or /out"
        ))
    })?;

    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let peer_trusted =
        peer.is_some_and(|ip| config.trusted_proxies.iter().any(|n| n.contains(&ip)));
    check_source(app, peer, peer_trusted, request.headers())?;

    match (&config.webhook_token, token) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err(WebhookError::NotFound(
                "no webhook token is configured: use /api/v1/sipgate/{in,out}".into(),
            ));
        }
        (Some(_), None) => {
            return Err(WebhookError::Unauthorized(
                "webhook token missing from the path".into(),
            ));
        }
        (Some(expected), Some(given)) => {
            if !bool::from(expected.expose().as_bytes().ct_eq(given.as_bytes())) {
                return Err(WebhookError::Unauthorized("wrong webhook token".into()));
            }
        }
    }

    if let Some(basic) = &config.basic_auth {
        let expected = format!("{}:{}", basic.user, basic.password.expose());
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            });
        match given {
            Some(g) if bool::from(g.ct_eq(expected.as_bytes())) => {}
            _ => return Err(WebhookError::BasicAuthRequired),
        }
    }

    let headers = request.headers().clone();
    let body = read_body(request.into_body(), config.body_limit, &headers).await?;

    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(WebhookError::BadRequest(format!(
                "content type '{ct}' is not application/x-www-form-urlencoded"
            )));
        }
    }

    if config.signature == SignatureMode::Require {
        let signature = headers
            .get("x-sipgate-signature")
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        if let Err(e) = app.verifier.verify(&body, signature) {
            metrics::counter!("sidecar_signature_failures_total").increment(1);
            return Err(WebhookError::Unauthorized(e.to_string()));
        }
    }

    let fields = parse_form(&body).map_err(|e| WebhookError::BadRequest(e.to_string()))?;
    let event = Event::from_form(fields).map_err(|e| WebhookError::BadRequest(e.to_string()))?;

    let decision = match (event.kind, event.direction) {
        (EventKind::NewCall, Some(direction)) => Some(decide::decide(
            &app.settings.snapshot(),
            direction,
            &event.from,
            &event.to,
            &config.country_code,
        )),
        _ => None,
    };

    let kind = event.kind;
    let callback_direction = event.direction.unwrap_or(path_direction);
    let to = event.to.clone();
    let call_id = event.call_id.clone();
    let received_at_ms = crate::now_ms();
    let (outcome, decision) = commit(app, event, decision, received_at_ms, started).await;
    tracing::debug!(%call_id, event = kind.as_str(), ?decision, outcome, "webhook answered");

    let reply = match kind {
        EventKind::Answer | EventKind::Hangup => Reply::Empty,
        EventKind::NewCall | EventKind::Dtmf => {
            let callback = xml::callback_url(
                &base_url(app, &headers, peer_trusted),
                config.webhook_token.as_ref().map(|t| t.expose()),
                callback_direction.as_str(),
            );
            reply_for(decision.as_ref(), callback, to)
        }
    };
    Ok((outcome, xml::render(&reply)))
}

fn reply_for(decision: Option<&Decision>, callback: String, to: String) -> Reply {
    match decision {
        Some(Decision {
            action: Action::Reject,
            ..
        }) => Reply::Reject { callback },
        Some(Decision {
            action: Action::SetCallerId,
            caller_id: Some(caller_id),
            ..
        }) => Reply::Dial {
            callback,
            caller_id: caller_id.clone(),
            number: to,
        },
        _ => Reply::Plain { callback },
    }
}

/// Hands the event to the writer and waits for the commit, at most the reply
/// deadline. The submission runs in its own task so the event still commits
/// when the deadline passes or sipgate hangs up on us.
async fn commit(
    app: &App,
    event: Event,
    decision: Option<Decision>,
    received_at_ms: i64,
    started: Instant,
) -> (&'static str, Option<Decision>) {
    let writer = app.writer.clone();
    let intake = Intake {
        event,
        decision: decision.clone(),
        received_at_ms,
    };
    let task = tokio::spawn(async move {
        let receiver = writer.submit(intake).await?;
        receiver
            .await
            .map_err(|_| crate::store::StoreError::WriterClosed)?
    });
    let remaining = app.config.reply_deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(remaining, task).await {
        Ok(Ok(Ok(Committed::Appended { .. }))) => ("accepted", decision),
        // A replayed push gets the answer the original got.
        Ok(Ok(Ok(Committed::Duplicate {
            decision: stored, ..
        }))) => ("duplicate", stored.or(decision)),
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "event not stored; replying with the decision anyway");
            ("store_error", decision)
        }
        Ok(Err(join)) => {
            tracing::error!(error = %join, "event submission failed");
            ("store_error", decision)
        }
        Err(_) => {
            metrics::counter!("sidecar_reply_deadline_missed_total").increment(1);
            tracing::warn!(
                deadline_ms = app.config.reply_deadline.as_millis() as u64,
                "commit slower than the reply deadline; replying now, the event still commits"
            );
            ("deadline_missed", decision)
        }
    }
}

async fn read_body(body: Body, limit: usize, headers: &HeaderMap) -> Result<Vec<u8>, WebhookError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(WebhookError::PayloadTooLarge(limit));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit exceeded");
            if too_large {
                Err(WebhookError::PayloadTooLarge(limit))
            } else {
                Err(WebhookError::BadRequest(format!(
                    "could not read the body: {e}"
                )))
            }
        }
    }
}

/// The address a push really came from: the TCP peer, or, when the peer is a
/// trusted proxy, the right-most `X-Forwarded-For` entry that is not one.
fn source_address(
    peer: Option<IpAddr>,
    peer_trusted: bool,
    headers: &HeaderMap,
    app: &App,
) -> Option<IpAddr> {
    if !peer_trusted {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !app.config.trusted_proxies.iter().any(|n| n.contains(ip)))
        .or(peer)
}

fn check_source(
    app: &App,
    peer: Option<IpAddr>,
    peer_trusted: bool,
    headers: &HeaderMap,
) -> Result<(), WebhookError> {
    if app.config.allow_sources.is_empty() {
        return Ok(());
    }
    match source_address(peer, peer_trusted, headers, app) {
        Some(ip) if app.config.allow_sources.iter().any(|n| n.contains(&ip)) => Ok(()),
        Some(ip) => Err(WebhookError::Forbidden(format!(
            "source address {ip} is not allowed"
        ))),
        None => Err(WebhookError::Forbidden("source address unknown".into())),
    }
}

/// Base of the onAnswer/onHangup URLs: the configured public URL, else
/// `http://{Host}` (scheme from `X-Forwarded-Proto` only behind a trusted proxy).
/// With Basic auth on, the credentials go into the URL so follow-ups pass too.
fn base_url(app: &App, headers: &HeaderMap, peer_trusted: bool) -> String {
    let base = match &app.config.public_url {
        Some(url) => url.clone(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    !h.is_empty()
                        && h.bytes().all(|b| {
                            b.is_ascii_alphanumeric()
                                || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                        })
                })
                .map(str::to_owned)
                .unwrap_or_else(|| app.config.http_addr.to_string());
            let scheme = if peer_trusted {
                headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .filter(|p| *p == "https" || *p == "http")
                    .unwrap_or("http")
            } else {
                "http"
            };
            format!("{scheme}://{host}")
        }
    };
    match &app.config.basic_auth {
        Some(basic) => with_credentials(&base, &basic.user, basic.password.expose()),
        None => base,
    }
}

fn with_credentials(base: &str, user: &str, password: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_string();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return base.to_string();
    }
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!("{scheme}://{}:{}@{rest}", enc(user), enc(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_into_the_callback_base_once() {
        assert_eq!(
            with_credentials("https://pbx.example.com", "sip", "p@ss"),
            "https://sip:p%40ss@pbx.example.com"
        );
        assert_eq!(
            with_credentials("https://a:b@pbx.example.com/x", "sip", "pw"),
            "https://a:b@pbx.example.com/x"
        );
    }
}
