//! In-memory model of groups, projects, repositories, pipelines and hooks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::model::{MergeRequestSpec, Outcome, PipelineInfo, PipelineStatus, ProjectSpec};
use crate::util::{api_time, git_blob_id, now, random_sha};

/// A group (namespace of kind `group`) or the user namespace `root`.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub kind: &'static str,
    pub parent: Option<u64>,
    pub children: Vec<u64>,
    pub projects: Vec<u64>,
    /// Group hooks (Premium).
    pub hooks: Vec<u64>,
}

/// A file in a tree.
#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    pub content: Arc<str>,
    /// Git's blob id of the content, so equal contents share an id as in git.
    pub blob_id: String,
    pub last_commit_id: String,
    /// Git file mode: `100644` for a regular file, `120000` for a symbolic link (whose content is
    /// the target path).
    pub mode: &'static str,
}

/// A branch or tag: head commit and the tree at that commit.
#[derive(Debug, Clone)]
pub(crate) struct Ref {
    pub head: String,
    pub files: Arc<BTreeMap<String, FileEntry>>,
}

/// A commit.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub parent: Option<String>,
    pub message: String,
    pub timestamp: OffsetDateTime,
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub removed: Vec<String>,
}

/// A project.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub namespace_id: u64,
    pub default_branch: Option<String>,
    pub archived: bool,
    pub branches: HashMap<String, Ref>,
    pub tags: HashMap<String, Ref>,
    pub commits: HashMap<String, Commit>,
    pub created_at: OffsetDateTime,
    pub last_activity_at: OffsetDateTime,
    pub maintainer: bool,
    /// Whether the API may set pipeline variables (GitLab's "minimum role to use pipeline
    /// variables" set to no one refuses them).
    pub variables_allowed: bool,
    pub outcome_default: Outcome,
    pub outcome_queue: VecDeque<Outcome>,
    pub pipelines: Vec<u64>,
    pub hooks: Vec<u64>,
    pub next_iid: u64,
}

impl Project {
    /// Resolves a branch, a tag, or the full SHA of a branch or tag head (GitLab accepts any commit
    /// SHA as a ref; the simulator keeps trees only for heads).
    pub fn resolve_ref(&self, name: &str) -> Option<(&Ref, bool)> {
        if let Some(r) = self.branches.get(name) {
            return Some((r, false));
        }
        if let Some(r) = self.tags.get(name) {
            return Some((r, true));
        }
        if name.len() == 40 {
            if let Some(r) = self.branches.values().find(|r| r.head == name) {
                return Some((r, false));
            }
            return self
                .tags
                .values()
                .find(|r| r.head == name)
                .map(|r| (r, true));
        }
        None
    }

    /// Head of the default branch.
    pub fn head(&self) -> Option<&Ref> {
        self.default_branch
            .as_ref()
            .and_then(|b| self.branches.get(b))
    }

    /// Next outcome: queued ones first, then the default.
    pub fn next_outcome(&mut self) -> Outcome {
        self.outcome_queue
            .pop_front()
            .unwrap_or(self.outcome_default)
    }
}

/// A pipeline variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variable {
    pub key: String,
    pub value: String,
    pub variable_type: String,
}

/// A pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub sha: String,
    pub before_sha: String,
    pub git_ref: String,
    pub tag: bool,
    pub source: String,
    pub status: PipelineStatus,
    pub outcome: Outcome,
    pub variables: Vec<Variable>,
    pub created_at: OffsetDateTime,
    pub created_instant: Instant,
    pub updated_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    /// Incremented on retry/finish so stale lifecycle tasks stop.
    pub generation: u64,
    pub merge_request: Option<MergeRequestSpec>,
    pub upstream: Option<(u64, u64)>,
    pub retries: u32,
    /// The API token of the request that created it (`None`: created by the simulator itself).
    pub token: Option<String>,
}

impl Pipeline {
    /// Duration in whole seconds from start to finish.
    pub fn duration(&self) -> Option<i64> {
        match (self.started_at, self.finished_at) {
            (Some(s), Some(f)) => Some((f - s).whole_seconds()),
            _ => None,
        }
    }

    /// Seconds between creation and start.
    pub fn queued_duration(&self) -> Option<i64> {
        self.started_at
            .map(|s| (s - self.created_at).whole_seconds())
    }
}

/// A project hook, or a group hook (`group_id` set, `project_id` 0).
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    pub id: u64,
    pub project_id: u64,
    pub group_id: Option<u64>,
    /// `wildcard`, `regex` or `all_branches`.
    pub branch_filter_strategy: String,
    /// `executable`, `temporarily_disabled` or `disabled`.
    pub alert_status: String,
    pub disabled_until: Option<OffsetDateTime>,
    pub url: String,
    pub token: String,
    pub push_events: bool,
    pub pipeline_events: bool,
    pub tag_push_events: bool,
    pub merge_requests_events: bool,
    pub enable_ssl_verification: bool,
    pub push_events_branch_filter: Option<String>,
    pub created_at: OffsetDateTime,
    pub uuid: String,
}

/// Everything the simulator knows.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub groups: HashMap<u64, Group>,
    pub group_by_path: HashMap<String, u64>,
    pub projects: HashMap<u64, Project>,
    pub project_by_path: HashMap<String, u64>,
    /// All project ids, ascending.
    pub project_ids: Vec<u64>,
    /// Non-archived project ids, ascending.
    pub active_ids: Vec<u64>,
    pub pipelines: HashMap<u64, Pipeline>,
    pub hooks: HashMap<u64, Hook>,
    pub next_namespace_id: u64,
    pub next_project_id: u64,
    pub next_pipeline_id: u64,
    pub next_hook_id: u64,
    /// Group hooks are available (GitLab Premium); otherwise their endpoints answer 404.
    pub premium: bool,
}

/// Context needed to render URLs.
#[derive(Debug, Clone)]
pub(crate) struct Urls {
    /// The instance's external URL, used in project and web URLs.
    pub base: String,
    pub registry: String,
}

impl State {
    /// Creates an empty state.
    pub fn new() -> Self {
        Self {
            next_namespace_id: 1,
            next_project_id: 1,
            next_pipeline_id: 1,
            next_hook_id: 1,
            ..Self::default()
        }
    }

    /// The hooks GitLab delivers a project's events to: its own and those of its group and the
    /// group's ancestors, skipping hooks GitLab has disabled.
    pub fn delivering_hooks(&self, p: &Project) -> Vec<&Hook> {
        let mut ids: Vec<u64> = p.hooks.clone();
        let mut group = Some(p.namespace_id);
        while let Some(g) = group.and_then(|g| self.groups.get(&g)) {
            ids.extend(&g.hooks);
            group = g.parent;
        }
        ids.iter()
            .filter_map(|h| self.hooks.get(h))
            .filter(|h| h.alert_status == "executable")
            .collect()
    }

    /// Finds or creates a group (and its parents).
    pub fn ensure_group(&mut self, full_path: &str) -> u64 {
        let full_path = full_path.trim_matches('/');
        if let Some(id) = self.group_by_path.get(&full_path.to_lowercase()) {
            return *id;
        }
        let (parent, path) = match full_path.rsplit_once('/') {
            Some((parent, path)) => (Some(self.ensure_group(parent)), path),
            None => (None, full_path),
        };
        self.insert_namespace(full_path, path, parent, "group")
    }

    fn insert_namespace(
        &mut self,
        full_path: &str,
        path: &str,
        parent: Option<u64>,
        kind: &'static str,
    ) -> u64 {
        let id = self.next_namespace_id;
        self.next_namespace_id += 1;
        self.groups.insert(
            id,
            Group {
                id,
                name: path.to_owned(),
                path: path.to_owned(),
                full_path: full_path.to_owned(),
                kind,
                parent,
                children: Vec::new(),
                projects: Vec::new(),
                hooks: Vec::new(),
            },
        );
        self.group_by_path.insert(full_path.to_lowercase(), id);
        if let Some(p) = parent.and_then(|p| self.groups.get_mut(&p)) {
            p.children.push(id);
        }
        id
    }

    /// Creates a project (replacing nothing: an existing path returns its id).
    pub fn add_project(&mut self, spec: ProjectSpec) -> u64 {
        let trimmed = spec.path.trim_matches('/');
        let (ns_path, path) = match trimmed.rsplit_once('/') {
            Some((ns, p)) => (ns.to_owned(), p.to_owned()),
            None => ("root".to_owned(), trimmed.to_owned()),
        };
        let full_path = format!("{ns_path}/{path}");
        if let Some(id) = self.project_by_path.get(&full_path.to_lowercase()) {
            return *id;
        }
        let namespace_id = if ns_path == "root" && !self.group_by_path.contains_key("root") {
            self.insert_namespace("root", "root", None, "user")
        } else {
            self.ensure_group(&ns_path)
        };
        let id = self.next_project_id;
        self.next_project_id += 1;
        let t = now();
        let mut project = Project {
            id,
            name: path.clone(),
            path,
            full_path: full_path.clone(),
            namespace_id,
            default_branch: None,
            archived: spec.archived,
            branches: HashMap::new(),
            tags: HashMap::new(),
            commits: HashMap::new(),
            created_at: t,
            last_activity_at: t,
            maintainer: true,
            variables_allowed: true,
            outcome_default: Outcome::Success,
            outcome_queue: VecDeque::new(),
            pipelines: Vec::new(),
            hooks: Vec::new(),
            next_iid: 1,
        };
        if let Some(branch) = spec.default_branch {
            let changes: Vec<(String, Option<String>)> =
                spec.files.into_iter().map(|(p, c)| (p, Some(c))).collect();
            commit(&mut project, &branch, &changes, "Initial commit");
        }
        self.projects.insert(id, project);
        self.project_by_path.insert(full_path.to_lowercase(), id);
        // Ids are increasing, so pushing keeps the vectors sorted.
        self.project_ids.push(id);
        if !spec.archived {
            self.active_ids.push(id);
        }
        if let Some(g) = self.groups.get_mut(&namespace_id) {
            g.projects.push(id);
        }
        id
    }

    /// Sets the archived flag, keeping `active_ids` in sync.
    pub fn set_archived(&mut self, id: u64, archived: bool) {
        let Some(p) = self.projects.get_mut(&id) else {
            return;
        };
        if p.archived == archived {
            return;
        }
        p.archived = archived;
        match (archived, self.active_ids.binary_search(&id)) {
            (true, Ok(pos)) => {
                self.active_ids.remove(pos);
            }
            (false, Err(pos)) => self.active_ids.insert(pos, id),
            _ => {}
        }
    }

    /// Looks a project up by numeric id or full path (case-insensitive).
    pub fn find_project(&self, key: &str) -> Option<u64> {
        if let Ok(id) = key.parse::<u64>() {
            return self.projects.contains_key(&id).then_some(id);
        }
        self.project_by_path
            .get(&key.trim_matches('/').to_lowercase())
            .copied()
    }

    /// Looks a group up by numeric id or full path.
    pub fn find_group(&self, key: &str) -> Option<u64> {
        if let Ok(id) = key.parse::<u64>() {
            return self
                .groups
                .get(&id)
                .filter(|g| g.kind == "group")
                .map(|g| g.id);
        }
        self.group_by_path
            .get(&key.trim_matches('/').to_lowercase())
            .copied()
            .filter(|id| self.groups.get(id).is_some_and(|g| g.kind == "group"))
    }

    /// Project ids of a group, optionally with its subgroups, ascending.
    pub fn group_project_ids(&self, group: u64, include_subgroups: bool) -> Vec<u64> {
        let mut out = Vec::new();
        let mut stack = vec![group];
        while let Some(g) = stack.pop() {
            if let Some(g) = self.groups.get(&g) {
                out.extend_from_slice(&g.projects);
                if include_subgroups {
                    stack.extend_from_slice(&g.children);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Namespace JSON.
    pub fn namespace_json(&self, id: u64, urls: &Urls) -> Value {
        match self.groups.get(&id) {
            Some(g) => json!({
                "id": g.id,
                "name": g.name,
                "path": g.path,
                "kind": g.kind,
                "full_path": g.full_path,
                "parent_id": g.parent,
                "avatar_url": null,
                "web_url": format!("{}/{}", urls.base, g.full_path),
            }),
            None => Value::Null,
        }
    }

    /// `name_with_namespace`, e.g. `images / lang / ruby`.
    pub fn name_with_namespace(&self, p: &Project) -> String {
        let mut names = vec![p.name.clone()];
        let mut ns = Some(p.namespace_id);
        while let Some(g) = ns.and_then(|id| self.groups.get(&id)) {
            names.push(g.name.clone());
            ns = g.parent;
        }
        names.reverse();
        names.join(" / ")
    }

    /// Project JSON (`simple` = the reduced `simple=true` representation).
    pub fn project_json(&self, p: &Project, urls: &Urls, simple: bool) -> Value {
        let web_url = format!("{}/{}", urls.base, p.full_path);
        // The SSH address has the host only: no port, no relative URL root.
        let authority = urls
            .base
            .split_once("://")
            .map_or(urls.base.as_str(), |(_, h)| h);
        let host = authority.split('/').next().unwrap_or(authority);
        let mut v = json!({
            "id": p.id,
            "description": null,
            "name": p.name,
            "name_with_namespace": self.name_with_namespace(p),
            "path": p.path,
            "path_with_namespace": p.full_path,
            "created_at": api_time(p.created_at),
            "default_branch": p.default_branch,
            "tag_list": [],
            "topics": [],
            "ssh_url_to_repo": format!("git@{}:{}.git", host.split(':').next().unwrap_or(host), p.full_path),
            "http_url_to_repo": format!("{web_url}.git"),
            "web_url": web_url,
            "readme_url": null,
            "forks_count": 0,
            "avatar_url": null,
            "star_count": 0,
            "last_activity_at": api_time(p.last_activity_at),
            "namespace": self.namespace_json(p.namespace_id, urls),
        });
        if !simple && let Value::Object(m) = &mut v {
            m.insert("archived".into(), json!(p.archived));
            m.insert("empty_repo".into(), json!(p.branches.is_empty()));
            m.insert("visibility".into(), json!("private"));
            m.insert(
                "container_registry_image_prefix".into(),
                json!(format!("{}/{}", urls.registry, p.full_path.to_lowercase())),
            );
            m.insert("container_registry_enabled".into(), json!(true));
            m.insert("jobs_enabled".into(), json!(true));
            m.insert("ci_config_path".into(), Value::Null);
            m.insert("updated_at".into(), json!(api_time(p.last_activity_at)));
            m.insert(
                "_links".into(),
                json!({ "self": format!("{}/api/v4/projects/{}", urls.base, p.id) }),
            );
        }
        v
    }

    /// Snapshot of a pipeline for the Rust API.
    pub fn pipeline_info(&self, pl: &Pipeline) -> PipelineInfo {
        PipelineInfo {
            id: pl.id,
            iid: pl.iid,
            project_id: pl.project_id,
            project: self
                .projects
                .get(&pl.project_id)
                .map(|p| p.full_path.clone())
                .unwrap_or_default(),
            status: pl.status,
            source: pl.source.clone(),
            ref_name: pl.git_ref.clone(),
            tag: pl.tag,
            sha: pl.sha.clone(),
            variables: pl
                .variables
                .iter()
                .map(|v| (v.key.clone(), v.value.clone()))
                .collect(),
            created_at: pl.created_at,
            created_instant: pl.created_instant,
            updated_at: pl.updated_at,
            finished_at: pl.finished_at,
            retries: pl.retries,
            token: pl.token.clone(),
        }
    }
}

/// Makes one commit on `branch` (created if missing; becomes the default
/// branch of an empty repository). `None` content removes the file.
/// Returns (before sha or zeros, new sha).
pub(crate) fn commit(
    project: &mut Project,
    branch: &str,
    changes: &[(String, Option<String>)],
    message: &str,
) -> (String, String) {
    let sha = random_sha();
    let t = now();
    let (before, mut files) = match project.branches.get(branch) {
        Some(r) => (r.head.clone(), Arc::clone(&r.files)),
        None => ("0".repeat(40), Arc::new(BTreeMap::new())),
    };
    let tree = Arc::make_mut(&mut files);
    let (mut added, mut modified, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (path, content) in changes {
        let path = path.trim_start_matches('/').to_owned();
        match content {
            Some(c) => {
                let entry = FileEntry {
                    content: Arc::from(c.as_str()),
                    blob_id: git_blob_id(c.as_bytes()),
                    last_commit_id: sha.clone(),
                    mode: "100644",
                };
                if tree.insert(path.clone(), entry).is_some() {
                    modified.push(path);
                } else {
                    added.push(path);
                }
            }
            None => {
                if tree.remove(&path).is_some() {
                    removed.push(path);
                }
            }
        }
    }
    let parent = (before != "0".repeat(40)).then(|| before.clone());
    project.commits.insert(
        sha.clone(),
        Commit {
            parent,
            message: message.to_owned(),
            timestamp: t,
            added,
            modified,
            removed,
        },
    );
    project.branches.insert(
        branch.to_owned(),
        Ref {
            head: sha.clone(),
            files,
        },
    );
    if project.default_branch.is_none() {
        project.default_branch = Some(branch.to_owned());
    }
    project.last_activity_at = t;
    (before, sha)
}
