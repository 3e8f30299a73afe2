//! `/metrics` after a small cascade: the real service against gitlab-sim, scraped over HTTP.

mod common;

use common::{SECRET, Service, SimServer, Workdir, gitlab_deps, wait_until};
use gitlab_sim::{Outcome, SimOptions};

/// base -> {ruby, tools} -> app: a chain of three waves.
fn instance() -> SimServer {
    let server = SimServer::start(SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    });
    let sim = &server.sim;
    common::diamond(sim);
    server
}

/// The value of one series (`name` or `name{labels}`) in a text exposition.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn scrape(server: &SimServer, service: &Service) -> String {
    let url = format!("{}/metrics", service.url);
    server
        .runtime
        .block_on(async { reqwest::get(&url).await?.text().await })
        .unwrap()
}

/// Finishes the running pipeline gitlab-deps created for `project`, if there is one.
fn finish_ours(server: &SimServer, project: &str) -> bool {
    let running: Vec<u64> = server
        .sim
        .pipelines(project)
        .into_iter()
        .filter(|p| p.source == "api" && !p.status.is_finished())
        .map(|p| p.id)
        .collect();
    for id in &running {
        server.sim.finish_pipeline(project, *id, Outcome::Success);
    }
    !running.is_empty()
}

#[test]
fn a_cascade_shows_in_every_metric_family() {
    let server = instance();
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();
    // One pipeline at a time, so the second wave waits for the throttle.
    let service = Service::start(&work, &server.url, "127.0.0.1:0", &["--max-running", "1"]);
    gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
        .args(["hooks", "sync", "--public-url", &service.url])
        .assert()
        .success();

    // The scan the service loaded at start.
    let start = scrape(&server, &service);
    assert_eq!(
        value(&start, "gitlab_deps_scan_projects"),
        Some(4.0),
        "{start}"
    );
    assert_eq!(
        value(&start, "gitlab_deps_scan_edges"),
        Some(4.0),
        "{start}"
    );
    assert_eq!(
        value(&start, "gitlab_deps_scan_warnings"),
        Some(0.0),
        "{start}"
    );
    assert!(value(&start, "gitlab_deps_scan_duration_seconds").is_some_and(|s| s > 0.0));
    assert_eq!(
        value(&start, "gitlab_deps_queue_stale"),
        Some(0.0),
        "{start}"
    );

    // GitLab rate-limits the first pipeline creation once, for a second.
    server
        .sim
        .faults()
        .rate_limit_next("POST", "/pipeline", 1, 1);
    let base = server.sim.run_pipeline("images/base", "push");
    server
        .sim
        .finish_pipeline("images/base", base, Outcome::Success);

    // ruby and tools are both due; one runs, the other waits only for the throttle, app waits for
    // both.
    wait_until(60, "one of the second wave running, one throttled", || {
        let m = scrape(&server, &service);
        value(&m, "gitlab_deps_queue_throttled") == Some(1.0)
            && value(&m, "gitlab_deps_queue_stale") == Some(2.0)
            && value(&m, r#"gitlab_deps_projects{state="running"}"#) == Some(1.0)
    });

    // Finish whatever of ours runs until nothing is left.
    wait_until(60, "the cascade settled", || {
        for project in ["images/ruby", "images/tools", "apps/app"] {
            finish_ours(&server, project);
        }
        let m = scrape(&server, &service);
        value(&m, "gitlab_deps_chain_duration_seconds_count") == Some(1.0)
    });
    let m = scrape(&server, &service);

    // Three downstream pipelines, each measured from the upstream success it answered.
    assert_eq!(
        value(&m, "gitlab_deps_trigger_delay_seconds_count"),
        Some(3.0),
        "{m}"
    );
    // The chain ran from base's success to app's: at least the one-second rate-limit wait.
    assert!(
        value(&m, "gitlab_deps_chain_duration_seconds_sum").is_some_and(|s| s >= 1.0),
        "{m}"
    );
    // Webhooks: at least base's, ruby's, tools' and app's final pipeline events, each timed.
    let webhooks = value(&m, "gitlab_deps_webhook_duration_seconds_count").unwrap_or(0.0);
    assert!(webhooks >= 4.0, "{m}");
    // API requests by endpoint class and outcome, the retry and the wait GitLab asked for.
    assert_eq!(
        value(
            &m,
            r#"gitlab_deps_gitlab_requests_total{endpoint="pipeline_create",status="2xx"}"#
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            r#"gitlab_deps_gitlab_requests_total{endpoint="pipeline_create",status="429"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            r#"gitlab_deps_gitlab_retries_total{endpoint="pipeline_create"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            r#"gitlab_deps_gitlab_rate_limit_wait_seconds_total{endpoint="pipeline_create"}"#
        ),
        Some(1.0),
        "{m}"
    );
    // Nothing waits any more.
    assert_eq!(value(&m, "gitlab_deps_queue_stale"), Some(0.0), "{m}");
    assert_eq!(value(&m, "gitlab_deps_queue_throttled"), Some(0.0), "{m}");
    assert_eq!(value(&m, "gitlab_deps_hooks_disabled"), Some(0.0), "{m}");
    // Every family is declared.
    for family in [
        "gitlab_deps_webhook_duration_seconds histogram",
        "gitlab_deps_trigger_delay_seconds histogram",
        "gitlab_deps_chain_duration_seconds histogram",
        "gitlab_deps_gitlab_requests counter",
        "gitlab_deps_gitlab_retries counter",
        "gitlab_deps_gitlab_rate_limit_wait_seconds counter",
        "gitlab_deps_queue_stale gauge",
        "gitlab_deps_queue_throttled gauge",
        "gitlab_deps_scan_duration_seconds gauge",
        "gitlab_deps_scan_projects gauge",
        "gitlab_deps_scan_edges gauge",
        "gitlab_deps_scan_warnings gauge",
        "gitlab_deps_hooks_disabled gauge",
    ] {
        assert!(
            m.contains(&format!("# TYPE {family}")),
            "{family} missing:\n{m}"
        );
    }
}
