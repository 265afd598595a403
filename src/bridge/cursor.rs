//! A bridge's durable position in the event log: the last sequence number it
//! delivered, in a small file replaced atomically (write, fsync, rename), so a
//! restart repeats at most the one event that was in flight. On PostgreSQL an
//! in-process bridge keeps it in the database instead, so whichever replica
//! leads the bridge next continues from it.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct State {
    after_seq: u64,
}

#[derive(Debug)]
pub struct Cursor {
    path: PathBuf,
    after_seq: Option<u64>,
    /// Kept in this database (row `name` of `bridge_cursors`) rather than
    /// in the file at `path`.
    database: Option<(crate::store::Replicas, String)>,
}

impl Cursor {
    /// Reads the cursor at `path`; a missing file means "never delivered".
    pub fn load(path: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let path = path.into();
        let after_seq = match fs::read_to_string(&path) {
            Ok(text) => {
                let state: State = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "bridge state file {} is damaged; fix or delete it (deleting replays from the start)",
                        path.display()
                    )
                })?;
                Some(state.after_seq)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read bridge state {}", path.display()));
            }
        };
        Ok(Cursor {
            path,
            after_seq,
            database: None,
        })
    }

    /// Reads bridge `name`'s cursor from the database (shared by replicas).
    pub(crate) async fn load_from_database(
        store: crate::store::Replicas,
        name: &str,
    ) -> anyhow::Result<Self> {
        let after_seq = store
            .bridge_cursor(name)
            .await
            .with_context(|| format!("cannot read the cursor of bridge {name}"))?;
        Ok(Cursor {
            path: PathBuf::from(format!("{}#bridge_cursors/{name}", store.path())),
            after_seq,
            database: Some((store, name.to_owned())),
        })
    }

    /// The last delivered sequence number; `None` before the first delivery.
    pub fn after_seq(&self) -> Option<u64> {
        self.after_seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `seq` as delivered, durably.
    pub async fn store(&mut self, seq: u64) -> anyhow::Result<()> {
        if let Some((store, name)) = &self.database {
            store
                .set_bridge_cursor(name, seq)
                .await
                .with_context(|| format!("cannot store the cursor of bridge {name}"))?;
            self.after_seq = Some(seq);
            return Ok(());
        }
        let state = serde_json::to_vec(&State { after_seq: seq })?;
        write_atomically(&self.path, &state)
            .with_context(|| format!("cannot write bridge state {}", self.path.display()))?;
        self.after_seq = Some(seq);
        Ok(())
    }
}

/// Replaces the file at `path` with `bytes` durably: a temporary file
/// (owner-only: it tells what was delivered), fsync, rename, fsync of the
/// directory.
///
/// The temporary file is created anew (`O_EXCL`, never through a symlink):
/// a leftover one, or a symlink planted under its name, is removed first,
/// so the state is never written into another file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = owner_only().open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn owner_only() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_a_reload_and_reports_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zammad.cursor");
        let mut cursor = Cursor::load(&path).unwrap();
        assert_eq!(cursor.after_seq(), None);
        cursor.store(41).await.unwrap();
        cursor.store(42).await.unwrap();
        assert_eq!(Cursor::load(&path).unwrap().after_seq(), Some(42));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "cursor file mode {mode:o}");
        }
        fs::write(&path, "garbage").unwrap();
        let error = format!("{:#}", Cursor::load(&path).unwrap_err());
        assert!(error.contains("damaged"), "{error}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_symlink_planted_as_the_temporary_file_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zammad.cursor");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("zammad.tmp")).unwrap();
        let mut cursor = Cursor::load(&path).unwrap();
        cursor.store(7).await.unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(Cursor::load(&path).unwrap().after_seq(), Some(7));
        assert!(!dir.path().join("zammad.tmp").exists());
    }
}
