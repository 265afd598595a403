//! The delivery loop every bridge runs.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    RETRY_AFTER_CAP, Verdict, backoff, cursor::Cursor, jitter, schema::event_kind_name,
    source::EventSource, status::BridgeStatus,
};
use crate::{
    config::{DeliveryPolicy, OnRefusal},
    proto,
    telemetry::names,
};

/// How often, at most, the newest sequence number is asked for (for the lag).
const HEAD_REFRESH: Duration = Duration::from_secs(5);

/// A receiver of events (Zammad's CTI API, a JSON webhook, ...).
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    fn name(&self) -> &'static str;

    /// The receiver for logs: its URL with any secret in it redacted.
    fn describe(&self) -> String;

    /// Events the receiver has no use for are passed over (and the cursor
    /// moves past them).
    fn wants(&self, _event: &proto::CallEvent) -> bool {
        true
    }

    /// Whether the bridge, run inside `serve` for the first time (no
    /// cursor yet), starts at the newest stored event instead of the whole
    /// log: what it makes of an event is only worth it for new ones.
    fn starts_at_head_when_new(&self) -> bool {
        false
    }

    /// Gives a sink that maps sipgate's users to its receiver's agents
    /// where to read the map (Zammad's `user_remote_map`); others ignore it.
    fn use_agents(&mut self, _agents: std::sync::Arc<dyn super::agents::Agents>) {}

    /// Checked once before the first event (e.g. the API token); a
    /// transient failure is waited out, a refusal stops the bridge.
    async fn preflight(&self) -> Verdict {
        Verdict::Delivered
    }

    /// One attempt. Reasons in the verdict never carry a secret.
    async fn deliver(&self, event: &proto::CallEvent) -> Verdict;
}

/// What to do about a cursor that is ahead of the log.
const CURSOR_ADVICE: &str = "the database was restored or replaced. Stopping so no event is skipped: \
     restore the cursor file from the same moment as the database, or reset it knowingly \
     (delete it to deliver the whole log again, or write {\"after_seq\":N} with the newest seq N \
     to deliver only new events), then restart the bridge";

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
    #[error(
        "{bridge}: cursor file {} is at seq {cursor} but the newest event is #{head}: {CURSOR_ADVICE}",
        path.display()
    )]
    CursorAhead {
        bridge: &'static str,
        path: PathBuf,
        cursor: u64,
        head: u64,
    },
    #[error(
        "{bridge}: cursor file {} is at seq {cursor} and the server refused to resume there ({message}): {CURSOR_ADVICE}",
        path.display()
    )]
    ResumeRefused {
        bridge: &'static str,
        path: PathBuf,
        cursor: u64,
        message: String,
    },
    #[error("{bridge}: {reason}; stopping (fix it and restart the bridge)")]
    Fatal {
        bridge: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Cursor(#[from] anyhow::Error),
}

/// Delivers every event after the cursor, in sequence order, until
/// `shutdown`, a refusal under [`OnRefusal::Stop`], or a cursor ahead of the
/// log. Keeps `status` current; a stop is recorded there too.
pub async fn run(
    source: &dyn EventSource,
    sink: &dyn Sink,
    cursor: Cursor,
    start_from_now: bool,
    policy: &DeliveryPolicy,
    status: &BridgeStatus,
    shutdown: CancellationToken,
) -> Result<(), DeliveryError> {
    let mut bridge = Bridge {
        source,
        sink,
        policy,
        status,
        shutdown,
        head_asked: None,
    };
    let result = bridge.run(cursor, start_from_now).await;
    if let Err(e) = &result {
        status.stopped(&e.to_string());
    }
    result
}

struct Bridge<'a> {
    source: &'a dyn EventSource,
    sink: &'a dyn Sink,
    policy: &'a DeliveryPolicy,
    status: &'a BridgeStatus,
    shutdown: CancellationToken,
    head_asked: Option<Instant>,
}

impl Bridge<'_> {
    async fn run(&mut self, mut cursor: Cursor, start_from_now: bool) -> Result<(), DeliveryError> {
        let bridge = self.sink.name();
        let backoff = backoff(self.policy);
        let shutdown = self.shutdown.clone();
        let mut reconnects = 0u32;
        if !self.preflight().await? {
            return Ok(());
        }
        loop {
            let after = match cursor.after_seq() {
                Some(seq) => Some(seq),
                None if start_from_now => None,
                None => Some(0),
            };
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                s = self.subscribe(&cursor, after) => s?,
            };
            let mut stream = match subscribed {
                Ok(stream) => {
                    tracing::info!(bridge, after_seq = ?after, "subscribed");
                    self.status.delivering();
                    stream
                }
                Err(e) => {
                    reconnects += 1;
                    let delay = jitter(backoff.delay(reconnects));
                    let error = format!("cannot read events: {e:#}");
                    self.status.retrying(&error);
                    tracing::debug!(bridge, error, ?delay, "cannot subscribe; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            loop {
                let item = tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    item = stream.next() => item,
                };
                let event = match item {
                    Some(Ok(event)) => event,
                    Some(Err(status)) if status.code() == tonic::Code::OutOfRange => {
                        return Err(DeliveryError::ResumeRefused {
                            bridge,
                            path: cursor.path().to_path_buf(),
                            cursor: cursor.after_seq().unwrap_or(0),
                            message: status.message().to_string(),
                        });
                    }
                    Some(Err(status)) => {
                        tracing::warn!(bridge, status = %status.message(), "stream interrupted; resuming");
                        break;
                    }
                    None => break,
                };
                reconnects = 0;
                self.status.seen(event.seq);
                // At-least-once from the server: skip what was delivered already.
                if cursor.after_seq().is_some_and(|done| event.seq <= done) {
                    continue;
                }
                if self.sink.wants(&event) && !self.deliver(&event).await? {
                    return Ok(());
                }
                cursor.store(event.seq).await?;
                self.status.delivered(event.seq);
                self.refresh_head().await;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(jitter(backoff.delay(1))) => {}
            }
        }
    }

    /// Runs the sink's check until it passes (transient failures are
    /// retried with backoff); `Ok(false)` when shutdown came first.
    async fn preflight(&mut self) -> Result<bool, DeliveryError> {
        let bridge = self.sink.name();
        let mut tries = 0u32;
        loop {
            let verdict = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(false),
                v = self.sink.preflight() => v,
            };
            tries += 1;
            let (reason, retry_after) = match verdict {
                Verdict::Delivered => return Ok(true),
                Verdict::Transient {
                    reason,
                    retry_after,
                } => (reason, retry_after),
                Verdict::Refused(reason) | Verdict::Fatal(reason) => {
                    tracing::error!(bridge, %reason, "the receiver refused the bridge's check");
                    return Err(DeliveryError::Fatal { bridge, reason });
                }
            };
            let delay = match retry_after {
                Some(wait) => wait.min(RETRY_AFTER_CAP).max(self.policy.backoff),
                None => jitter(backoff(self.policy).delay(tries)),
            };
            self.status.retrying(&format!("check: {reason}"));
            if tries.is_power_of_two() {
                tracing::warn!(bridge, tries, %reason, ?delay, "the receiver's check failed; retrying");
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Checks the cursor against the newest event, then subscribes. The
    /// outer `Err` is final (the cursor is ahead of the log); the inner one
    /// is worth a retry.
    async fn subscribe(
        &mut self,
        cursor: &Cursor,
        after: Option<u64>,
    ) -> Result<anyhow::Result<super::source::EventStream>, DeliveryError> {
        let head = match self.source.head().await {
            Ok(head) => head,
            Err(e) => return Ok(Err(e)),
        };
        self.status.head(head);
        self.head_asked = Some(Instant::now());
        if let Some(done) = cursor.after_seq()
            && done > head
        {
            return Err(DeliveryError::CursorAhead {
                bridge: self.sink.name(),
                path: cursor.path().to_path_buf(),
                cursor: done,
                head,
            });
        }
        Ok(self.source.subscribe(after).await)
    }

    /// Asks the source for the newest seq, at most every [`HEAD_REFRESH`];
    /// failures only leave the lag a little stale.
    async fn refresh_head(&mut self) {
        if self
            .head_asked
            .is_some_and(|at| at.elapsed() < HEAD_REFRESH)
        {
            return;
        }
        self.head_asked = Some(Instant::now());
        let head = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            head = self.source.head() => head,
        };
        if let Ok(head) = head {
            self.status.head(head);
        }
    }

    /// Delivers one event with retries. `Ok(false)` when shutdown
    /// interrupted it (the cursor must not move).
    async fn deliver(&mut self, event: &proto::CallEvent) -> Result<bool, DeliveryError> {
        let bridge = self.sink.name();
        let policy = self.policy;
        let kind = event_kind_name(event.kind);
        // `tries` drives the backoff; `refusals` counts definite refusals.
        let (mut tries, mut refusals) = (0u32, 0u32);
        loop {
            let verdict = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(false),
                v = self.sink.deliver(event) => v,
            };
            tries += 1;
            let (reason, retry_after) = match verdict {
                Verdict::Delivered => {
                    metrics::counter!(names::BRIDGE_DELIVERED, "bridge" => bridge).increment(1);
                    tracing::debug!(bridge, seq = event.seq, kind, call_id = %event.call_id, "delivered");
                    return Ok(true);
                }
                // Down, restarting or overloaded: wait for it, however long it takes.
                Verdict::Transient {
                    reason,
                    retry_after,
                } => (reason, retry_after),
                Verdict::Fatal(reason) => {
                    metrics::counter!(names::BRIDGE_REFUSED, "bridge" => bridge).increment(1);
                    tracing::error!(bridge, seq = event.seq, kind, call_id = %event.call_id, %reason, "receiver refused the bridge; stopping");
                    return Err(DeliveryError::Fatal {
                        bridge,
                        reason: format!(
                            "event #{} ({kind} of call {}): {reason}",
                            event.seq, event.call_id
                        ),
                    });
                }
                Verdict::Refused(reason) => {
                    refusals += 1;
                    if refusals >= policy.max_attempts {
                        metrics::counter!(names::BRIDGE_REFUSED, "bridge" => bridge).increment(1);
                        tracing::error!(
                            bridge,
                            seq = event.seq,
                            kind,
                            call_id = %event.call_id,
                            from = %event.from,
                            to = %event.to,
                            attempts = refusals,
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
                                attempts: refusals,
                                reason,
                            }),
                        };
                    }
                    (reason, None)
                }
            };
            metrics::counter!(names::BRIDGE_RETRIES, "bridge" => bridge).increment(1);
            let delay = match retry_after {
                Some(wait) => wait.min(RETRY_AFTER_CAP).max(policy.backoff),
                None => jitter(backoff(policy).delay(tries)),
            };
            self.status
                .retrying(&format!("event #{}: {reason}", event.seq));
            // One line on the first failure, then fewer as it goes on.
            if tries.is_power_of_two() {
                tracing::warn!(bridge, seq = event.seq, tries, refusals, %reason, ?delay, "delivery failed; retrying");
            } else {
                tracing::debug!(bridge, seq = event.seq, tries, refusals, %reason, ?delay, "delivery failed; retrying");
            }
            self.refresh_head().await;
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::StreamExt;
    use tonic::Status;

    use super::*;
    use crate::bridge::{source::EventStream, status::State};

    /// A source whose head is `head` and whose stream yields `items`.
    struct Scripted {
        head: u64,
        items: Mutex<Vec<Result<proto::CallEvent, Status>>>,
    }

    #[async_trait::async_trait]
    impl EventSource for Scripted {
        async fn subscribe(&self, _after_seq: Option<u64>) -> anyhow::Result<EventStream> {
            let items = std::mem::take(&mut *self.items.lock().unwrap());
            Ok(futures::stream::iter(items).boxed())
        }

        async fn head(&self) -> anyhow::Result<u64> {
            Ok(self.head)
        }
    }

    struct Counting(Mutex<Vec<u64>>);

    #[async_trait::async_trait]
    impl Sink for Counting {
        fn name(&self) -> &'static str {
            "test"
        }
        fn describe(&self) -> String {
            "test".into()
        }
        async fn deliver(&self, event: &proto::CallEvent) -> Verdict {
            self.0.lock().unwrap().push(event.seq);
            Verdict::Delivered
        }
    }

    fn event(seq: u64) -> proto::CallEvent {
        proto::CallEvent {
            seq,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn out_of_range_from_the_server_is_final_and_names_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.cursor");
        let mut cursor = Cursor::load(&path).unwrap();
        cursor.store(1).await.unwrap();
        let source = Scripted {
            head: 9,
            items: Mutex::new(vec![
                Ok(event(2)),
                Err(Status::out_of_range(
                    "after_seq 2 is beyond the newest event #1",
                )),
                Ok(event(3)),
            ]),
        };
        let sink = Counting(Mutex::new(Vec::new()));
        let status = BridgeStatus::new("test", cursor.after_seq());
        let error = run(
            &source,
            &sink,
            cursor,
            false,
            &DeliveryPolicy::default(),
            &status,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(
            error,
            DeliveryError::ResumeRefused { cursor: 2, .. }
        ));
        let text = error.to_string();
        assert!(text.contains("beyond the newest event #1"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert_eq!(*sink.0.lock().unwrap(), [2], "nothing after the refusal");
        assert_eq!(status.snapshot().state, State::Stopped);
        assert_eq!(Cursor::load(&path).unwrap().after_seq(), Some(2));
    }
}
