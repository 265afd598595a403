//! Reads of the event log and the call log that both backends share.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use crate::calls::CallRecord;
use crate::paging;

use super::sql::{self, bind};
use super::{CallQuery, StoreError, WireEvent};

/// One page of the event log, bounded in events and in bytes.
#[derive(Debug, Default)]
pub(crate) struct EventPage {
    pub events: Vec<WireEvent>,
    /// The page ends at the newest event stored when it was read, not at a
    /// limit: a next page would have held only events committed since.
    pub at_head: bool,
}

/// A page of the call log, newest first (by initialized_at, ties by
/// call_id), and the token for the next page (`None` on the last page).
/// The same SQL on both backends.
pub(super) async fn list_calls<DB>(
    pool: &Pool<DB>,
    q: &CallQuery,
) -> Result<(Vec<CallRecord>, Option<String>), StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
{
    let limit = paging::CALLS.clamp(q.limit);
    let cursor = match q.page_token.as_deref() {
        None | Some("") => None,
        Some(token) => Some(decode_page_token(token)?),
    };

    let mut sql = String::from("SELECT record, wire FROM calls WHERE 1 = 1");
    let mut args = DB::Arguments::default();
    if let Some(direction) = q.direction {
        sql.push_str(" AND direction = ");
        bind(&mut sql, &mut args, direction.as_str().to_owned())?;
    }
    if let Some(done) = q.done {
        sql.push_str(" AND done = ");
        bind(&mut sql, &mut args, done)?;
    }
    if let Some(state) = q.state {
        sql.push_str(" AND state = ");
        bind(&mut sql, &mut args, state.as_str().to_owned())?;
    }
    if let Some(number) = q.number.as_deref().filter(|n| !n.is_empty()) {
        sql.push_str(" AND (from_number = ");
        bind(&mut sql, &mut args, number.to_owned())?;
        sql.push_str(" OR to_number = ");
        bind(&mut sql, &mut args, number.to_owned())?;
        sql.push(')');
    }
    if let Some((at_ms, call_id)) = cursor {
        sql.push_str(" AND (initialized_at_ms < ");
        bind(&mut sql, &mut args, at_ms)?;
        sql.push_str(" OR (initialized_at_ms = ");
        bind(&mut sql, &mut args, at_ms)?;
        sql.push_str(" AND call_id < ");
        bind(&mut sql, &mut args, call_id)?;
        sql.push_str("))");
    }
    sql.push_str(" ORDER BY initialized_at_ms DESC, call_id DESC LIMIT ");
    bind(&mut sql, &mut args, i64::from(limit) + 1)?;

    let records: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as_with(&sql, args).fetch_all(pool).await?;
    let mut calls = records
        .into_iter()
        .map(|(record, wire)| sql::call_of(&record, wire.as_deref()))
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
