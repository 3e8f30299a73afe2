//! What the commands print: plain-text helpers, and the JSON shapes of `--json`, defined here once
//! so that the same kind of thing prints the same way in every command (documented in
//! docs/cli-json.md).
//!
//! A project *named* inside another result (a dependency, a wave, a cycle) is its path as a
//! string; a project *described* (`list-projects`, `graph`) is a [`ProjectJson`].

use std::collections::BTreeMap;

use serde::Serialize;

use crate::graph::DepGraph;
use crate::hooks::HookSummary;
use crate::scan::ScanSummary;
use crate::store::{self, ProjectRecord};

/// Formats rows as left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 < columns {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Prints a JSON value on one line per top-level array item would be hard to read; pretty it is.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A project described: `list-projects --json` (one per project) and `graph --format json`.
#[derive(Debug, Serialize)]
pub struct ProjectJson {
    /// Full path.
    pub path: String,
    /// GitLab id.
    pub id: u64,
    /// Default branch (`null` for an empty repository).
    pub default_branch: Option<String>,
    /// Web address.
    pub web_url: String,
    /// Paths of the projects it is built on (direct upstreams).
    pub depends_on: Vec<String>,
    /// Images it uses that no project on the instance builds.
    pub external: Vec<String>,
}

impl ProjectJson {
    /// Every stored project, described with the graph and the stored external images.
    pub fn all(
        records: &[ProjectRecord],
        graph: &DepGraph,
        externals: &[store::External],
    ) -> Vec<Self> {
        let mut by_project: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for e in externals {
            by_project
                .entry(&e.project)
                .or_default()
                .push(e.image.clone());
        }
        records
            .iter()
            .map(|r| Self {
                path: r.path.clone(),
                id: r.id,
                default_branch: r.default_branch.clone(),
                web_url: r.web_url.clone(),
                depends_on: graph
                    .upstreams(&r.path)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                external: by_project.remove(r.path.as_str()).unwrap_or_default(),
            })
            .collect()
    }
}

/// A dependency edge: `graph --format json` (`edges`).
#[derive(Debug, Serialize)]
pub struct EdgeJson {
    /// The project depended on.
    pub upstream: String,
    /// The dependent project.
    pub downstream: String,
    /// Where it was found (`Dockerfile:3`, `.gitlab-deps:2`).
    pub via: String,
}

impl From<&store::Edge> for EdgeJson {
    fn from(e: &store::Edge) -> Self {
        Self {
            upstream: e.upstream.clone(),
            downstream: e.downstream.clone(),
            via: e.via.clone(),
        }
    }
}

/// The whole graph: `graph --format json`.
#[derive(Debug, Serialize)]
pub struct GraphJson {
    /// Every project.
    pub projects: Vec<ProjectJson>,
    /// Every edge.
    pub edges: Vec<EdgeJson>,
    /// Dependency cycles, each as the paths around it.
    pub cycles: Vec<Vec<String>>,
}

/// A problem found by a scan: `warnings --json` (one per warning) and `scan --json` (`warnings`).
#[derive(Debug, Serialize)]
pub struct WarningJson {
    /// The project.
    pub project: String,
    /// The file, when the problem is in one.
    pub file: Option<String>,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl From<&store::Warning> for WarningJson {
    fn from(w: &store::Warning) -> Self {
        Self {
            project: w.project.clone(),
            file: w.file.clone(),
            line: w.line,
            message: w.message.clone(),
        }
    }
}

/// A rebuild plan: `plan --json`, and `rebuild --json` (`plan`).
#[derive(Debug, Serialize)]
pub struct PlanJson {
    /// The projects that changed.
    pub roots: Vec<String>,
    /// What is rebuilt, in waves: each wave only after the one before it.
    pub waves: Vec<Vec<String>>,
}

/// What a scan did: `scan --json`, and `update --json` (`scan`).
#[derive(Debug, Serialize)]
pub struct ScanJson {
    /// Projects listed in scope.
    pub projects_seen: usize,
    /// Projects whose files were read.
    pub projects_read: usize,
    /// Projects whose dependency files had not changed.
    pub files_unchanged: usize,
    /// Projects skipped on the listing alone.
    pub skipped_unchanged: usize,
    /// Projects removed from the database.
    pub removed: usize,
    /// Projects that could not be read this time (kept as they were).
    pub failed: usize,
    /// Projects with at least one upstream project.
    pub with_dependencies: usize,
    /// Dependency edges (a count; `graph --format json` lists them).
    pub edges: usize,
    /// Distinct external images.
    pub external_images: usize,
    /// Every current warning.
    pub warnings: Vec<WarningJson>,
    /// Dependency cycles.
    pub cycles: Vec<Vec<String>>,
    /// API requests sent.
    pub requests: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

impl ScanJson {
    /// The summary with the graph's cycles.
    pub fn new(s: &ScanSummary, cycles: Vec<Vec<String>>) -> Self {
        Self {
            projects_seen: s.projects_seen,
            projects_read: s.projects_read,
            files_unchanged: s.files_unchanged,
            skipped_unchanged: s.skipped_unchanged,
            removed: s.removed,
            failed: s.failed,
            with_dependencies: s.with_dependencies,
            edges: s.edges,
            external_images: s.external_images,
            warnings: s.warnings.iter().map(WarningJson::from).collect(),
            cycles,
            requests: s.requests,
            duration_ms: u64::try_from(s.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// `update --json`: the scan, then the hook sync.
#[derive(Debug, Serialize)]
pub struct UpdateJson {
    /// The scan.
    pub scan: ScanJson,
    /// The hook sync (as `hooks sync --json`).
    pub hooks: HookSummary,
}

/// A pipeline gitlab-deps started: `rebuild --json` (`pipeline`).
#[derive(Debug, Serialize)]
pub struct PipelineJson {
    /// The project.
    pub project: String,
    /// GitLab's pipeline id.
    pub id: u64,
    /// The branch it runs on.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Its page.
    pub web_url: Option<String>,
}

/// `rebuild --json`.
#[derive(Debug, Serialize)]
pub struct RebuildJson {
    /// The project.
    pub project: String,
    /// `started` (a pipeline now), `queued` (for the running service) or `dry_run`.
    pub action: &'static str,
    /// The pipeline started (`null` unless `started`).
    pub pipeline: Option<PipelineJson>,
    /// What a running service rebuilds after it.
    pub plan: PlanJson,
}

/// `cancel --json`: what was asked of the running service.
#[derive(Debug, Serialize)]
pub struct CancelJson {
    /// Projects whose pending rebuilds are dropped.
    pub projects: Vec<String>,
    /// Everything below them too.
    pub descendants: bool,
    /// Their running pipelines and failures are forgotten too.
    pub force: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align() {
        let t = super::table(
            &["PATH", "N"],
            &[
                vec!["a/bbbb".into(), "1".into()],
                vec!["c".into(), "22".into()],
            ],
        );
        assert_eq!(t, "PATH    N\na/bbbb  1\nc       22\n");
    }
}
