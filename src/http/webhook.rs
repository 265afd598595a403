//! The webhook handler: sipgate's pushes in, XML decisions out.
//!
//! Order of checks per request (each failure answers with an XML error and
//! changes nothing): declared body size (the router's limit layer), path
//! direction, source address, path token, Basic credentials, body size,
//! content type, signature over the raw bytes, form decoding, event fields.
//! Only then is the decision made from the in-memory settings snapshot and the
//! event handed to the writer; the reply waits for the commit at most
//! `reply_deadline`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Path, Request, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::LengthLimitError;

use super::{
    error::{WebhookError, refusal_log, xml_headers},
    guards::Guards,
    recording,
};
use crate::{
    config::{BasicAuth, Secret, SignatureMode},
    decide::{self, Decision, Gather, Inputs, ReplyUrls},
    recent::{self, RecentRequest},
    settings::SettingsManager,
    sipgate::{
        event::{Direction, Event, EventKind},
        form::parse_form,
        signature::SignatureVerifier,
        xml::{self, Reply},
    },
    store::{Committed, Intake, StoreError, WriterHandle},
    telemetry::{WebhookOutcome, names},
    tls::OverTls,
};

/// Everything the handler needs past the guards.
pub struct Webhook {
    pub settings: Arc<SettingsManager>,
    pub verifier: SignatureVerifier,
    pub signature: SignatureMode,
    pub writer: WriterHandle,
    /// The longest a reply waits for its event's commit.
    pub reply_deadline: Duration,
    /// Largest body, as named in the 413 reason.
    pub body_limit: usize,
    /// Base of the onAnswer/onHangup URLs; derived from `Host` when unset.
    pub public_url: Option<String>,
    /// Fallback host for the callback URLs when a request has no usable `Host`.
    pub listen_addr: SocketAddr,
    /// Written into the callback URLs, so sipgate's follow-ups pass the guards.
    pub webhook_token: Option<Secret>,
    pub basic_auth: Option<BasicAuth>,
}

/// A path segment that is not valid percent-encoded UTF-8 (e.g. `%ff` in
/// the token) is refused like any other bad request, in XML.
fn path_error(rejection: PathRejection) -> WebhookError {
    WebhookError::BadRequest(format!("the path is not valid: {}", rejection.body_text()))
}

pub async fn without_token(
    State(guards): State<Arc<Guards>>,
    State(webhook): State<Arc<Webhook>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let path = path.map(|Path(direction)| (None, direction));
    answer(&guards, &webhook, path.map_err(path_error), request).await
}

pub async fn with_token(
    State(guards): State<Arc<Guards>>,
    State(webhook): State<Arc<Webhook>>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let path = path.map(|Path((token, direction))| (Some(token), direction));
    answer(&guards, &webhook, path.map_err(path_error), request).await
}

/// Answers one push and counts it by outcome; with recent requests on, the
/// entry is filled here, from the typed result, and nowhere else.
async fn answer(
    guards: &Guards,
    webhook: &Webhook,
    path: Result<(Option<String>, String), WebhookError>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let mut entry = recording::entry_for(request.extensions());
    let result = match path {
        Ok((token, direction)) => {
            let target = Target {
                peer: peer.map(|p| p.ip()),
                token: token.as_deref(),
                direction: &direction,
            };
            handle(guards, webhook, target, request, started, entry.is_some()).await
        }
        Err(error) => Err(Refusal { error, body: None }),
    };
    let mut response = match result {
        Ok(answered) => {
            answered.outcome.count();
            metrics::histogram!(names::DECISION_LATENCY).record(started.elapsed().as_secs_f64());
            if let Some(entry) = entry.as_mut() {
                answered.note(entry);
            }
            (StatusCode::OK, xml_headers(), answered.body).into_response()
        }
        Err(Refusal { error, body }) => {
            refusal_log::warn(peer, &error);
            error.outcome().count();
            if let (Some(entry), Some(body)) = (entry.as_mut(), body) {
                // Refused after its body was read: the entry shows which call it was.
                recording::note_form(entry, &body);
            }
            error.respond(entry.as_mut())
        }
    };
    recording::attach(&mut response, entry);
    response
}

/// Where a push was sent: from whom, with which path token and direction.
struct Target<'a> {
    peer: Option<IpAddr>,
    token: Option<&'a str>,
    direction: &'a str,
}

/// A push refused: why, and its body when it was read.
struct Refusal {
    error: WebhookError,
    body: Option<Vec<u8>>,
}

impl From<WebhookError> for Refusal {
    fn from(error: WebhookError) -> Self {
        Refusal { error, body: None }
    }
}

/// A push answered 200: how it fared and what was sent.
struct Answered {
    outcome: WebhookOutcome,
    kind: EventKind,
    call_id: String,
    direction: Option<Direction>,
    from: String,
    to: String,
    decision: Option<Decision>,
    seq: Option<u64>,
    /// The XML sent.
    body: String,
    /// The XML as the entry shows it (secrets redacted), when it differs.
    shown: Option<String>,
}

impl Answered {
    /// Fills the recent-requests entry.
    fn note(&self, entry: &mut RecentRequest) {
        entry.outcome = Some(self.outcome);
        entry.kind = Some(self.kind);
        entry.call_id = recent::field(&self.call_id);
        entry.direction = self.direction;
        entry.from = recent::field(&self.from);
        entry.to = recent::field(&self.to);
        entry.decision = self.decision.clone();
        entry.seq = self.seq;
        entry.duplicate = self.outcome == WebhookOutcome::Duplicate;
        entry.set_reply(self.shown.as_deref().unwrap_or(&self.body));
    }
}

/// Guard → parse → decide → commit → render.
async fn handle(
    guards: &Guards,
    webhook: &Webhook,
    target: Target<'_>,
    request: Request,
    started: Instant,
    recording: bool,
) -> Result<Answered, Refusal> {
    let Target {
        peer,
        token,
        direction: path_direction,
    } = target;
    let path_direction = Direction::parse(path_direction).ok_or_else(|| {
        WebhookError::NotFound(format!(
            "unknown path segment '{}': use /in or /out",
            path_direction.chars().take(64).collect::<String>()
        ))
    })?;
    guards.check(peer, token, request.headers())?;

    let over_tls = request.extensions().get::<OverTls>().is_some();
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let body = read_body(request.into_body(), webhook.body_limit).await?;

    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(WebhookError::BadRequest(format!(
                "content type '{ct}' is not application/x-www-form-urlencoded"
            ))
            .into());
        }
    }

    if webhook.signature == SignatureMode::Require {
        let signature = headers
            .get("x-sipgate-signature")
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        if let Err(e) = webhook.verifier.verify(&body, signature) {
            metrics::counter!(names::SIGNATURE_FAILURES).increment(1);
            return Err(Refusal {
                error: WebhookError::Unauthorized(e.to_string()),
                body: Some(body),
            });
        }
    }

    let fields = parse_form(&body).map_err(|e| WebhookError::BadRequest(e.to_string()))?;
    let event = match Event::from_form(fields) {
        Ok(event) => event,
        Err(e) => {
            return Err(Refusal {
                error: WebhookError::BadRequest(e.to_string()),
                body: Some(body),
            });
        }
    };

    // Decide, from memory only.
    let live = webhook.settings.live();
    let inputs = Inputs {
        settings: &live.settings,
        flows: live.flows.as_deref(),
        now: jiff::Timestamp::now(),
        country_code: webhook.settings.country_code(),
    };
    let menu = (event.kind == EventKind::Dtmf)
        .then(|| {
            webhook
                .settings
                .menu_key()
                .verify(&event.call_id, query.as_deref())
        })
        .flatten();
    let decision = decide::decide(&event, &inputs, menu.as_ref());

    let mut answered = Answered {
        outcome: WebhookOutcome::Accepted,
        kind: event.kind,
        call_id: event.call_id.clone(),
        direction: event.direction,
        from: event.from.clone(),
        to: event.to.clone(),
        decision: None,
        seq: None,
        body: String::new(),
        shown: None,
    };
    let digits = event.dtmf.clone();
    let committed = commit(webhook, event, decision, started).await;
    answered.outcome = committed.outcome;
    answered.seq = committed.seq;
    answered.decision = match (committed.replayed, &menu) {
        // A replayed dtmf push: the prompt was answered already.
        (true, Some(state)) => Some(decide::dtmf(&inputs, state, &digits, true)),
        _ => committed.decision,
    };
    tracing::debug!(
        call_id = %answered.call_id,
        event = answered.kind.as_str(),
        decision = ?answered.decision,
        outcome = answered.outcome.as_str(),
        "webhook answered"
    );

    // Render.
    answered.body = match answered.kind {
        EventKind::Answer | EventKind::Hangup => xml::render(&Reply::Empty),
        EventKind::NewCall | EventKind::Dtmf => {
            let direction = answered.direction.unwrap_or(path_direction);
            let render = |secrets: Secrets| {
                let base = base_url(webhook, &headers, guards.trusts(peer), over_tls, secrets);
                let token = match secrets {
                    Secrets::Shown => webhook.webhook_token.as_ref().map(|t| t.expose()),
                    Secrets::Redacted => webhook.webhook_token.as_ref().map(|_| recent::REDACTED),
                };
                let callback = xml::callback_url(&base, token, direction.as_str());
                let key = webhook.settings.menu_key();
                let call_id = answered.call_id.as_str();
                let menu_query = |g: &Gather, rule: &str| key.query(call_id, &g.menu, g.step, rule);
                let urls = ReplyUrls {
                    callback: &callback,
                    base: &base,
                    menu_query: &menu_query,
                };
                xml::render(&decide::reply(
                    answered.decision.as_ref(),
                    &urls,
                    &answered.to,
                ))
            };
            let body = render(Secrets::Shown);
            if recording {
                // The callback URLs carry the path token and credentials; the
                // entry shows them redacted.
                answered.shown = Some(render(Secrets::Redacted)).filter(|shown| *shown != body);
            }
            body
        }
    };
    Ok(answered)
}

/// Whether a callback URL carries the real path token and credentials, or
/// shows them as `<redacted>` (in the recent-requests entry).
#[derive(Clone, Copy)]
enum Secrets {
    Shown,
    Redacted,
}

/// How a push's event fared with the writer.
struct CommitOutcome {
    outcome: WebhookOutcome,
    /// The decision to answer with (a duplicate's is the stored one).
    decision: Option<Decision>,
    /// Where it is in the log, when known before the reply.
    seq: Option<u64>,
    /// A dtmf push for a prompt already answered: not stored.
    replayed: bool,
}

/// Hands the event to the writer and waits for the commit, at most the reply
/// deadline. The submission runs in its own task so the event still commits
/// when the deadline passes or sipgate hangs up on us.
async fn commit(
    webhook: &Webhook,
    event: Event,
    decision: Option<Decision>,
    started: Instant,
) -> CommitOutcome {
    let writer = webhook.writer.clone();
    let intake = Intake {
        event,
        decision: decision.clone(),
        received_at_ms: crate::now_ms(),
    };
    let task = tokio::spawn(async move {
        let receiver = writer.submit(intake).await?;
        receiver.await.map_err(|_| StoreError::WriterClosed)?
    });
    let remaining = webhook.reply_deadline.saturating_sub(started.elapsed());
    let unstored = |outcome, decision| CommitOutcome {
        outcome,
        decision,
        seq: None,
        replayed: false,
    };
    match tokio::time::timeout(remaining, task).await {
        Ok(Ok(Ok(Committed::Appended { seq, .. }))) => CommitOutcome {
            outcome: WebhookOutcome::Accepted,
            decision,
            seq: Some(seq),
            replayed: false,
        },
        // A replayed push gets the answer the original got.
        Ok(Ok(Ok(Committed::Duplicate {
            seq,
            decision: stored,
        }))) => CommitOutcome {
            outcome: WebhookOutcome::Duplicate,
            decision: stored.or(decision),
            seq: Some(seq),
            replayed: false,
        },
        // Durable in the spool; in the log once the database is back.
        Ok(Ok(Ok(Committed::Spooled))) => unstored(WebhookOutcome::Spooled, decision),
        Ok(Ok(Ok(Committed::Replayed))) => CommitOutcome {
            outcome: WebhookOutcome::Duplicate,
            decision,
            seq: None,
            replayed: true,
        },
        // Counted and logged (rate-limited) by the writer's handle.
        Ok(Ok(Err(StoreError::QueueFull))) => unstored(WebhookOutcome::QueueFull, decision),
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "event not stored; replying with the decision anyway");
            unstored(WebhookOutcome::StoreError, decision)
        }
        Ok(Err(join)) => {
            tracing::error!(error = %join, "event submission failed");
            unstored(WebhookOutcome::StoreError, decision)
        }
        Err(_) => {
            metrics::counter!(names::REPLY_DEADLINE_MISSED).increment(1);
            // While storage fails every reply misses it; the writer logs that once.
            if !webhook.writer.storage_health().is_healthy() {
                return unstored(WebhookOutcome::StorageFailing, decision);
            }
            tracing::warn!(
                deadline_ms = webhook.reply_deadline.as_millis() as u64,
                "commit slower than the reply deadline; replying now, the event still commits"
            );
            unstored(WebhookOutcome::DeadlineMissed, decision)
        }
    }
}

/// Reads the whole body. The router's `RequestBodyLimitLayer` bounds it:
/// a body past the limit ends in a `LengthLimitError` somewhere in the
/// error's source chain.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, WebhookError> {
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if c.is::<LengthLimitError>() {
                    return Err(WebhookError::PayloadTooLarge(limit));
                }
                cause = c.source();
            }
            Err(WebhookError::BadRequest(format!(
                "could not read the body: {e}"
            )))
        }
    }
}

/// Base of the onAnswer/onHangup URLs: the configured public URL, else
/// `http(s)://{Host}` as the request came (scheme from `X-Forwarded-Proto`
/// only behind a trusted proxy).
/// With Basic auth on, the credentials go into the URL so follow-ups pass too.
fn base_url(
    webhook: &Webhook,
    headers: &HeaderMap,
    peer_trusted: bool,
    over_tls: bool,
    secrets: Secrets,
) -> String {
    let own_scheme = if over_tls { "https" } else { "http" };
    let base = match &webhook.public_url {
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
                .unwrap_or_else(|| webhook.listen_addr.to_string());
            let scheme = if peer_trusted {
                headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .filter(|p| *p == "https" || *p == "http")
                    .unwrap_or(own_scheme)
            } else {
                own_scheme
            };
            format!("{scheme}://{host}")
        }
    };
    match (&webhook.basic_auth, secrets) {
        (Some(basic), Secrets::Shown) => {
            with_credentials(&base, &basic.user, basic.password.expose())
        }
        (basic, Secrets::Redacted) => without_credentials(&base, basic.is_some()),
        (None, Secrets::Shown) => base,
    }
}

/// `base` with its credentials (from `--public-url`, or `always` for
/// Basic auth) shown as `<redacted>`.
fn without_credentials(base: &str, always: bool) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let host = match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => host,
        None if always => &rest[..authority_end],
        None => return base.to_string(),
    };
    format!(
        "{scheme}://{}@{host}{}",
        recent::REDACTED,
        &rest[authority_end..]
    )
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
    fn credentials_are_redacted_for_display() {
        assert_eq!(
            without_credentials("https://sip:pw@pbx.example.com/x", false),
            "https://<redacted>@pbx.example.com/x"
        );
        assert_eq!(
            without_credentials("https://pbx.example.com", true),
            "https://<redacted>@pbx.example.com"
        );
        assert_eq!(
            without_credentials("https://pbx.example.com/a@b", false),
            "https://pbx.example.com/a@b"
        );
    }

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
