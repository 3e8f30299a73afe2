//! Webhook payloads and delivery: one ordered queue per project, retries with
//! short backoff, drop/duplicate faults, redelivery.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::model::DeliveryLog;
use crate::state::{Project, State, Urls};
use crate::util::{glob_match, hook_time, lock};
use crate::{Inner, Sim};

/// Delivery attempts per event and hook (first try included).
const ATTEMPTS: u32 = 3;
/// Backoff before the second attempt; doubles after.
const BACKOFF: Duration = Duration::from_millis(50);
/// `User-Agent` of deliveries.
const USER_AGENT: &str = "GitLab/17.6.0";

/// One event to send to one hook.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub project_id: u64,
    pub project: String,
    pub hook_id: u64,
    pub url: String,
    pub token: String,
    pub hook_uuid: String,
    pub event: &'static str,
    pub body: Bytes,
    pub idempotency_key: String,
    pub pipeline_id: Option<u64>,
    pub pipeline_status: Option<String>,
    pub redelivery: bool,
}

/// Per-project delivery queues and each project's last event.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    senders: HashMap<u64, mpsc::UnboundedSender<Job>>,
    last: HashMap<u64, Vec<Job>>,
}

/// Queues jobs of one event for a project, in order, remembering them for
/// `redeliver_last`.
fn enqueue(sim: &Sim, project_id: u64, jobs: Vec<Job>, remember: bool) {
    if jobs.is_empty() {
        return;
    }
    let mut q = lock(&sim.inner.webhooks);
    if remember {
        q.last.insert(project_id, jobs.clone());
    }
    let tx = match q.senders.get(&project_id) {
        Some(tx) if !tx.is_closed() => tx.clone(),
        _ => {
            let (tx, rx) = mpsc::unbounded_channel();
            sim.spawn(worker(Arc::downgrade(&sim.inner), rx));
            q.senders.insert(project_id, tx.clone());
            tx
        }
    };
    for job in jobs {
        if tx.send(job).is_err() {
            tracing::warn!("gitlab-sim: webhook queue closed");
        }
    }
}

async fn worker(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let sim = Sim { inner };
        deliver(&sim, &job).await;
        if sim.inner.faults.duplicating() {
            let dup = Job {
                redelivery: true,
                ..job
            };
            deliver(&sim, &dup).await;
        }
    }
}

async fn deliver(sim: &Sim, job: &Job) {
    let log = |attempt: u32,
               event_uuid: String,
               status: Option<u16>,
               error: Option<String>,
               sent: std::time::Instant| {
        let dropped = status.is_none() && error.as_deref() == Some(DROPPED);
        lock(&sim.inner.deliveries).push(DeliveryLog {
            project_id: job.project_id,
            project: job.project.clone(),
            hook_id: job.hook_id,
            url: job.url.clone(),
            event: job.event.to_owned(),
            pipeline_id: job.pipeline_id,
            pipeline_status: job.pipeline_status.clone(),
            status,
            error,
            dropped,
            attempt,
            redelivery: job.redelivery,
            idempotency_key: job.idempotency_key.clone(),
            event_uuid,
            sent,
            answered: std::time::Instant::now(),
        });
    };
    if sim.inner.faults.take_webhook_drop() {
        log(
            1,
            String::new(),
            None,
            Some(DROPPED.to_owned()),
            std::time::Instant::now(),
        );
        return;
    }
    let instance = sim.url();
    let mut backoff = BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let event_uuid = uuid::Uuid::new_v4().to_string();
        let sent = std::time::Instant::now();
        let res = sim
            .inner
            .http
            .post(&job.url)
            .header("Content-Type", "application/json")
            .header("User-Agent", USER_AGENT)
            .header("X-Gitlab-Event", job.event)
            .header("X-Gitlab-Token", &job.token)
            .header("X-Gitlab-Instance", &instance)
            .header("X-Gitlab-Webhook-UUID", &job.hook_uuid)
            .header("X-Gitlab-Event-UUID", &event_uuid)
            .header("Idempotency-Key", &job.idempotency_key)
            .body(job.body.clone())
            .send()
            .await;
        let ok = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                log(attempt, event_uuid, Some(status), None, sent);
                r.status().is_success()
            }
            Err(e) => {
                log(attempt, event_uuid, None, Some(e.to_string()), sent);
                false
            }
        };
        if ok {
            return;
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

const DROPPED: &str = "dropped (fault injection)";

/// The user of events and API objects.
pub(crate) fn user_json(base: &str) -> Value {
    json!({
        "id": 1,
        "name": "Administrator",
        "username": "root",
        "state": "active",
        "avatar_url": null,
        "web_url": format!("{base}/root"),
        "email": "admin@example.com",
    })
}

/// The `project` object of webhook payloads.
pub(crate) fn project_hook_json(st: &State, p: &Project, urls: &Urls) -> Value {
    let web_url = format!("{}/{}", urls.base, p.full_path);
    let host = urls
        .base
        .split_once("://")
        .map_or(urls.base.as_str(), |(_, h)| h);
    let host = host.split(':').next().unwrap_or(host);
    let namespace = st
        .groups
        .get(&p.namespace_id)
        .map(|g| g.name.clone())
        .unwrap_or_default();
    json!({
        "id": p.id,
        "name": p.name,
        "description": null,
        "web_url": web_url,
        "avatar_url": null,
        "git_ssh_url": format!("git@{host}:{}.git", p.full_path),
        "git_http_url": format!("{web_url}.git"),
        "namespace": namespace,
        "visibility_level": 0,
        "path_with_namespace": p.full_path,
        "default_branch": p.default_branch,
        "ci_config_path": null,
        "homepage": web_url,
        "url": format!("git@{host}:{}.git", p.full_path),
        "ssh_url": format!("git@{host}:{}.git", p.full_path),
        "http_url": format!("{web_url}.git"),
    })
}

fn commit_json(p: &Project, sha: &str, urls: &Urls, with_files: bool) -> Value {
    let c = p.commits.get(sha);
    let message = c.map_or_else(|| "Simulated commit".to_owned(), |c| c.message.clone());
    let title = message.lines().next().unwrap_or_default().to_owned();
    let timestamp = c.map_or_else(crate::util::now, |c| c.timestamp);
    let mut v = json!({
        "id": sha,
        "message": message,
        "title": title,
        "timestamp": crate::util::api_time(timestamp).replace(".000Z", "+00:00"),
        "url": format!("{}/{}/-/commit/{}", urls.base, p.full_path, sha),
        "author": { "name": "Administrator", "email": "admin@example.com" },
    });
    if with_files && let Value::Object(m) = &mut v {
        let (a, md, r) = c.map_or((vec![], vec![], vec![]), |c| {
            (c.added.clone(), c.modified.clone(), c.removed.clone())
        });
        m.insert("added".into(), json!(a));
        m.insert("modified".into(), json!(md));
        m.insert("removed".into(), json!(r));
    }
    v
}

/// Builds the Pipeline Hook payload for the pipeline's current status and
/// queues it for every hook of the project with `pipeline_events`.
/// Called with the state lock held, so events of a project stay in order.
pub(crate) fn pipeline_event(
    sim: &Sim,
    st: &State,
    project_id: u64,
    pipeline_id: u64,
    urls: &Urls,
) {
    let (Some(p), Some(pl)) = (st.projects.get(&project_id), st.pipelines.get(&pipeline_id)) else {
        return;
    };
    let hooks: Vec<_> = st
        .delivering_hooks(p)
        .into_iter()
        .filter(|h| h.pipeline_events)
        .collect();
    if hooks.is_empty() {
        return;
    }
    let merge_request = pl.merge_request.as_ref().map(|mr| {
        json!({
            "id": 1000 + mr.iid,
            "iid": mr.iid,
            "title": mr.title,
            "source_branch": mr.source_branch,
            "source_project_id": p.id,
            "target_branch": mr.target_branch,
            "target_project_id": p.id,
            "state": "opened",
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable",
            "url": format!("{}/{}/-/merge_requests/{}", urls.base, p.full_path, mr.iid),
        })
    });
    let mut payload = json!({
        "object_kind": "pipeline",
        "object_attributes": {
            "id": pl.id,
            "iid": pl.iid,
            "name": null,
            "ref": pl.git_ref,
            "tag": pl.tag,
            "sha": pl.sha,
            "before_sha": pl.before_sha,
            "source": pl.source,
            "status": pl.status.as_str(),
            "detailed_status": pl.status.detailed(),
            "stages": ["build"],
            "created_at": hook_time(pl.created_at),
            "finished_at": pl.finished_at.map(hook_time),
            "duration": pl.duration(),
            "queued_duration": pl.queued_duration(),
            "variables": pl.variables.iter().map(|v| json!({"key": v.key, "value": v.value})).collect::<Vec<_>>(),
            "url": format!("{}/{}/-/pipelines/{}", urls.base, p.full_path, pl.id),
        },
        "merge_request": merge_request,
        "user": user_json(&urls.base),
        "project": project_hook_json(st, p, urls),
        "commit": commit_json(p, &pl.sha, urls, false),
        "builds": [],
    });
    if let Some((up_project, up_pipeline)) = pl.upstream
        && let Value::Object(m) = &mut payload
    {
        let up = st.projects.get(&up_project);
        m.insert(
            "source_pipeline".into(),
            json!({
                "project": {
                    "id": up_project,
                    "web_url": up.map(|u| format!("{}/{}", urls.base, u.full_path)),
                    "path_with_namespace": up.map(|u| u.full_path.clone()),
                },
                "pipeline_id": up_pipeline,
                "job_id": up_pipeline * 10,
            }),
        );
    }
    let body = Bytes::from(payload.to_string());
    let jobs = hooks
        .into_iter()
        .map(|h| Job {
            project_id,
            project: p.full_path.clone(),
            hook_id: h.id,
            url: h.url.clone(),
            token: h.token.clone(),
            hook_uuid: h.uuid.clone(),
            event: "Pipeline Hook",
            body: body.clone(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            pipeline_id: Some(pl.id),
            pipeline_status: Some(pl.status.as_str().to_owned()),
            redelivery: false,
        })
        .collect();
    enqueue(sim, project_id, jobs, true);
}

/// Queues a Push Hook for the commit `after` on `branch`.
pub(crate) fn push_event(sim: &Sim, project_id: u64, branch: &str, before: &str, after: &str) {
    let urls = sim.urls();
    let st = lock(&sim.inner.state);
    let Some(p) = st.projects.get(&project_id) else {
        return;
    };
    let hooks: Vec<_> = st
        .delivering_hooks(p)
        .into_iter()
        .filter(|h| h.push_events)
        .filter(|h| branch_filter_matches(h, branch))
        .collect();
    if hooks.is_empty() {
        return;
    }
    let payload = push_payload(&st, p, branch, before, after, &urls);
    let body = Bytes::from(payload.to_string());
    let jobs = hooks
        .into_iter()
        .map(|h| Job {
            project_id,
            project: p.full_path.clone(),
            hook_id: h.id,
            url: h.url.clone(),
            token: h.token.clone(),
            hook_uuid: h.uuid.clone(),
            event: "Push Hook",
            body: body.clone(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            pipeline_id: None,
            pipeline_status: None,
            redelivery: false,
        })
        .collect();
    enqueue(sim, project_id, jobs, true);
}

/// Whether a hook's push filter lets a push to `branch` through (the simulator knows the wildcard
/// and all-branches strategies; a regex filter is compared literally).
pub(crate) fn branch_filter_matches(h: &crate::state::Hook, branch: &str) -> bool {
    let filter = h.push_events_branch_filter.as_deref().unwrap_or_default();
    match h.branch_filter_strategy.as_str() {
        "all_branches" => true,
        "regex" => filter.is_empty() || filter == branch,
        _ => filter.is_empty() || glob_match(filter, branch),
    }
}

/// The Push Hook payload for the head of `branch` (also the test event of a hook).
pub(crate) fn push_payload(
    st: &State,
    p: &crate::state::Project,
    branch: &str,
    before: &str,
    after: &str,
    urls: &Urls,
) -> Value {
    json!({
        "object_kind": "push",
        "event_name": "push",
        "before": before,
        "after": after,
        "ref": format!("refs/heads/{branch}"),
        "ref_protected": true,
        "checkout_sha": after,
        "message": null,
        "user_id": 1,
        "user_name": "Administrator",
        "user_username": "root",
        "user_email": "admin@example.com",
        "user_avatar": null,
        "project_id": p.id,
        "project": project_hook_json(st, p, urls),
        "commits": [commit_json(p, after, urls, true)],
        "total_commits_count": 1,
        "push_options": {},
        "repository": {
            "name": p.name,
            "url": format!("{}/{}.git", urls.base, p.full_path),
            "description": null,
            "homepage": format!("{}/{}", urls.base, p.full_path),
            "git_http_url": format!("{}/{}.git", urls.base, p.full_path),
            "git_ssh_url": project_hook_json(st, p, urls)["git_ssh_url"],
            "visibility_level": 0,
        },
    })
}

/// Resends the project's last event with the same idempotency keys.
pub(crate) fn redeliver_last(sim: &Sim, project_id: u64) {
    let jobs = lock(&sim.inner.webhooks)
        .last
        .get(&project_id)
        .cloned()
        .unwrap_or_default();
    let jobs = jobs
        .into_iter()
        .map(|j| Job {
            redelivery: true,
            ..j
        })
        .collect();
    enqueue(sim, project_id, jobs, false);
}
