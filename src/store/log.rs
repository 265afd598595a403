//! Reads of the event log and the call log.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::{QueryBuilder, Sqlite};

use crate::calls::CallRecord;
use crate::paging;

#[cfg(test)]
use super::StoredEvent;
use super::{CallQuery, SqliteStore, StoreError, WireEvent, pages, rows};

/// One page of the event log, bounded in events and in bytes.
#[derive(Debug, Default)]
pub(crate) struct EventPage {
    pub events: Vec<WireEvent>,
    /// The page ends at the newest event stored when it was read, not at a
    /// limit: a next page would have held only events committed since.
    pub at_head: bool,
}

impl SqliteStore {
    /// Events with seq > `after_seq`, ascending, a page of at most `limit`
    /// as [`paging::EVENTS`] clamps it, whatever their size (tests; readers
    /// for clients use [`Store::event_page`]).
    #[cfg(test)]
    pub(crate) async fn events_after(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        rows::events_after(&self.inner.pool, after_seq, paging::EVENTS.clamp(limit)).await
    }

    /// Events with seq > `after_seq`, ascending, in their wire form: at
    /// most `limit` of them (0 = [`paging::EVENTS`]' default; a transport
    /// clamps what a client asks for) and at most `max_bytes` of them, but
    /// always the first one, however large. Only the rows of the page are
    /// loaded, so a large page costs what it holds.
    pub(crate) async fn event_page(
        &self,
        after_seq: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<EventPage, StoreError> {
        let limit = if limit == 0 {
            paging::EVENTS.default
        } else {
            limit
        };
        pages::read(&self.inner.pool, after_seq, limit, max_bytes).await
    }

    /// The highest stored sequence number, 0 when the log is empty.
    pub(crate) async fn head_seq(&self) -> Result<u64, StoreError> {
        rows::head_seq(&self.inner.pool).await
    }

    pub(crate) async fn get_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        rows::load_call(&self.inner.pool, call_id).await
    }

    /// Calls newest first (by initialized_at, ties by call_id) and the token
    /// for the next page (`None` on the last page).
    pub(crate) async fn list_calls(
        &self,
        q: &CallQuery,
    ) -> Result<(Vec<CallRecord>, Option<String>), StoreError> {
        let limit = paging::CALLS.clamp(q.limit);
        let cursor = match q.page_token.as_deref() {
            None | Some("") => None,
            Some(token) => Some(decode_page_token(token)?),
        };

        let mut sql = QueryBuilder::<Sqlite>::new("SELECT record, wire FROM calls WHERE 1 = 1");
        if let Some(direction) = q.direction {
            sql.push(" AND direction = ").push_bind(direction.as_str());
        }
        if let Some(done) = q.done {
            sql.push(" AND done = ").push_bind(done);
        }
        if let Some(state) = q.state {
            sql.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(number) = q.number.as_deref().filter(|n| !n.is_empty()) {
            sql.push(" AND (from_number = ")
                .push_bind(number)
                .push(" OR to_number = ")
                .push_bind(number)
                .push(")");
        }
        if let Some((at_ms, call_id)) = cursor {
            sql.push(" AND (initialized_at_ms < ")
                .push_bind(at_ms)
                .push(" OR (initialized_at_ms = ")
                .push_bind(at_ms)
                .push(" AND call_id < ")
                .push_bind(call_id)
                .push("))");
        }
        sql.push(" ORDER BY initialized_at_ms DESC, call_id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);

        let records: Vec<(String, Option<Vec<u8>>)> =
            sql.build_query_as().fetch_all(&self.inner.pool).await?;
        let mut calls = records
            .into_iter()
            .map(|(record, wire)| rows::call_of(&record, wire.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if calls.len() > limit as usize {
            calls.truncate(limit as usize);
            calls
                .last()
                .map(|c| encode_page_token(c.initialized_at_ms, &c.call_id))
        } else {
            None
        };
        Ok((calls, next))
    }
}

pub(super) fn encode_page_token(initialized_at_ms: i64, call_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{initialized_at_ms}:{call_id}"))
}

pub(super) fn decode_page_token(token: &str) -> Result<(i64, String), StoreError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| StoreError::BadPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::BadPageToken)?;
    let (at_ms, call_id) = text.split_once(':').ok_or(StoreError::BadPageToken)?;
    let at_ms = at_ms.parse().map_err(|_| StoreError::BadPageToken)?;
    Ok((at_ms, call_id.to_owned()))
}
