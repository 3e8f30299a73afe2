use super::*;

fn g(edges: &[(&str, &str)]) -> DepGraph {
    DepGraph::from_parts(
        Vec::new(),
        edges.iter().map(|(u, d)| (u.to_string(), d.to_string())),
    )
}

fn diamond() -> DepGraph {
    g(&[
        ("img/base", "img/ruby"),
        ("img/base", "img/tools"),
        ("img/ruby", "apps/app"),
        ("img/tools", "apps/app"),
    ])
}

#[test]
fn empty_graph() {
    let d = DepGraph::new();
    assert!(d.is_empty());
    assert_eq!(d.len(), 0);
    assert!(d.plan(&["x"]).is_empty());
    assert!(d.cycles().is_empty());
    assert!(d.suggest("x").is_empty());
    assert_eq!(d.topo_rank("x"), None);
}

#[test]
fn from_parts_adds_endpoints_ignores_self_and_duplicate_edges() {
    let d = DepGraph::from_parts(
        vec!["z/lonely".to_string(), "a/x".to_string()],
        vec![
            ("a/x".to_string(), "b/y".to_string()),
            ("a/x".to_string(), "b/y".to_string()),
            ("c/self".to_string(), "c/self".to_string()),
        ],
    );
    assert_eq!(d.projects(), vec!["a/x", "b/y", "c/self", "z/lonely"]);
    assert_eq!(d.edge_count(), 1);
    assert_eq!(d.edges(), vec![("a/x", "b/y")]);
    assert!(d.contains("c/self"));
    assert!(d.downstreams("c/self").is_empty());
}

#[test]
fn neighbours_and_closures_sorted() {
    let d = diamond();
    assert_eq!(d.downstreams("img/base"), vec!["img/ruby", "img/tools"]);
    assert_eq!(d.upstreams("apps/app"), vec!["img/ruby", "img/tools"]);
    assert_eq!(
        d.ancestors("apps/app"),
        vec!["img/base", "img/ruby", "img/tools"]
    );
    assert_eq!(
        d.descendants("img/base"),
        vec!["apps/app", "img/ruby", "img/tools"]
    );
    assert!(d.descendants("nope").is_empty());
    assert_eq!(d.topo_rank("img/base"), Some(0));
    assert_eq!(d.topo_rank("img/ruby"), Some(1));
    assert_eq!(d.topo_rank("apps/app"), Some(2));
}

#[test]
fn plan_diamond_and_chain() {
    let d = diamond();
    assert_eq!(
        d.plan(&["img/base"]),
        vec![vec!["img/ruby", "img/tools"], vec!["apps/app"]]
    );
    assert_eq!(d.plan(&["img/ruby"]), vec![vec!["apps/app"]]);
    // A root downstream of another root is rebuilt, in its place.
    assert_eq!(
        d.plan(&["img/ruby", "img/base"]),
        vec![vec!["img/ruby", "img/tools"], vec!["apps/app"]]
    );
    assert!(d.plan(&["apps/app"]).is_empty());
    assert!(d.plan(&["unknown"]).is_empty());
    let c = g(&[("a", "b"), ("b", "c"), ("c", "d")]);
    assert_eq!(c.plan(&["a"]), vec![vec!["b"], vec!["c"], vec!["d"]]);
}

#[test]
fn plan_waits_for_the_longest_affected_path_only() {
    // x -> d, a -> b -> d: for root a, d waits for b only (x is not affected).
    let d = g(&[("x", "d"), ("a", "b"), ("b", "d"), ("a", "d")]);
    assert_eq!(d.plan(&["a"]), vec![vec!["b"], vec!["d"]]);
    assert_eq!(d.plan(&["x"]), vec![vec!["d"]]);
    assert_eq!(d.plan(&["x", "a"]), vec![vec!["b"], vec!["d"]]);
}

#[test]
fn cycles_are_reported_and_ignored_for_orchestration() {
    let d = g(&[
        ("g/a", "g/b"),
        ("g/b", "g/a"),
        ("g/b", "g/c"),
        ("x/1", "x/2"),
        ("x/2", "x/3"),
        ("x/3", "x/1"),
        ("x/3", "z"),
    ]);
    assert_eq!(
        d.cycles(),
        vec![vec!["g/a", "g/b"], vec!["x/1", "x/2", "x/3"]]
    );
    assert!(d.edge_in_cycle("g/a", "g/b"));
    assert!(d.edge_in_cycle("g/b", "g/a"));
    assert!(!d.edge_in_cycle("g/b", "g/c"));
    assert!(!d.edge_in_cycle("g/a", "g/a"));
    assert!(d.acyclic_upstreams("g/a").is_empty());
    assert_eq!(d.acyclic_downstreams("g/b"), vec!["g/c"]);
    assert_eq!(d.acyclic_descendants("g/a"), Vec::<&str>::new());
    assert_eq!(d.acyclic_descendants("g/b"), vec!["g/c"]);
    assert_eq!(d.acyclic_ancestors("g/c"), vec!["g/b"]);
    assert_eq!(d.plan(&["g/a"]), Vec::<Vec<String>>::new());
    assert_eq!(d.plan(&["g/b"]), vec![vec!["g/c"]]);
    // All-edge queries still see the cycle, but never list the project itself.
    assert_eq!(d.descendants("g/a"), vec!["g/b", "g/c"]);
    assert_eq!(d.ancestors("g/a"), vec!["g/b"]);
    assert_eq!(d.topo_rank("g/c"), Some(1));
    assert_eq!(d.topo_rank("z"), Some(1));
}

#[test]
fn cycle_order_follows_edges_from_the_smallest_member() {
    // c -> a -> b -> c written so that name order differs from cycle order: a, b, c.
    let d = g(&[("c", "a"), ("a", "b"), ("b", "c")]);
    assert_eq!(d.cycles(), vec![vec!["a", "b", "c"]]);
    let d = g(&[("a", "c"), ("c", "b"), ("b", "a")]);
    assert_eq!(d.cycles(), vec![vec!["a", "c", "b"]]);
}

#[test]
fn suggest_prefers_same_last_segment_then_suffix_then_edit_distance() {
    let d = DepGraph::from_parts(
        [
            "apps/web",
            "apps/webapp",
            "tools/web",
            "images/base",
            "images/ruby",
            "zzz/other",
        ]
        .map(String::from),
        Vec::new(),
    );
    assert_eq!(d.suggest("web"), vec!["apps/web", "tools/web"]);
    assert_eq!(d.suggest("apps/wbe")[0], "apps/web");
    assert_eq!(d.suggest("images/rubby"), vec!["images/ruby"]);
    assert_eq!(d.suggest("group/Base"), vec!["images/base"]);
    assert!(d.suggest("completely-unrelated-name").is_empty());
    assert!(d.suggest("").len() <= 3);
    let err = d.require("apps/wbe").unwrap_err();
    assert!(err.to_string().contains("did you mean apps/web"), "{err}");
    assert!(d.require("apps/web").is_ok());
}

#[test]
fn levenshtein_basics() {
    assert_eq!(levenshtein("kitten", "sitting"), 3);
    assert_eq!(levenshtein("", "abc"), 3);
    assert_eq!(levenshtein("äb", "ab"), 1);
    assert_eq!(bounded_levenshtein("abc", "abcdefgh", 2), None);
}

#[test]
fn renderers() {
    let d = g(&[
        ("g/a", "g/b"),
        ("g/b", "g/a"),
        ("g/b", "x\"q"),
        ("end", "g/a"),
    ]);
    let dot = d.to_dot();
    assert!(dot.starts_with("digraph"));
    assert!(dot.contains("\"g/a\" -> \"g/b\" [color=red, style=dashed];"));
    assert!(dot.contains("\"g/b\" -> \"x\\\"q\";"));
    assert!(dot.contains("\"end\" -> \"g/a\";"));
    let mm = d.to_mermaid();
    assert!(mm.starts_with("graph TD\n"));
    assert!(mm.contains("p_g_a[\"g/a\"]"));
    assert!(mm.contains("p_g_a -.-> p_g_b"));
    assert!(mm.contains("p_end --> p_g_a"));
    assert!(mm.contains("[\"x#quot;q\"]"));
    // Two paths sanitising to the same id stay distinct.
    let d = g(&[("a-b", "a_b")]);
    let mm = d.to_mermaid();
    assert!(mm.contains("p_a_b[\"a-b\"]"));
    assert!(mm.contains("p_a_b_1[\"a_b\"]"));
    assert!(mm.contains("p_a_b --> p_a_b_1"));
}

/// A layered 100k-project graph: 100 layers of 1,000, each project built from 3 of the layer above.
fn big_graph() -> DepGraph {
    let layers = 100;
    let width = 1000;
    let name = |l: usize, i: usize| format!("layer{l:03}/p{i:04}");
    let mut edges = Vec::new();
    for l in 1..layers {
        for i in 0..width {
            for k in [0, 7, 331] {
                edges.push((name(l - 1, (i * 13 + k) % width), name(l, i)));
            }
        }
    }
    DepGraph::from_parts(Vec::new(), edges)
}

#[test]
fn big_graph_plan_is_fast_and_complete() {
    let d = big_graph();
    assert_eq!(d.len(), 100_000);
    // Best of three: the machine is shared, a single run measures the neighbours too.
    let mut took = std::time::Duration::MAX;
    let mut plan = Vec::new();
    for _ in 0..3 {
        let start = std::time::Instant::now();
        plan = d.plan(&["layer000/p0000"]);
        took = took.min(start.elapsed());
    }
    assert_eq!(plan.len(), 99);
    eprintln!("plan over 100k projects took {took:?}");
    // Generous in debug builds; a release build takes a few milliseconds.
    let limit = if cfg!(debug_assertions) { 2000 } else { 50 };
    assert!(took.as_millis() < limit, "plan took {took:?}");
    let chain = DepGraph::from_parts(
        Vec::new(),
        (0..100_000).map(|i| (format!("c/{i:06}"), format!("c/{:06}", i + 1))),
    );
    assert_eq!(chain.topo_rank("c/100000"), Some(100_000));
    assert_eq!(chain.plan(&["c/000000"]).len(), 100_000);
}

#[test]
fn with_upstreams_replaces_only_that_projects_upstreams() {
    let d = diamond();
    let moved = d
        .with_upstreams("apps/app", &["img/base".to_string()])
        .unwrap();
    let expected = g(&[
        ("img/base", "img/ruby"),
        ("img/base", "img/tools"),
        ("img/base", "apps/app"),
    ]);
    assert_same(&moved, &expected);
    assert_eq!(moved.plan(&["img/ruby"]), Vec::<Vec<String>>::new());
    assert_eq!(moved.topo_rank("apps/app"), Some(1));
    // The original is untouched (engine readers may still hold it).
    assert_eq!(d.upstreams("apps/app"), ["img/ruby", "img/tools"]);
}

#[test]
fn with_upstreams_can_close_and_open_a_cycle_and_refuses_unknown_paths() {
    let d = diamond();
    let cyclic = d
        .with_upstreams(
            "img/base",
            &["apps/app".to_string(), "img/base".to_string()],
        )
        .unwrap();
    assert_eq!(cyclic.edge_count(), 5, "the self-edge is dropped");
    assert_eq!(cyclic.cycles().len(), 1);
    assert_same(&cyclic.with_upstreams("img/base", &[]).unwrap(), &d);
    assert!(d.with_upstreams("nope/x", &[]).is_none());
    assert!(
        d.with_upstreams("apps/app", &["nope/x".to_string()])
            .is_none()
    );
}

/// Same projects, edges, cycles, acyclic adjacency and ranks (component ids may differ).
fn assert_same(a: &DepGraph, b: &DepGraph) {
    assert_eq!(a.projects(), b.projects());
    assert_eq!(a.edges(), b.edges());
    assert_eq!(a.edge_count(), b.edge_count());
    assert_eq!(a.cycles(), b.cycles());
    for p in a.projects() {
        assert_eq!(a.acyclic_upstreams(p), b.acyclic_upstreams(p), "{p}");
        assert_eq!(a.acyclic_downstreams(p), b.acyclic_downstreams(p), "{p}");
        assert_eq!(a.topo_rank(p), b.topo_rank(p), "rank of {p}");
        assert_eq!(a.plan(&[p]), b.plan(&[p]), "plan from {p}");
    }
}

mod with_upstreams_agrees {
    use super::*;
    use proptest::prelude::*;

    fn name(i: usize) -> String {
        format!("g/p{i:02}")
    }

    proptest! {
        /// Swapping one project's upstreams gives the graph built from scratch with them, on
        /// random graphs with and without cycles.
        #[test]
        fn with_a_graph_built_from_scratch(
            edges in proptest::collection::vec((0..12usize, 0..12usize), 0..30),
            project in 0..12usize,
            ups in proptest::collection::vec(0..12usize, 0..4),
        ) {
            let all: Vec<String> = (0..12).map(name).collect();
            let before = DepGraph::from_parts(
                all.clone(),
                edges.iter().map(|&(u, d)| (name(u), name(d))),
            );
            let new_ups: Vec<String> = ups.iter().map(|&u| name(u)).collect();
            let swapped = before.with_upstreams(&name(project), &new_ups).unwrap();
            let expected = DepGraph::from_parts(
                all,
                edges
                    .iter()
                    .filter(|&&(_, d)| d != project)
                    .map(|&(u, d)| (name(u), name(d)))
                    .chain(new_ups.iter().map(|u| (u.clone(), name(project)))),
            );
            assert_same(&swapped, &expected);
        }
    }
}
