//! The ticket bridge's own durable record of what it did in Zammad: which
//! callback ticket is open for which caller, which Zammad user a number is,
//! the last event whose effect is recorded, and the event being written
//! (so a retry after a crash or a lost answer looks in Zammad before it
//! writes again). One small JSON file, replaced atomically like the cursor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The last event whose effect in Zammad is recorded here.
    #[serde(default)]
    pub done_seq: u64,
    /// The event written right now: its effect may be in Zammad already.
    #[serde(default)]
    pub pending: Option<u64>,
    /// Number (E.164 digits) -> the open callback ticket's id.
    #[serde(default)]
    pub tickets: BTreeMap<String, u64>,
    /// Number (E.164 digits, or `anonymous`) -> the Zammad user's id.
    #[serde(default)]
    pub users: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    pub record: Record,
}

impl Ledger {
    /// The ledger that goes with the cursor file `cursor`: `<cursor>.tickets.json`.
    pub fn path_for(cursor: &Path) -> PathBuf {
        let mut name = cursor.as_os_str().to_owned();
        name.push(".tickets.json");
        PathBuf::from(name)
    }

    /// Reads the ledger at `path`; a missing file is an empty ledger.
    pub fn load(path: PathBuf) -> anyhow::Result<Ledger> {
        let record = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "ticket ledger {} is damaged; restore it from a backup (deleting it forgets which tickets are open)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read ticket ledger {}", path.display()));
            }
        };
        Ok(Ledger { path, record })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the record durably.
    pub fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_vec(&self.record)?;
        crate::bridge::cursor::write_atomically(&self.path, &text)
            .with_context(|| format!("cannot write ticket ledger {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reload_and_reports_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = Ledger::path_for(&dir.path().join("t.cursor"));
        assert!(path.ends_with("t.cursor.tickets.json"));
        let mut ledger = Ledger::load(path.clone()).unwrap();
        assert_eq!(ledger.record, Record::default());
        ledger.record.done_seq = 7;
        ledger.record.tickets.insert("492111234567".into(), 3);
        ledger.save().unwrap();
        assert_eq!(Ledger::load(path.clone()).unwrap().record, ledger.record);
        std::fs::write(&path, "{").unwrap();
        let error = format!("{:#}", Ledger::load(path).unwrap_err());
        assert!(error.contains("damaged"), "{error}");
    }
}
