//! The discovery half on PostgreSQL. Every writer of projects, references or derived rows takes
//! the discovery advisory lock first, so writers are serialised as on SQLite and a resolve reads
//! and writes with nobody in between. Batches go in one statement each (`unnest` arrays).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::IsolationLevel;
use tokio_postgres::Row;

use super::{LOCK_DISCOVERY, PostgresStore, sql_id};
use crate::discover::image::normalise_prefix;
use crate::store::{
    DeriveFn, DiscoveryStore, Edge, External, FileBlobs, MetaStore, PrefixRule, ProjectRecord,
    ProjectScan, RefKind, Reference, ReplaceOutcome, Resolution, ResolveInput, ResolveLookup,
    ResolveVersions, StoreError, Warning,
};

const CATALOG_KEY: &str = "resolve.catalog_version";

const PROJECT_COLUMNS: &str = "SELECT id, path, default_branch, web_url, registry_prefix, last_activity_at, head_sha, checked_at_ms, refs_version FROM projects";
const REFERENCES_SQL: &str = "SELECT p.path, r.kind, r.file, r.line, r.value FROM refs r JOIN projects p ON p.id = r.project_id
     ORDER BY p.path, r.file, r.line, r.seq";

pub(super) async fn lock(tx: &Transaction<'_>, key: i64) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await?;
    tx.execute(&stmt, &[&key]).await?;
    Ok(())
}

fn read_project(row: &Row) -> ProjectRecord {
    ProjectRecord {
        id: row.get::<_, i64>(0) as u64,
        path: row.get(1),
        default_branch: row.get(2),
        web_url: row.get(3),
        registry_prefix: row.get(4),
        last_activity_at: row.get(5),
        head_sha: row.get(6),
        checked_at_ms: row.get(7),
    }
}

fn read_reference(row: &Row, from: usize) -> Reference {
    Reference {
        kind: RefKind::parse(row.get::<_, &str>(from)),
        file: row.get(from + 1),
        line: u32::try_from(row.get::<_, i64>(from + 2)).unwrap_or(u32::MAX),
        value: row.get(from + 3),
    }
}

fn read_warning(row: &Row) -> Warning {
    Warning {
        project: row.get(0),
        file: row.get(1),
        line: row
            .get::<_, Option<i64>>(2)
            .map(|l| u32::try_from(l).unwrap_or(u32::MAX)),
        message: row.get(3),
    }
}

fn read_edge(row: &Row) -> Edge {
    Edge {
        upstream: row.get(0),
        downstream: row.get(1),
        via: row.get(2),
    }
}

async fn catalog_version(tx: &Transaction<'_>) -> Result<i64, StoreError> {
    let stmt = tx
        .prepare_cached("SELECT value FROM meta WHERE key = $1")
        .await?;
    let value: Option<String> = tx
        .query_opt(&stmt, &[&CATALOG_KEY])
        .await?
        .map(|r| r.get(0));
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

async fn bump_catalog(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES ($1, '1')
             ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text",
        )
        .await?;
    tx.execute(&stmt, &[&CATALOG_KEY]).await?;
    Ok(())
}

/// Upserts project records as SQLite does one by one (see `upsert_record` there), in three
/// statements: what the batch touches is read, the one-by-one outcome is worked out here (renames,
/// paths taken over from stale rows, which projects moved the catalog), then stale rows are
/// deleted and the records written. `extra` is added to each project's references version (per
/// occurrence). Returns the ids written, in batch order.
async fn upsert_records(
    tx: &Transaction<'_>,
    records: &[&ProjectRecord],
    extra: i64,
) -> Result<Vec<i64>, StoreError> {
    let ids: Vec<i64> = records.iter().map(|r| sql_id(r.id)).collect();
    let paths: Vec<&str> = records.iter().map(|r| r.path.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT id, path, registry_prefix FROM projects WHERE id = ANY($1::bigint[]) OR path = ANY($2::text[])",
        )
        .await?;
    let mut by_id: HashMap<i64, (String, Option<String>)> = HashMap::new();
    let mut by_path: HashMap<String, i64> = HashMap::new();
    for row in tx.query(&stmt, &[&ids, &paths]).await? {
        let (id, path, prefix): (i64, String, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        by_path.insert(path.clone(), id);
        by_id.insert(id, (path, prefix));
    }
    let existed: HashSet<i64> = by_id.keys().copied().collect();
    // Per id: the record written (the last one) and how much its version goes up.
    let mut order: Vec<i64> = Vec::new();
    let mut rows: HashMap<i64, (&ProjectRecord, i64)> = HashMap::new();
    let mut deleted: Vec<i64> = Vec::new();
    let mut catalog_moved = false;
    for r in records {
        let id = sql_id(r.id);
        let moved = by_id
            .get(&id)
            .is_none_or(|(path, prefix)| *path != r.path || *prefix != r.registry_prefix);
        // A renamed project keeps its id; a stale row holding its new path goes.
        if let Some(&other) = by_path.get(&r.path)
            && other != id
        {
            by_id.remove(&other);
            by_path.remove(&r.path);
            rows.remove(&other);
            deleted.push(other);
            catalog_moved = true;
        }
        catalog_moved |= moved;
        if let Some((old, _)) = by_id.insert(id, (r.path.clone(), r.registry_prefix.clone())) {
            by_path.remove(&old);
        }
        by_path.insert(r.path.clone(), id);
        let bump = i64::from(moved) + extra;
        match rows.get_mut(&id) {
            Some(entry) => *entry = (r, entry.1 + bump),
            None => {
                order.push(id);
                rows.insert(id, (r, bump));
            }
        }
    }
    // Written once each, in the order first seen (an id freed and taken up again is listed twice).
    let mut listed = HashSet::new();
    order.retain(|id| rows.contains_key(id) && listed.insert(*id));
    if !deleted.is_empty() {
        let stmt = tx
            .prepare_cached("DELETE FROM projects WHERE id = ANY($1::bigint[])")
            .await?;
        tx.execute(&stmt, &[&deleted]).await?;
    }
    let mut cols = RecordColumns::default();
    for id in &order {
        let (r, bump) = rows[id];
        // A row deleted above and written again starts over, as a new row does.
        let fresh = !existed.contains(id) || deleted.contains(id);
        // New rows start at `extra`; existing ones go up by `bump` (in the conflict branch).
        cols.push(r, if fresh { extra } else { bump });
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO projects (id, path, default_branch, web_url, registry_prefix, last_activity_at,
                 head_sha, checked_at_ms, registry_key, refs_version)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::text[], $8::bigint[], $9::text[], $10::bigint[])
             ON CONFLICT (id) DO UPDATE SET path = excluded.path, default_branch = excluded.default_branch,
                 web_url = excluded.web_url, registry_prefix = excluded.registry_prefix,
                 last_activity_at = excluded.last_activity_at, head_sha = excluded.head_sha,
                 checked_at_ms = excluded.checked_at_ms, registry_key = excluded.registry_key,
                 refs_version = projects.refs_version + excluded.refs_version",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &order,
            &cols.path,
            &cols.default_branch,
            &cols.web_url,
            &cols.registry_prefix,
            &cols.last_activity_at,
            &cols.head_sha,
            &cols.checked_at_ms,
            &cols.registry_key,
            &cols.version,
        ],
    )
    .await?;
    if catalog_moved {
        bump_catalog(tx).await?;
    }
    Ok(order)
}

/// Project records as columns, for `unnest`.
#[derive(Default)]
struct RecordColumns<'a> {
    path: Vec<&'a str>,
    default_branch: Vec<Option<&'a str>>,
    web_url: Vec<&'a str>,
    registry_prefix: Vec<Option<&'a str>>,
    last_activity_at: Vec<Option<&'a str>>,
    head_sha: Vec<Option<&'a str>>,
    checked_at_ms: Vec<Option<i64>>,
    registry_key: Vec<Option<String>>,
    /// For a new row its references version, for an existing one the increment.
    version: Vec<i64>,
}

impl<'a> RecordColumns<'a> {
    fn push(&mut self, r: &'a ProjectRecord, version: i64) {
        self.path.push(&r.path);
        self.default_branch.push(r.default_branch.as_deref());
        self.web_url.push(&r.web_url);
        self.registry_prefix.push(r.registry_prefix.as_deref());
        self.last_activity_at.push(r.last_activity_at.as_deref());
        self.head_sha.push(r.head_sha.as_deref());
        self.checked_at_ms.push(r.checked_at_ms);
        self.registry_key
            .push(r.registry_prefix.as_deref().map(normalise_prefix));
        self.version.push(version);
    }
}

/// Inserts derived rows, leaving out those of the projects in `skip`.
async fn insert_resolution(
    tx: &Transaction<'_>,
    resolution: &Resolution,
    skip: &HashSet<String>,
) -> Result<(), StoreError> {
    let edges: Vec<&Edge> = resolution
        .edges
        .iter()
        .filter(|e| !skip.contains(&e.downstream))
        .collect();
    if !edges.is_empty() {
        let up: Vec<&str> = edges.iter().map(|e| e.upstream.as_str()).collect();
        let down: Vec<&str> = edges.iter().map(|e| e.downstream.as_str()).collect();
        let via: Vec<&str> = edges.iter().map(|e| e.via.as_str()).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO edges (upstream, downstream, via)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&stmt, &[&up, &down, &via]).await?;
    }
    let externals: Vec<&External> = resolution
        .externals
        .iter()
        .filter(|e| !skip.contains(&e.project))
        .collect();
    if !externals.is_empty() {
        let project: Vec<&str> = externals.iter().map(|e| e.project.as_str()).collect();
        let image: Vec<&str> = externals.iter().map(|e| e.image.as_str()).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO externals (project, image)
                 SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&stmt, &[&project, &image]).await?;
    }
    let warnings: Vec<&Warning> = resolution
        .warnings
        .iter()
        .filter(|w| !skip.contains(&w.project))
        .collect();
    if !warnings.is_empty() {
        let project: Vec<&str> = warnings.iter().map(|w| w.project.as_str()).collect();
        let file: Vec<Option<&str>> = warnings.iter().map(|w| w.file.as_deref()).collect();
        let line: Vec<Option<i64>> = warnings.iter().map(|w| w.line.map(i64::from)).collect();
        let message: Vec<&str> = warnings.iter().map(|w| w.message.as_str()).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO resolve_warnings (project, file, line, message)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])",
            )
            .await?;
        tx.execute(&stmt, &[&project, &file, &line, &message])
            .await?;
    }
    Ok(())
}

async fn delete_all_derived(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute("DELETE FROM edges; DELETE FROM externals; DELETE FROM resolve_warnings;")
        .await?;
    Ok(())
}

/// The stored derived rows of the given projects.
async fn stored_resolution_of(
    tx: &Transaction<'_>,
    projects: &[String],
) -> Result<Resolution, StoreError> {
    let edges = tx
        .prepare_cached(
            "SELECT upstream, downstream, via FROM edges WHERE downstream = ANY($1::text[])",
        )
        .await?;
    let externals = tx
        .prepare_cached("SELECT project, image FROM externals WHERE project = ANY($1::text[])")
        .await?;
    let warnings = tx
        .prepare_cached(
            "SELECT project, file, line, message FROM resolve_warnings WHERE project = ANY($1::text[])",
        )
        .await?;
    Ok(Resolution {
        edges: tx
            .query(&edges, &[&projects])
            .await?
            .iter()
            .map(read_edge)
            .collect(),
        externals: tx
            .query(&externals, &[&projects])
            .await?
            .iter()
            .map(|r| External {
                project: r.get(0),
                image: r.get(1),
            })
            .collect(),
        warnings: tx
            .query(&warnings, &[&projects])
            .await?
            .iter()
            .map(read_warning)
            .collect(),
    })
}

/// A look-up asked by `derive` (on a blocking thread) and answered inside the transaction.
enum Ask {
    Path(String, oneshot::Sender<Result<Option<String>, StoreError>>),
    Prefix(String, oneshot::Sender<Result<Option<String>, StoreError>>),
}

/// [`ResolveLookup`] for `derive`: each look-up goes to the task holding the transaction and
/// waits for its answer.
struct AskLookup {
    asks: mpsc::UnboundedSender<Ask>,
}

impl AskLookup {
    fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Option<String>, StoreError>>) -> Ask,
    ) -> Result<Option<String>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.asks
            .send(make(reply))
            .map_err(|_| StoreError::Worker("the resolve transaction ended".into()))?;
        answer
            .blocking_recv()
            .map_err(|_| StoreError::Worker("the resolve transaction ended".into()))?
    }
}

impl ResolveLookup for AskLookup {
    fn project_by_path(&mut self, path: &str) -> Result<Option<String>, StoreError> {
        self.ask(|reply| Ask::Path(path.to_owned(), reply))
    }

    fn project_by_prefix(&mut self, prefix: &str) -> Result<Option<String>, StoreError> {
        self.ask(|reply| Ask::Prefix(prefix.to_owned(), reply))
    }
}

async fn project_by_path(tx: &Transaction<'_>, path: &str) -> Result<Option<String>, StoreError> {
    // SQLite's lower() folds ASCII only; so does PostgreSQL's under the "C" collation.
    let stmt = tx
        .prepare_cached(
            "SELECT path FROM projects WHERE lower(path) = lower($1::text COLLATE \"C\") ORDER BY path LIMIT 1",
        )
        .await?;
    Ok(tx.query_opt(&stmt, &[&path]).await?.map(|r| r.get(0)))
}

async fn project_by_prefix(
    tx: &Transaction<'_>,
    rule: &PrefixRule,
    prefix: &str,
) -> Result<Option<String>, StoreError> {
    let mut found: Vec<String> = Vec::new();
    if rule.reported {
        let stmt = tx
            .prepare_cached(
                "SELECT path FROM projects WHERE registry_key = $1 ORDER BY path LIMIT 1",
            )
            .await?;
        found.extend(tx.query_opt(&stmt, &[&prefix]).await?.map(|r| r.get(0)));
    }
    // A derived prefix is the base and the lowercase path.
    let derived = prefix
        .strip_prefix(rule.base.as_str())
        .and_then(|rest| rest.strip_prefix('/'));
    if let Some(path) = derived {
        let sql = if rule.reported {
            "SELECT path FROM projects WHERE lower(path) = $1
               AND (registry_prefix IS NULL OR registry_prefix = '') ORDER BY path LIMIT 1"
        } else {
            "SELECT path FROM projects WHERE lower(path) = $1 ORDER BY path LIMIT 1"
        };
        let stmt = tx.prepare_cached(sql).await?;
        found.extend(tx.query_opt(&stmt, &[&path]).await?.map(|r| r.get(0)));
    }
    Ok(found.into_iter().min())
}

#[async_trait]
impl MetaStore for PostgresStore {
    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT value FROM meta WHERE key = $1")
            .await?;
        Ok(client.query_opt(&stmt, &[&key]).await?.map(|r| r.get(0)))
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .await?;
        client.execute(&stmt, &[&key, &value]).await?;
        Ok(())
    }
}

#[async_trait]
impl DiscoveryStore for PostgresStore {
    async fn projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("{PROJECT_COLUMNS} ORDER BY path"))
            .await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(read_project)
            .collect())
    }

    async fn project(&self, id: u64) -> Result<Option<ProjectRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("{PROJECT_COLUMNS} WHERE id = $1"))
            .await?;
        Ok(client
            .query_opt(&stmt, &[&sql_id(id)])
            .await?
            .as_ref()
            .map(read_project))
    }

    async fn save_scans(&self, scans: &[ProjectScan]) -> Result<(), StoreError> {
        if scans.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_DISCOVERY).await?;
        let records: Vec<&ProjectScan> = scans.iter().collect();
        let written = upsert_records(
            &tx,
            &records.iter().map(|s| &s.record).collect::<Vec<_>>(),
            1,
        )
        .await?;
        // Per project, its last scan's findings.
        let last: HashMap<i64, &ProjectScan> =
            scans.iter().map(|s| (sql_id(s.record.id), s)).collect();
        let (mut r_id, mut r_kind, mut r_file, mut r_line, mut r_value) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut w_id, mut w_file, mut w_line, mut w_message) = (vec![], vec![], vec![], vec![]);
        let (mut f_id, mut f_file, mut f_blob) = (vec![], vec![], vec![]);
        for id in &written {
            let Some(scan) = last.get(id) else { continue };
            for r in &scan.refs {
                r_id.push(*id);
                r_kind.push(r.kind.as_str());
                r_file.push(r.file.as_str());
                r_line.push(i64::from(r.line));
                r_value.push(r.value.as_str());
            }
            for w in &scan.warnings {
                w_id.push(*id);
                w_file.push(w.file.as_deref());
                w_line.push(w.line.map(i64::from));
                w_message.push(w.message.as_str());
            }
            for (file, blob) in &scan.files {
                f_id.push(*id);
                f_file.push(file.as_str());
                f_blob.push(blob.as_str());
            }
        }
        let clear = tx
            .prepare_cached(
                "WITH a AS (DELETE FROM refs WHERE project_id = ANY($1::bigint[])),
                      b AS (DELETE FROM scan_warnings WHERE project_id = ANY($1::bigint[]))
                 DELETE FROM project_files WHERE project_id = ANY($1::bigint[])",
            )
            .await?;
        tx.execute(&clear, &[&written]).await?;
        // WITH ORDINALITY and ORDER BY: rows get their serial numbers in the order saved.
        let refs = tx
            .prepare_cached(
                "INSERT INTO refs (project_id, kind, file, line, value)
                 SELECT p, k, f, l, v FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[])
                     WITH ORDINALITY AS t(p, k, f, l, v, o) ORDER BY o",
            )
            .await?;
        let warnings = tx
            .prepare_cached(
                "INSERT INTO scan_warnings (project_id, file, line, message)
                 SELECT p, f, l, m FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[])
                     WITH ORDINALITY AS t(p, f, l, m, o) ORDER BY o",
            )
            .await?;
        let files = tx
            .prepare_cached(
                "INSERT INTO project_files (project_id, file, blob_id)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
            )
            .await?;
        // Sent together (pipelined): one round trip for the three.
        let refs_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&r_id, &r_kind, &r_file, &r_line, &r_value];
        let warnings_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&w_id, &w_file, &w_line, &w_message];
        let files_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&f_id, &f_file, &f_blob];
        tokio::try_join!(
            tx.execute(&refs, &refs_params),
            tx.execute(&warnings, &warnings_params),
            tx.execute(&files, &files_params),
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_records(&self, records: &[ProjectRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_DISCOVERY).await?;
        upsert_records(&tx, &records.iter().collect::<Vec<_>>(), 0).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_projects(&self, ids: &[u64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = ids.iter().copied().map(sql_id).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_DISCOVERY).await?;
        let stmt = tx
            .prepare_cached("DELETE FROM projects WHERE id = ANY($1::bigint[])")
            .await?;
        if tx.execute(&stmt, &[&ids]).await? > 0 {
            bump_catalog(&tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn file_blobs(&self) -> Result<HashMap<u64, FileBlobs>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT project_id, file, blob_id FROM project_files")
            .await?;
        let mut out: HashMap<u64, FileBlobs> = HashMap::new();
        for row in client.query(&stmt, &[]).await? {
            out.entry(row.get::<_, i64>(0) as u64)
                .or_default()
                .insert(row.get(1), row.get(2));
        }
        Ok(out)
    }

    async fn project_file_blobs(&self, id: u64) -> Result<FileBlobs, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT file, blob_id FROM project_files WHERE project_id = $1")
            .await?;
        Ok(client
            .query(&stmt, &[&sql_id(id)])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn project_findings(
        &self,
        id: u64,
    ) -> Result<(Vec<Reference>, Vec<Warning>), StoreError> {
        let client = self.client().await?;
        let refs = client
            .prepare_cached(
                "SELECT kind, file, line, value FROM refs WHERE project_id = $1 ORDER BY seq",
            )
            .await?;
        let warnings = client
            .prepare_cached(
                "SELECT p.path, w.file, w.line, w.message FROM scan_warnings w JOIN projects p ON p.id = w.project_id
                 WHERE w.project_id = $1 ORDER BY w.seq",
            )
            .await?;
        let id = sql_id(id);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
        let (refs, warnings) = tokio::try_join!(
            client.query(&refs, &params),
            client.query(&warnings, &params)
        )?;
        Ok((
            refs.iter().map(|r| read_reference(r, 0)).collect(),
            warnings.iter().map(read_warning).collect(),
        ))
    }

    async fn references(&self) -> Result<Vec<(String, Reference)>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(REFERENCES_SQL).await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| (r.get(0), read_reference(r, 1)))
            .collect())
    }

    async fn replace_resolution(&self, resolution: &Resolution) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_DISCOVERY).await?;
        delete_all_derived(&tx).await?;
        insert_resolution(&tx, resolution, &HashSet::new()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn resolve_input(&self) -> Result<ResolveInput, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for projects, references and versions.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut versions = ResolveVersions {
            catalog: catalog_version(&tx).await?,
            ..ResolveVersions::default()
        };
        let stmt = tx
            .prepare_cached(&format!("{PROJECT_COLUMNS} ORDER BY path"))
            .await?;
        let mut projects = Vec::new();
        for row in tx.query(&stmt, &[]).await? {
            let record = read_project(&row);
            versions
                .projects
                .insert(record.id, (record.path.clone(), row.get(8)));
            projects.push(record);
        }
        let stmt = tx.prepare_cached(REFERENCES_SQL).await?;
        let references = tx
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| (r.get(0), read_reference(r, 1)))
            .collect();
        tx.commit().await?;
        Ok(ResolveInput {
            projects,
            references,
            versions,
        })
    }

    async fn replace_resolution_from(
        &self,
        resolution: &Resolution,
        read: &ResolveVersions,
    ) -> Result<ReplaceOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, LOCK_DISCOVERY).await?;
        if catalog_version(&tx).await? != read.catalog {
            return Ok(ReplaceOutcome::CatalogMoved);
        }
        // Same catalog: same projects and paths; only references may have moved on.
        let stmt = tx
            .prepare_cached("SELECT id, path, refs_version FROM projects")
            .await?;
        let mut kept: Vec<String> = Vec::new();
        for row in tx.query(&stmt, &[]).await? {
            let id = row.get::<_, i64>(0) as u64;
            let now: (String, i64) = (row.get(1), row.get(2));
            if read.projects.get(&id) != Some(&now) {
                kept.push(now.0);
            }
        }
        let newer = if kept.is_empty() {
            Resolution::default()
        } else {
            stored_resolution_of(&tx, &kept).await?
        };
        delete_all_derived(&tx).await?;
        let skip: HashSet<String> = kept.iter().cloned().collect();
        insert_resolution(&tx, resolution, &skip).await?;
        insert_resolution(&tx, &newer, &HashSet::new()).await?;
        tx.commit().await?;
        kept.sort();
        Ok(ReplaceOutcome::Written { kept })
    }

    async fn resolve_project(
        &self,
        id: u64,
        rule: &PrefixRule,
        mut derive: DeriveFn,
    ) -> Result<Option<Resolution>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // No other discovery writer from the first read to the commit.
        lock(&tx, LOCK_DISCOVERY).await?;
        let stmt = tx
            .prepare_cached("SELECT path FROM projects WHERE id = $1")
            .await?;
        let Some(path) = tx
            .query_opt(&stmt, &[&sql_id(id)])
            .await?
            .map(|r| r.get::<_, String>(0))
        else {
            return Ok(None);
        };
        let stmt = tx
            .prepare_cached(
                "SELECT kind, file, line, value FROM refs WHERE project_id = $1 ORDER BY file, line, seq",
            )
            .await?;
        let refs: Vec<Reference> = tx
            .query(&stmt, &[&sql_id(id)])
            .await?
            .iter()
            .map(|r| read_reference(r, 0))
            .collect();
        // `derive` and its look-ups are synchronous: it runs on a blocking thread and asks this
        // task, which holds the transaction, for each look-up.
        let (asks, mut asked) = mpsc::unbounded_channel();
        let worker = tokio::task::spawn_blocking(move || {
            let mut lookup = AskLookup { asks };
            let resolution = derive(&path, &refs, &mut lookup);
            (path, resolution)
        });
        // Ends when `derive` returns (its look-up, the only sender, is dropped).
        while let Some(ask) = asked.recv().await {
            match ask {
                Ask::Path(p, reply) => {
                    let _ = reply.send(project_by_path(&tx, &p).await);
                }
                Ask::Prefix(p, reply) => {
                    let _ = reply.send(project_by_prefix(&tx, rule, &p).await);
                }
            }
        }
        let (path, resolution) = worker
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        let resolution = resolution?;
        let clear = tx
            .prepare_cached(
                "WITH a AS (DELETE FROM edges WHERE downstream = $1),
                      b AS (DELETE FROM externals WHERE project = $1)
                 DELETE FROM resolve_warnings WHERE project = $1",
            )
            .await?;
        tx.execute(&clear, &[&path]).await?;
        insert_resolution(&tx, &resolution, &HashSet::new()).await?;
        tx.commit().await?;
        Ok(Some(resolution))
    }

    async fn upstream_edges(&self, downstream: &str) -> Result<Vec<Edge>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT upstream, downstream, via FROM edges WHERE downstream = $1 ORDER BY upstream",
            )
            .await?;
        Ok(client
            .query(&stmt, &[&downstream])
            .await?
            .iter()
            .map(read_edge)
            .collect())
    }

    async fn edges(&self) -> Result<Vec<Edge>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT upstream, downstream, via FROM edges ORDER BY downstream, upstream",
            )
            .await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(read_edge)
            .collect())
    }

    async fn externals(&self) -> Result<Vec<External>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT project, image FROM externals ORDER BY project, image")
            .await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| External {
                project: r.get(0),
                image: r.get(1),
            })
            .collect())
    }

    async fn warnings(&self) -> Result<Vec<Warning>, StoreError> {
        let client = self.client().await?;
        // NULLS FIRST: as SQLite orders them.
        let stmt = client
            .prepare_cached(
                "SELECT p.path, w.file, w.line, w.message FROM scan_warnings w JOIN projects p ON p.id = w.project_id
                 UNION ALL SELECT project, file, line, message FROM resolve_warnings
                 ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST",
            )
            .await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(read_warning)
            .collect())
    }

    async fn hook_fingerprints(&self) -> Result<HashMap<u64, String>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT hook_id, fingerprint FROM hook_fingerprints")
            .await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect())
    }

    async fn update_hook_fingerprints(
        &self,
        set: &[(u64, String)],
        forget: &[u64],
    ) -> Result<(), StoreError> {
        // Last entry per hook, as one-by-one upserts would leave it.
        let set: HashMap<i64, &str> = set
            .iter()
            .map(|(id, f)| (sql_id(*id), f.as_str()))
            .collect();
        let (ids, fingerprints): (Vec<i64>, Vec<&str>) = set.into_iter().unzip();
        let forget: Vec<i64> = forget.iter().copied().map(sql_id).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO hook_fingerprints (hook_id, fingerprint)
                 SELECT * FROM unnest($1::bigint[], $2::text[])
                 ON CONFLICT (hook_id) DO UPDATE SET fingerprint = excluded.fingerprint",
            )
            .await?;
        let delete = tx
            .prepare_cached("DELETE FROM hook_fingerprints WHERE hook_id = ANY($1::bigint[])")
            .await?;
        tx.execute(&upsert, &[&ids, &fingerprints]).await?;
        tx.execute(&delete, &[&forget]).await?;
        tx.commit().await?;
        Ok(())
    }
}
