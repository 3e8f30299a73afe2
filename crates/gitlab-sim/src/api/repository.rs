//! Repository files and branches.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, PageReq, Params, page_url, paginate, project_id, state};
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

/// One entry of a repository tree listing.
struct TreeItem {
    id: String,
    name: String,
    kind: &'static str,
    path: String,
    mode: &'static str,
}

/// The entries of `files` directly under `dir` (or all of them below it when
/// `recursive`): directories as `tree` entries, files as `blob` entries. Trees
/// come first, then blobs, each sorted by name, as GitLab lists them. `None`
/// when nothing lies under `dir`.
fn tree_items(
    files: &std::collections::BTreeMap<String, FileEntry>,
    dir: &str,
    recursive: bool,
) -> Option<Vec<TreeItem>> {
    use std::collections::BTreeMap;
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut trees: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut blobs = Vec::new();
    let mut any = false;
    for (path, entry) in files.range(prefix.clone()..) {
        let Some(rest) = path.strip_prefix(&prefix) else {
            break;
        };
        any = true;
        let segments: Vec<&str> = rest.split('/').collect();
        let dirs = if recursive { segments.len() - 1 } else { 1 };
        for depth in 0..dirs.min(segments.len() - 1) {
            let tree_path = format!("{prefix}{}", segments[..=depth].join("/"));
            // Each directory's id stands for its content: the ids below it.
            trees
                .entry(tree_path)
                .or_default()
                .push(format!("{rest} {}", entry.blob_id));
        }
        if segments.len() == 1 || recursive {
            blobs.push(TreeItem {
                id: entry.blob_id.clone(),
                name: segments.last().copied().unwrap_or_default().to_owned(),
                kind: "blob",
                path: path.clone(),
                mode: entry.mode,
            });
        }
    }
    if !any {
        return None;
    }
    let mut items: Vec<TreeItem> = trees
        .into_iter()
        .map(|(path, content)| TreeItem {
            id: crate::util::git_blob_id(content.join("\n").as_bytes()),
            name: path.rsplit('/').next().unwrap_or(&path).to_owned(),
            kind: "tree",
            path,
            mode: "040000",
        })
        .collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    blobs.sort_by(|a, b| a.name.cmp(&b.name));
    items.extend(blobs);
    Some(items)
}

/// `GET /projects/:id/repository/tree`: `ref` (default branch when absent),
/// `path`, `recursive`, offset pagination (`per_page` at most 100). An
/// unknown ref, an empty repository or a path with nothing under it answer
/// `404 Tree Not Found`.
pub(crate) async fn tree(
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
    let name = match params.get("ref").filter(|r| !r.is_empty()) {
        Some(r) => r.to_owned(),
        None => p
            .default_branch
            .clone()
            .ok_or_else(|| ApiError::not_found("Tree"))?,
    };
    let (r, _) = p
        .resolve_ref(&name)
        .ok_or_else(|| ApiError::not_found("Tree"))?;
    let dir = params.get("path").unwrap_or("").trim_matches('/');
    let recursive = params.get("recursive") == Some("true");
    let items = tree_items(&r.files, dir, recursive).ok_or_else(|| ApiError::not_found("Tree"))?;
    let render = |item: &TreeItem| {
        json!({
            "id": item.id,
            "name": item.name,
            "type": item.kind,
            "path": item.path,
            "mode": item.mode,
        })
    };
    if params.get("pagination") == Some("keyset") {
        return Ok(tree_keyset(&sim, uri.path(), &params, &items, render));
    }
    Ok(paginate(&sim, uri.path(), &params, &items, render))
}

/// Keyset pages of a tree: `page_token` names the last entry of the previous page (opaque to
/// clients, which follow the `Link: rel="next"` URL); no `X-*` page headers.
fn tree_keyset(
    sim: &Sim,
    path: &str,
    params: &Params,
    items: &[TreeItem],
    render: impl Fn(&TreeItem) -> Value,
) -> axum::response::Response {
    let per_page = PageReq::from(params).per_page;
    let start = params
        .get("page_token")
        .and_then(|token| items.iter().position(|i| i.path == token))
        .map_or(0, |i| i + 1);
    let end = items.len().min(start + per_page);
    let page = &items[start..end];
    let mut headers = HeaderMap::new();
    if end < items.len()
        && let Some(last) = page.last()
    {
        let url = page_url(
            &sim.url(),
            path,
            params,
            &[
                ("page_token", last.path.clone()),
                ("per_page", per_page.to_string()),
            ],
            &["page"],
        );
        if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            headers.insert("link", v);
        }
    }
    let body: Vec<Value> = page.iter().map(render).collect();
    (headers, axum::Json(body)).into_response()
}

/// `GET /projects/:id/repository/blobs/:sha/raw`: a blob's content by id, from
/// any branch or tag of the project.
pub(crate) async fn blob_raw(
    State(sim): State<Sim>,
    Path((key, sha)): Path<(String, String)>,
) -> ApiResult {
    let st = state(&sim);
    let id = project_id(&st, &key)?;
    let p = st
        .projects
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Project"))?;
    let content = p
        .branches
        .values()
        .chain(p.tags.values())
        .find_map(|r| r.files.values().find(|f| f.blob_id == sha))
        .map(|f| f.content.to_string())
        .ok_or_else(|| ApiError::not_found("Blob"))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok((headers, content).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> std::collections::BTreeMap<String, FileEntry> {
        paths
            .iter()
            .map(|p| {
                (
                    (*p).to_owned(),
                    FileEntry {
                        content: std::sync::Arc::from(*p),
                        blob_id: crate::util::git_blob_id(p.as_bytes()),
                        last_commit_id: String::new(),
                        mode: "100644",
                    },
                )
            })
            .collect()
    }

    fn listing(items: &[TreeItem]) -> Vec<(String, &'static str)> {
        items.iter().map(|i| (i.path.clone(), i.kind)).collect()
    }

    /// Offset and keyset pages of a long tree, over HTTP.
    #[tokio::test]
    async fn tree_pages_offset_and_keyset() {
        let sim = Sim::default();
        let mut spec = crate::ProjectSpec::new("g/p");
        for i in 0..250 {
            spec = spec.file(format!("f{i:03}"), format!("{i}"));
        }
        sim.add_project(spec);
        let url = sim.start().await.unwrap();
        let http = reqwest::Client::new();
        let get = |u: String| {
            let req = http.get(u).header("PRIVATE-TOKEN", sim.token());
            async move { req.send().await.unwrap() }
        };
        let base = format!("{url}/api/v4/projects/g%2Fp/repository/tree?ref=main&per_page=100");
        let first = get(format!("{base}&page=3")).await;
        assert_eq!(first.headers()["x-next-page"], "");
        let last: Vec<Value> = first.json().await.unwrap();
        assert_eq!(last.len(), 50);

        let mut next = Some(format!("{base}&pagination=keyset"));
        let mut names = Vec::new();
        while let Some(u) = next.take() {
            let response = get(u).await;
            assert!(response.headers().get("x-next-page").is_none());
            next = response
                .headers()
                .get("link")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.strip_prefix('<'))
                .and_then(|l| l.split_once('>'))
                .map(|(u, _)| u.to_owned());
            let page: Vec<Value> = response.json().await.unwrap();
            names.extend(
                page.into_iter()
                    .map(|e| e["name"].as_str().unwrap().to_owned()),
            );
        }
        assert_eq!(names.len(), 250);
        assert_eq!(names[249], "f249");
        let missing = get(format!(
            "{url}/api/v4/projects/g%2Fp/repository/tree?ref=nope"
        ))
        .await;
        assert_eq!(missing.status(), 404);
    }

    #[test]
    fn trees_list_one_level_trees_first() {
        let f = files(&[
            "b.txt",
            "docker/Dockerfile",
            "docker/x/y",
            "a/z",
            "Dockerfile",
        ]);
        let root = tree_items(&f, "", false).unwrap();
        assert_eq!(
            listing(&root),
            [
                ("a".to_owned(), "tree"),
                ("docker".to_owned(), "tree"),
                ("Dockerfile".to_owned(), "blob"),
                ("b.txt".to_owned(), "blob"),
            ]
        );
        let docker = tree_items(&f, "docker", false).unwrap();
        assert_eq!(
            listing(&docker),
            [
                ("docker/x".to_owned(), "tree"),
                ("docker/Dockerfile".to_owned(), "blob"),
            ]
        );
        assert!(tree_items(&f, "nope", false).is_none());
        // `docker` is not a prefix of `dockerfiles/...`.
        assert!(tree_items(&files(&["dockerfiles/a"]), "docker", false).is_none());
        let all = tree_items(&f, "", true).unwrap();
        assert_eq!(all.iter().filter(|i| i.kind == "blob").count(), 5);
        assert_eq!(all.iter().filter(|i| i.kind == "tree").count(), 3);
    }
}
