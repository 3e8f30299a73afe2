//! The two-replica examples under `contrib/` (compose with haproxy, Kubernetes) stay in step with
//! the code: their config files are accepted by the real parser, the files and variables they
//! name are the ones the service reads, and the probes point at endpoints that exist.

use gitlab_deps::config::{self, FileConfig};
use gitlab_deps::service::defaults;

#[path = "common/contrib.rs"]
mod contrib_files;
use contrib_files::{contrib, read};

/// The `GITLAB_DEPS_*` names in `text`.
fn variables(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("GITLAB_DEPS_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_example_configs_parse_and_name_the_mounted_secrets() {
    for (config, manifests) in [
        ("compose/config.toml", vec!["compose/compose.yaml"]),
        (
            "kubernetes/config.toml",
            vec!["kubernetes/deployment.yaml", "kubernetes/init-job.yaml"],
        ),
    ] {
        let file = FileConfig::load(&contrib(config)).unwrap();
        let ttl =
            config::parse_duration("lease_ttl", file.serve.lease_ttl.as_deref().unwrap()).unwrap();
        assert!(
            ttl >= defaults::LEASE_TTL_MIN,
            "{config}: lease_ttl {ttl:?}"
        );
        assert!(file.serve.public_url.is_some(), "{config}: public_url");
        // The secrets are read from where the manifests mount them.
        let token = file.token_file.unwrap();
        let secret = file.serve.webhook_secret_file.unwrap();
        for path in [&token, &secret] {
            let dir = path.parent().unwrap().to_str().unwrap();
            let name = path.file_name().unwrap().to_str().unwrap();
            for manifest in &manifests {
                let text = read(manifest);
                assert!(
                    text.contains(dir) || text.contains(&format!("/run/secrets/{name}")),
                    "{manifest} mounts nothing at {}",
                    path.display()
                );
            }
        }
    }
    let compose = read("compose/compose.yaml");
    for name in ["gitlab_token", "webhook_secret", "db_password"] {
        assert!(compose.contains(&format!("  {name}:\n    file: ./secrets/")));
    }
}

#[test]
fn the_variables_the_examples_set_are_the_ones_the_binary_reads() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gitlab-deps"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let known = format!("{}{}", help(&["--help"]), help(&["serve", "--help"]));
    for file in [
        "compose/compose.yaml",
        "kubernetes/deployment.yaml",
        "kubernetes/init-job.yaml",
    ] {
        for name in variables(&read(file)) {
            assert!(
                known.contains(&format!("{name}=")) || known.contains(&format!("{name}]")),
                "{file} sets {name}, which `gitlab-deps --help` / `serve --help` does not know"
            );
        }
    }
}

#[test]
fn the_replicas_take_the_flags_and_the_probes_hit_real_endpoints() {
    let serve_help = String::from_utf8_lossy(
        &std::process::Command::new(env!("CARGO_BIN_EXE_gitlab-deps"))
            .args(["serve", "--help"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    for flag in ["--replica-name", "--spool", "--lease-ttl"] {
        assert!(serve_help.contains(flag), "serve has no {flag}");
    }
    let compose = read("compose/compose.yaml");
    assert!(compose.contains(r#"command: ["serve", "--replica-name", "a", "--spool""#));
    assert!(compose.contains(r#"command: ["serve", "--replica-name", "b", "--spool""#));
    assert!(compose.contains("dockerfile: contrib/Containerfile"));
    assert!(contrib("Containerfile").exists());
    let haproxy = read("compose/haproxy.cfg");
    assert!(haproxy.contains("option httpchk GET /healthz"));
    assert!(
        haproxy.contains("server a replica-a:8080") && haproxy.contains("server b replica-b:8080")
    );
    let deployment = read("kubernetes/deployment.yaml");
    assert!(deployment.contains("replicas: 2"));
    for probe in [
        "readinessProbe:\n            httpGet:\n              path: /readyz",
        "livenessProbe:\n            httpGet:\n              path: /healthz",
    ] {
        assert!(deployment.contains(probe), "deployment.yaml: {probe}");
    }
    let kustomization = read("kubernetes/kustomization.yaml");
    for resource in [
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
        "init-job.yaml",
    ] {
        assert!(kustomization.contains(&format!("  - {resource}")));
        assert!(contrib(&format!("kubernetes/{resource}")).exists());
    }
}
