//! The live settings: an immutable snapshot the webhook handler reads without
//! locking, replaced atomically after every stored change. Changes are
//! serialised, validated before anything is written, stored with an audit
//! entry in one transaction, and only then published.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::{
    decide::Settings,
    store::{AuditRecord, Store, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The change is not valid; nothing was stored.
    #[error("{0}")]
    Invalid(String),
    /// The entry to change does not exist; nothing was stored.
    #[error("{0}")]
    NotFound(String),
    /// The entry exists already; nothing was stored.
    #[error("{0}")]
    AlreadyExists(String),
    #[error("settings could not be stored: {0}")]
    Store(#[from] StoreError),
}

pub struct SettingsManager {
    store: Store,
    current: ArcSwap<Settings>,
    write_lock: tokio::sync::Mutex<()>,
    country_code: String,
}

impl SettingsManager {
    pub async fn load(store: Store, country_code: String) -> Result<Self, StoreError> {
        let settings = store.load_settings().await?;
        Ok(SettingsManager {
            store,
            current: ArcSwap::from_pointee(settings),
            write_lock: tokio::sync::Mutex::new(()),
            country_code,
        })
    }

    /// The settings in effect now. Lock-free; cheap enough for every request.
    pub fn snapshot(&self) -> Arc<Settings> {
        self.current.load_full()
    }

    pub fn country_code(&self) -> &str {
        &self.country_code
    }

    /// Applies `change` to a copy of the current settings, stores the result
    /// with an audit entry and publishes it. A change that fails leaves the
    /// stored and the live settings untouched.
    pub async fn update(
        &self,
        client: &str,
        action: &str,
        detail: serde_json::Value,
        change: impl FnOnce(&mut Settings) -> Result<(), SettingsError>,
    ) -> Result<Arc<Settings>, SettingsError> {
        let _guard = self.write_lock.lock().await;
        let mut next = (*self.current.load_full()).clone();
        change(&mut next)?;
        let audit = AuditRecord {
            at_ms: crate::now_ms(),
            client: client.to_string(),
            action: action.to_string(),
            detail: detail.to_string(),
        };
        let stored = Arc::new(self.store.save_settings(&next, &audit).await?);
        self.current.store(stored.clone());
        tracing::info!(action, client, version = stored.version, "settings changed");
        Ok(stored)
    }
}
