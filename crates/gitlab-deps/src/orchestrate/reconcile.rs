//! The reconciler: polls our pipelines whose final status is overdue (see [`super::recovery`]), and
//! resolves creations that a crash or an outage interrupted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::create::Claim;
use super::engine::{Engine, lock};
use super::recovery::{PollReason, finished_input};
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
        // Ticks are cheap (a request only for what is due, at most `max_running` pipelines
        // looked at): often, so an overdue pipeline is polled within seconds of becoming due.
        let every = (self.opts.reconcile_after / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(5));
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
                _ = self.recovery.poll_wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Polls our pipelines whose final status is overdue (every one when `all`, at start-up), and
    /// resolves creations that never completed.
    pub async fn reconcile(self: &Arc<Self>, all: bool) {
        // Only the leader polls and resolves intents.
        let Some(acting) = self.acting() else {
            return;
        };
        let now = self.clock.now_ms();
        let after = self.opts.reconcile_after.as_millis() as i64;
        let recovery = &self.recovery;
        // After an intake failure every running pipeline is polled, at most once a minute.
        let intake_failure = !all
            && recovery.poll_all.load(Ordering::SeqCst)
            && now.saturating_sub(recovery.last_poll_all_ms.load(Ordering::SeqCst)) >= 60_000;
        if intake_failure {
            recovery.poll_all.store(false, Ordering::SeqCst);
            recovery.last_poll_all_ms.store(now, Ordering::SeqCst);
        }
        let (open, intents) = {
            let cascade = self.cascade.lock().await;
            let started = |p: &str| {
                cascade
                    .state(p)
                    .and_then(|s| s.running.as_ref())
                    .map(|r| (r.started_ms, r.attempt.clone()))
            };
            let running = cascade.running_pipelines();
            let mut schedule = lock(&recovery.schedule);
            schedule.retain(&running.iter().map(|(_, id)| *id).collect());
            let open: Vec<(String, u64, String, PollReason)> = running
                .into_iter()
                .filter_map(|(p, id)| {
                    let (started_ms, attempt) = started(&p)?;
                    let due = schedule.due(id, started_ms, recovery.estimate_ms(&p), after, now);
                    let reason = if all {
                        PollReason::Startup
                    } else if intake_failure {
                        PollReason::IntakeFailure
                    } else {
                        due?
                    };
                    Some((p, id, attempt, reason))
                })
                .collect();
            // An intent whose creation gave up (GitLab down) is retried sooner than a pipeline
            // is polled: nothing else will start that project.
            let intent_after = after.min(30_000);
            let intents: Vec<Intent> = cascade
                .pending_attempts()
                .into_iter()
                .filter(|(p, _)| all || started(p).is_some_and(|(at, _)| now - at >= intent_after))
                .filter_map(|(p, attempt)| {
                    let r = cascade.state(&p)?.running.as_ref()?;
                    let variables = crate::cascade::variables_for(r);
                    Some((p, attempt, variables))
                })
                .collect();
            (open, intents)
        };
        let records = self.records();
        for (project, pipeline_id, attempt, reason) in open {
            let Some(record) = records.by_path.get(&project) else {
                continue;
            };
            // Overdue polls are optional and wait for budget; the others are owed.
            {
                let mut budget = lock(&recovery.budget);
                if reason == PollReason::Overdue {
                    if !budget.try_take(now) {
                        self.metrics.recovery_deferred.inc();
                        continue;
                    }
                } else {
                    budget.force_take(now);
                }
            }
            self.metrics.recovery_poll(reason.label());
            match self.gitlab.pipeline(record.id, pipeline_id).await {
                Ok(p) => {
                    if let Some(status) = status_of(&p.status) {
                        tracing::info!(
                            "{project}: reconciler found pipeline #{pipeline_id} {}",
                            p.status
                        );
                        self.metrics.reconciled.inc();
                        let (key, input) =
                            finished_input(project, &p, Some(attempt), status, "polled");
                        self.enqueue(&key, &input).await;
                    } else {
                        lock(&recovery.schedule).polled(pipeline_id, after, now);
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
                Err(e) => {
                    tracing::warn!("{project}: cannot poll pipeline #{pipeline_id}: {e}");
                    lock(&recovery.schedule).polled(pipeline_id, after, now);
                }
            }
        }
        for (project, attempt, variables) in intents {
            if lock(&self.in_flight).contains(&attempt) {
                continue;
            }
            tokio::spawn(self.clone().create(
                project,
                attempt,
                variables,
                Claim::Recover,
                acting.clone(),
            ));
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
