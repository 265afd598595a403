//! Every metric family with its type, unit, labels, help text and buckets:
//! what `/metrics` prints as `# HELP`, and what the README's metric table
//! lists. A name in [`super::names`] without an entry here fails a test.

use metrics::Unit;

use super::names::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
    /// Each label with every value it takes where that set is closed; such
    /// counters and gauges exist at 0 from the start. An empty list is an
    /// open set (the bridge's name), registered where the value is known.
    pub labels: &'static [(&'static str, &'static [&'static str])],
    /// Histogram bucket bounds, in the family's unit.
    pub buckets: &'static [f64],
}

/// Latencies in seconds: 100 µs to 10 s (the reply deadline is 1 s by
/// default, sipgate waits about 10 s).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Commands per writer transaction: 1 up to past the default cap of 512.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];
/// Events behind the head: 0 (live) up to a long catch-up.
pub const LAG_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, 10000.0, 100000.0,
];

/// How a webhook request ended, as counted in
/// `sidecar_webhook_requests_total{outcome}` and shown in recent requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookOutcome {
    /// Answered and committed.
    Accepted,
    /// A replayed push, answered from the log (a replayed dtmf push: `invalid`).
    Duplicate,
    /// Answered, not stored: the writer's queue was full.
    QueueFull,
    StoreError,
    StorageFailing,
    /// Answered before the commit, which still happens.
    DeadlineMissed,
    /// Answered after its event was written to the spool (the database
    /// failing); it is folded into the log when the database is back.
    Spooled,
    ForbiddenSource,
    Unauthorized,
    BasicAuthRequired,
    NotFound,
    TooLarge,
    BadRequest,
    /// Refused by the listener's load shedding.
    Overloaded,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 14] = [
        WebhookOutcome::Accepted,
        WebhookOutcome::Duplicate,
        WebhookOutcome::QueueFull,
        WebhookOutcome::StoreError,
        WebhookOutcome::StorageFailing,
        WebhookOutcome::DeadlineMissed,
        WebhookOutcome::Spooled,
        WebhookOutcome::ForbiddenSource,
        WebhookOutcome::Unauthorized,
        WebhookOutcome::BasicAuthRequired,
        WebhookOutcome::NotFound,
        WebhookOutcome::TooLarge,
        WebhookOutcome::BadRequest,
        WebhookOutcome::Overloaded,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::QueueFull => "queue_full",
            WebhookOutcome::StoreError => "store_error",
            WebhookOutcome::StorageFailing => "storage_failing",
            WebhookOutcome::DeadlineMissed => "deadline_missed",
            WebhookOutcome::Spooled => "spooled",
            WebhookOutcome::ForbiddenSource => "forbidden_source",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::BasicAuthRequired => "basic_auth_required",
            WebhookOutcome::NotFound => "not_found",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::BadRequest => "bad_request",
            WebhookOutcome::Overloaded => "overloaded",
        }
    }

    /// Counts one request with this outcome.
    pub fn count(self) {
        metrics::counter!(crate::telemetry::names::WEBHOOK_REQUESTS, "outcome" => self.as_str())
            .increment(1);
    }
}

/// Every outcome a webhook request is counted under, as labels.
pub const WEBHOOK_OUTCOMES: &[&str] = &{
    let mut out = [""; WebhookOutcome::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = WebhookOutcome::ALL[i].as_str();
        i += 1;
    }
    out
};
const LISTENERS: &[&str] = &["webhook", "grpc"];
/// Why Zammad refused the missed-call bridge (`bridge::tickets::api`).
const TICKET_REFUSAL_CAUSES: &[&str] = &[
    "unauthorized",
    "group_not_found",
    "unprocessable",
    "not_found",
    "refused",
    "bad_answer",
    "bad_url",
];
const BRIDGE: (&str, &[&str]) = ("bridge", &[]);

const fn counter(
    name: &'static str,
    help: &'static str,
    labels: &'static [(&'static str, &'static [&'static str])],
) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        unit: None,
        help,
        labels,
        buckets: &[],
    }
}

const fn gauge(
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
    labels: &'static [(&'static str, &'static [&'static str])],
) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        unit,
        help,
        labels,
        buckets: &[],
    }
}

const fn histogram(
    name: &'static str,
    unit: Unit,
    help: &'static str,
    buckets: &'static [f64],
) -> Family {
    Family {
        name,
        kind: Kind::Histogram,
        unit: Some(unit),
        help,
        labels: &[],
        buckets,
    }
}

pub const FAMILIES: &[Family] = &[
    counter(
        WEBHOOK_REQUESTS,
        "Webhook requests by how they ended (accepted, duplicate, or the refusal).",
        &[("outcome", WEBHOOK_OUTCOMES)],
    ),
    histogram(
        DECISION_LATENCY,
        Unit::Seconds,
        "Request start to reply, for answered webhooks.",
        SECONDS_BUCKETS,
    ),
    counter(
        SIGNATURE_FAILURES,
        "Pushes refused for a missing or wrong X-Sipgate-Signature.",
        &[],
    ),
    counter(
        REPLY_DEADLINE_MISSED,
        "Replies sent before their event committed (the event still commits).",
        &[],
    ),
    histogram(
        WRITER_BATCH_SIZE,
        Unit::Count,
        "Commands per writer transaction.",
        BATCH_BUCKETS,
    ),
    counter(
        EVENTS_APPENDED,
        "Events appended to the log, synthetic ones included.",
        &[],
    ),
    counter(
        EVENTS_DUPLICATE,
        "Replayed pushes answered from the log, not appended.",
        &[],
    ),
    counter(
        WRITER_ERRORS,
        "Writer transactions that failed (nothing of them stored).",
        &[],
    ),
    counter(
        WRITER_QUEUE_OVERFLOW,
        "Webhook events answered but not stored because the writer's queue was full.",
        &[],
    ),
    gauge(
        STORAGE_HEALTHY,
        None,
        "1 while the writer's transactions commit, 0 while they fail.",
        &[],
    ),
    gauge(
        SPOOL_EVENTS,
        None,
        "Events in the spool, waiting to be folded into the database.",
        &[],
    ),
    counter(
        SPOOL_APPENDED,
        "Events written to the spool because the database could not take them.",
        &[],
    ),
    counter(
        SPOOL_FOLDED,
        "Spooled events folded into the database.",
        &[],
    ),
    counter(
        SPOOL_FAILURES,
        "Spool appends that failed; their events stay in memory and are retried.",
        &[],
    ),
    counter(
        SPOOL_TORN,
        "Torn or corrupt spool tails set aside at start.",
        &[],
    ),
    gauge(
        UNSTORED_EVENTS,
        None,
        "Accepted events neither committed nor spooled, held in memory and retried.",
        &[],
    ),
    gauge(
        SUBSCRIBERS,
        None,
        "Live event-stream subscribers (gRPC and in-process bridges).",
        &[],
    ),
    counter(
        SUBSCRIBERS_REFUSED,
        "Subscriptions refused: at the subscriber limit, or after_seq beyond the newest event.",
        &[("reason", &["limit", "beyond_head"])],
    ),
    counter(
        SUBSCRIBER_CATCH_UP_PAGES,
        "Full catch-up pages subscribers read from the database.",
        &[],
    ),
    counter(
        SUBSCRIBER_LAGGED,
        "Subscribers that fell behind the live buffer and caught up from the database.",
        &[],
    ),
    histogram(
        SUBSCRIBER_LAG,
        Unit::Count,
        "Events a subscriber is behind the newest as it gets one.",
        LAG_BUCKETS,
    ),
    counter(BRIDGE_DELIVERED, "Events a bridge delivered.", &[BRIDGE]),
    counter(
        BRIDGE_REFUSED,
        "Events a receiver refused for good (skipped with --on-refusal skip).",
        &[BRIDGE],
    ),
    counter(
        BRIDGE_RETRIES,
        "Delivery attempts that failed and will be retried.",
        &[BRIDGE],
    ),
    gauge(
        BRIDGE_STATE,
        None,
        "1 for the state a bridge is in (starting, delivering, retrying, stopped), 0 for the others.",
        &[BRIDGE, ("state", &[])],
    ),
    gauge(
        BRIDGE_LAG,
        None,
        "Events between the last one a bridge delivered and the newest.",
        &[BRIDGE],
    ),
    counter(
        TICKETS_CREATED,
        "Callback tickets the missed-call bridge created in Zammad.",
        &[],
    ),
    counter(
        TICKET_NOTES,
        "Notes the missed-call bridge added to callback tickets (missed again, reached).",
        &[],
    ),
    counter(
        TICKETS_CLOSED,
        "Callback tickets closed because the caller was reached (--close-when-reached).",
        &[],
    ),
    counter(
        TICKET_REFUSALS,
        "Zammad's refusals of the missed-call bridge, by cause.",
        &[("cause", TICKET_REFUSAL_CAUSES)],
    ),
    gauge(
        CONNECTIONS_OPEN,
        None,
        "Connections open now, per listener.",
        &[("listener", LISTENERS)],
    ),
    counter(
        CONNECTIONS_REJECTED,
        "Connections closed at once because the listener's connection cap was reached.",
        &[("listener", LISTENERS)],
    ),
    counter(
        ACCEPT_ERRORS,
        "Failed accepts, e.g. out of file descriptors.",
        &[("listener", LISTENERS)],
    ),
    counter(
        TLS_HANDSHAKE_FAILURES,
        "TLS handshakes that failed or timed out.",
        &[("listener", LISTENERS)],
    ),
    gauge(
        BUILD_INFO,
        None,
        "Always 1; the labels name the running version, operating system and architecture.",
        &[("version", &[]), ("os", &[]), ("arch", &[])],
    ),
    gauge(
        PROCESS_RESIDENT_MEMORY,
        Some(Unit::Bytes),
        "Resident memory size in bytes.",
        &[],
    ),
    gauge(
        PROCESS_VIRTUAL_MEMORY,
        Some(Unit::Bytes),
        "Virtual memory size in bytes.",
        &[],
    ),
    Family {
        unit: Some(Unit::Seconds),
        ..counter(
            PROCESS_CPU_SECONDS,
            "Total user and system CPU time spent, in seconds.",
            &[],
        )
    },
    gauge(PROCESS_OPEN_FDS, None, "Open file descriptors.", &[]),
    gauge(
        PROCESS_MAX_FDS,
        None,
        "Most file descriptors the process may open (soft limit).",
        &[],
    ),
    gauge(
        PROCESS_START_TIME,
        Some(Unit::Seconds),
        "Start time of the process since the Unix epoch, in seconds.",
        &[],
    ),
    gauge(PROCESS_THREADS, None, "Operating-system threads.", &[]),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn family(name: &str) -> Option<&'static Family> {
        FAMILIES.iter().find(|f| f.name == name)
    }

    /// Every `pub const` of `names`, read from this module's own source.
    fn declared_names() -> Vec<&'static str> {
        let source = include_str!("../telemetry.rs");
        let names = source
            .split("pub mod names {")
            .nth(1)
            .and_then(|rest| rest.split("\n}\n").next())
            .expect("telemetry.rs declares `pub mod names`");
        names
            .lines()
            .filter_map(|line| line.trim().strip_prefix("pub const "))
            .filter_map(|decl| decl.split('"').nth(1))
            .collect()
    }

    #[test]
    fn every_declared_metric_has_a_family_and_every_family_a_name() {
        let declared = declared_names();
        assert!(declared.len() >= 30, "{declared:?}");
        for name in &declared {
            assert!(family(name).is_some(), "{name} has no entry in FAMILIES");
        }
        for f in FAMILIES {
            assert!(declared.contains(&f.name), "{} is not in names", f.name);
            assert!(!f.help.is_empty());
            assert_eq!(
                f.kind == Kind::Histogram,
                !f.buckets.is_empty(),
                "{}: histograms, and only they, have buckets",
                f.name
            );
            assert!(f.buckets.windows(2).all(|w| w[0] < w[1]), "{}", f.name);
        }
    }

    #[test]
    fn every_metric_is_documented_in_the_readme() {
        let readme = include_str!("../../README.md");
        for f in FAMILIES {
            assert!(
                readme.contains(&format!("`{}`", f.name)),
                "README.md does not document {}",
                f.name
            );
        }
    }

    #[test]
    fn counts_are_not_bucketed_like_seconds() {
        for f in FAMILIES.iter().filter(|f| f.kind == Kind::Histogram) {
            let smallest = f.buckets[0];
            match f.unit {
                Some(Unit::Seconds) => assert!(smallest < 0.001, "{}", f.name),
                _ => assert!(smallest >= 0.0 && smallest.fract() == 0.0, "{}", f.name),
            }
        }
    }
}
