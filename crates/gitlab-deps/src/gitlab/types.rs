//! The GitLab API objects we read, with only the fields we use.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A project as listed by `GET /projects` or `GET /groups/:id/projects`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Project {
    /// Numeric id.
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
    /// Web address of the project.
    #[serde(default)]
    pub web_url: String,
    /// The project's image prefix on the container registry, e.g. `registry.example.org/group/proj`.
    #[serde(default)]
    pub container_registry_image_prefix: Option<String>,
}

/// A branch with its head commit.
#[derive(Debug, Clone, Deserialize)]
pub struct Branch {
    /// Branch name.
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
}

/// A CI variable as returned by `GET /projects/:id/pipelines/:id/variables`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Variable {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
}

/// A project or group webhook as listed by GitLab (`token` is write-only and never returned).
///
/// Lenient: fields a version does not send, or sends as null, read as their default.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Hook {
    /// Hook id (unique across project and group hooks).
    pub id: u64,
    /// Target URL.
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
    /// Target URL.
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
