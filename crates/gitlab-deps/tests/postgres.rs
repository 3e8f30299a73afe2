//! The real binary on PostgreSQL (`--db postgres://…`) against the simulated GitLab: the commands
//! and one `serve` replica running a cascade to its end. Each test gets a fresh database on the
//! test cluster (`GITLAB_DEPS_TEST_POSTGRES`, or one started by `scripts/test-postgres`); without
//! PostgreSQL they say SKIPPED and return (in CI they fail).

mod common;

use common::{SECRET, Service, SimServer, Workdir, gitlab_deps, json, ours, wait_until};
use gitlab_deps::store::postgres::testing;
use gitlab_deps::store::{INPUT_EVENT, OrchestrationStore as _};
use gitlab_sim::SimOptions;

/// base -> {ruby, tools} -> app -> z.
fn instance() -> SimServer {
    let server = SimServer::start(SimOptions::default());
    let sim = &server.sim;
    common::diamond(sim);
    let reg = sim.registry_host();
    common::image_project(sim, "apps/z", format!("FROM {reg}/apps/app\n"));
    server
}

/// A fresh database, from a runtime of the test's own (the tests here are synchronous).
fn database(rt: &tokio::runtime::Runtime) -> Option<testing::TestDatabase> {
    rt.block_on(testing::database())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The binary on the database `url` (the environment variable, as an operator would set it).
fn on(work: &Workdir, server: &SimServer, url: &str) -> assert_cmd::Command {
    let mut cmd = gitlab_deps(work, &server.url, None);
    cmd.env("GITLAB_DEPS_DB", url);
    cmd
}

#[test]
fn scan_queries_status_rebuild_and_cancel_work_on_postgres() {
    let rt = runtime();
    let Some(db) = database(&rt) else { return };
    let server = instance();
    let work = Workdir::new();
    on(&work, &server, &db.url).arg("scan").assert().success();
    assert!(!work.db().exists(), "no SQLite file was made");

    let graph = json(
        &on(&work, &server, &db.url)
            .args(["graph", "--format", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(graph["edges"].as_array().unwrap().len(), 5, "{graph}");
    let deps = json(
        &on(&work, &server, &db.url)
            .args(["deps", "apps/app", "--json"])
            .output()
            .unwrap(),
    );
    let text = deps.to_string();
    assert!(
        text.contains("images/ruby") && text.contains("images/tools"),
        "{text}"
    );
    // Through the flag, as well as the environment.
    let status = json(
        &gitlab_deps(&work, &server.url, None)
            .args(["--db", &db.url, "status", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(status, serde_json::json!([]));

    on(&work, &server, &db.url)
        .args(["rebuild", "images/ruby", "--queue"])
        .assert()
        .success()
        .stdout(predicates::str::contains("Queued"));
    on(&work, &server, &db.url)
        .args(["cancel", "images/ruby"])
        .assert()
        .success();
    // Both wait in the shared event log for whichever replica runs the engine.
    let store = rt.block_on(db.store());
    let pending = rt.block_on(store.unprocessed_events(10)).unwrap();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(pending.iter().all(|e| e.kind == INPUT_EVENT));
}

#[test]
fn a_bad_password_file_or_an_unreachable_server_says_which_in_one_line() {
    let server = instance();
    let work = Workdir::new();
    let empty = work.write("db-password", "\n");
    let out = gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_DB", "postgres://deps@127.0.0.1:1/deps")
        .env("GITLAB_DEPS_DB_PASSWORD_FILE", &empty)
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("database password"), "{err}");

    let out = gitlab_deps(&work, &server.url, None)
        .env(
            "GITLAB_DEPS_DB",
            "postgres://deps:hunter2@127.0.0.1:1/deps?sslmode=disable",
        )
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot open database postgres://deps@127.0.0.1:1/deps"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn one_replica_on_postgres_runs_a_cascade_to_the_end() {
    let rt = runtime();
    let Some(db) = database(&rt) else { return };
    let server = instance();
    let sim = &server.sim;
    let work = Workdir::new();
    on(&work, &server, &db.url).arg("scan").assert().success();
    let service = Service::start(&work, &server.url, "127.0.0.1:0", &["--db", &db.url]);
    on(&work, &server, &db.url)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
        .args(["hooks", "sync", "--public-url", &service.url])
        .assert()
        .success();

    sim.run_pipeline("images/base", "push");
    wait_until(60, "apps/z built", || {
        ours(sim, "apps/z").iter().any(|p| p.status == "success")
    });
    wait_until(30, "nothing pending", || {
        let out = on(&work, &server, &db.url)
            .args(["status", "--json"])
            .output()
            .unwrap();
        json(&out) == serde_json::json!([])
    });
    for project in ["images/ruby", "images/tools", "apps/app", "apps/z"] {
        assert_eq!(ours(sim, project).len(), 1, "{project} built once");
    }
    let (ruby, tools, app) = (
        &ours(sim, "images/ruby")[0],
        &ours(sim, "images/tools")[0],
        &ours(sim, "apps/app")[0],
    );
    assert!(app.created_at >= ruby.finished_at.unwrap());
    assert!(app.created_at >= tools.finished_at.unwrap());
    assert!(
        !work.db().exists(),
        "the service kept everything in PostgreSQL"
    );
    drop(service);
}
