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
    // 4: the blob id of each dependency file a project had when it was last read, so a scan
    // re-reads only files whose content changed (blob ids are content hashes).
    r#"
    CREATE TABLE project_files (
        project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        file TEXT NOT NULL,
        blob_id TEXT NOT NULL,
        PRIMARY KEY (project_id, file)
    ) WITHOUT ROWID;
    "#,
];
