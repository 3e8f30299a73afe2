//! The delivery spool: an append-only file next to the database where webhook deliveries are made
//! durable while the database is busy (locked by another process, a long checkpoint, a full
//! disk on its volume), so that GitLab gets its 2xx without waiting for the database lock.
//!
//! Each record is `length (u32 LE) | checksum (first 8 bytes of SHA-256 of the payload) | payload`,
//! the payload a small JSON object with the delivery key, the event kind and the body. Appends are
//! written in one `write` and made durable with one `fdatasync` per batch (group fsync). Reading
//! stops at the first record that is incomplete or whose checksum does not match: that is the
//! torn tail of a write interrupted by a crash, never acknowledged, and is cut off when the spool
//! is opened. Import into the event log deduplicates by delivery key, so a record imported twice
//! (a crash between the import and the truncation) is stored once.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::NewEvent;

/// Bytes before each payload: length and checksum.
const HEADER: usize = 4 + 8;

/// Largest payload accepted when reading; anything larger is a corrupt length field.
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool file could not be opened, read, written or synced.
    #[error("delivery spool {path}: {reason}")]
    Io {
        path: String,
        /// What failed.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    body: std::borrow::Cow<'a, str>,
}

/// The spool file, open for appending. Its length only ever covers whole records.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    len: u64,
}

/// Encodes one event as a record.
fn encode(event: &NewEvent, out: &mut Vec<u8>) {
    let record = Record {
        key: event.delivery_key.as_str().into(),
        kind: event.kind.as_str().into(),
        body: event.body.as_str().into(),
    };
    let payload = serde_json::to_vec(&record).unwrap_or_default();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload)[..8]);
    out.extend_from_slice(&payload);
}

/// Decodes the whole records at the start of `bytes`, at most `limit` of them: the events and the
/// bytes they take. Stops at the first incomplete or damaged record.
fn decode(bytes: &[u8], limit: usize) -> (Vec<NewEvent>, usize) {
    let mut events = Vec::new();
    let mut at = 0;
    while events.len() < limit && bytes.len() - at >= HEADER {
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[at..at + 4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD || bytes.len() - at - HEADER < len {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        if Sha256::digest(payload)[..8] != bytes[at + 4..at + HEADER] {
            break;
        }
        let Ok(record) = serde_json::from_slice::<Record<'_>>(payload) else {
            break;
        };
        events.push(NewEvent {
            delivery_key: record.key.into_owned(),
            kind: record.kind.into_owned(),
            body: record.body.into_owned(),
        });
        at += HEADER + len;
    }
    (events, at)
}

impl Spool {
    /// Opens (creating it, mode 0600: it holds webhook bodies) the spool at `path` and cuts off a
    /// torn last record.
    pub fn open(path: &Path) -> Result<Self, SpoolError> {
        let fail = |reason: String| SpoolError::Io {
            path: path.display().to_string(),
            reason,
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| fail(format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| fail(format!("cannot read its size: {e}")))?
            .len();
        let mut spool = Self {
            path: path.to_owned(),
            file,
            len: size,
        };
        let (_, valid) = spool.read(0, size, usize::MAX)?;
        if valid < size {
            tracing::warn!(
                "delivery spool {}: dropping {} bytes of a record torn by a crash (it was never acknowledged)",
                path.display(),
                size - valid
            );
            spool
                .file
                .set_len(valid)
                .and_then(|()| spool.file.sync_data())
                .map_err(|e| fail(format!("cannot cut off a torn record: {e}")))?;
            spool.len = valid;
        }
        Ok(spool)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole records in the spool.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no record waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn fail(&self, reason: String) -> SpoolError {
        SpoolError::Io {
            path: self.path.display().to_string(),
            reason,
        }
    }

    /// Appends the events and makes them durable (one write, one fdatasync). On failure (a full
    /// disk) the file is cut back to its previous length, so no partial record stays.
    pub fn append(&mut self, events: &[NewEvent]) -> Result<(), SpoolError> {
        let mut bytes = Vec::with_capacity(events.iter().map(|e| e.body.len() + 128).sum());
        for event in events {
            encode(event, &mut bytes);
        }
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(self.len);
            return Err(self.fail(format!("cannot append: {e}")));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Reads at most `limit` whole records starting at byte `from` and ending before byte `to`:
    /// the events and the offset after the last one read.
    pub fn read(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<(Vec<NewEvent>, u64), SpoolError> {
        if to <= from {
            return Ok((Vec::new(), from));
        }
        let mut bytes = vec![0u8; (to - from) as usize];
        self.file
            .read_exact_at(&mut bytes, from)
            .map_err(|e| self.fail(format!("cannot read: {e}")))?;
        let (events, used) = decode(&bytes, limit);
        Ok((events, from + used as u64))
    }

    /// Empties the spool once everything in it is in the event log.
    pub fn clear(&mut self) -> Result<(), SpoolError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.fail(format!("cannot truncate: {e}")))?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> NewEvent {
        NewEvent {
            delivery_key: format!("idem:{i}"),
            kind: "Push Hook".into(),
            body: format!("{{\"n\":{i},\"text\":\"é\\u0000\"}}"),
        }
    }

    fn all(spool: &Spool) -> Vec<NewEvent> {
        spool.read(0, spool.len(), usize::MAX).unwrap().0
    }

    #[test]
    fn records_come_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deps.db.spool");
        let mut spool = Spool::open(&path).unwrap();
        assert!(spool.is_empty());
        spool.append(&[event(1), event(2)]).unwrap();
        spool.append(&[event(3)]).unwrap();
        drop(spool);
        let spool = Spool::open(&path).unwrap();
        assert_eq!(all(&spool), vec![event(1), event(2), event(3)]);
        // Reading in steps resumes where the last step stopped.
        let (first, at) = spool.read(0, spool.len(), 2).unwrap();
        assert_eq!(first, vec![event(1), event(2)]);
        let (rest, end) = spool.read(at, spool.len(), 2).unwrap();
        assert_eq!((rest, end), (vec![event(3)], spool.len()));
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut spool = Spool::open(&path).unwrap();
        spool.append(&[event(1), event(2)]).unwrap();
        let whole = spool.len();
        drop(spool);
        // Every possible cut inside the second record, and a zero-filled tail (a file extended by
        // the crash but never written), leave exactly the first record.
        let bytes = std::fs::read(&path).unwrap();
        let mut one = Vec::new();
        encode(&event(1), &mut one);
        for cut in one.len() + 1..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let spool = Spool::open(&path).unwrap();
            assert_eq!(all(&spool), vec![event(1)], "cut at {cut}");
            assert_eq!(spool.len(), one.len() as u64);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), one.len() as u64);
        }
        let mut zeroed = bytes.clone();
        zeroed[one.len() + HEADER..].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        let mut spool = Spool::open(&path).unwrap();
        assert_eq!(all(&spool), vec![event(1)]);
        spool.append(&[event(3)]).unwrap();
        drop(spool);
        let spool = Spool::open(&path).unwrap();
        assert_eq!(all(&spool), vec![event(1), event(3)]);
        assert!(spool.len() < whole + one.len() as u64);
    }

    #[test]
    fn a_cleared_spool_is_empty_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut spool = Spool::open(&path).unwrap();
        spool.append(&[event(1)]).unwrap();
        spool.clear().unwrap();
        spool.append(&[event(2)]).unwrap();
        drop(spool);
        let spool = Spool::open(&path).unwrap();
        assert_eq!(all(&spool), vec![event(2)]);
    }

    #[test]
    fn the_spool_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        Spool::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    proptest::proptest! {
        /// Any events survive the round trip, and any cut of the file yields a prefix of them.
        #[test]
        fn any_cut_yields_a_prefix(
            bodies in proptest::collection::vec(".{0,40}", 1..8),
            cut in 0usize..2000,
        ) {
            let events: Vec<NewEvent> = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| NewEvent { delivery_key: format!("k{i}"), kind: "Pipeline Hook".into(), body: b.clone() })
                .collect();
            let mut bytes = Vec::new();
            for e in &events {
                encode(e, &mut bytes);
            }
            let (back, used) = decode(&bytes, usize::MAX);
            proptest::prop_assert_eq!(&back, &events);
            proptest::prop_assert_eq!(used, bytes.len());
            let cut = cut.min(bytes.len());
            let (prefix, used) = decode(&bytes[..cut], usize::MAX);
            proptest::prop_assert!(used <= cut);
            proptest::prop_assert_eq!(&prefix[..], &events[..prefix.len()]);
        }
    }
}
