//! `/projects`, `/projects/:id`, `/groups/:id/projects`.

use std::borrow::Cow;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, PageReq, Params, offset_headers, page_url, project_id, state};
use crate::Sim;
use crate::state::{Project, State as SimState};

/// Candidate ids in ascending storage order plus whether to walk them backwards.
struct Selection<'a> {
    ids: Cow<'a, [u64]>,
    reversed: bool,
}

impl Selection<'_> {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn page(&self, offset: usize, limit: usize) -> Vec<u64> {
        let n = self.ids.len();
        (offset..n.min(offset.saturating_add(limit)))
            .map(|i| {
                if self.reversed {
                    self.ids[n - 1 - i]
                } else {
                    self.ids[i]
                }
            })
            .collect()
    }
}

/// Applies filters and ordering. `base` must be ascending ids.
fn select<'a>(
    st: &SimState,
    base: Cow<'a, [u64]>,
    params: &Params,
) -> Result<Selection<'a>, ApiError> {
    let search = params.get("search").map(str::to_lowercase);
    let mut ids = base;
    if let Some(s) = search.filter(|s| !s.is_empty()) {
        ids = Cow::Owned(
            ids.iter()
                .copied()
                .filter(|id| {
                    st.projects.get(id).is_some_and(|p| {
                        p.name.to_lowercase().contains(&s)
                            || p.full_path.to_lowercase().contains(&s)
                    })
                })
                .collect(),
        );
    }
    let desc = match params.get("sort").map(str::to_ascii_lowercase).as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(ApiError::bad_request("sort does not have a valid value")),
    };
    match params.get("order_by").unwrap_or("created_at") {
        "id" | "created_at" => {}
        key @ ("name" | "path" | "last_activity_at" | "updated_at" | "similarity"
        | "star_count") => {
            let mut v = ids.into_owned();
            let sort_key = |id: &u64| -> (String, u64) {
                let p = st.projects.get(id);
                let k = match (key, p) {
                    ("name", Some(p)) => p.name.to_lowercase(),
                    ("path", Some(p)) => p.path.to_lowercase(),
                    ("last_activity_at" | "updated_at", Some(p)) => {
                        format!("{:020}", p.last_activity_at.unix_timestamp_nanos())
                    }
                    _ => String::new(),
                };
                (k, *id)
            };
            v.sort_by_cached_key(sort_key);
            ids = Cow::Owned(v);
        }
        _ => {
            return Err(ApiError::bad_request(
                "order_by does not have a valid value",
            ));
        }
    }
    Ok(Selection {
        ids,
        reversed: desc,
    })
}

fn render(st: &SimState, sim: &Sim, ids: &[u64], simple: bool) -> Vec<Value> {
    let urls = sim.urls();
    ids.iter()
        .filter_map(|id| st.projects.get(id))
        .map(|p: &Project| st.project_json(p, &urls, simple))
        .collect()
}

/// `GET /projects`.
pub(crate) async fn list(State(sim): State<Sim>, uri: Uri, RawQuery(q): RawQuery) -> ApiResult {
    let params = Params::from_raw(q.as_deref());
    let simple = params.flag("simple").unwrap_or(false);
    let st = state(&sim);
    let base: Cow<'_, [u64]> = match params.flag("archived") {
        Some(false) => Cow::Borrowed(&st.active_ids),
        Some(true) => Cow::Owned(
            st.project_ids
                .iter()
                .copied()
                .filter(|id| st.projects.get(id).is_some_and(|p| p.archived))
                .collect(),
        ),
        None => Cow::Borrowed(&st.project_ids),
    };
    if params.get("pagination") == Some("keyset") {
        return keyset(&sim, &st, uri.path(), &params, &base, simple);
    }
    let sel = select(&st, base, &params)?;
    let page = PageReq::from(&params);
    let headers = offset_headers(&sim, uri.path(), &params, page, sel.len());
    let body = render(&st, &sim, &sel.page(page.offset(), page.per_page), simple);
    Ok((headers, axum::Json(body)).into_response())
}

/// Keyset pagination over `order_by=id`.
fn keyset(
    sim: &Sim,
    st: &SimState,
    path: &str,
    params: &Params,
    ids: &[u64],
    simple: bool,
) -> ApiResult {
    if params.get("order_by").unwrap_or("created_at") != "id" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Keyset pagination is not yet available for this type of request"}),
        ));
    }
    let per_page = PageReq::from(params).per_page;
    let desc = match params.get("sort").unwrap_or("desc") {
        "asc" => false,
        "desc" => true,
        _ => return Err(ApiError::bad_request("sort does not have a valid value")),
    };
    let (page, more): (Vec<u64>, bool) = if desc {
        let end = params
            .get("id_before")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(ids.len(), |b| ids.partition_point(|&x| x < b));
        let start = end.saturating_sub(per_page);
        (ids[start..end].iter().rev().copied().collect(), start > 0)
    } else {
        let start = params
            .get("id_after")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |a| ids.partition_point(|&x| x <= a));
        let end = ids.len().min(start.saturating_add(per_page));
        (ids[start..end].to_vec(), end < ids.len())
    };
    let mut headers = HeaderMap::new();
    if more && let Some(last) = page.last() {
        let (key, other) = if desc {
            ("id_before", "id_after")
        } else {
            ("id_after", "id_before")
        };
        let url = page_url(
            &sim.url(),
            path,
            params,
            &[(key, last.to_string()), ("per_page", per_page.to_string())],
            &[other, "page"],
        );
        if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            headers.insert("link", v);
        }
    }
    let body = render(st, sim, &page, simple);
    Ok((headers, axum::Json(body)).into_response())
}

/// `GET /groups/:id/projects`.
pub(crate) async fn group_projects(
    State(sim): State<Sim>,
    Path(group): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = Params::from_raw(q.as_deref());
    let simple = params.flag("simple").unwrap_or(false);
    let st = state(&sim);
    let gid = st
        .find_group(&group)
        .ok_or_else(|| ApiError::not_found("Group"))?;
    let mut ids = st.group_project_ids(gid, params.flag("include_subgroups").unwrap_or(false));
    if let Some(archived) = params.flag("archived") {
        ids.retain(|id| st.projects.get(id).is_some_and(|p| p.archived == archived));
    }
    let sel = select(&st, Cow::Owned(ids), &params)?;
    let page = PageReq::from(&params);
    let headers = offset_headers(&sim, uri.path(), &params, page, sel.len());
    let body = render(&st, &sim, &sel.page(page.offset(), page.per_page), simple);
    Ok((headers, axum::Json(body)).into_response())
}

/// `GET /projects/:id`.
pub(crate) async fn get_one(State(sim): State<Sim>, Path(key): Path<String>) -> ApiResult {
    let st = state(&sim);
    let id = project_id(&st, &key)?;
    let p = st
        .projects
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Project"))?;
    Ok(axum::Json(st.project_json(p, &sim.urls(), false)).into_response())
}
