//! The PostgreSQL SQL of the reads and the writer: the statements of
//! `store::rows` with PostgreSQL's types (and arrays for lists of keys).

use bytes::Bytes;
use sqlx::postgres::{PgArguments, PgConnection};

use sqlx::{Executor, Postgres};

use crate::calls::CallRecord;
use crate::store::sql::call_of;
use crate::store::sql::{self, INSERT_CHUNK};
use crate::store::writer::BatchRows;
use crate::store::{StoreError, StoredEvent, WireEvent};

use super::EVENTS_CHANNEL;

/// Inserts `events` (with their dedupe keys) in a few multi-row statements.
pub(crate) async fn insert_events(
    conn: &mut PgConnection,
    events: &[StoredEvent],
    wires: &[Bytes],
    dedupe_keys: &[Option<String>],
) -> Result<(), StoreError> {
    debug_assert_eq!(events.len(), dedupe_keys.len());
    debug_assert_eq!(events.len(), wires.len());
    for ((events, wires), keys) in events
        .chunks(INSERT_CHUNK)
        .zip(wires.chunks(INSERT_CHUNK))
        .zip(dedupe_keys.chunks(INSERT_CHUNK))
    {
        let mut insert = String::new();
        let mut args = PgArguments::default();
        sql::push_insert_events::<Postgres>(&mut insert, &mut args, events, wires, keys)?;
        sqlx::query_with(&insert, args).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Events with seq in `after_seq + 1 ..= last_seq`, ascending, in their
/// wire form.
pub(crate) async fn wire_events<'e, E>(
    ex: E,
    after_seq: u64,
    last_seq: u64,
) -> Result<Vec<WireEvent>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query_as::<_, (i64, Option<Vec<u8>>)>(
        "SELECT seq, wire FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq",
    )
    .bind(after_seq.min(i64::MAX as u64) as i64)
    .bind(last_seq.min(i64::MAX as u64) as i64)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(seq, wire)| match wire {
            Some(wire) => Ok(WireEvent {
                seq: seq as u64,
                wire: Bytes::from(wire),
            }),
            None => Err(StoreError::Corrupt(format!("event {seq} has no content"))),
        })
        .collect()
}

/// The stored (dedupe key, seq) pairs among `keys`.
pub(crate) async fn seqs_by_dedupe_keys(
    conn: &mut PgConnection,
    keys: &[String],
) -> Result<Vec<(String, u64)>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT dedupe_key, seq FROM events WHERE dedupe_key = ANY($1)")
            .bind(keys)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().map(|(k, s)| (k, s as u64)).collect())
}

/// What a batch reads, in one statement: the stored calls among `call_ids`
/// (in no particular order) and the stored (dedupe key, seq) pairs among
/// `keys`.
pub(crate) async fn load_batch(
    conn: &mut PgConnection,
    call_ids: &[&str],
    keys: &[String],
) -> Result<(Vec<CallRecord>, Vec<(String, u64)>), StoreError> {
    if call_ids.is_empty() && keys.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    type Row = (i32, String, Option<String>, Option<i64>, Option<Vec<u8>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT 0, call_id, record, NULL::BIGINT, wire FROM calls WHERE call_id = ANY($1) \
         UNION ALL \
         SELECT 1, dedupe_key, NULL, seq, NULL FROM events WHERE dedupe_key = ANY($2)",
    )
    .bind(call_ids)
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
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

/// Writes what a batch produced and tells the other replicas (`NOTIFY`,
/// delivered when the transaction commits): the calls it changed and its
/// events. A batch of up to [`INSERT_CHUNK`] of each, the usual case, goes
/// in one statement (the upsert and the insert as `WITH` clauses, the
/// notification as its query); a larger one in a statement per chunk.
pub(crate) async fn write_batch(
    conn: &mut PgConnection,
    batch: BatchRows<'_>,
) -> Result<(), StoreError> {
    let BatchRows {
        calls,
        events,
        wires,
        dedupe_keys,
    } = batch;
    if calls.len() > INSERT_CHUNK || events.len() > INSERT_CHUNK {
        upsert_calls(conn, calls).await?;
        insert_events(conn, events, wires, dedupe_keys).await?;
        if let Some(last) = events.last() {
            notify(conn, last.seq).await?;
        }
        return Ok(());
    }
    let Some(last) = events.last() else {
        return upsert_calls(conn, calls).await;
    };
    let mut statement = String::from("WITH ");
    let mut args = PgArguments::default();
    if !calls.is_empty() {
        statement.push_str("calls_written AS (");
        sql::push_upsert_calls::<Postgres>(&mut statement, &mut args, calls)?;
        statement.push_str("), ");
    }
    statement.push_str("events_written AS (");
    sql::push_insert_events::<Postgres>(&mut statement, &mut args, events, wires, dedupe_keys)?;
    statement.push_str(") SELECT pg_notify(");
    sql::bind::<Postgres, _>(&mut statement, &mut args, EVENTS_CHANNEL)?;
    statement.push_str(", ");
    sql::bind::<Postgres, _>(&mut statement, &mut args, last.seq.to_string())?;
    statement.push(')');
    sqlx::query_with(&statement, args)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Tells the other replicas that events up to `head` are stored.
async fn notify(conn: &mut PgConnection, head: u64) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(head.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inserts or replaces `calls` (distinct call ids) in multi-row statements.
pub(crate) async fn upsert_calls(
    conn: &mut PgConnection,
    calls: &[CallRecord],
) -> Result<(), StoreError> {
    for chunk in calls.chunks(INSERT_CHUNK) {
        let mut upsert = String::new();
        let mut args = PgArguments::default();
        sql::push_upsert_calls::<Postgres>(&mut upsert, &mut args, chunk)?;
        sqlx::query_with(&upsert, args).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes events received before `cutoff_ms` (below `head`, so the newest
/// stays and the sequence continues) and calls last updated before it.
pub(crate) async fn purge(
    conn: &mut PgConnection,
    head: u64,
    cutoff_ms: i64,
) -> Result<(u64, u64), StoreError> {
    let events = sqlx::query(sql::PURGE_EVENTS)
        .bind(cutoff_ms)
        .bind(head as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let calls = sqlx::query(sql::PURGE_CALLS)
        .bind(cutoff_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok((events, calls))
}
