//! Installs and repairs the gitlab-deps webhook on every known project.

use crate::gitlab::{GitLab, GitLabError, HookSpec};
use crate::store::ProjectRecord;

/// What a hook sync did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct HookSummary {
    /// Hooks added.
    pub created: usize,
    /// Existing hooks reset (secret and events), since GitLab never shows a hook's secret.
    pub updated: usize,
    /// Duplicate hooks to our URL removed.
    pub removed_duplicates: usize,
    /// Projects where it failed, with the reason.
    pub failed: Vec<String>,
}

/// The hook settings gitlab-deps needs: pipeline and push events, with the shared secret.
pub fn hook_spec(url: &str, secret: &str) -> HookSpec {
    HookSpec {
        url: url.to_owned(),
        token: secret.to_owned(),
        push_events: true,
        pipeline_events: true,
        tag_push_events: false,
        merge_requests_events: false,
        enable_ssl_verification: url.starts_with("https://"),
    }
}

async fn sync_one(
    gitlab: &GitLab,
    project: &ProjectRecord,
    spec: &HookSpec,
) -> Result<(bool, usize), GitLabError> {
    let hooks = gitlab.hooks(project.id).await?;
    let mut ours = hooks.iter().filter(|h| h.url == spec.url);
    match ours.next() {
        Some(first) => {
            gitlab.update_hook(project.id, first.id, spec).await?;
            let mut removed = 0;
            for extra in ours {
                gitlab.delete_hook(project.id, extra.id).await?;
                removed += 1;
            }
            Ok((false, removed))
        }
        None => {
            gitlab.create_hook(project.id, spec).await?;
            Ok((true, 0))
        }
    }
}

/// Makes sure every project has exactly one hook to `url` with `secret`. Projects where the token
/// lacks Maintainer access are reported, not fatal.
pub async fn sync_hooks(
    gitlab: &GitLab,
    projects: &[ProjectRecord],
    url: &str,
    secret: &str,
) -> HookSummary {
    let spec = std::sync::Arc::new(hook_spec(url, secret));
    // One task per project, at most 16 at a time (the client bounds requests further).
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for project in projects.iter().cloned() {
        let (gitlab, spec, permits) = (gitlab.clone(), spec.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = sync_one(&gitlab, &project, &spec).await;
            (project.path, result)
        });
    }
    let mut summary = HookSummary::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok((true, removed)))) => {
                summary.created += 1;
                summary.removed_duplicates += removed;
            }
            Ok((_, Ok((false, removed)))) => {
                summary.updated += 1;
                summary.removed_duplicates += removed;
            }
            Ok((path, Err(e))) => summary.failed.push(format!("{path}: {e}")),
            Err(e) => summary.failed.push(format!("a hook task failed: {e}")),
        }
    }
    summary.failed.sort();
    summary
}
