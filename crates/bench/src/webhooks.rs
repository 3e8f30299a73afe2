//! `bench payloads`: the cost of reading a Pipeline Hook body, which the handler does on an async
//! worker for every delivery (and the engine again for every stored one). GitLab's payload grows
//! with the pipeline: one `builds` entry (with user, runner and artifacts) per job.
//!
//! Baseline, measured in the same run: `serde_json::from_slice::<IgnoredAny>`, which only checks
//! the JSON and skips everything, the least any reader of the body must do. Also reported: a full
//! `serde_json::Value` tree of the body, for comparison with reading the needed parts only.

use std::hint::black_box;
use std::time::{Duration, Instant};

use gitlab_deps::gitlab::payload::{self, HookEvent};
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// A default-branch success with `jobs` entries in `builds`, in GitLab's shape.
fn pipeline_body(jobs: usize) -> Vec<u8> {
    let build = |i: usize| {
        json!({
            "id": 90_000 + i, "stage": "build", "name": format!("job-{i}"), "status": "success",
            "created_at": "2026-03-04 10:11:12 UTC", "started_at": "2026-03-04 10:11:15 UTC",
            "finished_at": "2026-03-04 10:17:02 UTC", "duration": 347.2, "queued_duration": 2.9,
            "failure_reason": null, "when": "on_success", "manual": false, "allow_failure": false,
            "user": {"id": 12, "name": "Ada Builder", "username": "ada", "avatar_url": null, "email": "[REDACTED]"},
            "runner": {"id": 5, "description": "shared-1", "runner_type": "instance_type",
                "active": true, "is_shared": true, "tags": ["docker", "linux"]},
            "artifacts_file": {"filename": null, "size": null},
            "environment": null
        })
    };
    json!({
        "object_kind": "pipeline",
        "object_attributes": {"id": 4107, "iid": 58, "name": null, "ref": "main", "tag": false,
            "sha": "3f1c2a9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a39", "before_sha": "0000000000000000000000000000000000000000",
            "source": "push", "status": "success", "detailed_status": "passed", "stages": ["build"],
            "created_at": "2026-03-04 10:11:12 UTC", "finished_at": "2026-03-04 10:19:40 UTC",
            "duration": 498, "queued_duration": 3,
            "variables": [{"key": "NIGHTLY", "value": null}], "url": "https://git.example.test/images/base/-/pipelines/4107"},
        "merge_request": null,
        "user": {"id": 12, "name": "Ada Builder", "username": "ada", "avatar_url": null, "email": "[REDACTED]"},
        "project": {"id": 31, "name": "base", "web_url": "https://git.example.test/images/base",
            "path_with_namespace": "images/base", "default_branch": "main", "ci_config_path": null},
        "commit": {"id": "3f1c2a9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a39", "message": "Bump the base image\n",
            "timestamp": "2026-03-04T11:10:58+01:00", "author": {"name": "Ada Builder", "email": "ada@example.test"}},
        "builds": (0..jobs).map(build).collect::<Vec<_>>()
    })
    .to_string()
    .into_bytes()
}

/// Median time of one call of `f` over `runs` timed batches of `batch` calls.
fn median(runs: usize, batch: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed() / batch as u32
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Runs the benchmark for each job count.
pub fn bench_payloads(jobs: &[usize], runs: usize) -> anyhow::Result<()> {
    println!("pipeline payload reading, median of {runs} batches, per event");
    for &n in jobs {
        let body = pipeline_body(n);
        // One check that the body is what the service acts on.
        anyhow::ensure!(
            matches!(
                payload::parse("Pipeline Hook", &body)?,
                Some(HookEvent::Pipeline(ref p)) if p.is_default_branch_build()
            ),
            "the generated payload is not a default-branch build"
        );
        let batch = (2_000_000 / body.len()).clamp(10, 10_000);
        let floor = median(runs, batch, || {
            black_box(serde_json::from_slice::<IgnoredAny>(black_box(&body)).ok());
        });
        let ours = median(runs, batch, || {
            black_box(payload::parse("Pipeline Hook", black_box(&body)).ok());
        });
        let tree = median(runs, batch, || {
            black_box(serde_json::from_slice::<Value>(black_box(&body)).ok());
        });
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "  {n:>4} jobs, {:>7} bytes: skip-only {:>8.1} us, parse {:>8.1} us ({:.2}x), full tree {:>8.1} us ({:.2}x)",
            body.len(),
            us(floor),
            us(ours),
            us(ours) / us(floor),
            us(tree),
            us(tree) / us(floor),
        );
        println!(
            "{}",
            json!({"bench": "payloads", "jobs": n, "bytes": body.len(), "floor_us": us(floor),
                "parse_us": us(ours), "tree_us": us(tree),
                "parse_ratio": us(ours) / us(floor), "tree_ratio": us(tree) / us(floor)})
        );
    }
    Ok(())
}
