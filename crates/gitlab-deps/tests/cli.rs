//! The command line's own outputs: shell completions, man pages and the log formats.

mod common;

use common::{SimServer, Workdir, gitlab_deps};
use gitlab_sim::{ProjectSpec, SimOptions};

/// Commands every completion script and the man page must know.
const COMMANDS: [&str; 5] = ["scan", "list-projects", "rdeps", "hooks", "completions"];

/// The binary with nothing set: no config, no database, no GitLab.
fn bare(work: &Workdir) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("gitlab-deps").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", work.dir.path());
    // A config file that fails to parse: completions and man pages must not read it.
    let config = work.write("broken.toml", "this is not toml = [");
    cmd.env("GITLAB_DEPS_CONFIG", config);
    cmd
}

#[test]
fn completions_for_every_shell_name_the_commands() {
    let work = Workdir::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = bare(&work).args(["completions", shell]).output().unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).unwrap();
        for command in COMMANDS {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
        // Nested commands and global flags too.
        assert!(script.contains("sync"), "{shell} lacks hooks sync");
        assert!(script.contains("log-format"), "{shell} lacks --log-format");
    }
    bare(&work)
        .args(["completions", "tcsh"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("invalid value"));
}

#[test]
fn man_page_on_stdout_and_one_per_command_in_a_directory() {
    let work = Workdir::new();
    let out = bare(&work).arg("man").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.starts_with(".ie"), "not roff: {page:.200}");
    assert!(page.contains(".TH gitlab-deps 1"), "{page:.400}");
    for command in COMMANDS {
        // roff escapes hyphens.
        let escaped = command.replace('-', "\\-");
        assert!(page.contains(&escaped), "the page lacks {command}");
    }
    // The packaging step is not advertised to users.
    assert!(!page.contains("gitlab\\-deps\\-man"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    bare(&work)
        .args(["man", "--out-dir"])
        .arg(&out_dir)
        .assert()
        .success()
        .stdout("");
    for name in [
        "gitlab-deps.1",
        "gitlab-deps-scan.1",
        "gitlab-deps-hooks.1",
        "gitlab-deps-hooks-sync.1",
        "gitlab-deps-completions.1",
    ] {
        let text =
            std::fs::read_to_string(out_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name} is not a man page");
    }
    assert!(!out_dir.join("gitlab-deps-man.1").exists());
}

const TOKEN: &str = "glpat-logtoken-sentinel-8121";
const SECRET: &str = "hook-secret-sentinel-6644";

/// Runs a scan and a hook sync at `-vv` with the token and secret from files, in one log format.
fn verbose_runs(format: &str) -> Vec<String> {
    let server = SimServer::start(SimOptions {
        token: TOKEN.to_owned(),
        ..SimOptions::default()
    });
    server
        .sim
        .add_project(ProjectSpec::new("images/base").file("Dockerfile", "FROM debian:bookworm\n"));
    server.sim.add_project(
        ProjectSpec::new("apps/web").file("Dockerfile", "FROM registry.example/images/base\n"),
    );
    let work = Workdir::new();
    let token_file = work.write("token", &format!("{TOKEN}\n"));
    let secret_file = work.write("secret", &format!("{SECRET}\n"));
    let run = |args: &[&str]| {
        let out = gitlab_deps(&work, &server.url, None)
            .env_remove("GITLAB_DEPS_TOKEN")
            .arg("--token-file")
            .arg(&token_file)
            .args(["-vv", "--log-format", format])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stderr}");
        stderr
    };
    let scan = run(&["scan"]);
    let secret_arg = secret_file.display().to_string();
    let sync = run(&[
        "hooks",
        "sync",
        "--public-url",
        "http://deps.example",
        "--webhook-secret-file",
        &secret_arg,
    ]);
    // The secret did reach GitLab: the check below is not vacuous.
    assert_eq!(server.sim.hooks("apps/web")[0].token, SECRET);
    vec![scan, sync]
}

#[test]
fn neither_token_nor_secret_appear_in_debug_logs_in_either_format() {
    for format in ["text", "json"] {
        for stderr in verbose_runs(format) {
            // Debug logging really was on.
            assert!(
                stderr.contains("DEBUG"),
                "{format}: no debug lines:\n{stderr}"
            );
            for hidden in [TOKEN, SECRET, "sentinel"] {
                assert!(!stderr.contains(hidden), "{format}: {hidden} in:\n{stderr}");
            }
            if format == "json" {
                for line in stderr.lines() {
                    let value: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                    assert!(value["level"].is_string() && value["timestamp"].is_string());
                }
            }
        }
    }
}

#[test]
fn the_config_file_chooses_the_log_format_and_the_flag_overrides_it() {
    let server = SimServer::start(SimOptions::default());
    server
        .sim
        .add_project(ProjectSpec::new("images/base").file("Dockerfile", "FROM debian:bookworm\n"));
    let work = Workdir::new();
    let config = work.write("config.toml", "log_format = \"json\"\n");
    let stderr = |extra: &[&str]| {
        let out = gitlab_deps(&work, &server.url, Some(&config))
            .arg("-vv")
            .args(extra)
            .arg("scan")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let from_file = stderr(&[]);
    assert!(!from_file.is_empty());
    assert!(from_file.lines().all(|l| l.starts_with('{')), "{from_file}");
    let from_flag = stderr(&["--log-format", "text"]);
    assert!(from_flag.contains(" DEBUG "), "{from_flag}");
    assert!(
        !from_flag.lines().any(|l| l.starts_with('{')),
        "{from_flag}"
    );
}
