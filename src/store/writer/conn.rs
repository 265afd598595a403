//! What a batch asks of the connection it runs on: the same operations on
//! every backend, each with its own SQL (`sqlite::writer`, `pg::writer`).

use std::future::Future;

use bytes::Bytes;

use crate::calls::CallRecord;
use crate::store::{StoreError, StoredEvent};

/// What a batch reads before it applies its commands: the stored calls and
/// the stored (dedupe key, seq) pairs it asked for.
pub(in crate::store) type Loaded = (Vec<CallRecord>, Vec<(String, u64)>);

/// What a batch writes: the calls it changed (latest state once each) and
/// its events, each with its wire form and dedupe key.
#[derive(Clone, Copy)]
pub(in crate::store) struct BatchRows<'a> {
    pub calls: &'a [CallRecord],
    pub events: &'a [StoredEvent],
    pub wires: &'a [Bytes],
    pub dedupe_keys: &'a [Option<String>],
}

/// The reads and writes of one batch, inside its transaction.
pub(in crate::store) trait BatchConn: Send {
    fn load_call(
        &mut self,
        call_id: &str,
    ) -> impl Future<Output = Result<Option<CallRecord>, StoreError>> + Send;

    /// The stored calls among `call_ids` (in no particular order) and the
    /// stored (dedupe key, seq) pairs among `keys`: what a batch reads
    /// before it applies its commands. On SQLite this also opens the batch's
    /// transaction.
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
    /// the batch's transaction.
    fn store_batch(
        &mut self,
        rows: BatchRows<'_>,
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
