//! The embedded SQLite store: one file, WAL journal, one connection behind a mutex (SQLite
//! serialises writers anyway, and every operation here is short).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::migrations::MIGRATIONS;
use super::{
    Edge, External, FileBlobs, NewEvent, ProjectRecord, ProjectScan, RefKind, Reference,
    Resolution, Store, StoreError, StoredCascade, StoredEvent, Warning,
};

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: shown.clone(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| StoreError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::init(conn, &shown)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        Self::init(conn, ":memory:")
    }

    fn init(mut conn: Connection, shown: &str) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL lets the CLI read while the service writes; NORMAL sync keeps every commit safe
        // against a killed process (not against power loss, where the last commits may be lost).
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
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied transaction (SQLite rolls it
        // back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn upsert_record(tx: &rusqlite::Transaction<'_>, r: &ProjectRecord) -> Result<(), StoreError> {
    // A renamed project keeps its id; free its new path from a stale row first.
    tx.execute(
        "DELETE FROM projects WHERE path = ?1 AND id != ?2",
        params![r.path, r.id as i64],
    )?;
    tx.execute(
        "INSERT INTO projects (id, path, default_branch, web_url, registry_prefix, last_activity_at, head_sha, checked_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(id) DO UPDATE SET path = excluded.path, default_branch = excluded.default_branch,
           web_url = excluded.web_url, registry_prefix = excluded.registry_prefix,
           last_activity_at = excluded.last_activity_at, head_sha = excluded.head_sha,
           checked_at_ms = excluded.checked_at_ms",
        params![
            r.id as i64,
            r.path,
            r.default_branch,
            r.web_url,
            r.registry_prefix,
            r.last_activity_at,
            r.head_sha,
            r.checked_at_ms
        ],
    )?;
    Ok(())
}

const PROJECT_COLUMNS: &str = "SELECT id, path, default_branch, web_url, registry_prefix, last_activity_at, head_sha, checked_at_ms FROM projects";

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

impl Store for SqliteStore {
    fn projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{PROJECT_COLUMNS} ORDER BY path"))?;
        let rows = stmt.query_map([], read_project)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn project(&self, id: u64) -> Result<Option<ProjectRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{PROJECT_COLUMNS} WHERE id = ?1"))?;
        Ok(stmt.query_row([id as i64], read_project).optional()?)
    }

    fn save_scans(&self, scans: &[ProjectScan]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for scan in scans {
            upsert_record(&tx, &scan.record)?;
            let id = scan.record.id as i64;
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
        let conn = self.conn();
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
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT file, blob_id FROM project_files WHERE project_id = ?1")?;
        let rows = stmt.query_map([id as i64], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn project_findings(&self, id: u64) -> Result<(Vec<Reference>, Vec<Warning>), StoreError> {
        let conn = self.conn();
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
        for id in ids {
            tx.execute("DELETE FROM projects WHERE id = ?1", [*id as i64])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn references(&self) -> Result<Vec<(String, Reference)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT p.path, r.kind, r.file, r.line, r.value FROM refs r JOIN projects p ON p.id = r.project_id
             ORDER BY p.path, r.file, r.line",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                Reference {
                    kind: RefKind::parse(&row.get::<_, String>(1)?),
                    file: row.get(2)?,
                    line: row.get::<_, i64>(3)? as u32,
                    value: row.get(4)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn replace_resolution(&self, resolution: &Resolution) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute_batch(
            "DELETE FROM edges; DELETE FROM externals; DELETE FROM resolve_warnings;",
        )?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO edges (upstream, downstream, via) VALUES (?1, ?2, ?3)",
            )?;
            for e in &resolution.edges {
                ins.execute(params![e.upstream, e.downstream, e.via])?;
            }
            let mut ext = tx.prepare_cached(
                "INSERT OR IGNORE INTO externals (project, image) VALUES (?1, ?2)",
            )?;
            for e in &resolution.externals {
                ext.execute(params![e.project, e.image])?;
            }
            let mut warn = tx.prepare_cached(
                "INSERT INTO resolve_warnings (project, file, line, message) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for w in &resolution.warnings {
                warn.execute(params![w.project, w.file, w.line, w.message])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn edges(&self) -> Result<Vec<Edge>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT upstream, downstream, via FROM edges ORDER BY downstream, upstream",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(Edge {
                upstream: row.get(0)?,
                downstream: row.get(1)?,
                via: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn externals(&self) -> Result<Vec<External>, StoreError> {
        let conn = self.conn();
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
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT p.path, w.file, w.line, w.message FROM scan_warnings w JOIN projects p ON p.id = w.project_id
             UNION ALL SELECT project, file, line, message FROM resolve_warnings
             ORDER BY 1, 2, 3",
        )?;
        let rows = stmt.query_map([], read_warning)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
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
        let conn = self.conn();
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
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
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
        tx.commit()?;
        Ok(())
    }

    fn prune_events(&self, received_before_ms: i64) -> Result<usize, StoreError> {
        let conn = self.conn();
        Ok(conn.execute(
            "DELETE FROM events WHERE processed = 1 AND received_ms < ?1",
            [received_before_ms],
        )?)
    }

    fn cascade_state(&self) -> Result<Option<StoredCascade>, StoreError> {
        let conn = self.conn();
        let Some(counters) = conn
            .query_row("SELECT state FROM cascade_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt =
            conn.prepare_cached("SELECT project, state FROM cascade_projects ORDER BY project")?;
        let projects = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Some(StoredCascade { counters, projects }))
    }

    fn log_activity(&self, at_ms: i64, lines: &[String]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut ins =
                tx.prepare_cached("INSERT INTO activity (at_ms, line) VALUES (?1, ?2)")?;
            for line in lines {
                ins.execute(params![at_ms, line])?;
            }
            tx.execute(
                "DELETE FROM activity WHERE seq <= (SELECT MAX(seq) FROM activity) - 10000",
                [],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn recent_activity(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT at_ms, line FROM activity ORDER BY seq DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, path: &str) -> ProjectRecord {
        ProjectRecord {
            id,
            path: path.into(),
            default_branch: Some("main".into()),
            web_url: format!("https://g/{path}"),
            registry_prefix: None,
            last_activity_at: None,
            head_sha: Some("abc".into()),
            checked_at_ms: None,
        }
    }

    fn scan(id: u64, path: &str, refs: &[&str]) -> ProjectScan {
        ProjectScan {
            record: record(id, path),
            refs: refs
                .iter()
                .enumerate()
                .map(|(i, v)| Reference {
                    kind: RefKind::Image,
                    file: "Dockerfile".into(),
                    line: i as u32 + 1,
                    value: (*v).into(),
                })
                .collect(),
            warnings: vec![],
            files: FileBlobs::from([("Dockerfile".to_owned(), format!("blob-{id}"))]),
        }
    }

    #[test]
    fn a_rescan_replaces_a_projects_references() {
        let s = SqliteStore::in_memory().unwrap();
        s.save_scans(&[scan(1, "g/a", &["x", "y"]), scan(2, "g/b", &["z"])])
            .unwrap();
        s.save_scans(&[scan(1, "g/a", &["w"])]).unwrap();
        let refs = s.references().unwrap();
        let values: Vec<_> = refs
            .iter()
            .map(|(p, r)| format!("{p}={}", r.value))
            .collect();
        assert_eq!(values, ["g/a=w", "g/b=z"]);
    }

    #[test]
    fn file_blobs_and_findings_are_kept_per_project() {
        let s = SqliteStore::in_memory().unwrap();
        let mut a = scan(1, "g/a", &["x", "y"]);
        a.warnings.push(Warning {
            project: "g/a".into(),
            file: Some("Dockerfile".into()),
            line: Some(2),
            message: "odd".into(),
        });
        s.save_scans(&[a.clone(), scan(2, "g/b", &["z"])]).unwrap();
        assert_eq!(s.project_file_blobs(1).unwrap(), a.files);
        assert_eq!(s.file_blobs().unwrap().len(), 2);
        let (refs, warnings) = s.project_findings(1).unwrap();
        assert_eq!((refs, warnings), (a.refs.clone(), a.warnings.clone()));
        // A re-read replaces the blob ids; removing the project drops them.
        let mut again = scan(1, "g/a", &[]);
        again.files.clear();
        s.save_scans(&[again]).unwrap();
        assert!(s.project_file_blobs(1).unwrap().is_empty());
        s.remove_projects(&[2]).unwrap();
        assert!(s.file_blobs().unwrap().is_empty());
    }

    #[test]
    fn a_rename_keeps_the_id_and_removing_cascades() {
        let s = SqliteStore::in_memory().unwrap();
        s.save_scans(&[scan(1, "g/a", &["x"])]).unwrap();
        s.update_records(&[record(1, "g/renamed")]).unwrap();
        assert_eq!(s.references().unwrap()[0].0, "g/renamed");
        assert_eq!(s.project(1).unwrap().unwrap().path, "g/renamed");
        s.remove_projects(&[1]).unwrap();
        assert!(s.project(1).unwrap().is_none());
        assert!(s.references().unwrap().is_empty());
        assert!(s.projects().unwrap().is_empty());
    }

    #[test]
    fn events_are_deduplicated_by_delivery_key() {
        let s = SqliteStore::in_memory().unwrap();
        assert!(
            s.insert_event("k1", "Pipeline Hook", "{}")
                .unwrap()
                .is_some()
        );
        assert!(
            s.insert_event("k1", "Pipeline Hook", "{}")
                .unwrap()
                .is_none()
        );
        let seq = s.insert_event("k2", "Push Hook", "{}").unwrap();
        assert_eq!(s.unprocessed_events(10).unwrap().len(), 2);
        s.commit_cascade(&[("g/a".into(), Some(r#"{"x":1}"#.into()))], "{}", seq)
            .unwrap();
        assert!(s.unprocessed_events(10).unwrap().is_empty());
        assert_eq!(s.prune_events(crate::util::now_ms() + 1).unwrap(), 2);
        // A pruned delivery key is forgotten: only keys younger than the retention deduplicate.
        assert!(
            s.insert_event("k1", "Pipeline Hook", "{}")
                .unwrap()
                .is_some()
        );
        let stored = s.cascade_state().unwrap().unwrap();
        assert_eq!(stored.counters, "{}");
        assert_eq!(
            stored.projects,
            [("g/a".to_owned(), r#"{"x":1}"#.to_owned())]
        );
        s.commit_cascade(&[("g/a".into(), None)], "{}", None)
            .unwrap();
        assert!(s.cascade_state().unwrap().unwrap().projects.is_empty());
    }

    #[test]
    fn a_batch_of_events_is_deduplicated_within_and_across_batches() {
        let s = SqliteStore::in_memory().unwrap();
        let e = |k: &str| NewEvent {
            delivery_key: k.into(),
            kind: "Push Hook".into(),
            body: "{}".into(),
        };
        s.insert_event("a", "Push Hook", "{}").unwrap();
        let got = s.insert_events(&[e("a"), e("b"), e("b"), e("c")]).unwrap();
        assert!(got[0].is_none() && got[1].is_some() && got[2].is_none() && got[3].is_some());
        assert_eq!(s.unprocessed_events(10).unwrap().len(), 3);
    }

    #[test]
    fn migrations_run_once_and_reopen_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/db.sqlite");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.set_meta("k", "v").unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.meta("k").unwrap().as_deref(), Some("v"));
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
        let stored = s.cascade_state().unwrap().unwrap();
        assert_eq!(stored.counters, r#"{"next_attempt":4,"next_cascade":2}"#);
        assert_eq!(
            stored.projects,
            [
                ("g/a".to_owned(), r#"{"stale":null}"#.to_owned()),
                ("g/b".to_owned(), r#"{"failed":null}"#.to_owned())
            ]
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
}
