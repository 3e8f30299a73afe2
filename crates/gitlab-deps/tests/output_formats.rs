//! Snapshot tests of what users and scripts read: the query commands' text and JSON, the `graph`
//! formats and the status, from the real binary against a small simulated GitLab.
//!
//! The snapshots live in `tests/snapshots/`. After an intended change of an output, update them with
//! `INSTA_UPDATE=always cargo test -p gitlab-deps --test output_formats` (or `cargo insta review`)
//! and read the diff before committing.
//!
//! Everything that varies between runs is replaced before comparing: the simulator's address and
//! registry host (random ports), pipeline ids (two pipelines start concurrently) and timestamps.

mod common;

use common::{SECRET, Service, SimServer, Workdir, gitlab_deps, json, wait_until};
use gitlab_sim::{Outcome, ProjectSpec, SimOptions};

const CI: &str = "build:\n  script: [make]\n";

/// A small instance covering every output: a diamond with a multi-stage Dockerfile and an external
/// image, a `.gitlab-deps` file naming an unknown project, an unresolvable ARG and a cycle.
fn instance(opts: SimOptions) -> SimServer {
    let server = SimServer::start(opts);
    let sim = &server.sim;
    let reg = sim.registry_host();
    let project = |spec: ProjectSpec| sim.add_project(spec.file(".gitlab-ci.yml", CI));
    project(ProjectSpec::new("images/base").file("Dockerfile", "FROM debian:bookworm\n"));
    project(
        ProjectSpec::new("images/ruby").file("Dockerfile", format!("FROM {reg}/images/base\n")),
    );
    project(
        ProjectSpec::new("images/tools")
            .file("Containerfile", format!("FROM {reg}/images/base:1\n")),
    );
    project(ProjectSpec::new("apps/web").file(
        "Dockerfile",
        format!(
            "FROM {reg}/images/ruby AS build\nFROM {reg}/images/tools\nCOPY --from=build /a /a\nCOPY --from=alpine:3 /bin/sh /bin/sh\n"
        ),
    ));
    project(ProjectSpec::new("apps/svc").file(".gitlab-deps", "apps/web\nnope/missing\n"));
    project(ProjectSpec::new("apps/broken").file("Dockerfile", "ARG BASE\nFROM $BASE\n"));
    project(ProjectSpec::new("loop/a").file(".gitlab-deps", "loop/b\n"));
    project(ProjectSpec::new("loop/b").file("Dockerfile", format!("FROM {reg}/loop/a\n")));
    server
}

/// Replaces the run-specific parts of an output: the simulator's URL and registry host, and the
/// scratch directory.
fn stable(text: &str, server: &SimServer, work: &Workdir) -> String {
    let host = server.url.trim_start_matches("http://");
    text.replace(&server.sim.registry_host(), "[registry]")
        .replace(&server.url, "http://[gitlab]")
        .replace(host, "[gitlab]")
        .replace(&work.dir.path().display().to_string(), "[workdir]")
}

/// Replaces the pipeline ids in texts and links (`#12`, `/-/pipelines/12`) with `[id]`: which of two
/// concurrently started pipelines gets the lower id varies.
fn mask_pipeline_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["#", "/pipelines/"]
        .iter()
        .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
        .min()
    {
        let (i, len) = at;
        out.push_str(&rest[..i + len]);
        rest = &rest[i + len..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push_str("[id]");
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// Redacts a pipeline id that is there, and keeps a missing one (`null`) visible.
fn pipeline_id() -> insta::internals::Redaction {
    insta::dynamic_redaction(|value, _| match value.as_u64() {
        Some(_) => "[pipeline id]".into(),
        None => value,
    })
}

/// Redacts a hook id that is there, and keeps a missing one (`null`) visible.
fn hook_id() -> insta::internals::Redaction {
    insta::dynamic_redaction(|value, _| match value.as_u64() {
        Some(_) => "[hook id]".into(),
        None => value,
    })
}

/// Scans the instance with the real binary.
fn scanned(opts: SimOptions) -> (SimServer, Workdir) {
    let server = instance(opts);
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();
    (server, work)
}

/// Runs the binary and returns its stdout, made stable; fails on a non-zero exit.
fn stdout(server: &SimServer, work: &Workdir, args: &[&str]) -> String {
    let out = gitlab_deps(work, &server.url, None)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stable(&String::from_utf8_lossy(&out.stdout), server, work)
}

/// Runs the binary and returns its stdout as JSON, made stable.
fn stdout_json(server: &SimServer, work: &Workdir, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&stdout(server, work, args)).unwrap()
}

/// A snapshot name from a command line: `deps apps/web --json` -> `deps_apps_web_json`.
fn name(args: &[&str]) -> String {
    args.join(" ")
        .replace("--", "")
        .replace([' ', '-', '/'], "_")
}

#[test]
fn query_commands() {
    let (server, work) = scanned(SimOptions::default());
    // One settings scope per command, so that each snapshot's header shows the command it is of.
    let text = |args: &[&str]| {
        let out = stdout(&server, &work, args);
        insta::with_settings!({ description => args.join(" ") }, {
            insta::assert_snapshot!(name(args), out);
        });
    };
    let data = |args: &[&str]| {
        let out = stdout_json(&server, &work, args);
        insta::with_settings!({ description => args.join(" ") }, {
            insta::assert_json_snapshot!(name(args), out);
        });
    };
    text(&["list-projects"]);
    data(&["list-projects", "--json"]);
    text(&["deps", "apps/web"]);
    data(&["deps", "apps/web", "--json"]);
    text(&["deps", "apps/svc", "--recursive"]);
    data(&["deps", "apps/svc", "--recursive", "--json"]);
    text(&["rdeps", "images/base"]);
    data(&["rdeps", "images/base", "--json"]);
    text(&["rdeps", "images/base", "--recursive"]);
    data(&["rdeps", "images/base", "--recursive", "--json"]);
    text(&["plan", "images/base"]);
    data(&["plan", "images/base", "--json"]);
    text(&["plan", "images/ruby", "images/tools"]);
    text(&["warnings"]);
    data(&["warnings", "--json"]);
}

#[test]
fn graph_formats() {
    let (server, work) = scanned(SimOptions::default());
    insta::assert_snapshot!("graph_dot", stdout(&server, &work, &["graph"]));
    insta::assert_snapshot!(
        "graph_mermaid",
        stdout(&server, &work, &["graph", "--format", "mermaid"])
    );
    // Project ids come from the simulator in creation order, so they are stable too.
    insta::assert_json_snapshot!(
        "graph_json",
        stdout_json(&server, &work, &["graph", "--format", "json"])
    );
    assert_eq!(
        stdout(&server, &work, &["graph", "--json"]),
        stdout(&server, &work, &["graph", "--format", "json"])
    );
}

/// `status --json` as it is printed.
fn status_views(server: &SimServer, work: &Workdir) -> serde_json::Value {
    json(
        &gitlab_deps(work, &server.url, None)
            .args(["status", "--json"])
            .output()
            .unwrap(),
    )
}

/// `status --json` as a list of (project, state) pairs, for waiting.
fn states(views: &serde_json::Value) -> Vec<(String, String)> {
    views
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["project"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
        .collect()
}

#[test]
fn status_of_a_cascade_with_a_failure() {
    // Pipelines run until finished by hand, so the state is the same whatever the timing.
    let (server, work) = scanned(SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    });
    let sim = &server.sim;
    let service = Service::start(&work, &server.url, "127.0.0.1:0", &[]);
    gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
        .args(["hooks", "sync", "--public-url", &service.url])
        .assert()
        .success();

    // Nothing pending yet.
    insta::assert_snapshot!("status_idle", stdout(&server, &work, &["status"]));

    let ours = |project: &str| -> Vec<u64> {
        sim.pipelines(project)
            .into_iter()
            .filter(|p| p.source == "api" && !p.status.is_finished())
            .map(|p| p.id)
            .collect()
    };
    let base = sim.run_pipeline("images/base", "push");
    sim.finish_pipeline("images/base", base, Outcome::Success);
    // Running with their pipeline ids recorded: the engine stores an id once GitLab answered its
    // creation, a moment after the pipeline exists.
    wait_until(60, "ruby and tools running, web and svc waiting", || {
        let views = status_views(&server, &work);
        let recorded = views
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] != "running" || v["pipeline_id"].is_u64());
        recorded
            && states(&views)
                == pairs(&[
                    ("images/ruby", "running"),
                    ("images/tools", "running"),
                    ("apps/svc", "waiting"),
                    ("apps/web", "waiting"),
                ])
    });
    let status_json = || -> serde_json::Value {
        serde_json::from_str(&mask_pipeline_ids(&stdout(
            &server,
            &work,
            &["status", "--json"],
        )))
        .unwrap()
    };
    insta::assert_snapshot!(
        "status_running",
        mask_pipeline_ids(&stdout(&server, &work, &["status"]))
    );
    insta::assert_json_snapshot!("status_json_running", status_json(), {
        "[].pipeline_id" => pipeline_id(),
    });

    let ruby = ours("images/ruby")[0];
    sim.finish_pipeline("images/ruby", ruby, Outcome::Failed);
    let tools = ours("images/tools")[0];
    sim.finish_pipeline("images/tools", tools, Outcome::Success);
    // web and svc below it are blocked by the failure (svc through web).
    wait_until(60, "ruby failed, web and svc blocked", || {
        states(&status_views(&server, &work))
            == pairs(&[
                ("images/ruby", "failed"),
                ("apps/svc", "blocked"),
                ("apps/web", "blocked"),
            ])
    });
    insta::assert_snapshot!(
        "status_failed",
        mask_pipeline_ids(&stdout(&server, &work, &["status"]))
    );
    insta::assert_json_snapshot!("status_json_failed", status_json(), {
        "[].pipeline_id" => pipeline_id(),
    });

    // The service's own view: the same projects, the graph's size; the activity log's lines carry
    // times and depend on the order webhooks arrived in, so only its presence is kept.
    let url = format!("{}/api/status", service.url);
    let body = server
        .runtime
        .block_on(async { reqwest::get(&url).await?.text().await })
        .unwrap();
    let api: serde_json::Value =
        serde_json::from_str(&mask_pipeline_ids(&stable(&body, &server, &work))).unwrap();
    assert!(
        api["activity"].as_array().is_some_and(|a| !a.is_empty()),
        "{api}"
    );
    assert_eq!(api["role"], "leader", "a lone serve leads");
    insta::assert_json_snapshot!("api_status_failed", api, {
        ".projects[].pipeline_id" => pipeline_id(),
        ".activity" => "[activity]",
        ".leader.holder" => "[holder]",
        ".leader.expires_in_ms" => "[expires_in_ms]",
    });
}

#[test]
fn pipeline_ids_are_masked_in_texts_and_links_only() {
    assert_eq!(
        mask_pipeline_ids("pipeline #12 failed, see http://h/a/-/pipelines/12; #x stays, 3 stays"),
        "pipeline #[id] failed, see http://h/a/-/pipelines/[id]; #x stays, 3 stays"
    );
}

/// The `--json` of the commands that act: a scan, a hook sync and removal, `update`, `rebuild` in
/// its three modes and `cancel`. One pipeline is started, so its id is stable.
#[test]
fn json_of_the_commands_that_act() {
    let server = instance(SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    });
    let work = Workdir::new();
    let data = |name: &str, args: &[&str]| {
        let out = gitlab_deps(&work, &server.url, None)
            .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let value: serde_json::Value = serde_json::from_str(&stable(
            &String::from_utf8_lossy(&out.stdout),
            &server,
            &work,
        ))
        .unwrap();
        insta::with_settings!({ description => args.join(" ") }, {
            insta::assert_json_snapshot!(name, value, {
                ".duration_ms" => "[ms]",
                ".scan.duration_ms" => "[ms]",
                // Hooks are created concurrently: which gets which id varies.
                ".changes[].hook_id" => hook_id(),
                ".hooks.changes[].hook_id" => hook_id(),
            });
        });
    };
    data("scan_json", &["scan", "--json"]);
    data(
        "hooks_sync_dry_run_json",
        &[
            "hooks",
            "sync",
            "--dry-run",
            "--json",
            "--public-url",
            "http://deps.example",
        ],
    );
    data(
        "update_json",
        &["update", "--json", "--public-url", "http://deps.example"],
    );
    data(
        "hooks_remove_json",
        &[
            "hooks",
            "remove",
            "--json",
            "--public-url",
            "http://deps.example",
        ],
    );
    data(
        "rebuild_dry_run_json",
        &["rebuild", "images/ruby", "--dry-run", "--json"],
    );
    data(
        "rebuild_queue_json",
        &["rebuild", "images/ruby", "--queue", "--json"],
    );
    data("rebuild_json", &["rebuild", "images/ruby", "--json"]);
    data(
        "cancel_json",
        &["cancel", "apps/web", "--descendants", "--json"],
    );
}
