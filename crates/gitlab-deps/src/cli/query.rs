//! Commands that read the stored graph: `list-projects`, `deps`, `rdeps`, `plan`, `graph`, `warnings`.

use anyhow::bail;

use super::output::{EdgeJson, GraphJson, PlanJson, ProjectJson, WarningJson, print_json, table};
use super::{Context, DepsArgs, GraphArgs, GraphFormat, ListArgs, PlanArgs};
use crate::graph::DepGraph;

/// Which way `deps`/`rdeps` walk.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Towards what a project is built on.
    Up,
    /// Towards what is built on it.
    Down,
}

/// Fails with a suggestion when `project` is not in the graph.
pub(crate) fn require<'g>(graph: &'g DepGraph, project: &str) -> anyhow::Result<&'g str> {
    let wanted = project.trim().trim_matches('/');
    if let Some(found) = graph
        .projects()
        .into_iter()
        .find(|p| p.eq_ignore_ascii_case(wanted))
    {
        return Ok(found);
    }
    if graph.is_empty() {
        bail!(
            "unknown project {wanted:?}: the database holds no projects yet; run `gitlab-deps scan` first"
        );
    }
    // The graph's own error names the close matches.
    Err(graph
        .require(wanted)
        .err()
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("unknown project {wanted:?}")))
}

pub async fn list_projects(ctx: &Context, args: &ListArgs) -> anyhow::Result<()> {
    let store = ctx.store().await?;
    let records = store.projects().await?;
    let graph = ctx.graph(store.as_ref()).await?;
    if args.json {
        return print_json(&ProjectJson::all(
            &records,
            &graph,
            &store.externals().await?,
        ));
    }
    if records.is_empty() {
        eprintln!("No projects stored yet: run `gitlab-deps scan`.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.path.clone(),
                r.default_branch.clone().unwrap_or_default(),
                graph.upstreams(&r.path).len().to_string(),
                graph.downstreams(&r.path).len().to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["PROJECT", "BRANCH", "UPSTREAMS", "DOWNSTREAMS"], &rows)
    );
    Ok(())
}

pub async fn deps(ctx: &Context, args: &DepsArgs, direction: Direction) -> anyhow::Result<()> {
    let store = ctx.store().await?;
    let graph = ctx.graph(store.as_ref()).await?;
    let project = require(&graph, &args.project)?;
    let found: Vec<&str> = match (direction, args.recursive) {
        (Direction::Up, false) => graph.upstreams(project),
        (Direction::Up, true) => graph.ancestors(project),
        (Direction::Down, false) => graph.downstreams(project),
        (Direction::Down, true) => graph.descendants(project),
    };
    if args.json {
        return print_json(&found);
    }
    if found.is_empty() {
        let what = match direction {
            Direction::Up => "depends on no project",
            Direction::Down => "has no downstream projects",
        };
        eprintln!("{project} {what}.");
        return Ok(());
    }
    if args.recursive {
        for p in found {
            println!("{p}");
        }
        return Ok(());
    }
    // Direct neighbours: say where each edge comes from.
    let edges = store.edges().await?;
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|other| {
            let (up, down) = match direction {
                Direction::Up => (*other, project),
                Direction::Down => (project, *other),
            };
            let via = edges
                .iter()
                .find(|e| e.upstream == up && e.downstream == down)
                .map(|e| format!("{down}: {}", e.via))
                .unwrap_or_default();
            vec![(*other).to_owned(), via]
        })
        .collect();
    print!("{}", table(&["PROJECT", "VIA"], &rows));
    Ok(())
}

pub async fn plan(ctx: &Context, args: &PlanArgs) -> anyhow::Result<()> {
    let store = ctx.store().await?;
    let graph = ctx.graph(store.as_ref()).await?;
    let roots = args
        .projects
        .iter()
        .map(|p| require(&graph, p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let waves = graph.plan(&roots);
    if args.json {
        return print_json(&PlanJson {
            roots: roots.iter().map(|r| (*r).to_owned()).collect(),
            waves,
        });
    }
    print_plan(&roots, &waves);
    Ok(())
}

/// Prints waves readably.
pub fn print_plan(roots: &[&str], waves: &[Vec<String>]) {
    if waves.is_empty() {
        println!("Nothing is built on {}.", roots.join(", "));
        return;
    }
    let total: usize = waves.iter().map(Vec::len).sum();
    println!(
        "A change of {} rebuilds {total} project(s) in {} wave(s):",
        roots.join(", "),
        waves.len()
    );
    for (i, wave) in waves.iter().enumerate() {
        println!("  wave {}: {}", i + 1, wave.join(", "));
    }
}

pub async fn graph(ctx: &Context, args: &GraphArgs) -> anyhow::Result<()> {
    let store = ctx.store().await?;
    let graph = ctx.graph(store.as_ref()).await?;
    let format = if args.json {
        GraphFormat::Json
    } else {
        args.format
    };
    match format {
        GraphFormat::Dot => print!("{}", graph.to_dot()),
        GraphFormat::Mermaid => print!("{}", graph.to_mermaid()),
        GraphFormat::Json => print_json(&GraphJson {
            projects: ProjectJson::all(&store.projects().await?, &graph, &store.externals().await?),
            edges: store.edges().await?.iter().map(EdgeJson::from).collect(),
            cycles: graph.cycles(),
        })?,
    }
    Ok(())
}

pub async fn warnings(ctx: &Context, args: &ListArgs) -> anyhow::Result<()> {
    let store = ctx.store().await?;
    let warnings = store.warnings().await?;
    if args.json {
        let list: Vec<WarningJson> = warnings.iter().map(WarningJson::from).collect();
        return print_json(&list);
    }
    if warnings.is_empty() {
        eprintln!("No warnings.");
    }
    for w in warnings {
        println!("{w}");
    }
    Ok(())
}
