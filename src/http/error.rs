//! Refusals: each answers 4xx with an XML body saying why, like every
//! sipgate reply, and names an outcome for the request counter.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{recent::RecentRequest, sipgate::xml, telemetry::WebhookOutcome};

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
    pub(super) fn outcome(&self) -> WebhookOutcome {
        match self {
            WebhookError::Forbidden(_) => WebhookOutcome::ForbiddenSource,
            WebhookError::Unauthorized(_) => WebhookOutcome::Unauthorized,
            WebhookError::BasicAuthRequired => WebhookOutcome::BasicAuthRequired,
            WebhookError::NotFound(_) => WebhookOutcome::NotFound,
            WebhookError::PayloadTooLarge(_) => WebhookOutcome::TooLarge,
            WebhookError::BadRequest(_) => WebhookOutcome::BadRequest,
        }
    }
}

impl WebhookError {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            WebhookError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebhookError::Unauthorized(_) | WebhookError::BasicAuthRequired => {
                StatusCode::UNAUTHORIZED
            }
            WebhookError::NotFound(_) => StatusCode::NOT_FOUND,
            WebhookError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The sentence the XML error carries.
    pub(super) fn reason(&self) -> String {
        match self {
            WebhookError::Forbidden(r)
            | WebhookError::Unauthorized(r)
            | WebhookError::NotFound(r)
            | WebhookError::BadRequest(r) => r.clone(),
            WebhookError::BasicAuthRequired => "HTTP Basic credentials required".to_string(),
            WebhookError::PayloadTooLarge(limit) => format!("body larger than {limit} bytes"),
        }
    }

    /// The refusal, noting its outcome, reason and body in `recording`
    /// (the recent-requests entry) when there is one.
    pub(super) fn respond(self, recording: Option<&mut RecentRequest>) -> Response {
        let reason = self.reason();
        let body = xml::render_error(&reason);
        if let Some(entry) = recording {
            entry.outcome = Some(self.outcome());
            entry.set_reply(&body);
            entry.reason = reason;
        }
        let mut response = (self.status(), xml_headers(), body).into_response();
        if matches!(self, WebhookError::BasicAuthRequired) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sipgate-sidecar\""),
            );
        }
        response
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        self.respond(None)
    }
}

pub(super) fn xml_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=UTF-8"),
    )]
}

/// Refusals are logged with the peer, but at most [`refusal_log::PER_SECOND`]
/// lines a second: a flood of bad requests (no credentials needed) must not
/// flood the log. The suppressed count is reported with the next line.
pub(super) mod refusal_log {
    use std::{
        net::SocketAddr,
        sync::atomic::{AtomicU64, Ordering},
        time::{SystemTime, UNIX_EPOCH},
    };

    use super::WebhookError;

    pub const PER_SECOND: u64 = 10;

    static WINDOW: AtomicU64 = AtomicU64::new(0);
    static LOGGED: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

    pub fn warn(peer: Option<SocketAddr>, error: &WebhookError) {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if WINDOW.swap(second, Ordering::Relaxed) != second {
            LOGGED.store(0, Ordering::Relaxed);
        }
        if LOGGED.fetch_add(1, Ordering::Relaxed) >= PER_SECOND {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        tracing::warn!(%peer, reason = ?error, suppressed_before = suppressed, "webhook refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_a_known_outcome_with_its_status_and_reason() {
        let refusals = [
            WebhookError::Forbidden("source address 198.51.100.7 is not allowed".into()),
            WebhookError::Unauthorized("wrong webhook token".into()),
            WebhookError::BasicAuthRequired,
            WebhookError::NotFound("unknown path segment 'x'".into()),
            WebhookError::PayloadTooLarge(1024),
            WebhookError::BadRequest("missing field callId".into()),
        ];
        for refusal in refusals {
            let outcome = refusal.outcome();
            assert!(WebhookOutcome::ALL.contains(&outcome), "{outcome:?}");
            let (status, reason) = (refusal.status(), refusal.reason());
            let mut entry = RecentRequest::default();
            let response = refusal.respond(Some(&mut entry));
            assert_eq!(response.status(), status);
            assert!(status.is_client_error());
            assert_eq!(
                (entry.outcome, entry.reason.as_str()),
                (Some(outcome), reason.as_str())
            );
            assert_eq!(entry.reply, xml::render_error(&reason));
        }
    }
}
