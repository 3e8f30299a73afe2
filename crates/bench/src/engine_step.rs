//! Engine cost per event on a large instance: what one step of the engine loop costs the process
//! (`Cascade::apply` + `Cascade::dispatch` + `Metrics::observe`), and what one status request
//! costs (a snapshot copy + `describe`), with a wave of rebuilds in flight.
//!
//! The workload: a layered graph (every project built from one to three projects of the layer
//! above), every project with a remembered pipeline (as on an instance where everything has built
//! once), about `stale` projects stale at once, and a stream of events both inside the affected
//! set (our pipelines being created and finishing, some failing) and outside it (other pipelines
//! of projects at the bottom of the graph succeeding). Only public API is used, so the same file
//! measures older versions of the engine for comparison.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitlab_deps::cascade::{
    Action, Cascade, Counters, Input, PipelineStatus, ProjectState, SeenPipeline, Throttle,
};
use gitlab_deps::graph::DepGraph;
use gitlab_deps::metrics::Metrics;
use gitlab_deps::orchestrate::{Snapshot, describe};

use super::{SplitMix, layered_graph, layered_name as name};

/// `(peak, current)` resident set size in MiB from `/proc/self/status`; zeros where unavailable.
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let k = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A pipeline of ours in flight in the simulated GitLab.
struct Live {
    project: String,
    attempt: String,
    pipeline: u64,
    created_sent: bool,
}

/// Runs the benchmark and prints the figures.
pub fn bench_engine_step(
    projects: usize,
    layers: usize,
    stale_target: usize,
    events: usize,
    max_running: usize,
    seed: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(layers >= 2, "--layers must be at least 2");
    anyhow::ensure!(projects >= layers, "--projects must be at least --layers");
    let mut rng = SplitMix(seed);
    let per_layer = projects / layers;
    let (nodes, edges) = layered_graph(per_layer, layers, &mut rng);
    let t = Instant::now();
    let graph = Arc::new(DepGraph::from_parts(nodes.clone(), edges.clone()));
    let build = t.elapsed();

    // Every project has built once: each keeps a small pipeline memory, as in production.
    let mut pipeline = 0u64;
    let states = nodes.iter().map(|p| {
        pipeline += 1;
        let state = ProjectState {
            seen: vec![SeenPipeline {
                id: pipeline,
                status: PipelineStatus::Success,
            }],
            ..ProjectState::default()
        };
        (p.clone(), state)
    });
    let mut cascade = Cascade::from_parts(states, Counters::default());
    let metrics = Metrics::new();
    let throttle = Throttle {
        max_running,
        can_create: usize::MAX,
    };
    let never = |_: &str| false;
    let mut now = 1_000_000i64;

    let stale_count = |c: &Cascade| c.projects().filter(|(_, s)| s.stale.is_some()).count();
    // Rebuild roots in the top layer until the affected set is large enough.
    let mut roots = 0usize;
    let replenish = |c: &mut Cascade, rng: &mut SplitMix, now: i64, roots: &mut usize| {
        while stale_count(c) < stale_target {
            let root = name(0, rng.below(per_layer));
            c.apply(&graph, Input::Rebuild { project: root }, now);
            *roots += 1;
        }
    };
    replenish(&mut cascade, &mut rng, now, &mut roots);
    let stale_at_start = stale_count(&cascade);

    let mut live: Vec<Live> = Vec::new();
    let mut step_times = Vec::with_capacity(events);
    let mut inside_times = Vec::new();
    let mut outside_times = Vec::new();
    let mut status_times = Vec::new();
    let bottom = layers - 1;
    for e in 0..events {
        now += 1;
        // Half the events are ours (inside the affected set), half are other pipelines of
        // projects at the bottom of the graph (outside it, when not stale themselves).
        let input = if e % 2 == 0 && !live.is_empty() {
            let k = rng.below(live.len());
            if !live[k].created_sent {
                live[k].created_sent = true;
                Some(Input::PipelineCreated {
                    project: live[k].project.clone(),
                    attempt: live[k].attempt.clone(),
                    pipeline_id: live[k].pipeline,
                })
            } else {
                let l = live.swap_remove(k);
                let status = if rng.below(20) == 0 {
                    PipelineStatus::Failed
                } else {
                    PipelineStatus::Success
                };
                Some(Input::PipelineFinished {
                    project: l.project,
                    pipeline_id: l.pipeline,
                    attempt: Some(l.attempt),
                    status,
                    reason: None,
                    created_ms: None,
                })
            }
        } else {
            pipeline += 1;
            Some(Input::PipelineFinished {
                project: name(bottom, rng.below(per_layer)),
                pipeline_id: pipeline + 1_000_000_000,
                attempt: None,
                status: PipelineStatus::Success,
                reason: None,
                created_ms: Some(now),
            })
        };
        let inside = e % 2 == 0
            && input.is_some()
            && !matches!(input, Some(Input::PipelineFinished { attempt: None, .. }));
        let t = Instant::now();
        if let Some(input) = input {
            cascade.apply(&graph, input, now);
        }
        let actions = cascade.dispatch(&graph, throttle, &never, now);
        metrics.observe(&cascade);
        let took = t.elapsed();
        step_times.push(took);
        if inside {
            inside_times.push(took);
        } else {
            outside_times.push(took);
        }
        for Action::CreatePipeline {
            project, attempt, ..
        } in actions
        {
            pipeline += 1;
            live.push(Live {
                project,
                attempt,
                pipeline,
                created_sent: false,
            });
        }
        // A failed project is rebuilt by the operator, so the wave keeps moving.
        if e % 100 == 99 {
            let failed: Vec<String> = cascade
                .projects()
                .filter(|(_, s)| s.failed.is_some())
                .map(|(p, _)| p.to_owned())
                .collect();
            for p in failed {
                cascade.apply(&graph, Input::Rebuild { project: p }, now);
            }
            replenish(&mut cascade, &mut rng, now, &mut roots);
            // One status request: the engine's snapshot (a copy of the active states under the
            // lock) and the description of every active project.
            let t = Instant::now();
            let snapshot = Snapshot {
                cascade: cascade.active_copy(),
                graph: graph.clone(),
                web_urls: HashMap::new(),
            };
            let views = describe(&snapshot);
            status_times.push(t.elapsed());
            std::hint::black_box(views);
        }
    }
    let end_stale = stale_count(&cascade);
    let end_active = cascade.projects().count();
    // A graph change (a push rescan, a reload): the first dispatch on the new graph pays for
    // whatever the engine derives from the graph once.
    let mut regraph_times = Vec::new();
    for _ in 0..3 {
        let regraphed = DepGraph::from_parts(nodes.clone(), edges.clone());
        now += 1;
        let t = Instant::now();
        let actions = cascade.dispatch(&regraphed, throttle, &never, now);
        regraph_times.push(t.elapsed());
        std::hint::black_box(actions);
    }
    let (peak, current) = rss_mib();
    for v in [
        &mut step_times,
        &mut inside_times,
        &mut outside_times,
        &mut status_times,
        &mut regraph_times,
    ] {
        v.sort_unstable();
    }
    println!(
        "graph          {} projects in {layers} layers, {} edges, built in {:.0} ms",
        graph.len(),
        graph.edge_count(),
        build.as_secs_f64() * 1e3
    );
    println!(
        "workload       {stale_at_start} stale at start ({roots} rebuild roots over the run), {events} events, max_running {max_running}"
    );
    let line = |label: &str, v: &[Duration]| {
        println!(
            "{label:<14} n={:<6} p50 {:>9.1} us   p99 {:>9.1} us   max {:>9.1} us",
            v.len(),
            us(percentile(v, 0.5)),
            us(percentile(v, 0.99)),
            us(percentile(v, 1.0)),
        );
    };
    line("step (all)", &step_times);
    line("step inside", &inside_times);
    line("step outside", &outside_times);
    line("status req", &status_times);
    line("new graph", &regraph_times);
    println!("end state      {end_stale} stale, {end_active} active (before the new graphs)");
    println!("rss            peak {peak} MiB, now {current} MiB");
    Ok(())
}
