//! The GitLab API objects we read, with only the fields we use.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A project as listed by `GET /projects` or `GET /groups/:id/projects`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Project {
    pub id: u64,
    /// Full path, `group/sub/name`.
    pub path_with_namespace: String,
    /// Default branch; `None` for an empty repository.
    #[serde(default)]
    pub default_branch: Option<String>,
    /// Archived projects are skipped by discovery.
    #[serde(default)]
    pub archived: bool,
    /// True for a repository without commits (not sent by `simple=true` listings).
    #[serde(default)]
    pub empty_repo: Option<bool>,
    /// Last activity; GitLab updates it at most once an hour.
    #[serde(default)]
    pub last_activity_at: Option<String>,
    /// Web address of the project, on the instance's public host (which may differ from the API
    /// address we use).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub web_url: String,
    /// HTTP clone address, e.g. `https://gitlab.example.org/group/proj.git`.
    #[serde(default)]
    pub http_url_to_repo: Option<String>,
    /// SSH clone address, e.g. `git@gitlab.example.org:group/proj.git` or
    /// `ssh://git@gitlab.example.org:2222/group/proj.git`.
    #[serde(default)]
    pub ssh_url_to_repo: Option<String>,
    /// The project's image prefix on the container registry, e.g. `registry.example.org/group/proj`.
    #[serde(default)]
    pub container_registry_image_prefix: Option<String>,
}

/// A missing or null string as empty.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// One entry of `GET /projects/:id/repository/tree`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct TreeEntry {
    /// The git object id (a blob's id is the hash of its content).
    pub id: String,
    /// The file or directory name.
    pub name: String,
    /// `blob`, `tree`, or `commit` (a submodule).
    #[serde(rename = "type")]
    pub kind: String,
    /// Path from the repository root.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub path: String,
    /// Git file mode: `100644`/`100755` for files, `120000` for a symbolic link, `040000` for a
    /// directory, `160000` for a submodule.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub mode: String,
}

impl TreeEntry {
    /// A regular file (not a directory, symbolic link or submodule).
    pub fn is_regular_file(&self) -> bool {
        self.kind == "blob" && self.mode != SYMLINK_MODE
    }

    /// A symbolic link (its blob holds the target path).
    pub fn is_symlink(&self) -> bool {
        self.kind == "blob" && self.mode == SYMLINK_MODE
    }
}

const SYMLINK_MODE: &str = "120000";

/// A branch with its head commit.
#[derive(Debug, Clone, Deserialize)]
pub struct Branch {
    pub name: String,
    /// Head commit.
    pub commit: Commit,
}

/// A commit reference.
#[derive(Debug, Clone, Deserialize)]
pub struct Commit {
    /// Full SHA.
    pub id: String,
}

/// A pipeline as returned by the pipelines API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Pipeline {
    /// Global pipeline id.
    pub id: u64,
    /// Project id.
    #[serde(default)]
    pub project_id: Option<u64>,
    /// Status: created, pending, running, success, failed, canceled, skipped, manual, ...
    pub status: String,
    /// Git ref.
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    /// What started it (push, api, web, ...).
    #[serde(default)]
    pub source: Option<String>,
    /// Web address.
    #[serde(default)]
    pub web_url: Option<String>,
    /// Creation time (ISO 8601).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Last update (ISO 8601).
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A CI variable as returned by `GET /projects/:id/pipelines/:id/variables`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Variable {
    /// Name.
    pub key: String,
    pub value: String,
}

/// A project or group webhook as listed by GitLab (`token` is write-only and never returned).
///
/// Lenient: fields a version does not send, or sends as null, read as their default.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Hook {
    /// Hook id (unique across project and group hooks).
    pub id: u64,
    pub url: String,
    /// Push events enabled.
    #[serde(default, deserialize_with = "null_is_false")]
    pub push_events: bool,
    /// Pipeline events enabled.
    #[serde(default, deserialize_with = "null_is_false")]
    pub pipeline_events: bool,
    /// Tag push events enabled.
    #[serde(default, deserialize_with = "null_is_false")]
    pub tag_push_events: bool,
    /// Merge request events enabled.
    #[serde(default, deserialize_with = "null_is_false")]
    pub merge_requests_events: bool,
    /// Whether GitLab verifies our TLS certificate.
    #[serde(default)]
    pub enable_ssl_verification: Option<bool>,
    /// Which branches' pushes are delivered (empty or null: all).
    #[serde(default)]
    pub push_events_branch_filter: Option<String>,
    /// How the filter is read: `wildcard`, `regex` or `all_branches` (absent from versions released before mid-2024).
    #[serde(default)]
    pub branch_filter_strategy: Option<String>,
    /// `executable`, `temporarily_disabled` or `disabled` (GitLab 15.7+).
    #[serde(default)]
    pub alert_status: Option<String>,
    /// Until when a temporarily disabled hook stays disabled.
    #[serde(default)]
    pub disabled_until: Option<String>,
}

impl Hook {
    /// Whether GitLab has stopped delivering to this hook after repeated failures.
    pub fn is_disabled(&self) -> bool {
        matches!(
            self.alert_status.as_deref(),
            Some("disabled" | "temporarily_disabled")
        )
    }
}

fn null_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// Settings for creating or updating a hook.
#[derive(Debug, Clone, Serialize)]
pub struct HookSpec {
    pub url: String,
    /// Secret sent back as `X-Gitlab-Token`; its text appears only in the request body.
    #[serde(serialize_with = "expose")]
    pub token: SecretString,
    /// Deliver push events.
    pub push_events: bool,
    /// Deliver pipeline events.
    pub pipeline_events: bool,
    /// Tag pushes are not used.
    pub tag_push_events: bool,
    /// Merge request events are not used.
    pub merge_requests_events: bool,
    /// Verify TLS when GitLab calls us.
    pub enable_ssl_verification: bool,
    /// The branch whose pushes are delivered (empty: all branches).
    pub push_events_branch_filter: String,
    /// How GitLab reads the filter; older versions ignore it and read a wildcard.
    pub branch_filter_strategy: String,
}

/// Writes a secret's text: only for the body of the request that hands it to GitLab.
fn expose<S: serde::Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_entries_are_read_leniently_and_classified() {
        let entries: Vec<TreeEntry> = serde_json::from_str(
            r#"[
                {"id": "a1", "name": "docker", "type": "tree", "path": "docker", "mode": "040000"},
                {"id": "b2", "name": "Dockerfile", "type": "blob", "path": "Dockerfile", "mode": "100644", "extra": 1},
                {"id": "c3", "name": "run.sh", "type": "blob", "path": null, "mode": "100755"},
                {"id": "d4", "name": "Containerfile", "type": "blob", "mode": "120000"},
                {"id": "e5", "name": "vendor", "type": "commit", "path": "vendor", "mode": "160000"}
            ]"#,
        )
        .unwrap();
        let regular: Vec<bool> = entries.iter().map(TreeEntry::is_regular_file).collect();
        assert_eq!(regular, [false, true, true, false, false]);
        let links: Vec<bool> = entries.iter().map(TreeEntry::is_symlink).collect();
        assert_eq!(links, [false, false, false, true, false]);
        assert_eq!(entries[2].path, "");
    }

    #[test]
    fn project_url_fields_may_be_missing_or_null() {
        let p: Project = serde_json::from_str(
            r#"{"id": 1, "path_with_namespace": "g/p", "web_url": null, "ssh_url_to_repo": null}"#,
        )
        .unwrap();
        assert_eq!(
            (p.web_url.as_str(), p.http_url_to_repo, p.ssh_url_to_repo),
            ("", None, None)
        );
    }
}
