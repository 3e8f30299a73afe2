//! Repository files and branches.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Params, paginate, project_id, state};
use crate::Sim;
use crate::state::{FileEntry, Project, Ref};
use crate::util::{api_time, base64};

/// Finds the file at `ref` (default branch when `None`).
fn find_file<'a>(
    p: &'a Project,
    git_ref: Option<&str>,
    file_path: &str,
) -> Result<(&'a Ref, &'a FileEntry, String), ApiError> {
    let name = match git_ref {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => p
            .default_branch
            .clone()
            .ok_or_else(|| ApiError::not_found("File"))?,
    };
    let (r, _) = p
        .resolve_ref(&name)
        .ok_or_else(|| ApiError::not_found("File"))?;
    let f = r
        .files
        .get(file_path.trim_start_matches('/'))
        .ok_or_else(|| ApiError::not_found("File"))?;
    Ok((r, f, name))
}

fn file_headers(r: &Ref, f: &FileEntry, file_path: &str, git_ref: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let name = file_path.rsplit('/').next().unwrap_or(file_path);
    let pairs = [
        ("x-gitlab-blob-id", f.blob_id.clone()),
        ("x-gitlab-commit-id", r.head.clone()),
        ("x-gitlab-last-commit-id", f.last_commit_id.clone()),
        ("x-gitlab-file-name", name.to_owned()),
        ("x-gitlab-file-path", file_path.to_owned()),
        ("x-gitlab-ref", git_ref.to_owned()),
        ("x-gitlab-size", f.content.len().to_string()),
        ("x-gitlab-encoding", "base64".to_owned()),
        ("x-gitlab-execute-filemode", "false".to_owned()),
    ];
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    h
}

/// `GET /projects/:id/repository/files/:file_path/raw`.
pub(crate) async fn raw_file(
    State(sim): State<Sim>,
    Path((key, file_path)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = Params::from_raw(q.as_deref());
    let st = state(&sim);
    let id = project_id(&st, &key)?;
    let p = st
        .projects
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Project"))?;
    let (r, f, name) = find_file(p, params.get("ref"), &file_path)?;
    let mut headers = file_headers(r, f, &file_path, &name);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok((headers, f.content.to_string()).into_response())
}

/// `GET /projects/:id/repository/files/:file_path` (JSON, base64 content).
pub(crate) async fn get_file(
    State(sim): State<Sim>,
    Path((key, file_path)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = Params::from_raw(q.as_deref());
    let git_ref = params
        .get("ref")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("ref is missing"))?;
    let st = state(&sim);
    let id = project_id(&st, &key)?;
    let p = st
        .projects
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Project"))?;
    let (r, f, name) = find_file(p, Some(git_ref), &file_path)?;
    let headers = file_headers(r, f, &file_path, &name);
    let body = json!({
        "file_name": file_path.rsplit('/').next().unwrap_or(&file_path),
        "file_path": file_path,
        "size": f.content.len(),
        "encoding": "base64",
        "content": base64(f.content.as_bytes()),
        "ref": name,
        "blob_id": f.blob_id,
        "commit_id": r.head,
        "last_commit_id": f.last_commit_id,
        "execute_filemode": false,
    });
    Ok((headers, axum::Json(body)).into_response())
}

/// `HEAD /projects/:id/repository/files/:file_path`: metadata headers only.
pub(crate) async fn head_file(
    State(sim): State<Sim>,
    Path((key, file_path)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = Params::from_raw(q.as_deref());
    let git_ref = params
        .get("ref")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("ref is missing"))?;
    let st = state(&sim);
    let id = project_id(&st, &key)?;
    let p = st
        .projects
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Project"))?;
    let (r, f, name) = find_file(p, Some(git_ref), &file_path)?;
    Ok((StatusCode::OK, file_headers(r, f, &file_path, &name)).into_response())
}

fn branch_json(sim: &Sim, p: &Project, name: &str, r: &Ref) -> Value {
    let commit = p.commits.get(&r.head);
    let message = commit.map(|c| c.message.clone()).unwrap_or_default();
    let date = commit.map(|c| api_time(c.timestamp));
    json!({
        "name": name,
        "merged": false,
        "protected": p.default_branch.as_deref() == Some(name),
        "default": p.default_branch.as_deref() == Some(name),
        "developers_can_push": false,
        "developers_can_merge": false,
        "can_push": true,
        "web_url": format!("{}/{}/-/tree/{}", sim.url(), p.full_path, name),
        "commit": {
            "id": r.head,
            "short_id": r.head.get(..8).unwrap_or(&r.head),
            "created_at": date,
            "parent_ids": commit.and_then(|c| c.parent.clone()).into_iter().collect::<Vec<_>>(),
            "title": message.lines().next().unwrap_or_default(),
            "message": message,
            "author_name": "Administrator",
            "author_email": "admin@example.com",
            "authored_date": date,
            "committer_name": "Administrator",
            "committer_email": "admin@example.com",
            "committed_date": date,
            "web_url": format!("{}/{}/-/commit/{}", sim.url(), p.full_path, r.head),
        },
    })
}

/// `GET /projects/:id/repository/branches/:branch`.
pub(crate) async fn branch(
    State(sim): State<Sim>,
    Path((key, branch)): Path<(String, String)>,
) -> ApiResult {
    let st = state(&sim);
    let id = project_id(&st, &key)?;
    let p = st
        .projects
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Project"))?;
    let r = p
        .branches
        .get(&branch)
        .ok_or_else(|| ApiError::not_found("Branch"))?;
    Ok(axum::Json(branch_json(&sim, p, &branch, r)).into_response())
}

/// `GET /projects/:id/repository/branches`.
pub(crate) async fn branches(
    State(sim): State<Sim>,
    Path(key): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = Params::from_raw(q.as_deref());
    let st = state(&sim);
    let id = project_id(&st, &key)?;
    let p = st
        .projects
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Project"))?;
    let search = params.get("search").unwrap_or("");
    let mut names: Vec<&String> = p.branches.keys().filter(|n| n.contains(search)).collect();
    names.sort();
    Ok(paginate(&sim, uri.path(), &params, &names, |n| {
        p.branches
            .get(*n)
            .map_or(Value::Null, |r| branch_json(&sim, p, n, r))
    }))
}
