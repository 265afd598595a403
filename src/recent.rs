//! The last webhook requests as the sidecar saw and answered them, refused
//! ones included: what sipgate's debug log shows from the other side, and the
//! first thing to look at when a call was not blocked. A bounded ring in
//! memory (nothing is stored); a push copies a few short strings under a
//! mutex held for O(1) work.
//!
//! Never recorded: the secret path token (the path shows `<redacted>`), the
//! signature header, Basic credentials, the query string, the raw body.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
};

use crate::{
    decide::Decision,
    sipgate::event::{Direction, EventKind},
};

/// Longest reply body kept per request, in bytes; a longer one is cut at a
/// character boundary and marked truncated.
pub const MAX_REPLY_BYTES: usize = 2048;
/// Longest field (call ID, number, path, reason) kept, in bytes.
const MAX_FIELD_BYTES: usize = 256;
/// Shown in place of the path token.
pub const REDACTED: &str = "<redacted>";

/// One webhook request and its answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentRequest {
    pub received_at_ms: i64,
    /// The client: the TCP peer, or behind a trusted proxy the address
    /// `X-Forwarded-For` names and the proxy (`203.0.113.5 via 127.0.0.1:41234`).
    pub remote_addr: String,
    pub method: String,
    /// The request path, the secret token replaced by [`REDACTED`].
    pub path: String,
    /// What the form said, as far as it was read (nothing for a push
    /// refused before its body was read).
    pub kind: Option<EventKind>,
    pub call_id: String,
    pub direction: Option<Direction>,
    pub from: String,
    pub to: String,
    pub status: u16,
    /// As counted in `sidecar_webhook_requests_total{outcome}`; `None`
    /// until the request has one.
    pub outcome: Option<crate::telemetry::WebhookOutcome>,
    /// Why it was refused, the text of the XML error; empty when answered.
    pub reason: String,
    pub decision: Option<Decision>,
    /// The XML sent back, at most [`MAX_REPLY_BYTES`].
    pub reply: String,
    pub reply_truncated: bool,
    /// A replayed push, answered from the log.
    pub duplicate: bool,
    /// Where the event is in the log; `None` when it was not (yet) stored.
    pub seq: Option<u64>,
    /// Request start to reply, in microseconds.
    pub duration_us: u64,
}

impl RecentRequest {
    /// Keeps `reply`, cut to [`MAX_REPLY_BYTES`].
    pub fn set_reply(&mut self, reply: &str) {
        let (kept, cut) = truncate(reply, MAX_REPLY_BYTES);
        self.reply = kept.to_owned();
        self.reply_truncated = cut;
    }
}

/// Copies `value` cut to [`MAX_FIELD_BYTES`]: a field from the network is
/// kept short, so a flood of huge values cannot grow the ring.
pub fn field(value: &str) -> String {
    truncate(value, MAX_FIELD_BYTES).0.to_owned()
}

fn truncate(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// The path as shown: `/api/v1/sipgate/{token}/{direction}[/]` becomes
/// `/api/v1/sipgate/<redacted>/{direction}[/]`; any other shape keeps its
/// segments except the one that would be the token.
pub fn redact_path(path: &str) -> String {
    const PREFIX: &str = "/api/v1/sipgate/";
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return field(path);
    };
    match rest.split_once('/') {
        // `{direction}` or `{direction}/`: no token.
        Some((_, "")) | None => field(path),
        Some((_, after)) => field(&format!("{PREFIX}{REDACTED}/{after}")),
    }
}

/// Two rings of at most `capacity` requests each, the oldest dropped first:
/// one for answered pushes, one for refused requests (status 400 and up),
/// so a flood of refusals (404s, 401s from a scanner) never pushes
/// sipgate's own pushes out of view. Capacity 0 records nothing.
#[derive(Debug)]
pub struct RecentRequests {
    capacity: usize,
    rings: Mutex<Rings>,
}

#[derive(Debug, Default)]
struct Rings {
    /// Arrival order across both rings.
    next: u64,
    answered: VecDeque<(u64, RecentRequest)>,
    refused: VecDeque<(u64, RecentRequest)>,
}

impl RecentRequests {
    pub fn new(capacity: usize) -> Self {
        RecentRequests {
            capacity,
            rings: Mutex::new(Rings::default()),
        }
    }

    /// How many of each kind (answered, refused) are kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn push(&self, request: RecentRequest) {
        if self.capacity == 0 {
            return;
        }
        let dropped = {
            let mut rings = self.lock();
            let order = rings.next;
            rings.next += 1;
            let ring = if request.status >= 400 {
                &mut rings.refused
            } else {
                &mut rings.answered
            };
            let dropped = if ring.len() >= self.capacity {
                ring.pop_front()
            } else {
                None
            };
            ring.push_back((order, request));
            dropped
        };
        // Freed outside the lock.
        drop(dropped);
    }

    /// Newest first, both kinds together, at most `limit` (0: all there are).
    pub fn newest_first(&self, limit: usize) -> Vec<RecentRequest> {
        let rings = self.lock();
        let all = rings.answered.len() + rings.refused.len();
        let limit = if limit == 0 { all } else { limit.min(all) };
        let mut answered = rings.answered.iter().rev().peekable();
        let mut refused = rings.refused.iter().rev().peekable();
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let next = match (answered.peek(), refused.peek()) {
                (Some(a), Some(r)) if a.0 > r.0 => answered.next(),
                (Some(_), Some(_)) => refused.next(),
                (Some(_), None) => answered.next(),
                (None, _) => refused.next(),
            };
            match next {
                Some((_, request)) => out.push(request.clone()),
                None => break,
            }
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Rings> {
        // Every entry is pushed or popped whole: a panic elsewhere cannot
        // leave the rings half-changed.
        self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(status: u16) -> RecentRequest {
        RecentRequest {
            status,
            ..RecentRequest::default()
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_lists_them_newest_first() {
        let ring = RecentRequests::new(3);
        for status in [200, 401, 403, 400, 404] {
            ring.push(request(status));
        }
        let statuses: Vec<u16> = ring.newest_first(0).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [404, 400, 403, 200]);
        let newest: Vec<u16> = ring.newest_first(2).iter().map(|r| r.status).collect();
        assert_eq!(newest, [404, 400]);
    }

    #[test]
    fn a_flood_of_refusals_never_pushes_the_answered_pushes_out() {
        let ring = RecentRequests::new(3);
        ring.push(request(200));
        ring.push(request(201));
        for _ in 0..2000 {
            ring.push(request(404));
        }
        let statuses: Vec<u16> = ring.newest_first(0).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [404, 404, 404, 201, 200]);
    }

    #[test]
    fn capacity_zero_records_nothing() {
        let ring = RecentRequests::new(0);
        ring.push(request(200));
        assert!(ring.newest_first(0).is_empty());
    }

    #[test]
    fn the_token_never_shows_in_the_path() {
        assert_eq!(redact_path("/api/v1/sipgate/in"), "/api/v1/sipgate/in");
        assert_eq!(redact_path("/api/v1/sipgate/out/"), "/api/v1/sipgate/out/");
        assert_eq!(
            redact_path("/api/v1/sipgate/s3cr3t/in"),
            "/api/v1/sipgate/<redacted>/in"
        );
        assert_eq!(
            redact_path("/api/v1/sipgate/s3cr3t/out/"),
            "/api/v1/sipgate/<redacted>/out/"
        );
        assert_eq!(
            redact_path("/api/v1/sipgate/s3cr3t/x/y"),
            "/api/v1/sipgate/<redacted>/x/y"
        );
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let mut r = RecentRequest::default();
        let reply = "ä".repeat(MAX_REPLY_BYTES);
        r.set_reply(&reply);
        assert!(r.reply_truncated);
        assert!(r.reply.len() <= MAX_REPLY_BYTES && r.reply.len() >= MAX_REPLY_BYTES - 1);
        r.set_reply("<Response/>");
        assert_eq!(
            (r.reply.as_str(), r.reply_truncated),
            ("<Response/>", false)
        );
        assert_eq!(field(&"1".repeat(1000)).len(), MAX_FIELD_BYTES);
    }
}
