//! Public value types of the simulator API.

use std::fmt;
use std::time::Instant;

use time::OffsetDateTime;

/// Description of a project to create with [`crate::Sim::add_project`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSpec {
    /// Full path, e.g. `images/lang/ruby`. A path without `/` is placed in the
    /// user namespace `root` (becoming `root/<path>`).
    pub path: String,
    /// Default branch; `None` makes an empty repository (no branches, no files).
    pub default_branch: Option<String>,
    /// Whether the project is archived.
    pub archived: bool,
    /// Files of the initial commit on the default branch: (path, content).
    pub files: Vec<(String, String)>,
}

impl ProjectSpec {
    /// A non-archived project with default branch `main` and no files yet.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            default_branch: Some("main".to_owned()),
            archived: false,
            files: Vec::new(),
        }
    }

    /// Adds a file to the initial commit.
    pub fn file(mut self, name: impl Into<String>, content: impl Into<String>) -> Self {
        self.files.push((name.into(), content.into()));
        self
    }

    /// Marks the project archived.
    pub fn archived(mut self) -> Self {
        self.archived = true;
        self
    }

    /// Makes the repository empty (no default branch, no files).
    pub fn empty(mut self) -> Self {
        self.default_branch = None;
        self.files.clear();
        self
    }

    /// Sets the default branch name.
    pub fn branch(mut self, name: impl Into<String>) -> Self {
        self.default_branch = Some(name.into());
        self
    }
}

/// Final status a simulated pipeline reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Outcome {
    /// Pipeline ends `success`.
    #[default]
    Success,
    /// Pipeline ends `failed`.
    Failed,
    /// Pipeline ends `canceled`.
    Canceled,
}

impl Outcome {
    /// The pipeline status this outcome ends in.
    pub fn status(self) -> PipelineStatus {
        match self {
            Outcome::Success => PipelineStatus::Success,
            Outcome::Failed => PipelineStatus::Failed,
            Outcome::Canceled => PipelineStatus::Canceled,
        }
    }
}

/// Status of a pipeline, as GitLab spells it (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PipelineStatus {
    /// `created`
    Created,
    /// `pending`
    Pending,
    /// `running`
    Running,
    /// `success`
    Success,
    /// `failed`
    Failed,
    /// `canceled`
    Canceled,
}

impl PipelineStatus {
    /// GitLab's spelling, e.g. `"success"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Created => "created",
            PipelineStatus::Pending => "pending",
            PipelineStatus::Running => "running",
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
        }
    }

    /// Whether the status is final (success, failed, canceled).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            PipelineStatus::Success | PipelineStatus::Failed | PipelineStatus::Canceled
        )
    }

    /// `detailed_status` of webhook payloads (`passed` for success).
    pub fn detailed(self) -> &'static str {
        match self {
            PipelineStatus::Success => "passed",
            other => other.as_str(),
        }
    }

    /// Parses GitLab's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => PipelineStatus::Created,
            "pending" => PipelineStatus::Pending,
            "running" => PipelineStatus::Running,
            "success" => PipelineStatus::Success,
            "failed" => PipelineStatus::Failed,
            "canceled" => PipelineStatus::Canceled,
            _ => return None,
        })
    }
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for PipelineStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Merge request a `merge_request_event` pipeline belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequestSpec {
    /// Merge request iid within the project.
    pub iid: u64,
    /// Title.
    pub title: String,
    /// Source branch.
    pub source_branch: String,
    /// Target branch.
    pub target_branch: String,
}

/// How to start a pipeline with [`crate::Sim::run_pipeline_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSpec {
    /// Branch or tag; `None` = default branch. Not validated (any name works).
    pub ref_name: Option<String>,
    /// Whether `ref_name` is a tag (`tag: true` in payloads).
    pub tag: bool,
    /// `source`: `push`, `web`, `schedule`, `api`, `trigger`, `pipeline`,
    /// `merge_request_event`, ...
    pub source: String,
    /// Merge request for `merge_request_event` pipelines.
    pub merge_request: Option<MergeRequestSpec>,
    /// Pipeline variables (`env_var`).
    pub variables: Vec<(String, String)>,
    /// Outcome for this pipeline; `None` takes the project's queue/default.
    pub outcome: Option<Outcome>,
    /// Upstream pipeline (project path, pipeline id) for `source: pipeline`;
    /// fills `source_pipeline` in payloads.
    pub upstream: Option<(String, u64)>,
}

impl PipelineSpec {
    /// A pipeline on the default branch with the given source.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            ref_name: None,
            tag: false,
            source: source.into(),
            merge_request: None,
            variables: Vec::new(),
            outcome: None,
            upstream: None,
        }
    }

    /// Runs on a branch.
    pub fn branch(mut self, name: impl Into<String>) -> Self {
        self.ref_name = Some(name.into());
        self.tag = false;
        self
    }

    /// Runs on a tag.
    pub fn tag(mut self, name: impl Into<String>) -> Self {
        self.ref_name = Some(name.into());
        self.tag = true;
        self
    }

    /// Makes it a merge request pipeline (`source: merge_request_event`,
    /// ref = source branch).
    pub fn merge_request(mut self, mr: MergeRequestSpec) -> Self {
        self.source = "merge_request_event".to_owned();
        self.ref_name = Some(mr.source_branch.clone());
        self.tag = false;
        self.merge_request = Some(mr);
        self
    }

    /// Adds a variable.
    pub fn variable(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.push((key.into(), value.into()));
        self
    }

    /// Forces the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// Marks it as triggered by another project's pipeline.
    pub fn upstream(mut self, project: impl Into<String>, pipeline_id: u64) -> Self {
        self.source = "pipeline".to_owned();
        self.upstream = Some((project.into(), pipeline_id));
        self
    }
}

/// Snapshot of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineInfo {
    /// Global id.
    pub id: u64,
    /// Per-project iid.
    pub iid: u64,
    /// Project id.
    pub project_id: u64,
    /// Project full path.
    pub project: String,
    /// Current status.
    pub status: PipelineStatus,
    /// `source` (`api`, `push`, ...).
    pub source: String,
    /// Branch or tag name.
    pub ref_name: String,
    /// Whether `ref_name` is a tag.
    pub tag: bool,
    /// Commit id.
    pub sha: String,
    /// Variables given at creation (key, value).
    pub variables: Vec<(String, String)>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Creation time, monotonic.
    pub created_instant: Instant,
    /// Last status change.
    pub updated_at: OffsetDateTime,
    /// When the pipeline reached a final status.
    pub finished_at: Option<OffsetDateTime>,
    /// How many times it was retried.
    pub retries: u32,
    /// The API token of the request that created it (`PRIVATE-TOKEN` or bearer); `None` for
    /// pipelines the simulator started itself (pushes, [`crate::Sim::run_pipeline`]). Tells apart
    /// the creations of several clients given their own tokens ([`crate::Sim::accept_token`]).
    pub token: Option<String>,
}

/// A project hook, token included (for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookInfo {
    /// Hook id.
    pub id: u64,
    /// Project id (0 for a group hook).
    pub project_id: u64,
    /// Group id, for a group hook.
    pub group_id: Option<u64>,
    /// Target URL.
    pub url: String,
    /// Secret token (sent as `X-Gitlab-Token`).
    pub token: String,
    /// Push events enabled.
    pub push_events: bool,
    /// Pipeline events enabled.
    pub pipeline_events: bool,
    /// Tag push events enabled.
    pub tag_push_events: bool,
    /// Merge request events enabled.
    pub merge_requests_events: bool,
    /// SSL verification flag (stored only).
    pub enable_ssl_verification: bool,
    /// Branch filter for push events (`*` wildcard).
    pub push_events_branch_filter: Option<String>,
    /// `wildcard`, `regex` or `all_branches`.
    pub branch_filter_strategy: String,
    /// `executable`, `temporarily_disabled` or `disabled`.
    pub alert_status: String,
    /// Stable `X-Gitlab-Webhook-UUID`.
    pub uuid: String,
}

/// Classes of API endpoints, for counting requests per kind
/// ([`crate::Sim::endpoint_count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// `GET /projects` and `GET /groups/:id/projects` (listing pages).
    ListProjects,
    /// `GET /projects/:id` (one project).
    Project,
    /// `GET /projects/:id/repository/tree`.
    Tree,
    /// `GET /projects/:id/repository/blobs/:sha/raw` (and other blob reads).
    Blob,
    /// `/projects/:id/repository/files/...` (raw, JSON or HEAD).
    File,
    /// `/projects/:id/repository/branches...`.
    Branch,
    /// Anything else (pipelines, hooks, user, version, unknown paths).
    Other,
}

impl Endpoint {
    /// The class of a request path (`/api/v4/...`, still percent-encoded).
    pub fn of_path(path: &str) -> Self {
        let rest = path.trim_start_matches("/api/v4/");
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["projects"] | ["groups", _, "projects"] => Self::ListProjects,
            ["projects", _] => Self::Project,
            ["projects", _, "repository", "tree"] => Self::Tree,
            ["projects", _, "repository", "blobs", ..] => Self::Blob,
            ["projects", _, "repository", "files", ..] => Self::File,
            ["projects", _, "repository", "branches", ..] => Self::Branch,
            _ => Self::Other,
        }
    }
}

/// One API request seen by the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// HTTP method.
    pub method: String,
    /// Path as sent (still percent-encoded), without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Response status.
    pub status: u16,
    /// Whether the response came from fault injection.
    pub injected: bool,
    /// When the request arrived (before any simulated latency).
    pub received: Instant,
    /// The token it authenticated with (accepted or not), to tell clients apart.
    pub token: Option<String>,
}

/// One webhook delivery attempt (or a dropped delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLog {
    /// Project id.
    pub project_id: u64,
    /// Project full path.
    pub project: String,
    /// Hook id.
    pub hook_id: u64,
    /// Target URL.
    pub url: String,
    /// `X-Gitlab-Event` value, e.g. `Pipeline Hook`.
    pub event: String,
    /// Pipeline id for pipeline events.
    pub pipeline_id: Option<u64>,
    /// Pipeline status carried by the payload, for pipeline events.
    pub pipeline_status: Option<String>,
    /// HTTP status answered by the receiver.
    pub status: Option<u16>,
    /// Transport error, or `dropped (fault injection)`.
    pub error: Option<String>,
    /// The delivery was dropped by fault injection (never sent).
    pub dropped: bool,
    /// Attempt number (1-based; retries after failures increase it).
    pub attempt: u32,
    /// Sent by `redeliver_last` or the duplicate-webhooks fault.
    pub redelivery: bool,
    /// `Idempotency-Key` (stable across redeliveries).
    pub idempotency_key: String,
    /// `X-Gitlab-Event-UUID` (new for every delivery).
    pub event_uuid: String,
    /// When the attempt was sent.
    pub sent: Instant,
    /// When its answer (or error) came back.
    pub answered: Instant,
}

impl DeliveryLog {
    /// Whether the receiver answered 2xx.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What [`crate::Sim::with_sample_instance`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleInfo {
    /// Groups, parents first.
    pub groups: Vec<String>,
    /// All projects (active, archived and empty).
    pub projects: Vec<String>,
    /// Projects with a Dockerfile/.gitlab-ci.yml that take part in the graph.
    pub active: Vec<String>,
    /// The archived project.
    pub archived: String,
    /// The empty project.
    pub empty: String,
    /// The project whose pipelines always fail.
    pub failing: String,
    /// Projects downstream of the failing one only (blocked by it).
    pub blocked: Vec<String>,
    /// The base image project (root of the graph).
    pub root: String,
    /// Registry host used in image references.
    pub registry: String,
}
