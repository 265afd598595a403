//! The SQL shared by the read side ([`super::Store`]) and the writer task:
//! how an event and a call map to rows and back.

use bytes::Bytes;
use serde::Deserialize;
use sqlx::sqlite::SqliteConnection;

use sqlx::{QueryBuilder, Sqlite};

use super::{StoreError, StoredEvent};
use crate::calls::CallRecord;
use crate::decide::Decision;
use crate::sipgate::event::Event;

/// The `events.payload` JSON of rows stored before the wire form was kept
/// (migration 0003); newer rows leave it empty.
#[derive(Deserialize)]
struct Payload {
    event: Event,
    decision: Option<Decision>,
    call: CallRecord,
}

/// Rows per INSERT: 11 parameters each stays far below SQLite's limit.
const INSERT_CHUNK: usize = 500;

/// Appends to `sql` the statements inserting `events` (with their wire
/// forms and dedupe keys), a few hundred rows per statement.
fn push_insert_events(
    sql: &mut QueryBuilder<'_, Sqlite>,
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
        sql.push(
            "INSERT INTO events (seq, kind, call_id, direction, from_number, to_number, \
             received_at_ms, synthetic, dedupe_key, payload, wire) ",
        );
        sql.push_values(
            chunk.iter().zip(keys).zip(wires),
            |mut row, ((e, key), wire)| {
                row.push_bind(e.seq as i64)
                    .push_bind(e.event.kind.as_str())
                    .push_bind(e.event.call_id.clone())
                    .push_bind(e.event.direction.map(|d| d.as_str()))
                    .push_bind(e.event.from.clone())
                    .push_bind(e.event.to.clone())
                    .push_bind(e.received_at_ms)
                    .push_bind(e.synthetic)
                    .push_bind(key.clone())
                    // The content is the wire form; JSON only in older rows.
                    .push_bind("")
                    .push_bind(wire.to_vec());
            },
        );
        sql.push("; ");
    }
    Ok(())
}

/// Writes what a batch produced and commits its transaction, in one round
/// trip to the connection: the calls it changed, its events, `COMMIT`.
/// On an error the transaction is still open: the caller rolls it back.
pub(super) async fn write_and_commit(
    conn: &mut SqliteConnection,
    calls: &[CallRecord],
    events: &[StoredEvent],
    wires: &[Bytes],
    dedupe_keys: &[Option<String>],
) -> Result<(), StoreError> {
    let mut sql = QueryBuilder::<Sqlite>::new("");
    push_upsert_calls(&mut sql, calls)?;
    push_insert_events(&mut sql, events, wires, dedupe_keys)?;
    sql.push("COMMIT");
    sql.build().execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
pub(super) async fn events_after<'e, E>(
    ex: E,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let rows = sqlx::query_as::<_, (i64, i64, bool, String, Option<Vec<u8>>)>(
        "SELECT seq, received_at_ms, synthetic, payload, wire FROM events \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after_seq.min(i64::MAX as u64) as i64)
    .bind(i64::from(limit))
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(seq, received_at_ms, synthetic, payload, wire)| {
            if let Some(wire) = wire {
                let mut event = StoredEvent::decode(&wire)?;
                event.seq = seq as u64;
                return Ok(event);
            }
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

/// The wire form of an event stored before the wire form was kept
/// (migration 0003): encoded from its JSON payload.
pub(super) fn legacy_wire(
    seq: u64,
    payload: &str,
    received_at_ms: i64,
    synthetic: bool,
) -> Result<Bytes, StoreError> {
    let Payload {
        event,
        decision,
        call,
    } = serde_json::from_str(payload)?;
    Ok(StoredEvent {
        seq,
        event,
        received_at_ms,
        synthetic,
        decision,
        call,
    }
    .encode())
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

/// A call row's content: its protobuf form (`wire`), or the JSON `record` of
/// rows stored before it was kept.
pub(super) fn call_of(record: &str, wire: Option<&[u8]>) -> Result<CallRecord, StoreError> {
    match wire {
        Some(wire) => {
            let message: crate::proto::Call =
                prost::Message::decode(wire).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            crate::encode::call_from(message).map_err(StoreError::Corrupt)
        }
        None => Ok(serde_json::from_str(record)?),
    }
}

/// Parameters per `IN (...)` list: far below SQLite's and PostgreSQL's limits.
const IN_CHUNK: usize = 500;

/// Opens the writer's transaction (`BEGIN IMMEDIATE`) and reads, in the
/// same round trip to the connection, the stored calls among `call_ids` and
/// the stored (dedupe key, seq) pairs among `keys`.
pub(super) async fn begin_and_load(
    conn: &mut SqliteConnection,
    call_ids: &[&str],
    keys: &[String],
) -> Result<(Vec<CallRecord>, Vec<(String, u64)>), StoreError> {
    let mut sql = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
    for chunk in call_ids.chunks(IN_CHUNK) {
        sql.push("SELECT 0, call_id, record, NULL, wire FROM calls WHERE call_id IN (");
        let mut list = sql.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        sql.push("); ");
    }
    for chunk in keys.chunks(IN_CHUNK) {
        sql.push("SELECT 1, dedupe_key, NULL, seq, NULL FROM events WHERE dedupe_key IN (");
        let mut list = sql.separated(", ");
        for key in chunk {
            list.push_bind(key);
        }
        sql.push("); ");
    }
    type Row = (i64, String, Option<String>, Option<i64>, Option<Vec<u8>>);
    let rows: Vec<Row> = sql.build_query_as().fetch_all(&mut *conn).await?;
    let mut calls = Vec::new();
    let mut seqs = Vec::new();
    for (what, key, record, seq, wire) in rows {
        match (what, record, seq) {
            (0, Some(record), _) => calls.push(call_of(&record, wire.as_deref())?),
            (1, _, Some(seq)) => seqs.push((key, seq as u64)),
            _ => return Err(StoreError::Corrupt(format!("unexpected row for {key}"))),
        }
    }
    Ok((calls, seqs))
}

/// Inserts or replaces `calls` (distinct call ids) in multi-row statements.
pub(super) async fn upsert_calls(
    conn: &mut SqliteConnection,
    calls: &[CallRecord],
) -> Result<(), StoreError> {
    if calls.is_empty() {
        return Ok(());
    }
    let mut sql = QueryBuilder::<Sqlite>::new("");
    push_upsert_calls(&mut sql, calls)?;
    sql.build().execute(&mut *conn).await?;
    Ok(())
}

/// Appends to `sql` the statements inserting or replacing `calls`.
fn push_upsert_calls(
    sql: &mut QueryBuilder<'_, Sqlite>,
    calls: &[CallRecord],
) -> Result<(), StoreError> {
    for chunk in calls.chunks(INSERT_CHUNK) {
        sql.push(
            "INSERT INTO calls (call_id, direction, from_number, to_number, state, done, cause, \
             initialized_at_ms, start_at_ms, end_at_ms, updated_at_ms, orig_call_id, \
             first_leg_call_id, xcid, ended_synthetically, record, wire) ",
        );
        sql.push_values(chunk, |mut row, call| {
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
                // The content is the wire form; JSON only in older rows.
                .push_bind("")
                .push_bind(prost::Message::encode_to_vec(&crate::encode::call(call)));
        });
        sql.push(
            " ON CONFLICT (call_id) DO UPDATE SET \
             direction = excluded.direction, from_number = excluded.from_number, \
             to_number = excluded.to_number, state = excluded.state, done = excluded.done, \
             cause = excluded.cause, initialized_at_ms = excluded.initialized_at_ms, \
             start_at_ms = excluded.start_at_ms, end_at_ms = excluded.end_at_ms, \
             updated_at_ms = excluded.updated_at_ms, orig_call_id = excluded.orig_call_id, \
             first_leg_call_id = excluded.first_leg_call_id, xcid = excluded.xcid, \
             ended_synthetically = excluded.ended_synthetically, record = excluded.record, \
             wire = excluded.wire; ",
        );
    }
    Ok(())
}
