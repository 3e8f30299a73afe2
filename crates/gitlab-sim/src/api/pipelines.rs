//! Pipelines: create, list, get, variables, retry, cancel.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Params, field_str, paginate, parse_body, project_id, state};
use crate::Sim;
use crate::engine::{self, CreateError, NewPipeline, pipeline_json};
use crate::model::{Outcome, PipelineStatus};
use crate::state::{Pipeline, Variable};
use crate::util::parse_time;

fn parse_variables(v: Option<&Value>) -> Result<Vec<Variable>, ApiError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Array(items) = v else {
        return Err(ApiError::bad_request("variables is invalid"));
    };
    items
        .iter()
        .map(|item| {
            let key = item.get("key").and_then(Value::as_str);
            let value = match item.get("value") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => Some(String::new()),
                Some(other @ (Value::Number(_) | Value::Bool(_))) => Some(other.to_string()),
                Some(_) => None,
            };
            let variable_type = item
                .get("variable_type")
                .and_then(Value::as_str)
                .unwrap_or("env_var");
            match (key, value) {
                (Some(k), Some(v)) if !k.is_empty() => Ok(Variable {
                    key: k.to_owned(),
                    value: v,
                    variable_type: variable_type.to_owned(),
                }),
                _ => Err(ApiError::bad_request("variables is invalid")),
            }
        })
        .collect()
}

fn base_error(msg: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, json!({"message": {"base": [msg]}}))
}

/// Resolves the project and checks Maintainer access.
fn maintainer_project(sim: &Sim, key: &str) -> Result<u64, ApiError> {
    let st = state(sim);
    let id = project_id(&st, key)?;
    if st.projects.get(&id).is_some_and(|p| p.maintainer) {
        Ok(id)
    } else {
        Err(ApiError::forbidden())
    }
}

/// `POST /projects/:id/pipeline`.
pub(crate) async fn create(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let id = maintainer_project(&sim, &key)?;
    let params = Params::from_raw(q.as_deref());
    let fields = parse_body(&body)?;
    let git_ref = field_str(&fields, "ref")
        .or_else(|| params.get("ref"))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("ref is missing"))?
        .to_owned();
    let variables = parse_variables(fields.get("variables"))?;
    let allowed = state(&sim)
        .projects
        .get(&id)
        .is_none_or(|p| p.variables_allowed);
    if !variables.is_empty() && !allowed {
        return Err(base_error(
            "Insufficient permissions to set pipeline variables",
        ));
    }
    let req = NewPipeline {
        ref_name: Some(git_ref),
        variables,
        validate: true,
        token: super::request_token(&headers),
        ..NewPipeline::new("api")
    };
    match engine::create(&sim, id, req) {
        Ok((_, json)) => Ok((StatusCode::CREATED, axum::Json(json)).into_response()),
        Err(CreateError::ProjectNotFound) => Err(ApiError::not_found("Project")),
        Err(CreateError::RefNotFound) => Err(base_error("Reference not found")),
        Err(CreateError::MissingCiConfig) => Err(base_error("Missing CI config file")),
    }
}

fn matches(pl: &Pipeline, params: &Params) -> bool {
    if params.get("ref").is_some_and(|r| r != pl.git_ref) {
        return false;
    }
    if params.get("sha").is_some_and(|s| s != pl.sha) {
        return false;
    }
    if params
        .get("status")
        .is_some_and(|s| s != pl.status.as_str())
    {
        return false;
    }
    if params.get("source").is_some_and(|s| s != pl.source) {
        return false;
    }
    if let Some(t) = params.get("updated_after").and_then(parse_time)
        && pl.updated_at <= t
    {
        return false;
    }
    if let Some(t) = params.get("updated_before").and_then(parse_time)
        && pl.updated_at >= t
    {
        return false;
    }
    match params.get("scope") {
        Some("running") => pl.status == PipelineStatus::Running,
        Some("pending") => pl.status == PipelineStatus::Pending,
        Some("finished") => pl.status.is_finished(),
        Some("tags") => pl.tag,
        Some("branches") => !pl.tag,
        _ => true,
    }
}

/// `GET /projects/:id/pipelines`.
pub(crate) async fn list(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = Params::from_raw(q.as_deref());
    for key in ["updated_after", "updated_before"] {
        if params.get(key).is_some_and(|v| parse_time(v).is_none()) {
            return Err(ApiError::bad_request(&format!("{key} is invalid")));
        }
    }
    if let Some(s) = params.get("status")
        && PipelineStatus::parse(s).is_none()
        && !matches!(
            s,
            "waiting_for_resource" | "preparing" | "skipped" | "manual" | "scheduled"
        )
    {
        return Err(ApiError::bad_request("status does not have a valid value"));
    }
    let urls = sim.urls();
    let st = state(&sim);
    let id = project_id(&st, &key)?;
    let p = st
        .projects
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Project"))?;
    let mut items: Vec<&Pipeline> = p
        .pipelines
        .iter()
        .filter_map(|id| st.pipelines.get(id))
        .filter(|pl| matches(pl, &params))
        .collect();
    match params.get("order_by").unwrap_or("id") {
        "id" => {}
        "status" => items.sort_by(|a, b| {
            a.status
                .as_str()
                .cmp(b.status.as_str())
                .then(a.id.cmp(&b.id))
        }),
        "ref" => items.sort_by(|a, b| a.git_ref.cmp(&b.git_ref).then(a.id.cmp(&b.id))),
        "updated_at" => items.sort_by(|a, b| a.updated_at.cmp(&b.updated_at).then(a.id.cmp(&b.id))),
        "user_id" => {}
        _ => {
            return Err(ApiError::bad_request(
                "order_by does not have a valid value",
            ));
        }
    }
    match params.get("sort").unwrap_or("desc") {
        "desc" => items.reverse(),
        "asc" => {}
        _ => return Err(ApiError::bad_request("sort does not have a valid value")),
    }
    Ok(paginate(&sim, uri.path(), &params, &items, |pl| {
        pipeline_json(&st, pl, &urls, false)
    }))
}

fn parse_pipeline_id(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, json!({"error": "404 Not Found"})))
}

/// Looks up a pipeline of a project and renders it.
fn pipeline_of(sim: &Sim, key: &str, pipeline: &str) -> Result<(u64, Value), ApiError> {
    let pid = parse_pipeline_id(pipeline)?;
    let urls = sim.urls();
    let st = state(sim);
    let id = project_id(&st, key)?;
    let pl = st
        .pipelines
        .get(&pid)
        .filter(|pl| pl.project_id == id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, json!({"message": "404 Not found"})))?;
    Ok((pid, pipeline_json(&st, pl, &urls, true)))
}

/// `GET /projects/:id/pipelines/:pipeline_id`.
pub(crate) async fn get_one(
    State(sim): State<Sim>,
    Path((key, pipeline)): Path<(String, String)>,
) -> ApiResult {
    let (_, json) = pipeline_of(&sim, &key, &pipeline)?;
    Ok(axum::Json(json).into_response())
}

/// `GET /projects/:id/pipelines/:pipeline_id/variables`.
pub(crate) async fn variables(
    State(sim): State<Sim>,
    Path((key, pipeline)): Path<(String, String)>,
) -> ApiResult {
    let (pid, _) = pipeline_of(&sim, &key, &pipeline)?;
    let st = state(&sim);
    let vars: Vec<Value> = st
        .pipelines
        .get(&pid)
        .map(|pl| {
            pl.variables
                .iter()
                .map(|v| {
                    json!({
                        "variable_type": v.variable_type,
                        "key": v.key,
                        "value": v.value,
                        "raw": false,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(axum::Json(vars).into_response())
}

/// `POST /projects/:id/pipelines/:pipeline_id/retry`.
pub(crate) async fn retry(
    State(sim): State<Sim>,
    Path((key, pipeline)): Path<(String, String)>,
) -> ApiResult {
    maintainer_project(&sim, &key)?;
    let (pid, _) = pipeline_of(&sim, &key, &pipeline)?;
    engine::retry(&sim, pid);
    let (_, json) = pipeline_of(&sim, &key, &pipeline)?;
    Ok((StatusCode::CREATED, axum::Json(json)).into_response())
}

/// `POST /projects/:id/pipelines/:pipeline_id/cancel`.
pub(crate) async fn cancel(
    State(sim): State<Sim>,
    Path((key, pipeline)): Path<(String, String)>,
) -> ApiResult {
    maintainer_project(&sim, &key)?;
    let (pid, _) = pipeline_of(&sim, &key, &pipeline)?;
    engine::finish(&sim, pid, Outcome::Canceled.status());
    let (_, json) = pipeline_of(&sim, &key, &pipeline)?;
    Ok(axum::Json(json).into_response())
}
