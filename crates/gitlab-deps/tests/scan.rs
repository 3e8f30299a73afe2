//! Discovery end to end: the real binary scans a simulated GitLab over HTTP.

mod common;

use common::{SimServer, Workdir, gitlab_deps, json, query};
use gitlab_sim::{Endpoint, ProjectSpec, Sim, SimOptions};
use predicates::prelude::*;

const CI: &str = "build:\n  script: [make]\n";

/// An instance with subgroups, >100 projects, archived and empty ones, `.gitlab-deps` files, ARG and
/// multi-stage Dockerfiles, and a cycle.
fn instance() -> SimServer {
    let server = SimServer::start(SimOptions::default());
    let sim = &server.sim;
    let reg = sim.registry_host();
    let host = server.url.trim_start_matches("http://").to_owned();
    sim.add_project(ProjectSpec::new("images/base").file("Dockerfile", "FROM debian:bookworm\n"));
    sim.add_project(
        ProjectSpec::new("images/lang/ruby")
            .file(
                "Dockerfile",
                format!("ARG REG={reg}\nFROM ${{REG}}/images/base:latest\n"),
            )
            .file(".gitlab-ci.yml", CI),
    );
    sim.add_project(ProjectSpec::new("images/tools").file(
        "Containerfile",
        format!(
            "from --platform=linux/amd64 {reg}/images/base@sha256:{}\n",
            "a".repeat(64)
        ),
    ));
    sim.add_project(ProjectSpec::new("apps/web").file(
        "Dockerfile",
        format!(
            "# syntax=docker/dockerfile:1\nFROM {reg}/images/lang/ruby:3.3 AS build\nRUN make \\\n  all\nFROM {reg}/images/tools/sub-image:1\nCOPY --from=build /app /app\nCOPY --from=alpine:3 /bin/sh /bin/sh\n"
        ),
    ));
    // .gitlab-deps with a URL (with .git and a comment) and a path, plus an unknown project.
    sim.add_project(ProjectSpec::new("apps/svc").file(
        ".gitlab-deps",
        format!("# upstreams\nhttp://{host}/images/lang/ruby.git\napps/web  # the web app\nnope/missing\n"),
    ));
    // A cycle.
    sim.add_project(ProjectSpec::new("loop/a").file(".gitlab-deps", "loop/b\n"));
    sim.add_project(ProjectSpec::new("loop/b").file("Dockerfile", format!("FROM {reg}/loop/a\n")));
    // An unresolvable ARG and a project referring to its own image.
    sim.add_project(ProjectSpec::new("apps/broken").file("Dockerfile", "ARG BASE\nFROM $BASE\n"));
    sim.add_project(ProjectSpec::new("apps/self").file(
        "Dockerfile",
        format!("FROM {reg}/apps/self/cache AS c\nFROM {reg}/images/base\n"),
    ));
    sim.add_project(
        ProjectSpec::new("old/archived")
            .file("Dockerfile", "FROM x")
            .archived(),
    );
    sim.add_project(ProjectSpec::new("old/empty").empty());
    for i in 0..110 {
        let spec = ProjectSpec::new(format!("fill/sub{}/p{i:03}", i % 3));
        let spec = if i % 3 == 0 {
            spec.file("Dockerfile", format!("FROM {reg}/images/base:{i}\n"))
        } else {
            spec.file("README.md", "no docker here")
        };
        sim.add_project(spec);
    }
    server
}

#[test]
fn a_scan_builds_the_graph_and_the_queries_read_it() {
    let server = instance();
    let work = Workdir::new();
    let cfg = work.write("config.toml", "[scan]\nactivity_grace = \"0s\"\n");
    // Transient failures the scan must survive.
    server
        .sim
        .faults()
        .rate_limit_next("GET", "/projects", 2, 1);
    server
        .sim
        .faults()
        .fail_next("GET", "/repository/tree", 3, 502);
    server
        .sim
        .faults()
        .fail_next("GET", "/repository/blobs", 2, 503);

    let out = gitlab_deps(&work, &server.url, Some(&cfg))
        .args(["scan", "--json"])
        .output()
        .unwrap();
    let summary = json(&out);
    assert_eq!(summary["projects_seen"], 119, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let warnings = summary["warnings"].to_string();
    assert!(warnings.contains("nope/missing"), "{warnings}");
    assert!(warnings.contains("apps/broken"), "{warnings}");
    assert_eq!(summary["cycles"], serde_json::json!([["loop/a", "loop/b"]]));

    let graph = query(&work, &server.url, &["graph", "--format", "json"]);
    let project = |path: &str| {
        graph["projects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("{path} missing from {graph}"))
    };
    assert_eq!(
        project("images/lang/ruby")["depends_on"],
        serde_json::json!(["images/base"])
    );
    assert_eq!(
        project("images/tools")["depends_on"],
        serde_json::json!(["images/base"])
    );
    assert_eq!(
        project("apps/web")["depends_on"],
        serde_json::json!(["images/lang/ruby", "images/tools"])
    );
    assert_eq!(
        project("apps/web")["external"],
        serde_json::json!(["docker.io/library/alpine:3"])
    );
    assert_eq!(
        project("apps/svc")["depends_on"],
        serde_json::json!(["apps/web", "images/lang/ruby"])
    );
    assert_eq!(
        project("apps/self")["depends_on"],
        serde_json::json!(["images/base"])
    );
    assert_eq!(
        project("images/base")["external"],
        serde_json::json!(["docker.io/library/debian:bookworm"])
    );
    assert_eq!(project("images/base")["default_branch"], "main");
    assert!(project("images/base")["id"].as_u64().is_some());
    assert!(
        graph["projects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["path"] != "old/archived" && p["path"] != "old/empty")
    );

    let deps = query(
        &work,
        &server.url,
        &["deps", "apps/svc", "--recursive", "--json"],
    );
    assert_eq!(
        deps,
        serde_json::json!([
            "apps/web",
            "images/base",
            "images/lang/ruby",
            "images/tools"
        ])
    );
    let rdeps = query(&work, &server.url, &["rdeps", "images/lang/ruby", "--json"]);
    assert_eq!(rdeps, serde_json::json!(["apps/svc", "apps/web"]));
    let plan = query(&work, &server.url, &["plan", "images/lang/ruby", "--json"]);
    assert_eq!(
        plan,
        serde_json::json!({"roots": ["images/lang/ruby"], "waves": [["apps/web"], ["apps/svc"]]})
    );
    let list = query(&work, &server.url, &["list-projects", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 119);

    gitlab_deps(&work, &server.url, None)
        .args(["deps", "apps/wbe"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("did you mean apps/web"));
    gitlab_deps(&work, &server.url, None)
        .args(["graph", "--format", "dot"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("digraph").and(predicate::str::contains(
                "\"images/base\" -> \"images/lang/ruby\"",
            )),
        );
    gitlab_deps(&work, &server.url, None)
        .args(["graph", "--format", "mermaid"])
        .assert()
        .success()
        .stdout(predicate::str::contains("graph"));
}

#[test]
fn a_rescan_of_an_unchanged_instance_costs_only_the_listing() {
    let server = instance();
    let (work, cfg) = scanned_once(&server);

    server.sim.reset_request_log();
    let summary = json(
        &gitlab_deps(&work, &server.url, Some(&cfg))
            .args(["scan", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(summary["projects_read"], 0, "{summary}");
    let requests = server.sim.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.path == "/api/v4/projects"),
        "unexpected requests: {:?}",
        requests
            .iter()
            .filter(|r| r.path != "/api/v4/projects")
            .collect::<Vec<_>>()
    );

    // A changed Dockerfile is noticed, and only that project is read again.
    let reg = server.sim.registry_host();
    server.sim.set_file(
        "apps/broken",
        "Dockerfile",
        &format!("FROM {reg}/images/tools\n"),
    );
    let summary = json(
        &gitlab_deps(&work, &server.url, Some(&cfg))
            .args(["scan", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(summary["projects_read"], 1, "{summary}");
    let deps = query(&work, &server.url, &["deps", "apps/broken", "--json"]);
    assert_eq!(deps, serde_json::json!(["images/tools"]));

    // An archived project disappears from the graph on the next scan.
    server.sim.set_archived("apps/web", true);
    gitlab_deps(&work, &server.url, Some(&cfg))
        .arg("scan")
        .assert()
        .success();
    let list = listed_paths(&work, &server.url);
    assert!(!list.iter().any(|p| p == "apps/web"));
}

#[test]
fn a_group_scan_covers_subgroups_only() {
    let server = instance();
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .args(["scan", "--group", "images"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Scanned 3 projects"));
    assert_eq!(
        listed_paths(&work, &server.url),
        ["images/base", "images/lang/ruby", "images/tools"]
    );
}

#[test]
fn errors_are_one_clear_line() {
    let server = instance();
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_TOKEN", "wrong")
        .arg("scan")
        .assert()
        .failure()
        .stderr(predicate::str::contains("GitLab rejected the token"));
    gitlab_deps(&work, &server.url, None)
        .args(["scan", "--group", "no-such-group"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no-such-group"));
    gitlab_deps(&work, &server.url, None)
        .env_remove("GITLAB_DEPS_URL")
        .arg("scan")
        .assert()
        .failure()
        .stderr(predicate::str::contains("no GitLab URL"));
    gitlab_deps(&work, &server.url, None)
        .args(["deps", "images/base"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("run `gitlab-deps scan` first"));
}

#[test]
fn the_config_chooses_files_scope_and_build_args() {
    let server = SimServer::start(SimOptions::default());
    let sim = &server.sim;
    let reg = sim.registry_host();
    sim.add_project(ProjectSpec::new("images/base").file("Dockerfile", "FROM debian\n"));
    sim.add_project(
        ProjectSpec::new("images/alt")
            .file("docker/Dockerfile", format!("FROM {reg}/images/base\n")),
    );
    sim.add_project(ProjectSpec::new("apps/args").file(
        "Dockerfile",
        "ARG BASE=docker.io/library/debian\nFROM ${BASE}\n",
    ));
    sim.add_project(
        ProjectSpec::new("sandbox/x").file("Dockerfile", format!("FROM {reg}/images/base\n")),
    );
    let work = Workdir::new();
    let cfg = work.write(
        "config.toml",
        &format!(
            "[scan]\ndockerfiles = [\"Dockerfile\", \"docker/Dockerfile\"]\nexclude = [\"sandbox/**\"]\n\
             [scan.build_args.\"apps/*\"]\nBASE = \"{reg}/images/base\"\n"
        ),
    );
    gitlab_deps(&work, &server.url, Some(&cfg))
        .arg("scan")
        .assert()
        .success();
    let rdeps = query(&work, &server.url, &["rdeps", "images/base", "--json"]);
    assert_eq!(rdeps, serde_json::json!(["apps/args", "images/alt"]));
    assert_eq!(
        listed_paths(&work, &server.url),
        ["apps/args", "images/alt", "images/base"]
    );
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_config_file() {
    let server = SimServer::start(SimOptions::default());
    let sim = &server.sim;
    sim.add_project(ProjectSpec::new("images/base").file("Dockerfile", "FROM debian\n"));
    sim.add_project(
        ProjectSpec::new("apps/m").file("Dockerfile", "FROM mirror.example:5000/images/base:1\n"),
    );
    let work = Workdir::new();
    let cfg = work.write(
        "config.toml",
        &format!(
            "registry = \"wrong.example\"\ndb = \"{}\"\n",
            work.path("config.db").display()
        ),
    );
    // The environment's registry beats the file's; the environment's database too.
    gitlab_deps(&work, &server.url, Some(&cfg))
        .env("GITLAB_DEPS_REGISTRY", "mirror.example:5000")
        .arg("scan")
        .assert()
        .success();
    assert!(!work.path("config.db").exists());
    let deps = query(&work, &server.url, &["deps", "apps/m", "--json"]);
    assert_eq!(deps, serde_json::json!(["images/base"]));
    // A flag beats the environment (and --full re-reads everything).
    let summary = json(
        &gitlab_deps(&work, &server.url, Some(&cfg))
            .env("GITLAB_DEPS_REGISTRY", "mirror.example:5000")
            .args(["--registry", "other.example", "scan", "--full", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(summary["projects_read"], 2, "{summary}");
    let deps = query(&work, &server.url, &["deps", "apps/m", "--json"]);
    assert_eq!(deps, serde_json::json!([]));
    // Without the environment, the file's database is used.
    gitlab_deps(&work, &server.url, Some(&cfg))
        .env_remove("GITLAB_DEPS_DB")
        .args(["list-projects", "--json"])
        .assert()
        .success()
        .stdout("[]\n");
}

#[test]
fn warnings_are_listed_with_file_and_line() {
    let server = instance();
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();
    let warnings = query(&work, &server.url, &["warnings", "--json"]);
    let broken = warnings
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["project"] == "apps/broken")
        .cloned()
        .unwrap_or_else(|| panic!("{warnings}"));
    assert_eq!(broken["file"], "Dockerfile");
    assert_eq!(broken["line"], 2);
    gitlab_deps(&work, &server.url, None)
        .arg("warnings")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "apps/svc: .gitlab-deps:4: unknown project \"nope/missing\"",
        ));
}

#[test]
fn a_redirecting_gitlab_url_is_refused_without_following_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::MOVED_PERMANENTLY,
            [(
                axum::http::header::LOCATION,
                "http://attacker.invalid/api/v4/projects",
            )],
        )
    });
    runtime.spawn(async move { axum::serve(listener, app).await });
    let work = Workdir::new();
    gitlab_deps(&work, &format!("http://{addr}"), None)
        .arg("scan")
        .assert()
        .failure()
        .stderr(predicate::str::contains("redirect"));
}

#[test]
fn past_the_count_limit_the_listing_switches_to_keyset_pagination() {
    // GitLab omits the totals past 10,000 rows; the simulator does past 50 here.
    let server = SimServer::start(SimOptions {
        count_limit: 50,
        ..SimOptions::default()
    });
    for i in 0..250 {
        server.sim.add_project(
            ProjectSpec::new(format!("many/p{i:03}")).file("Dockerfile", "FROM debian\n"),
        );
    }
    let work = Workdir::new();
    let summary = query(&work, &server.url, &["scan", "--json"]);
    assert_eq!(summary["projects_seen"], 250, "{summary}");
    assert!(
        server.sim.requests().iter().any(|r| r
            .query
            .as_deref()
            .is_some_and(|q| q.contains("pagination=keyset"))),
        "keyset pagination was not used"
    );
    // A group listing past the limit follows X-Next-Page instead.
    let work = Workdir::new();
    let summary = query(&work, &server.url, &["scan", "--group", "many", "--json"]);
    assert_eq!(summary["projects_seen"], 250, "{summary}");
}

// ---- Request budgets: tree listings and content-addressed blob reads ----

/// Requests per endpoint class since the last reset.
fn counts(sim: &Sim) -> [(Endpoint, u64); 6] {
    [
        Endpoint::ListProjects,
        Endpoint::Tree,
        Endpoint::Blob,
        Endpoint::File,
        Endpoint::Branch,
        Endpoint::Project,
    ]
    .map(|e| (e, sim.endpoint_count(e)))
}

fn expect(list: u64, tree: u64, blob: u64) -> [(Endpoint, u64); 6] {
    [
        (Endpoint::ListProjects, list),
        (Endpoint::Tree, tree),
        (Endpoint::Blob, blob),
        (Endpoint::File, 0),
        (Endpoint::Branch, 0),
        (Endpoint::Project, 0),
    ]
}

const SHARED: &str = "FROM debian:bookworm\nRUN true\n";

/// 12 projects: 6 share one Dockerfile, 2 have their own, 1 has a Containerfile and a
/// `.gitlab-deps`, 3 have no dependency file. Distinct dependency-file blobs: 1 + 2 + 2 = 5.
fn budget_instance() -> SimServer {
    let server = SimServer::start(SimOptions::default());
    let sim = &server.sim;
    let reg = sim.registry_host();
    for i in 0..6 {
        sim.add_project(
            ProjectSpec::new(format!("shared/p{i}"))
                .file("Dockerfile", SHARED)
                .file("README.md", format!("project {i}\n")),
        );
    }
    sim.add_project(
        ProjectSpec::new("own/a").file("Dockerfile", format!("FROM {reg}/shared/p0\n")),
    );
    sim.add_project(
        ProjectSpec::new("own/b").file("Dockerfile", format!("FROM {reg}/shared/p1:2\n")),
    );
    sim.add_project(
        ProjectSpec::new("own/c")
            .file("Containerfile", format!("FROM {reg}/own/a\n"))
            .file(".gitlab-deps", "own/b\n"),
    );
    for i in 0..3 {
        sim.add_project(ProjectSpec::new(format!("plain/p{i}")).file("README.md", "no docker\n"));
    }
    server
}

/// A fresh database scanned once, with a config that trusts no `last_activity_at` hint, and the
/// config's path for the scans that follow.
fn scanned_once(server: &SimServer) -> (Workdir, std::path::PathBuf) {
    let work = Workdir::new();
    let cfg = work.write("config.toml", "[scan]\nactivity_grace = \"0s\"\n");
    gitlab_deps(&work, &server.url, Some(&cfg))
        .arg("scan")
        .assert()
        .success();
    (work, cfg)
}

fn scan_json(work: &Workdir, server: &SimServer, cfg: &std::path::Path) -> serde_json::Value {
    json(
        &gitlab_deps(work, &server.url, Some(cfg))
            .args(["scan", "--json"])
            .output()
            .unwrap(),
    )
}

#[test]
fn a_cold_scan_costs_one_tree_per_project_and_one_read_per_distinct_blob() {
    let server = budget_instance();
    let work = Workdir::new();
    let cfg = work.write("config.toml", "[scan]\nactivity_grace = \"0s\"\n");
    server.sim.reset_request_log();
    let summary = scan_json(&work, &server, &cfg);
    assert_eq!(summary["projects_seen"], 12, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(counts(&server.sim), expect(1, 12, 5));
    assert_eq!(summary["requests"], 1 + 12 + 5, "{summary}");
    assert_eq!(server.sim.request_count(), 1 + 12 + 5);
    let deps = query(&work, &server.url, &["deps", "own/c", "--json"]);
    assert_eq!(deps, serde_json::json!(["own/a", "own/b"]));
    let rdeps = query(&work, &server.url, &["rdeps", "shared/p0", "--json"]);
    assert_eq!(rdeps, serde_json::json!(["own/a"]));
}

#[test]
fn a_blob_shared_by_many_projects_is_read_once() {
    let server = budget_instance();
    let (work, cfg) = scanned_once(&server);
    // The same content arriving in more projects later is still one read, and the earlier six
    // projects (untouched) cost nothing.
    for i in 0..4 {
        server.sim.add_project(
            ProjectSpec::new(format!("late/p{i}")).file("Dockerfile", "FROM alpine:3\n"),
        );
    }
    server.sim.reset_request_log();
    let summary = scan_json(&work, &server, &cfg);
    assert_eq!(summary["projects_read"], 4, "{summary}");
    assert_eq!(counts(&server.sim), expect(1, 4, 1));
    let blob_reads: Vec<_> = server
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/repository/blobs/"))
        .collect();
    assert_eq!(blob_reads.len(), 1, "{blob_reads:?}");
    let graph = query(&work, &server.url, &["graph", "--format", "json"]);
    let externals: Vec<_> = graph["projects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["path"].as_str().unwrap().starts_with("late/"))
        .map(|p| p["external"].clone())
        .collect();
    assert_eq!(
        externals,
        vec![serde_json::json!(["docker.io/library/alpine:3"]); 4]
    );
}

#[test]
fn an_unchanged_rescan_costs_the_listing_only() {
    let server = budget_instance();
    let (work, cfg) = scanned_once(&server);
    server.sim.reset_request_log();
    let summary = scan_json(&work, &server, &cfg);
    assert_eq!(summary["skipped_unchanged"], 12, "{summary}");
    assert_eq!(counts(&server.sim), expect(1, 0, 0));
    assert_eq!(server.sim.request_count(), 1);
}

#[test]
fn a_rescan_after_commits_that_touch_no_dependency_file_reads_no_file() {
    let server = budget_instance();
    let (work, cfg) = scanned_once(&server);
    for project in ["shared/p0", "own/c", "plain/p1"] {
        server.sim.set_file(project, "README.md", "changed\n");
    }
    server.sim.reset_request_log();
    let summary = scan_json(&work, &server, &cfg);
    assert_eq!(summary["projects_read"], 0, "{summary}");
    assert_eq!(summary["files_unchanged"], 3, "{summary}");
    assert_eq!(counts(&server.sim), expect(1, 3, 0));
    let deps = query(&work, &server.url, &["deps", "own/c", "--json"]);
    assert_eq!(deps, serde_json::json!(["own/a", "own/b"]));

    // One of two dependency files changes: only that one is read, the other keeps its findings.
    server
        .sim
        .set_file("own/c", ".gitlab-deps", "own/b\nshared/p2\n");
    server.sim.reset_request_log();
    let summary = scan_json(&work, &server, &cfg);
    assert_eq!(summary["projects_read"], 1, "{summary}");
    assert_eq!(counts(&server.sim), expect(1, 1, 1));
    let deps = query(&work, &server.url, &["deps", "own/c", "--json"]);
    assert_eq!(deps, serde_json::json!(["own/a", "own/b", "shared/p2"]));

    // A removed dependency file is noticed without any read; --full reads everything again.
    server.sim.remove_file("own/c", "Containerfile");
    let summary = scan_json(&work, &server, &cfg);
    assert_eq!(summary["projects_read"], 1, "{summary}");
    let deps = query(&work, &server.url, &["deps", "own/c", "--json"]);
    assert_eq!(deps, serde_json::json!(["own/b", "shared/p2"]));
    server.sim.reset_request_log();
    let full = json(
        &gitlab_deps(&work, &server.url, Some(&cfg))
            .args(["scan", "--full", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(full["projects_read"], 12, "{full}");
    // The shared Dockerfile, own/a's, own/b's and own/c's `.gitlab-deps`.
    assert_eq!(counts(&server.sim), expect(1, 12, 4));
}

#[test]
fn subdirectories_long_trees_links_and_empty_repositories() {
    let server = SimServer::start(SimOptions::default());
    let sim = &server.sim;
    let reg = sim.registry_host();
    sim.add_project(ProjectSpec::new("g/base").file("docker/Dockerfile", "FROM debian\n"));
    // A root of 250 entries: the Dockerfile (sorted after the `A...` files) is on the third page.
    let mut long = ProjectSpec::new("g/long");
    for i in 0..250 {
        long = long.file(format!("A{i:03}.txt"), "x");
    }
    sim.add_project(long.file("Dockerfile", format!("FROM {reg}/g/base\n")));
    sim.add_project(ProjectSpec::new("g/plain").file("README.md", "x"));
    sim.add_project(ProjectSpec::new("g/link").file("build/Dockerfile", "FROM debian\n"));
    sim.set_symlink("g/link", "Dockerfile", "build/Dockerfile");
    sim.add_project(ProjectSpec::new("g/empty").empty());
    let work = Workdir::new();
    let cfg = work.write(
        "config.toml",
        "[scan]\nactivity_grace = \"0s\"\ndockerfiles = [\"Dockerfile\", \"docker/Dockerfile\"]\n",
    );
    server.sim.reset_request_log();
    let summary = scan_json(&work, &server, &cfg);
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["projects_seen"], 4, "{summary}");
    // Roots: 4 (the empty repository is known empty from the listing) + 2 more pages of g/long
    // + docker/ of g/base only (the others have no `docker` directory). Reads: the two
    // Dockerfiles; the link is reported, not read.
    assert_eq!(counts(&server.sim), expect(1, 4 + 2 + 1, 2));
    let rdeps = query(&work, &server.url, &["rdeps", "g/base", "--json"]);
    assert_eq!(rdeps, serde_json::json!(["g/long"]));
    let warnings = summary["warnings"].to_string();
    assert!(
        warnings.contains(r#""file":"Dockerfile","line":null,"message":"is a symbolic link"#)
            && warnings.contains(r#""project":"g/link""#),
        "{warnings}"
    );
}

#[test]
fn project_urls_on_the_public_address_are_recognised_through_an_internal_one() {
    for (external, prefix) in [
        ("https://gitlab.example.org", "https://gitlab.example.org"),
        ("https://example.org/gitlab/", "https://example.org/gitlab"),
    ] {
        let server = SimServer::start(SimOptions {
            external_url: Some(external.to_owned()),
            ..Default::default()
        });
        let sim = &server.sim;
        let host = prefix
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap();
        sim.add_project(ProjectSpec::new("group/base").file("README.md", "x"));
        sim.add_project(ProjectSpec::new("group/tools").file("README.md", "x"));
        sim.add_project(ProjectSpec::new("group/ssh2").file("README.md", "x"));
        sim.add_project(ProjectSpec::new("group/api").file("README.md", "x"));
        sim.add_project(ProjectSpec::new("apps/svc").file(
            ".gitlab-deps",
            format!(
                "{prefix}/group/base\n\
                 {prefix}/group/tools.git\n\
                 {prefix}/group/base/-/tree/main/docker\n\
                 git@{host}:group/ssh2.git\n\
                 {}/group/api\n\
                 https://elsewhere.example.com/group/base\n",
                server.url
            ),
        ));
        let work = Workdir::new();
        let cfg = work.write("config.toml", "[scan]\nactivity_grace = \"0s\"\n");
        let summary = scan_json(&work, &server, &cfg);
        let deps = query(&work, &server.url, &["deps", "apps/svc", "--json"]);
        assert_eq!(
            deps,
            serde_json::json!(["group/api", "group/base", "group/ssh2", "group/tools"]),
            "{external}: {summary}"
        );
        let warnings: Vec<String> = summary["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| format!("{}:{}: {}", w["file"], w["line"], w["message"]))
            .collect();
        assert_eq!(warnings.len(), 1, "{external}: {warnings:?}");
        assert!(
            warnings[0].contains("elsewhere.example.com") && warnings[0].contains(":6:"),
            "{warnings:?}"
        );
    }
}

#[test]
fn a_missing_tree_drops_the_project_and_a_refused_one_keeps_it() {
    let server = budget_instance();
    let (work, cfg) = scanned_once(&server);
    let listed = |work: &Workdir| listed_paths(work, &server.url);
    assert!(listed(&work).iter().any(|p| p == "own/a"));

    // Refused (403): skipped this time, kept with what was known.
    server.sim.set_file("own/a", "README.md", "touched\n");
    server
        .sim
        .faults()
        .fail_next("GET", "/repository/tree", 1, 403);
    let summary = scan_json(&work, &server, &cfg);
    assert_eq!(summary["failed"], 1, "{summary}");
    let warning = &summary["warnings"][0];
    assert_eq!(warning["project"], "own/a", "{summary}");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .starts_with("skipped this time"),
        "{summary}"
    );
    let deps = query(&work, &server.url, &["deps", "own/a", "--json"]);
    assert_eq!(deps, serde_json::json!(["shared/p0"]));

    // 404 (no such branch or repository): dropped, as the branch-head check did.
    server.sim.set_file("own/a", "README.md", "touched again\n");
    server
        .sim
        .faults()
        .fail_next("GET", "/repository/tree", 1, 404);
    let summary = scan_json(&work, &server, &cfg);
    assert_eq!(summary["removed"], 1, "{summary}");
    assert!(!listed(&work).iter().any(|p| p == "own/a"));

    // Back when the tree is there again.
    scan_json(&work, &server, &cfg);
    let deps = query(&work, &server.url, &["deps", "own/a", "--json"]);
    assert_eq!(deps, serde_json::json!(["shared/p0"]));
}

/// The paths `list-projects --json` describes.
fn listed_paths(work: &Workdir, url: &str) -> Vec<String> {
    query(work, url, &["list-projects", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_owned())
        .collect()
}
