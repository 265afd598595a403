//! Reading a receiver's answer: the verdict on an HTTP answer or a transport
//! error, `Retry-After`, retry jitter, and secrets kept out of the reasons.

use std::{
    hash::{BuildHasher, Hasher},
    time::{Duration, SystemTime},
};

use super::Verdict;

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

/// `Sun, 06 Nov 1994 08:49:37 GMT` (or another form HTTP allows).
fn parse_http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value).ok()
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
