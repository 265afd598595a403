//! Forwards events to Zammad's generic CTI API (`POST /api/v1/cti/{token}`),
//! so Zammad's caller log and agent pop-ups work while sipgate talks to the
//! sidecar. Parameters as Zammad's `Cti::Driver::Cti` reads them: `event`,
//! `from`, `to`, `direction`, `call_id`, `user`, `cause`, `answeringNumber`.

use super::{
    Answer, Verdict,
    delivery::Sink,
    http_client,
    schema::{direction_name, event_kind_name},
    verdict_for_error,
};
use crate::{config::DeliveryPolicy, proto};

pub struct ZammadSink {
    client: reqwest::Client,
    url: String,
    /// The token (last path segment), as written and decoded: never logged.
    token: Vec<String>,
    described: String,
}

impl ZammadSink {
    pub fn new(cti_url: &str, policy: &DeliveryPolicy) -> anyhow::Result<Self> {
        // The text is not echoed: its last segment is a secret.
        let url = reqwest::Url::parse(cti_url).map_err(|e| {
            anyhow::anyhow!(
                "--cti-url is not a URL like https://zammad.example.com/api/v1/cti/TOKEN: {e}"
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("--cti-url must be an http:// or https:// URL");
        }
        let (described, token) = redact_cti_url(&url);
        Ok(ZammadSink {
            client: http_client(policy)?,
            url: cti_url.to_string(),
            token,
            described,
        })
    }
}

/// The CTI URL with its token replaced by `<redacted>`, and the token's
/// spellings (as in the URL, percent-decoded, as given).
fn redact_cti_url(url: &reqwest::Url) -> (String, Vec<String>) {
    let mut shown = url.clone();
    let mut token = Vec::new();
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty());
    if let Some(last) = last {
        token.push(last.to_string());
        if let Ok(decoded) = percent_encoding::percent_decode_str(last).decode_utf8()
            && decoded != last
        {
            token.push(decoded.into_owned());
        }
        if let Ok(mut segments) = shown.path_segments_mut() {
            segments.pop().push("<redacted>");
        }
    }
    for secret in [url.password(), url.query()].into_iter().flatten() {
        token.push(secret.to_string());
    }
    if url.password().is_some() {
        let _ = shown.set_password(Some("<redacted>"));
    }
    if url.query().is_some() {
        shown.set_query(Some("<redacted>"));
    }
    // `<` and `>` are percent-encoded in a path; show them as written.
    let shown = shown.to_string().replace("%3Credacted%3E", "<redacted>");
    (shown, token)
}

/// The form Zammad's generic CTI endpoint takes for `event`, or `None` for
/// events Zammad has no use for (dtmf) or cannot take (no direction known).
pub fn zammad_form(event: &proto::CallEvent) -> Option<Vec<(&'static str, String)>> {
    let kind = proto::EventKind::try_from(event.kind).ok()?;
    if !matches!(
        kind,
        proto::EventKind::NewCall | proto::EventKind::Answer | proto::EventKind::Hangup
    ) {
        return None;
    }
    let call = event.call.clone().unwrap_or_default();
    let direction = match direction_name(event.direction) {
        "" => direction_name(call.direction),
        d => d,
    };
    if direction.is_empty() {
        return None;
    }
    let pick = |own: &str, fallback: &str| {
        if own.is_empty() {
            fallback.to_string()
        } else {
            own.to_string()
        }
    };
    let mut from = pick(&event.from, &call.from);
    // Zammad's sipgate integration logs the rewritten caller ID as `from`.
    if let Some(decision) = &event.decision
        && decision.action() == proto::Action::SetCallerId
        && !decision.caller_id.is_empty()
    {
        from = decision.caller_id.clone();
    }
    let mut form = vec![
        ("event", event_kind_name(event.kind).to_string()),
        ("direction", direction.to_string()),
        ("from", from),
        ("to", pick(&event.to, &call.to)),
        ("call_id", event.call_id.clone()),
    ];
    match kind {
        proto::EventKind::NewCall if !event.users.is_empty() => {
            form.push(("user", event.users.join(", ")))
        }
        // A scalar: Zammad's agent lookup breaks on an array here.
        proto::EventKind::Answer if !event.users.is_empty() => {
            form.push(("user", event.users[0].clone()))
        }
        proto::EventKind::Hangup => form.push(("cause", event.cause.clone())),
        _ => {}
    }
    if !event.answering_number.is_empty() {
        form.push(("answeringNumber", event.answering_number.clone()));
    }
    Some(form)
}

/// Compares Zammad's JSON answer to a newCall with the sidecar's decision.
/// `None` when they agree.
pub fn disagreement(event: &proto::CallEvent, zammad_reply: &str) -> Option<String> {
    let ours = event.decision.as_ref()?;
    let reply: serde_json::Value = serde_json::from_str(zammad_reply).ok()?;
    let theirs = match reply.get("action").and_then(|a| a.as_str()) {
        Some("reject") => "reject".to_string(),
        Some("dial") => format!(
            "caller ID {}",
            reply
                .get("caller_id")
                .and_then(|c| c.as_str())
                .unwrap_or("?")
        ),
        _ => "no instruction".to_string(),
    };
    let ours_said = match ours.action() {
        proto::Action::Reject => "reject".to_string(),
        proto::Action::SetCallerId => format!("caller ID {}", ours.caller_id),
        _ => "no instruction".to_string(),
    };
    (theirs != ours_said)
        .then(|| format!("Zammad would say {theirs}, the sidecar said {ours_said}"))
}

#[async_trait::async_trait]
impl Sink for ZammadSink {
    fn name(&self) -> &'static str {
        "zammad"
    }

    fn describe(&self) -> String {
        self.described.clone()
    }

    fn wants(&self, event: &proto::CallEvent) -> bool {
        zammad_form(event).is_some()
    }

    async fn deliver(&self, event: &proto::CallEvent) -> Verdict {
        let Some(form) = zammad_form(event) else {
            return Verdict::Delivered;
        };
        let answer = match self.client.post(&self.url).form(&form).send().await {
            Ok(response) => Answer::read(response).await,
            Err(e) => return verdict_for_error(e).scrubbed(&self.token),
        };
        let (status, body) = (answer.status, &answer.body);
        // Zammad answers a newCall it has seen with 500 "Object already exists!".
        if status.is_server_error() && body.contains("already exists") {
            tracing::info!(seq = event.seq, call_id = %event.call_id, "Zammad had this call already");
            return Verdict::Delivered;
        }
        if status.is_success()
            && event.kind == i32::from(proto::EventKind::NewCall)
            && let Some(difference) = disagreement(event, body)
        {
            tracing::warn!(seq = event.seq, call_id = %event.call_id, %difference, "Zammad's CTI settings disagree with the sidecar's");
        }
        answer.verdict().scrubbed(&self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: proto::EventKind) -> proto::CallEvent {
        proto::CallEvent {
            seq: 7,
            kind: kind.into(),
            call_id: "c1".into(),
            direction: proto::Direction::In.into(),
            from: "492111234567".into(),
            to: "4930600000000".into(),
            ..Default::default()
        }
    }

    fn get<'a>(form: &'a [(&str, String)], key: &str) -> Option<&'a str> {
        form.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_token_is_redacted_in_the_description_and_every_reason() {
        let policy = DeliveryPolicy::default();
        let sink =
            ZammadSink::new("https://zammad.example.com/api/v1/cti/s3cr3tT0k", &policy).unwrap();
        assert_eq!(
            sink.describe(),
            "https://zammad.example.com/api/v1/cti/<redacted>"
        );
        let moved = Answer {
            status: reqwest::StatusCode::MOVED_PERMANENTLY,
            location: Some("https://zammad.example.com/api/v1/cti/s3cr3tT0k".into()),
            retry_after: None,
            body: String::new(),
        };
        let Verdict::Refused(why) = moved.verdict().scrubbed(&sink.token) else {
            panic!("a redirect is refused");
        };
        assert_eq!(
            why,
            "HTTP 301 Moved Permanently, redirect to https://zammad.example.com/api/v1/cti/<redacted> not followed: set the receiver's final URL"
        );
        let error = ZammadSink::new("zammad.example.com/api/v1/cti/s3cr3tT0k", &policy)
            .err()
            .unwrap()
            .to_string();
        assert!(!error.contains("s3cr3tT0k"), "{error}");
    }

    #[test]
    fn new_call_joins_users_like_zammad_and_answer_sends_one() {
        let mut e = event(proto::EventKind::NewCall);
        e.users = vec!["Alice".into(), "Bob".into()];
        let form = zammad_form(&e).unwrap();
        assert_eq!(get(&form, "event"), Some("newCall"));
        assert_eq!(get(&form, "user"), Some("Alice, Bob"));
        assert_eq!(get(&form, "call_id"), Some("c1"));
        assert_eq!(get(&form, "direction"), Some("in"));

        let mut a = event(proto::EventKind::Answer);
        a.users = vec!["voicemail".into()];
        a.answering_number = "4930600000001".into();
        let form = zammad_form(&a).unwrap();
        assert_eq!(get(&form, "user"), Some("voicemail"));
        assert_eq!(get(&form, "answeringNumber"), Some("4930600000001"));
    }

    #[test]
    fn hangup_takes_direction_and_numbers_from_the_call_when_missing() {
        let mut h = event(proto::EventKind::Hangup);
        h.direction = 0;
        h.from.clear();
        h.cause = "rejected".into();
        h.call = Some(proto::Call {
            direction: proto::Direction::Out.into(),
            from: "4930600000000".into(),
            ..Default::default()
        });
        let form = zammad_form(&h).unwrap();
        assert_eq!(get(&form, "direction"), Some("out"));
        assert_eq!(get(&form, "from"), Some("4930600000000"));
        assert_eq!(get(&form, "cause"), Some("rejected"));
    }

    #[test]
    fn dtmf_and_directionless_events_are_not_for_zammad() {
        assert!(zammad_form(&event(proto::EventKind::Dtmf)).is_none());
        let mut h = event(proto::EventKind::Hangup);
        h.direction = 0;
        assert!(zammad_form(&h).is_none());
    }

    #[test]
    fn rewritten_caller_id_is_logged_as_from_and_disagreements_are_found() {
        let mut e = event(proto::EventKind::NewCall);
        e.direction = proto::Direction::Out.into();
        e.decision = Some(proto::Decision {
            action: proto::Action::SetCallerId.into(),
            caller_id: "4930777000000".into(),
            ..Default::default()
        });
        let form = zammad_form(&e).unwrap();
        assert_eq!(get(&form, "from"), Some("4930777000000"));
        assert_eq!(
            disagreement(
                &e,
                r#"{"action":"dial","caller_id":"4930777000000","number":"x"}"#
            ),
            None
        );
        assert!(disagreement(&e, "{}").unwrap().contains("no instruction"));
    }
}
