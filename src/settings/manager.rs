//! The live settings: an immutable snapshot the webhook handler reads without
//! locking, replaced atomically after every stored change. Changes are
//! serialised, checked against the version they were based on, validated
//! before anything is written, stored with an audit entry (which keeps the
//! whole settings before and after) in one short transaction, and only then
//! published. The copying, checking and JSON encoding run on a blocking
//! thread, so a large import does not stall the async workers that answer
//! webhooks.

use std::{collections::HashSet, sync::Arc};

use arc_swap::ArcSwap;

use super::{Change, Content, SettingsDiff, SettingsError, validate, zammad::ZammadExtras};
use crate::{
    decide::Settings,
    store::{AuditEntry, AuditRecord, Store, StoreError},
};

/// What a mutating request asks to hold before it is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Precondition {
    /// The settings version the change was based on; `None` = no check.
    pub expected_version: Option<u64>,
    /// Allow block patterns that block a whole country or everyone.
    pub force: bool,
}

/// What a change would do, without storing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The version the preview was computed against.
    pub base_version: u64,
    pub diff: SettingsDiff,
    /// Why the change needs `force` (empty when it does not).
    pub needs_force: Vec<String>,
    pub warnings: Vec<String>,
}

/// The published state: what webhooks decide from, plus what export shows.
struct Current {
    settings: Arc<Settings>,
    zammad: ZammadExtras,
    /// `Content` of this state as JSON: the next change's "before".
    json: Arc<str>,
}

pub struct SettingsManager {
    store: Store,
    current: ArcSwap<Current>,
    write_lock: tokio::sync::Mutex<()>,
    country_code: String,
}

fn encode(content: &Content) -> Arc<str> {
    serde_json::to_string(content)
        .expect("settings always serialise")
        .into()
}

/// Block patterns in `next` that block a country or more and are not
/// already on `current`'s list: adding one needs `force`.
fn needs_force(current: &Settings, next: &Content) -> Vec<String> {
    let existing: HashSet<&str> = current
        .block_list
        .iter()
        .map(|b| b.pattern.as_str())
        .collect();
    next.block_list
        .iter()
        .filter(|b| !existing.contains(b.pattern.as_str()))
        .filter_map(|b| validate::blocks_too_many(&b.pattern))
        .collect()
}

fn force_error(reasons: &[String]) -> SettingsError {
    let more = match reasons.len() {
        1 => String::new(),
        n => format!(" (and {} more such patterns)", n - 1),
    };
    SettingsError::NeedsForce(format!(
        "{}{more}; repeat with --force if that is what you want",
        reasons[0]
    ))
}

impl SettingsManager {
    pub async fn load(store: Store, country_code: String) -> Result<Self, StoreError> {
        let settings = store.load_settings().await?;
        let zammad: ZammadExtras = match store.load_zammad_extras().await? {
            Some(json) => serde_json::from_str(&json)?,
            None => ZammadExtras::default(),
        };
        let json = encode(&Content::new(&settings, zammad.clone()));
        Ok(SettingsManager {
            store,
            current: ArcSwap::from_pointee(Current {
                settings: Arc::new(settings),
                zammad,
                json,
            }),
            write_lock: tokio::sync::Mutex::new(()),
            country_code,
        })
    }

    /// Re-reads the stored settings and publishes them when their version
    /// differs from the snapshot's: a change another process stored on the
    /// same database (PostgreSQL replicas). Returns whether it changed.
    pub async fn reload(&self) -> Result<bool, StoreError> {
        let _guard = self.write_lock.lock().await;
        self.reload_locked().await
    }

    async fn reload_locked(&self) -> Result<bool, StoreError> {
        let settings = self.store.load_settings().await?;
        if settings.version == self.current.load().settings.version {
            return Ok(false);
        }
        let zammad: ZammadExtras = match self.store.load_zammad_extras().await? {
            Some(json) => serde_json::from_str(&json)?,
            None => ZammadExtras::default(),
        };
        let json = encode(&Content::new(&settings, zammad.clone()));
        tracing::info!(
            version = settings.version,
            "settings changed by another replica"
        );
        self.current.store(Arc::new(Current {
            settings: Arc::new(settings),
            zammad,
            json,
        }));
        Ok(true)
    }

    /// Keeps the snapshot in step with changes other processes store on the
    /// same database, until `shutdown`: each is applied as soon as its
    /// notification arrives. Nothing to follow (`None`) on SQLite.
    pub fn follow_store(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut changes = self.store.settings_changes()?;
        let manager = self.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                let mut wait = std::time::Duration::from_millis(100);
                while let Err(error) = manager.reload().await {
                    tracing::warn!(%error, "reloading the settings failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
            }
        }))
    }

    /// The settings in effect now. Lock-free; cheap enough for every request.
    pub fn snapshot(&self) -> Arc<Settings> {
        self.current.load().settings.clone()
    }

    /// Everything an admin set, with the version, as one consistent state.
    pub fn content(&self) -> (Content, u64) {
        let current = self.current.load();
        (
            Content::new(&current.settings, current.zammad.clone()),
            current.settings.version,
        )
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

    /// [`update_checked`](Self::update_checked) without preconditions.
    pub async fn update(
        &self,
        client: &str,
        change: Change,
    ) -> Result<Arc<Settings>, SettingsError> {
        self.update_checked(client, change, Precondition::default())
            .await
    }

    /// What `change` would do to the current settings; stores nothing.
    pub async fn preview(&self, change: Change) -> Result<Preview, SettingsError> {
        let current = self.current.load_full();
        let warnings = match &change {
            Change::ImportZammad(imported) => imported.warnings.clone(),
            _ => Vec::new(),
        };
        tokio::task::spawn_blocking(move || {
            let before = Content::new(&current.settings, current.zammad.clone());
            let mut next = before.clone();
            change.apply(&mut next)?;
            Ok(Preview {
                base_version: current.settings.version,
                diff: before.diff(&next),
                needs_force: needs_force(&current.settings, &next),
                warnings,
            })
        })
        .await
        .map_err(|e| SettingsError::Invalid(format!("the change could not be checked: {e}")))?
    }

    /// Applies `change` to a copy of the current settings, stores the result
    /// with an audit entry and publishes it. A change that fails (stale
    /// version, invalid, needs force, storage error) leaves the stored and
    /// the live settings untouched.
    pub async fn update_checked(
        &self,
        client: &str,
        change: Change,
        precondition: Precondition,
    ) -> Result<Arc<Settings>, SettingsError> {
        let _guard = self.write_lock.lock().await;
        if self.store.settings_changes().is_some() {
            // Other processes change the same settings: start from what is stored.
            self.reload_locked().await?;
        }
        let current = self.current.load_full();
        if let Some(expected) = precondition.expected_version
            && expected != current.settings.version
        {
            return Err(SettingsError::Stale {
                expected,
                current: current.settings.version,
            });
        }
        let action = change.action();
        let audit = AuditRecord {
            at_ms: crate::now_ms(),
            client: client.to_string(),
            action: action.to_string(),
            detail: change.detail().to_string(),
        };
        let base = current.clone();
        let (next, next_json, extras_json) = tokio::task::spawn_blocking(move || {
            let mut next = Content::new(&base.settings, base.zammad.clone());
            change.apply(&mut next)?;
            let reasons = needs_force(&base.settings, &next);
            if !precondition.force && !reasons.is_empty() {
                return Err(force_error(&reasons));
            }
            let extras_json = (next.zammad != base.zammad)
                .then(|| serde_json::to_string(&next.zammad).expect("extras serialise"));
            let next_json = encode(&next);
            Ok((next, next_json, extras_json))
        })
        .await
        .map_err(|e| SettingsError::Invalid(format!("the change could not be applied: {e}")))??;
        let settings = next.settings(current.settings.version);
        let stored = Arc::new(
            self.store
                .save_settings_change(
                    &settings,
                    Some(&current.settings),
                    extras_json.as_deref(),
                    &audit,
                    Some((&current.json, &next_json)),
                )
                .await?,
        );
        self.current.store(Arc::new(Current {
            settings: stored.clone(),
            zammad: next.zammad,
            json: next_json,
        }));
        tracing::info!(action, client, version = stored.version, "settings changed");
        Ok(stored)
    }

    /// The change that puts back the settings from before audit entry `id`
    /// (the newest entry when `None`).
    pub async fn restore_change(&self, id: Option<u64>) -> Result<Change, SettingsError> {
        let Some((audit_id, before)) = self.store.audit_settings_before(id).await? else {
            return Err(SettingsError::NotFound(match id {
                Some(id) => format!("there is no audit entry {id}"),
                None => "there is no settings change to undo".to_string(),
            }));
        };
        let Some(before) = before else {
            return Err(SettingsError::NotFound(format!(
                "audit entry {audit_id} was written by an older version that did not keep \
                 the settings before the change; it cannot be undone"
            )));
        };
        let content: Content = tokio::task::spawn_blocking(move || serde_json::from_str(&before))
            .await
            .map_err(|e| SettingsError::Invalid(format!("audit entry could not be read: {e}")))?
            .map_err(StoreError::from)?;
        Ok(Change::Restore {
            audit_id,
            content: Box::new(content),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::Harness;

    async fn manager() -> (Harness, SettingsManager) {
        let harness = Harness::new(16).await;
        let manager = SettingsManager::load(harness.store.clone(), "49".into())
            .await
            .unwrap();
        (harness, manager)
    }

    #[tokio::test]
    async fn a_stale_version_is_refused_and_nothing_changes() {
        let (_h, m) = manager().await;
        let add = |p: &str| Change::add_block(p, "", "49").unwrap();
        m.update("t", add("4930123")).await.unwrap();
        let stale = Precondition {
            expected_version: Some(0),
            force: false,
        };
        let e = m
            .update_checked("t", add("4940123"), stale)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                SettingsError::Stale {
                    expected: 0,
                    current: 1
                }
            ),
            "{e:?}"
        );
        assert_eq!(m.snapshot().block_list.len(), 1);
        let fresh = Precondition {
            expected_version: Some(1),
            force: false,
        };
        assert_eq!(
            m.update_checked("t", add("4940123"), fresh)
                .await
                .unwrap()
                .version,
            2
        );
    }

    #[tokio::test]
    async fn blocking_a_country_needs_force_and_undo_restores_the_before() {
        let (_h, m) = manager().await;
        let broad = || Change::add_block("49*", "", "49").unwrap();
        let e = m.update("t", broad()).await.unwrap_err();
        assert!(
            matches!(&e, SettingsError::NeedsForce(m) if m.contains("pattern 49* blocks every call from Germany; repeat with --force")),
            "{e}"
        );
        assert_eq!(m.snapshot().version, 0);
        let forced = Precondition {
            expected_version: None,
            force: true,
        };
        m.update_checked("t", broad(), forced).await.unwrap();
        assert_eq!(m.snapshot().block_list.len(), 1);

        let undo = m.restore_change(None).await.unwrap();
        let restored = m.update("t", undo).await.unwrap();
        assert!(restored.block_list.is_empty());
        assert_eq!(restored.version, 2);
        // Undoing the undo puts 49* back: that blocks Germany again, so it needs force.
        let redo = m.restore_change(None).await.unwrap();
        assert!(matches!(
            m.update("t", redo).await,
            Err(SettingsError::NeedsForce(_))
        ));
        let entries = m.audit(10, None).await.unwrap();
        assert_eq!(entries[0].action, "audit.restore");
    }
}
