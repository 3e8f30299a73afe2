//! The deployment files under `contrib/` stay in step with the code: the example config is accepted
//! by the real binary (unknown keys are errors) and its values are valid; the systemd units run
//! the right commands, and the deployment builds are the production build (no demo, no simulator).

use assert_cmd::Command;
use gitlab_deps::config::{self, FileConfig, PathPatterns, ScanSettings};
use predicates::prelude::*;

#[path = "common/contrib.rs"]
mod contrib_files;
use contrib_files::{contrib, read};

/// The lines of a unit file that set `key`, values only.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

#[test]
fn example_config_is_accepted_by_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    Command::cargo_bin("gitlab-deps")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .arg("--config")
        .arg(contrib("config.example.toml"))
        .arg("--db")
        .arg(dir.path().join("x.db"))
        .arg("list-projects")
        .assert()
        .success()
        .stderr(predicate::str::contains("gitlab-deps scan"));
}

#[test]
fn example_config_values_are_valid() {
    let path = contrib("config.example.toml");
    let file = FileConfig::load(&path).unwrap();

    // Every key is set, so the file really documents (and the test really checks) all of them.
    assert!(file.gitlab_url.is_some() && file.token_file.is_some() && file.db.is_some());
    assert!(file.registry.is_some() && file.concurrency.is_some());
    let scan = &file.scan;
    assert!(!scan.groups.is_empty() && !scan.include.is_empty() && !scan.exclude.is_empty());
    assert!(!scan.build_args.is_empty() && scan.activity_grace.is_some());
    let cascade = &file.cascade;
    assert!(cascade.max_running.is_some() && cascade.max_per_minute.is_some());
    assert!(!cascade.exclude.is_empty());
    let serve = &file.serve;
    assert!(serve.listen.is_some() && serve.public_url.is_some());
    assert!(serve.webhook_secret_file.is_some() && serve.max_body_bytes.is_some());
    assert!(serve.max_connections.is_some() && serve.max_body_bytes_in_flight.is_some());
    assert!(serve.recovery_requests_per_minute.is_some());

    config::parse_gitlab_url(file.gitlab_url.as_deref().unwrap()).unwrap();
    for (key, value) in [
        ("request_timeout", &file.request_timeout),
        ("scan.activity_grace", &scan.activity_grace),
        ("cascade.reconcile_after", &cascade.reconcile_after),
        ("serve.rescan_every", &serve.rescan_every),
        ("serve.header_timeout", &serve.header_timeout),
        ("serve.body_timeout", &serve.body_timeout),
        ("serve.catch_up_interval", &serve.catch_up_interval),
    ] {
        let value = value
            .as_deref()
            .unwrap_or_else(|| panic!("{key} is missing"));
        config::parse_duration("example", value).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    PathPatterns::new("cascade.exclude", &cascade.exclude).unwrap();
    serve
        .listen
        .as_deref()
        .unwrap()
        .parse::<std::net::SocketAddr>()
        .unwrap();

    let settings = ScanSettings::from_file(scan).unwrap();
    assert!(
        settings
            .dockerfiles
            .iter()
            .any(|f| f == "docker/Dockerfile")
    );
    // `*` stays within one path segment, `**` crosses them, as the comments say.
    assert!(settings.wants("apps/web"));
    assert!(!settings.wants("apps/team/web"));
    assert!(settings.wants("images/lang/ruby"));
    assert!(!settings.wants("apps/sandbox-alice"));
    // An exact path in [scan.build_args] wins over a glob.
    assert_eq!(
        settings.build_args.for_project("apps/web")["RUBY_VERSION"],
        "3.4"
    );
    assert_eq!(
        settings.build_args.for_project("apps/api")["RUBY_VERSION"],
        "3.3"
    );
}

#[test]
fn systemd_units_run_the_right_commands() {
    let service = read("systemd/gitlab-deps.service");
    let exec = unit_values(&service, "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    assert!(
        exec[0].contains("--config /etc/gitlab-deps/config.toml"),
        "{}",
        exec[0]
    );
    assert!(exec[0].ends_with(" serve"), "{}", exec[0]);
    assert_eq!(unit_values(&service, "User"), ["gitlab-deps"]);
    assert_eq!(unit_values(&service, "StateDirectory"), ["gitlab-deps"]);
    // Room for the connection limit of the example config plus the service's own files.
    let nofile: Vec<u64> = unit_values(&service, "LimitNOFILE")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let example = FileConfig::load(&contrib("config.example.toml")).unwrap();
    let connections = example.serve.max_connections.unwrap() as u64;
    assert!(
        nofile.len() == 1 && nofile[0] >= connections + 128,
        "LimitNOFILE {nofile:?} for {connections} connections"
    );

    let scan = read("systemd/gitlab-deps-scan.service");
    let exec = unit_values(&scan, "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    assert!(exec[0].ends_with(" update --full"), "{}", exec[0]);

    let timer = read("systemd/gitlab-deps-scan.timer");
    assert_eq!(unit_values(&timer, "OnCalendar").len(), 1);
}

#[test]
fn deployment_builds_leave_the_demo_and_its_simulator_out() {
    for file in ["Containerfile", "README.md"] {
        let text = read(file);
        let builds: Vec<&str> = text.lines().filter(|l| l.contains("cargo build")).collect();
        assert!(!builds.is_empty(), "{file} builds nothing");
        for line in builds {
            assert!(line.contains("--no-default-features"), "{file}: {line}");
        }
    }
}
