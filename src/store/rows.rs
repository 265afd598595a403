//! The SQL shared by the read side ([`super::Store`]) and the writer task:
//! how an event and a call map to rows and back.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteConnection;

use sqlx::{Executor, QueryBuilder, Sqlite};

use super::{StoreError, StoredEvent, WireEvent};
use crate::calls::CallRecord;
use crate::decide::Decision;
use crate::sipgate::event::Event;

/// The `events.payload` JSON: what the columns do not hold.
#[derive(Serialize)]
struct PayloadRef<'a> {
    event: &'a Event,
    decision: Option<&'a Decision>,
    call: &'a CallRecord,
}

#[derive(Deserialize)]
struct Payload {
    event: Event,
    decision: Option<Decision>,
    call: CallRecord,
}

/// Rows per INSERT: 11 parameters each stays far below SQLite's limit.
const INSERT_CHUNK: usize = 500;

/// Inserts `events` (with their dedupe keys) in a few multi-row statements.
pub(super) async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[StoredEvent],
    wires: &[Bytes],
    dedupe_keys: &[Option<String>],
) -> Result<(), StoreError> {
    debug_assert_eq!(events.len(), dedupe_keys.len());
    debug_assert_eq!(events.len(), wires.len());
    for ((chunk, keys), wires) in events
        .chunks(INSERT_CHUNK)
        .zip(dedupe_keys.chunks(INSERT_CHUNK))
        .zip(wires.chunks(INSERT_CHUNK))
    {
        let payloads = chunk
            .iter()
            .map(|e| {
                serde_json::to_string(&PayloadRef {
                    event: &e.event,
                    decision: e.decision.as_ref(),
                    call: &e.call,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (seq, kind, call_id, direction, from_number, to_number, \
             received_at_ms, synthetic, dedupe_key, payload, wire) ",
        );
        insert.push_values(
            chunk.iter().zip(keys).zip(payloads).zip(wires),
            |mut row, (((e, key), payload), wire)| {
                row.push_bind(e.seq as i64)
                    .push_bind(e.event.kind.as_str())
                    .push_bind(e.event.call_id.clone())
                    .push_bind(e.event.direction.map(|d| d.as_str()))
                    .push_bind(e.event.from.clone())
                    .push_bind(e.event.to.clone())
                    .push_bind(e.received_at_ms)
                    .push_bind(e.synthetic)
                    .push_bind(key.clone())
                    .push_bind(payload)
                    .push_bind(wire.as_ref());
            },
        );
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) async fn events_after<'e, E>(
    ex: E,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query_as::<_, (i64, i64, bool, String)>(
        "SELECT seq, received_at_ms, synthetic, payload FROM events \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after_seq.min(i64::MAX as u64) as i64)
    .bind(i64::from(limit))
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(seq, received_at_ms, synthetic, payload)| {
            let Payload {
                event,
                decision,
                call,
            } = serde_json::from_str(&payload)?;
            Ok(StoredEvent {
                seq: seq as u64,
                event,
                received_at_ms,
                synthetic,
                decision,
                call,
            })
        })
        .collect()
}

/// Events with seq in `after_seq + 1 ..= last_seq`, ascending, in their
/// wire form; events stored before the wire form was kept are encoded from
/// their JSON payload.
pub(super) async fn wire_events<'e, E>(
    ex: E,
    after_seq: u64,
    last_seq: u64,
) -> Result<Vec<WireEvent>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query_as::<_, (i64, Option<Vec<u8>>, i64, bool, Option<String>)>(
        "SELECT seq, wire, received_at_ms, synthetic, \
         CASE WHEN wire IS NULL THEN payload END FROM events \
         WHERE seq > $1 AND seq <= $2 ORDER BY seq",
    )
    .bind(after_seq.min(i64::MAX as u64) as i64)
    .bind(last_seq.min(i64::MAX as u64) as i64)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(seq, wire, received_at_ms, synthetic, payload)| {
            let wire = match (wire, payload) {
                (Some(wire), _) => Bytes::from(wire),
                (None, Some(payload)) => {
                    let Payload {
                        event,
                        decision,
                        call,
                    } = serde_json::from_str(&payload)?;
                    StoredEvent {
                        seq: seq as u64,
                        event,
                        received_at_ms,
                        synthetic,
                        decision,
                        call,
                    }
                    .encode()
                }
                (None, None) => {
                    return Err(StoreError::Corrupt(format!("event {seq} has no content")));
                }
            };
            Ok(WireEvent {
                seq: seq as u64,
                wire,
            })
        })
        .collect()
}

pub(super) async fn head_seq<'e, E>(ex: E) -> Result<u64, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let (head,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM events")
        .fetch_one(ex)
        .await?;
    Ok(head as u64)
}

/// The stored (dedupe key, seq) pairs among `keys`.
pub(super) async fn seqs_by_dedupe_keys(
    conn: &mut SqliteConnection,
    keys: &[String],
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut found = Vec::new();
    for chunk in keys.chunks(IN_CHUNK) {
        let mut select =
            QueryBuilder::<Sqlite>::new("SELECT dedupe_key, seq FROM events WHERE dedupe_key IN (");
        let mut list = select.separated(", ");
        for key in chunk {
            list.push_bind(key);
        }
        select.push(")");
        let rows: Vec<(String, i64)> = select.build_query_as().fetch_all(&mut *conn).await?;
        found.extend(rows.into_iter().map(|(k, s)| (k, s as u64)));
    }
    Ok(found)
}

pub(super) async fn load_call<'e, E>(ex: E, call_id: &str) -> Result<Option<CallRecord>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let record: Option<(String,)> = sqlx::query_as("SELECT record FROM calls WHERE call_id = $1")
        .bind(call_id)
        .fetch_optional(ex)
        .await?;
    record
        .map(|(json,)| serde_json::from_str(&json).map_err(StoreError::from))
        .transpose()
}

/// Parameters per `IN (...)` list: far below SQLite's and PostgreSQL's limits.
const IN_CHUNK: usize = 500;

/// The stored calls among `call_ids`, in no particular order.
pub(super) async fn load_calls(
    conn: &mut SqliteConnection,
    call_ids: &[&str],
) -> Result<Vec<CallRecord>, StoreError> {
    let mut calls = Vec::new();
    for chunk in call_ids.chunks(IN_CHUNK) {
        let mut select = QueryBuilder::<Sqlite>::new("SELECT record FROM calls WHERE call_id IN (");
        let mut list = select.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        select.push(")");
        let records: Vec<(String,)> = select.build_query_as().fetch_all(&mut *conn).await?;
        for (json,) in records {
            calls.push(serde_json::from_str(&json)?);
        }
    }
    Ok(calls)
}

/// Inserts or replaces `calls` (distinct call ids) in multi-row statements.
pub(super) async fn upsert_calls(
    conn: &mut SqliteConnection,
    calls: &[CallRecord],
) -> Result<(), StoreError> {
    for chunk in calls.chunks(INSERT_CHUNK) {
        let records = chunk
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let mut upsert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO calls (call_id, direction, from_number, to_number, state, done, cause, \
             initialized_at_ms, start_at_ms, end_at_ms, updated_at_ms, orig_call_id, \
             first_leg_call_id, xcid, ended_synthetically, record) ",
        );
        upsert.push_values(chunk.iter().zip(records), |mut row, (call, record)| {
            row.push_bind(call.call_id.clone())
                .push_bind(call.direction.map(|d| d.as_str()))
                .push_bind(call.from.clone())
                .push_bind(call.to.clone())
                .push_bind(call.state.as_str())
                .push_bind(call.done)
                .push_bind(call.cause.clone())
                .push_bind(call.initialized_at_ms)
                .push_bind(call.start_at_ms)
                .push_bind(call.end_at_ms)
                .push_bind(call.updated_at_ms)
                .push_bind(call.orig_call_id.clone())
                .push_bind(call.first_leg_call_id.clone())
                .push_bind(call.xcid.clone())
                .push_bind(call.ended_synthetically)
                .push_bind(record);
        });
        upsert.push(
            " ON CONFLICT (call_id) DO UPDATE SET \
             direction = excluded.direction, from_number = excluded.from_number, \
             to_number = excluded.to_number, state = excluded.state, done = excluded.done, \
             cause = excluded.cause, initialized_at_ms = excluded.initialized_at_ms, \
             start_at_ms = excluded.start_at_ms, end_at_ms = excluded.end_at_ms, \
             updated_at_ms = excluded.updated_at_ms, orig_call_id = excluded.orig_call_id, \
             first_leg_call_id = excluded.first_leg_call_id, xcid = excluded.xcid, \
             ended_synthetically = excluded.ended_synthetically, record = excluded.record",
        );
        upsert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Calls not ended whose last sign of life is older than `cutoff_ms`, oldest
/// first: the rows [`crate::calls::is_stale`] holds for, found by index.
pub(super) async fn stale_open_calls(
    conn: &mut SqliteConnection,
    cutoff_ms: i64,
) -> Result<Vec<CallRecord>, StoreError> {
    let records: Vec<(String,)> = sqlx::query_as(
        "SELECT record FROM calls \
         WHERE state <> 'hangup' AND initialized_at_ms < $1 AND updated_at_ms < $1 \
         ORDER BY initialized_at_ms, call_id",
    )
    .bind(cutoff_ms)
    .fetch_all(conn)
    .await?;
    records
        .into_iter()
        .map(|(json,)| serde_json::from_str(&json).map_err(StoreError::from))
        .collect()
}

pub(super) async fn setting(
    conn: &mut SqliteConnection,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let value: Option<(String,)> = sqlx::query_as("SELECT value FROM settings_kv WHERE key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await?;
    Ok(value.map(|(v,)| v))
}

pub(super) async fn set_setting(
    conn: &mut SqliteConnection,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO settings_kv (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}
