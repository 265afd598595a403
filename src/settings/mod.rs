//! Settings: validation of what an admin types, the edits an admin can make,
//! Zammad import/export, and the live snapshot the webhook handler decides from.

pub mod change;
pub mod manager;
pub mod validate;
pub mod zammad;

pub use change::Change;
pub use manager::SettingsManager;

use crate::store::StoreError;

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
    #[error("settings could not be stored: {0}")]
    Store(#[from] StoreError),
}
