//! The writer's view of recent calls, so a repeated or follow-up event costs
//! no read. Every change goes through the writer, so an entry is the stored
//! truth; after a failed transaction the whole cache is dropped.

use std::collections::HashMap;

use super::conn::{BatchConn, Loaded};
use crate::calls::{CallRecord, DEDUPED_KINDS, dedupe_key};
use crate::sipgate::event::EventKind;
use crate::store::StoreError;

/// Entries kept before the cache starts over (a few MB).
const CACHE_LIMIT: usize = 20_000;

#[derive(Default)]
pub(in crate::store) struct CallCache {
    calls: HashMap<String, CachedCall>,
}

pub(super) struct CachedCall {
    /// The call as stored, `None` while unknown.
    pub(super) record: Option<CallRecord>,
    /// Seq of the stored event of each of [`DEDUPED_KINDS`], in that order.
    originals: [Option<u64>; DEDUPED_KINDS.len()],
}

impl CachedCall {
    /// The seq of the stored event of `kind`, which makes another a duplicate.
    pub(super) fn original(&self, kind: EventKind) -> Option<u64> {
        slot(kind).and_then(|i| self.originals[i])
    }

    /// Records that the event of `kind` is stored as `seq`.
    pub(super) fn set_original(&mut self, kind: EventKind, seq: u64) {
        if let Some(i) = slot(kind) {
            self.originals[i] = Some(seq);
        }
    }
}

fn slot(kind: EventKind) -> Option<usize> {
    DEDUPED_KINDS.iter().position(|&k| k == kind)
}

impl CallCache {
    /// The entry of `call_id`, read from the database on first use.
    pub(super) async fn entry(
        &mut self,
        conn: &mut impl BatchConn,
        call_id: &str,
    ) -> Result<&mut CachedCall, StoreError> {
        if !self.calls.contains_key(call_id) {
            let record = conn.load_call(call_id).await?;
            let keys = DEDUPED_KINDS.map(|kind| dedupe_key(kind, call_id));
            let found = conn
                .seqs_by_dedupe_keys(&keys.iter().flatten().cloned().collect::<Vec<_>>())
                .await?;
            let originals = keys.map(|key| {
                found
                    .iter()
                    .find(|(k, _)| Some(k) == key.as_ref())
                    .map(|(_, seq)| *seq)
            });
            self.calls
                .insert(call_id.to_owned(), CachedCall { record, originals });
        }
        Ok(self
            .calls
            .get_mut(call_id)
            .expect("the entry was inserted above"))
    }

    /// Reads every call of `call_ids` not in the cache yet, with its dedupe
    /// keys, in one round trip for all of them (on SQLite the same round trip
    /// opens the batch's transaction): a batch then finds each of its calls
    /// here instead of reading them one by one.
    pub(super) async fn load_missing(
        &mut self,
        conn: &mut impl BatchConn,
        call_ids: &[&str],
    ) -> Result<(), StoreError> {
        let (missing, keys) = self.missing(call_ids);
        let loaded = conn.load_batch(&missing, &keys).await?;
        self.fill(&missing, loaded);
        Ok(())
    }

    /// The calls of `call_ids` not in the cache (sorted, once each) and the
    /// dedupe keys to read with them.
    pub(in crate::store) fn missing<'a>(
        &self,
        call_ids: &[&'a str],
    ) -> (Vec<&'a str>, Vec<String>) {
        let mut missing: Vec<&str> = call_ids
            .iter()
            .copied()
            .filter(|id| !self.calls.contains_key(*id))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let keys: Vec<String> = missing
            .iter()
            .flat_map(|id| DEDUPED_KINDS.map(|kind| dedupe_key(kind, id)))
            .flatten()
            .collect();
        (missing, keys)
    }

    /// Enters what was read for `missing` (see [`CallCache::missing`]): a
    /// call not among the records is not stored yet.
    pub(in crate::store) fn fill(&mut self, missing: &[&str], (records, found): Loaded) {
        let mut records: HashMap<String, CallRecord> = records
            .into_iter()
            .map(|c| (c.call_id.clone(), c))
            .collect();
        let found: HashMap<String, u64> = found.into_iter().collect();
        for &id in missing {
            let originals = DEDUPED_KINDS
                .map(|kind| dedupe_key(kind, id).and_then(|key| found.get(&key).copied()));
            self.calls.insert(
                id.to_owned(),
                CachedCall {
                    record: records.remove(id),
                    originals,
                },
            );
        }
    }

    /// Keeps `call` as the stored state of a call already in the cache.
    pub(super) fn store(&mut self, call: &CallRecord) {
        if let Some(entry) = self.calls.get_mut(&call.call_id) {
            entry.record = Some(call.clone());
        }
    }

    /// Starts over when the cache has grown past its limit.
    pub(in crate::store) fn trim(&mut self) {
        if self.calls.len() > CACHE_LIMIT {
            self.calls.clear();
        }
    }

    /// Forgets every call, after a failed transaction or a purge.
    pub(in crate::store) fn clear(&mut self) {
        self.calls.clear();
    }
}
