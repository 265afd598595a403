//! One batch of commands in one transaction, and what it produced: the
//! answers and the new events, released only after the commit.

use std::collections::HashMap;

use bytes::Bytes;

use super::cache::CallCache;
use super::conn::{BatchConn, BatchRows};
use super::{Command, Committed, Intake, Outcome};
use crate::calls::{self, CallRecord, SyntheticEnd};
use crate::store::{StoreError, StoredEvent, WireEvent};
use crate::telemetry::names;

/// What one batch produced, applied only after its commit.
#[derive(Default)]
pub(in crate::store) struct BatchEffects {
    outcomes: Vec<Outcome>,
    published: Vec<StoredEvent>,
    /// The encoded form of each of `published`, stored with it.
    wires: Vec<Bytes>,
    /// Dedupe keys of `published`, inserted together before the commit.
    dedupe_keys: Vec<Option<String>>,
    /// Calls changed by the batch, latest state once each, written together.
    dirty: Vec<CallRecord>,
    dirty_index: HashMap<String, usize>,
    duplicates: u64,
}

impl BatchEffects {
    /// Hands the batch's new events to `publish`, in seq order, then
    /// answers every command of the committed batch: whoever got an answer
    /// finds its event in the fan-out already.
    pub(in crate::store) fn respond(self, batch: Vec<Command>, mut publish: impl FnMut(WireEvent)) {
        metrics::histogram!(names::WRITER_BATCH_SIZE).record(batch.len() as f64);
        metrics::counter!(names::EVENTS_APPENDED).increment(self.published.len() as u64);
        metrics::counter!(names::EVENTS_DUPLICATE).increment(self.duplicates);
        for (event, wire) in self.published.into_iter().zip(self.wires) {
            publish(WireEvent {
                seq: event.seq,
                wire,
            });
        }
        for (command, outcome) in batch.into_iter().zip(self.outcomes) {
            command.respond(Ok(outcome));
        }
    }

    /// The number of events the batch appended.
    pub(in crate::store) fn appended(&self) -> usize {
        self.published.len()
    }

    /// The last event the batch appended, in its wire form.
    pub(in crate::store) fn last_event(&self) -> Option<(u64, &Bytes)> {
        Some((self.published.last()?.seq, self.wires.last()?))
    }

    fn touch(&mut self, call: &CallRecord) {
        match self.dirty_index.get(&call.call_id) {
            Some(&i) => self.dirty[i] = call.clone(),
            None => {
                self.dirty_index
                    .insert(call.call_id.clone(), self.dirty.len());
                self.dirty.push(call.clone());
            }
        }
    }

    /// Writes what is pending, so queries of the calls table see it.
    async fn flush(&mut self, conn: &mut impl BatchConn) -> Result<(), StoreError> {
        conn.upsert_calls(&self.dirty).await?;
        self.dirty.clear();
        self.dirty_index.clear();
        Ok(())
    }
}

/// Answers every command of a batch that will not be stored with `error`.
pub(in crate::store) fn fail(batch: Vec<Command>, error: &StoreError) {
    let reason = error.to_string();
    for command in batch {
        command.respond(Err(StoreError::Write(reason.clone())));
    }
}

/// The calls `batch` touches, in its order (repeats included).
pub(in crate::store) fn call_ids(batch: &[Command]) -> Vec<&str> {
    batch
        .iter()
        .filter_map(|command| match command {
            Command::Append { intake, .. } => Some(intake.event.call_id.as_str()),
            Command::SetDone { call_id, .. } => Some(call_id.as_str()),
            Command::Sweep { .. } | Command::Purge { .. } | Command::Tick => None,
        })
        .collect()
}

/// Runs the commands of `batch` on `conn`, inside the transaction the
/// caller opened: appended events take seqs from `next_seq` on (advanced
/// past the last one), calls are read through `cache`. Nothing is
/// committed here.
pub(in crate::store) async fn apply<C: BatchConn>(
    conn: &mut C,
    next_seq: &mut u64,
    cache: &mut CallCache,
    batch: &[Command],
) -> Result<BatchEffects, StoreError> {
    // Every call the batch touches, read at once.
    let call_ids = call_ids(batch);
    let mut effects = BatchEffects::default();
    let mut seq = SeqCounter(next_seq);
    cache.load_missing(&mut *conn, &call_ids).await?;
    for command in batch {
        let outcome = match command {
            Command::Append { intake, key, .. } => {
                let committed = append(
                    &mut *conn,
                    &mut seq,
                    cache,
                    intake,
                    key.as_deref(),
                    &mut effects,
                )
                .await?;
                if matches!(committed, Committed::Duplicate { .. }) {
                    effects.duplicates += 1;
                }
                Outcome::Append(committed)
            }
            // Taken out of the batch by the loop; nothing to do here.
            Command::Tick => Outcome::Sweep(0),
            Command::SetDone { call_id, done, .. } => {
                Outcome::SetDone(set_done(&mut *conn, cache, call_id, *done, &mut effects).await?)
            }
            Command::Sweep {
                cutoff_ms, now_ms, ..
            } => Outcome::Sweep(
                sweep(
                    &mut *conn,
                    &mut seq,
                    cache,
                    *cutoff_ms,
                    *now_ms,
                    &mut effects,
                )
                .await?,
            ),
            Command::Purge { cutoff_ms, .. } => {
                effects.flush(&mut *conn).await?;
                cache.clear();
                let (events, calls) = conn.purge(seq.last(), *cutoff_ms).await?;
                Outcome::Purge(events, calls)
            }
        };
        effects.outcomes.push(outcome);
    }
    effects.wires = effects.published.iter().map(StoredEvent::encode).collect();
    conn.store_batch(BatchRows {
        calls: &effects.dirty,
        events: &effects.published,
        wires: &effects.wires,
        dedupe_keys: &effects.dedupe_keys,
    })
    .await?;
    Ok(effects)
}

struct SeqCounter<'a>(&'a mut u64);

impl SeqCounter<'_> {
    fn take(&mut self) -> u64 {
        let seq = *self.0;
        *self.0 += 1;
        seq
    }

    /// The highest seq handed out so far (0 when none).
    fn last(&self) -> u64 {
        *self.0 - 1
    }
}

/// Appends `intake` unless it is stored already. An event of a kind
/// without a dedupe key of its own (dtmf) is stored under its push's `key`,
/// so a push retried or folded in from the spool twice is stored once.
async fn append(
    conn: &mut impl BatchConn,
    seq: &mut SeqCounter<'_>,
    cache: &mut CallCache,
    intake: &Intake,
    push_key: Option<&str>,
    effects: &mut BatchEffects,
) -> Result<Committed, StoreError> {
    let event = &intake.event;
    let own_key = calls::dedupe_key(event.kind, &event.call_id);
    let push_key = push_key.filter(|_| own_key.is_none());
    if let Some(key) = push_key
        && let Some((_, seq)) = conn.seqs_by_dedupe_keys(&[key.to_owned()]).await?.first()
    {
        return Ok(Committed::Duplicate {
            seq: *seq,
            decision: None,
        });
    }
    let entry = cache.entry(conn, &event.call_id).await?;
    // Earlier events of the same batch are in the cache already.
    if let Some(original) = entry.original(event.kind) {
        return Ok(Committed::Duplicate {
            seq: original,
            decision: entry.record.as_ref().and_then(|c| c.decision.clone()),
        });
    }
    if calls::answers_a_prompt_again(entry.record.as_ref(), event, intake.decision.as_ref()) {
        return Ok(Committed::Replayed);
    }

    let call = calls::apply(
        entry.record.as_ref(),
        event,
        intake.decision.as_ref(),
        intake.received_at_ms,
        false,
    );
    let stored = StoredEvent {
        seq: seq.take(),
        event: event.clone(),
        received_at_ms: intake.received_at_ms,
        synthetic: false,
        decision: intake.decision.clone(),
        call: call.clone(),
    };
    entry.set_original(event.kind, stored.seq);
    entry.record = Some(call.clone());
    effects.touch(&call);
    let appended = stored.seq;
    effects
        .dedupe_keys
        .push(own_key.or_else(|| push_key.map(str::to_owned)));
    effects.published.push(stored);

    if let Some(end) = calls::end_if_rejected(
        event,
        intake.decision.as_ref(),
        &call,
        intake.received_at_ms,
    ) {
        append_synthetic(seq, cache, end, intake.received_at_ms, effects);
    }
    Ok(Committed::Appended {
        seq: appended,
        decision: intake.decision.clone(),
        call,
    })
}

/// Appends the synthetic hangup of `end`, received at `at_ms`, and stores
/// the ended call.
fn append_synthetic(
    seq: &mut SeqCounter<'_>,
    cache: &mut CallCache,
    end: SyntheticEnd,
    at_ms: i64,
    effects: &mut BatchEffects,
) {
    let stored = StoredEvent {
        seq: seq.take(),
        event: end.hangup,
        received_at_ms: at_ms,
        synthetic: true,
        decision: None,
        call: end.call,
    };
    effects.touch(&stored.call);
    cache.store(&stored.call);
    effects.dedupe_keys.push(None);
    effects.published.push(stored);
}

async fn set_done(
    conn: &mut impl BatchConn,
    cache: &mut CallCache,
    call_id: &str,
    done: bool,
    effects: &mut BatchEffects,
) -> Result<Option<CallRecord>, StoreError> {
    let Some(mut call) = cache.entry(conn, call_id).await?.record.clone() else {
        return Ok(None);
    };
    call.done = done;
    call.updated_at_ms = crate::now_ms();
    effects.touch(&call);
    cache.store(&call);
    Ok(Some(call))
}

async fn sweep(
    conn: &mut impl BatchConn,
    seq: &mut SeqCounter<'_>,
    cache: &mut CallCache,
    cutoff_ms: i64,
    now_ms: i64,
    effects: &mut BatchEffects,
) -> Result<usize, StoreError> {
    // Calls this batch changed count as they are now, not as last committed.
    effects.flush(conn).await?;
    let open = conn.stale_open_calls(cutoff_ms).await?;
    let ends = calls::end_stale(&open, cutoff_ms, now_ms);
    let ended = ends.len();
    for end in ends {
        append_synthetic(seq, cache, end, now_ms, effects);
    }
    if ended > 0 {
        tracing::info!(calls = ended, "sweep ended calls with no hangup");
    }
    Ok(ended)
}
