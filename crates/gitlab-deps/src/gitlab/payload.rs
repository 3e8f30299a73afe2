//! Webhook payloads: decoding the parts of GitLab's pipeline and push events we use.
//!
//! Strict about what we need, lenient about the rest: a pipeline event needs the project id, the
//! pipeline id, its status and its ref; a push event needs the project id and the ref. Every other
//! field may be missing, null or of an unexpected type (GitLab adds fields, sends nulls, and varies
//! across versions) and then simply counts as unknown. See `docs/webhooks.md`.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// Why a webhook body was refused.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON, or a field we need is missing or of the wrong type.
    #[error("malformed {kind} payload: {reason}")]
    Malformed { kind: &'static str, reason: String },
}

/// A webhook event we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    /// A pipeline changed status.
    Pipeline(PipelineEvent),
    /// Commits were pushed.
    Push(PushEvent),
}

/// Pipeline sources that build the branch: a final status of one of these on the default branch
/// means the project's image may have changed. `pipeline` is a multi-project downstream pipeline.
pub const BRANCH_SOURCES: [&str; 8] = [
    "push", "web", "trigger", "schedule", "api", "external", "pipeline", "chat",
];

/// GitLab's dangling sources: their pipelines do not build the branch and never affect its CI
/// status (a child pipeline reports through its parent; a registry push scan runs after every
/// image push, ours included, so counting it would loop).
pub const DANGLING_SOURCES: [&str; 8] = [
    "webide",
    "parent_pipeline",
    "ondemand_dast_scan",
    "ondemand_dast_validation",
    "security_orchestration_policy",
    "container_registry_push",
    "duo_workflow",
    "pipeline_execution_policy_schedule",
];

/// Sources of pipelines for a merge request (GitLab's own or an external pull request).
pub const MERGE_REQUEST_SOURCES: [&str; 2] = ["merge_request_event", "external_pull_request_event"];

/// What a pipeline's `source` says about the branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceClass {
    /// The pipeline builds the branch (one of [`BRANCH_SOURCES`]).
    Branch,
    /// A pipeline beside the branch ([`DANGLING_SOURCES`]).
    Dangling,
    /// A merge-request pipeline ([`MERGE_REQUEST_SOURCES`]).
    MergeRequest,
    /// A source this version does not know, or none at all. Not counted: a source GitLab adds
    /// later is more likely another side pipeline (most recent additions were) than a new way of
    /// building the branch, and a missed rebuild is logged and recoverable while a loop is not.
    Unknown,
}

/// Classifies a pipeline `source` (`None` when the payload has none).
pub fn classify_source(source: Option<&str>) -> SourceClass {
    match source {
        Some(s) if BRANCH_SOURCES.contains(&s) => SourceClass::Branch,
        Some(s) if DANGLING_SOURCES.contains(&s) => SourceClass::Dangling,
        Some(s) if MERGE_REQUEST_SOURCES.contains(&s) => SourceClass::MergeRequest,
        _ => SourceClass::Unknown,
    }
}

/// The fields of a `Pipeline Hook` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineEvent {
    pub project_id: u64,
    /// Project full path, if the payload says.
    pub project: Option<String>,
    /// The project's default branch (null for an empty repository).
    pub default_branch: Option<String>,
    pub pipeline_id: u64,
    /// Branch or tag.
    pub git_ref: String,
    /// True for a tag pipeline.
    pub tag: bool,
    /// What started it, if the payload says.
    pub source: Option<String>,
    pub status: String,
    /// Its CI variables that have a string value (GitLab allows a null value).
    pub variables: Vec<(String, String)>,
    /// True for a merge request pipeline.
    pub merge_request: bool,
    /// When GitLab created the pipeline (Unix ms), if the payload says.
    pub created_ms: Option<i64>,
}

impl PipelineEvent {
    /// On the project's default branch, not a tag and not for a merge request.
    fn on_default_branch(&self) -> bool {
        self.default_branch.as_deref() == Some(self.git_ref.as_str())
            && !self.tag
            && !self.merge_request
    }

    /// What its source says about the branch.
    pub fn source_class(&self) -> SourceClass {
        classify_source(self.source.as_deref())
    }

    /// A pipeline of the project's default branch that builds the branch: not a tag, merge-request,
    /// child or other side pipeline, and of a known source. The only pipelines that produce a new
    /// build of the project's image.
    pub fn is_default_branch_build(&self) -> bool {
        self.on_default_branch() && self.source_class() == SourceClass::Branch
    }

    /// The source (`""` when none) of a final default-branch pipeline ignored only because its
    /// source is unknown: worth a warning, since it may be a new way of building the branch.
    pub fn unknown_source(&self) -> Option<&str> {
        (self.final_status().is_some()
            && self.on_default_branch()
            && self.source_class() == SourceClass::Unknown)
            .then(|| self.source.as_deref().unwrap_or(""))
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
    pub project_id: u64,
    /// Project full path, if the payload says.
    pub project: Option<String>,
    /// The project's default branch.
    pub default_branch: Option<String>,
    /// The branch pushed (`refs/heads/` stripped), `None` for tags.
    pub branch: Option<String>,
    /// The commit before the push, if the payload says (all zeros: a new branch).
    pub before: Option<String>,
    /// The commit after the push, if the payload says (all zeros: a deleted branch).
    pub after: Option<String>,
    /// Files added, modified or removed by the listed commits.
    pub changed_files: BTreeSet<String>,
    /// How many commits the payload lists.
    pub listed_commits: usize,
    /// True when GitLab listed fewer commits than were pushed (it lists at most 20), so
    /// `changed_files` may be incomplete.
    pub truncated: bool,
}

/// True for GitLab's null commit id (`0000…`), used for a ref that does not exist on one side.
fn is_null_sha(sha: Option<&str>) -> bool {
    sha.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b == b'0'))
}

/// The file name of a path (`build/Dockerfile` -> `Dockerfile`).
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl PushEvent {
    /// True when the push may have changed a project's dependency files on its default branch.
    /// `watched` are the configured file paths; any listed path whose file name is the file name
    /// of one of them counts, in any directory, because a rename is listed only under its new
    /// path. When the payload cannot tell what changed (a new or deleted branch, a force-push or
    /// rewind with no commits listed, more commits than listed), it counts too.
    pub fn touches(&self, watched: &[&str]) -> bool {
        let on_default = self.branch.is_some() && self.branch == self.default_branch;
        if !on_default {
            return false;
        }
        let unknown_change = self.truncated
            || self.listed_commits == 0
            || is_null_sha(self.before.as_deref())
            || is_null_sha(self.after.as_deref());
        if unknown_change {
            return true;
        }
        let names: BTreeSet<&str> = watched.iter().map(|w| file_name(w)).collect();
        self.changed_files
            .iter()
            .any(|path| names.contains(file_name(path)))
    }
}

/// An id: GitLab sends numbers; a numeric string is accepted too.
fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// A list of strings; anything else in it (nulls, numbers) is skipped.
fn strings_of(v: &Value) -> impl Iterator<Item = String> + '_ {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
}

fn malformed(kind: &'static str, reason: impl Into<String>) -> PayloadError {
    PayloadError::Malformed {
        kind,
        reason: reason.into(),
    }
}

/// The top level of a Pipeline Hook: only the parts we read are kept; `builds`, `commit`, `user` and
/// whatever GitLab adds are skipped unparsed (they are most of a large payload). The kept parts are
/// raw JSON values, read leniently below.
#[derive(Deserialize)]
struct RawPipeline {
    #[serde(default)]
    object_attributes: Value,
    #[serde(default)]
    project: Value,
    /// Only whether it is there and not null matters.
    #[serde(default)]
    merge_request: Option<IgnoredAny>,
}

/// The top level of a Push Hook, likewise.
#[derive(Deserialize)]
struct RawPush {
    #[serde(default, rename = "ref")]
    git_ref: Value,
    #[serde(default)]
    project_id: Value,
    #[serde(default)]
    project: Value,
    #[serde(default)]
    before: Value,
    #[serde(default)]
    after: Value,
    #[serde(default)]
    commits: Value,
    #[serde(default)]
    total_commits_count: Value,
}

/// Decodes the top level; fails only for a body that is not a JSON object.
fn decode<'a, T: Deserialize<'a>>(kind: &'static str, body: &'a [u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|e| malformed(kind, format!("not a JSON object: {e}")))
}

fn required<T>(kind: &'static str, field: &str, value: Option<T>) -> Result<T, PayloadError> {
    value.ok_or_else(|| malformed(kind, format!("`{field}` is missing or invalid")))
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

fn parse_pipeline(body: &[u8]) -> Result<PipelineEvent, PayloadError> {
    const KIND: &str = "pipeline";
    let raw: RawPipeline = decode(KIND, body)?;
    let attrs = &raw.object_attributes;
    let project = &raw.project;
    let variables = attrs["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|var| Some((text_of(&var["key"])?, text_of(&var["value"])?)))
        .collect();
    Ok(PipelineEvent {
        project_id: required(KIND, "project.id", id_of(&project["id"]))?,
        project: text_of(&project["path_with_namespace"]),
        default_branch: text_of(&project["default_branch"]),
        pipeline_id: required(KIND, "object_attributes.id", id_of(&attrs["id"]))?,
        git_ref: required(KIND, "object_attributes.ref", text_of(&attrs["ref"]))?,
        tag: attrs["tag"].as_bool().unwrap_or(false),
        source: text_of(&attrs["source"]),
        status: required(KIND, "object_attributes.status", text_of(&attrs["status"]))?,
        variables,
        merge_request: raw.merge_request.is_some(),
        created_ms: attrs["created_at"].as_str().and_then(hook_time_ms),
    })
}

fn parse_push(body: &[u8]) -> Result<PushEvent, PayloadError> {
    const KIND: &str = "push";
    let raw: RawPush = decode(KIND, body)?;
    let project = &raw.project;
    let project_id = id_of(&raw.project_id).or_else(|| id_of(&project["id"]));
    let git_ref = required(KIND, "ref", text_of(&raw.git_ref))?;
    let commits = raw
        .commits
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let changed_files = commits
        .iter()
        .flat_map(|c| {
            strings_of(&c["added"])
                .chain(strings_of(&c["modified"]))
                .chain(strings_of(&c["removed"]))
        })
        .collect();
    let total = raw.total_commits_count.as_u64();
    Ok(PushEvent {
        project_id: required(KIND, "project_id", project_id)?,
        project: text_of(&project["path_with_namespace"]),
        default_branch: text_of(&project["default_branch"]),
        branch: git_ref.strip_prefix("refs/heads/").map(str::to_owned),
        before: text_of(&raw.before),
        after: text_of(&raw.after),
        changed_files,
        listed_commits: commits.len(),
        truncated: total.is_some_and(|n| n > commits.len() as u64),
    })
}

/// Decodes a body by its `X-Gitlab-Event` kind. `Ok(None)` for kinds we ignore.
pub fn parse(kind: &str, body: &[u8]) -> Result<Option<HookEvent>, PayloadError> {
    match kind {
        "Pipeline Hook" => parse_pipeline(body).map(|p| Some(HookEvent::Pipeline(p))),
        "Push Hook" => parse_push(body).map(|p| Some(HookEvent::Push(p))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn pipeline_json(source: &str, git_ref: &str, tag: bool, mr: bool, status: &str) -> Value {
        json!({
            "object_kind": "pipeline",
            "object_attributes": {"id": 7, "ref": git_ref, "tag": tag, "source": source, "status": status,
                "variables": [{"key": "GITLAB_DEPS_ATTEMPT", "value": "a-1"}]},
            "merge_request": if mr { json!({"iid": 1}) } else { Value::Null },
            "project": {"id": 3, "path_with_namespace": "g/p", "default_branch": "main"}
        })
    }

    fn pipeline(source: &str, git_ref: &str, tag: bool, mr: bool, status: &str) -> Vec<u8> {
        pipeline_json(source, git_ref, tag, mr, status)
            .to_string()
            .into_bytes()
    }

    fn event(body: &[u8]) -> PipelineEvent {
        match parse("Pipeline Hook", body).unwrap() {
            Some(HookEvent::Pipeline(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    fn push(body: Value) -> PushEvent {
        match parse("Push Hook", body.to_string().as_bytes()).unwrap() {
            Some(HookEvent::Push(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    fn push_json(before: &str, after: &str, files: &[&str], total: usize) -> Value {
        let commits: Vec<Value> = files
            .iter()
            .map(|f| json!({"id": "c", "added": [f], "modified": [], "removed": []}))
            .collect();
        json!({
            "object_kind": "push", "ref": "refs/heads/main", "before": before, "after": after,
            "project_id": 3, "total_commits_count": total, "commits": commits,
            "project": {"id": 3, "path_with_namespace": "g/p", "default_branch": "main"}
        })
    }

    const WATCHED: [&str; 3] = ["Dockerfile", "docker/Containerfile", ".gitlab-deps"];
    const OLD: &str = "95790bf891e76fee5e1747ab589903a6a1f80f22";
    const NEW: &str = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
    const ZERO: &str = "0000000000000000000000000000000000000000";

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
        let mr = event(&pipeline(
            "merge_request_event",
            "main",
            false,
            true,
            "success",
        ));
        assert!(!mr.is_default_branch_build());
        assert_eq!(mr.unknown_source(), None);
        let e = event(&pipeline("api", "main", false, false, "running"));
        assert_eq!(e.final_status(), None);
        assert_eq!(e.variable("GITLAB_DEPS_ATTEMPT"), Some("a-1"));
    }

    #[test]
    fn branch_building_sources_count_and_dangling_ones_never() {
        for source in BRANCH_SOURCES {
            let e = event(&pipeline(source, "main", false, false, "success"));
            assert!(e.is_default_branch_build(), "{source}");
            assert_eq!(e.unknown_source(), None);
        }
        for source in DANGLING_SOURCES {
            let e = event(&pipeline(source, "main", false, false, "success"));
            assert!(!e.is_default_branch_build(), "{source}");
            assert_eq!(e.unknown_source(), None, "{source} is known");
        }
    }

    #[test]
    fn unknown_or_missing_sources_do_not_count_and_are_reported() {
        let e = event(&pipeline("teleport", "main", false, false, "success"));
        assert!(!e.is_default_branch_build());
        assert_eq!(e.unknown_source(), Some("teleport"));
        // Only a final default-branch status is worth a warning.
        assert_eq!(
            event(&pipeline("teleport", "main", false, false, "running")).unknown_source(),
            None
        );
        assert_eq!(
            event(&pipeline("teleport", "dev", false, false, "success")).unknown_source(),
            None
        );
        let mut body = pipeline_json("x", "main", false, false, "success");
        body["object_attributes"]["source"] = Value::Null;
        let e = event(body.to_string().as_bytes());
        assert_eq!(e.source, None);
        assert!(!e.is_default_branch_build());
        assert_eq!(e.unknown_source(), Some(""));
    }

    #[test]
    fn fields_we_do_not_need_may_be_null_or_odd() {
        let body = json!({
            "object_kind": "pipeline",
            "object_attributes": {"id": "7", "ref": "main", "tag": null, "source": "push",
                "status": "success", "created_at": null, "finished_at": null, "duration": null,
                "variables": [{"key": "EMPTY", "value": null}, {"key": null, "value": "v"}, {"value": "w"},
                    "odd", {"key": "GITLAB_DEPS_ATTEMPT", "value": "a-2"}]},
            "merge_request": null, "user": null, "commit": null, "builds": null, "source_pipeline": null,
            "project": {"id": 3, "path_with_namespace": null, "default_branch": "main"}
        });
        let e = event(body.to_string().as_bytes());
        assert_eq!((e.project_id, e.pipeline_id), (3, 7));
        assert_eq!(e.project, None);
        assert!(e.is_default_branch_build());
        assert_eq!(e.variable("EMPTY"), None);
        assert_eq!(e.variable("GITLAB_DEPS_ATTEMPT"), Some("a-2"));
        assert_eq!(e.created_ms, None);
        // Variables themselves may be absent or null.
        for variables in [Value::Null, json!({})] {
            let mut body = pipeline_json("push", "main", false, false, "success");
            body["object_attributes"]["variables"] = variables;
            assert!(event(body.to_string().as_bytes()).variables.is_empty());
        }
    }

    #[test]
    fn fields_we_need_are_required() {
        for (path, field) in [
            ("project", "id"),
            ("object_attributes", "id"),
            ("object_attributes", "ref"),
            ("object_attributes", "status"),
        ] {
            for replacement in [None, Some(Value::Null), Some(json!([1]))] {
                let mut body = pipeline_json("push", "main", false, false, "success");
                match &replacement {
                    None => {
                        body[path].as_object_mut().unwrap().remove(field);
                    }
                    Some(v) => body[path][field] = v.clone(),
                }
                let err = parse("Pipeline Hook", body.to_string().as_bytes()).unwrap_err();
                assert!(
                    err.to_string().contains(&format!("{path}.{field}")),
                    "{err}"
                );
            }
        }
        assert!(parse("Pipeline Hook", b"{").is_err());
        assert!(parse("Pipeline Hook", b"[]").is_err());
        assert!(parse("Pipeline Hook", br#"{"object_attributes": {}}"#).is_err());
        assert!(parse("Push Hook", b"[]").is_err());
        assert!(parse("Push Hook", br#"{"project_id": 3}"#).is_err());
        assert!(parse("Issue Hook", b"not even json").unwrap().is_none());
    }

    #[test]
    fn creation_times_parse_in_both_formats() {
        assert_eq!(hook_time_ms("1970-01-01 00:00:02 UTC"), Some(2000));
        assert_eq!(hook_time_ms("1970-01-01T00:00:02.5Z"), Some(2500));
        assert_eq!(hook_time_ms("soon"), None);
    }

    #[test]
    fn pushes_know_what_they_touched() {
        let p = push(push_json(OLD, NEW, &["Dockerfile"], 1));
        assert!(p.touches(&WATCHED));
        assert!(!p.touches(&["Containerfile"]));
        assert!(!push(push_json(OLD, NEW, &["README.md"], 1)).touches(&WATCHED));
    }

    #[test]
    fn a_watched_file_name_counts_in_any_directory() {
        // A rename of `Dockerfile` into `build/` is listed only as the new path.
        assert!(push(push_json(OLD, NEW, &["build/Dockerfile"], 1)).touches(&WATCHED));
        // The file name of a configured path counts, wherever it is.
        assert!(push(push_json(OLD, NEW, &["Containerfile"], 1)).touches(&WATCHED));
        assert!(push(push_json(OLD, NEW, &["a/b/.gitlab-deps"], 1)).touches(&WATCHED));
        assert!(!push(push_json(OLD, NEW, &["build/Dockerfile.md"], 1)).touches(&WATCHED));
    }

    #[test]
    fn pushes_that_do_not_say_what_changed_count() {
        // A force-push or rewind to an older commit lists nothing.
        assert!(push(push_json(OLD, NEW, &[], 0)).touches(&WATCHED));
        // A new branch, a deleted branch.
        assert!(push(push_json(ZERO, NEW, &["README.md"], 1)).touches(&WATCHED));
        assert!(push(push_json(OLD, ZERO, &[], 0)).touches(&WATCHED));
        // GitLab lists at most 20 commits.
        assert!(push(push_json(OLD, NEW, &["README.md"; 20], 21)).touches(&WATCHED));
        assert!(!push(push_json(OLD, NEW, &["README.md"; 20], 20)).touches(&WATCHED));
        // None of it matters off the default branch.
        let mut body = push_json(OLD, NEW, &[], 0);
        body["ref"] = json!("refs/heads/dev");
        assert!(!push(body).touches(&WATCHED));
        let mut body = push_json(OLD, NEW, &[], 0);
        body["ref"] = json!("refs/tags/main");
        assert!(!push(body).touches(&WATCHED));
    }

    #[test]
    fn push_fields_we_do_not_need_may_be_null_or_odd() {
        let body = json!({
            "ref": "refs/heads/main", "before": null, "after": null, "project_id": "3",
            "total_commits_count": null, "user_email": null,
            "project": {"id": 3, "default_branch": "main"},
            "commits": [{"added": null, "modified": ["docker/Containerfile", 5], "removed": "x"}, "odd"]
        });
        let p = push(body);
        assert_eq!((p.project_id, p.project.as_deref()), (3, None));
        assert_eq!(p.changed_files.len(), 1);
        assert!(p.touches(&WATCHED));
        // The project id may come from `project` alone.
        let p = push(json!({"ref": "refs/heads/main", "project": {"id": 4}}));
        assert_eq!(p.project_id, 4);
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::String),
            prop::sample::select(vec![
                "main",
                "push",
                "success",
                "refs/heads/main",
                "7",
                "0000"
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "object_attributes",
                        "project",
                        "id",
                        "ref",
                        "status",
                        "source",
                        "tag",
                        "variables",
                        "key",
                        "value",
                        "merge_request",
                        "commits",
                        "added",
                        "project_id",
                        "before",
                        "after",
                        "total_commits_count",
                        "default_branch",
                        "path_with_namespace",
                        "created_at",
                        "x",
                    ])
                    .prop_map(str::to_owned),
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_parses_or_is_refused_without_panicking(value in arbitrary_json()) {
            let body = value.to_string();
            for kind in ["Pipeline Hook", "Push Hook", "Job Hook"] {
                if let Ok(Some(HookEvent::Pipeline(p))) = parse(kind, body.as_bytes()) {
                    let _ = (p.is_default_branch_build(), p.unknown_source(), p.final_status());
                }
                if let Ok(Some(HookEvent::Push(p))) = parse(kind, body.as_bytes()) {
                    let _ = p.touches(&WATCHED);
                }
            }
        }

        #[test]
        fn a_field_we_do_not_need_never_makes_a_pipeline_malformed(
            field in prop::sample::select(vec![
                ("object_attributes", "tag"), ("object_attributes", "source"),
                ("object_attributes", "variables"), ("object_attributes", "created_at"),
                ("project", "path_with_namespace"), ("project", "default_branch"),
                ("", "merge_request"), ("", "user"), ("", "commit"), ("", "builds"),
            ]),
            replacement in arbitrary_json(),
            remove in any::<bool>(),
        ) {
            let mut body = pipeline_json("push", "main", false, false, "success");
            let target = if field.0.is_empty() { &mut body } else { &mut body[field.0] };
            let object = target.as_object_mut().unwrap();
            if remove {
                object.remove(field.1);
            } else {
                object.insert(field.1.to_owned(), replacement);
            }
            let parsed = parse("Pipeline Hook", body.to_string().as_bytes());
            prop_assert!(matches!(parsed, Ok(Some(HookEvent::Pipeline(_)))), "{parsed:?}");
        }
    }
}
