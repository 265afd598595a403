//! The delivery loop every bridge runs.

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Verdict, backoff, cursor::Cursor, schema::event_kind_name, source::EventSource};
use crate::{
    config::{DeliveryPolicy, OnRefusal},
    proto,
    telemetry::names,
};

/// A receiver of events (Zammad's CTI API, a JSON webhook, ...).
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    fn name(&self) -> &'static str;

    /// Events the receiver has no use for are passed over (and the cursor
    /// moves past them).
    fn wants(&self, _event: &proto::CallEvent) -> bool {
        true
    }

    async fn deliver(&self, event: &proto::CallEvent) -> Verdict;
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(
        "{bridge}: event #{seq} ({kind} of call {call_id}) refused {attempts} times, last: {reason}; stopping so nothing is lost (fix the receiver and restart, or use --on-refusal skip)"
    )]
    Refused {
        bridge: &'static str,
        seq: u64,
        kind: String,
        call_id: String,
        attempts: u32,
        reason: String,
    },
    #[error(transparent)]
    Cursor(#[from] anyhow::Error),
}

/// Delivers every event after the cursor, in sequence order, until
/// `shutdown` or a refusal under [`OnRefusal::Stop`].
pub async fn run(
    source: &dyn EventSource,
    sink: &dyn Sink,
    mut cursor: Cursor,
    start_from_now: bool,
    policy: &DeliveryPolicy,
    shutdown: CancellationToken,
) -> Result<(), DeliveryError> {
    let bridge = sink.name();
    let backoff = backoff(policy);
    let mut reconnects = 0u32;
    loop {
        let after = match cursor.after_seq() {
            Some(seq) => Some(seq),
            None if start_from_now => None,
            None => Some(0),
        };
        let subscribed = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            s = source.subscribe(after) => s,
        };
        let mut stream = match subscribed {
            Ok(stream) => {
                tracing::info!(bridge, after_seq = ?after, "subscribed");
                stream
            }
            Err(e) => {
                reconnects += 1;
                let delay = backoff.delay(reconnects);
                tracing::warn!(bridge, error = %format!("{e:#}"), ?delay, "cannot subscribe; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                item = stream.next() => item,
            };
            let event = match item {
                Some(Ok(event)) => event,
                Some(Err(status)) => {
                    tracing::warn!(bridge, status = %status.message(), "stream interrupted; resuming");
                    break;
                }
                None => break,
            };
            reconnects = 0;
            // At-least-once from the server: skip what was delivered already.
            if cursor.after_seq().is_some_and(|done| event.seq <= done) {
                continue;
            }
            if sink.wants(&event) && !deliver(sink, &event, policy, &shutdown).await? {
                return Ok(());
            }
            cursor.store(event.seq)?;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff.delay(1)) => {}
        }
    }
}

/// Delivers one event with retries. `Ok(false)` when shutdown interrupted it
/// (the cursor must not move).
async fn deliver(
    sink: &dyn Sink,
    event: &proto::CallEvent,
    policy: &DeliveryPolicy,
    shutdown: &CancellationToken,
) -> Result<bool, DeliveryError> {
    let bridge = sink.name();
    let kind = event_kind_name(event.kind);
    // `tries` drives the backoff; `attempts` counts answers that were refusals or failures.
    let (mut tries, mut attempts) = (0u32, 0u32);
    loop {
        let verdict = tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            v = sink.deliver(event) => v,
        };
        tries += 1;
        let reason = match verdict {
            Verdict::Delivered => {
                metrics::counter!(names::BRIDGE_DELIVERED, "bridge" => bridge).increment(1);
                tracing::debug!(bridge, seq = event.seq, kind, call_id = %event.call_id, "delivered");
                return Ok(true);
            }
            Verdict::Unreachable(reason) => {
                // The receiver is down: wait for it, however long it takes.
                tracing::warn!(bridge, seq = event.seq, %reason, "receiver unreachable; retrying");
                reason
            }
            Verdict::Failed(reason) | Verdict::Refused(reason) => {
                attempts += 1;
                if attempts >= policy.max_attempts {
                    metrics::counter!(names::BRIDGE_REFUSED, "bridge" => bridge).increment(1);
                    tracing::error!(
                        bridge,
                        seq = event.seq,
                        kind,
                        call_id = %event.call_id,
                        from = %event.from,
                        to = %event.to,
                        attempts,
                        %reason,
                        policy = ?policy.on_refusal,
                        "receiver refused the event"
                    );
                    return match policy.on_refusal {
                        OnRefusal::Skip => Ok(true),
                        OnRefusal::Stop => Err(DeliveryError::Refused {
                            bridge,
                            seq: event.seq,
                            kind: kind.to_string(),
                            call_id: event.call_id.clone(),
                            attempts,
                            reason,
                        }),
                    };
                }
                tracing::warn!(bridge, seq = event.seq, attempts, %reason, "delivery failed; retrying");
                reason
            }
        };
        metrics::counter!(names::BRIDGE_RETRIES, "bridge" => bridge).increment(1);
        let delay = backoff(policy).delay(tries);
        tracing::trace!(bridge, %reason, ?delay, "backing off");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
