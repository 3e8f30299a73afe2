//! `gitlab-deps hooks sync`, `hooks remove` and `update` against gitlab-sim: install, repair only
//! what drifted, rotate, filter pushes to the default branch, re-enable disabled hooks, read every
//! page, never duplicate after a 5xx, group hooks, uninstall.

mod common;

use common::{SECRET, Service, SimServer, Workdir, gitlab_deps, json, wait_until};
use gitlab_sim::{FaultRule, ProjectSpec, SimOptions};
use predicates::prelude::*;

const PUBLIC: &str = "http://deps.example:8080";
const URL: &str = "http://deps.example:8080/hooks/gitlab";

/// A simulator with `paths` (each with a Dockerfile on `main`), scanned into a fresh database.
fn scanned(paths: &[&str]) -> (SimServer, Workdir) {
    let server = SimServer::start(SimOptions::default());
    for p in paths {
        server
            .sim
            .add_project(ProjectSpec::new(*p).file("Dockerfile", "FROM debian\n"));
    }
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();
    (server, work)
}

fn sync(
    server: &SimServer,
    work: &Workdir,
    secret: &str,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    gitlab_deps(work, &server.url, None)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", secret)
        .args(["hooks", "sync", "--public-url", PUBLIC])
        .args(extra)
        .assert()
}

fn sync_json(
    server: &SimServer,
    work: &Workdir,
    secret: &str,
    extra: &[&str],
) -> serde_json::Value {
    let output = gitlab_deps(work, &server.url, None)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", secret)
        .args(["hooks", "sync", "--json", "--public-url", PUBLIC])
        .args(extra)
        .output()
        .unwrap();
    json(&output)
}

fn ours(server: &SimServer, project: &str) -> Vec<gitlab_sim::HookInfo> {
    server
        .sim
        .hooks(project)
        .into_iter()
        .filter(|h| h.url == URL)
        .collect()
}

/// Changes a hook through the simulator's API, as an administrator editing it in GitLab would.
fn edit_hook(server: &SimServer, project_id: u64, hook_id: u64, body: serde_json::Value) {
    let url = format!(
        "{}/api/v4/projects/{project_id}/hooks/{hook_id}",
        server.url
    );
    let status = server.runtime.block_on(async {
        reqwest::Client::new()
            .put(url)
            .header("PRIVATE-TOKEN", "sim-token")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{status}");
}

#[test]
fn sync_installs_repairs_and_deduplicates_hooks() {
    let server = SimServer::start(SimOptions::default());
    let sim = &server.sim;
    for p in ["g/a", "g/b", "g/locked"] {
        sim.add_project(ProjectSpec::new(p).file("Dockerfile", "FROM debian\n"));
    }
    // g/b has two stale hooks to our URL with an old secret, and one unrelated hook.
    sim.add_hook("g/b", URL, "old-secret");
    sim.add_hook("g/b", URL, "old-secret");
    sim.add_hook("g/b", "http://other.example/hook", "theirs");
    sim.set_maintainer("g/locked", false);
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();

    sync(&server, &work, "new-secret", &[])
        .failure()
        .stdout(predicate::str::contains(
            "1 added, 1 repaired, 0 unchanged, 1 removed, 0 re-enabled, 1 failed",
        ))
        .stdout(predicate::str::contains("g/locked"));

    for p in ["g/a", "g/b"] {
        let ours = ours(&server, p);
        assert_eq!(ours.len(), 1, "{p}: {ours:?}");
        assert_eq!(ours[0].token, "new-secret");
        assert!(ours[0].pipeline_events && ours[0].push_events);
        assert!(!ours[0].merge_requests_events && !ours[0].tag_push_events);
    }
    assert!(
        sim.hooks("g/b")
            .iter()
            .any(|h| h.url == "http://other.example/hook")
    );
    assert!(sim.hooks("g/locked").is_empty());
    // The service shows the hook that could not be installed (status page, gauge).
    let missing: String = rusqlite::Connection::open(work.db())
        .unwrap()
        .query_row(
            "SELECT value FROM meta WHERE key = 'hooks_missing'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(missing, "1");
}

#[test]
fn a_second_sync_with_nothing_changed_writes_nothing() {
    let (server, work) = scanned(&["g/a", "g/b", "g/c"]);
    sync(&server, &work, "s1", &[])
        .success()
        .stdout(predicate::str::contains("3 added"));
    server.sim.reset_request_log();
    sync(&server, &work, "s1", &[])
        .success()
        .stdout(predicate::str::contains(
            "0 added, 0 repaired, 3 unchanged, 0 removed, 0 re-enabled, 0 failed (0 write requests)",
        ));
    assert_eq!(server.sim.write_count(), 0);
    // Only listings: one per project.
    assert_eq!(server.sim.request_count(), 3);
}

#[test]
fn only_the_drifted_hook_is_rewritten() {
    let (server, work) = scanned(&["g/a", "g/b"]);
    sync(&server, &work, "s1", &[]).success();
    let hook = &ours(&server, "g/a")[0];
    edit_hook(
        &server,
        hook.project_id,
        hook.id,
        serde_json::json!({"pipeline_events": false, "push_events_branch_filter": ""}),
    );
    server.sim.reset_request_log();
    let summary = sync_json(&server, &work, "s1", &[]);
    assert_eq!(summary["updated"], 1);
    assert_eq!(summary["unchanged"], 1);
    assert_eq!(summary["write_requests"], 1);
    assert_eq!(summary["changes"][0]["target"], "g/a");
    assert_eq!(summary["changes"][0]["action"], "update");
    assert_eq!(
        summary["changes"][0]["reason"],
        "pipeline events, branch filter"
    );
    assert_eq!(server.sim.write_count(), 1);
    let repaired = &ours(&server, "g/a")[0];
    assert!(repaired.pipeline_events);
    assert_eq!(repaired.push_events_branch_filter.as_deref(), Some("main"));
}

#[test]
fn a_new_secret_or_rotate_secret_rewrites_every_hook() {
    let (server, work) = scanned(&["g/a", "g/b"]);
    sync(&server, &work, "s1", &[]).success();

    let summary = sync_json(&server, &work, "s2", &[]);
    assert_eq!(summary["updated"], 2);
    assert_eq!(summary["changes"][0]["reason"], "secret");
    for p in ["g/a", "g/b"] {
        assert_eq!(ours(&server, p)[0].token, "s2");
    }

    // Same secret, forced: every hook rewritten anyway.
    server.sim.reset_request_log();
    let summary = sync_json(&server, &work, "s2", &["--rotate-secret"]);
    assert_eq!(summary["updated"], 2);
    assert_eq!(summary["changes"][0]["reason"], "secret rotation");
    assert_eq!(server.sim.write_count(), 2);
    // And quiet again afterwards.
    server.sim.reset_request_log();
    sync(&server, &work, "s2", &[]).success();
    assert_eq!(server.sim.write_count(), 0);
}

#[test]
fn pushes_are_filtered_to_the_default_branch_which_follows_changes() {
    let (server, work) = scanned(&["g/a"]);
    sync(&server, &work, "s1", &[]).success();
    let hook = &ours(&server, "g/a")[0];
    assert_eq!(hook.push_events_branch_filter.as_deref(), Some("main"));
    assert_eq!(hook.branch_filter_strategy, "wildcard");

    server.sim.set_default_branch("g/a", "develop");
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();
    let summary = sync_json(&server, &work, "s1", &[]);
    assert_eq!(summary["updated"], 1);
    assert_eq!(summary["changes"][0]["reason"], "branch filter");
    assert_eq!(
        ours(&server, "g/a")[0].push_events_branch_filter.as_deref(),
        Some("develop")
    );
}

#[test]
fn a_disabled_hook_is_reported_re_enabled_and_counted_by_serve() {
    let (server, work) = scanned(&["g/a"]);
    let mut service = Service::start(&work, &server.url, "127.0.0.1:0", &[]);
    let public = service.url.clone();
    let hook_url = format!("{public}/hooks/gitlab");
    let run = |extra: &[&str]| {
        let output = gitlab_deps(&work, &server.url, None)
            .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
            .args(["hooks", "sync", "--json", "--public-url", &public])
            .args(extra)
            .output()
            .unwrap();
        json(&output)
    };
    run(&[]);
    let hook = server
        .sim
        .hooks("g/a")
        .into_iter()
        .find(|h| h.url == hook_url)
        .unwrap();

    // GitLab disabled it; the service is up, so a test delivery succeeds and re-enables it.
    server
        .sim
        .set_hook_alert_status(hook.id, "temporarily_disabled");
    let summary = run(&[]);
    assert_eq!(summary["reenabled"], 1);
    assert_eq!(
        summary["disabled"][0]["alert_status"],
        "temporarily_disabled"
    );
    assert_eq!(summary["disabled"][0]["reenabled"], true);
    assert!(summary["disabled"][0]["disabled_until"].is_string());
    assert_eq!(server.sim.hooks("g/a")[0].alert_status, "executable");

    // Disabled again while the service is down: reported, still disabled, and the restarted
    // service exports the count from the database.
    server.sim.set_hook_alert_status(hook.id, "disabled");
    service.kill();
    let summary = run(&[]);
    assert_eq!(summary["reenabled"], 0);
    assert_eq!(summary["disabled"][0]["reenabled"], false);
    assert!(
        summary["disabled"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("test delivery failed"),
        "{summary}"
    );
    assert_eq!(server.sim.hooks("g/a")[0].alert_status, "disabled");
    let service = Service::start(&work, &server.url, &service.addr, &[]);
    let metrics = server.runtime.block_on(async {
        reqwest::get(format!("{}/metrics", service.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains("gitlab_deps_hooks_disabled 1"),
        "{metrics}"
    );
}

#[test]
fn every_page_of_hooks_is_read() {
    let (server, work) = scanned(&["g/a"]);
    for i in 0..150 {
        server
            .sim
            .add_hook("g/a", &format!("http://other.example/{i}"), "theirs");
    }
    // Ours comes after the first 100.
    server.sim.add_hook("g/a", URL, "old");
    let summary = sync_json(&server, &work, "s1", &[]);
    assert_eq!(summary["created"], 0, "{summary}");
    assert_eq!(summary["updated"], 1);
    assert_eq!(ours(&server, "g/a").len(), 1);
    assert_eq!(server.sim.hooks("g/a").len(), 151);
}

#[test]
fn a_5xx_on_create_looks_before_creating_again() {
    let (server, work) = scanned(&["g/a", "g/b"]);
    // The hook of g/a is created, but the answer is lost behind a 502.
    server
        .sim
        .faults()
        .add(FaultRule::status_after("POST", "/hooks", 1, 502));
    sync(&server, &work, "s1", &[]).success();
    for p in ["g/a", "g/b"] {
        assert_eq!(ours(&server, p).len(), 1, "{p}");
    }
    // The adopted hook got its fingerprint: nothing to do next time.
    server.sim.reset_request_log();
    sync(&server, &work, "s1", &[]).success();
    assert_eq!(server.sim.write_count(), 0);
}

#[test]
fn a_5xx_before_create_still_creates_once() {
    let (server, work) = scanned(&["g/a"]);
    server.sim.faults().fail_next("POST", "/hooks", 1, 502);
    sync(&server, &work, "s1", &[]).success();
    assert_eq!(ours(&server, "g/a").len(), 1);
}

#[test]
fn dry_run_writes_nothing_and_says_what_it_would_do() {
    let (server, work) = scanned(&["g/a", "g/b"]);
    server.sim.add_hook("g/b", URL, "old");
    server.sim.add_hook("g/b", URL, "old");
    server.sim.reset_request_log();
    sync(&server, &work, "s1", &["--dry-run"])
        .success()
        .stdout(predicate::str::contains("would create g/a"))
        .stdout(predicate::str::contains("would delete g/b"))
        .stdout(predicate::str::contains("would update g/b"))
        .stdout(predicate::str::contains("(0 write requests)"));
    assert_eq!(server.sim.write_count(), 0);
    assert!(ours(&server, "g/a").is_empty());
    // Nothing was recorded either: the real run does it all.
    let summary = sync_json(&server, &work, "s1", &[]);
    assert_eq!(summary["created"], 1);
    assert_eq!(summary["updated"], 1);
    assert_eq!(summary["removed"], 1);
    assert_eq!(summary["dry_run"], false);
}

#[test]
fn json_output_lists_every_change() {
    let (server, work) = scanned(&["g/a"]);
    let summary = sync_json(&server, &work, "s1", &[]);
    assert_eq!(summary["checked"], 1);
    assert_eq!(summary["created"], 1);
    assert_eq!(summary["write_requests"], 1);
    assert_eq!(summary["failed"], serde_json::json!([]));
    assert_eq!(
        summary["changes"],
        serde_json::json!([{
            "target": "g/a", "action": "create", "hook_id": null, "reason": "no hook to our URL"
        }])
    );
    let dry = sync_json(&server, &work, "s2", &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["updated"], 1);
    assert_eq!(dry["write_requests"], 0);
}

#[test]
fn remove_removes_our_hooks_and_nothing_else() {
    let (server, work) = scanned(&["g/a", "g/b"]);
    server
        .sim
        .add_hook("g/a", "http://other.example/hook", "theirs");
    server
        .sim
        .add_hook("g/b", "http://deps.example:8080/hooks/gitlab/other", "near");
    sync(&server, &work, "s1", &[]).success();
    server.sim.add_hook("g/b", URL, "a duplicate");
    server.sim.reset_request_log();
    gitlab_deps(&work, &server.url, None)
        .args(["hooks", "remove", "--dry-run", "--public-url", PUBLIC])
        .assert()
        .success()
        .stdout(predicate::str::contains("would delete g/a"))
        .stdout(predicate::str::contains("3 would be removed"));
    assert_eq!(server.sim.write_count(), 0);
    assert_eq!(ours(&server, "g/b").len(), 2);
    gitlab_deps(&work, &server.url, None)
        .args(["hooks", "remove", "--public-url", PUBLIC])
        .assert()
        .success()
        .stdout(predicate::str::contains("3 removed"));
    assert!(ours(&server, "g/a").is_empty() && ours(&server, "g/b").is_empty());
    assert_eq!(server.sim.hooks("g/a")[0].url, "http://other.example/hook");
    assert_eq!(
        server.sim.hooks("g/b")[0].url,
        "http://deps.example:8080/hooks/gitlab/other"
    );
}

#[test]
fn update_scans_then_syncs() {
    let server = SimServer::start(SimOptions::default());
    server
        .sim
        .add_project(ProjectSpec::new("g/base").file("Dockerfile", "FROM debian\n"));
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", "s1")
        .args(["update", "--public-url", PUBLIC])
        .assert()
        .success()
        .stdout(predicate::str::contains("Scanned 1 projects"))
        .stdout(predicate::str::contains("1 added"));
    server
        .sim
        .add_project(ProjectSpec::new("g/app").file("Dockerfile", "FROM debian\n"));
    server.sim.reset_request_log();
    gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", "s1")
        .args(["update", "--public-url", PUBLIC])
        .assert()
        .success()
        .stdout(predicate::str::contains("Scanned 2 projects"))
        .stdout(predicate::str::contains("1 added, 0 repaired, 1 unchanged"));
    assert_eq!(server.sim.write_count(), 1);
    assert_eq!(ours(&server, "g/app").len(), 1);
}

#[test]
fn a_group_hook_replaces_project_hooks_on_premium() {
    let (server, work) = scanned(&["g/a", "g/sub/b", "other/c"]);
    server.sim.set_premium(true);
    sync(&server, &work, "s1", &[]).success();
    assert_eq!(ours(&server, "g/a").len(), 1);
    let config = work.write(
        "config.toml",
        "[scan]\ngroups = [\"g\"]\n\n[hooks]\ngroup = true\n",
    );
    let output = gitlab_deps(&work, &server.url, Some(&config))
        .env("GITLAB_DEPS_WEBHOOK_SECRET", "s1")
        .args(["hooks", "sync", "--json", "--public-url", PUBLIC])
        .output()
        .unwrap();
    let summary = json(&output);
    assert_eq!(summary["group_hooks"], serde_json::json!(["g"]));
    assert_eq!(summary["created"], 1);
    assert_eq!(summary["removed"], 2, "{summary}");
    let group: Vec<_> = server
        .sim
        .group_hooks("g")
        .into_iter()
        .filter(|h| h.url == URL)
        .collect();
    assert_eq!(group.len(), 1);
    assert_eq!(group[0].token, "s1");
    assert_eq!(group[0].push_events_branch_filter.as_deref(), Some("main"));
    assert!(ours(&server, "g/a").is_empty() && ours(&server, "g/sub/b").is_empty());
    // Outside the group: its own hook stays.
    assert_eq!(ours(&server, "other/c").len(), 1);

    // The group hook delivers the group's projects' events, subgroups included.
    server
        .sim
        .push("g/sub/b", &[("Dockerfile", Some("FROM alpine\n"))]);
    wait_until(20, "a delivery attempt to the group hook", || {
        server
            .sim
            .deliveries()
            .iter()
            .any(|d| d.hook_id == group[0].id && d.project == "g/sub/b")
    });

    server.sim.reset_request_log();
    gitlab_deps(&work, &server.url, Some(&config))
        .env("GITLAB_DEPS_WEBHOOK_SECRET", "s1")
        .args(["hooks", "sync", "--public-url", PUBLIC])
        .assert()
        .success();
    assert_eq!(server.sim.write_count(), 0);
}

#[test]
fn on_free_a_group_keeps_its_project_hooks() {
    let (server, work) = scanned(&["g/a"]);
    let config = work.write(
        "config.toml",
        "[scan]\ngroups = [\"g\"]\n\n[hooks]\ngroup = true\n",
    );
    gitlab_deps(&work, &server.url, Some(&config))
        .env("GITLAB_DEPS_WEBHOOK_SECRET", "s1")
        .args(["hooks", "sync", "--public-url", PUBLIC])
        .assert()
        .success()
        .stdout(predicate::str::contains("need GitLab Premium"))
        .stdout(predicate::str::contains("1 added"));
    assert_eq!(ours(&server, "g/a").len(), 1);
}

#[test]
fn serve_with_sync_hooks_keeps_hooks_current_after_each_rescan() {
    let (server, work) = scanned(&["g/a"]);
    let _service = Service::start(
        &work,
        &server.url,
        "127.0.0.1:0",
        &[
            "--sync-hooks",
            "--public-url",
            PUBLIC,
            "--rescan-every",
            "1s",
        ],
    );
    wait_until(60, "g/a's hook installed at start", || {
        ours(&server, "g/a").len() == 1
    });
    // Both changes reach the store through the service's own rescan, then its next sync.
    server
        .sim
        .add_project(ProjectSpec::new("g/b").file("Dockerfile", "FROM debian\n"));
    server.sim.set_default_branch("g/a", "develop");
    wait_until(60, "g/b hooked and g/a's push filter following", || {
        ours(&server, "g/b").len() == 1
            && ours(&server, "g/a")[0].push_events_branch_filter.as_deref() == Some("develop")
    });
    assert_eq!(ours(&server, "g/a").len(), 1, "no duplicate hook");
}
