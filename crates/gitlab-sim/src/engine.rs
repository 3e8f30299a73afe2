//! Pipeline lifecycle: creation, timed status changes, retry, finish, cancel.

use std::time::Instant;

use serde_json::Value;

use crate::Sim;
use crate::model::{MergeRequestSpec, Outcome, PipelineStatus};
use crate::state::{Pipeline, State, Variable};
use crate::util::{lock, now, random_sha};
use crate::webhooks;

/// Parameters of a new pipeline.
#[derive(Debug, Clone)]
pub(crate) struct NewPipeline {
    pub ref_name: Option<String>,
    pub tag: Option<bool>,
    pub source: String,
    pub sha: Option<String>,
    pub before_sha: Option<String>,
    pub variables: Vec<Variable>,
    pub outcome: Option<Outcome>,
    pub merge_request: Option<MergeRequestSpec>,
    pub upstream: Option<(u64, u64)>,
    /// The API token of the creating request.
    pub token: Option<String>,
    /// API semantics: the ref must exist and hold `.gitlab-ci.yml`.
    pub validate: bool,
}

impl NewPipeline {
    pub fn new(source: &str) -> Self {
        Self {
            ref_name: None,
            tag: None,
            source: source.to_owned(),
            sha: None,
            before_sha: None,
            variables: Vec::new(),
            outcome: None,
            merge_request: None,
            upstream: None,
            token: None,
            validate: false,
        }
    }
}

/// Why the API refused to create a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreateError {
    ProjectNotFound,
    RefNotFound,
    MissingCiConfig,
}

/// Creates a pipeline (status `created`) and schedules its lifecycle.
/// Returns its id and its API JSON as of creation.
pub(crate) fn create(
    sim: &Sim,
    project_id: u64,
    req: NewPipeline,
) -> Result<(u64, Value), CreateError> {
    let urls = sim.urls();
    let (id, json) = {
        let mut st = lock(&sim.inner.state);
        let st = &mut *st;
        let project = st
            .projects
            .get_mut(&project_id)
            .ok_or(CreateError::ProjectNotFound)?;
        let ref_name = req
            .ref_name
            .clone()
            .or_else(|| project.default_branch.clone())
            .unwrap_or_else(|| "main".to_owned());
        let resolved = project.resolve_ref(&ref_name);
        if req.validate {
            let Some((r, _)) = resolved else {
                return Err(CreateError::RefNotFound);
            };
            if !r.files.contains_key(".gitlab-ci.yml") {
                return Err(CreateError::MissingCiConfig);
            }
        }
        let (ref_sha, is_tag) = match resolved {
            Some((r, t)) => (Some(r.head.clone()), t),
            None => (None, false),
        };
        let sha = req.sha.clone().or(ref_sha).unwrap_or_else(random_sha);
        let before_sha = req
            .before_sha
            .clone()
            .or_else(|| project.commits.get(&sha).and_then(|c| c.parent.clone()))
            .unwrap_or_else(|| "0".repeat(40));
        let outcome = match req.outcome {
            Some(o) => o,
            None => project.next_outcome(),
        };
        let iid = project.next_iid;
        project.next_iid += 1;
        let id = st.next_pipeline_id;
        st.next_pipeline_id += 1;
        if let Some(p) = st.projects.get_mut(&project_id) {
            p.pipelines.push(id);
        }
        let t = now();
        let pl = Pipeline {
            id,
            iid,
            project_id,
            sha,
            before_sha,
            git_ref: ref_name,
            tag: req.tag.unwrap_or(is_tag),
            source: req.source,
            status: PipelineStatus::Created,
            outcome,
            variables: req.variables,
            created_at: t,
            created_instant: Instant::now(),
            updated_at: t,
            started_at: None,
            finished_at: None,
            generation: 0,
            merge_request: req.merge_request,
            upstream: req.upstream,
            retries: 0,
            token: req.token,
        };
        let json = pipeline_json(st, &pl, &urls, true);
        st.pipelines.insert(id, pl);
        (id, json)
    };
    schedule(sim, id, 0);
    Ok((id, json))
}

/// Spawns the timed lifecycle of one generation of a pipeline.
fn schedule(sim: &Sim, id: u64, generation: u64) {
    let sim2 = sim.clone();
    sim.spawn(async move {
        let start = tokio::time::Instant::now();
        let d = sim2.inner.opts.pipeline_duration;
        tokio::task::yield_now().await;
        if !transition(&sim2, id, Some(generation), PipelineStatus::Pending) {
            return;
        }
        tokio::time::sleep_until(start + d / 2).await;
        if !transition(&sim2, id, Some(generation), PipelineStatus::Running) {
            return;
        }
        if !sim2.inner.opts.auto_finish {
            return;
        }
        tokio::time::sleep_until(start + d).await;
        let outcome = {
            let st = lock(&sim2.inner.state);
            match st.pipelines.get(&id) {
                Some(p) => p.outcome,
                None => return,
            }
        };
        transition(&sim2, id, Some(generation), outcome.status());
    });
}

/// Changes a pipeline's status (if `generation` still matches) and queues the
/// Pipeline Hook deliveries. Returns false if the pipeline moved on.
pub(crate) fn transition(
    sim: &Sim,
    id: u64,
    generation: Option<u64>,
    status: PipelineStatus,
) -> bool {
    let urls = sim.urls();
    let mut st = lock(&sim.inner.state);
    let Some(pl) = st.pipelines.get_mut(&id) else {
        return false;
    };
    if generation.is_some_and(|g| g != pl.generation) {
        return false;
    }
    if pl.status == status {
        return true;
    }
    let t = now();
    pl.status = status;
    pl.updated_at = t;
    if status == PipelineStatus::Running && pl.started_at.is_none() {
        pl.started_at = Some(t);
    }
    if status.is_finished() {
        pl.finished_at = Some(t);
        if pl.started_at.is_none() {
            pl.started_at = Some(t);
        }
    }
    let project_id = pl.project_id;
    webhooks::pipeline_event(sim, &st, project_id, id, &urls);
    true
}

/// Finishes a pipeline now (no-op if finished).
pub(crate) fn finish(sim: &Sim, id: u64, status: PipelineStatus) -> bool {
    {
        let mut st = lock(&sim.inner.state);
        let Some(pl) = st.pipelines.get_mut(&id) else {
            return false;
        };
        if pl.status.is_finished() {
            return false;
        }
        pl.generation += 1;
    }
    transition(sim, id, None, status)
}

/// Retries a failed/canceled pipeline: same id, back to pending, next outcome.
/// Returns false if the pipeline does not exist or is not retryable.
pub(crate) fn retry(sim: &Sim, id: u64) -> bool {
    let generation = {
        let mut st = lock(&sim.inner.state);
        let st = &mut *st;
        let Some(pl) = st.pipelines.get_mut(&id) else {
            return false;
        };
        if !matches!(pl.status, PipelineStatus::Failed | PipelineStatus::Canceled) {
            return false;
        }
        let outcome = match st.projects.get_mut(&pl.project_id) {
            Some(p) => p.next_outcome(),
            None => Outcome::Success,
        };
        pl.outcome = outcome;
        pl.generation += 1;
        pl.retries += 1;
        pl.finished_at = None;
        pl.started_at = None;
        pl.generation
    };
    // Back to pending right away (the API answer shows it), then running, final.
    transition(sim, id, Some(generation), PipelineStatus::Pending);
    schedule(sim, id, generation);
    true
}

/// API JSON of a pipeline (`full` = single-pipeline representation).
pub(crate) fn pipeline_json(
    st: &State,
    pl: &Pipeline,
    urls: &crate::state::Urls,
    full: bool,
) -> Value {
    use crate::util::api_time;
    let project_path = st
        .projects
        .get(&pl.project_id)
        .map(|p| p.full_path.as_str())
        .unwrap_or_default();
    let mut v = serde_json::json!({
        "id": pl.id,
        "iid": pl.iid,
        "project_id": pl.project_id,
        "sha": pl.sha,
        "ref": pl.git_ref,
        "status": pl.status.as_str(),
        "source": pl.source,
        "created_at": api_time(pl.created_at),
        "updated_at": api_time(pl.updated_at),
        "web_url": format!("{}/{}/-/pipelines/{}", urls.base, project_path, pl.id),
        "name": null,
    });
    if full && let Value::Object(m) = &mut v {
        let opt = |t: Option<time::OffsetDateTime>| t.map(api_time);
        m.insert("before_sha".into(), pl.before_sha.clone().into());
        m.insert("tag".into(), pl.tag.into());
        m.insert("yaml_errors".into(), Value::Null);
        m.insert("user".into(), webhooks::user_json(&urls.base));
        m.insert("started_at".into(), opt(pl.started_at).into());
        m.insert("finished_at".into(), opt(pl.finished_at).into());
        m.insert("committed_at".into(), Value::Null);
        m.insert("duration".into(), pl.duration().into());
        m.insert("queued_duration".into(), pl.queued_duration().into());
        m.insert("coverage".into(), Value::Null);
        m.insert(
            "detailed_status".into(),
            serde_json::json!({
                "icon": format!("status_{}", pl.status.as_str()),
                "text": pl.status.detailed(),
                "label": pl.status.detailed(),
                "group": pl.status.as_str(),
                "tooltip": pl.status.detailed(),
                "has_details": true,
                "details_path": format!("/{}/-/pipelines/{}", project_path, pl.id),
                "illustration": null,
                "favicon": format!("/assets/ci_favicons/favicon_status_{}.png", pl.status.as_str()),
            }),
        );
    }
    v
}
