//! Settings: validation of what an admin types, the edits an admin can make,
//! Zammad import/export, and the live snapshot the webhook handler decides from.

pub mod change;
pub mod content;
pub mod manager;
mod model;
mod repository;
pub mod ruby;
pub mod validate;
pub mod zammad;

pub use change::Change;
pub use content::{Content, SettingsDiff};
pub use manager::{Precondition, SettingsManager};
pub use model::{BlockEntry, RoutingRule, Settings};
pub use repository::{
    AuditEntry, AuditRecord, RepositoryError, SavedChange, SettingsRepository,
};

/// At most this many block-list entries, so validation, storage and the
/// per-call match stay bounded.
pub const MAX_BLOCK_ENTRIES: usize = 10_000;
/// At most this many routing rules.
pub const MAX_ROUTING_RULES: usize = 10_000;
/// How much of an offending input an error message repeats.
pub const ECHO_CHARS: usize = 64;

/// The first `max` characters of `input`, with "…" when there were more:
/// errors name what was wrong without sending a huge input back.
pub fn clip(input: &str, max: usize) -> String {
    match input.char_indices().nth(max) {
        None => input.to_string(),
        Some((at, _)) => format!("{}…", &input[..at]),
    }
}

/// [`clip`] at [`ECHO_CHARS`].
pub fn shown(input: &str) -> String {
    clip(input, ECHO_CHARS)
}

/// Why a settings change was not made. Nothing was stored in any case.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The change is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The entry to change does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The entry exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The change would block every caller or nearly; it needs `force`.
    #[error("{0}")]
    NeedsForce(String),
    /// The change was based on an older settings version.
    #[error(
        "the settings changed meanwhile: they are at version {current}, the change was based on version {expected}; read them again and repeat the change"
    )]
    Stale { expected: u64, current: u64 },
    #[error("settings could not be stored: {0}")]
    Store(#[from] RepositoryError),
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_keeps_short_input_and_marks_cut_input() {
        assert_eq!(clip("4930", 64), "4930");
        assert_eq!(clip("äöüß", 2), "äö…");
        assert_eq!(clip(&"1".repeat(100), 64).chars().count(), 65);
    }
}
