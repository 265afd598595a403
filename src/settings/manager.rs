//! The live settings: an immutable snapshot the webhook handler reads without
//! locking, replaced atomically after every stored change. Changes are
//! serialised, checked against the version they were based on, validated
//! before anything is written, stored with an audit entry (which keeps the
//! whole settings before and after) in one short transaction, and only then
//! published. The copying, checking, flows compiling and JSON encoding run
//! on a blocking thread, so a large import does not stall the async workers
//! that answer webhooks. Storage is a [`SettingsRepository`]: the manager
//! never names a backend.

use std::{collections::HashSet, path::PathBuf, sync::Arc};

use arc_swap::ArcSwap;

use super::{
    AuditEntry, AuditRecord, Change, Content, RepositoryError, SavedChange, Settings, SettingsDiff,
    SettingsError, SettingsRepository, validate, zammad::ZammadExtras,
};
use crate::flows::{self, Compiled, Files, Flows, menu::MenuKey};

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

/// A stored change: the settings as stored, their compiled flows, and
/// what the flows warn about (rules that can never fire).
pub struct Updated {
    pub settings: Arc<Settings>,
    pub flows: Option<Arc<Flows>>,
    pub warnings: Vec<String>,
}

/// The published state: what webhooks decide from, plus what export shows.
pub struct Live {
    pub settings: Arc<Settings>,
    /// The compiled call flows of `settings.flows`.
    pub flows: Option<Arc<Flows>>,
    zammad: ZammadExtras,
    /// `Content` of this state as JSON: the next change's "before".
    json: Arc<str>,
}

pub struct SettingsManager {
    repo: Arc<dyn SettingsRepository>,
    current: ArcSwap<Live>,
    write_lock: tokio::sync::Mutex<()>,
    country_code: String,
    /// Where call-flow announcement and iCalendar files are read from.
    announcements_dir: Option<PathBuf>,
    menu_key: MenuKey,
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

/// The flows of `next` compiled, when they differ from `base`'s: an
/// invalid document refuses the change.
fn next_flows(
    country_code: &str,
    dir: Option<&std::path::Path>,
    base: &Live,
    next: &Content,
) -> Result<(Option<Arc<Flows>>, Vec<String>), SettingsError> {
    if next.flows == base.settings.flows {
        return Ok((base.flows.clone(), Vec::new()));
    }
    let Some(text) = &next.flows else {
        return Ok((None, Vec::new()));
    };
    let files = dir.map_or(Files::None, Files::Dir);
    let compiled = flows::compile(text, country_code, files)
        .map_err(|e| SettingsError::Invalid(e.to_string()))?;
    Ok((Some(Arc::new(compiled.flows)), compiled.warnings))
}

impl SettingsManager {
    pub async fn load(
        repo: Arc<dyn SettingsRepository>,
        country_code: String,
        announcements_dir: Option<PathBuf>,
    ) -> Result<Self, RepositoryError> {
        let settings = repo.load_settings().await?;
        let zammad: ZammadExtras = match repo.load_zammad_extras().await? {
            Some(json) => serde_json::from_str(&json)?,
            None => ZammadExtras::default(),
        };
        let menu_key = MenuKey::new(repo.menu_key().await?);
        let manager = SettingsManager {
            repo,
            current: ArcSwap::from_pointee(Live {
                settings: Arc::new(Settings::default()),
                flows: None,
                zammad: ZammadExtras::default(),
                json: encode(&Content::default()),
            }),
            write_lock: tokio::sync::Mutex::new(()),
            country_code,
            announcements_dir,
            menu_key,
        };
        let flows = manager.compile_stored(settings.flows.as_deref()).await;
        let json = encode(&Content::new(&settings, zammad.clone()));
        manager.current.store(Arc::new(Live {
            settings: Arc::new(settings),
            flows,
            zammad,
            json,
        }));
        Ok(manager)
    }

    /// Compiles `text` as a change would: every file read and checked.
    pub async fn check_flows(&self, text: String) -> Result<Compiled, SettingsError> {
        let country_code = self.country_code.clone();
        let dir = self.announcements_dir.clone();
        tokio::task::spawn_blocking(move || {
            let files = dir.as_deref().map_or(Files::None, Files::Dir);
            flows::compile(&text, &country_code, files)
        })
        .await
        .map_err(|e| SettingsError::Invalid(format!("the call flows could not be checked: {e}")))?
        .map_err(|e| SettingsError::Invalid(e.to_string()))
    }

    /// Compiles the stored flows at start or after another replica's
    /// change. They were valid when set; a file that has gone since is
    /// logged loudly and its announcement left out, and the rules still
    /// apply.
    async fn compile_stored(&self, text: Option<&str>) -> Option<Arc<Flows>> {
        let text = text?.to_string();
        match self.check_flows(text.clone()).await {
            Ok(compiled) => Some(Arc::new(compiled.flows)),
            Err(error) => {
                tracing::error!(
                    %error,
                    "the stored call flows do not compile with the files here; \
                     their rules apply without the announcements that fail"
                );
                let cc = self.country_code.clone();
                tokio::task::spawn_blocking(move || flows::compile(&text, &cc, Files::Unchecked))
                    .await
                    .ok()?
                    .ok()
                    .map(|c| Arc::new(c.flows))
            }
        }
    }

    /// Re-reads the stored settings and publishes them when their version
    /// differs from the snapshot's: a change another process stored on the
    /// same database (PostgreSQL replicas). Returns whether it changed.
    pub async fn reload(&self) -> Result<bool, RepositoryError> {
        let _guard = self.write_lock.lock().await;
        self.reload_locked().await
    }

    async fn reload_locked(&self) -> Result<bool, RepositoryError> {
        let settings = self.repo.load_settings().await?;
        let current = self.current.load_full();
        if settings.version == current.settings.version {
            return Ok(false);
        }
        let zammad: ZammadExtras = match self.repo.load_zammad_extras().await? {
            Some(json) => serde_json::from_str(&json)?,
            None => ZammadExtras::default(),
        };
        let flows = if settings.flows == current.settings.flows {
            current.flows.clone()
        } else {
            self.compile_stored(settings.flows.as_deref()).await
        };
        let json = encode(&Content::new(&settings, zammad.clone()));
        tracing::info!(
            version = settings.version,
            "settings changed by another replica"
        );
        self.current.store(Arc::new(Live {
            settings: Arc::new(settings),
            flows,
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
        let mut changes = self.repo.settings_changes()?;
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

    /// Settings and compiled flows in effect now, as one consistent state.
    pub fn live(&self) -> Arc<Live> {
        self.current.load_full()
    }

    /// The key menu state in callback URLs is signed with.
    pub fn menu_key(&self) -> &MenuKey {
        &self.menu_key
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
    ) -> Result<Vec<AuditEntry>, RepositoryError> {
        self.repo.list_audit(limit, before_id).await
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
        let mut warnings = match &change {
            Change::ImportZammad(imported) => imported.warnings.clone(),
            _ => Vec::new(),
        };
        let (country_code, dir) = (self.country_code.clone(), self.announcements_dir.clone());
        tokio::task::spawn_blocking(move || {
            let before = Content::new(&current.settings, current.zammad.clone());
            let mut next = before.clone();
            change.apply(&mut next)?;
            let (_, flow_warnings) = next_flows(&country_code, dir.as_deref(), &current, &next)?;
            warnings.extend(flow_warnings);
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
        Ok(self
            .update_reporting(client, change, precondition)
            .await?
            .settings)
    }

    /// [`update_checked`](Self::update_checked), answering also with the
    /// flows compiled for the stored settings and what they warn about.
    pub async fn update_reporting(
        &self,
        client: &str,
        change: Change,
        precondition: Precondition,
    ) -> Result<Updated, SettingsError> {
        let _guard = self.write_lock.lock().await;
        if self.repo.settings_changes().is_some() {
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
        let (country_code, dir) = (self.country_code.clone(), self.announcements_dir.clone());
        let (next, next_json, extras_json, flows, warnings) =
            tokio::task::spawn_blocking(move || {
                let mut next = Content::new(&base.settings, base.zammad.clone());
                change.apply(&mut next)?;
                let reasons = needs_force(&base.settings, &next);
                if !precondition.force && !reasons.is_empty() {
                    return Err(force_error(&reasons));
                }
                let (flows, warnings) = next_flows(&country_code, dir.as_deref(), &base, &next)?;
                let extras_json = (next.zammad != base.zammad)
                    .then(|| serde_json::to_string(&next.zammad).expect("extras serialise"));
                let next_json = encode(&next);
                Ok::<_, SettingsError>((next, next_json, extras_json, flows, warnings))
            })
            .await
            .map_err(|e| {
                SettingsError::Invalid(format!("the change could not be applied: {e}"))
            })??;
        let settings = next.settings(current.settings.version);
        let stored = Arc::new(
            self.repo
                .save_settings_change(SavedChange {
                    settings: &settings,
                    previous: Some(&current.settings),
                    zammad_extras: extras_json.as_deref(),
                    audit: &audit,
                    content: Some((&current.json, &next_json)),
                })
                .await?,
        );
        self.current.store(Arc::new(Live {
            settings: stored.clone(),
            flows: flows.clone(),
            zammad: next.zammad,
            json: next_json,
        }));
        tracing::info!(action, client, version = stored.version, "settings changed");
        Ok(Updated {
            settings: stored,
            flows,
            warnings,
        })
    }

    /// The change that puts back the settings from before audit entry `id`
    /// (the newest entry when `None`).
    pub async fn restore_change(&self, id: Option<u64>) -> Result<Change, SettingsError> {
        let Some((audit_id, before)) = self.repo.audit_settings_before(id).await? else {
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
            .map_err(RepositoryError::from)?;
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
        let manager = SettingsManager::load(Arc::new(harness.store.clone()), "49".into(), None)
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
