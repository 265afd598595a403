//! The one mapping from the sidecar's errors to gRPC statuses. Every variant
//! is named, so a new error kind has to be placed here on purpose: a client
//! must be able to tell "retry later" (UNAVAILABLE) from "this will not get
//! better by retrying" (INTERNAL, DATA_LOSS) and from its own mistakes
//! (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS; ABORTED for a settings
//! change based on a stale version, FAILED_PRECONDITION for one that needs
//! force). Server-side failures are logged here with their cause; the client
//! gets a sentence it can act on.
//!
//! A message quotes at most a short excerpt of client input ([`excerpt`],
//! [`invalid_input`]): a status travels in a header, and a huge value echoed
//! back would exceed the client's metadata limit and hide the reason.

use std::fmt::Display;

use tonic::Status;

use crate::{fanout::SubscribeError, settings::SettingsError, store::StoreError};

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        store_status(&e)
    }
}

fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::BadPageToken => {
            Status::invalid_argument("page_token is not one this server handed out")
        }
        StoreError::Database(error) => database(error),
        StoreError::Write(reason) => {
            tracing::error!(%reason, "database write failed");
            Status::unavailable(format!(
                "writing to the database failed ({reason}); nothing was changed, try again"
            ))
        }
        StoreError::Refused(reason) => {
            tracing::error!(%reason, "database refused a write");
            Status::internal(format!(
                "the database refused the write ({reason}); nothing was changed"
            ))
        }
        StoreError::Read(reason) => {
            tracing::error!(%reason, "database read failed");
            Status::unavailable(format!("reading the database failed ({reason}); try again"))
        }
        StoreError::WriterClosed => {
            Status::unavailable("the sidecar is shutting down; nothing was changed")
        }
        StoreError::QueueFull => Status::unavailable(
            "the event writer's queue is full (is storage failing?); nothing was changed",
        ),
        StoreError::Corrupt(reason) => {
            tracing::error!(%reason, "stored data cannot be decoded");
            Status::data_loss(format!(
                "stored data cannot be decoded ({reason}); retrying will not help, \
                     check the database"
            ))
        }
        StoreError::Open { path, reason } | StoreError::Unreachable { path, reason } => {
            tracing::error!(%path, %reason, "database cannot be opened");
            Status::unavailable(format!("the database {path} cannot be opened: {reason}"))
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
        // These messages may quote what the client sent.
        match e {
            SettingsError::Invalid(m) => Status::invalid_argument(bounded(m)),
            SettingsError::NotFound(m) => Status::not_found(bounded(m)),
            SettingsError::AlreadyExists(m) => Status::already_exists(bounded(m)),
            SettingsError::NeedsForce(m) => Status::failed_precondition(bounded(m)),
            e @ SettingsError::Stale { .. } => Status::aborted(bounded(e.to_string())),
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

impl From<crate::settings::RepositoryError> for Status {
    fn from(e: crate::settings::RepositoryError) -> Status {
        match e.inner::<StoreError>() {
            Some(store) => store_status(store),
            None => Status::internal(bounded(e.to_string())),
        }
    }
}

impl From<SubscribeError> for Status {
    fn from(e: SubscribeError) -> Status {
        match e {
            SubscribeError::ShuttingDown => Status::unavailable(
                "the sidecar is shutting down; reconnect and resume with after_seq",
            ),
            SubscribeError::BeyondHead { after_seq, head } => {
                tracing::warn!(
                    after_seq,
                    head,
                    "subscriber refused: resume point beyond the newest event"
                );
                Status::out_of_range(e.to_string())
            }
            SubscribeError::TooManySubscribers { limit } => Status::resource_exhausted(format!(
                "the sidecar already serves {limit} event subscribers, its limit \
                 (--max-subscribers); try again later"
            )),
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

/// The most characters of one client value an error message quotes.
pub(crate) const EXCERPT_CHARS: usize = 64;
/// The most characters of a message that may quote client input.
const MESSAGE_CHARS: usize = 2048;

/// Client input as an error message may quote it: whole when short, else
/// its first [`EXCERPT_CHARS`] characters, "…" and its length.
pub(crate) fn excerpt(input: &str) -> String {
    match input.char_indices().nth(EXCERPT_CHARS) {
        None => input.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes)", &input[..cut], input.len()),
    }
}

/// INVALID_ARGUMENT: `what` (e.g. "number filter") refused for `reason`,
/// which may quote `input` whole; a long input is quoted as its
/// [`excerpt`], and the message is bounded whatever the reason says.
pub(crate) fn invalid_input(what: &str, input: &str, reason: impl Display) -> Status {
    let mut reason = reason.to_string();
    for quoted in [input, input.trim()] {
        if quoted.chars().count() > EXCERPT_CHARS {
            reason = reason.replace(quoted, &excerpt(quoted));
        }
    }
    Status::invalid_argument(bounded(format!("{what}: {reason}")))
}

/// `message` cut to [`MESSAGE_CHARS`] characters.
fn bounded(message: String) -> String {
    match message.char_indices().nth(MESSAGE_CHARS) {
        None => message,
        Some((cut, _)) => format!("{}… (message cut)", &message[..cut]),
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
        let status = Status::from(SettingsError::Store(crate::settings::RepositoryError::new(
            StoreError::Corrupt("x".into()),
        )));
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
        assert_eq!(
            Status::from(SubscribeError::TooManySubscribers { limit: 3 }).code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn a_resume_point_beyond_the_head_names_the_head() {
        let status = Status::from(SubscribeError::BeyondHead {
            after_seq: 1200,
            head: 950,
        });
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(
            status.message(),
            "after_seq 1200 is beyond the newest event (seq 950): this log was restored \
             or replaced; resume from 950 or earlier"
        );
    }

    #[test]
    fn client_input_is_quoted_as_a_short_excerpt() {
        assert_eq!(excerpt("4930123"), "4930123");
        let huge = "9".repeat(3 << 20);
        let short = excerpt(&huge);
        assert!(short.starts_with(&"9".repeat(EXCERPT_CHARS)));
        assert!(short.ends_with("… (3145728 bytes)"), "{short}");
        // Cut on a character boundary.
        assert_eq!(
            excerpt(&"ä".repeat(100))
                .chars()
                .take_while(|c| *c == 'ä')
                .count(),
            64
        );

        let status = invalid_input(
            "number filter",
            &huge,
            format!("'{huge}' has too many digits"),
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() < 200, "{}", status.message());
        assert!(status.message().ends_with("bytes)' has too many digits"));

        let settings = Status::from(SettingsError::Invalid(format!("pattern '{huge}' is bad")));
        assert!(settings.message().chars().count() < MESSAGE_CHARS + 20);
    }
}
