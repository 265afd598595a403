//! The live settings: an immutable snapshot the webhook handler reads without
//! locking, replaced atomically after every stored change. Changes are
//! serialised, validated before anything is written, stored with an audit
//! entry in one transaction, and only then published.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Change, SettingsError};
use crate::{
    decide::Settings,
    store::{AuditEntry, AuditRecord, Store, StoreError},
};

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

    /// The audit trail, newest first: at most `limit` entries older than `before_id`.
    pub async fn audit(
        &self,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.list_audit(limit, before_id).await
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
        change: Change,
    ) -> Result<Arc<Settings>, SettingsError> {
        let _guard = self.write_lock.lock().await;
        let mut next = (*self.current.load_full()).clone();
        let action = change.action();
        let audit = AuditRecord {
            at_ms: crate::now_ms(),
            client: client.to_string(),
            action: action.to_string(),
            detail: change.detail().to_string(),
        };
        change.apply(&mut next)?;
        let stored = Arc::new(self.store.save_settings(&next, &audit).await?);
        self.current.store(stored.clone());
        tracing::info!(action, client, version = stored.version, "settings changed");
        Ok(stored)
    }
}
