//! What the settings manager needs from storage, as a small trait the store
//! implements: the manager never names a backend.

use async_trait::async_trait;

use super::Settings;

/// A storage error, as the repository reports it. The store's own error
/// type is inside; [`RepositoryError::inner`] gives it back to callers
/// that map it (gRPC status codes).
#[derive(Debug)]
pub struct RepositoryError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl RepositoryError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        RepositoryError(Box::new(error))
    }

    /// The error the repository wrapped, as `E` when it is one.
    pub fn inner<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl std::fmt::Display for RepositoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for RepositoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<serde_json::Error> for RepositoryError {
    fn from(error: serde_json::Error) -> Self {
        RepositoryError::new(error)
    }
}

/// A settings change to record: what, when, by which client.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at_ms: i64,
    pub client: String,
    pub action: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: u64,
    pub at_ms: i64,
    pub client: String,
    pub action: String,
    pub detail: String,
}

/// One change as the repository stores it, in one transaction.
#[derive(Clone, Copy)]
pub struct SavedChange<'a> {
    /// The settings after the change (its version is ignored).
    pub settings: &'a Settings,
    /// What this process last saw, so unchanged tables are not rewritten.
    pub previous: Option<&'a Settings>,
    /// Zammad's kept keys (JSON), when they changed.
    pub zammad_extras: Option<&'a str>,
    pub audit: &'a AuditRecord,
    /// The whole settings before and after, as JSON, for an undo.
    pub content: Option<(&'a str, &'a str)>,
}

#[async_trait]
pub trait SettingsRepository: Send + Sync + 'static {
    /// The stored settings, as one consistent snapshot.
    async fn load_settings(&self) -> Result<Settings, RepositoryError>;

    /// Zammad's keys kept with the settings (JSON), if any were stored.
    async fn load_zammad_extras(&self) -> Result<Option<String>, RepositoryError>;

    /// Stores `change` with its audit entry; returns the stored settings
    /// with their new version.
    async fn save_settings_change(
        &self,
        change: SavedChange<'_>,
    ) -> Result<Settings, RepositoryError>;

    /// The settings before audit entry `id` (the newest when `None`): its
    /// id and the JSON kept with it.
    async fn audit_settings_before(
        &self,
        id: Option<u64>,
    ) -> Result<Option<(u64, Option<String>)>, RepositoryError>;

    /// Audit entries newest first: at most `limit` older than `before_id`.
    async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditEntry>, RepositoryError>;

    /// Wakes on every change another process stores on the same database;
    /// `None` where no other process can (SQLite).
    fn settings_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>>;

    /// The key that signs call-flow menu state in callback URLs: made once,
    /// the same for every process on the database.
    async fn menu_key(&self) -> Result<Vec<u8>, RepositoryError>;
}
