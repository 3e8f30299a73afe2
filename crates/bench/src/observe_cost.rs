//! What observing one engine step for the metrics costs next to the step itself, on instances of
//! growing size: chain tracking over the changed states, trigger delays of the started pipelines,
//! and the state and queue gauges (`gitlab_deps::orchestrate::observe`).
//!
//! The step is what the engine does with the state lock held, short of persisting:
//! `Cascade::apply`, `Cascade::dispatch` and `Cascade::take_dirty`. The workload is a layered graph
//! where every project has built once, about `stale` projects stale at once, and a stream of events
//! alternating between our pipelines (created, then finishing) and other pipelines at the bottom of
//! the graph. The same seed and event stream runs on each size, so the figures differ by size only.

use std::time::{Duration, Instant};

use gitlab_deps::cascade::{
    Action, Cascade, Counters, Input, PipelineStatus, ProjectState, SeenPipeline, Throttle,
};
use gitlab_deps::graph::DepGraph;
use gitlab_deps::metrics::Metrics;
use gitlab_deps::orchestrate::observe::{Chains, observe_dispatch};

use super::{SplitMix, layered_graph, layered_name as name};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[k.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// Per-event figures of one size.
struct Figures {
    projects: usize,
    step: Vec<Duration>,
    observe: Vec<Duration>,
    chains_closed: u64,
}

fn run(projects: usize, layers: usize, stale_target: usize, events: usize, seed: u64) -> Figures {
    let mut rng = SplitMix(seed);
    let per_layer = projects / layers;
    let (nodes, edges) = layered_graph(per_layer, layers, &mut rng);
    let graph = DepGraph::from_parts(nodes.clone(), edges);
    let states = nodes.iter().enumerate().map(|(n, p)| {
        let seen = vec![SeenPipeline {
            id: n as u64 + 1,
            status: PipelineStatus::Success,
        }];
        (
            p.clone(),
            ProjectState {
                seen,
                ..ProjectState::default()
            },
        )
    });
    let mut cascade = Cascade::from_parts(states, Counters::default());
    let metrics = Metrics::new();
    let mut chains = Chains::of(&cascade);
    let throttle = Throttle {
        max_running: 50,
        can_create: usize::MAX,
    };
    let never = |_: &str| false;
    let mut now = 1_000_000i64;
    let mut pipeline = 10_000_000u64;
    let mut live: Vec<(String, String, u64, bool)> = Vec::new();
    let mut figures = Figures {
        projects,
        step: Vec::with_capacity(events),
        observe: Vec::with_capacity(events),
        chains_closed: 0,
    };
    for e in 0..events {
        // Untimed: keep a wave in flight, as a busy instance has.
        if e % 100 == 0 {
            // Bounded by the instance, so small sizes cannot loop forever.
            while cascade.counts().stale < stale_target.min(projects / 2) {
                let root = name(0, rng.below(per_layer));
                cascade.apply(&graph, Input::Rebuild { project: root }, now);
            }
        }
        now += 1_000;
        let input = if e % 2 == 0 && !live.is_empty() {
            let k = rng.below(live.len());
            if !live[k].3 {
                live[k].3 = true;
                Input::PipelineCreated {
                    project: live[k].0.clone(),
                    attempt: live[k].1.clone(),
                    pipeline_id: live[k].2,
                }
            } else {
                let (project, attempt, id, _) = live.swap_remove(k);
                Input::PipelineFinished {
                    project,
                    pipeline_id: id,
                    attempt: Some(attempt),
                    status: PipelineStatus::Success,
                    reason: None,
                    created_ms: None,
                }
            }
        } else {
            pipeline += 1;
            Input::PipelineFinished {
                project: name(layers - 1, rng.below(per_layer)),
                pipeline_id: pipeline,
                attempt: None,
                status: PipelineStatus::Success,
                reason: None,
                created_ms: Some(now),
            }
        };
        let t = Instant::now();
        cascade.apply(&graph, input, now);
        let actions = cascade.dispatch(&graph, throttle, &never, now);
        let dirty = cascade.take_dirty();
        figures.step.push(t.elapsed());

        let before = metrics_chain_count(&metrics);
        let t = Instant::now();
        chains.observe(&metrics, &dirty, now);
        observe_dispatch(&metrics, &cascade, &graph, &actions, now);
        figures.observe.push(t.elapsed());
        figures.chains_closed += metrics_chain_count(&metrics) - before;

        for Action::CreatePipeline {
            project, attempt, ..
        } in actions
        {
            pipeline += 1;
            live.push((project, attempt, pipeline, false));
        }
    }
    figures
}

/// Chains observed so far, read from the histogram's exposition.
fn metrics_chain_count(metrics: &Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("gitlab_deps_chain_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs every size and prints one table.
pub fn bench_observe_cost(
    sizes: &[usize],
    layers: usize,
    stale: usize,
    events: usize,
    seed: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(layers >= 2, "--layers must be at least 2");
    println!(
        "events per size: {events}, layers: {layers}, stale kept at about {stale}, max running 50, seed {seed}"
    );
    println!(
        "{:>9}  {:>12}  {:>12}  {:>15}  {:>15}  {:>16}  {:>13}",
        "projects",
        "step p50 us",
        "step p99 us",
        "observe p50 us",
        "observe p99 us",
        "observe / step",
        "chains closed"
    );
    for &projects in sizes {
        anyhow::ensure!(projects >= layers, "each size must be at least --layers");
        let mut f = run(projects, layers, stale, events, seed);
        let total = |d: &[Duration]| d.iter().sum::<Duration>().as_secs_f64();
        let ratio = total(&f.observe) / total(&f.step).max(f64::MIN_POSITIVE);
        f.step.sort_unstable();
        f.observe.sort_unstable();
        println!(
            "{:>9}  {:>12.1}  {:>12.1}  {:>15.1}  {:>15.1}  {:>16.3}  {:>13}",
            f.projects,
            percentile(&f.step, 0.5),
            percentile(&f.step, 0.99),
            percentile(&f.observe, 0.5),
            percentile(&f.observe, 0.99),
            ratio,
            f.chains_closed
        );
    }
    Ok(())
}
