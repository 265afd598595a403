//! SQL written once for both backends, generic over the database: reads,
//! the writer's event insert and call upsert, how a row's content decodes,
//! and the helper for statements built at run time in such code.
//!
//! sqlx's `QueryBuilder` cannot be executed from generic code (its
//! arguments would have to borrow the builder for their own lifetime), so
//! those statements are put together by hand: the SQL in a `String`, the
//! values in the database's own argument list, each placeholder written by
//! it ([`bind`]).

use sqlx::{Arguments, Database, Encode, Executor, FromRow, IntoArguments, Type};

use serde::Deserialize;

use super::{StoreError, StoredEvent};
use crate::calls::CallRecord;
use crate::decide::Decision;
use crate::sipgate::event::Event;

/// The `events.payload` JSON of rows stored before the wire form was kept
/// (migration 0003); newer rows leave it empty.
#[derive(Deserialize)]
pub(super) struct Payload {
    pub event: Event,
    pub decision: Option<Decision>,
    pub call: CallRecord,
}

impl Payload {
    /// The stored event of the row with the JSON `payload`.
    pub(super) fn parse(
        payload: &str,
        seq: u64,
        received_at_ms: i64,
        synthetic: bool,
    ) -> Result<StoredEvent, StoreError> {
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
        })
    }
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

/// The highest stored sequence number, 0 when the log is empty.
pub(super) async fn head_seq<'e, E, DB>(ex: E) -> Result<u64, StoreError>
where
    E: Executor<'e, Database = DB>,
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    let (head,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM events")
        .fetch_one(ex)
        .await?;
    Ok(head as u64)
}

/// Events with seq > `after_seq`, ascending, at most `limit`, decoded
/// (tests; readers for clients send the stored wire form).
#[cfg(test)]
pub(super) async fn events_after<'e, E, DB>(
    ex: E,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError>
where
    E: Executor<'e, Database = DB>,
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (i64, i64, bool, String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
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
            Payload::parse(&payload, seq as u64, received_at_ms, synthetic)
        })
        .collect()
}

/// The stored call `call_id`, if any.
pub(super) async fn load_call<'e, E, DB>(
    ex: E,
    call_id: &str,
) -> Result<Option<CallRecord>, StoreError>
where
    E: Executor<'e, Database = DB>,
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
{
    let row: Option<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT record, wire FROM calls WHERE call_id = $1")
            .bind(call_id.to_owned())
            .fetch_optional(ex)
            .await?;
    row.map(|(record, wire)| call_of(&record, wire.as_deref()))
        .transpose()
}

/// The calls [`stale_open_calls`] returns; `$1` is the cutoff. The
/// `state <> 'hangup'` term is the one of the partial index `calls_open`.
pub(super) const STALE_OPEN_CALLS: &str = "SELECT record, wire FROM calls \
     WHERE state <> 'hangup' AND initialized_at_ms < $1 AND updated_at_ms < $1 \
     ORDER BY initialized_at_ms, call_id";

/// Retention: events received before `$1` below the head `$2` (the newest
/// event stays: the sequence restarts from MAX(seq) on open).
pub(super) const PURGE_EVENTS: &str = "DELETE FROM events WHERE received_at_ms < $1 AND seq < $2";

/// Retention: calls last updated before `$1`. A call is initialized before
/// it is updated, so the range on `initialized_at_ms` finds them by index.
pub(super) const PURGE_CALLS: &str =
    "DELETE FROM calls WHERE initialized_at_ms < $1 AND updated_at_ms < $1";

/// Calls not ended whose last sign of life is older than `cutoff_ms`, oldest
/// first: the rows [`crate::calls::is_stale`] holds for, found by index.
pub(super) async fn stale_open_calls<'e, E, DB>(
    ex: E,
    cutoff_ms: i64,
) -> Result<Vec<CallRecord>, StoreError>
where
    E: Executor<'e, Database = DB>,
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
{
    let records: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as(STALE_OPEN_CALLS)
        .bind(cutoff_ms)
        .fetch_all(ex)
        .await?;
    records
        .into_iter()
        .map(|(record, wire)| call_of(&record, wire.as_deref()))
        .collect()
}

/// Adds `value` to `args` and its placeholder to `sql`.
pub(super) fn bind<'q, DB, T>(
    sql: &mut String,
    args: &mut DB::Arguments<'q>,
    value: T,
) -> Result<(), StoreError>
where
    DB: Database,
    T: 'q + Encode<'q, DB> + Type<DB>,
{
    args.add(value).map_err(sqlx::Error::Encode)?;
    args.format_placeholder(sql)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    Ok(())
}

/// The columns of an `events` row, in the order the writers bind them.
pub(super) const EVENT_COLUMNS: &str = "seq, kind, call_id, direction, from_number, to_number, \
     received_at_ms, synthetic, dedupe_key, payload, wire";

/// The columns of a `calls` row, in the order the writers bind them.
pub(super) const CALL_COLUMNS: &str = "call_id, direction, from_number, to_number, state, done, \
     cause, initialized_at_ms, start_at_ms, end_at_ms, updated_at_ms, orig_call_id, \
     first_leg_call_id, xcid, ended_synthetically, record, wire";

/// What follows the values of a `calls` insert: a stored call is replaced.
pub(super) const CALL_UPSERT: &str = " ON CONFLICT (call_id) DO UPDATE SET \
     direction = excluded.direction, from_number = excluded.from_number, \
     to_number = excluded.to_number, state = excluded.state, done = excluded.done, \
     cause = excluded.cause, initialized_at_ms = excluded.initialized_at_ms, \
     start_at_ms = excluded.start_at_ms, end_at_ms = excluded.end_at_ms, \
     updated_at_ms = excluded.updated_at_ms, orig_call_id = excluded.orig_call_id, \
     first_leg_call_id = excluded.first_leg_call_id, xcid = excluded.xcid, \
     ended_synthetically = excluded.ended_synthetically, record = excluded.record, \
     wire = excluded.wire";
