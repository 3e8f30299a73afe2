//! The embedded SQLite store: one file, WAL journal, a write connection and a read connection.
//!
//! SQLite calls block, so every operation runs on Tokio's blocking pool, never on an async worker.
//! Writes share one connection (SQLite serialises writers anyway); reads have their own, so under
//! WAL they go on while a write waits for another process's lock (a `gitlab-deps scan`, say).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::migrations::MIGRATIONS;
use super::{
    ACTIVITY_STORED, Activity, DeriveFn, DiscoveryStore, Edge, External, FileBlobs, Lease,
    LeaseInfo, MetaStore, NewEvent, OrchestrationStore, PrefixRule, ProjectRecord, ProjectScan,
    RefKind, Reference, ReplaceOutcome, Resolution, ResolveInput, ResolveLookup, ResolveVersions,
    StoreError, StoredCascade, StoredEvent, Warning,
};
use crate::cascade::{Counters, ProjectState};
use crate::discover::image::normalise_prefix;

const CATALOG_KEY: &str = "resolve.catalog_version";

/// How long a write waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite implementation of the store traits ([`super::Store`]).
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// Stops the checkpoint thread when the store is dropped.
    _checkpoints: Option<Checkpoints>,
}

/// How often the checkpoint thread looks at the write-ahead log.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Passive checkpoints run back to back, at most, to catch up with a writer that keeps writing.
const CHECKPOINT_CHASE: usize = 8;

/// A thread of its own that checkpoints the write-ahead log, so that no commit does.
///
/// By default SQLite checkpoints inside the commit that grows the log past 1,000 pages, and that
/// commit then waits for the copy and its `fsync`s: 7-13 ms on this project's benchmark machine,
/// in the middle of an engine step, with the webhook intake queued behind it for the connection.
/// A passive checkpoint from another connection runs beside the writer and waits for no one.
///
/// The log only starts over from its beginning once a checkpoint has copied all of it; commits
/// landing during a checkpoint leave frames behind. So the thread checkpoints often (a tenth of
/// a second's writes each time, quick to copy) and, while frames are left, again at once: a
/// log written to without pause would otherwise grow for as long as the writing lasts.
struct Checkpoints {
    _stop: std::sync::mpsc::Sender<()>,
}

impl Checkpoints {
    /// Starts the thread on a connection of its own to `path`; `None` if either fails (the
    /// writer then keeps checkpointing by itself).
    fn start(path: &Path) -> Option<Self> {
        let conn = Connection::open(path).ok()?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    for _ in 0..CHECKPOINT_CHASE {
                        // (busy, frames in the log, frames copied). Busy (another checkpoint, a
                        // reader holding old frames) is no failure: a later round copies what
                        // this one could not.
                        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, i64>(2)?,
                            ))
                        });
                        match done {
                            Ok((0, log, copied)) if copied < log => continue,
                            Ok(_) => break,
                            Err(e) => {
                                tracing::debug!("checkpoint skipped: {e}");
                                break;
                            }
                        }
                    }
                }
            })
            .ok()?;
        Some(Self { _stop: stop })
    }
}

/// The connections, shared with the blocking threads that use them.
struct Inner {
    writer: Mutex<Connection>,
    /// `None` for an in-memory database, which only its own connection can see.
    reader: Option<Mutex<Connection>>,
}

/// The state as stored: counters and per-project states, as JSON.
type RawCascade = (String, Vec<(String, String)>);

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let open_error = |e: rusqlite::Error| StoreError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: shown.clone(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        // Readable by its owner only: it holds webhook bodies and the orchestration state. SQLite
        // gives its journal files the database file's mode.
        create_private(path).map_err(|e| StoreError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let writer = Connection::open(path).map_err(open_error)?;
        // Whatever fails while setting it up (not a database, read-only, locked) names the file.
        let writer = init(writer, &shown).map_err(|e| match e {
            StoreError::Sqlite(e) => open_error(e),
            other => other,
        })?;
        // Opened after the migrations, so it never sees an older schema.
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        let checkpoints = Checkpoints::start(path);
        if checkpoints.is_some() {
            writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                reader: Some(Mutex::new(reader)),
            }),
            _checkpoints: checkpoints,
        })
    }

    /// [`SqliteStore::open`] on the blocking pool: opening may migrate the schema and wait for
    /// another process's lock, which must not stall an async worker.
    pub async fn open_async(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open(&path))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    /// An in-memory database, for tests (one connection for reads and writes).
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(init(conn, ":memory:")?),
                reader: None,
            }),
            _checkpoints: None,
        })
    }

    /// Runs `op` on the blocking pool with the connections.
    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

fn init(mut conn: Connection, shown: &str) -> Result<Connection, StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers (this process's read connection, the CLI) read while a writer writes;
    // NORMAL sync keeps every commit safe against a killed process (not against power loss,
    // where the last commits may be lost).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::TooNew {
            path: shown.to_owned(),
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(conn)
}

fn guard(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock cannot leave a half-applied transaction (SQLite rolls it
    // back), so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        guard(&self.writer)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        guard(self.reader.as_ref().unwrap_or(&self.writer))
    }
}

/// Creates the file with mode 0600 unless it exists (an existing file keeps its mode).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn bump_catalog(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [CATALOG_KEY],
    )?;
    Ok(())
}

fn catalog_version(conn: &Connection) -> Result<i64, StoreError> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [CATALOG_KEY],
            |r| r.get(0),
        )
        .optional()?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn upsert_record(tx: &rusqlite::Transaction<'_>, r: &ProjectRecord) -> Result<(), StoreError> {
    // What other projects resolve against: a new project, a new path or a new prefix changes the
    // catalog, and the project's own derived rows (keyed by path) with it.
    let before: Option<(String, Option<String>)> = tx
        .prepare_cached("SELECT path, registry_prefix FROM projects WHERE id = ?1")?
        .query_row([r.id as i64], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let moved = before
        .as_ref()
        .is_none_or(|(path, prefix)| *path != r.path || *prefix != r.registry_prefix);
    // A renamed project keeps its id; free its new path from a stale row first.
    let freed = tx.execute(
        "DELETE FROM projects WHERE path = ?1 AND id != ?2",
        params![r.path, r.id as i64],
    )?;
    if moved || freed > 0 {
        bump_catalog(tx)?;
    }
    let key = r.registry_prefix.as_deref().map(normalise_prefix);
    tx.prepare_cached(
        "INSERT INTO projects (id, path, default_branch, web_url, registry_prefix, last_activity_at, head_sha, checked_at_ms, registry_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(id) DO UPDATE SET path = excluded.path, default_branch = excluded.default_branch,
           web_url = excluded.web_url, registry_prefix = excluded.registry_prefix,
           last_activity_at = excluded.last_activity_at, head_sha = excluded.head_sha,
           checked_at_ms = excluded.checked_at_ms, registry_key = excluded.registry_key,
           refs_version = refs_version + ?10",
    )?
    .execute(params![
        r.id as i64,
        r.path,
        r.default_branch,
        r.web_url,
        r.registry_prefix,
        r.last_activity_at,
        r.head_sha,
        r.checked_at_ms,
        key,
        i64::from(moved),
    ])?;
    Ok(())
}

fn read_reference(row: &rusqlite::Row<'_>, from: usize) -> rusqlite::Result<Reference> {
    Ok(Reference {
        kind: RefKind::parse(&row.get::<_, String>(from)?),
        file: row.get(from + 1)?,
        line: row.get::<_, i64>(from + 2)? as u32,
        value: row.get(from + 3)?,
    })
}

fn read_edge(row: &rusqlite::Row<'_>) -> rusqlite::Result<Edge> {
    Ok(Edge {
        upstream: row.get(0)?,
        downstream: row.get(1)?,
        via: row.get(2)?,
    })
}

/// Inserts derived rows.
fn insert_resolution(
    tx: &rusqlite::Transaction<'_>,
    resolution: &Resolution,
    skip: &HashSet<String>,
) -> Result<(), StoreError> {
    let mut ins = tx.prepare_cached(
        "INSERT OR IGNORE INTO edges (upstream, downstream, via) VALUES (?1, ?2, ?3)",
    )?;
    for e in resolution
        .edges
        .iter()
        .filter(|e| !skip.contains(&e.downstream))
    {
        ins.execute(params![e.upstream, e.downstream, e.via])?;
    }
    let mut ext =
        tx.prepare_cached("INSERT OR IGNORE INTO externals (project, image) VALUES (?1, ?2)")?;
    for e in resolution
        .externals
        .iter()
        .filter(|e| !skip.contains(&e.project))
    {
        ext.execute(params![e.project, e.image])?;
    }
    let mut warn = tx.prepare_cached(
        "INSERT INTO resolve_warnings (project, file, line, message) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for w in resolution
        .warnings
        .iter()
        .filter(|w| !skip.contains(&w.project))
    {
        warn.execute(params![w.project, w.file, w.line, w.message])?;
    }
    Ok(())
}

/// One project's derived rows as stored.
fn stored_resolution_of(
    tx: &rusqlite::Transaction<'_>,
    project: &str,
) -> Result<Resolution, StoreError> {
    let edges = tx
        .prepare_cached("SELECT upstream, downstream, via FROM edges WHERE downstream = ?1")?
        .query_map([project], read_edge)?
        .collect::<Result<_, _>>()?;
    let externals = tx
        .prepare_cached("SELECT project, image FROM externals WHERE project = ?1")?
        .query_map([project], |row| {
            Ok(External {
                project: row.get(0)?,
                image: row.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let warnings = tx
        .prepare_cached(
            "SELECT project, file, line, message FROM resolve_warnings WHERE project = ?1",
        )?
        .query_map([project], read_warning)?
        .collect::<Result<_, _>>()?;
    Ok(Resolution {
        edges,
        externals,
        warnings,
    })
}

fn delete_resolution_of(tx: &rusqlite::Transaction<'_>, project: &str) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM edges WHERE downstream = ?1")?
        .execute([project])?;
    tx.prepare_cached("DELETE FROM externals WHERE project = ?1")?
        .execute([project])?;
    tx.prepare_cached("DELETE FROM resolve_warnings WHERE project = ?1")?
        .execute([project])?;
    Ok(())
}

/// [`ResolveLookup`] inside a transaction.
struct TxLookup<'t, 'c> {
    tx: &'t rusqlite::Transaction<'c>,
    rule: &'t PrefixRule,
}

impl ResolveLookup for TxLookup<'_, '_> {
    fn project_by_path(&mut self, path: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT path FROM projects WHERE lower(path) = lower(?1) ORDER BY path LIMIT 1",
            )?
            .query_row([path], |r| r.get(0))
            .optional()?)
    }

    fn project_by_prefix(&mut self, prefix: &str) -> Result<Option<String>, StoreError> {
        let mut found: Vec<String> = Vec::new();
        if self.rule.reported {
            found.extend(
                self.tx
                    .prepare_cached(
                        "SELECT path FROM projects WHERE registry_key = ?1 ORDER BY path LIMIT 1",
                    )?
                    .query_row([prefix], |r| r.get(0))
                    .optional()?,
            );
        }
        // A derived prefix is the base and the lowercase path.
        let derived = prefix
            .strip_prefix(self.rule.base.as_str())
            .and_then(|rest| rest.strip_prefix('/'));
        if let Some(path) = derived {
            let sql = if self.rule.reported {
                "SELECT path FROM projects WHERE lower(path) = ?1
                   AND (registry_prefix IS NULL OR registry_prefix = '') ORDER BY path LIMIT 1"
            } else {
                "SELECT path FROM projects WHERE lower(path) = ?1 ORDER BY path LIMIT 1"
            };
            found.extend(
                self.tx
                    .prepare_cached(sql)?
                    .query_row([path], |r| r.get(0))
                    .optional()?,
            );
        }
        Ok(found.into_iter().min())
    }
}

const PROJECT_COLUMNS: &str = "SELECT id, path, default_branch, web_url, registry_prefix, last_activity_at, head_sha, checked_at_ms FROM projects";
const PROJECT_COLUMNS_WITH_VERSION: &str = "SELECT id, path, default_branch, web_url, registry_prefix, last_activity_at, head_sha, checked_at_ms, refs_version FROM projects";
const REFERENCES_SQL: &str = "SELECT p.path, r.kind, r.file, r.line, r.value FROM refs r JOIN projects p ON p.id = r.project_id
     ORDER BY p.path, r.file, r.line";

fn read_project(row: &rusqlite::Row<'_>) -> rusqlite::Result<ProjectRecord> {
    Ok(ProjectRecord {
        id: row.get::<_, i64>(0)? as u64,
        path: row.get(1)?,
        default_branch: row.get(2)?,
        web_url: row.get(3)?,
        registry_prefix: row.get(4)?,
        last_activity_at: row.get(5)?,
        head_sha: row.get(6)?,
        checked_at_ms: row.get(7)?,
    })
}

fn read_warning(row: &rusqlite::Row<'_>) -> rusqlite::Result<Warning> {
    Ok(Warning {
        project: row.get(0)?,
        file: row.get(1)?,
        line: row.get::<_, Option<i64>>(2)?.map(|l| l as u32),
        message: row.get(3)?,
    })
}

impl Inner {
    fn projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!("{PROJECT_COLUMNS} ORDER BY path"))?;
        let rows = stmt.query_map([], read_project)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn project(&self, id: u64) -> Result<Option<ProjectRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!("{PROJECT_COLUMNS} WHERE id = ?1"))?;
        Ok(stmt.query_row([id as i64], read_project).optional()?)
    }

    fn save_scans(&self, scans: &[ProjectScan]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for scan in scans {
            upsert_record(&tx, &scan.record)?;
            let id = scan.record.id as i64;
            tx.prepare_cached("UPDATE projects SET refs_version = refs_version + 1 WHERE id = ?1")?
                .execute([id])?;
            tx.execute("DELETE FROM refs WHERE project_id = ?1", [id])?;
            tx.execute("DELETE FROM scan_warnings WHERE project_id = ?1", [id])?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO refs (project_id, kind, file, line, value) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in &scan.refs {
                ins.execute(params![id, r.kind.as_str(), r.file, r.line, r.value])?;
            }
            let mut warn = tx.prepare_cached(
                "INSERT INTO scan_warnings (project_id, file, line, message) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for w in &scan.warnings {
                warn.execute(params![id, w.file, w.line, w.message])?;
            }
            tx.execute("DELETE FROM project_files WHERE project_id = ?1", [id])?;
            let mut file = tx.prepare_cached(
                "INSERT INTO project_files (project_id, file, blob_id) VALUES (?1, ?2, ?3)",
            )?;
            for (path, blob) in &scan.files {
                file.execute(params![id, path, blob])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn file_blobs(&self) -> Result<HashMap<u64, FileBlobs>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT project_id, file, blob_id FROM project_files")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut out: HashMap<u64, FileBlobs> = HashMap::new();
        for row in rows {
            let (id, file, blob) = row?;
            out.entry(id).or_default().insert(file, blob);
        }
        Ok(out)
    }

    fn project_file_blobs(&self, id: u64) -> Result<FileBlobs, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT file, blob_id FROM project_files WHERE project_id = ?1")?;
        let rows = stmt.query_map([id as i64], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn project_findings(&self, id: u64) -> Result<(Vec<Reference>, Vec<Warning>), StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT kind, file, line, value FROM refs WHERE project_id = ?1 ORDER BY rowid",
        )?;
        let refs = stmt
            .query_map([id as i64], |row| {
                Ok(Reference {
                    kind: RefKind::parse(&row.get::<_, String>(0)?),
                    file: row.get(1)?,
                    line: row.get::<_, i64>(2)? as u32,
                    value: row.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = conn.prepare_cached(
            "SELECT p.path, w.file, w.line, w.message FROM scan_warnings w JOIN projects p ON p.id = w.project_id WHERE w.project_id = ?1 ORDER BY w.rowid",
        )?;
        let warnings = stmt
            .query_map([id as i64], read_warning)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((refs, warnings))
    }

    fn update_records(&self, records: &[ProjectRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for r in records {
            upsert_record(&tx, r)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn remove_projects(&self, ids: &[u64]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut removed = 0;
        for id in ids {
            removed += tx.execute("DELETE FROM projects WHERE id = ?1", [*id as i64])?;
        }
        if removed > 0 {
            bump_catalog(&tx)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn references(&self) -> Result<Vec<(String, Reference)>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(REFERENCES_SQL)?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, read_reference(row, 1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn replace_resolution(&self, resolution: &Resolution) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute_batch(
            "DELETE FROM edges; DELETE FROM externals; DELETE FROM resolve_warnings;",
        )?;
        insert_resolution(&tx, resolution, &HashSet::new())?;
        tx.commit()?;
        Ok(())
    }

    fn resolve_input(&self) -> Result<ResolveInput, StoreError> {
        let mut conn = self.reader();
        // A read transaction: projects, references and versions from one snapshot.
        let tx = conn.transaction()?;
        let mut projects = Vec::new();
        let mut versions = ResolveVersions {
            catalog: catalog_version(&tx)?,
            ..ResolveVersions::default()
        };
        {
            let mut stmt =
                tx.prepare_cached(&format!("{PROJECT_COLUMNS_WITH_VERSION} ORDER BY path"))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let record = read_project(row)?;
                versions
                    .projects
                    .insert(record.id, (record.path.clone(), row.get(8)?));
                projects.push(record);
            }
        }
        let references = tx
            .prepare_cached(REFERENCES_SQL)?
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, read_reference(row, 1)?))
            })?
            .collect::<Result<_, _>>()?;
        tx.commit()?;
        Ok(ResolveInput {
            projects,
            references,
            versions,
        })
    }

    fn replace_resolution_from(
        &self,
        resolution: &Resolution,
        read: &ResolveVersions,
    ) -> Result<ReplaceOutcome, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if catalog_version(&tx)? != read.catalog {
            return Ok(ReplaceOutcome::CatalogMoved);
        }
        // Same catalog: same projects and paths; only references may have moved on.
        let mut kept: Vec<String> = Vec::new();
        {
            let mut stmt = tx.prepare_cached("SELECT id, path, refs_version FROM projects")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let id = row.get::<_, i64>(0)? as u64;
                let now: (String, i64) = (row.get(1)?, row.get(2)?);
                if read.projects.get(&id) != Some(&now) {
                    kept.push(now.0);
                }
            }
        }
        let mut newer = Resolution::default();
        for project in &kept {
            let stored = stored_resolution_of(&tx, project)?;
            newer.edges.extend(stored.edges);
            newer.externals.extend(stored.externals);
            newer.warnings.extend(stored.warnings);
        }
        tx.execute_batch(
            "DELETE FROM edges; DELETE FROM externals; DELETE FROM resolve_warnings;",
        )?;
        let skip: HashSet<String> = kept.iter().cloned().collect();
        insert_resolution(&tx, resolution, &skip)?;
        insert_resolution(&tx, &newer, &HashSet::new())?;
        tx.commit()?;
        kept.sort();
        Ok(ReplaceOutcome::Written { kept })
    }

    fn resolve_project(
        &self,
        id: u64,
        rule: &PrefixRule,
        mut derive: DeriveFn,
    ) -> Result<Option<Resolution>, StoreError> {
        let mut conn = self.conn();
        // Immediate: the write lock from the first read, so no other process writes in between.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(path) = tx
            .prepare_cached("SELECT path FROM projects WHERE id = ?1")?
            .query_row([id as i64], |r| r.get::<_, String>(0))
            .optional()?
        else {
            return Ok(None);
        };
        let refs: Vec<Reference> = tx
            .prepare_cached(
                "SELECT kind, file, line, value FROM refs WHERE project_id = ?1 ORDER BY file, line",
            )?
            .query_map([id as i64], |row| read_reference(row, 0))?
            .collect::<Result<_, _>>()?;
        let resolution = derive(&path, &refs, &mut TxLookup { tx: &tx, rule })?;
        delete_resolution_of(&tx, &path)?;
        insert_resolution(&tx, &resolution, &HashSet::new())?;
        tx.commit()?;
        Ok(Some(resolution))
    }

    fn upstream_edges(&self, downstream: &str) -> Result<Vec<Edge>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT upstream, downstream, via FROM edges WHERE downstream = ?1 ORDER BY upstream",
        )?;
        let rows = stmt.query_map([downstream], read_edge)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn edges(&self) -> Result<Vec<Edge>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT upstream, downstream, via FROM edges ORDER BY downstream, upstream",
        )?;
        let rows = stmt.query_map([], read_edge)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn externals(&self) -> Result<Vec<External>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT project, image FROM externals ORDER BY project, image")?;
        let rows = stmt.query_map([], |row| {
            Ok(External {
                project: row.get(0)?,
                image: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn warnings(&self) -> Result<Vec<Warning>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT p.path, w.file, w.line, w.message FROM scan_warnings w JOIN projects p ON p.id = w.project_id
             UNION ALL SELECT project, file, line, message FROM resolve_warnings
             ORDER BY 1, 2, 3",
        )?;
        let rows = stmt.query_map([], read_warning)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn hook_fingerprints(&self) -> Result<std::collections::HashMap<u64, String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT hook_id, fingerprint FROM hook_fingerprints")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn update_hook_fingerprints(
        &self,
        set: &[(u64, String)],
        forget: &[u64],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare(
                "INSERT INTO hook_fingerprints (hook_id, fingerprint) VALUES (?1, ?2)
                 ON CONFLICT(hook_id) DO UPDATE SET fingerprint = excluded.fingerprint",
            )?;
            for (id, fingerprint) in set {
                upsert.execute(params![*id as i64, fingerprint])?;
            }
            let mut delete = tx.prepare("DELETE FROM hook_fingerprints WHERE hook_id = ?1")?;
            for id in forget {
                delete.execute([*id as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_event(
        &self,
        delivery_key: &str,
        kind: &str,
        body: &str,
    ) -> Result<Option<i64>, StoreError> {
        let conn = self.conn();
        let now = crate::util::now_ms();
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO events (delivery_key, kind, body, received_ms) VALUES (?1, ?2, ?3, ?4)",
            params![delivery_key, kind, body, now],
        )?;
        Ok((inserted == 1).then(|| conn.last_insert_rowid()))
    }

    fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Option<i64>>, StoreError> {
        let mut conn = self.conn();
        let now = crate::util::now_ms();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(events.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO events (delivery_key, kind, body, received_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for e in events {
                let inserted = ins.execute(params![e.delivery_key, e.kind, e.body, now])?;
                out.push((inserted == 1).then(|| tx.last_insert_rowid()));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn unprocessed_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, kind, body FROM events WHERE processed = 0 ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(StoredEvent {
                seq: row.get(0)?,
                kind: row.get(1)?,
                body: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn commit_cascade(
        &self,
        changes: &[(String, Option<String>)],
        counters_json: &str,
        processed_up_to: Option<i64>,
        (at_ms, lines): (i64, &[String]),
        fence: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(held) = fence {
            let current: Option<i64> = tx
                .query_row("SELECT epoch FROM lease WHERE id = 1", [], |r| r.get(0))
                .optional()?;
            if current != Some(held) {
                return Err(StoreError::Fenced {
                    held,
                    current: current.unwrap_or(0),
                });
            }
        }
        tx.execute(
            "INSERT INTO cascade_state (id, state) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            [counters_json],
        )?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO cascade_projects (project, state) VALUES (?1, ?2)
                 ON CONFLICT(project) DO UPDATE SET state = excluded.state",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM cascade_projects WHERE project = ?1")?;
            for (project, state) in changes {
                match state {
                    Some(state) => upsert.execute(params![project, state])?,
                    None => delete.execute([project])?,
                };
            }
        }
        if let Some(seq) = processed_up_to {
            tx.execute(
                "UPDATE events SET processed = 1 WHERE processed = 0 AND seq <= ?1",
                [seq],
            )?;
        }
        if !lines.is_empty() {
            let mut insert =
                tx.prepare_cached("INSERT INTO activity (at_ms, line) VALUES (?1, ?2)")?;
            for line in lines {
                insert.execute(params![at_ms, line])?;
            }
            tx.execute(
                "DELETE FROM activity WHERE seq <= (SELECT MAX(seq) FROM activity) - ?1",
                [ACTIVITY_STORED],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn acquire_lease(&self, holder: &str, ttl_ms: i64) -> Result<Option<Lease>, StoreError> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<(String, i64, i64)> = tx
            .query_row(
                "SELECT holder, epoch, expires_ms FROM lease WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let epoch = match current {
            Some((other, _, expires)) if other != holder && expires > now => return Ok(None),
            Some((_, epoch, _)) => epoch + 1,
            None => 1,
        };
        tx.execute(
            "INSERT INTO lease (id, holder, epoch, expires_ms) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch,
                 expires_ms = excluded.expires_ms",
            params![holder, epoch, now + ttl_ms],
        )?;
        tx.commit()?;
        Ok(Some(Lease {
            holder: holder.to_owned(),
            epoch,
        }))
    }

    fn renew_lease(&self, lease: &Lease, ttl_ms: i64) -> Result<bool, StoreError> {
        let conn = self.conn();
        let changed = conn.execute(
            "UPDATE lease SET expires_ms = ?1 WHERE id = 1 AND epoch = ?2 AND holder = ?3",
            params![now_ms() + ttl_ms, lease.epoch, lease.holder],
        )?;
        Ok(changed == 1)
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE lease SET expires_ms = 0 WHERE id = 1 AND epoch = ?1 AND holder = ?2",
            params![lease.epoch, lease.holder],
        )?;
        Ok(())
    }

    fn lease(&self) -> Result<Option<LeaseInfo>, StoreError> {
        let conn = self.reader();
        let now = now_ms();
        Ok(conn
            .query_row(
                "SELECT holder, epoch, expires_ms FROM lease WHERE id = 1",
                [],
                |r| {
                    Ok(LeaseInfo {
                        holder: r.get(0)?,
                        epoch: r.get(1)?,
                        expires_in_ms: r.get::<_, i64>(2)? - now,
                    })
                },
            )
            .optional()?)
    }

    fn prune_events(&self, received_before_ms: i64) -> Result<usize, StoreError> {
        let conn = self.conn();
        Ok(conn.execute(
            "DELETE FROM events WHERE processed = 1 AND received_ms < ?1",
            [received_before_ms],
        )?)
    }

    fn cascade_state(&self) -> Result<Option<RawCascade>, StoreError> {
        let mut conn = self.reader();
        // One read transaction: counters and states from the same commit.
        let tx = conn.transaction()?;
        let Some(counters) = tx
            .query_row("SELECT state FROM cascade_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
        else {
            return Ok(None);
        };
        let projects = tx
            .prepare_cached("SELECT project, state FROM cascade_projects ORDER BY project")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        tx.commit()?;
        Ok(Some((counters, projects)))
    }

    fn recent_activity(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT at_ms, line FROM activity ORDER BY seq DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.run(move |db| db.meta(&key)).await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.run(move |db| db.set_meta(&key, &value)).await
    }
}

#[async_trait]
impl DiscoveryStore for SqliteStore {
    async fn projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        self.run(|db| db.projects()).await
    }

    async fn project(&self, id: u64) -> Result<Option<ProjectRecord>, StoreError> {
        self.run(move |db| db.project(id)).await
    }

    async fn save_scans(&self, scans: &[ProjectScan]) -> Result<(), StoreError> {
        let scans = scans.to_vec();
        self.run(move |db| db.save_scans(&scans)).await
    }

    async fn update_records(&self, records: &[ProjectRecord]) -> Result<(), StoreError> {
        let records = records.to_vec();
        self.run(move |db| db.update_records(&records)).await
    }

    async fn remove_projects(&self, ids: &[u64]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.run(move |db| db.remove_projects(&ids)).await
    }

    async fn file_blobs(&self) -> Result<HashMap<u64, FileBlobs>, StoreError> {
        self.run(|db| db.file_blobs()).await
    }

    async fn project_file_blobs(&self, id: u64) -> Result<FileBlobs, StoreError> {
        self.run(move |db| db.project_file_blobs(id)).await
    }

    async fn project_findings(
        &self,
        id: u64,
    ) -> Result<(Vec<Reference>, Vec<Warning>), StoreError> {
        self.run(move |db| db.project_findings(id)).await
    }

    async fn references(&self) -> Result<Vec<(String, Reference)>, StoreError> {
        self.run(|db| db.references()).await
    }

    async fn replace_resolution(&self, resolution: &Resolution) -> Result<(), StoreError> {
        let resolution = resolution.clone();
        self.run(move |db| db.replace_resolution(&resolution)).await
    }

    async fn resolve_input(&self) -> Result<ResolveInput, StoreError> {
        self.run(|db| db.resolve_input()).await
    }

    async fn replace_resolution_from(
        &self,
        resolution: &Resolution,
        read: &ResolveVersions,
    ) -> Result<ReplaceOutcome, StoreError> {
        let (resolution, read) = (resolution.clone(), read.clone());
        self.run(move |db| db.replace_resolution_from(&resolution, &read))
            .await
    }

    async fn resolve_project(
        &self,
        id: u64,
        rule: &PrefixRule,
        derive: DeriveFn,
    ) -> Result<Option<Resolution>, StoreError> {
        let rule = rule.clone();
        self.run(move |db| db.resolve_project(id, &rule, derive))
            .await
    }

    async fn upstream_edges(&self, downstream: &str) -> Result<Vec<Edge>, StoreError> {
        let downstream = downstream.to_owned();
        self.run(move |db| db.upstream_edges(&downstream)).await
    }

    async fn edges(&self) -> Result<Vec<Edge>, StoreError> {
        self.run(|db| db.edges()).await
    }

    async fn externals(&self) -> Result<Vec<External>, StoreError> {
        self.run(|db| db.externals()).await
    }

    async fn warnings(&self) -> Result<Vec<Warning>, StoreError> {
        self.run(|db| db.warnings()).await
    }

    async fn hook_fingerprints(&self) -> Result<HashMap<u64, String>, StoreError> {
        self.run(|db| db.hook_fingerprints()).await
    }

    async fn update_hook_fingerprints(
        &self,
        set: &[(u64, String)],
        forget: &[u64],
    ) -> Result<(), StoreError> {
        let (set, forget) = (set.to_vec(), forget.to_vec());
        self.run(move |db| db.update_hook_fingerprints(&set, &forget))
            .await
    }
}

#[async_trait]
impl OrchestrationStore for SqliteStore {
    async fn insert_event(
        &self,
        delivery_key: &str,
        kind: &str,
        body: &str,
    ) -> Result<Option<i64>, StoreError> {
        let (key, kind, body) = (delivery_key.to_owned(), kind.to_owned(), body.to_owned());
        self.run(move |db| db.insert_event(&key, &kind, &body))
            .await
    }

    async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Option<i64>>, StoreError> {
        let events = events.to_vec();
        self.run(move |db| db.insert_events(&events)).await
    }

    async fn unprocessed_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.run(move |db| db.unprocessed_events(limit)).await
    }

    async fn commit_cascade(
        &self,
        changes: &[(String, Option<&ProjectState>)],
        counters: Counters,
        processed_up_to: Option<i64>,
        activity: Activity<'_>,
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        let fence = fence.map(|l| l.epoch);
        let (at_ms, lines) = (activity.at_ms, activity.lines.to_vec());
        // Encoded here: the blocking thread gets owned rows, the caller keeps its state.
        let changes = changes
            .iter()
            .map(|(p, state)| Ok((p.clone(), state.map(serde_json::to_string).transpose()?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        let counters = serde_json::to_string(&counters)?;
        self.run(move |db| {
            db.commit_cascade(&changes, &counters, processed_up_to, (at_ms, &lines), fence)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let holder = holder.to_owned();
        let ttl = ttl_ms(ttl);
        self.run(move |db| db.acquire_lease(&holder, ttl)).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let lease = lease.clone();
        let ttl = ttl_ms(ttl);
        self.run(move |db| db.renew_lease(&lease, ttl)).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.run(move |db| db.release_lease(&lease)).await
    }

    async fn lease(&self) -> Result<Option<LeaseInfo>, StoreError> {
        self.run(|db| db.lease()).await
    }

    async fn prune_events(&self, received_before_ms: i64) -> Result<usize, StoreError> {
        self.run(move |db| db.prune_events(received_before_ms))
            .await
    }

    async fn cascade_state(&self) -> Result<Option<StoredCascade>, StoreError> {
        let Some((counters, projects)) = self.run(|db| db.cascade_state()).await? else {
            return Ok(None);
        };
        Ok(Some(StoredCascade {
            counters: serde_json::from_str(&counters)?,
            projects: projects
                .into_iter()
                .map(|(p, state)| Ok((p, serde_json::from_str(&state)?)))
                .collect::<Result<_, serde_json::Error>>()?,
        }))
    }

    async fn recent_activity(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        self.run(move |db| db.recent_activity(limit)).await
    }
}

/// The wall clock the lease goes by, in Unix ms: one machine's clock, the only one a SQLite
/// database is shared under.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The behaviour every store shares is tested in `super::super::conformance`; these cover what
    // is SQLite's own: migrations and the separate read connection.
    crate::store_conformance_tests!(sqlite_file, || async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        (
            std::sync::Arc::new(store) as std::sync::Arc<dyn crate::store::Store>,
            Box::new(dir) as Box<dyn std::any::Any + Send>,
        )
    });

    crate::store_conformance_tests!(sqlite_memory, || async {
        let store = SqliteStore::in_memory().unwrap();
        (
            std::sync::Arc::new(store) as std::sync::Arc<dyn crate::store::Store>,
            Box::new(()) as Box<dyn std::any::Any + Send>,
        )
    });

    #[tokio::test]
    async fn a_thread_of_its_own_checkpoints_the_log_and_commits_never_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let s = SqliteStore::open(&path).unwrap();
        let writer_checkpoints: i64 = s
            .inner
            .conn()
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(writer_checkpoints, 0);
        // About 6 MB into the log in one commit: past the 1,000 pages at which a writer would
        // checkpoint by itself.
        {
            let mut writer = s.inner.conn();
            let tx = writer.transaction().unwrap();
            for i in 0..1500 {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                    params![format!("k{i}"), "x".repeat(4000)],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        // The pages reach the database file with no further commit.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&path).unwrap().len() < 6_000_000 {
            assert!(std::time::Instant::now() < deadline, "never checkpointed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn reads_go_on_while_another_process_holds_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let s = SqliteStore::open(&path).unwrap();
        s.set_meta("k", "v").await.unwrap();
        let mut other = Connection::open(&path).unwrap();
        let tx = other
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .unwrap();
        tx.execute("INSERT INTO meta (key, value) VALUES ('held', '1')", [])
            .unwrap();
        // The read connection sees the last commit without waiting for the lock (a wait would
        // take the whole busy timeout and then fail).
        assert_eq!(s.meta("k").await.unwrap().as_deref(), Some("v"));
        assert_eq!(s.meta("held").await.unwrap(), None);
        tx.commit().unwrap();
        assert_eq!(s.meta("held").await.unwrap().as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn migrations_run_once_and_reopen_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/db.sqlite");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.set_meta("k", "v").await.unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.meta("k").await.unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn migration_3_splits_the_version_2_state_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..2] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 2).unwrap();
            tx.execute(
                "INSERT INTO cascade_state (id, state) VALUES (1, ?1)",
                [r#"{"projects":{"g/a":{"stale":null},"g/b":{"failed":null}},"next_attempt":4,"next_cascade":2}"#],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let stored = s.inner.cascade_state().unwrap().unwrap();
        assert_eq!(stored.0, r#"{"next_attempt":4,"next_cascade":2}"#);
        assert_eq!(
            stored.1,
            [
                ("g/a".to_owned(), r#"{"stale":null}"#.to_owned()),
                ("g/b".to_owned(), r#"{"failed":null}"#.to_owned())
            ]
        );
    }
    #[tokio::test]
    async fn a_new_database_and_its_journal_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let s = SqliteStore::open(&path).unwrap();
        s.set_meta("k", "v").await.unwrap();
        for file in [path.clone(), dir.path().join("db.sqlite-wal")] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }

    #[test]
    fn a_file_that_is_no_database_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(
            &path,
            "not a database, but long enough to have a header page\n".repeat(20),
        )
        .unwrap();
        let err = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("cannot open database {}: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).err().unwrap();
        assert!(err.to_string().contains("upgrade gitlab-deps"), "{err}");
    }
    #[test]
    fn migration_4_keys_existing_registry_prefixes_and_versions_references() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute(
                "INSERT INTO projects (id, path, registry_prefix) VALUES (1, 'G/A', 'HTTPS://Reg:5050/g/a/'), (2, 'g/b', NULL)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let conn = s.inner.conn();
        let keys: Vec<(i64, Option<String>, i64)> = conn
            .prepare("SELECT id, registry_key, refs_version FROM projects ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, [(1, Some("reg:5050/g/a".into()), 0), (2, None, 0)]);
    }
}
