//! Orchestration end to end: gitlab-sim runs pipelines and delivers real webhooks to the real
//! `gitlab-deps serve` binary over HTTP.

mod common;

use std::time::Duration;

use common::{SECRET, Service, SimServer, Workdir, gitlab_deps, json, ours, wait_until};
use gitlab_sim::{Outcome, PipelineInfo, PipelineSpec, Sim, SimOptions};
use predicates::prelude::PredicateBooleanExt as _;

/// base -> {ruby, tools} -> app -> z, plus an unrelated solo -> below.
fn instance(opts: SimOptions) -> SimServer {
    let server = SimServer::start(opts);
    let sim = &server.sim;
    let reg = sim.registry_host();
    let project = |path: &str, dockerfile: String| common::image_project(sim, path, dockerfile);
    project("images/base", "FROM debian:bookworm\n".into());
    project("images/ruby", format!("FROM {reg}/images/base\n"));
    project("images/tools", format!("FROM {reg}/images/base\n"));
    project(
        "apps/app",
        format!(
            "FROM {reg}/images/ruby AS build\nFROM {reg}/images/tools\nCOPY --from=build /a /a\n"
        ),
    );
    project("apps/z", format!("FROM {reg}/apps/app\n"));
    project("other/solo", "FROM alpine\n".into());
    project("other/below", format!("FROM {reg}/other/solo\n"));
    server
}

struct Setup {
    server: SimServer,
    work: Workdir,
    service: Service,
}

impl Setup {
    fn sim(&self) -> &Sim {
        &self.server.sim
    }
}

/// Scans the instance, starts the service and installs the hooks.
fn setup(opts: SimOptions, serve_args: &[&str]) -> Setup {
    let server = instance(opts);
    let (work, service) = common::scan_and_serve(&server, serve_args, None);
    Setup {
        server,
        work,
        service,
    }
}

fn succeeded(sim: &Sim, project: &str, n: usize) -> bool {
    ours(sim, project)
        .iter()
        .filter(|p| p.status == "success")
        .count()
        >= n
}

fn var<'a>(p: &'a PipelineInfo, key: &str) -> Option<&'a str> {
    p.variables
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `gitlab-deps status --json`, as (project, state) pairs.
fn status(s: &Setup) -> Vec<(String, String)> {
    let out = gitlab_deps(&s.work, &s.server.url, None)
        .args(["status", "--json"])
        .output()
        .unwrap();
    json(&out)
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

fn settled(s: &Setup) -> bool {
    status(s).is_empty()
}

/// Waits for every pipeline of a project to finish.
fn finish_all(sim: &Sim, project: &str, outcome: Outcome) {
    for p in sim.pipelines(project) {
        if !p.status.is_finished() {
            sim.finish_pipeline(project, p.id, outcome);
        }
    }
}

/// A simulator whose pipelines run until the test finishes them.
fn hand_finished() -> SimOptions {
    SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    }
}

/// With pipelines finished by hand: base succeeds, and the engine starts ruby and tools.
fn first_wave_started(sim: &Sim) {
    let base = sim.run_pipeline("images/base", "push");
    sim.finish_pipeline("images/base", base, Outcome::Success);
    wait_until(30, "ruby and tools started", || {
        ours(sim, "images/ruby").len() == 1 && ours(sim, "images/tools").len() == 1
    });
}

const DOWNSTREAM: [&str; 4] = ["images/ruby", "images/tools", "apps/app", "apps/z"];

#[test]
fn a_diamond_builds_each_project_once_after_all_its_parents() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    sim.run_pipeline("images/base", "push");
    wait_until(60, "apps/z built", || succeeded(sim, "apps/z", 1));
    wait_until(30, "nothing pending", || settled(&s));

    for project in DOWNSTREAM {
        assert_eq!(ours(sim, project).len(), 1, "{project} built once");
    }
    assert!(ours(sim, "other/below").is_empty());
    assert!(ours(sim, "images/base").is_empty());
    let ruby = &ours(sim, "images/ruby")[0];
    let tools = &ours(sim, "images/tools")[0];
    let app = &ours(sim, "apps/app")[0];
    let z = &ours(sim, "apps/z")[0];
    assert!(
        app.created_at >= ruby.finished_at.unwrap() && app.created_at >= tools.finished_at.unwrap()
    );
    assert!(z.created_at >= app.finished_at.unwrap());
    assert_eq!(var(app, "GITLAB_DEPS_ROOT"), Some("images/base"));
    let upstream = var(app, "GITLAB_DEPS_UPSTREAM").unwrap();
    assert!(
        upstream.contains("images/ruby") && upstream.contains("images/tools"),
        "{upstream}"
    );
    assert!(var(app, "GITLAB_DEPS_CASCADE").is_some_and(|c| !c.is_empty()));
    assert_eq!(
        var(app, "GITLAB_DEPS_CASCADE"),
        var(ruby, "GITLAB_DEPS_CASCADE")
    );
    assert_eq!(app.ref_name, "main");
}

#[test]
fn overlapping_changes_coalesce_and_a_change_during_a_build_rebuilds_after_it() {
    let s = setup(hand_finished(), &[]);
    let sim = s.sim();
    first_wave_started(sim);
    // ruby changes on its own while app still waits on the base cascade.
    let push = sim.run_pipeline("images/ruby", "push");
    sim.finish_pipeline("images/ruby", push, Outcome::Success);
    finish_all(sim, "images/ruby", Outcome::Success);
    finish_all(sim, "images/tools", Outcome::Success);
    wait_until(30, "app started", || ours(sim, "apps/app").len() == 1);

    // tools changes while app builds: app must be built again afterwards, once.
    let push = sim.run_pipeline("images/tools", "push");
    sim.finish_pipeline("images/tools", push, Outcome::Success);
    // Once the service has seen the tools change, z waits (for app) even though app has not
    // finished yet; only then does the first app build finish, on a stale tools image.
    wait_until(30, "the tools change seen", || {
        status(&s).iter().any(|(p, _)| p == "apps/z")
    });
    finish_all(sim, "apps/app", Outcome::Success);
    wait_until(30, "app rebuilt", || ours(sim, "apps/app").len() == 2);
    finish_all(sim, "apps/app", Outcome::Success);
    wait_until(30, "z started", || !ours(sim, "apps/z").is_empty());
    finish_all(sim, "apps/z", Outcome::Success);
    wait_until(30, "nothing pending", || settled(&s));

    assert_eq!(ours(sim, "images/ruby").len(), 1);
    assert_eq!(ours(sim, "images/tools").len(), 1);
    assert_eq!(ours(sim, "apps/app").len(), 2);
    // z waited for app's second build and was built once.
    assert_eq!(ours(sim, "apps/z").len(), 1);
}

#[test]
fn a_failure_blocks_below_it_until_a_later_success() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    sim.queue_pipeline_outcomes("images/ruby", &[Outcome::Failed]);
    sim.run_pipeline("images/base", "push");
    wait_until(60, "ruby failed and app blocked", || {
        let st = status(&s);
        st.contains(&("images/ruby".into(), "failed".into()))
            && st.contains(&("apps/app".into(), "blocked".into()))
    });
    wait_until(30, "tools built", || succeeded(sim, "images/tools", 1));
    assert!(ours(sim, "apps/app").is_empty());
    assert!(ours(sim, "apps/z").is_empty());

    // A retry of the failed pipeline succeeds and resumes the chain.
    let failed = ours(sim, "images/ruby")[0].id;
    sim.retry_pipeline("images/ruby", failed);
    wait_until(60, "z built", || succeeded(sim, "apps/z", 1));
    wait_until(30, "nothing pending", || settled(&s));
    assert_eq!(ours(sim, "images/ruby").len(), 1);
    assert_eq!(ours(sim, "apps/app").len(), 1);
    assert_eq!(ours(sim, "apps/z").len(), 1);
}

#[test]
fn redelivered_webhooks_are_processed_once() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    sim.faults().duplicate_webhooks(true);
    sim.run_pipeline("images/base", "push");
    wait_until(60, "z built", || succeeded(sim, "apps/z", 1));
    let before = sim
        .deliveries()
        .iter()
        .filter(|d| d.redelivery && d.ok())
        .count();
    sim.redeliver_last("images/base");
    sim.redeliver_last("apps/app");
    wait_until(30, "the redeliveries answered", || {
        sim.deliveries()
            .iter()
            .filter(|d| d.redelivery && d.ok())
            .count()
            >= before + 2
    });
    // Events are applied in the order they were recorded: once an unrelated cascade recorded after
    // the redeliveries is done, they were applied too.
    sim.run_pipeline("other/solo", "push");
    wait_until(60, "sentinel built", || succeeded(sim, "other/below", 1));
    wait_until(30, "nothing pending", || settled(&s));
    for project in DOWNSTREAM {
        assert_eq!(ours(sim, project).len(), 1, "{project} built once");
    }
    let dupes = sim.deliveries().iter().filter(|d| d.redelivery).count();
    assert!(dupes > 0, "the simulator redelivered");
}

#[test]
fn only_default_branch_builds_start_a_cascade() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    sim.add_branch("images/base", "dev");
    sim.add_tag("images/base", "v1");
    sim.run_pipeline_with("images/base", PipelineSpec::new("push").branch("dev"));
    sim.run_pipeline_with("images/base", PipelineSpec::new("push").tag("v1"));
    sim.run_pipeline_with(
        "images/base",
        PipelineSpec::new("push").outcome(Outcome::Failed),
    );
    // Pipelines beside the branch never count: a child, a registry scan after an image push (ours
    // included: counting it would loop), a Web IDE pipeline, and a source GitLab may add later.
    for source in [
        "parent_pipeline",
        "container_registry_push",
        "webide",
        "some_future_source",
    ] {
        sim.run_pipeline_with("images/base", PipelineSpec::new(source));
    }
    // Every final status of those seven reached the service before the sentinel below starts.
    wait_until(30, "the final statuses delivered", || {
        let finals = sim
            .deliveries()
            .iter()
            .filter(|d| {
                d.project == "images/base"
                    && d.ok()
                    && matches!(d.pipeline_status.as_deref(), Some("success" | "failed"))
            })
            .count();
        finals >= 7
    });
    sim.run_pipeline("other/solo", "push");
    wait_until(60, "sentinel built", || succeeded(sim, "other/below", 1));
    wait_until(30, "nothing pending", || settled(&s));
    for project in DOWNSTREAM {
        assert!(ours(sim, project).is_empty(), "{project} was built");
    }
}

#[test]
fn a_restart_after_kill_9_finishes_the_chain_without_building_twice() {
    let mut s = setup(hand_finished(), &[]);
    first_wave_started(s.sim());
    s.service.kill();
    // Their results arrive while the service is down: the webhooks are lost.
    finish_all(s.sim(), "images/ruby", Outcome::Success);
    finish_all(s.sim(), "images/tools", Outcome::Success);
    let addr = s.service.addr.clone();
    s.service = Service::start(&s.work, &s.server.url, &addr, &[]);
    wait_until(60, "app started after the restart", || {
        ours(s.sim(), "apps/app").len() == 1
    });
    finish_all(s.sim(), "apps/app", Outcome::Success);
    wait_until(30, "z started", || ours(s.sim(), "apps/z").len() == 1);
    finish_all(s.sim(), "apps/z", Outcome::Success);
    wait_until(30, "nothing pending", || settled(&s));
    for project in DOWNSTREAM {
        assert_eq!(ours(s.sim(), project).len(), 1, "{project} built once");
    }
}

#[test]
fn pipeline_creation_survives_502_and_429() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    sim.faults().fail_next("POST", "/pipeline", 3, 502);
    sim.faults().rate_limit_next("POST", "/pipeline", 2, 1);
    sim.run_pipeline("images/base", "push");
    wait_until(90, "z built", || succeeded(sim, "apps/z", 1));
    wait_until(30, "nothing pending", || settled(&s));
    for project in DOWNSTREAM {
        assert_eq!(ours(sim, project).len(), 1, "{project} built once");
    }
    let injected = sim.requests().iter().filter(|r| r.injected).count();
    assert_eq!(injected, 5);
}

#[test]
fn a_lost_webhook_is_recovered_by_the_reconciler() {
    let s = setup(hand_finished(), &["--reconcile-after", "1s"]);
    let sim = s.sim();
    first_wave_started(sim);
    sim.faults().drop_webhooks(1000);
    finish_all(sim, "images/ruby", Outcome::Success);
    finish_all(sim, "images/tools", Outcome::Success);
    wait_until(60, "app started without webhooks", || {
        ours(sim, "apps/app").len() == 1
    });
    finish_all(sim, "apps/app", Outcome::Success);
    wait_until(60, "z started", || ours(sim, "apps/z").len() == 1);
    finish_all(sim, "apps/z", Outcome::Success);
    wait_until(30, "nothing pending", || settled(&s));
    for project in DOWNSTREAM {
        assert_eq!(ours(sim, project).len(), 1, "{project} built once");
    }
}

#[test]
fn the_throttle_limits_concurrent_pipelines() {
    let s = setup(SimOptions::default(), &["--max-running", "1"]);
    let sim = s.sim();
    sim.run_pipeline("images/base", "push");
    wait_until(60, "z built", || succeeded(sim, "apps/z", 1));
    let mut all: Vec<PipelineInfo> = DOWNSTREAM.iter().flat_map(|p| ours(sim, p)).collect();
    all.sort_by_key(|p| p.created_at);
    for pair in all.windows(2) {
        assert!(
            pair[1].created_at >= pair[0].finished_at.unwrap(),
            "{:?} overlaps {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn rebuild_starts_a_pipeline_whose_success_cascades() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    gitlab_deps(&s.work, &s.server.url, None)
        .args(["rebuild", "images/ruby", "--dry-run"])
        .assert()
        .success()
        .stdout(
            predicates::str::contains("wave 1: apps/app")
                .and(predicates::str::contains("wave 2: apps/z")),
        );
    assert!(sim.all_pipelines().is_empty(), "a dry run touches nothing");
    gitlab_deps(&s.work, &s.server.url, None)
        .args(["rebuild", "images/ruby"])
        .assert()
        .success()
        .stdout(predicates::str::contains("Started pipeline"));
    wait_until(60, "z built", || succeeded(sim, "apps/z", 1));
    wait_until(30, "nothing pending", || settled(&s));
    assert_eq!(sim.pipelines("images/ruby").len(), 1);
    assert_eq!(ours(sim, "apps/app").len(), 1);
    assert!(ours(sim, "images/tools").is_empty());
}

#[test]
fn cancel_drops_pending_work() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    sim.queue_pipeline_outcomes("images/ruby", &[Outcome::Failed]);
    sim.run_pipeline("images/base", "push");
    wait_until(60, "app blocked", || {
        status(&s).contains(&("apps/app".into(), "blocked".into()))
    });
    gitlab_deps(&s.work, &s.server.url, None)
        .args(["cancel", "apps/app", "--descendants"])
        .assert()
        .success();
    wait_until(30, "app and z dropped", || {
        let st = status(&s);
        !st.iter().any(|(p, _)| p == "apps/app" || p == "apps/z")
    });
    assert!(status(&s).contains(&("images/ruby".into(), "failed".into())));
}

#[test]
fn a_push_that_changes_the_dockerfile_rescans_the_project() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    let reg = sim.registry_host();
    let dockerfile = format!("FROM {reg}/other/solo\n");
    sim.push("apps/z", &[("Dockerfile", Some(dockerfile.as_str()))]);
    wait_until(60, "apps/z now depends on other/solo", || {
        let out = gitlab_deps(&s.work, &s.server.url, None)
            .args(["deps", "apps/z", "--json"])
            .output()
            .unwrap();
        out.status.success() && json(&out) == serde_json::json!(["other/solo"])
    });
}

/// A Push Hook for `project` in GitLab's shape, delivered straight to the service (the simulator's
/// own pushes list every path a commit touched).
fn deliver_push(s: &Setup, project: &str, commits: serde_json::Value, total: u64) {
    let sim = s.sim();
    let id = sim.project_id(project).unwrap();
    let head = sim.head_commit(project).unwrap();
    let body = serde_json::json!({
        "object_kind": "push", "event_name": "push",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22", "after": head,
        "ref": "refs/heads/main", "checkout_sha": head, "message": null,
        "user_id": 1, "user_name": "Administrator", "user_email": "", "user_avatar": null,
        "project_id": id,
        "project": {"id": id, "path_with_namespace": project, "default_branch": "main", "ci_config_path": null},
        "commits": commits, "total_commits_count": total, "push_options": {}
    });
    let request = reqwest::Client::new()
        .post(format!("{}/hooks/gitlab", s.service.url))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", SECRET)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    let response = s.server.runtime.block_on(request.send()).unwrap();
    let status = response.status().as_u16();
    let text = s.server.runtime.block_on(response.text()).unwrap();
    assert_eq!((status, text.as_str()), (200, "accepted\n"));
}

fn deps_of(s: &Setup, project: &str) -> Option<serde_json::Value> {
    let out = gitlab_deps(&s.work, &s.server.url, None)
        .args(["deps", project, "--json"])
        .output()
        .unwrap();
    out.status.success().then(|| json(&out))
}

#[test]
fn a_rename_into_a_subdirectory_rescans_the_project() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    let dockerfile = sim.file("apps/z", "Dockerfile").unwrap();
    // Commits with no push event: the hook below is the only news of the move.
    sim.set_file("apps/z", "build/Dockerfile", &dockerfile);
    sim.remove_file("apps/z", "Dockerfile");
    // GitLab lists a rename only under `added`, with its new path.
    let commits = serde_json::json!([{
        "id": sim.head_commit("apps/z").unwrap(), "message": "Move the Dockerfile\n",
        "added": ["build/Dockerfile"], "modified": [], "removed": []
    }]);
    deliver_push(&s, "apps/z", commits, 1);
    // Only a root Dockerfile is configured: after the rescan apps/z depends on nothing.
    wait_until(60, "apps/z rescanned", || {
        deps_of(&s, "apps/z") == Some(serde_json::json!([]))
    });
}

#[test]
fn a_rewind_with_no_commits_listed_rescans_the_project() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    let reg = sim.registry_host();
    sim.set_file("apps/z", "Dockerfile", &format!("FROM {reg}/other/solo\n"));
    // A force-push to an older commit: nothing says what changed.
    deliver_push(&s, "apps/z", serde_json::json!([]), 0);
    wait_until(60, "apps/z now depends on other/solo", || {
        deps_of(&s, "apps/z") == Some(serde_json::json!(["other/solo"]))
    });
}

/// The service's graph counts from `/api/status`.
fn graph_edges(s: &Setup) -> Option<u64> {
    let url = format!("{}/api/status", s.service.url);
    let body = s
        .server
        .runtime
        .block_on(async { reqwest::get(&url).await?.text().await })
        .ok()?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["graph"]["edges"].as_u64()
}

#[test]
fn a_push_that_moves_an_edge_changes_what_the_next_cascade_builds() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    assert_eq!(graph_edges(&s), Some(6));
    // z moves from app onto solo and below: app -> z goes, solo -> z and below -> z come.
    let reg = sim.registry_host();
    let dockerfile = format!("FROM {reg}/other/solo AS tools\nFROM {reg}/other/below\n");
    sim.push("apps/z", &[("Dockerfile", Some(dockerfile.as_str()))]);
    wait_until(60, "the service's graph has the new edges", || {
        graph_edges(&s) == Some(7)
    });
    wait_until(60, "z's own push pipeline done", || {
        sim.pipelines("apps/z")
            .iter()
            .all(|p| p.status.is_finished())
    });

    // The next cascade from solo follows the new edges: below, then z after it.
    sim.run_pipeline("other/solo", "push");
    wait_until(60, "z built after below", || succeeded(sim, "apps/z", 1));
    wait_until(30, "nothing pending", || settled(&s));
    let below = &ours(sim, "other/below")[0];
    let z = &ours(sim, "apps/z")[0];
    assert!(z.created_at >= below.finished_at.unwrap());
    assert_eq!(var(z, "GITLAB_DEPS_ROOT"), Some("other/solo"));

    // And a cascade from base no longer reaches z.
    sim.run_pipeline("images/base", "push");
    wait_until(60, "app built", || succeeded(sim, "apps/app", 1));
    wait_until(30, "nothing pending", || settled(&s));
    assert_eq!(ours(sim, "apps/z").len(), 1, "z was not rebuilt for base");
}

#[test]
fn the_http_endpoint_checks_secrets_shapes_and_sizes() {
    let s = setup(SimOptions::default(), &["--max-body-bytes", "4096"]);
    let url = format!("{}/hooks/gitlab", s.service.url);
    let client = reqwest::Client::new();
    let post = |token: Option<&str>, event: &str, body: String| {
        let mut req = client
            .post(&url)
            .header("X-Gitlab-Event", event)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(token) = token {
            req = req.header("X-Gitlab-Token", token);
        }
        let response = s.server.runtime.block_on(req.send()).unwrap();
        response.status().as_u16()
    };
    let valid = serde_json::json!({
        "object_kind": "pipeline",
        "object_attributes": {"id": 999, "ref": "dev", "tag": false, "source": "push", "status": "success", "variables": []},
        "project": {"id": 1, "path_with_namespace": "images/base", "default_branch": "main"}
    })
    .to_string();
    assert_eq!(post(None, "Pipeline Hook", valid.clone()), 401);
    assert_eq!(post(Some("wrong"), "Pipeline Hook", valid.clone()), 401);
    assert_eq!(post(Some(SECRET), "Pipeline Hook", "{not json".into()), 400);
    assert_eq!(
        post(
            Some(SECRET),
            "Pipeline Hook",
            r#"{"object_kind":"pipeline"}"#.into()
        ),
        400
    );
    assert_eq!(post(Some(SECRET), "Pipeline Hook", "x".repeat(10_000)), 413);
    assert_eq!(post(Some(SECRET), "Issue Hook", "{}".into()), 200);
    assert_eq!(post(Some(SECRET), "Pipeline Hook", valid), 200);

    let get = |path: &str| {
        let response = s
            .server
            .runtime
            .block_on(client.get(format!("{}{path}", s.service.url)).send())
            .unwrap();
        let code = response.status().as_u16();
        (code, s.server.runtime.block_on(response.text()).unwrap())
    };
    assert_eq!(get("/healthz").0, 200);
    let (code, metrics) = get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("gitlab_deps_webhooks_total"), "{metrics}");
    assert!(metrics.contains("result=\"unauthorized\""), "{metrics}");
    let (code, page) = get("/");
    assert_eq!(code, 200);
    assert!(page.contains("gitlab-deps"));
    let (code, body) = get("/api/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["graph"]["projects"], 7);

    // The service is still healthy after all that, and works.
    s.sim().run_pipeline("other/solo", "push");
    wait_until(60, "below built", || succeeded(s.sim(), "other/below", 1));
}

#[test]
fn serve_refuses_to_start_without_a_secret() {
    let server = instance(SimOptions::default());
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .timeout(Duration::from_secs(30))
        .assert()
        .failure()
        .stderr(predicates::str::contains("no webhook secret"));
}

// Only a build with the `demo` feature (the default) has the command.
#[cfg(feature = "demo")]
#[test]
fn the_demo_runs_a_cascade_end_to_end() {
    let work = Workdir::new();
    let out = gitlab_deps(&work, "http://unused.invalid", None)
        .args([
            "demo",
            "--exit-when-done",
            "--pipeline-ms",
            "150",
            "--listen",
            "127.0.0.1:0",
            "--sim-listen",
            "127.0.0.1:0",
        ])
        .env("TMPDIR", work.dir.path())
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pipelines created by gitlab-deps: 7 for 7 projects"),
        "{stdout}"
    );
    assert!(stdout.contains("failed: apps/legacy"), "{stdout}");
    assert!(
        stdout.contains("blocked below a failure: apps/reports"),
        "{stdout}"
    );
    assert!(stdout.contains("would have run 10"), "{stdout}");
}

#[test]
fn a_scan_by_another_process_reaches_the_running_service() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    let reg = sim.registry_host();
    // apps/z moves onto other/solo without a push webhook; a CLI scan records it.
    sim.set_file("apps/z", "Dockerfile", &format!("FROM {reg}/other/solo\n"));
    gitlab_deps(&s.work, &s.server.url, None)
        .arg("scan")
        .assert()
        .success();
    let before = ours(sim, "apps/z").len();
    wait_until(60, "the service cascades over the new edge", || {
        // Each try is a new change of solo; the service picks the new graph up within a second.
        if ours(sim, "apps/z").len() > before {
            return true;
        }
        if sim
            .pipelines("other/solo")
            .iter()
            .all(|p| p.status.is_finished())
        {
            sim.run_pipeline("other/solo", "push");
        }
        false
    });
}

#[test]
fn a_refused_pipeline_creation_fails_that_project_only() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    // The token may not run pipelines in apps/app (403).
    sim.set_maintainer("apps/app", false);
    sim.run_pipeline("images/base", "push");
    wait_until(60, "app failed", || {
        status(&s).contains(&("apps/app".into(), "failed".into()))
    });
    let out = gitlab_deps(&s.work, &s.server.url, None)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let views = json(&out);
    let app = views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["project"] == "apps/app")
        .unwrap();
    assert!(app["detail"].as_str().unwrap().contains("403"), "{app}");
    // Unrelated work goes on.
    sim.run_pipeline("other/solo", "push");
    wait_until(60, "below built", || succeeded(sim, "other/below", 1));
    assert!(ours(sim, "apps/z").is_empty());
}

#[test]
fn excluded_projects_are_never_triggered_and_not_waited_for() {
    let server = instance(SimOptions::default());
    let work = Workdir::new();
    let cfg = work.write("config.toml", "[cascade]\nexclude = [\"apps/app\"]\n");
    gitlab_deps(&work, &server.url, Some(&cfg))
        .arg("scan")
        .assert()
        .success();
    let service = Service::start_with_config(&work, &server.url, "127.0.0.1:0", &[], Some(&cfg));
    gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
        .args(["hooks", "sync", "--public-url", &service.url])
        .assert()
        .success();
    let sim = &server.sim;
    sim.run_pipeline("images/base", "push");
    wait_until(60, "z built", || succeeded(sim, "apps/z", 1));
    assert!(ours(sim, "apps/app").is_empty());
    assert_eq!(ours(sim, "images/ruby").len(), 1);
}

#[test]
fn the_rate_limit_queues_creations() {
    let s = setup(SimOptions::default(), &["--max-per-minute", "1"]);
    let sim = s.sim();
    sim.run_pipeline("images/base", "push");
    // ruby and tools are both ready; one is created, the other waits for the next minute.
    wait_until(60, "one created, one queued", || {
        let created = ours(sim, "images/ruby").len() + ours(sim, "images/tools").len();
        created == 1 && status(&s).iter().any(|(_, state)| state == "queued")
    });
    let created = ours(sim, "images/ruby").len() + ours(sim, "images/tools").len();
    assert_eq!(created, 1);
}

#[test]
fn a_queued_rebuild_goes_through_the_service() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    gitlab_deps(&s.work, &s.server.url, None)
        .args(["rebuild", "images/ruby", "--queue"])
        .assert()
        .success()
        .stdout(predicates::str::contains("Queued"));
    wait_until(60, "z built", || succeeded(sim, "apps/z", 1));
    wait_until(30, "nothing pending", || settled(&s));
    // The service created ruby's pipeline itself, then app and z, once each.
    for project in ["images/ruby", "apps/app", "apps/z"] {
        assert_eq!(ours(sim, project).len(), 1, "{project}");
    }
    assert!(ours(sim, "images/tools").is_empty());
    assert_eq!(
        var(&ours(sim, "apps/app")[0], "GITLAB_DEPS_ROOT"),
        Some("images/ruby")
    );
}

#[test]
fn a_project_that_refuses_pipeline_variables_still_gets_its_pipeline() {
    let s = setup(SimOptions::default(), &[]);
    let sim = s.sim();
    sim.set_variables_allowed("apps/app", false);
    sim.run_pipeline("images/base", "push");
    wait_until(60, "z built", || succeeded(sim, "apps/z", 1));
    wait_until(30, "nothing pending", || settled(&s));
    let app = ours(sim, "apps/app");
    assert_eq!(app.len(), 1);
    assert!(app[0].variables.is_empty());
    assert_eq!(ours(sim, "apps/z").len(), 1);
}

#[test]
fn cancel_force_forgets_a_pipeline_that_never_finishes() {
    let s = setup(hand_finished(), &[]);
    let sim = s.sim();
    first_wave_started(sim);
    // ruby's pipeline stays parked (a manual job, say): forget it.
    gitlab_deps(&s.work, &s.server.url, None)
        .args(["cancel", "images/ruby", "--force"])
        .assert()
        .success();
    wait_until(30, "ruby forgotten", || {
        !status(&s).iter().any(|(p, _)| p == "images/ruby")
    });
    finish_all(sim, "images/tools", Outcome::Success);
    wait_until(30, "app started without ruby", || {
        ours(sim, "apps/app").len() == 1
    });
    assert!(!sim.pipelines("images/ruby")[0].status.is_finished());
}
