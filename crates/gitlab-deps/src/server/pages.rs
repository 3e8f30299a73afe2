//! The HTML pages: the status page (`/`) and one page per project (`/projects/{path}`). Server
//! rendered from the live view; `live.js` swaps the `#live` part when the engine changes.
//! Every asset is embedded: nothing is fetched from anywhere but this server.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::api::{self, ApiError, GraphQuery, gitlab_reachable};
use super::graph_view::{self, esc, project_href};
use super::live::{Chain, LiveView};

/// The page style.
pub(crate) const STYLE: &str = include_str!("assets/style.css");
/// Live updates (server-sent events, polling fallback) and the graph filter.
pub(crate) const SCRIPT: &str = include_str!("assets/live.js");

/// `GET /assets/style.css`.
pub(crate) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// `GET /assets/live.js`.
pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// A timestamp for people.
pub(crate) fn clock(at_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

fn duration(ms: i64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{}.{}s", s, (ms % 1000) / 100)
    } else if s < 7200 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

fn head(title: &str, generation: u64, query: &GraphQuery) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><link rel=stylesheet href=/assets/style.css></head>\
         <body data-generation={generation}><header><h1><a href=/>gitlab-deps</a></h1>\
         <form method=get action=/><input name=around placeholder=\"project path\" value=\"{around}\" aria-label=\"show a project's neighbourhood\">\
         <input name=depth type=number min=1 max=10 value={depth} aria-label=depth style=\"width:3.5em\"><button>show</button></form>\
         <input id=filter placeholder=\"highlight in graph\" aria-label=\"highlight projects in the graph\">\
         <nav><a href=/api/status>JSON</a> · <a href=/api/openapi.json>API</a> · <a href=/metrics>metrics</a></nav>\
         <span id=live-state class=live>connecting…</span></header><main>",
        title = esc(title),
        around = esc(query.around.as_deref().unwrap_or("")),
        depth = query.depth.unwrap_or(graph_view::DEFAULT_DEPTH),
    )
}

/// Rows of a chain listed on the status page.
const CHAIN_ROWS: usize = 200;

const FOOT: &str = "</main><script src=/assets/live.js></script></body></html>";

fn state_cell(state: &str) -> String {
    format!("<span class=\"state {state}\">{state}</span>")
}

fn project_link(path: &str) -> String {
    format!(
        "<a href=\"{}\"><code>{}</code></a>",
        esc(&project_href(path)),
        esc(path)
    )
}

fn health(out: &mut String, view: &LiveView, now: i64) {
    let h = &view.health;
    out.push_str("<section class=health><h2>Health</h2><ul>");
    match &h.role {
        Some(r) if r.role == "leader" => out.push_str("<li>this replica: leader</li>"),
        Some(r) => {
            let _ = write!(
                out,
                "<li>this replica: standby (leader: {})</li>",
                r.leader.as_ref().map_or_else(
                    || "none".to_owned(),
                    |l| format!("<code>{}</code>", esc(&l.holder))
                )
            );
        }
        None => {}
    }
    match h.last_scan_ms {
        Some(at) => {
            let _ = write!(out, "<li>last scan {}", clock(at));
        }
        None => out.push_str("<li class=bad>never scanned: run <code>gitlab-deps scan</code>"),
    }
    let _ = write!(
        out,
        ": {} projects, {} dependencies</li>",
        view.graph.len(),
        view.graph.edge_count()
    );
    if h.warning_count > 0 {
        let _ = write!(
            out,
            "<li class=bad>{} scan warnings<details><summary>show{}</summary><ul>",
            h.warning_count,
            if h.warning_count > h.warnings.len() {
                format!(" the first {}", h.warnings.len())
            } else {
                String::new()
            }
        );
        for w in &h.warnings {
            let _ = write!(out, "<li><code>{}</code></li>", esc(w));
        }
        out.push_str("</ul></details></li>");
    }
    for cycle in &h.cycles {
        let _ = write!(
            out,
            "<li class=bad>dependency cycle (ignored for rebuilds): {} → back</li>",
            cycle
                .iter()
                .map(|p| project_link(p))
                .collect::<Vec<_>>()
                .join(" → ")
        );
    }
    if h.hooks_missing > 0 {
        let _ = write!(
            out,
            "<li class=bad>{} projects or groups have no webhook: the last hook sync could not \
             install it (see its log; run <code>gitlab-deps hooks sync</code>)</li>",
            h.hooks_missing
        );
    }
    if h.hooks_disabled > 0 {
        let _ = write!(
            out,
            "<li class=bad>{} webhooks disabled by GitLab (run <code>gitlab-deps hooks</code>)</li>",
            h.hooks_disabled
        );
    }
    let g = &h.gitlab;
    if gitlab_reachable(g, now) {
        match g.last_answer_ms {
            Some(at) => {
                let _ = write!(out, "<li>GitLab last answered {}</li>", clock(at));
            }
            None => out.push_str("<li>GitLab not asked anything yet</li>"),
        }
    } else {
        let _ = write!(
            out,
            "<li class=bad>GitLab unreachable since {}</li>",
            clock(g.last_unreachable_ms.unwrap_or_default())
        );
    }
    if let Some(until) = g.rate_limited_until_ms.filter(|&u| u > now) {
        let _ = write!(
            out,
            "<li class=bad>rate limited by GitLab until {}</li>",
            clock(until)
        );
    }
    out.push_str("</ul></section>");
}

fn chain_table(out: &mut String, chain: &Chain, now_running: bool) {
    let _ = write!(
        out,
        "<article class=chain data-chain=\"{id}\" data-outcome={outcome}><h3>chain <a href=\"/?chain={id}\">{id}</a>: change at {root}, {cell}, {dur}{since}</h3>",
        id = esc(&chain.id),
        root = project_link(&chain.root),
        outcome = chain.outcome,
        cell = state_cell(chain.outcome),
        dur = duration(chain.duration_ms),
        since = if now_running {
            format!(" since {}", clock(chain.started_ms))
        } else {
            String::new()
        },
    );
    out.push_str("<table><tr><th>project</th><th>state</th><th>detail</th></tr>");
    // A chain can reach thousands of projects: the page lists what needs attention first, up to
    // CHAIN_ROWS, in chain order; the API has them all.
    let rank = |state: &str| match state {
        "failed" => 0,
        "running" => 1,
        "blocked" => 2,
        "queued" => 3,
        "waiting" => 4,
        _ => 5,
    };
    let mut shown: Vec<usize> = (0..chain.projects.len()).collect();
    shown.sort_by_key(|&i| (rank(chain.projects[i].state), i));
    shown.truncate(CHAIN_ROWS);
    shown.sort_unstable();
    for p in shown.iter().map(|&i| &chain.projects[i]) {
        let detail = match &p.pipeline_url {
            Some(u) => format!("<a href=\"{}\">{}</a>", esc(u), esc(&p.detail)),
            None => esc(&p.detail),
        };
        let _ = write!(
            out,
            "<tr data-project=\"{}\" data-state={}><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.project),
            p.state,
            project_link(&p.project),
            state_cell(p.state),
            detail
        );
    }
    out.push_str("</table>");
    if chain.projects.len() > shown.len() {
        let _ = write!(
            out,
            "<p class=muted>{} more projects in this chain: <a href=\"/api/cascades/{}\">all of them</a></p>",
            chain.projects.len() - shown.len(),
            esc(&chain.id)
        );
    }
    out.push_str("</article>");
}

fn graph_section(out: &mut String, view: &LiveView, query: &GraphQuery) {
    out.push_str("<section><h2>Graph</h2>");
    let layout = match api::graph_layout(view, query) {
        Ok(layout) => layout,
        Err(ApiError::UnknownProject { path, suggestions }) => {
            let _ = write!(out, "<p class=bad>No project <code>{}</code>.", esc(&path));
            if !suggestions.is_empty() {
                out.push_str(" Did you mean ");
                let links: Vec<String> = suggestions
                    .iter()
                    .map(|s| {
                        format!(
                            "<a href=\"/?around={}\"><code>{}</code></a>",
                            esc(&url_query(s)),
                            esc(s)
                        )
                    })
                    .collect();
                out.push_str(&links.join(", "));
                out.push('?');
            }
            out.push_str("</p></section>");
            return;
        }
        Err(e) => {
            let _ = write!(out, "<p>{}</p></section>", esc(&e.to_string()));
            return;
        }
    };
    let what = match query.selection(view) {
        graph_view::Selection::Whole => "every project".to_owned(),
        graph_view::Selection::Around { path, depth } => {
            format!("within {depth} edges of <code>{}</code>", esc(&path))
        }
        graph_view::Selection::Chain(id) => format!("chain {}", esc(&id)),
        graph_view::Selection::Active => {
            "the projects being rebuilt and their neighbours (search a project to see its neighbourhood)"
                .to_owned()
        }
    };
    let _ = write!(
        out,
        "<p class=legend>Showing {} of {} projects: {what}{}. \
         <span class=\"running\">■ running</span><span class=\"waiting\">■ waiting/queued</span>\
         <span class=\"failed\">■ failed</span><span class=\"blocked\">■ blocked</span><span class=\"idle\">■ idle</span>\
         <span class=failed>- - in a cycle</span></p>",
        layout.nodes.len(),
        layout.total_projects,
        if layout.truncated {
            format!(" (cut at {})", graph_view::MAX_NODES)
        } else {
            String::new()
        }
    );
    if layout.nodes.is_empty() {
        out.push_str("<p class=muted>Nothing to draw.</p></section>");
        return;
    }
    out.push_str("<div class=graphbox>");
    out.push_str(&graph_view::svg(&layout, view, query.around.as_deref()));
    out.push_str("</div></section>");
}

fn url_query(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `GET /`: health, chains in progress and recent ones, the graph, and the activity log.
pub(crate) async fn status(
    State(state): State<AppState>,
    Query(query): Query<GraphQuery>,
) -> Html<String> {
    let view = state.live.current().await;
    let now = state.engine.now_ms();
    let activity = super::status::activity(&state, 30).await;
    let mut out = head("gitlab-deps", view.generation, &query);
    out.push_str("<div id=live>");
    health(&mut out, &view, now);
    out.push_str("<section id=chains><h2>Chains in progress</h2>");
    if view.chains.is_empty() {
        out.push_str("<p class=muted>Nothing to rebuild: every project is up to date.</p>");
    }
    for chain in &view.chains {
        chain_table(&mut out, chain, true);
    }
    out.push_str("</section>");
    graph_section(&mut out, &view, &query);
    out.push_str("<section id=recent><h2>Recent chains</h2>");
    if view.history.is_empty() {
        out.push_str("<p class=muted>None finished since the service started.</p>");
    } else {
        out.push_str("<table><tr><th>chain</th><th>root</th><th>outcome</th><th>finished</th><th>duration</th><th>projects</th></tr>");
        for c in &view.history {
            let _ = write!(
                out,
                "<tr data-chain=\"{id}\"><td><a href=\"/?chain={id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                project_link(&c.root),
                state_cell(c.outcome),
                c.finished_ms.map(clock).unwrap_or_default(),
                duration(c.duration_ms),
                c.projects.len(),
                id = esc(&c.id),
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section><section><h2>Activity</h2><table>");
    for (at, line) in &activity {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td></tr>",
            clock(*at),
            esc(line)
        );
    }
    out.push_str("</table></section></div>");
    out.push_str(FOOT);
    Html(out)
}

/// `GET /projects/{path}`: state and reason, upstreams and downstreams with the line each edge
/// comes from, the pipelines the engine saw, and the neighbourhood drawn.
pub(crate) async fn project(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    let path = path.trim_matches('/').to_owned();
    let query = GraphQuery {
        around: Some(path.clone()),
        depth: Some(1),
        chain: None,
    };
    let p = match api::project_json(&state, &path).await {
        Ok(p) => p,
        Err(e) => {
            let view = state.live.current().await;
            let mut out = head("unknown project", view.generation, &query);
            out.push_str("<div id=live>");
            graph_section(&mut out, &view, &query);
            let _ = write!(out, "<p>{}</p></div>", esc(&e.to_string()));
            out.push_str(FOOT);
            return (StatusCode::NOT_FOUND, Html(out)).into_response();
        }
    };
    let view = state.live.current().await;
    let mut out = head(&p.project, view.generation, &query);
    let _ = write!(
        out,
        "<div id=live><h2><code>{}</code> {}</h2><p>{}{}</p>",
        esc(&p.project),
        state_cell(p.state),
        match &p.pipeline_url {
            Some(u) => format!("<a href=\"{}\">{}</a>", esc(u), esc(&p.detail)),
            None => esc(&p.detail),
        },
        p.web_url
            .as_ref()
            .map(|u| format!(" · <a href=\"{}\">on GitLab</a>", esc(u)))
            .unwrap_or_default(),
    );
    for (title, list) in [
        ("Built from (upstreams)", &p.upstreams),
        ("Built on it (downstreams)", &p.downstreams),
    ] {
        let _ = write!(out, "<section><h2>{title}</h2>");
        if list.is_empty() {
            out.push_str("<p class=muted>none</p></section>");
            continue;
        }
        out.push_str("<table><tr><th>project</th><th>state</th><th>from</th></tr>");
        for n in list {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code>{}</td></tr>",
                project_link(&n.project),
                state_cell(n.state),
                esc(n.via.as_deref().unwrap_or("")),
                if n.in_cycle {
                    " (in a cycle: ignored)"
                } else {
                    ""
                }
            );
        }
        out.push_str("</table></section>");
    }
    out.push_str("<section><h2>Recent pipelines</h2>");
    if p.pipelines.is_empty() {
        out.push_str("<p class=muted>none seen since its state was last reset</p>");
    } else {
        out.push_str("<table><tr><th>pipeline</th><th>status</th></tr>");
        for pl in &p.pipelines {
            let id = match &pl.url {
                Some(u) => format!("<a href=\"{}\">#{}</a>", esc(u), pl.id),
                None => format!("#{}", pl.id),
            };
            let _ = write!(
                out,
                "<tr><td>{id}</td><td>{}</td></tr>",
                state_cell(&pl.status)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
    graph_section(&mut out, &view, &query);
    out.push_str("</div>");
    out.push_str(FOOT);
    Html(out).into_response()
}
