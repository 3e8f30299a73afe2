//! Project hooks (Maintainer only) and group hooks (Premium only; otherwise 404) CRUD, and the
//! test endpoint. The token is write-only.

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

/// Whose hooks a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Project(u64),
    Group(u64),
}

fn hook_json(h: &Hook) -> Value {
    let mut v = json!({
        "id": h.id,
        "url": h.url,
        "name": null,
        "description": null,
        "push_events": h.push_events,
        "push_events_branch_filter": h.push_events_branch_filter,
        "branch_filter_strategy": h.branch_filter_strategy,
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
        "alert_status": h.alert_status,
        "disabled_until": h.disabled_until.map(api_time),
        "url_variables": [],
        "created_at": api_time(h.created_at),
        "resource_access_token_events": false,
        "custom_webhook_template": null,
        "custom_headers": [],
    });
    match h.group_id {
        Some(g) => v["group_id"] = json!(g),
        None => v["project_id"] = json!(h.project_id),
    }
    v
}

/// Resolves the project and checks Maintainer access.
fn maintainer_project(st: &SimState, key: &str) -> Result<Owner, ApiError> {
    let id = project_id(st, key)?;
    if st.projects.get(&id).is_some_and(|p| p.maintainer) {
        Ok(Owner::Project(id))
    } else {
        Err(ApiError::forbidden())
    }
}

/// Resolves the group; without Premium the endpoint does not exist.
fn premium_group(st: &SimState, key: &str) -> Result<Owner, ApiError> {
    if !st.premium {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            json!({"error": "404 Not Found"}),
        ));
    }
    st.find_group(key)
        .map(Owner::Group)
        .ok_or_else(|| ApiError::not_found("Group"))
}

fn hook_ids(st: &SimState, owner: Owner) -> Vec<u64> {
    match owner {
        Owner::Project(id) => st.projects.get(&id).map(|p| p.hooks.clone()),
        Owner::Group(id) => st.groups.get(&id).map(|g| g.hooks.clone()),
    }
    .unwrap_or_default()
}

fn hook_of(st: &SimState, owner: Owner, hook: &str) -> Result<u64, ApiError> {
    hook.parse::<u64>()
        .ok()
        .filter(|h| hook_ids(st, owner).contains(h))
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
    if let Some(s) = field_str(f, "branch_filter_strategy") {
        if !matches!(s, "wildcard" | "regex" | "all_branches") {
            return Err(ApiError::bad_request(
                "branch_filter_strategy does not have a valid value",
            ));
        }
        h.branch_filter_strategy = s.to_owned();
    }
    if h.branch_filter_strategy == "all_branches" {
        h.push_events_branch_filter = None;
    }
    Ok(())
}

fn list(sim: &Sim, owner: Owner, uri: &Uri, q: Option<&str>) -> ApiResult {
    let params = Params::from_raw(q);
    let st = state(sim);
    let hooks: Vec<&Hook> = hook_ids(&st, owner)
        .iter()
        .filter_map(|h| st.hooks.get(h))
        .collect();
    Ok(paginate(sim, uri.path(), &params, &hooks, |h| hook_json(h)))
}

fn create(sim: &Sim, owner: Owner, body: &Bytes) -> ApiResult {
    let fields = parse_body(body)?;
    let mut st = state(sim);
    if field_str(&fields, "url").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("url is missing"));
    }
    let id = st.next_hook_id;
    let (project_id, group_id) = match owner {
        Owner::Project(p) => (p, None),
        Owner::Group(g) => (0, Some(g)),
    };
    let mut hook = Hook {
        id,
        project_id,
        group_id,
        url: String::new(),
        token: String::new(),
        push_events: true,
        pipeline_events: false,
        tag_push_events: false,
        merge_requests_events: false,
        enable_ssl_verification: true,
        push_events_branch_filter: None,
        branch_filter_strategy: "wildcard".to_owned(),
        alert_status: "executable".to_owned(),
        disabled_until: None,
        created_at: now(),
        uuid: uuid::Uuid::new_v4().to_string(),
    };
    apply(&mut hook, &fields)?;
    st.next_hook_id += 1;
    let json = hook_json(&hook);
    st.hooks.insert(id, hook);
    match owner {
        Owner::Project(p) => st.projects.get_mut(&p).map(|p| p.hooks.push(id)),
        Owner::Group(g) => st.groups.get_mut(&g).map(|g| g.hooks.push(id)),
    };
    Ok((StatusCode::CREATED, axum::Json(json)).into_response())
}

fn get_one(sim: &Sim, owner: Owner, hook: &str) -> ApiResult {
    let st = state(sim);
    let hid = hook_of(&st, owner, hook)?;
    let h = st
        .hooks
        .get(&hid)
        .ok_or_else(|| ApiError::not_found("Hook"))?;
    Ok(axum::Json(hook_json(h)).into_response())
}

fn update(sim: &Sim, owner: Owner, hook: &str, body: &Bytes) -> ApiResult {
    let fields = parse_body(body)?;
    let mut st = state(sim);
    let hid = hook_of(&st, owner, hook)?;
    let h = st
        .hooks
        .get_mut(&hid)
        .ok_or_else(|| ApiError::not_found("Hook"))?;
    let mut updated = h.clone();
    apply(&mut updated, &fields)?;
    *h = updated;
    Ok(axum::Json(hook_json(h)).into_response())
}

fn delete(sim: &Sim, owner: Owner, hook: &str) -> ApiResult {
    let mut st = state(sim);
    let hid = hook_of(&st, owner, hook)?;
    st.hooks.remove(&hid);
    match owner {
        Owner::Project(p) => st
            .projects
            .get_mut(&p)
            .map(|p| p.hooks.retain(|h| *h != hid)),
        Owner::Group(g) => st.groups.get_mut(&g).map(|g| g.hooks.retain(|h| *h != hid)),
    };
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /projects/:id/hooks/:hook_id/test/:trigger`: sends a sample event of the project's default
/// branch head to the hook now and waits for the answer. A 2xx answer re-enables a disabled hook,
/// as GitLab does for any successful delivery. Only `push_events` is modelled.
async fn test(sim: &Sim, owner: Owner, hook: &str, trigger: &str) -> ApiResult {
    let Owner::Project(pid) = owner else {
        return Err(ApiError::not_found("Hook"));
    };
    if trigger != "push_events" {
        return Err(ApiError::bad_request("trigger does not have a valid value"));
    }
    let (hid, url, token, uuid, body) = {
        let st = state(sim);
        let hid = hook_of(&st, owner, hook)?;
        let h = st
            .hooks
            .get(&hid)
            .ok_or_else(|| ApiError::not_found("Hook"))?;
        let p = st
            .projects
            .get(&pid)
            .ok_or_else(|| ApiError::not_found("Project"))?;
        let (Some(branch), Some(head)) = (p.default_branch.clone(), p.head()) else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "Ensure the project has at least one commit."}),
            ));
        };
        let before = p
            .commits
            .get(&head.head)
            .and_then(|c| c.parent.clone())
            .unwrap_or_else(|| "0".repeat(40));
        let payload =
            crate::webhooks::push_payload(&st, p, &branch, &before, &head.head, &sim.urls());
        (
            hid,
            h.url.clone(),
            h.token.clone(),
            h.uuid.clone(),
            payload.to_string(),
        )
    };
    let answer = sim
        .inner
        .http
        .post(&url)
        .header("Content-Type", "application/json")
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", token)
        .header("X-Gitlab-Webhook-UUID", uuid)
        .header("X-Gitlab-Event-UUID", uuid::Uuid::new_v4().to_string())
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .body(body)
        .send()
        .await;
    let status = answer.as_ref().map(|r| r.status().as_u16()).ok();
    if status.is_some_and(|s| (200..300).contains(&s)) {
        if let Some(h) = state(sim).hooks.get_mut(&hid) {
            h.alert_status = "executable".to_owned();
            h.disabled_until = None;
        }
        return Ok((
            StatusCode::CREATED,
            axum::Json(json!({"message": "201 Created"})),
        )
            .into_response());
    }
    let reason = match (status, answer) {
        (Some(s), _) => format!("Hook execution failed: {s}"),
        (None, Err(e)) => format!("Hook execution failed: {e}"),
        (None, Ok(_)) => "Hook execution failed".to_owned(),
    };
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": reason}),
    ))
}

/// `GET /projects/:id/hooks`.
pub(crate) async fn project_list(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let owner = maintainer_project(&state(&sim), &key)?;
    list(&sim, owner, &uri, q.as_deref())
}

/// `POST /projects/:id/hooks`.
pub(crate) async fn project_create(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    body: Bytes,
) -> ApiResult {
    let owner = maintainer_project(&state(&sim), &key)?;
    create(&sim, owner, &body)
}

/// `GET /projects/:id/hooks/:hook_id`.
pub(crate) async fn project_get(
    State(sim): State<Sim>,
    Path((key, hook)): Path<(String, String)>,
) -> ApiResult {
    let owner = maintainer_project(&state(&sim), &key)?;
    get_one(&sim, owner, &hook)
}

/// `PUT /projects/:id/hooks/:hook_id`.
pub(crate) async fn project_update(
    State(sim): State<Sim>,
    Path((key, hook)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let owner = maintainer_project(&state(&sim), &key)?;
    update(&sim, owner, &hook, &body)
}

/// `DELETE /projects/:id/hooks/:hook_id` (204; GitLab answers with no body).
pub(crate) async fn project_delete(
    State(sim): State<Sim>,
    Path((key, hook)): Path<(String, String)>,
) -> ApiResult {
    let owner = maintainer_project(&state(&sim), &key)?;
    delete(&sim, owner, &hook)
}

/// `POST /projects/:id/hooks/:hook_id/test/:trigger`.
pub(crate) async fn project_test(
    State(sim): State<Sim>,
    Path((key, hook, trigger)): Path<(String, String, String)>,
) -> ApiResult {
    let owner = maintainer_project(&state(&sim), &key)?;
    test(&sim, owner, &hook, &trigger).await
}

/// `GET /groups/:id/hooks`.
pub(crate) async fn group_list(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let owner = premium_group(&state(&sim), &key)?;
    list(&sim, owner, &uri, q.as_deref())
}

/// `POST /groups/:id/hooks`.
pub(crate) async fn group_create(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    body: Bytes,
) -> ApiResult {
    let owner = premium_group(&state(&sim), &key)?;
    create(&sim, owner, &body)
}

/// `GET /groups/:id/hooks/:hook_id`.
pub(crate) async fn group_get(
    State(sim): State<Sim>,
    Path((key, hook)): Path<(String, String)>,
) -> ApiResult {
    let owner = premium_group(&state(&sim), &key)?;
    get_one(&sim, owner, &hook)
}

/// `PUT /groups/:id/hooks/:hook_id`.
pub(crate) async fn group_update(
    State(sim): State<Sim>,
    Path((key, hook)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let owner = premium_group(&state(&sim), &key)?;
    update(&sim, owner, &hook, &body)
}

/// `DELETE /groups/:id/hooks/:hook_id`.
pub(crate) async fn group_delete(
    State(sim): State<Sim>,
    Path((key, hook)): Path<(String, String)>,
) -> ApiResult {
    let owner = premium_group(&state(&sim), &key)?;
    delete(&sim, owner, &hook)
}
