//! The API token and the webhook secret never show: not in the most verbose logs, not in error
//! messages, not in what the service logs about a rejected webhook.

mod common;

use common::{Service, SimServer, Workdir, gitlab_deps};
use gitlab_sim::{ProjectSpec, SimOptions};

/// Distinctive texts, so a hit cannot be a coincidence.
const TOKEN: &str = "glpat-token-sentinel-5931";
const SECRET: &str = "webhook-secret-sentinel-2718";
const PUBLIC: &str = "http://deps.example";

fn instance(token: &str) -> SimServer {
    let server = SimServer::start(SimOptions {
        token: token.to_owned(),
        ..SimOptions::default()
    });
    server
        .sim
        .add_project(ProjectSpec::new("images/base").file("Dockerfile", "FROM debian:bookworm\n"));
    server.sim.add_project(
        ProjectSpec::new("apps/web").file("Dockerfile", "FROM registry.example/images/base\n"),
    );
    server
}

fn all_output(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_hidden(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} appears in:\n{text}");
    }
}

#[test]
fn trace_logs_of_a_scan_and_a_hook_sync_show_neither_token_nor_secret() {
    let server = instance(TOKEN);
    let work = Workdir::new();
    let scan = gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .arg("scan")
        .output()
        .unwrap();
    assert!(scan.status.success(), "{}", all_output(&scan));
    let text = all_output(&scan);
    // The logging really was on, down to the HTTP layer.
    assert!(text.contains("TRACE"), "no trace output:\n{text}");
    assert_hidden(&text, &[TOKEN]);

    let sync = gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_TOKEN", TOKEN)
        .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "trace")
        .args(["hooks", "sync", "--json", "--public-url", PUBLIC])
        .output()
        .unwrap();
    assert!(sync.status.success(), "{}", all_output(&sync));
    assert_hidden(&all_output(&sync), &[TOKEN, SECRET]);
    // The secret did reach GitLab, in the one request that carries it.
    let hooks = server.sim.hooks("apps/web");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].token, SECRET);
}

#[test]
fn error_messages_do_not_repeat_credentials() {
    let server = instance(TOKEN);
    let work = Workdir::new();
    // A wrong token: GitLab says 401, we say so without the token.
    let wrong = "glpat-wrong-sentinel-1414";
    let out = gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_TOKEN", wrong)
        .env("RUST_LOG", "trace")
        .arg("scan")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = all_output(&out);
    assert!(text.contains("GitLab rejected the token"), "{text}");
    assert_hidden(&text, &[wrong]);

    // A token that cannot be an HTTP header.
    let out = gitlab_deps(&work, &server.url, None)
        .env("GITLAB_DEPS_TOKEN", "glpat-bad\u{1}sentinel")
        .arg("scan")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = all_output(&out);
    assert!(text.contains("cannot carry"), "{text}");
    assert_hidden(&text, &["sentinel", "glpat-bad"]);

    // Credentials in the GitLab URL are refused and masked.
    let with_password = server
        .url
        .replace("http://", "http://oauth2:pw-sentinel-1732@");
    let out = gitlab_deps(&work, &with_password, None)
        .env("GITLAB_DEPS_TOKEN", TOKEN)
        .arg("scan")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = all_output(&out);
    assert!(text.contains("must not contain credentials"), "{text}");
    assert_hidden(&text, &["pw-sentinel-1732"]);
}

#[test]
fn the_service_logs_a_rejected_webhook_without_the_guess_or_the_secret() {
    // `Service` runs with the simulator's default token.
    let server = instance("sim-token");
    let work = Workdir::new();
    gitlab_deps(&work, &server.url, None)
        .arg("scan")
        .assert()
        .success();
    let service = Service::start(&work, &server.url, "127.0.0.1:0", &[]);
    let guess = "guess-sentinel-1618";
    let status = server.runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/hooks/gitlab", service.url))
            .header("X-Gitlab-Event", "Pipeline Hook")
            .header("X-Gitlab-Token", guess)
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 401);
    // The rejection is logged before the answer is sent.
    let log = std::fs::read_to_string(work.path("serve.log")).unwrap();
    assert!(log.contains("rejected a webhook"), "{log}");
    assert_hidden(&log, &[guess, common::SECRET, "sim-token"]);
}
