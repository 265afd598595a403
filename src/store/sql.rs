//! Reads written once for both backends, generic over the database, and
//! the helper for statements built at run time in such code.
//!
//! sqlx's `QueryBuilder` cannot be executed from generic code (its
//! arguments would have to borrow the builder for their own lifetime), so
//! those statements are put together by hand: the SQL in a `String`, the
//! values in the database's own argument list, each placeholder written by
//! it ([`bind`]).

use sqlx::{Arguments, Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::{StoreError, rows::call_of};
use crate::calls::CallRecord;

/// The highest stored sequence number, 0 when the log is empty.
pub(super) async fn head_seq<'e, E, DB>(ex: E) -> Result<u64, StoreError>
where
    E: Executor<'e, Database = DB>,
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    let (head,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM events")
        .fetch_one(ex)
        .await?;
    Ok(head as u64)
}

/// The stored call `call_id`, if any.
pub(super) async fn load_call<'e, E, DB>(
    ex: E,
    call_id: &str,
) -> Result<Option<CallRecord>, StoreError>
where
    E: Executor<'e, Database = DB>,
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
{
    let row: Option<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT record, wire FROM calls WHERE call_id = $1")
            .bind(call_id.to_owned())
            .fetch_optional(ex)
            .await?;
    row.map(|(record, wire)| call_of(&record, wire.as_deref()))
        .transpose()
}

/// Calls not ended whose last sign of life is older than `cutoff_ms`, oldest
/// first: the rows [`crate::calls::is_stale`] holds for, found by index.
pub(super) async fn stale_open_calls<'e, E, DB>(
    ex: E,
    cutoff_ms: i64,
) -> Result<Vec<CallRecord>, StoreError>
where
    E: Executor<'e, Database = DB>,
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
{
    let records: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT record, wire FROM calls \
         WHERE state <> 'hangup' AND initialized_at_ms < $1 AND updated_at_ms < $1 \
         ORDER BY initialized_at_ms, call_id",
    )
    .bind(cutoff_ms)
    .fetch_all(ex)
    .await?;
    records
        .into_iter()
        .map(|(record, wire)| call_of(&record, wire.as_deref()))
        .collect()
}

/// Adds `value` to `args` and its placeholder to `sql`.
pub(super) fn bind<'q, DB, T>(
    sql: &mut String,
    args: &mut DB::Arguments<'q>,
    value: T,
) -> Result<(), StoreError>
where
    DB: Database,
    T: 'q + Encode<'q, DB> + Type<DB>,
{
    args.add(value).map_err(sqlx::Error::Encode)?;
    args.format_placeholder(sql)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    Ok(())
}
