//! Opening a PostgreSQL database: the read pool, migrations, and the
//! listener that turns other replicas' notifications into wake-ups.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{EVENTS_CHANNEL, EventsSignal, Inner, PgStore, SETTINGS_CHANNEL, redact};
use crate::store::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Connections in the read pool (the writer and the listener have their own).
const READ_CONNECTIONS: u32 = 4;
/// How long a pool waits for a connection before the request fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Set on every connection:
/// - so a replica that vanished (power loss, a network split) does not keep
///   the write lock or a leadership for long: the server drops a session
///   idle inside a transaction, probes an idle client with TCP keepalives
///   (gone after ~25 s);
/// - so every statement is planned for its own values
///   (`plan_cache_mode = force_custom_plan`). A prepared statement
///   otherwise settles on a generic plan after five runs, and the plan made
///   while the tables were small (a sequential scan for the writer's
///   `= ANY($1)` lookups) stays until the next `ANALYZE`: on a new database
///   every batch then read the whole of `calls` and `events`, and
///   PostgreSQL spent about 0.6 ms of CPU per event instead of 0.1 ms.
const SESSION_SETTINGS: [(&str, &str); 5] = [
    ("idle_in_transaction_session_timeout", "15s"),
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
    ("plan_cache_mode", "force_custom_plan"),
];
/// Wait before the listener tries again after its connection failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// A first connection that failed because the server is not there (yet):
/// no route, refused, timed out, or the server still starting up
/// (`57P03`). A TLS or authentication refusal is not.
fn unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
        sqlx::Error::Tls(_) | sqlx::Error::Configuration(_) => false,
        // A TLS failure may surface as an I/O error carrying rustls' error.
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::InvalidData,
        _ => true,
    }
}

/// A connection to another host that may go in plaintext: `sslmode`
/// `disable`, `allow`, or `prefer` (the default, which falls back to
/// plaintext without a word when the server offers no TLS).
fn plaintext_warning(options: &PgConnectOptions) -> Option<String> {
    use sqlx::postgres::PgSslMode;
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let mode = match options.get_ssl_mode() {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => return None,
    };
    (!local).then(|| {
        format!(
            "the connection to PostgreSQL at {host} may go in plaintext (sslmode={mode}): \
             passwords and call data cross the network readable; add sslmode=verify-full \
             (with sslrootcert=CA.pem for a private CA) or at least sslmode=require to the URL"
        )
    })
}

impl PgStore {
    /// Connects to the database at `url` and applies the migrations (which
    /// take their own lock, so replicas starting together apply them once).
    pub(crate) async fn open(url: &str) -> Result<PgStore, StoreError> {
        let display = redact(url);
        let open_error = |reason: String| StoreError::Open {
            path: display.clone(),
            reason,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| open_error(e.to_string()))?
            .application_name("sipgate-sidecar")
            .options(SESSION_SETTINGS);
        if let Some(warning) = plaintext_warning(&options) {
            let database: &str = &display;
            tracing::warn!(database, "{warning}");
        }
        let mut connection = options.connect().await.map_err(|e| {
            if unreachable(&e) {
                StoreError::Unreachable {
                    path: display.clone(),
                    reason: e.to_string(),
                }
            } else {
                open_error(e.to_string())
            }
        })?;
        MIGRATOR
            .run(&mut connection)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        drop(connection);
        let pool = PgPoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_error(e.to_string()))?;
        // The listener keeps a connection of its own, outside the read pool.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        let mut listener = PgListener::connect_with(&listen_pool)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        listener
            .listen_all([EVENTS_CHANNEL, SETTINGS_CHANNEL])
            .await
            .map_err(|e| open_error(e.to_string()))?;

        let events = Arc::new(EventsSignal::new());
        let (settings_tx, settings) = watch::channel(0);
        let stop = CancellationToken::new();
        tokio::spawn(listen(
            listener,
            events.clone(),
            settings_tx,
            stop.clone(),
            display.clone(),
        ));
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                options,
                display,
                events,
                settings,
                _listener: stop.drop_guard(),
                runtime: tokio::runtime::Handle::current(),
                #[cfg(test)]
                lose_commit_answer: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

/// Forwards notifications until `stop`. A lost connection may have lost
/// notifications with it, so it wakes everything that listens.
async fn listen(
    mut listener: PgListener,
    events: Arc<EventsSignal>,
    settings: watch::Sender<u64>,
    stop: CancellationToken,
    database: String,
) {
    let wake_all = || {
        events.lost();
        settings.send_modify(|n| *n += 1);
    };
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => match notification.channel() {
                EVENTS_CHANNEL => events.announced(notification.payload()),
                SETTINGS_CHANNEL => settings.send_modify(|n| *n += 1),
                _ => {}
            },
            // The connection was lost; the next call reconnects.
            Ok(None) => {
                tracing::warn!(%database, "notification connection lost; reconnecting");
                wake_all();
            }
            Err(error) => {
                tracing::warn!(%database, %error, "notification listener failed; retrying");
                wake_all();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(LISTEN_RETRY) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(url: &str) -> Option<String> {
        plaintext_warning(&PgConnectOptions::from_str(url).unwrap())
    }

    #[test]
    fn plaintext_to_another_host_is_warned_about() {
        let w = warning("postgres://u@db.example.com/x").expect("prefer to a remote host");
        assert!(
            w.contains("sslmode=prefer") && w.contains("db.example.com"),
            "{w}"
        );
        assert!(warning("postgres://u@10.0.0.5/x?sslmode=disable").is_some());
        assert!(warning("postgres://u@db.example.com/x?sslmode=require").is_none());
        assert!(warning("postgres://u@db.example.com/x?sslmode=verify-full").is_none());
        for local in [
            "postgres://u@127.0.0.1/x",
            "postgres://u@localhost/x",
            "postgres://u@[::1]/x",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/x",
        ] {
            assert!(warning(local).is_none(), "{local}");
        }
    }
}
