//! The drawn graph: which projects to show (all of a small instance, a project's neighbourhood,
//! a chain, or what is active), a layered top-down layout, and its SVG.
//!
//! Our own small Sugiyama-style layout rather than a layout crate: the graph already has
//! topological ranks over its acyclic edges, so the layers come for free, and a few barycenter
//! sweeps give a readable order. It costs O(shown nodes + their edges), never O(projects).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use serde::Serialize;

use super::live::LiveView;
use crate::graph::DepGraph;

/// Most projects drawn at once; a larger selection is cut (nearest first) and says so.
pub(crate) const MAX_NODES: usize = 400;
/// Instances up to this size are drawn whole by default.
pub(crate) const WHOLE_GRAPH: usize = 150;
/// Default neighbourhood depth.
pub(crate) const DEFAULT_DEPTH: usize = 2;
/// Largest accepted depth.
pub(crate) const MAX_DEPTH: usize = 10;

const NODE_H: i64 = 28;
const LAYER_GAP: i64 = 64;
const NODE_GAP: i64 = 16;
const CHAR_W: i64 = 7;
const LABEL_MAX: usize = 40;

/// What to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    /// Every project (refused above [`MAX_NODES`]).
    Whole,
    /// A project and everything within `depth` edges of it, up and down.
    Around { path: String, depth: usize },
    /// The projects of one chain and its root.
    Chain(String),
    /// The active projects and their direct neighbours.
    Active,
}

/// A drawn project.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct Node {
    /// Project path.
    pub path: String,
    /// `idle`, `running`, `failed`, `blocked`, `waiting` or `queued`.
    pub state: &'static str,
    /// Layer, 0 at the top.
    pub layer: usize,
    /// Centre, in SVG units.
    pub x: i64,
    /// Top, in SVG units.
    pub y: i64,
    /// Box width.
    pub width: i64,
}

/// A drawn edge, upstream to downstream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct DrawnEdge {
    /// The project built from.
    pub upstream: String,
    /// The project built on it.
    pub downstream: String,
    /// Inside a cycle (ignored for rebuilds; drawn dashed).
    pub in_cycle: bool,
    /// Where the edge comes from (`file:line` in the downstream project).
    pub via: Option<String>,
}

/// A laid-out selection.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Layout {
    /// Projects in the instance.
    pub total_projects: usize,
    /// The selection was cut at [`MAX_NODES`].
    pub truncated: bool,
    /// Drawn projects.
    pub nodes: Vec<Node>,
    /// Edges between drawn projects.
    pub edges: Vec<DrawnEdge>,
    /// Drawing size.
    pub width: i64,
    /// Drawing size.
    pub height: i64,
}

/// The projects of a selection, at most [`MAX_NODES`] (nearest first), and whether it was cut.
/// `None` when `Around` names an unknown project.
pub(crate) fn select(view: &LiveView, selection: &Selection) -> Option<(Vec<String>, bool)> {
    let graph = &view.graph;
    let seeds: Vec<String> = match selection {
        Selection::Whole => {
            let all = graph.projects();
            let cut = all.len() > MAX_NODES;
            return Some((
                all.into_iter().take(MAX_NODES).map(str::to_owned).collect(),
                cut,
            ));
        }
        Selection::Around { path, depth } => {
            if !graph.contains(path) {
                return None;
            }
            return Some(neighbourhood(graph, std::slice::from_ref(path), *depth));
        }
        Selection::Chain(id) => match view.chain(id) {
            Some(chain) => std::iter::once(chain.root.clone())
                .chain(chain.projects.iter().map(|p| p.project.clone()))
                .collect(),
            None => Vec::new(),
        },
        Selection::Active => view.projects.iter().map(|p| p.project.clone()).collect(),
    };
    let depth = usize::from(matches!(selection, Selection::Active));
    Some(neighbourhood(graph, &seeds, depth))
}

/// Breadth-first over all edges, both directions, from `seeds` to `depth`, stopping at
/// [`MAX_NODES`].
fn neighbourhood(graph: &DepGraph, seeds: &[String], depth: usize) -> (Vec<String>, bool) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut order = Vec::new();
    let mut queue: VecDeque<(String, usize)> = VecDeque::new();
    for s in seeds {
        if graph.contains(s) && seen.insert(s.clone()) {
            order.push(s.clone());
            queue.push_back((s.clone(), 0));
        }
    }
    let mut cut = order.len() > MAX_NODES;
    order.truncate(MAX_NODES);
    while let Some((p, d)) = queue.pop_front() {
        if d >= depth || cut {
            continue;
        }
        for next in graph.upstreams(&p).into_iter().chain(graph.downstreams(&p)) {
            if seen.contains(next) {
                continue;
            }
            if order.len() >= MAX_NODES {
                cut = true;
                break;
            }
            seen.insert(next.to_owned());
            order.push(next.to_owned());
            queue.push_back((next.to_owned(), d + 1));
        }
    }
    (order, cut)
}

/// Lays out `projects`: layers by longest path over the acyclic edges among them (upstreams
/// above), order within a layer by barycenter sweeps.
pub(crate) fn layout(view: &LiveView, projects: &[String], truncated: bool) -> Layout {
    let graph = &view.graph;
    let mut ids: Vec<&str> = projects.iter().map(String::as_str).collect();
    ids.sort_by_key(|p| (graph.topo_rank(p).unwrap_or(0), *p));
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let n = ids.len();
    // Acyclic upstreams and downstreams inside the selection.
    let mut ups: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut downs: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut edges = Vec::new();
    for (i, p) in ids.iter().enumerate() {
        for u in graph.upstreams(p) {
            let Some(&j) = index.get(u) else { continue };
            let in_cycle = graph.edge_in_cycle(u, p);
            if !in_cycle {
                ups[i].push(j);
                downs[j].push(i);
            }
            edges.push(DrawnEdge {
                upstream: u.to_owned(),
                downstream: (*p).to_owned(),
                in_cycle,
                via: view.vias.get(&(u.to_owned(), (*p).to_owned())).cloned(),
            });
        }
    }
    // Rank order puts acyclic upstreams first, so one pass gives longest-path layers.
    let mut layer = vec![0usize; n];
    for (i, up) in ups.iter().enumerate() {
        layer[i] = up.iter().map(|&j| layer[j] + 1).max().unwrap_or(0);
    }
    let layers = layer.iter().copied().max().map_or(0, |m| m + 1);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (i, &l) in layer.iter().enumerate() {
        rows[l].push(i);
    }
    let mut pos = vec![0f64; n];
    for row in &rows {
        for (k, &i) in row.iter().enumerate() {
            pos[i] = k as f64;
        }
    }
    for sweep in 0..4 {
        let (range, neighbours): (Vec<usize>, &Vec<Vec<usize>>) = if sweep % 2 == 0 {
            ((1..layers).collect(), &ups)
        } else {
            ((0..layers.saturating_sub(1)).rev().collect(), &downs)
        };
        for l in range {
            let mut keyed: Vec<(f64, usize)> = rows[l]
                .iter()
                .map(|&i| {
                    let ns = &neighbours[i];
                    let b = if ns.is_empty() {
                        pos[i]
                    } else {
                        ns.iter().map(|&j| pos[j]).sum::<f64>() / ns.len() as f64
                    };
                    (b, i)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            rows[l] = keyed.into_iter().map(|(_, i)| i).collect();
            for (k, &i) in rows[l].iter().enumerate() {
                pos[i] = k as f64;
            }
        }
    }
    let width_of = |p: &str| (label(p).chars().count() as i64) * CHAR_W + 20;
    let row_widths: Vec<i64> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|&i| width_of(ids[i]) + NODE_GAP)
                .sum::<i64>()
                - NODE_GAP
        })
        .collect();
    let width = row_widths.iter().copied().max().unwrap_or(0).max(0) + 2 * NODE_GAP;
    let mut nodes = Vec::with_capacity(n);
    for (l, row) in rows.iter().enumerate() {
        let mut x = (width - row_widths[l]) / 2;
        for &i in row {
            let w = width_of(ids[i]);
            nodes.push(Node {
                path: ids[i].to_owned(),
                state: view.state_of(ids[i]),
                layer: l,
                x: x + w / 2,
                y: NODE_GAP + l as i64 * (NODE_H + LAYER_GAP),
                width: w,
            });
            x += w + NODE_GAP;
        }
    }
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    edges.sort_by(|a, b| (&a.upstream, &a.downstream).cmp(&(&b.upstream, &b.downstream)));
    Layout {
        total_projects: graph.len(),
        truncated,
        nodes,
        edges,
        width,
        height: NODE_GAP * 2 + (layers as i64 * (NODE_H + LAYER_GAP) - LAYER_GAP).max(0),
    }
}

/// A long path shortened from the left, keeping its end (the project's name).
fn label(path: &str) -> String {
    let count = path.chars().count();
    if count <= LABEL_MAX {
        return path.to_owned();
    }
    let tail: String = path.chars().skip(count - (LABEL_MAX - 1)).collect();
    format!("…{tail}")
}

/// Escapes text for HTML and SVG.
pub(crate) fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// URL of a project's page.
pub(crate) fn project_href(path: &str) -> String {
    let encoded: Vec<String> = path
        .split('/')
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect();
    format!("/projects/{}", encoded.join("/"))
}

/// The SVG: one link per project (to its page), coloured by state; in-cycle edges dashed.
pub(crate) fn svg(layout: &Layout, view: &LiveView, highlight: Option<&str>) -> String {
    let mut out = String::with_capacity(256 + layout.nodes.len() * 400);
    let _ = write!(
        out,
        "<svg class=graph width={w} height={h} viewBox=\"0 0 {w} {h}\" role=img aria-label=\"dependency graph\">\
         <defs><marker id=arrow viewBox=\"0 0 10 10\" refX=10 refY=5 markerWidth=7 markerHeight=7 orient=auto-start-reverse>\
         <path d=\"M0,0L10,5L0,10z\"/></marker></defs>",
        w = layout.width,
        h = layout.height
    );
    let at: HashMap<&str, &Node> = layout.nodes.iter().map(|n| (n.path.as_str(), n)).collect();
    for e in &layout.edges {
        let (Some(u), Some(d)) = (at.get(e.upstream.as_str()), at.get(e.downstream.as_str()))
        else {
            continue;
        };
        let (x1, y1, x2, y2) = if d.y > u.y {
            (u.x, u.y + NODE_H, d.x, d.y)
        } else {
            // Back or flat edge (in a cycle): from the side, curving out.
            (u.x, u.y, d.x, d.y + NODE_H)
        };
        let mid = (y1 + y2) / 2;
        let _ = write!(
            out,
            "<path class=\"edge{}\" data-from=\"{}\" data-to=\"{}\" d=\"M{x1},{y1}C{x1},{mid} {x2},{mid} {x2},{y2}\" marker-end=\"url(#arrow)\"><title>{} → {}{}</title></path>",
            if e.in_cycle { " cycle" } else { "" },
            esc(&e.upstream),
            esc(&e.downstream),
            esc(&e.upstream),
            esc(&e.downstream),
            e.via
                .as_deref()
                .map(|v| format!(" ({})", esc(v)))
                .unwrap_or_default(),
        );
    }
    for n in &layout.nodes {
        let detail = view
            .project(&n.path)
            .map_or_else(|| "idle".to_owned(), |v| v.detail.clone());
        let mark = if highlight == Some(n.path.as_str()) {
            " focus"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<a href=\"{href}\"><g class=\"node {state}{mark}\" data-path=\"{path}\" data-state=\"{state}\">\
             <title>{path}: {detail}</title>\
             <rect x={x} y={y} width={w} height={NODE_H} rx=5 />\
             <text x={cx} y={ty} text-anchor=middle>{label}</text></g></a>",
            href = esc(&project_href(&n.path)),
            state = n.state,
            path = esc(&n.path),
            detail = esc(&detail),
            x = n.x - n.width / 2,
            y = n.y,
            w = n.width,
            cx = n.x,
            ty = n.y + NODE_H / 2 + 4,
            label = esc(&label(&n.path)),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn view(edges: &[(&str, &str)]) -> LiveView {
        let mut view = LiveView::empty();
        view.graph = Arc::new(DepGraph::from_parts(
            Vec::new(),
            edges
                .iter()
                .map(|(u, d)| ((*u).to_owned(), (*d).to_owned())),
        ));
        view
    }

    #[test]
    fn layers_follow_the_acyclic_edges_and_cycle_edges_are_marked() {
        let view = view(&[
            ("a", "b"),
            ("a", "c"),
            ("b", "d"),
            ("c", "d"),
            ("x", "y"),
            ("y", "x"),
        ]);
        let (projects, cut) = select(&view, &Selection::Whole).unwrap();
        assert!(!cut);
        let layout = layout(&view, &projects, cut);
        let layer = |p: &str| layout.nodes.iter().find(|n| n.path == p).unwrap().layer;
        assert_eq!(
            ["a", "b", "c", "d", "x", "y"].map(layer),
            [0, 1, 1, 2, 0, 0]
        );
        let cyclic: Vec<(&str, &str)> = layout
            .edges
            .iter()
            .filter(|e| e.in_cycle)
            .map(|e| (e.upstream.as_str(), e.downstream.as_str()))
            .collect();
        assert_eq!(cyclic, vec![("x", "y"), ("y", "x")]);
        // No two boxes of a layer overlap.
        for a in &layout.nodes {
            for b in &layout.nodes {
                if a.path != b.path && a.layer == b.layer {
                    assert!(
                        (a.x - b.x).abs() >= (a.width + b.width) / 2,
                        "{} and {} overlap",
                        a.path,
                        b.path
                    );
                }
            }
        }
        let svg = svg(&layout, &view, None);
        assert_eq!(svg.matches("class=\"edge cycle\"").count(), 2);
        assert_eq!(svg.matches("data-state=\"idle\"").count(), 6);
    }

    #[test]
    fn a_neighbourhood_is_cut_at_the_limit_and_unknown_paths_are_none() {
        let leaves: Vec<String> = (0..1000).map(|i| format!("leaf/{i:04}")).collect();
        let edges: Vec<(&str, &str)> = leaves.iter().map(|l| ("hub", l.as_str())).collect();
        let view = view(&edges);
        let around = |path: &str, depth| Selection::Around {
            path: path.to_owned(),
            depth,
        };
        let (projects, cut) = select(&view, &around("hub", 1)).unwrap();
        assert!(cut);
        assert_eq!(projects.len(), MAX_NODES);
        assert_eq!(projects[0], "hub");
        let (projects, cut) = select(&view, &around("leaf/0003", 1)).unwrap();
        assert!(!cut);
        assert_eq!(projects, vec!["leaf/0003", "hub"]);
        assert!(select(&view, &around("nope", 1)).is_none());
    }

    #[test]
    fn long_labels_keep_their_end() {
        let long = format!("group/{}/app", "sub/".repeat(20));
        let l = label(&long);
        assert_eq!(l.chars().count(), LABEL_MAX);
        assert!(l.ends_with("/app") && l.starts_with('…'));
        assert_eq!(project_href("a b/c"), "/projects/a%20b/c");
    }
}
