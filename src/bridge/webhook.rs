//! Forwards every event as JSON to any HTTP endpoint (a CRM, n8n, ...).
//!
//! The body is [`super::schema::Event`] (`"schema": "sipgate-sidecar.event.v1"`),
//! the object `sipgate-sidecar watch --json` prints plus that key. With a secret, the header
//! `X-Sidecar-Signature: sha256=<hex HMAC-SHA256 of the body>` lets the
//! receiver check it came from the sidecar; `X-Sidecar-Seq` carries the
//! sequence number, for deduplication (delivery is at least once).
//!
//! Two conventions receivers often expect, each opt-in:
//! - **CloudEvents 1.0, structured mode** (`--format cloudevents`): the body
//!   is an envelope (`application/cloudevents+json`) with `id` (the seq),
//!   `source`, `type` (`io.sipgate.call.newcall`, `.answer`, `.hangup`,
//!   `.dtmf`), `subject` (the call id), `time` (when the push arrived) and
//!   the event object as `data`.
//! - **Standard Webhooks signing** (`--standard-secret whsec_...`):
//!   `webhook-id` (the seq, the same on every retry), `webhook-timestamp`
//!   (Unix seconds of this attempt) and `webhook-signature: v1,<base64
//!   HMAC-SHA256 of "id.timestamp.body">`, one per key, space-separated.
//!
//! `docs/forwarder.asyncapi.yaml` describes the channel for receivers.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use super::schema::{SCHEMA, body};
use super::{Answer, Verdict, delivery::Sink, http_client, schema, verdict_for_error};
use crate::{
    config::{DeliveryPolicy, ForwardFormat, SigningKey, WebhookConventions},
    proto,
};

/// `type` prefix of the CloudEvents the forwarder sends.
pub const CLOUDEVENTS_TYPE_PREFIX: &str = "io.sipgate.call.";

pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    secret: Option<Vec<u8>>,
    /// Parts of the URL that may be credentials (password, query), kept out of logs.
    url_secrets: Vec<String>,
    described: String,
    conventions: WebhookConventions,
}

impl WebhookSink {
    pub fn new(url: &str, secret: Option<&str>, policy: &DeliveryPolicy) -> anyhow::Result<Self> {
        // The text is not echoed: it may carry credentials.
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("the forwarder's --url is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("--url must be an http:// or https:// URL");
        }
        let mut url_secrets = Vec::new();
        let mut described = parsed.clone();
        if let Some(password) = parsed.password() {
            url_secrets.push(password.to_string());
            let _ = described.set_password(Some("<redacted>"));
        }
        if let Some(query) = parsed.query().filter(|q| !q.is_empty()) {
            url_secrets.push(query.to_string());
            described.set_query(Some("<redacted>"));
        }
        Ok(WebhookSink {
            client: http_client(policy)?,
            url: url.to_string(),
            url_secrets,
            described: described.to_string(),
            conventions: WebhookConventions::default(),
            secret: secret
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec()),
        })
    }

    /// CloudEvents framing and Standard Webhooks signing, as configured.
    pub fn with_conventions(mut self, conventions: WebhookConventions) -> Self {
        self.conventions = conventions;
        self
    }
}

/// The message id of `event`: its seq, the same on every attempt, so a
/// receiver deduplicates by it (CloudEvents `id`, Standard Webhooks
/// `webhook-id`).
pub fn message_id(event: &proto::CallEvent) -> String {
    event.seq.to_string()
}

/// The CloudEvents 1.0 structured-mode envelope of `event`, keys sorted.
pub fn cloudevent(event: &proto::CallEvent, source: &str) -> Vec<u8> {
    let data = schema::to_value(&schema::Event::from(event));
    let kind = schema::event_kind_name(event.kind).to_ascii_lowercase();
    let time = jiff::Timestamp::from_millisecond(event.received_at_ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let envelope = serde_json::json!({
        "specversion": "1.0",
        "id": message_id(event),
        "source": source,
        "type": format!("{CLOUDEVENTS_TYPE_PREFIX}{kind}"),
        "subject": event.call_id,
        "time": time.to_string(),
        "datacontenttype": "application/json",
        "dataschema": format!("urn:{SCHEMA}"),
        "data": data,
    });
    serde_json::to_vec(&envelope).expect("a JSON value always serialises")
}

/// `webhook-signature`'s value: `v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`
/// for every key, space-separated.
pub fn standard_signature(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| {
            let timestamp = timestamp.to_string();
            let mac = hmac_sha256(
                key.expose(),
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            );
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// HMAC-SHA256 with `key` over `parts`, one after the other.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, &[body])))
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn describe(&self) -> String {
        self.described.clone()
    }

    async fn deliver(&self, event: &proto::CallEvent) -> Verdict {
        let (body, content_type) = match self.conventions.format {
            ForwardFormat::Sidecar => (body(event), "application/json"),
            ForwardFormat::Cloudevents => (
                cloudevent(event, &self.conventions.source),
                "application/cloudevents+json; charset=utf-8",
            ),
        };
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", content_type)
            .header("x-sidecar-seq", event.seq.to_string());
        if let Some(secret) = &self.secret {
            request = request.header("x-sidecar-signature", signature(secret, &body));
        }
        if !self.conventions.standard_keys.is_empty() {
            let id = message_id(event);
            let timestamp = jiff::Timestamp::now().as_second();
            request = request
                .header(
                    "webhook-signature",
                    standard_signature(&self.conventions.standard_keys, &id, timestamp, &body),
                )
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string());
        }
        let verdict = match request.body(body).send().await {
            Ok(response) => Answer::read(response).await.verdict(),
            Err(e) => verdict_for_error(e),
        };
        verdict.scrubbed(&self.url_secrets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn standard_signature_matches_the_specifications_example() {
        // The Standard Webhooks specification's example, as its reference
        // library (Python `standardwebhooks`) signs it.
        let key = SigningKey::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signed = standard_signature(
            std::slice::from_ref(&key),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // Two keys (a rotation): two signatures, the old one still there.
        let new =
            SigningKey::from_whsec("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        let both = standard_signature(
            &[new, key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], signed);
        assert_ne!(parts[0], signed);
    }

    #[test]
    fn a_standard_secret_must_be_whsec_and_base64() {
        for (bad, says) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with whsec_"),
            ("whsec_not base64!", "not base64"),
            ("whsec_c2hvcnQ=", "24 to 64 bytes"),
        ] {
            let e = SigningKey::from_whsec(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains(bad), "the secret is not echoed: {e}");
        }
    }

    #[test]
    fn a_cloudevent_wraps_the_event_object() {
        let event = proto::CallEvent {
            seq: 42,
            kind: proto::EventKind::NewCall.into(),
            call_id: "c42".into(),
            direction: proto::Direction::In.into(),
            from: "492111234567".into(),
            to: "4930600000000".into(),
            received_at_ms: 1_764_600_000_123,
            ..Default::default()
        };
        let envelope: serde_json::Value =
            serde_json::from_slice(&cloudevent(&event, "/sipgate-sidecar")).unwrap();
        assert_eq!(envelope["specversion"], "1.0");
        assert_eq!(envelope["id"], "42");
        assert_eq!(envelope["source"], "/sipgate-sidecar");
        assert_eq!(envelope["type"], "io.sipgate.call.newcall");
        assert_eq!(envelope["subject"], "c42");
        assert_eq!(envelope["time"], "2025-12-01T14:40:00.123Z");
        assert_eq!(envelope["datacontenttype"], "application/json");
        let plain: serde_json::Value = serde_json::from_slice(&body(&event)).unwrap();
        assert_eq!(envelope["data"], plain);
    }

    #[test]
    fn credentials_in_the_url_stay_out_of_logs() {
        let sink = WebhookSink::new(
            "https://crm:pa55word@crm.example.com/hook?key=k3y",
            None,
            &DeliveryPolicy::default(),
        )
        .unwrap();
        let shown = sink.describe();
        assert!(
            !shown.contains("pa55word") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(shown.starts_with("https://crm:"), "{shown}");
        assert!(
            WebhookSink::new("not a url pa55word", None, &DeliveryPolicy::default())
                .err()
                .is_some_and(|e| !e.to_string().contains("pa55word"))
        );
    }

    #[test]
    fn body_carries_the_schema_and_the_fields_a_crm_needs() {
        let event = proto::CallEvent {
            seq: 9,
            kind: proto::EventKind::NewCall.into(),
            call_id: "c9".into(),
            direction: proto::Direction::In.into(),
            from: "492111234567".into(),
            to: "4930600000000".into(),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&body(&event)).unwrap();
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["seq"], 9);
        assert_eq!(json["event"], "newCall");
        assert_eq!(json["call_id"], "c9");
        assert_eq!(json["direction"], "in");
        assert_eq!(json["from"], "492111234567");
    }
}
