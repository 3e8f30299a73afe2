//! `gitlab-deps hooks sync` against gitlab-sim: install, repair, deduplicate, report refusals.

mod common;

use common::{SimServer, Workdir, gitlab_deps};
use gitlab_sim::{ProjectSpec, SimOptions};
use predicates::prelude::*;

#[test]
fn sync_installs_repairs_and_deduplicates_hooks() {
    let server = SimServer::start(SimOptions::default());
    let sim = &server.sim;
    for p in ["g/a", "g/b", "g/locked"] {
        sim.add_project(ProjectSpec::new(p).file("Dockerfile", "FROM debian\n"));
    }
    let url = "http://deps.example:8080/hooks/gitlab";
    // g/b has two stale hooks to our URL with an old secret, and one unrelated hook.
    sim.add_hook("g/b", url, "old-secret");
    sim.add_hook("g/b", url, "old-secret");
    sim.add_hook("g/b", "http://other.example/hook", "theirs");
    sim.set_maintainer("g/locked", false);
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();

    gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", "new-secret")
        .args(["hooks", "sync", "--public-url", "http://deps.example:8080/"])
        .assert()
        .failure()
        .stdout(predicate::str::contains(
            "1 added, 1 repaired, 1 duplicates removed, 1 failed",
        ))
        .stdout(predicate::str::contains("g/locked"));

    for p in ["g/a", "g/b"] {
        let ours: Vec<_> = sim.hooks(p).into_iter().filter(|h| h.url == url).collect();
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
}
