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
pub use repository::{AuditEntry, AuditRecord, RepositoryError, SavedChange, SettingsRepository};

/// At most this many block-list entries, so validation, storage and the
/// per-call match stay bounded.
pub const MAX_BLOCK_ENTRIES: usize = 10_000;
/// At most this many routing rules.
pub const MAX_ROUTING_RULES: usize = 10_000;
pub use crate::text::{ECHO_CHARS, clip, shown};

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
