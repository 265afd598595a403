//! What a batch asks of the connection it runs on: the same operations on
//! SQLite and on PostgreSQL, each backend with its own SQL.

use std::future::Future;

use bytes::Bytes;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

use crate::calls::CallRecord;
use crate::store::{StoreError, StoredEvent, pg, rows, sql};

/// What a batch reads before it applies its commands: the stored calls and
/// the stored (dedupe key, seq) pairs it asked for.
pub(crate) type Loaded = (Vec<CallRecord>, Vec<(String, u64)>);

/// The reads and writes of one batch, inside its transaction.
pub(crate) trait BatchConn: Send {
    fn load_call(
        &mut self,
        call_id: &str,
    ) -> impl Future<Output = Result<Option<CallRecord>, StoreError>> + Send;

    /// The stored calls among `call_ids` (in no particular order) and the
    /// stored (dedupe key, seq) pairs among `keys`: what a batch reads
    /// before it applies its commands. On SQLite this also opens the batch's
    /// transaction, in the same round trip.
    fn load_batch(
        &mut self,
        call_ids: &[&str],
        keys: &[String],
    ) -> impl Future<Output = Result<Loaded, StoreError>> + Send;

    /// The stored (dedupe key, seq) pairs among `keys`.
    fn seqs_by_dedupe_keys(
        &mut self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;

    fn upsert_calls(
        &mut self,
        calls: &[CallRecord],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes what a batch produced: the calls it changed and its events
    /// (with their wire forms and dedupe keys). On SQLite this also commits
    /// the batch's transaction, in the same round trip.
    fn store_batch(
        &mut self,
        calls: &[CallRecord],
        events: &[StoredEvent],
        wires: &[Bytes],
        dedupe_keys: &[Option<String>],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn stale_open_calls(
        &mut self,
        cutoff_ms: i64,
    ) -> impl Future<Output = Result<Vec<CallRecord>, StoreError>> + Send;

    /// Deletes events before `cutoff_ms` (below `head`) and calls last
    /// updated before it; returns (events, calls) deleted.
    fn purge(
        &mut self,
        head: u64,
        cutoff_ms: i64,
    ) -> impl Future<Output = Result<(u64, u64), StoreError>> + Send;
}

/// The writer's SQLite connection while it runs a batch: the reads open the
/// transaction (`BEGIN IMMEDIATE`) and the writes commit it, so a batch
/// takes two round trips to SQLite's thread. On an error the transaction
/// may still be open: the caller rolls it back.
pub(super) struct SqliteBatch<'c>(pub &'c mut SqliteConnection);

impl BatchConn for SqliteBatch<'_> {
    async fn load_call(&mut self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        sql::load_call(&mut *self.0, call_id).await
    }
    async fn load_batch(
        &mut self,
        call_ids: &[&str],
        keys: &[String],
    ) -> Result<Loaded, StoreError> {
        rows::begin_and_load(self.0, call_ids, keys).await
    }
    async fn seqs_by_dedupe_keys(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<(String, u64)>, StoreError> {
        rows::seqs_by_dedupe_keys(self.0, keys).await
    }
    async fn upsert_calls(&mut self, calls: &[CallRecord]) -> Result<(), StoreError> {
        rows::upsert_calls(self.0, calls).await
    }
    async fn store_batch(
        &mut self,
        calls: &[CallRecord],
        events: &[StoredEvent],
        wires: &[Bytes],
        dedupe_keys: &[Option<String>],
    ) -> Result<(), StoreError> {
        rows::write_and_commit(self.0, calls, events, wires, dedupe_keys).await
    }
    async fn stale_open_calls(&mut self, cutoff_ms: i64) -> Result<Vec<CallRecord>, StoreError> {
        sql::stale_open_calls(&mut *self.0, cutoff_ms).await
    }
    async fn purge(&mut self, head: u64, cutoff_ms: i64) -> Result<(u64, u64), StoreError> {
        purge(self.0, head, cutoff_ms).await
    }
}

impl BatchConn for PgConnection {
    async fn load_call(&mut self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        sql::load_call(self, call_id).await
    }
    async fn load_batch(
        &mut self,
        call_ids: &[&str],
        keys: &[String],
    ) -> Result<Loaded, StoreError> {
        pg::rows::load_batch(self, call_ids, keys).await
    }
    async fn seqs_by_dedupe_keys(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<(String, u64)>, StoreError> {
        pg::rows::seqs_by_dedupe_keys(self, keys).await
    }
    async fn upsert_calls(&mut self, calls: &[CallRecord]) -> Result<(), StoreError> {
        pg::rows::upsert_calls(self, calls).await
    }
    async fn store_batch(
        &mut self,
        calls: &[CallRecord],
        events: &[StoredEvent],
        wires: &[Bytes],
        dedupe_keys: &[Option<String>],
    ) -> Result<(), StoreError> {
        pg::rows::write_batch(self, calls, events, wires, dedupe_keys).await
    }
    async fn stale_open_calls(&mut self, cutoff_ms: i64) -> Result<Vec<CallRecord>, StoreError> {
        sql::stale_open_calls(self, cutoff_ms).await
    }
    async fn purge(&mut self, head: u64, cutoff_ms: i64) -> Result<(u64, u64), StoreError> {
        pg::rows::purge(self, head, cutoff_ms).await
    }
}

async fn purge(
    conn: &mut SqliteConnection,
    head: u64,
    cutoff_ms: i64,
) -> Result<(u64, u64), StoreError> {
    // The newest event stays: the sequence restarts from MAX(seq) on open.
    let events = sqlx::query("DELETE FROM events WHERE received_at_ms < $1 AND seq < $2")
        .bind(cutoff_ms)
        .bind(head as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let calls = sqlx::query("DELETE FROM calls WHERE updated_at_ms < $1")
        .bind(cutoff_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok((events, calls))
}
