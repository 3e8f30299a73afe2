//! Schema migrations, applied in order; `PRAGMA user_version` records the last one applied.

/// Each entry upgrades the schema by one version.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: discovery.
    r#"
    CREATE TABLE projects (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        default_branch TEXT,
        web_url TEXT NOT NULL DEFAULT '',
        registry_prefix TEXT,
        last_activity_at TEXT,
        head_sha TEXT,
        checked_at_ms INTEGER
    );
    CREATE TABLE refs (
        project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        file TEXT NOT NULL,
        line INTEGER NOT NULL,
        value TEXT NOT NULL
    );
    CREATE INDEX refs_project ON refs(project_id);
    CREATE TABLE scan_warnings (
        project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        file TEXT,
        line INTEGER,
        message TEXT NOT NULL
    );
    CREATE INDEX scan_warnings_project ON scan_warnings(project_id);
    CREATE TABLE edges (
        upstream TEXT NOT NULL,
        downstream TEXT NOT NULL,
        via TEXT NOT NULL,
        PRIMARY KEY (upstream, downstream)
    ) WITHOUT ROWID;
    CREATE TABLE externals (
        project TEXT NOT NULL,
        image TEXT NOT NULL,
        PRIMARY KEY (project, image)
    ) WITHOUT ROWID;
    CREATE TABLE resolve_warnings (
        project TEXT NOT NULL,
        file TEXT,
        line INTEGER,
        message TEXT NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    "#,
    // 2: orchestration.
    r#"
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        processed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_unprocessed ON events(processed, seq);
    CREATE TABLE cascade_state (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL);
    CREATE TABLE activity (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        line TEXT NOT NULL
    );
    "#,
    // 3: the orchestration state per project, so each step writes only what changed. The
    // single JSON document of version 2 is split: projects into rows, counters stay.
    r#"
    CREATE TABLE cascade_projects (project TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO cascade_projects (project, state)
        SELECT j.key, j.value FROM cascade_state, json_each(cascade_state.state, '$.projects') AS j;
    UPDATE cascade_state SET state = json_remove(state, '$.projects');
    "#,
    // 4: per webhook, a keyed fingerprint of the secret and URL it was given (GitLab never shows a
    // hook's secret), so `hooks sync` rewrites a hook only when something changed. The key is random
    // per database; the secret itself is never stored.
    r#"
    CREATE TABLE hook_fingerprints (
        hook_id INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL
    );
    INSERT OR IGNORE INTO meta (key, value) VALUES ('hook_fingerprint_key', lower(hex(randomblob(32))));
    "#,
    // 5: push rescans resolve one project with indexed look-ups, and concurrent resolves never
    // write older edges over newer ones. `refs_version` counts changes of a project's references
    // (and of its path or registry prefix); `registry_key` is GitLab's registry prefix normalised
    // (the store rewrites it on every save; this back-fill covers the usual shapes). The catalog
    // version counts changes to the set of paths and prefixes that other projects resolve against.
    r#"
    ALTER TABLE projects ADD COLUMN refs_version INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE projects ADD COLUMN registry_key TEXT;
    UPDATE projects SET registry_key = lower(trim(
        CASE WHEN lower(substr(trim(registry_prefix), 1, 8)) = 'https://' THEN substr(trim(registry_prefix), 9)
             WHEN lower(substr(trim(registry_prefix), 1, 7)) = 'http://' THEN substr(trim(registry_prefix), 8)
             ELSE trim(registry_prefix) END, '/'))
        WHERE registry_prefix IS NOT NULL;
    CREATE INDEX projects_path_lower ON projects(lower(path));
    CREATE INDEX projects_registry_key ON projects(registry_key);
    CREATE INDEX edges_downstream ON edges(downstream);
    CREATE INDEX resolve_warnings_project ON resolve_warnings(project);
    INSERT OR IGNORE INTO meta (key, value) VALUES ('resolve.catalog_version', '0');
    "#,
    // 6: the blob id of each dependency file a project had when it was last read, so a scan
    // re-reads only files whose content changed (blob ids are content hashes).
    r#"
    CREATE TABLE project_files (
        project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        file TEXT NOT NULL,
        blob_id TEXT NOT NULL,
        PRIMARY KEY (project_id, file)
    ) WITHOUT ROWID;
    "#,
    // 7: the engine's lease, so replicas sharing a database run one engine at a time; the epoch
    // fences the cascade commits of a replica that lost it.
    r#"
    CREATE TABLE lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    "#,
];
