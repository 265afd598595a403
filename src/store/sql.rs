//! Statements built at run time, in code generic over the database.
//!
//! sqlx's `QueryBuilder` cannot be executed from such code (its arguments
//! would have to borrow the builder for their own lifetime), so these
//! statements are put together by hand: the SQL in a `String`, the values
//! in the database's own argument list, each placeholder written by it.

use sqlx::{Arguments, Database, Encode, Type};

use super::StoreError;

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
