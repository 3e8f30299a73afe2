//! The sample instance used by `gitlab-deps demo`.

use crate::Sim;
use crate::model::{Outcome, ProjectSpec, SampleInfo};

const CI: &str = "build:\n  stage: build\n  script:\n    - docker build -t \"$CI_REGISTRY_IMAGE:latest\" .\n    - docker push \"$CI_REGISTRY_IMAGE:latest\"\n";

/// Builds the sample groups and projects; returns what was created.
pub(crate) fn build(sim: &Sim) -> SampleInfo {
    let reg = sim.registry_host();
    let groups = ["images", "images/lang", "tools", "apps", "archive"];
    for g in groups {
        sim.add_group(g);
    }
    let projects: Vec<(&str, String, Option<&str>)> = vec![
        (
            "images/base",
            "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y ca-certificates\n"
                .to_owned(),
            None,
        ),
        (
            "images/lang/ruby",
            format!("FROM {reg}/images/base:latest\nRUN apt-get install -y ruby\n"),
            None,
        ),
        (
            "images/lang/python",
            format!(
                "ARG BASE={reg}/images/base\nFROM ${{BASE}}:latest\nRUN apt-get install -y python3\n"
            ),
            None,
        ),
        (
            "tools/ci-tools",
            format!("FROM {reg}/images/base:latest\nRUN apt-get install -y git curl\n"),
            None,
        ),
        (
            "apps/web",
            format!(
                "FROM {reg}/images/lang/ruby:3.3 AS build\nWORKDIR /app\nCOPY . .\nRUN bundle install\n\nFROM {reg}/tools/ci-tools:latest\nCOPY --from=build /app /app\nCMD [\"/app/bin/web\"]\n"
            ),
            None,
        ),
        (
            "apps/api",
            format!(
                "FROM {reg}/images/lang/python:latest\nCOPY . /srv\nCMD [\"python3\", \"/srv/main.py\"]\n"
            ),
            None,
        ),
        (
            "apps/worker",
            format!("FROM {reg}/images/lang/ruby:latest\nCOPY . /worker\n"),
            Some("# projects this one depends on, one per line\napps/api\n"),
        ),
        (
            "apps/legacy",
            format!("FROM {reg}/images/lang/ruby:latest\nCOPY . /legacy\n"),
            None,
        ),
        (
            "apps/reports",
            "FROM alpine:3.20\nCOPY . /reports\n".to_owned(),
            Some("# projects this one depends on, one per line\napps/legacy\n"),
        ),
    ];
    let mut active = Vec::new();
    for (path, dockerfile, deps) in projects {
        let mut spec = ProjectSpec::new(path)
            .file("Dockerfile", dockerfile)
            .file(".gitlab-ci.yml", CI);
        if let Some(deps) = deps {
            spec = spec.file(".gitlab-deps", deps);
        }
        sim.add_project(spec);
        active.push(path.to_owned());
    }
    let failing = "apps/legacy".to_owned();
    sim.set_pipeline_outcome(&failing, Outcome::Failed);

    let archived = "archive/old-app".to_owned();
    sim.add_project(
        ProjectSpec::new(&archived)
            .file("Dockerfile", format!("FROM {reg}/images/base:latest\n"))
            .file(".gitlab-ci.yml", CI)
            .archived(),
    );
    let empty = "apps/empty".to_owned();
    sim.add_project(ProjectSpec::new(&empty).empty());

    let mut projects = active.clone();
    projects.push(archived.clone());
    projects.push(empty.clone());
    SampleInfo {
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        projects,
        active,
        archived,
        empty,
        failing,
        blocked: vec!["apps/reports".to_owned()],
        root: "images/base".to_owned(),
        registry: reg,
    }
}
