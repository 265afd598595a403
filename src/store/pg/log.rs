//! Catch-up pages on PostgreSQL: the sizes first, then the rows of the page.

use super::{PgStore, rows};
use crate::store::backend::PageRequest;
use crate::store::{EventPage, StoreError};

impl PgStore {
    /// Events with seq > `after_seq`, ascending, in their wire form: at
    /// most `limit` of them (not 0: [`crate::store::Store::event_page`] resolves that)
    /// and at most `max_bytes` of them, but always the first one, however
    /// large. Only the rows of the page are loaded, so a large page costs
    /// what it holds.
    pub(super) async fn read_page(&self, page: PageRequest) -> Result<EventPage, StoreError> {
        let PageRequest {
            after_seq,
            limit,
            max_bytes,
        } = page;
        // Sizes first: octet_length() reads a row's length, not its content.
        let sizes: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT seq, octet_length(wire)::BIGINT FROM events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq.min(i64::MAX as u64) as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.inner.pool)
        .await?;
        let mut count = 0;
        let mut bytes = 0usize;
        for &(_, size) in &sizes {
            let size = usize::try_from(size).unwrap_or(0);
            if count > 0 && bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            count += 1;
        }
        let at_head = count == sizes.len() && sizes.len() < limit as usize;
        let Some(&(last, _)) = count.checked_sub(1).and_then(|i| sizes.get(i)) else {
            return Ok(EventPage {
                events: Vec::new(),
                at_head,
            });
        };
        let events = rows::wire_events(&self.inner.pool, after_seq, last as u64).await?;
        Ok(EventPage { events, at_head })
    }
}
