//! Webhook payloads: decoding the parts of GitLab's pipeline and push events we use.

use std::collections::BTreeSet;

use serde::Deserialize;

/// Why a webhook body was refused.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON, or required fields missing or of the wrong type.
    #[error("malformed {kind} payload: {reason}")]
    Malformed {
        /// The event kind.
        kind: &'static str,
        /// What serde said.
        reason: String,
    },
}

/// A webhook event we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    /// A pipeline changed status.
    Pipeline(PipelineEvent),
    /// Commits were pushed.
    Push(PushEvent),
}

/// The fields of a `Pipeline Hook` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineEvent {
    /// Project id.
    pub project_id: u64,
    /// Project full path.
    pub project: String,
    /// The project's default branch.
    pub default_branch: Option<String>,
    /// Pipeline id.
    pub pipeline_id: u64,
    /// Branch or tag.
    pub git_ref: String,
    /// True for a tag pipeline.
    pub tag: bool,
    /// What started it.
    pub source: String,
    /// Its status.
    pub status: String,
    /// Its CI variables.
    pub variables: Vec<(String, String)>,
    /// True for a merge request pipeline.
    pub merge_request: bool,
    /// When GitLab created the pipeline (Unix ms), if the payload says.
    pub created_ms: Option<i64>,
}

impl PipelineEvent {
    /// A final status on the project's default branch, not a tag, merge-request or child pipeline:
    /// the only pipelines that produce a new build of the project's image.
    pub fn is_default_branch_build(&self) -> bool {
        let on_default = self.default_branch.as_deref() == Some(self.git_ref.as_str());
        on_default
            && !self.tag
            && !self.merge_request
            && !matches!(
                self.source.as_str(),
                "merge_request_event" | "parent_pipeline" | "external_pull_request_event"
            )
    }

    /// The final status, if the pipeline has one.
    pub fn final_status(&self) -> Option<&str> {
        matches!(
            self.status.as_str(),
            "success" | "failed" | "canceled" | "skipped"
        )
        .then_some(self.status.as_str())
    }

    /// A CI variable's value.
    pub fn variable(&self, key: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The fields of a `Push Hook` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// Project id.
    pub project_id: u64,
    /// Project full path.
    pub project: String,
    /// The project's default branch.
    pub default_branch: Option<String>,
    /// The branch pushed (`refs/heads/` stripped), `None` for tags.
    pub branch: Option<String>,
    /// Files added, modified or removed by the listed commits.
    pub changed_files: BTreeSet<String>,
    /// True when GitLab listed fewer commits than were pushed (it lists at most 20), so
    /// `changed_files` may be incomplete.
    pub truncated: bool,
}

impl PushEvent {
    /// True when the push may have changed one of `files` on the default branch.
    pub fn touches(&self, files: &[&str]) -> bool {
        let on_default = self.branch.is_some() && self.branch == self.default_branch;
        on_default && (self.truncated || files.iter().any(|f| self.changed_files.contains(*f)))
    }
}

#[derive(Deserialize)]
struct RawProject {
    id: u64,
    path_with_namespace: String,
    #[serde(default)]
    default_branch: Option<String>,
}

#[derive(Deserialize)]
struct RawVariable {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct RawPipelineAttributes {
    id: u64,
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    tag: bool,
    #[serde(default)]
    source: String,
    status: String,
    #[serde(default)]
    variables: Vec<RawVariable>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct RawPipeline {
    object_attributes: RawPipelineAttributes,
    project: RawProject,
    #[serde(default)]
    merge_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawCommit {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

#[derive(Deserialize)]
struct RawPush {
    #[serde(rename = "ref")]
    git_ref: String,
    project: RawProject,
    #[serde(default)]
    commits: Vec<RawCommit>,
    #[serde(default)]
    total_commits_count: Option<usize>,
}

/// Webhook times look like `2026-01-02 15:04:05 UTC`; API times are ISO 8601.
fn hook_time_ms(text: &str) -> Option<i64> {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    match time::PrimitiveDateTime::parse(text, format) {
        Ok(t) => Some((t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64),
        Err(_) => crate::util::parse_timestamp_ms(text),
    }
}

/// Decodes a body by its `X-Gitlab-Event` kind. `Ok(None)` for kinds we ignore.
pub fn parse(kind: &str, body: &[u8]) -> Result<Option<HookEvent>, PayloadError> {
    match kind {
        "Pipeline Hook" => {
            let raw: RawPipeline =
                serde_json::from_slice(body).map_err(|e| PayloadError::Malformed {
                    kind: "pipeline",
                    reason: e.to_string(),
                })?;
            let a = raw.object_attributes;
            Ok(Some(HookEvent::Pipeline(PipelineEvent {
                project_id: raw.project.id,
                project: raw.project.path_with_namespace,
                default_branch: raw.project.default_branch,
                pipeline_id: a.id,
                git_ref: a.git_ref,
                tag: a.tag,
                source: a.source,
                status: a.status,
                variables: a.variables.into_iter().map(|v| (v.key, v.value)).collect(),
                merge_request: raw.merge_request.is_some_and(|m| !m.is_null()),
                created_ms: a.created_at.as_deref().and_then(hook_time_ms),
            })))
        }
        "Push Hook" => {
            let raw: RawPush =
                serde_json::from_slice(body).map_err(|e| PayloadError::Malformed {
                    kind: "push",
                    reason: e.to_string(),
                })?;
            let listed = raw.commits.len();
            let changed_files = raw
                .commits
                .into_iter()
                .flat_map(|c| c.added.into_iter().chain(c.modified).chain(c.removed))
                .collect();
            Ok(Some(HookEvent::Push(PushEvent {
                project_id: raw.project.id,
                project: raw.project.path_with_namespace,
                default_branch: raw.project.default_branch,
                branch: raw.git_ref.strip_prefix("refs/heads/").map(str::to_owned),
                changed_files,
                truncated: raw.total_commits_count.is_some_and(|n| n > listed),
            })))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(source: &str, git_ref: &str, tag: bool, mr: bool, status: &str) -> Vec<u8> {
        serde_json::json!({
            "object_kind": "pipeline",
            "object_attributes": {"id": 7, "ref": git_ref, "tag": tag, "source": source, "status": status,
                "variables": [{"key": "GITLAB_DEPS_ATTEMPT", "value": "a-1"}]},
            "merge_request": if mr { serde_json::json!({"iid": 1}) } else { serde_json::Value::Null },
            "project": {"id": 3, "path_with_namespace": "g/p", "default_branch": "main"}
        })
        .to_string()
        .into_bytes()
    }

    fn event(body: &[u8]) -> PipelineEvent {
        match parse("Pipeline Hook", body).unwrap() {
            Some(HookEvent::Pipeline(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_default_branch_builds_count() {
        assert!(
            event(&pipeline("push", "main", false, false, "success")).is_default_branch_build()
        );
        assert!(
            !event(&pipeline("push", "dev", false, false, "success")).is_default_branch_build()
        );
        assert!(
            !event(&pipeline("push", "main", true, false, "success")).is_default_branch_build()
        );
        assert!(
            !event(&pipeline(
                "merge_request_event",
                "main",
                false,
                true,
                "success"
            ))
            .is_default_branch_build()
        );
        assert!(
            !event(&pipeline(
                "parent_pipeline",
                "main",
                false,
                false,
                "success"
            ))
            .is_default_branch_build()
        );
        let e = event(&pipeline("api", "main", false, false, "running"));
        assert_eq!(e.final_status(), None);
        assert_eq!(e.variable("GITLAB_DEPS_ATTEMPT"), Some("a-1"));
    }

    #[test]
    fn creation_times_parse_in_both_formats() {
        assert_eq!(hook_time_ms("1970-01-01 00:00:02 UTC"), Some(2000));
        assert_eq!(hook_time_ms("1970-01-01T00:00:02.5Z"), Some(2500));
        assert_eq!(hook_time_ms("soon"), None);
    }

    #[test]
    fn malformed_bodies_are_errors_and_other_kinds_ignored() {
        assert!(parse("Pipeline Hook", b"{").is_err());
        assert!(parse("Pipeline Hook", br#"{"object_attributes": {}}"#).is_err());
        assert!(parse("Push Hook", b"[]").is_err());
        assert!(parse("Issue Hook", b"not even json").unwrap().is_none());
    }

    #[test]
    fn pushes_know_what_they_touched() {
        let body = serde_json::json!({
            "ref": "refs/heads/main", "total_commits_count": 1,
            "project": {"id": 3, "path_with_namespace": "g/p", "default_branch": "main"},
            "commits": [{"added": [], "modified": ["Dockerfile"], "removed": []}]
        });
        let Some(HookEvent::Push(p)) = parse("Push Hook", body.to_string().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert!(p.touches(&["Dockerfile", ".gitlab-deps"]));
        assert!(!p.touches(&["Containerfile"]));
    }
}
