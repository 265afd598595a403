//! The PostgreSQL SQL of the reads and the writer: the statements of
//! `store::rows` with PostgreSQL's types (and arrays for lists of keys).

use bytes::Bytes;
use std::sync::LazyLock;

use sqlx::postgres::PgConnection;

use sqlx::{Executor, Postgres};

use crate::calls::CallRecord;
use crate::store::sql::call_of;
use crate::store::sql::{self, CALL_COLUMNS, CALL_UPSERT, EVENT_COLUMNS};
use crate::store::writer::{BatchRows, Loaded};
use crate::store::{StoreError, StoredEvent, WireEvent};

use super::{EVENTS_CHANNEL, REPLICA_SETTING};

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
) -> Result<Loaded, StoreError> {
    if call_ids.is_empty() && keys.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let (loaded, _) = read_batch(conn, call_ids, keys, false).await?;
    Ok(loaded)
}

/// [`load_batch`] and the stored head (the highest seq), in the same
/// statement and so from the same snapshot: the first read of a batch
/// under the write lock.
pub(crate) async fn load_batch_and_head(
    conn: &mut PgConnection,
    call_ids: &[&str],
    keys: &[String],
) -> Result<(Loaded, u64), StoreError> {
    let (loaded, head) = read_batch(conn, call_ids, keys, true).await?;
    let head = head.ok_or_else(|| StoreError::Corrupt("the head row is missing".into()))?;
    Ok((loaded, head))
}

async fn read_batch(
    conn: &mut PgConnection,
    call_ids: &[&str],
    keys: &[String],
    with_head: bool,
) -> Result<(Loaded, Option<u64>), StoreError> {
    macro_rules! calls_and_keys {
        () => {
            "SELECT 0, call_id, record, NULL::BIGINT, wire FROM calls WHERE call_id = ANY($1) \
             UNION ALL \
             SELECT 1, dedupe_key, NULL, seq, NULL FROM events WHERE dedupe_key = ANY($2)"
        };
    }
    const CALLS_AND_KEYS: &str = calls_and_keys!();
    // The first read under the write lock also switches the rest of its
    // transaction to generic plans (`set_config(…, true)`: until COMMIT).
    // The batch's write statement ([`WRITE_BATCH`]) is the same text every
    // time and its plan depends on no value: planned once per connection
    // instead of for every batch, where re-planning it was about a fifth of
    // PostgreSQL's CPU per batch. The lookups here stay planned for their
    // values (`open::SESSION_SETTINGS`).
    const WITH_HEAD: &str = concat!(
        calls_and_keys!(),
        " UNION ALL SELECT 2, '', NULL, COALESCE(MAX(seq), 0), NULL FROM events",
        " UNION ALL SELECT 3, set_config('plan_cache_mode', 'force_generic_plan', true), \
         NULL, NULL, NULL"
    );
    type Row = (i32, String, Option<String>, Option<i64>, Option<Vec<u8>>);
    let rows: Vec<Row> = sqlx::query_as(if with_head { WITH_HEAD } else { CALLS_AND_KEYS })
        .bind(call_ids)
        .bind(keys)
        .fetch_all(&mut *conn)
        .await?;
    let mut calls = Vec::new();
    let mut seqs = Vec::new();
    let mut head = None;
    for (what, key, record, seq, wire) in rows {
        match (what, record, seq) {
            (0, Some(record), _) => calls.push(call_of(&record, wire.as_deref())?),
            (1, _, Some(seq)) => seqs.push((key, seq as u64)),
            (2, _, Some(seq)) => head = Some(seq as u64),
            (3, _, _) => {}
            _ => return Err(StoreError::Corrupt(format!("unexpected row for {key}"))),
        }
    }
    Ok(((calls, seqs), head))
}

/// The one statement that writes a batch: the calls it changed (upserted)
/// and its events, each table from arrays of its columns, so the text is
/// the same for every batch and prepared once per connection. The
/// notification (`NOTIFY`, delivered at commit) tells the other replicas
/// of the new head, when there are new events: `SEQ REPLICA`, the writer
/// connection's [`REPLICA_SETTING`] naming the store that made them.
static WRITE_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH calls_written AS (\
         INSERT INTO calls ({CALL_COLUMNS}) \
         SELECT call_id, direction, from_number, to_number, state, done, cause, \
         initialized_at_ms, start_at_ms, end_at_ms, updated_at_ms, orig_call_id, \
         first_leg_call_id, xcid, ended_synthetically, '', wire \
         FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
         $6::BOOLEAN[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], \
         $12::TEXT[], $13::TEXT[], $14::TEXT[], $15::BOOLEAN[], $16::BYTEA[]) \
         AS c(call_id, direction, from_number, to_number, state, done, cause, \
         initialized_at_ms, start_at_ms, end_at_ms, updated_at_ms, orig_call_id, \
         first_leg_call_id, xcid, ended_synthetically, wire){CALL_UPSERT}\
         ), events_written AS (\
         INSERT INTO events ({EVENT_COLUMNS}) \
         SELECT seq, kind, call_id, direction, from_number, to_number, received_at_ms, \
         synthetic, dedupe_key, '', wire \
         FROM UNNEST($17::BIGINT[], $18::TEXT[], $19::TEXT[], $20::TEXT[], $21::TEXT[], \
         $22::TEXT[], $23::BIGINT[], $24::BOOLEAN[], $25::TEXT[], $26::BYTEA[]) \
         AS e(seq, kind, call_id, direction, from_number, to_number, received_at_ms, \
         synthetic, dedupe_key, wire)\
         ) SELECT pg_notify($27, $28 || ' ' || coalesce(current_setting('{REPLICA_SETTING}', true), '')) \
         WHERE cardinality($17::BIGINT[]) > 0"
    )
});

/// Writes what a batch produced, in one statement ([`WRITE_BATCH`]), and
/// tells the other replicas when it appended events.
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
    debug_assert_eq!(events.len(), dedupe_keys.len());
    debug_assert_eq!(events.len(), wires.len());
    let column = |f: fn(&CallRecord) -> &str| calls.iter().map(f).collect::<Vec<&str>>();
    let number = |f: fn(&CallRecord) -> Option<i64>| calls.iter().map(f).collect::<Vec<_>>();
    let call_wires: Vec<Vec<u8>> = calls
        .iter()
        .map(|call| prost::Message::encode_to_vec(&crate::encode::call(call)))
        .collect();
    let head = events.last().map(|e| e.seq.to_string()).unwrap_or_default();
    let event_column = |f: fn(&StoredEvent) -> &str| events.iter().map(f).collect::<Vec<&str>>();
    sqlx::query(&WRITE_BATCH)
        .bind(column(|c| &c.call_id))
        .bind(
            calls
                .iter()
                .map(|c| c.direction.map(|d| d.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(column(|c| &c.from))
        .bind(column(|c| &c.to))
        .bind(column(|c| c.state.as_str()))
        .bind(calls.iter().map(|c| c.done).collect::<Vec<_>>())
        .bind(column(|c| &c.cause))
        .bind(number(|c| Some(c.initialized_at_ms)))
        .bind(number(|c| c.start_at_ms))
        .bind(number(|c| c.end_at_ms))
        .bind(number(|c| Some(c.updated_at_ms)))
        .bind(column(|c| &c.orig_call_id))
        .bind(column(|c| &c.first_leg_call_id))
        .bind(column(|c| &c.xcid))
        .bind(
            calls
                .iter()
                .map(|c| c.ended_synthetically)
                .collect::<Vec<_>>(),
        )
        .bind(call_wires)
        .bind(events.iter().map(|e| e.seq as i64).collect::<Vec<_>>())
        .bind(event_column(|e| e.event.kind.as_str()))
        .bind(event_column(|e| &e.event.call_id))
        .bind(
            events
                .iter()
                .map(|e| e.event.direction.map(|d| d.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(event_column(|e| &e.event.from))
        .bind(event_column(|e| &e.event.to))
        .bind(events.iter().map(|e| e.received_at_ms).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.synthetic).collect::<Vec<_>>())
        .bind(dedupe_keys.iter().map(|k| k.as_deref()).collect::<Vec<_>>())
        .bind(wires.iter().map(|w| w.as_ref()).collect::<Vec<&[u8]>>())
        .bind(EVENTS_CHANNEL)
        .bind(head)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inserts or replaces `calls` (distinct call ids).
pub(crate) async fn upsert_calls(
    conn: &mut PgConnection,
    calls: &[CallRecord],
) -> Result<(), StoreError> {
    if calls.is_empty() {
        return Ok(());
    }
    write_batch(
        conn,
        BatchRows {
            calls,
            events: &[],
            wires: &[],
            dedupe_keys: &[],
        },
    )
    .await
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
