//! The one mapping from the sidecar's errors to gRPC statuses. Every variant
//! is named, so a new error kind has to be placed here on purpose: a client
//! must be able to tell "retry later" (UNAVAILABLE) from "this will not get
//! better by retrying" (INTERNAL, DATA_LOSS) and from its own mistakes
//! (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS; ABORTED for a settings
//! change based on a stale version, FAILED_PRECONDITION for one that needs
//! force). Server-side failures are logged here with their cause; the client
//! gets a sentence it can act on.

use tonic::Status;

use crate::{fanout::SubscribeError, settings::SettingsError, store::StoreError};

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::BadPageToken => {
                Status::invalid_argument("page_token is not one this server handed out")
            }
            StoreError::Database(error) => database(&error),
            StoreError::Write(reason) => {
                tracing::error!(%reason, "database write failed");
                Status::unavailable(format!(
                    "writing to the database failed ({reason}); nothing was changed, try again"
                ))
            }
            StoreError::WriterClosed => {
                Status::unavailable("the sidecar is shutting down; nothing was changed")
            }
            StoreError::Corrupt(reason) => {
                tracing::error!(%reason, "stored data cannot be decoded");
                Status::data_loss(format!(
                    "stored data cannot be decoded ({reason}); retrying will not help, \
                     check the database"
                ))
            }
            StoreError::Open { path, reason } => {
                tracing::error!(%path, %reason, "database cannot be opened");
                Status::unavailable(format!("the database {path} cannot be opened: {reason}"))
            }
        }
    }
}

/// sqlx errors: the database being busy, gone or full is worth a retry;
/// anything else is a fault a retry does not fix.
fn database(error: &sqlx::Error) -> Status {
    tracing::error!(%error, "database request failed");
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Database(_) => Status::unavailable("the database is unavailable; try again"),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            Status::data_loss("a stored row cannot be decoded; retrying will not help")
        }
        // sqlx::Error is non-exhaustive; the rest are programming errors.
        _ => Status::internal("internal database error; see the server log"),
    }
}

impl From<SettingsError> for Status {
    fn from(e: SettingsError) -> Status {
        match e {
            SettingsError::Invalid(m) => Status::invalid_argument(m),
            SettingsError::NotFound(m) => Status::not_found(m),
            SettingsError::AlreadyExists(m) => Status::already_exists(m),
            SettingsError::NeedsForce(m) => Status::failed_precondition(m),
            e @ SettingsError::Stale { .. } => Status::aborted(e.to_string()),
            SettingsError::Store(e) => {
                let status = Status::from(e);
                Status::new(
                    status.code(),
                    format!("settings not changed: {}", status.message()),
                )
            }
        }
    }
}

impl From<SubscribeError> for Status {
    fn from(e: SubscribeError) -> Status {
        match e {
            SubscribeError::ShuttingDown => Status::unavailable(
                "the sidecar is shutting down; reconnect and resume with after_seq",
            ),
            SubscribeError::Store(e) => {
                let status = Status::from(e);
                Status::new(
                    status.code(),
                    format!(
                        "event catch-up failed: {}; resume with after_seq",
                        status.message()
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn corruption_is_not_reported_as_try_again() {
        let status = Status::from(StoreError::Corrupt("bad json".into()));
        assert_eq!(status.code(), Code::DataLoss);
        assert!(status.message().contains("bad json"));
        let status = Status::from(SettingsError::Store(StoreError::Corrupt("x".into())));
        assert_eq!(status.code(), Code::DataLoss);
        assert!(status.message().starts_with("settings not changed"));
    }

    #[test]
    fn client_mistakes_and_outages_have_their_own_codes() {
        assert_eq!(
            Status::from(StoreError::BadPageToken).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            Status::from(SettingsError::NotFound("no".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(SettingsError::AlreadyExists("dup".into())).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            Status::from(StoreError::WriterClosed).code(),
            Code::Unavailable
        );
        assert_eq!(
            Status::from(SubscribeError::ShuttingDown).code(),
            Code::Unavailable
        );
        assert_eq!(
            Status::from(StoreError::Database(sqlx::Error::PoolTimedOut)).code(),
            Code::Unavailable
        );
    }
}
