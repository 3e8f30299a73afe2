//! Project hooks CRUD (Maintainer only; the token is write-only).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use super::{
    ApiError, ApiResult, Params, field_bool, field_str, paginate, parse_body, project_id, state,
};
use crate::Sim;
use crate::state::{Hook, State as SimState};
use crate::util::{api_time, now};

fn hook_json(h: &Hook) -> Value {
    json!({
        "id": h.id,
        "url": h.url,
        "name": null,
        "description": null,
        "project_id": h.project_id,
        "push_events": h.push_events,
        "push_events_branch_filter": h.push_events_branch_filter,
        "branch_filter_strategy": "wildcard",
        "issues_events": false,
        "confidential_issues_events": false,
        "merge_requests_events": h.merge_requests_events,
        "tag_push_events": h.tag_push_events,
        "note_events": false,
        "confidential_note_events": false,
        "job_events": false,
        "pipeline_events": h.pipeline_events,
        "wiki_page_events": false,
        "deployment_events": false,
        "releases_events": false,
        "feature_flag_events": false,
        "enable_ssl_verification": h.enable_ssl_verification,
        "repository_update_events": false,
        "alert_status": "executable",
        "disabled_until": null,
        "url_variables": [],
        "created_at": api_time(h.created_at),
        "resource_access_token_events": false,
        "custom_webhook_template": null,
        "custom_headers": [],
    })
}

/// Resolves the project and checks Maintainer access.
fn maintainer_project(st: &SimState, key: &str) -> Result<u64, ApiError> {
    let id = project_id(st, key)?;
    if st.projects.get(&id).is_some_and(|p| p.maintainer) {
        Ok(id)
    } else {
        Err(ApiError::forbidden())
    }
}

fn hook_of<'a>(st: &'a SimState, project: u64, hook: &str) -> Result<&'a Hook, ApiError> {
    hook.parse::<u64>()
        .ok()
        .and_then(|h| st.hooks.get(&h))
        .filter(|h| h.project_id == project)
        .ok_or_else(|| ApiError::not_found("Hook"))
}

fn valid_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "http://".len()
}

/// Applies body fields to a hook.
fn apply(h: &mut Hook, f: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(url) = field_str(f, "url") {
        if !valid_url(url) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": {"url": ["is blocked: Only allowed schemes are http, https"]}}),
            ));
        }
        h.url = url.to_owned();
    }
    if let Some(t) = field_str(f, "token") {
        h.token = t.to_owned();
    }
    let flags: [(&str, &mut bool); 5] = [
        ("push_events", &mut h.push_events),
        ("pipeline_events", &mut h.pipeline_events),
        ("tag_push_events", &mut h.tag_push_events),
        ("merge_requests_events", &mut h.merge_requests_events),
        ("enable_ssl_verification", &mut h.enable_ssl_verification),
    ];
    for (k, slot) in flags {
        if let Some(b) = field_bool(f, k) {
            *slot = b;
        }
    }
    if let Some(v) = f.get("push_events_branch_filter") {
        h.push_events_branch_filter = v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    }
    Ok(())
}

/// `GET /projects/:id/hooks`.
pub(crate) async fn list(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = Params::from_raw(q.as_deref());
    let st = state(&sim);
    let id = maintainer_project(&st, &key)?;
    let hooks: Vec<&Hook> = st
        .projects
        .get(&id)
        .map(|p| p.hooks.iter().filter_map(|h| st.hooks.get(h)).collect())
        .unwrap_or_default();
    Ok(paginate(&sim, uri.path(), &params, &hooks, |h| {
        hook_json(h)
    }))
}

/// `POST /projects/:id/hooks`.
pub(crate) async fn create(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    body: Bytes,
) -> ApiResult {
    let fields = parse_body(&body)?;
    let mut st = state(&sim);
    let pid = maintainer_project(&st, &key)?;
    if field_str(&fields, "url").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("url is missing"));
    }
    let id = st.next_hook_id;
    let mut hook = Hook {
        id,
        project_id: pid,
        url: String::new(),
        token: String::new(),
        push_events: true,
        pipeline_events: false,
        tag_push_events: false,
        merge_requests_events: false,
        enable_ssl_verification: true,
        push_events_branch_filter: None,
        created_at: now(),
        uuid: uuid::Uuid::new_v4().to_string(),
    };
    apply(&mut hook, &fields)?;
    st.next_hook_id += 1;
    let json = hook_json(&hook);
    st.hooks.insert(id, hook);
    if let Some(p) = st.projects.get_mut(&pid) {
        p.hooks.push(id);
    }
    Ok((StatusCode::CREATED, axum::Json(json)).into_response())
}

/// `GET /projects/:id/hooks/:hook_id`.
pub(crate) async fn get_one(
    State(sim): State<Sim>,
    Path((key, hook)): Path<(String, String)>,
) -> ApiResult {
    let st = state(&sim);
    let pid = maintainer_project(&st, &key)?;
    let h = hook_of(&st, pid, &hook)?;
    Ok(axum::Json(hook_json(h)).into_response())
}

/// `PUT /projects/:id/hooks/:hook_id`.
pub(crate) async fn update(
    State(sim): State<Sim>,
    Path((key, hook)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let fields = parse_body(&body)?;
    let mut st = state(&sim);
    let pid = maintainer_project(&st, &key)?;
    let hid = hook_of(&st, pid, &hook)?.id;
    let h = st
        .hooks
        .get_mut(&hid)
        .ok_or_else(|| ApiError::not_found("Hook"))?;
    let mut updated = h.clone();
    apply(&mut updated, &fields)?;
    *h = updated;
    Ok(axum::Json(hook_json(h)).into_response())
}

/// `DELETE /projects/:id/hooks/:hook_id` (204; GitLab answers with no body).
pub(crate) async fn delete(
    State(sim): State<Sim>,
    Path((key, hook)): Path<(String, String)>,
) -> ApiResult {
    let mut st = state(&sim);
    let pid = maintainer_project(&st, &key)?;
    let hid = hook_of(&st, pid, &hook)?.id;
    st.hooks.remove(&hid);
    if let Some(p) = st.projects.get_mut(&pid) {
        p.hooks.retain(|h| *h != hid);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
