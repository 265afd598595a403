//! Catch-up pages on SQLite, read straight from a pooled connection's handle.
//!
//! sqlx hands every row from its SQLite thread to the reader on its own,
//! copying each value; a resuming subscriber reads the log a page at a time,
//! a million rows and more, so that hand-off was most of its cost. Here a
//! page is read on a blocking thread with the connection's handle locked
//! (sqlx's [`lock_handle`](sqlx::SqliteConnection::lock_handle), made for
//! this), through `rusqlite`'s safe API over that same handle: one
//! statement, the rows stepped in a loop, every event's stored bytes copied
//! into one buffer the page's events then share. The loop stops at the byte
//! bound itself, so no row past the page is read.

use bytes::{Bytes, BytesMut};
use rusqlite::types::ValueRef;
use sqlx::SqlitePool;

use super::rows;
use crate::store::backend::PageRequest;
use crate::store::{EventPage, StoreError, WireEvent};

const PAGE_SQL: &str = "SELECT seq, wire, received_at_ms, synthetic, \
     CASE WHEN wire IS NULL THEN payload END \
     FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2";

/// The events with seq > `after_seq`, ascending: at most `limit` of them and
/// at most `max_bytes` of stored bytes together, but always the first one,
/// however large.
pub(super) async fn read(pool: &SqlitePool, page: PageRequest) -> Result<EventPage, StoreError> {
    let PageRequest {
        after_seq,
        limit,
        max_bytes,
    } = page;
    let mut conn = pool.acquire().await?;
    let runtime = tokio::runtime::Handle::current();
    // The blocking task owns the connection: if the reader goes away (a
    // subscriber disconnects), the page is still finished and the handle
    // unlocked before the connection returns to the pool.
    tokio::task::spawn_blocking(move || {
        let mut handle = runtime.block_on(conn.lock_handle())?;
        // SAFETY: the handle stays locked, and so unused by sqlx, until
        // `handle` drops at the end of this closure, after `db` (declared
        // later, dropped first). `from_handle` borrows the handle: dropping
        // `db` finalizes its own statements and leaves the connection open.
        let db = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }
            .map_err(read_error)?;
        read_rows(&db, after_seq, limit, max_bytes)
    })
    .await
    .map_err(|e| StoreError::Read(format!("the catch-up read stopped: {e}")))?
}

fn read_rows(
    db: &rusqlite::Connection,
    after_seq: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<EventPage, StoreError> {
    let mut statement = db.prepare(PAGE_SQL).map_err(read_error)?;
    let mut rows = statement
        .query((after_seq.min(i64::MAX as u64) as i64, i64::from(limit)))
        .map_err(read_error)?;
    let mut buffer = BytesMut::with_capacity(max_bytes.min(64 << 10));
    // (seq, end of its bytes in `buffer`)
    let mut ends: Vec<(u64, usize)> = Vec::new();
    let mut stored_bytes = 0usize;
    let mut cut_for_size = false;
    while let Some(row) = rows.next().map_err(read_error)? {
        let seq = row.get::<_, i64>(0).map_err(read_error)? as u64;
        // The wire form, or for rows stored before it was kept, the JSON.
        let (wire, payload) = match row.get_ref(1).map_err(read_error)? {
            ValueRef::Blob(wire) => (Some(wire), None),
            _ => match row.get_ref(4).map_err(read_error)? {
                ValueRef::Text(payload) => (None, Some(payload)),
                _ => return Err(StoreError::Corrupt(format!("event {seq} has no content"))),
            },
        };
        let size = wire.or(payload).map_or(0, <[u8]>::len);
        if !ends.is_empty() && stored_bytes + size > max_bytes {
            cut_for_size = true;
            break;
        }
        stored_bytes += size;
        match (wire, payload) {
            (Some(wire), _) => buffer.extend_from_slice(wire),
            (None, payload) => {
                let payload = std::str::from_utf8(payload.unwrap_or_default()).map_err(|e| {
                    StoreError::Corrupt(format!("event {seq}'s payload is not text: {e}"))
                })?;
                let received_at_ms = row.get::<_, i64>(2).map_err(read_error)?;
                let synthetic = row.get::<_, bool>(3).map_err(read_error)?;
                let wire = rows::legacy_wire(seq, payload, received_at_ms, synthetic)?;
                buffer.extend_from_slice(&wire);
            }
        }
        ends.push((seq, buffer.len()));
    }
    let at_head = !cut_for_size && ends.len() < limit as usize;
    let buffer: Bytes = buffer.freeze();
    let mut start = 0;
    let events = ends
        .into_iter()
        .map(|(seq, end)| {
            let wire = buffer.slice(start..end);
            start = end;
            WireEvent { seq, wire }
        })
        .collect();
    Ok(EventPage { events, at_head })
}

fn read_error(e: rusqlite::Error) -> StoreError {
    StoreError::Read(e.to_string())
}
