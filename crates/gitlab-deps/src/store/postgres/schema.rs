//! PostgreSQL schema migrations, applied in order under an advisory lock; the table
//! `gitlab_deps_schema` records each version applied.
//!
//! PostgreSQL keeps its own list, separate from SQLite's `PRAGMA user_version` list in
//! `store/migrations.rs`: version 1 here is the state SQLite reaches at its version 7 (discovery,
//! orchestration, per-project cascade rows, hook fingerprints, reference versions and registry
//! keys, file blobs, the lease). A later schema change appends one entry to each list; objects
//! only PostgreSQL needs (version 2, the fence function) have none in SQLite's.

use deadpool_postgres::Object;

use super::LOCK_MIGRATE;
use crate::store::StoreError;

/// Each entry upgrades the schema by one version.
///
/// Text that is sorted or compared is `COLLATE "C"`: byte order, as SQLite sorts, whatever the
/// database's locale, and `lower()` that folds ASCII only, as SQLite's does.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite has at its version 7.
    r#"
    CREATE TABLE projects (
        id BIGINT PRIMARY KEY,
        path TEXT COLLATE "C" NOT NULL,
        default_branch TEXT,
        web_url TEXT NOT NULL DEFAULT '',
        registry_prefix TEXT,
        last_activity_at TEXT,
        head_sha TEXT,
        checked_at_ms BIGINT,
        refs_version BIGINT NOT NULL DEFAULT 0,
        registry_key TEXT COLLATE "C",
        -- Deferred: a batch may move paths between projects (renames) in any row order.
        CONSTRAINT projects_path_key UNIQUE (path) DEFERRABLE INITIALLY DEFERRED
    );
    CREATE INDEX projects_path_lower ON projects (lower(path));
    CREATE INDEX projects_registry_key ON projects (registry_key);
    CREATE TABLE refs (
        seq BIGSERIAL PRIMARY KEY,
        project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        file TEXT COLLATE "C" NOT NULL,
        line BIGINT NOT NULL,
        value TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX refs_project ON refs (project_id);
    CREATE TABLE scan_warnings (
        seq BIGSERIAL PRIMARY KEY,
        project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        file TEXT COLLATE "C",
        line BIGINT,
        message TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX scan_warnings_project ON scan_warnings (project_id);
    CREATE TABLE project_files (
        project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        file TEXT COLLATE "C" NOT NULL,
        blob_id TEXT NOT NULL,
        PRIMARY KEY (project_id, file)
    );
    CREATE TABLE edges (
        upstream TEXT COLLATE "C" NOT NULL,
        downstream TEXT COLLATE "C" NOT NULL,
        via TEXT NOT NULL,
        PRIMARY KEY (upstream, downstream)
    );
    CREATE INDEX edges_downstream ON edges (downstream);
    CREATE TABLE externals (
        project TEXT COLLATE "C" NOT NULL,
        image TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (project, image)
    );
    CREATE TABLE resolve_warnings (
        project TEXT COLLATE "C" NOT NULL,
        file TEXT COLLATE "C",
        line BIGINT,
        message TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX resolve_warnings_project ON resolve_warnings (project);
    CREATE TABLE meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE hook_fingerprints (hook_id BIGINT PRIMARY KEY, fingerprint TEXT NOT NULL);

    CREATE TABLE events (
        seq BIGSERIAL PRIMARY KEY,
        delivery_key TEXT COLLATE "C" NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        received_ms BIGINT NOT NULL,
        processed BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX events_unprocessed ON events (seq) WHERE NOT processed;
    CREATE TABLE cascade_state (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL);
    CREATE TABLE cascade_projects (project TEXT COLLATE "C" PRIMARY KEY, state TEXT NOT NULL);
    CREATE TABLE activity (
        seq BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        line TEXT NOT NULL
    );
    CREATE TABLE lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );

    -- A random 256-bit key (three random UUIDs, hashed) for the hook fingerprints.
    INSERT INTO meta (key, value) VALUES ('hook_fingerprint_key',
        encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex'));
    INSERT INTO meta (key, value) VALUES ('resolve.catalog_version', '0');
    "#,
    // 2: the lease fence as a statement that fails, so that a commit sent as one batch
    // (`pipeline`) stops at it without waiting for its answer. PostgreSQL only: SQLite checks
    // the epoch in its own code, inside its transaction.
    r#"
    CREATE FUNCTION gitlab_deps_check_fence(held BIGINT) RETURNS VOID
    LANGUAGE plpgsql AS $$
    DECLARE
        current BIGINT;
    BEGIN
        -- Shared until the transaction ends: a take-over waits for the commit.
        SELECT epoch INTO current FROM lease WHERE id = 1 FOR SHARE;
        IF current IS DISTINCT FROM held THEN
            RAISE EXCEPTION 'the engine''s lease is no longer held'
                USING ERRCODE = 'GD001', DETAIL = COALESCE(current, 0)::text;
        END IF;
    END
    $$;
    "#,
];

/// Brings the schema up to date: one transaction under an advisory lock, so replicas starting
/// together apply each migration once.
pub(super) async fn migrate(client: &mut Object, shown: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS gitlab_deps_schema (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::bigint FROM gitlab_deps_schema",
            &[],
        )
        .await?
        .get(0);
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(StoreError::TooNew {
            path: shown.to_owned(),
            found,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO gitlab_deps_schema (version) VALUES ($1)",
            &[&((i + 1) as i32)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
