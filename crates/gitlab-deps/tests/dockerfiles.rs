//! Dockerfiles read as BuildKit reads them, end to end: the real binary scans a
//! simulated GitLab and keeps every image a file can give, with a warning (and
//! its line) for each line it cannot use.

mod common;

use common::{SimServer, Workdir, gitlab_deps, query};
use gitlab_sim::{ProjectSpec, SimOptions};

fn project(graph: &serde_json::Value, path: &str) -> serde_json::Value {
    graph["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == path)
        .cloned()
        .unwrap_or_else(|| panic!("{path} missing from {graph}"))
}

#[test]
fn bad_lines_are_warnings_with_lines_and_platforms_are_merged() {
    let server = SimServer::start(SimOptions::default());
    let sim = &server.sim;
    let reg = sim.registry_host();
    for arch in ["amd64", "arm64", "s390x"] {
        sim.add_project(
            ProjectSpec::new(format!("images/base-{arch}")).file("Dockerfile", "FROM debian:12\n"),
        );
    }
    sim.add_project(ProjectSpec::new("apps/tomcat").file(
        "Dockerfile",
        format!(
            "FROM alpine:3\n\
             RUN cat <<EOF >> /etc/motd\n\
             FROM not-an-image\n\
             EOF\n\
             BOGUS line\n\
             ENTRYPOINT []\n\
             FROM {reg}/images/base-${{TARGETARCH}}:2\n\
             COPY --from=${{IMG}} / /\n\
             FROM tomcat:10\n"
        ),
    ));
    let work = Workdir::new();
    let cfg = work.write(
        "config.toml",
        "[scan]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n",
    );
    gitlab_deps(&work, &server.url, Some(&cfg))
        .arg("scan")
        .assert()
        .success();

    let graph = query(&work, &server.url, &["graph", "--format", "json"]);
    let tomcat = project(&graph, "apps/tomcat");
    assert_eq!(
        tomcat["depends_on"],
        serde_json::json!(["images/base-amd64", "images/base-arm64"])
    );
    assert_eq!(
        tomcat["external"],
        serde_json::json!(["docker.io/library/alpine:3", "docker.io/library/tomcat:10"])
    );

    let warnings = query(&work, &server.url, &["warnings", "--json"]);
    let lines: Vec<(u64, String)> = warnings
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["project"] == "apps/tomcat")
        .map(|w| {
            assert_eq!(w["file"], "Dockerfile", "{w}");
            let line = w["line"].as_u64().unwrap_or_else(|| panic!("{w}"));
            (line, w["message"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].0, 5, "{lines:?}");
    assert!(lines[0].1.contains("BOGUS"), "{lines:?}");
    assert_eq!(lines[1].0, 8, "{lines:?}");
    assert!(lines[1].1.contains("--from"), "{lines:?}");
}
