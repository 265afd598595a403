//! SQLite's own SQL of the read side ([`super::Store`]) and the writer
//! task: the batch's reads sent with `BEGIN IMMEDIATE`, its writes with
//! `COMMIT`. What both backends run is in [`super::sql`].

use bytes::Bytes;
use sqlx::sqlite::{SqliteArguments, SqliteConnection};

use sqlx::{QueryBuilder, Sqlite};

use super::sql::{self, INSERT_CHUNK, Payload, call_of};
use super::{StoreError, StoredEvent};
use crate::calls::CallRecord;

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
    let mut sql = String::new();
    let mut args = SqliteArguments::default();
    push_upsert_calls(&mut sql, &mut args, calls)?;
    for ((events, wires), keys) in events
        .chunks(INSERT_CHUNK)
        .zip(wires.chunks(INSERT_CHUNK))
        .zip(dedupe_keys.chunks(INSERT_CHUNK))
    {
        sql::push_insert_events::<Sqlite>(&mut sql, &mut args, events, wires, keys)?;
        sql.push_str("; ");
    }
    sql.push_str("COMMIT");
    sqlx::query_with(&sql, args).execute(&mut *conn).await?;
    Ok(())
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
    let mut sql = String::new();
    let mut args = SqliteArguments::default();
    push_upsert_calls(&mut sql, &mut args, calls)?;
    sqlx::query_with(&sql, args).execute(&mut *conn).await?;
    Ok(())
}

/// Appends to `sql` the statements inserting or replacing `calls`, a few
/// hundred rows per statement, each ended by `; `.
fn push_upsert_calls<'q>(
    sql: &mut String,
    args: &mut SqliteArguments<'q>,
    calls: &'q [CallRecord],
) -> Result<(), StoreError> {
    for chunk in calls.chunks(INSERT_CHUNK) {
        sql::push_upsert_calls::<Sqlite>(sql, args, chunk)?;
        sql.push_str("; ");
    }
    Ok(())
}
