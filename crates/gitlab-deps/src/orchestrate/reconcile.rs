//! The reconciler: polls our pipelines whose final status may have been lost, and resolves
//! creations that a crash or an outage interrupted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::create::Claim;
use super::engine::{Engine, lock};
use crate::cascade::{Input, PipelineStatus};
use crate::gitlab::GitLabError;

/// How long processed events (and their delivery keys) are kept: GitLab redelivers within hours,
/// not weeks.
const EVENT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// A pipeline creation to resolve: project, attempt, variables.
type Intent = (String, String, Vec<(String, String)>);

impl Engine {
    pub(super) async fn reconcile_loop(self: Arc<Self>, shutdown: CancellationToken) {
        // On start-up every open pipeline and every unresolved intent is checked at once: events
        // may have been missed while the service was down.
        let mut startup = true;
        let mut pruned = Instant::now();
        let every = (self.opts.reconcile_after / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            self.reconcile(startup).await;
            if startup || pruned.elapsed() > Duration::from_secs(3600) {
                pruned = Instant::now();
                // Delivery keys are kept a week: GitLab redelivers within hours, not weeks.
                match self
                    .store
                    .prune_events(self.clock.now_ms() - EVENT_RETENTION_MS)
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!("pruned {n} old webhook events"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cannot prune old events: {e}"),
                }
            }
            startup = false;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Polls our pipelines that stayed open too long, and resolves creations that never completed.
    pub async fn reconcile(self: &Arc<Self>, all: bool) {
        let now = self.clock.now_ms();
        let after = self.opts.reconcile_after.as_millis() as i64;
        let (open, intents) = {
            let cascade = self.cascade.lock().await;
            // Started at least `age` ms ago (everything, on start-up).
            let older_than = |p: &str, age: i64| {
                all || cascade
                    .state(p)
                    .and_then(|s| s.running.as_ref())
                    .is_some_and(|r| now - r.started_ms >= age)
            };
            let open: Vec<(String, u64, String)> = cascade
                .running_pipelines()
                .into_iter()
                .filter(|(p, _)| older_than(p, after))
                .filter_map(|(p, id)| {
                    let attempt = cascade.state(&p)?.running.as_ref()?.attempt.clone();
                    Some((p, id, attempt))
                })
                .collect();
            // An intent whose creation gave up (GitLab down) is retried sooner than a pipeline
            // is polled: nothing else will start that project.
            let intent_after = after.min(30_000);
            let intents: Vec<Intent> = cascade
                .pending_attempts()
                .into_iter()
                .filter(|(p, _)| older_than(p, intent_after))
                .filter_map(|(p, attempt)| {
                    let r = cascade.state(&p)?.running.as_ref()?;
                    let variables = crate::cascade::variables_for(r);
                    Some((p, attempt, variables))
                })
                .collect();
            (open, intents)
        };
        let records = self.records();
        for (project, pipeline_id, attempt) in open {
            let Some(record) = records.by_path.get(&project) else {
                continue;
            };
            match self.gitlab.pipeline(record.id, pipeline_id).await {
                Ok(p) => {
                    if let Some(status) = status_of(&p.status) {
                        tracing::info!(
                            "{project}: reconciler found pipeline #{pipeline_id} {}",
                            p.status
                        );
                        self.metrics.reconciled.inc();
                        self.enqueue(
                            &format!("poll:{pipeline_id}:{}", p.status),
                            &Input::PipelineFinished {
                                project,
                                pipeline_id,
                                attempt: Some(attempt),
                                status,
                                reason: Some(format!(
                                    "pipeline #{pipeline_id} {} (polled)",
                                    p.status
                                )),
                                created_ms: p
                                    .created_at
                                    .as_deref()
                                    .and_then(crate::util::parse_timestamp_ms),
                            },
                        )
                        .await;
                    }
                }
                // Deleted (by hand or by retention): it will never finish, so it must not hold
                // its project and everything below it forever.
                Err(GitLabError::NotFound { .. }) => {
                    tracing::warn!(
                        "{project}: pipeline #{pipeline_id} is gone; counting it as canceled"
                    );
                    self.enqueue(
                        &format!("poll:{pipeline_id}:gone"),
                        &Input::PipelineFinished {
                            project,
                            pipeline_id,
                            attempt: Some(attempt),
                            status: PipelineStatus::Canceled,
                            reason: Some(format!("pipeline #{pipeline_id} was deleted")),
                            created_ms: None,
                        },
                    )
                    .await;
                }
                Err(e) => tracing::warn!("{project}: cannot poll pipeline #{pipeline_id}: {e}"),
            }
        }
        for (project, attempt, variables) in intents {
            if lock(&self.in_flight).contains(&attempt) {
                continue;
            }
            tokio::spawn(
                self.clone()
                    .create(project, attempt, variables, Claim::Recover),
            );
        }
    }
}

/// Maps a GitLab status to a final cascade status; `skipped` did not build, like a cancel.
pub(super) fn status_of(status: &str) -> Option<PipelineStatus> {
    match status {
        "success" => Some(PipelineStatus::Success),
        "failed" => Some(PipelineStatus::Failed),
        "canceled" | "skipped" => Some(PipelineStatus::Canceled),
        _ => None,
    }
}
