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
use super::{Verdict, delivery::Sink, http_client, verdict_for_error, verdict_for_status};
use crate::{config::DeliveryPolicy, proto};

pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    secret: Option<Vec<u8>>,
}

impl WebhookSink {
    pub fn new(url: &str, secret: Option<&str>, policy: &DeliveryPolicy) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("--url '{url}' is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("--url must be an http:// or https:// URL");
        }
        Ok(WebhookSink {
            client: http_client(policy)?,
            url: url.to_string(),
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
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                verdict_for_status(status, &text)
            }
            Err(e) => verdict_for_error(&e),
        }
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
