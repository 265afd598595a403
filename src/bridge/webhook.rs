//! Forwards every event as JSON to any HTTP endpoint (a CRM, n8n, ...).
//!
//! The body is [`super::schema::Event`] (`"schema": "sipgate-sidecar.event.v1"`),
//! the object `sipgate-sidecar watch --json` prints plus that key. With a secret, the header
//! `X-Sidecar-Signature: sha256=<hex HMAC-SHA256 of the body>` lets the
//! receiver check it came from the sidecar; `X-Sidecar-Seq` carries the
//! sequence number, for deduplication (delivery is at least once).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use super::schema::{SCHEMA, body};
use super::{Answer, Verdict, delivery::Sink, http_client, verdict_for_error};
use crate::{config::DeliveryPolicy, proto};

pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    secret: Option<Vec<u8>>,
    /// Parts of the URL that may be credentials (password, query), kept out of logs.
    url_secrets: Vec<String>,
    described: String,
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
            secret: secret
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec()),
        })
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
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
        let body = body(event);
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-sidecar-seq", event.seq.to_string());
        if let Some(secret) = &self.secret {
            request = request.header("x-sidecar-signature", signature(secret, &body));
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
