//! Pipeline creation and adoption: each attempt's pipeline is created at most once, found again
//! by its attempt id after a crash or a lost answer.

use std::sync::Arc;

use super::engine::{Acting, Engine, lock};
use super::reconcile::status_of;
use super::recovery::finished_input;
use crate::cascade::{Input, VAR_ATTEMPT};
use crate::gitlab::{GitLabError, Pipeline};

/// How a creation task was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// Fresh from dispatch; the engine already claimed the attempt.
    Claimed,
    /// Resolving an old intent (after a crash or an outage): claim it, and look for an existing
    /// pipeline before creating one.
    Recover,
}

impl Engine {
    /// Creates the pipeline of an attempt exactly once: before every retry (and always when
    /// `adopt_first`, after a crash) it looks for a pipeline that already carries the attempt id.
    /// Started `acting` under a lease, it gives up as soon as that lease is no longer held: the
    /// next leader's adoption resolves the intent.
    pub(super) async fn create(
        self: Arc<Self>,
        project: String,
        attempt: String,
        variables: Vec<(String, String)>,
        claim: Claim,
        acting: Acting,
    ) {
        if claim == Claim::Recover && !lock(&self.in_flight).insert(attempt.clone()) {
            return;
        }
        let adopt_first = claim == Claim::Recover;
        let outcome = self
            .create_or_adopt(&project, &attempt, &variables, adopt_first, &acting)
            .await;
        lock(&self.in_flight).remove(&attempt);
        match outcome {
            Ok(Some(pipeline)) => {
                self.enqueue(
                    &format!("created:{attempt}"),
                    &Input::PipelineCreated {
                        project: project.clone(),
                        attempt: attempt.clone(),
                        pipeline_id: pipeline.id,
                    },
                )
                .await;
                // An adopted pipeline may have finished while we were down: apply its status now,
                // as a poll would, instead of waiting for the reconciler.
                if let Some(status) = status_of(&pipeline.status) {
                    tracing::info!(
                        "{project}: adopted pipeline #{} already {}",
                        pipeline.id,
                        pipeline.status
                    );
                    self.metrics.reconciled.inc();
                    let (key, input) =
                        finished_input(project, &pipeline, Some(attempt), status, "adopted");
                    self.enqueue(&key, &input).await;
                }
            }
            Ok(None) => {}
            Err(reason) => {
                self.metrics.create_failures.inc();
                tracing::warn!("{project}: cannot create a pipeline: {reason}");
                self.enqueue(
                    &format!("create-failed:{attempt}"),
                    &Input::CreateFailed {
                        project,
                        attempt,
                        reason,
                    },
                )
                .await;
            }
        }
    }

    /// `Ok(Some(pipeline))`: created or adopted (as GitLab last listed it). `Ok(None)`: still unknown (GitLab unreachable); the
    /// reconciler tries again later. `Err(reason)`: a permanent refusal.
    async fn create_or_adopt(
        &self,
        project: &str,
        attempt: &str,
        variables: &[(String, String)],
        adopt_first: bool,
        acting: &Acting,
    ) -> Result<Option<Pipeline>, String> {
        let record = self.records().by_path.get(project).cloned();
        let Some(record) = record else {
            return Err("the project is no longer known (rescan?)".into());
        };
        let Some(branch) = record.default_branch.clone() else {
            return Err("the project has no default branch".into());
        };
        // Paced like the client's own retries; when they run out, the reconciler takes over.
        let mut delays = self.gitlab.retry_policy().delays();
        let mut variables_allowed = true;
        for try_no in 0.. {
            if (adopt_first || try_no > 0) && variables_allowed {
                match self.find_attempt(record.id, &branch, attempt).await {
                    Ok(Some(p)) => {
                        tracing::info!(
                            "{project}: adopted pipeline #{} of attempt {attempt}",
                            p.id
                        );
                        return Ok(Some(p));
                    }
                    Ok(None) => {}
                    Err(e) if !e.is_transient() => {
                        return Err(format!("cannot check for an existing pipeline: {e}"));
                    }
                    Err(e) => {
                        tracing::warn!("{project}: cannot look for attempt {attempt}: {e}");
                        let Some(delay) = delays.next() else { break };
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            // Right before every request that creates: a replica whose lease ran out (its local
            // deadline passed, or another replica took over) must never create a pipeline.
            if !self.still_acting(acting) {
                self.metrics.creations_abandoned.inc();
                tracing::info!(
                    "{project}: no longer the leader, leaving attempt {attempt} to the next one"
                );
                return Ok(None);
            }
            let with_variables = variables_allowed;
            let sent: &[(String, String)] = if with_variables { variables } else { &[] };
            match self.gitlab.create_pipeline(record.id, &branch, sent).await {
                Ok(p) => {
                    self.metrics.pipelines_created.inc();
                    return Ok(Some(p));
                }
                // The project forbids pipeline variables (GitLab's "minimum role to use pipeline
                // variables": no one). The pipeline still runs, without the GITLAB_DEPS_*
                // context; we recognise it by its id, but cannot adopt it after a crash.
                Err(e) if with_variables && refuses_variables(&e) => {
                    tracing::warn!(
                        "{project}: GitLab refuses pipeline variables here ({e}); creating its pipeline without the GITLAB_DEPS_* variables"
                    );
                    variables_allowed = false;
                }
                // A lost or garbled answer, an outage, or a token being rotated: the pipeline may
                // or may not exist, so look before trying again.
                Err(e)
                    if e.is_transient()
                        || matches!(
                            e,
                            GitLabError::Decode { .. } | GitLabError::Unauthorized { .. }
                        ) =>
                {
                    tracing::warn!(
                        "{project}: creating a pipeline failed, will check and retry: {e}"
                    );
                    let Some(delay) = delays.next() else { break };
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(None)
    }

    /// [`Engine::create_or_adopt`] without adoption first, for tests; the pipeline's id stands
    /// for it.
    #[cfg(test)]
    pub(super) async fn create_or_adopt_for_test(
        &self,
        project: &str,
        attempt: &str,
        acting: &Acting,
    ) -> Result<Option<u64>, String> {
        self.create_or_adopt(project, attempt, &[], false, acting)
            .await
            .map(|p| p.map(|p| p.id))
    }

    /// Finds our pipeline for an attempt among the project's newest API pipelines.
    async fn find_attempt(
        &self,
        project_id: u64,
        branch: &str,
        attempt: &str,
    ) -> Result<Option<Pipeline>, GitLabError> {
        let recent = self
            .gitlab
            .recent_pipelines(project_id, branch, 100)
            .await?;
        for p in recent
            .into_iter()
            .filter(|p| p.source.as_deref().is_none_or(|s| s == "api"))
        {
            match self.gitlab.pipeline_variables(project_id, p.id).await {
                Ok(variables) => {
                    if variables
                        .iter()
                        .any(|v| v.key == VAR_ATTEMPT && v.value == attempt)
                    {
                        return Ok(Some(p));
                    }
                }
                // One unreadable pipeline (deleted meanwhile, say) says nothing about the others.
                Err(e) if !e.is_transient() => {
                    tracing::debug!("skipping pipeline #{}: {e}", p.id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// GitLab's refusal of pipeline variables: 400 (or 403) "Insufficient permissions to set pipeline
/// variables".
fn refuses_variables(e: &GitLabError) -> bool {
    let message = match e {
        GitLabError::Rejected { message, .. } | GitLabError::Forbidden { message, .. } => message,
        _ => return false,
    };
    message.to_ascii_lowercase().contains("pipeline variables")
}
