//! Subscribers that ship with the sidecar: the Zammad CTI bridge and the JSON
//! webhook forwarder. Both run the same delivery loop ([`delivery::run`]):
//! subscribe from a durable cursor, deliver each event in sequence order,
//! retry what may get better for as long as it takes, and never skip an
//! event without saying so. They run as separate processes (over gRPC) or
//! inside `serve` (in-process), where [`status`] shows what they do.
//!
//! How an answer is read ([`Answer::verdict`]): 2xx is delivered; 5xx, 408,
//! 429 and transport errors (refused connection, timeout, TLS) are retried
//! without limit, with capped exponential backoff and jitter, honouring
//! `Retry-After`; redirects are not followed (the event and its signature
//! must not go to another origin): a 3xx, like any other 4xx, is a refusal.

pub mod cursor;
pub mod delivery;
pub mod schema;
pub mod source;
pub mod status;
pub mod webhook;
pub mod zammad;

use std::{
    hash::{BuildHasher, Hasher},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    client::Backoff,
    config::{BridgeConfig, BridgeTarget, DeliveryPolicy},
    fanout::Fanout,
    store::Store,
    tls,
};
use cursor::Cursor;
use delivery::Sink;
use source::LocalSource;
pub use status::{BridgeStatus, BridgeStatuses};
use webhook::WebhookSink;
use zammad::ZammadSink;

/// The longest a `Retry-After` is honoured; beyond it the bridge tries again anyway.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(600);

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth retrying for as long as it takes: the receiver is down,
    /// restarting or overloaded (connection error, timeout, 5xx, 408, 429).
    /// `retry_after` is the receiver's `Retry-After`, if it sent one.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The receiver refused the event (3xx, other 4xx): retried up to
    /// `max_attempts`, then handled per [`crate::config::OnRefusal`].
    Refused(String),
}

impl Verdict {
    /// The verdict with every occurrence of `secrets` redacted from its reason.
    pub fn scrubbed(self, secrets: &[String]) -> Verdict {
        match self {
            Verdict::Delivered => Verdict::Delivered,
            Verdict::Transient {
                reason,
                retry_after,
            } => Verdict::Transient {
                reason: scrub(&reason, secrets),
                retry_after,
            },
            Verdict::Refused(reason) => Verdict::Refused(scrub(&reason, secrets)),
        }
    }
}

/// The receiver `target` names, delivering under `policy`.
pub fn sink(target: &BridgeTarget, policy: &DeliveryPolicy) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match target {
        BridgeTarget::Zammad { cti_url } => Box::new(ZammadSink::new(cti_url.expose(), policy)?),
        BridgeTarget::Webhook { url, secret } => Box::new(WebhookSink::new(
            url,
            secret.as_ref().map(|s| s.expose()),
            policy,
        )?),
    })
}

/// Bridges configured to run inside the server, checked and ready to start.
pub struct InProcess {
    bridges: Vec<Prepared>,
    statuses: BridgeStatuses,
}

struct Prepared {
    sink: Box<dyn Sink>,
    cursor: Cursor,
    policy: DeliveryPolicy,
    status: Arc<BridgeStatus>,
}

/// Checks `bridges` (receiver URLs, cursor files) before anything starts.
pub fn prepare(bridges: &[BridgeConfig]) -> anyhow::Result<InProcess> {
    let mut prepared = Vec::new();
    for bridge in bridges {
        let sink = sink(&bridge.target, &bridge.delivery)?;
        let cursor = Cursor::load(&bridge.state)?;
        let status = BridgeStatus::new(sink.name(), cursor.after_seq());
        prepared.push(Prepared {
            sink,
            cursor,
            policy: bridge.delivery.clone(),
            status,
        });
    }
    let statuses = BridgeStatuses::new(prepared.iter().map(|p| p.status.clone()).collect());
    Ok(InProcess {
        bridges: prepared,
        statuses,
    })
}

impl InProcess {
    /// What the bridges are doing, for `/readyz`.
    pub fn statuses(&self) -> BridgeStatuses {
        self.statuses.clone()
    }

    /// Starts the bridges, reading from the server's fan-out, until `shutdown`.
    pub fn spawn(
        self,
        fanout: Fanout,
        store: Store,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        self.bridges
            .into_iter()
            .map(|bridge| {
                let source = LocalSource {
                    fanout: fanout.clone(),
                    store: store.clone(),
                    shutdown: shutdown.clone(),
                };
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let Prepared {
                        sink,
                        cursor,
                        policy,
                        status,
                    } = bridge;
                    tracing::info!(
                        bridge = sink.name(),
                        receiver = %sink.describe(),
                        state = %cursor.path().display(),
                        "bridge started in-process"
                    );
                    // A stopped bridge is logged and shown by its status.
                    let _ = delivery::run(
                        &source,
                        sink.as_ref(),
                        cursor,
                        false,
                        &policy,
                        &status,
                        shutdown,
                    )
                    .await;
                })
            })
            .collect()
    }
}

/// The retry delays `policy` asks for (before jitter).
pub fn backoff(policy: &DeliveryPolicy) -> Backoff {
    Backoff {
        first: policy.backoff,
        max: policy.max_backoff,
    }
}

/// `delay` less a random part of up to half of it, so bridges that failed
/// together do not retry in lockstep.
pub fn jitter(delay: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = delay / 2;
    let nanos = half.as_nanos().min(u64::MAX as u128) as u64;
    let off = if nanos == 0 { 0 } else { random % (nanos + 1) };
    delay - Duration::from_nanos(off)
}

/// The HTTP client a bridge posts with; it trusts `--ca-cert` (an internal
/// CA) besides the system's roots. Redirects are not followed: a
/// redirected POST turns into a bodiless GET (301/302) or carries the event
/// and its signature to another origin (307/308).
pub fn http_client(policy: &DeliveryPolicy) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(policy.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sipgate-sidecar/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &policy.ca_cert {
        tls::read_certs(path, "--ca-cert")?;
        let pem = tls::read_pem(path, "--ca-cert")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-cert {}", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

/// What a receiver answered, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub location: Option<String>,
    pub retry_after: Option<Duration>,
    pub body: String,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let location = header(reqwest::header::LOCATION);
        let retry_after = header(reqwest::header::RETRY_AFTER)
            .and_then(|v| parse_retry_after(&v, SystemTime::now()));
        let body = response.text().await.unwrap_or_default();
        Answer {
            status,
            location,
            retry_after,
            body,
        }
    }

    /// Classifies the answer the way both bridges read it.
    pub fn verdict(&self) -> Verdict {
        let status = self.status;
        let summary = || {
            let body: String = self.body.chars().take(300).collect();
            format!("HTTP {status}: {body}")
        };
        if status.is_success() {
            Verdict::Delivered
        } else if status.is_redirection() {
            let location = self.location.as_deref().unwrap_or("(no Location header)");
            let location: String = location.chars().take(300).collect();
            Verdict::Refused(format!(
                "HTTP {status}, redirect to {location} not followed: set the receiver's final URL"
            ))
        } else if status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            Verdict::Transient {
                reason: summary(),
                retry_after: self.retry_after,
            }
        } else {
            Verdict::Refused(summary())
        }
    }
}

/// `Retry-After` as seconds or an HTTP date (IMF-fixdate), relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let (_weekday, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 || year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A transport error: worth retrying (the receiver may come back). The text
/// keeps the cause (refused, timed out, the TLS error) and drops the URL,
/// which may carry a secret.
pub fn verdict_for_error(error: reqwest::Error) -> Verdict {
    Verdict::Transient {
        reason: error_text(error),
        retry_after: None,
    }
}

/// `error` without its URL, with every cause in its source chain.
pub fn error_text(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Replaces every occurrence of the `secrets` in `text` by `<redacted>`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |text, secret| {
            text.replace(secret.as_str(), "<redacted>")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Answer {
        Answer {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            location: None,
            retry_after: None,
            body: String::new(),
        }
    }

    #[test]
    fn policy_backoff_doubles_and_is_capped_and_jitter_stays_within_half() {
        let backoff = backoff(&DeliveryPolicy::default());
        assert_eq!(backoff.delay(1), Duration::from_millis(500));
        assert_eq!(backoff.delay(2), Duration::from_millis(1000));
        assert_eq!(backoff.delay(4), Duration::from_millis(4000));
        assert_eq!(backoff.delay(30), Duration::from_millis(30_000));
        let delays: Vec<Duration> = (0..50).map(|_| jitter(Duration::from_secs(4))).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(2) && *d <= Duration::from_secs(4))
        );
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "jitter varies: {delays:?}"
        );
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn answers_map_to_verdicts() {
        assert_eq!(answer(200).verdict(), Verdict::Delivered);
        assert_eq!(answer(204).verdict(), Verdict::Delivered);
        for transient in [500, 502, 503, 504, 408, 429] {
            assert!(
                matches!(answer(transient).verdict(), Verdict::Transient { .. }),
                "{transient}"
            );
        }
        let mut limited = answer(429);
        limited.retry_after = Some(Duration::from_secs(3));
        assert_eq!(
            limited.verdict(),
            Verdict::Transient {
                reason: "HTTP 429 Too Many Requests: ".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let mut refused = answer(401);
        refused.body = "{\"error\":\"Invalid token\"}".into();
        let Verdict::Refused(why) = refused.verdict() else {
            panic!("401 is a refusal");
        };
        assert!(
            why.contains("401") && why.contains("Invalid token"),
            "{why}"
        );
        for redirect in [301, 302, 307, 308] {
            let mut moved = answer(redirect);
            moved.location = Some("https://elsewhere.example/x".into());
            let Verdict::Refused(why) = moved.verdict() else {
                panic!("{redirect} is a refusal");
            };
            assert!(why.contains("https://elsewhere.example/x"), "{why}");
            assert!(why.contains(&redirect.to_string()), "{why}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_http_date("Wed, 25 Nov 2026 13:45:42 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_614_342))
        );
        for bad in [
            "",
            "soon",
            "-1",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn scrub_removes_every_occurrence() {
        assert_eq!(
            scrub("a/tok/b tok", &["tok".into(), String::new()]),
            "a/<redacted>/b <redacted>"
        );
    }
}
