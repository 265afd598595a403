//! Leadership among replicas: a session advisory lock held on a connection
//! of its own. It is released when that connection ends (the replica
//! stopped, crashed or lost the database), and another replica takes it
//! at its next attempt.

use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions as _, Connection as _};

use super::PgStore;

pub(crate) struct Leadership {
    store: PgStore,
    key: i64,
    what: &'static str,
    /// The connection that holds the lock or tries to take it.
    connection: Option<PgConnection>,
    held: bool,
}

impl Leadership {
    pub(crate) fn new(store: PgStore, key: i64, what: &'static str) -> Leadership {
        Leadership {
            store,
            key,
            what,
            connection: None,
            held: false,
        }
    }

    /// True when this replica holds the lock now: checks the connection
    /// that holds it, or tries to take it.
    pub(crate) async fn hold(&mut self) -> bool {
        if self.held {
            if let Some(connection) = &mut self.connection
                && connection.ping().await.is_ok()
            {
                return true;
            }
            tracing::warn!(
                what = self.what,
                "lost the leadership: its connection failed"
            );
            self.held = false;
            self.connection = None;
        }
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => match self.store.options().connect().await {
                Ok(connection) => self.connection.insert(connection),
                Err(error) => {
                    tracing::warn!(what = self.what, %error, "cannot connect to take the leadership");
                    return false;
                }
            },
        };
        match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(connection)
            .await
        {
            Ok(true) => {
                tracing::info!(what = self.what, "this replica leads");
                self.held = true;
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(what = self.what, %error, "cannot take the leadership");
                self.connection = None;
                false
            }
        }
    }
}
