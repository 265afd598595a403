//! Subscribers that ship with the sidecar: the Zammad CTI bridge, the JSON
//! webhook forwarder and the missed-call ticket bridge. All run the same delivery loop ([`delivery::run`]):
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

pub mod agents;
mod answer;
pub mod cursor;
pub mod delivery;
mod led;
pub mod schema;
pub mod source;
pub mod status;
pub mod tickets;
pub mod webhook;
pub mod zammad;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    client::Backoff,
    config::{BridgeConfig, BridgeTarget, DeliveryPolicy, NewBridgeStart},
    fanout::Fanout,
    store::Store,
    tls,
};
pub use answer::{Answer, error_text, jitter, parse_retry_after, scrub, verdict_for_error};
use cursor::Cursor;
use delivery::Sink;
use source::LocalSource;
pub use status::{BridgeStatus, BridgeStatuses};
use tickets::TicketsSink;
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
    /// The receiver refuses everything until an operator acts (a wrong API
    /// token): the bridge stops at once, whatever `--on-refusal` says.
    Fatal(String),
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
            Verdict::Fatal(reason) => Verdict::Fatal(scrub(&reason, secrets)),
        }
    }
}

/// The receiver `target` names, delivering under `policy`; `state` is the
/// bridge's cursor file (the ticket bridge keeps its ledger next to it).
pub fn sink(
    target: &BridgeTarget,
    state: &std::path::Path,
    policy: &DeliveryPolicy,
) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match target {
        BridgeTarget::Zammad {
            cti_url,
            blocked_calls,
        } => {
            Box::new(ZammadSink::new(cti_url.expose(), policy)?.with_blocked_calls(*blocked_calls))
        }
        BridgeTarget::Webhook {
            url,
            secret,
            conventions,
        } => Box::new(
            WebhookSink::new(url, secret.as_ref().map(|s| s.expose()), policy)?
                .with_conventions(conventions.clone()),
        ),
        BridgeTarget::Tickets(target) => Box::new(TicketsSink::new(target, state, policy)?),
    })
}

/// Bridges configured to run inside the server, checked and ready to start.
pub struct InProcess {
    bridges: Vec<Prepared>,
    statuses: BridgeStatuses,
}

struct Prepared {
    /// Without a cursor yet: start after the newest stored event.
    from_now: bool,
    sink: Box<dyn Sink>,
    cursor: Cursor,
    policy: DeliveryPolicy,
    status: Arc<BridgeStatus>,
}

/// Checks `bridges` (receiver URLs, cursor files) before anything starts.
pub fn prepare(bridges: &[BridgeConfig]) -> anyhow::Result<InProcess> {
    let mut prepared = Vec::new();
    for bridge in bridges {
        let sink = sink(&bridge.target, &bridge.state, &bridge.delivery)?;
        let cursor = Cursor::load(&bridge.state)?;
        let status = BridgeStatus::new(sink.name(), cursor.after_seq());
        prepared.push(Prepared {
            from_now: bridge.start == NewBridgeStart::Now || sink.starts_at_head_when_new(),
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
    /// Sets the cursor of each new bridge that starts at the newest event
    /// (`--zammad-start now`, the default, or [`Sink::starts_at_head_when_new`])
    /// to the stored head: called before
    /// the server takes webhooks, so every event after the start reaches it.
    pub async fn start_new_ones_at_head(&mut self, store: &Store) -> anyhow::Result<()> {
        if store.replicas().is_some() {
            return Ok(());
        }
        for bridge in &mut self.bridges {
            if bridge.cursor.after_seq().is_some() || !bridge.from_now {
                continue;
            }
            let head = store.head_seq().await?;
            bridge.cursor.store(head).await?;
            bridge.status.delivered(head);
            tracing::info!(
                bridge = bridge.sink.name(),
                head,
                state = %bridge.cursor.path().display(),
                "new bridge: starting after the newest stored event (older events are not delivered to it)"
            );
        }
        Ok(())
    }

    /// What the bridges are doing, for `/readyz`.
    pub fn statuses(&self) -> BridgeStatuses {
        self.statuses.clone()
    }

    /// Starts the bridges, reading from the server's fan-out, until `shutdown`.
    pub fn spawn(
        self,
        fanout: Fanout,
        store: Store,
        settings: Arc<crate::settings::SettingsManager>,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let agents: Arc<dyn agents::Agents> = Arc::new(agents::LocalAgents(settings));
        self.bridges
            .into_iter()
            .enumerate()
            .map(|(index, bridge)| {
                let source = LocalSource {
                    fanout: fanout.clone(),
                    store: store.clone(),
                    shutdown: shutdown.clone(),
                };
                let shutdown = shutdown.clone();
                let replicas = store.replicas();
                let agents = agents.clone();
                tokio::spawn(async move {
                    let Prepared {
                        from_now,
                        mut sink,
                        cursor,
                        policy,
                        status,
                    } = bridge;
                    sink.use_agents(agents);
                    if let Some(replicas) = replicas {
                        // Several replicas: the cursor is in the database.
                        tracing::info!(bridge = sink.name(), receiver = %sink.describe(), "bridge started in-process, led by one replica at a time");
                        led::run(
                            replicas,
                            index,
                            source,
                            sink.as_ref(),
                            &policy,
                            &status,
                            from_now,
                            shutdown,
                        )
                        .await;
                        return;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
