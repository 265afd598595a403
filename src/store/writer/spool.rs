//! The spool: a journal on local disk that holds accepted events while the
//! database cannot take them, so a push answered 200 survives a database
//! outage, a removed database file and a restart.
//!
//! The writer appends a failing batch's events here (one `fdatasync` per
//! batch, like a commit) before their webhooks are answered, and folds the
//! journal into the store, oldest first, when the database takes writes
//! again: at runtime, and at the next start before any new event. Events
//! arriving meanwhile go behind the ones already spooled, so the log keeps
//! the order the pushes were accepted in.
//!
//! Layout of `DIR/journal`: records of `[length: u32 LE][crc32: u32 LE]
//! [payload]`. The first payload is the header (JSON: format, database);
//! every other payload is one event as JSON: the [`Intake`] and its push's
//! dedupe key. A record that
//! is incomplete or fails its checksum ends the journal: what comes before
//! it is folded in, the rest is moved to `DIR/journal.torn-<ms>` and
//! reported. `DIR/lock` keeps a second process off the spool.
//!
//! Folding is idempotent: a newCall, answer or hangup is recognised by its
//! own dedupe key, a dtmf by the key its push got when it was accepted
//! (kept in the spool with it); so a fold cut short by a crash, or a batch
//! whose COMMIT got no answer and was spooled, is stored once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Intake;
use crate::telemetry::names;

const FORMAT: u32 = 1;
/// A record longer than this is corruption, not an event.
const MAX_RECORD: u32 = 16 * 1024 * 1024;
const FRAME: u64 = 8;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    database: String,
}

/// One spooled event.
#[derive(Debug, Serialize, Deserialize)]
pub(in crate::store) struct Spooled {
    /// The push's dedupe key, for a kind without one of its own.
    pub key: Option<String>,
    pub intake: Intake,
}

/// What opening the spool found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Events waiting to be folded into the store.
    pub events: u64,
    /// A torn or corrupt tail that was set aside: where it began, how many
    /// bytes, and the file they were moved to.
    pub torn: Option<(u64, u64, PathBuf)>,
}

/// The journal, owned by the writer.
pub struct Spool {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    _lock: File,
    database: String,
    /// Bytes of complete records (the header included).
    len: u64,
    /// Event records in the journal.
    events: u64,
    /// Events of the journal already committed to the store, and the
    /// offset after the last of them.
    folded: u64,
    folded_offset: u64,
    header_len: u64,
    /// A failed append may have left bytes past `len`.
    dirty_tail: bool,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("events", &self.events)
            .field("folded", &self.folded)
            .finish()
    }
}

impl Spool {
    /// Opens (creating) the spool in `dir` for `database`: takes its lock,
    /// reads what an earlier run left, sets a torn tail aside. Refuses a
    /// spool that another process holds, or that holds events for another
    /// database.
    pub fn open(dir: &Path, database: &str) -> Result<(Spool, Recovered), String> {
        create_dir(dir)?;
        let lock = lock(&dir.join("lock"))?;
        let path = dir.join("journal");
        let file = private()
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open the spool {}: {e}", path.display()))?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            path,
            file,
            _lock: lock,
            database: database.to_owned(),
            len: 0,
            events: 0,
            folded: 0,
            folded_offset: 0,
            header_len: 0,
            dirty_tail: false,
        };
        let recovered = spool.recover()?;
        metrics::gauge!(names::SPOOL_EVENTS).set(spool.pending() as f64);
        Ok((spool, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Events spooled and not yet folded into the store.
    pub fn pending(&self) -> u64 {
        self.events - self.folded
    }

    fn recover(&mut self) -> Result<Recovered, String> {
        let size = self
            .file
            .metadata()
            .map_err(|e| format!("cannot read the spool {}: {e}", self.path.display()))?
            .len();
        let mut recovered = Recovered::default();
        let header = match read_record(&self.file, 0, size) {
            Ok(Some((payload, end))) => serde_json::from_slice::<Header>(&payload)
                .ok()
                .filter(|h| h.format == FORMAT)
                .map(|h| (h, end)),
            _ => None,
        };
        let Some((header, header_end)) = header else {
            if size > 0 {
                // Not even the header is whole: nothing of it can be read.
                recovered.torn = Some(self.set_aside(0, size)?);
            }
            self.start_over()
                .map_err(|e| format!("cannot write the spool {}: {e}", self.path.display()))?;
            return Ok(recovered);
        };
        let mut offset = header_end;
        let mut events = 0;
        loop {
            match read_record(&self.file, offset, size) {
                Ok(Some((payload, end))) if serde_json::from_slice::<Spooled>(&payload).is_ok() => {
                    events += 1;
                    offset = end;
                }
                Ok(None) => break,
                Ok(Some(_)) | Err(_) => {
                    recovered.torn = Some(self.set_aside(offset, size)?);
                    break;
                }
            }
        }
        if events > 0 && header.database != self.database {
            return Err(format!(
                "the spool {} holds {events} events for the database {}, not {}: start with that \
                 database to fold them in, or move the spool away",
                self.dir.display(),
                header.database,
                self.database
            ));
        }
        if events == 0 {
            self.start_over()
                .map_err(|e| format!("cannot write the spool {}: {e}", self.path.display()))?;
            return Ok(recovered);
        }
        self.header_len = header_end;
        self.len = offset;
        self.events = events;
        self.folded_offset = header_end;
        recovered.events = events;
        Ok(recovered)
    }

    /// Moves the bytes from `offset` to `size` into a file of their own and
    /// cuts the journal there.
    fn set_aside(&mut self, offset: u64, size: u64) -> Result<(u64, u64, PathBuf), String> {
        let aside = self.dir.join(format!("journal.torn-{}", crate::now_ms()));
        let fail = |e: std::io::Error| {
            format!(
                "cannot set the torn end of the spool {} aside: {e}",
                self.path.display()
            )
        };
        let mut bytes = vec![0; (size - offset) as usize];
        self.file.read_exact_at(&mut bytes, offset).map_err(fail)?;
        let mut torn = private()
            .write(true)
            .create_new(true)
            .open(&aside)
            .map_err(fail)?;
        torn.write_all(&bytes)
            .and_then(|()| torn.sync_all())
            .map_err(fail)?;
        self.file.set_len(offset).map_err(fail)?;
        self.file.sync_all().map_err(fail)?;
        metrics::counter!(names::SPOOL_TORN).increment(1);
        tracing::error!(
            spool = %self.path.display(),
            offset,
            bytes = size - offset,
            kept_in = %aside.display(),
            "the spool ends in a torn or corrupt record: the complete records before it are folded in, the rest is kept aside"
        );
        Ok((offset, size - offset, aside))
    }

    /// Empties the journal and writes a new header.
    fn start_over(&mut self) -> std::io::Result<()> {
        let header = Header {
            format: FORMAT,
            database: self.database.clone(),
        };
        let record = frame(&serde_json::to_vec(&header).map_err(std::io::Error::other)?);
        self.file.set_len(0)?;
        self.file.write_all_at(&record, 0)?;
        self.file.sync_all()?;
        self.header_len = record.len() as u64;
        self.len = self.header_len;
        self.events = 0;
        self.folded = 0;
        self.folded_offset = self.header_len;
        self.dirty_tail = false;
        Ok(())
    }

    /// Appends `events` (each with its push's key) and makes them durable
    /// (one `fdatasync`). On an error nothing of them counts as spooled.
    pub(in crate::store) fn append<'a>(
        &mut self,
        events: impl IntoIterator<Item = (Option<&'a str>, &'a Intake)>,
    ) -> std::io::Result<u64> {
        #[derive(Serialize)]
        struct Record<'a> {
            key: Option<&'a str>,
            intake: &'a Intake,
        }
        let mut bytes = Vec::new();
        let mut count = 0;
        for (key, intake) in events {
            let record =
                serde_json::to_vec(&Record { key, intake }).map_err(std::io::Error::other)?;
            bytes.extend_from_slice(&frame(&record));
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        #[cfg(test)]
        if self.dir.join("fail-appends").exists() {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let written = self.write(&bytes);
        if let Err(error) = written {
            self.dirty_tail = true;
            metrics::counter!(names::SPOOL_FAILURES).increment(1);
            return Err(error);
        }
        self.len += bytes.len() as u64;
        self.events += count;
        metrics::counter!(names::SPOOL_APPENDED).increment(count);
        metrics::gauge!(names::SPOOL_EVENTS).set(self.pending() as f64);
        Ok(count)
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, self.len)?;
        if self.dirty_tail {
            // What a failed append left past the end goes.
            self.file.set_len(self.len + bytes.len() as u64)?;
        }
        self.file.sync_data()?;
        self.dirty_tail = false;
        Ok(())
    }

    /// Up to `max` spooled events not yet folded, oldest first, and the
    /// offset after the last of them.
    pub(in crate::store) fn next_chunk(&self, max: usize) -> std::io::Result<(Vec<Spooled>, u64)> {
        let mut chunk = Vec::new();
        let mut offset = self.folded_offset;
        while chunk.len() < max && offset < self.len {
            let Some((payload, end)) = read_record(&self.file, offset, self.len)? else {
                break;
            };
            chunk.push(serde_json::from_slice(&payload).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
            })?);
            offset = end;
        }
        Ok((chunk, offset))
    }

    /// The events of a chunk are committed to the store. Once all are, the
    /// journal starts over empty.
    pub(in crate::store) fn folded(&mut self, events: usize, end: u64) -> std::io::Result<()> {
        self.folded += events as u64;
        self.folded_offset = end;
        metrics::counter!(names::SPOOL_FOLDED).increment(events as u64);
        metrics::gauge!(names::SPOOL_EVENTS).set(self.pending() as f64);
        if self.pending() == 0 {
            self.start_over()?;
        }
        Ok(())
    }
}

/// The state directory for a server on PostgreSQL: systemd's
/// `$STATE_DIRECTORY` (its first entry) as it is, else
/// `$XDG_STATE_HOME/sipgate-sidecar` or `~/.local/state/sipgate-sidecar`.
pub(in crate::store) fn state_dir() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dirs) = set("STATE_DIRECTORY") {
        let first = dirs.to_string_lossy().split(':').next()?.to_owned();
        return Some(PathBuf::from(first));
    }
    let base = match set("XDG_STATE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(set("HOME")?).join(".local/state"),
    };
    Some(base.join("sipgate-sidecar"))
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(payload.len() + FRAME as usize);
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// The record at `offset` of a journal of `size` bytes: `None` at the end,
/// an `InvalidData` error for a torn or corrupt one.
fn read_record(file: &File, offset: u64, size: u64) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    let torn = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    if offset >= size {
        return Ok(None);
    }
    if size - offset < FRAME {
        return Err(torn("incomplete record header"));
    }
    let mut frame = [0u8; FRAME as usize];
    file.read_exact_at(&mut frame, offset)?;
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len > MAX_RECORD || size - offset - FRAME < u64::from(len) {
        return Err(torn("incomplete record"));
    }
    let mut payload = vec![0; len as usize];
    file.read_exact_at(&mut payload, offset + FRAME)?;
    if crc32fast::hash(&payload) != crc {
        return Err(torn("record checksum mismatch"));
    }
    Ok(Some((payload, offset + FRAME + u64::from(len))))
}

fn private() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = OpenOptions::new();
    options
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW);
    options
}

fn create_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the spool directory {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read the spool directory {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "the spool directory {} is not a directory",
            dir.display()
        ));
    }
    Ok(())
}

fn lock(path: &Path) -> Result<File, String> {
    let mut file = private()
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot create the spool lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = write!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            Err(format!(
                "the spool {} is in use by another process (pid {}); give each server its own --spool-dir",
                path.parent().unwrap_or(path).display(),
                holder.trim()
            ))
        }
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sipgate::event::{Event, EventKind};

    fn intake(call: &str) -> Intake {
        Intake {
            event: Event::new(EventKind::NewCall, call),
            decision: None,
            received_at_ms: 7,
        }
    }

    fn one(intake: &Intake) -> [(Option<&str>, &Intake); 1] {
        [(None, intake)]
    }

    fn calls(chunk: &[Spooled]) -> Vec<String> {
        chunk
            .iter()
            .map(|s| s.intake.event.call_id.clone())
            .collect()
    }

    #[test]
    fn appended_events_come_back_in_order_after_a_reopen_and_a_fold_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        {
            let (mut spool, recovered) = Spool::open(&spool_dir, "db").unwrap();
            assert_eq!(recovered, Recovered::default());
            let (a, b) = (intake("a"), intake("b"));
            assert_eq!(spool.append([(None, &a), (Some("k"), &b)]).unwrap(), 2);
            assert_eq!(spool.append(one(&intake("c"))).unwrap(), 1);
            assert_eq!(spool.pending(), 3);
        }
        let (mut spool, recovered) = Spool::open(&spool_dir, "db").unwrap();
        assert_eq!(recovered.events, 3);
        assert_eq!(recovered.torn, None);
        let (chunk, end) = spool.next_chunk(2).unwrap();
        assert_eq!(calls(&chunk), ["a", "b"]);
        let keys: Vec<Option<&str>> = chunk.iter().map(|s| s.key.as_deref()).collect();
        assert_eq!(keys, [None, Some("k")]);
        spool.folded(2, end).unwrap();
        assert_eq!(spool.pending(), 1);
        let (chunk, end) = spool.next_chunk(10).unwrap();
        assert_eq!(calls(&chunk), ["c"]);
        spool.folded(1, end).unwrap();
        assert_eq!(spool.pending(), 0);
        drop(spool);
        let (spool, recovered) = Spool::open(&spool_dir, "db").unwrap();
        assert_eq!(recovered.events, 0);
        assert_eq!(spool.pending(), 0);
    }

    #[test]
    fn a_torn_tail_is_set_aside_and_the_complete_records_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let whole = {
            let (mut spool, _) = Spool::open(&spool_dir, "db").unwrap();
            let (a, b) = (intake("a"), intake("b"));
            spool.append([(None, &a), (None, &b)]).unwrap();
            spool.len
        };
        // Half a record, as a crash in the middle of a write leaves it.
        let journal = spool_dir.join("journal");
        let torn = Spooled {
            key: None,
            intake: intake("torn"),
        };
        let record = frame(&serde_json::to_vec(&torn).unwrap());
        let mut file = OpenOptions::new().append(true).open(&journal).unwrap();
        file.write_all(&record[..record.len() / 2]).unwrap();
        drop(file);

        let (mut spool, recovered) = Spool::open(&spool_dir, "db").unwrap();
        assert_eq!(recovered.events, 2);
        let (offset, bytes, aside) = recovered.torn.clone().unwrap();
        assert_eq!(offset, whole);
        assert_eq!(bytes, (record.len() / 2) as u64);
        assert_eq!(std::fs::read(&aside).unwrap(), &record[..record.len() / 2]);
        assert_eq!(std::fs::metadata(&journal).unwrap().len(), whole);
        // New events go after the complete ones.
        spool.append(one(&intake("c"))).unwrap();
        let (chunk, _) = spool.next_chunk(10).unwrap();
        assert_eq!(calls(&chunk), ["a", "b", "c"]);
    }

    #[test]
    fn a_flipped_byte_ends_the_journal_at_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let after_first = {
            let (mut spool, _) = Spool::open(&spool_dir, "db").unwrap();
            spool.append(one(&intake("a"))).unwrap();
            let after_first = spool.len;
            spool.append(one(&intake("b"))).unwrap();
            after_first
        };
        let journal = spool_dir.join("journal");
        let mut bytes = std::fs::read(&journal).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x20;
        std::fs::write(&journal, &bytes).unwrap();
        let (spool, recovered) = Spool::open(&spool_dir, "db").unwrap();
        assert_eq!(recovered.events, 1);
        assert_eq!(recovered.torn.as_ref().unwrap().0, after_first);
        assert_eq!(calls(&spool.next_chunk(10).unwrap().0), ["a"]);
    }

    #[test]
    fn a_second_process_and_another_database_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let (mut spool, _) = Spool::open(&spool_dir, "db").unwrap();
        spool.append(one(&intake("a"))).unwrap();
        // flock locks belong to the open file: a second open is refused.
        let held = Spool::open(&spool_dir, "db").unwrap_err();
        assert!(held.contains("in use by another process"), "{held}");
        drop(spool);
        let other = Spool::open(&spool_dir, "other.db").unwrap_err();
        assert!(
            other.contains("holds 1 events for the database db"),
            "{other}"
        );
        // The refusal changed nothing.
        let (spool, recovered) = Spool::open(&spool_dir, "db").unwrap();
        assert_eq!(recovered.events, 1);
        assert_eq!(spool.pending(), 1);
    }

    #[test]
    fn an_empty_spool_follows_a_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        drop(Spool::open(&spool_dir, "db").unwrap());
        let (mut spool, _) = Spool::open(&spool_dir, "other.db").unwrap();
        spool.append(one(&intake("a"))).unwrap();
        drop(spool);
        assert_eq!(Spool::open(&spool_dir, "other.db").unwrap().1.events, 1);
    }

    #[test]
    fn a_failed_append_counts_nothing_and_leaves_no_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let (mut spool, _) = Spool::open(&spool_dir, "db").unwrap();
        spool.append(one(&intake("a"))).unwrap();
        // Bytes a failed write left past the end, then a shorter append.
        spool.file.write_all_at(&[0xAB; 4096], spool.len).unwrap();
        spool.dirty_tail = true;
        spool.append(one(&intake("b"))).unwrap();
        drop(spool);
        let (mut spool, recovered) = Spool::open(&spool_dir, "db").unwrap();
        assert_eq!(recovered.torn, None);
        assert_eq!(calls(&spool.next_chunk(10).unwrap().0), ["a", "b"]);

        std::fs::write(spool_dir.join("fail-appends"), "").unwrap();
        assert!(spool.append(one(&intake("c"))).is_err());
        assert_eq!(spool.pending(), 2);
    }
}
