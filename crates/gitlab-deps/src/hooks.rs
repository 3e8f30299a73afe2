//! Installs, repairs and removes the gitlab-deps webhook, writing to GitLab only what changed.
//!
//! GitLab never shows a hook's secret, so each hook's secret is remembered as a keyed fingerprint
//! (HMAC-SHA256 over URL and secret, keyed by a random per-database key): a second sync with
//! nothing changed only lists.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;

use crate::gitlab::{GitLab, GitLabError, Hook, HookOwner, HookSpec, TestOutcome};
use crate::store::{DiscoveryStore, ProjectRecord, StoreError};

/// Meta key of the fingerprint key (created by the schema migration).
const KEY_META: &str = "hook_fingerprint_key";
/// Meta key: how many of our hooks GitLab still had disabled after the last sync.
pub const DISABLED_META: &str = "hooks_disabled";
/// Store key: how many projects and groups the last hook sync could not give a hook (refused,
/// or GitLab unreachable), so the service can show hooks that are missing.
pub const MISSING_META: &str = "hooks_missing";
/// Targets worked on at once (the client bounds the requests in flight further).
const TARGETS_IN_FLIGHT: usize = 64;

/// Errors of hook management.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The fingerprint key is missing from the database (it is created by the schema migration).
    #[error("the database has no webhook fingerprint key: was it created by an older gitlab-deps?")]
    NoKey,
}

/// What to install.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The full hook URL (`<public url>/hooks/gitlab`).
    pub url: String,
    /// The shared secret GitLab sends back as `X-Gitlab-Token` (its `Debug` shows no text).
    pub secret: SecretString,
    /// Rewrite every hook with the secret, even those whose fingerprint matches.
    pub rotate_secret: bool,
    /// Only report what would change.
    pub dry_run: bool,
    /// Groups that get one group hook instead of per-project hooks (GitLab Premium).
    pub groups: Vec<String>,
}

/// One write made (or, in a dry run, that would be made).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// Project or group path.
    pub target: String,
    /// `create`, `update`, `delete` or `reenable`.
    pub action: &'static str,
    /// The hook, when it exists.
    pub hook_id: Option<u64>,
    pub reason: String,
}

/// A hook of ours GitLab had disabled after failed deliveries.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DisabledHook {
    /// Project or group path.
    pub target: String,
    /// The hook.
    pub hook_id: u64,
    /// `temporarily_disabled` or `disabled`.
    pub alert_status: String,
    /// Until when, for a temporary disable.
    pub disabled_until: Option<String>,
    /// Whether this sync re-enabled it.
    pub reenabled: bool,
    /// Why it is still disabled.
    pub detail: Option<String>,
}

/// What a hook sync did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct HookSummary {
    /// Nothing was written.
    pub dry_run: bool,
    /// Projects and groups looked at.
    pub checked: usize,
    /// Hooks added.
    pub created: usize,
    /// Hooks rewritten (settings drifted or the secret changed).
    pub updated: usize,
    /// Hooks already right.
    pub unchanged: usize,
    /// Hooks of ours removed (duplicates, and project hooks a group hook replaces).
    pub removed: usize,
    /// Disabled hooks re-enabled.
    pub reenabled: usize,
    /// Hooks of ours GitLab had disabled.
    pub disabled: Vec<DisabledHook>,
    /// Groups served by one group hook.
    pub group_hooks: Vec<String>,
    /// Every write, in target order.
    pub changes: Vec<Change>,
    /// Things the operator should know (a group falling back to project hooks).
    pub notes: Vec<String>,
    /// Targets where it failed, with the reason.
    pub failed: Vec<String>,
    /// Write requests sent to GitLab (zero in a dry run, and when nothing changed).
    pub write_requests: usize,
    /// Requests sent to GitLab in all.
    pub requests: u64,
}

impl HookSummary {
    /// Hooks of ours still disabled after this sync.
    pub fn still_disabled(&self) -> usize {
        self.disabled.iter().filter(|d| !d.reenabled).count()
    }
}

/// The hook settings gitlab-deps needs: pipeline events, and pushes to the default branch only.
/// `branch` `None` (an empty repository, or a group hook over projects with different default
/// branches) delivers pushes to every branch.
pub fn hook_spec(url: &str, secret: &SecretString, branch: Option<&str>) -> HookSpec {
    HookSpec {
        url: url.to_owned(),
        token: secret.clone(),
        push_events: true,
        pipeline_events: true,
        tag_push_events: false,
        merge_requests_events: false,
        enable_ssl_verification: url.starts_with("https://"),
        // A `*` in a branch name makes the wildcard match a few more branches: harmless, the
        // service ignores pushes to other branches anyway.
        push_events_branch_filter: branch.unwrap_or_default().to_owned(),
        branch_filter_strategy: if branch.is_some() {
            "wildcard"
        } else {
            "all_branches"
        }
        .to_owned(),
    }
}

/// Which settings of a listed hook differ from what we want (empty: none).
pub fn drift(hook: &Hook, spec: &HookSpec) -> Vec<&'static str> {
    let mut out = Vec::new();
    if hook.push_events != spec.push_events {
        out.push("push events");
    }
    if hook.pipeline_events != spec.pipeline_events {
        out.push("pipeline events");
    }
    if hook.tag_push_events != spec.tag_push_events {
        out.push("tag push events");
    }
    if hook.merge_requests_events != spec.merge_requests_events {
        out.push("merge request events");
    }
    if hook
        .enable_ssl_verification
        .is_some_and(|v| v != spec.enable_ssl_verification)
    {
        out.push("TLS verification");
    }
    if hook
        .push_events_branch_filter
        .as_deref()
        .unwrap_or_default()
        != spec.push_events_branch_filter
    {
        out.push("branch filter");
    }
    // Versions from before mid-2024 (17.x) do not report a strategy: nothing to compare then. With an empty
    // filter, wildcard and all-branches mean the same.
    if let Some(strategy) = &hook.branch_filter_strategy
        && *strategy != spec.branch_filter_strategy
        && !spec.push_events_branch_filter.is_empty()
    {
        out.push("branch filter strategy");
    }
    out
}

/// The keyed fingerprint of a hook's URL and secret, hex. Without the per-database key it tells
/// nothing about the secret.
pub fn fingerprint(key: &[u8], url: &str, secret: &SecretString) -> String {
    // A key of any length is valid for HMAC; the fallback is never taken.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    mac.update(&[0]);
    mac.update(secret.expose_secret().as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn fingerprint_key(store: &dyn DiscoveryStore) -> Result<Vec<u8>, HooksError> {
    let key = store.meta(KEY_META).await?.ok_or(HooksError::NoKey)?;
    Ok(key.into_bytes())
}

/// The branch a group hook filters on: the default branch all its known projects share, if they do.
fn common_branch<'a>(projects: impl Iterator<Item = &'a ProjectRecord>) -> Option<String> {
    let mut branch: Option<&str> = None;
    for p in projects {
        match (branch, p.default_branch.as_deref()) {
            (_, None) => continue,
            (None, Some(b)) => branch = Some(b),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
    branch.map(str::to_owned)
}

fn in_group(project: &str, group: &str) -> bool {
    project
        .strip_prefix(group.trim_matches('/'))
        .is_some_and(|rest| rest.starts_with('/'))
}

/// What a project or group should have.
#[derive(Debug, Clone)]
enum Want {
    /// Exactly one hook of ours, with these settings.
    Hook(Arc<HookSpec>),
    /// No hook to this URL, for this reason.
    Nothing { url: String, reason: &'static str },
}

/// One project or group and what it should have.
#[derive(Debug, Clone)]
struct Target {
    owner: HookOwner,
    name: String,
    want: Want,
}

/// What one target's sync did.
#[derive(Debug, Default)]
struct Outcome {
    changes: Vec<Change>,
    created: usize,
    updated: usize,
    unchanged: usize,
    removed: usize,
    disabled: Vec<DisabledHook>,
    writes: usize,
    fingerprints: Vec<(u64, String)>,
    forget: Vec<u64>,
}

struct Job {
    gitlab: GitLab,
    fingerprints: Arc<HashMap<u64, String>>,
    wanted_fingerprint: String,
    rotate: bool,
    dry_run: bool,
}

impl Job {
    async fn run(&self, target: &Target) -> Result<Outcome, GitLabError> {
        let mut out = Outcome::default();
        let hooks = self.gitlab.hooks(&target.owner).await?;
        let spec = match &target.want {
            Want::Hook(spec) => spec,
            Want::Nothing { url, reason } => {
                for hook in hooks.iter().filter(|h| h.url == *url) {
                    self.delete(target, hook.id, reason, &mut out).await?;
                }
                return Ok(out);
            }
        };
        let mut ours: Vec<&Hook> = hooks.iter().filter(|h| h.url == spec.url).collect();
        ours.sort_by_key(|h| h.id);
        let Some((first, extras)) = ours.split_first() else {
            self.create(target, spec, &mut out).await?;
            return Ok(out);
        };
        for extra in extras {
            self.delete(target, extra.id, "a second hook to our URL", &mut out)
                .await?;
        }
        let mut reasons = drift(first, spec);
        let fingerprint_matches =
            self.fingerprints.get(&first.id) == Some(&self.wanted_fingerprint);
        if self.rotate {
            reasons.push("secret rotation");
        } else if !fingerprint_matches {
            reasons.push("secret");
        }
        if reasons.is_empty() {
            out.unchanged += 1;
        } else {
            out.changes.push(Change {
                target: target.name.clone(),
                action: "update",
                hook_id: Some(first.id),
                reason: reasons.join(", "),
            });
            if !self.dry_run {
                out.writes += 1;
                self.gitlab
                    .update_hook(&target.owner, first.id, spec)
                    .await?;
                out.fingerprints
                    .push((first.id, self.wanted_fingerprint.clone()));
            }
            out.updated += 1;
        }
        if first.is_disabled() {
            self.reenable(target, first, &spec.url, &mut out).await?;
        }
        Ok(out)
    }

    async fn create(
        &self,
        target: &Target,
        spec: &HookSpec,
        out: &mut Outcome,
    ) -> Result<(), GitLabError> {
        out.changes.push(Change {
            target: target.name.clone(),
            action: "create",
            hook_id: None,
            reason: "no hook to our URL".to_owned(),
        });
        out.created += 1;
        if self.dry_run {
            return Ok(());
        }
        out.writes += 1;
        let hook = match self.gitlab.create_hook(&target.owner, spec).await {
            Ok(hook) => hook,
            // The hook may have been created before the failure: look before creating again.
            Err(e) if may_have_happened(&e) => {
                let again = self.gitlab.hooks(&target.owner).await?;
                match again
                    .into_iter()
                    .filter(|h| h.url == spec.url)
                    .min_by_key(|h| h.id)
                {
                    Some(existing) => existing,
                    None => {
                        out.writes += 1;
                        self.gitlab.create_hook(&target.owner, spec).await?
                    }
                }
            }
            Err(e) => return Err(e),
        };
        out.fingerprints
            .push((hook.id, self.wanted_fingerprint.clone()));
        Ok(())
    }

    async fn delete(
        &self,
        target: &Target,
        hook_id: u64,
        reason: &str,
        out: &mut Outcome,
    ) -> Result<(), GitLabError> {
        out.changes.push(Change {
            target: target.name.clone(),
            action: "delete",
            hook_id: Some(hook_id),
            reason: reason.to_owned(),
        });
        out.removed += 1;
        if !self.dry_run {
            out.writes += 1;
            self.gitlab.delete_hook(&target.owner, hook_id).await?;
            out.forget.push(hook_id);
        }
        Ok(())
    }

    async fn reenable(
        &self,
        target: &Target,
        hook: &Hook,
        spec_url: &str,
        out: &mut Outcome,
    ) -> Result<(), GitLabError> {
        let mut disabled = DisabledHook {
            target: target.name.clone(),
            hook_id: hook.id,
            alert_status: hook.alert_status.clone().unwrap_or_default(),
            disabled_until: hook.disabled_until.clone(),
            reenabled: false,
            detail: None,
        };
        out.changes.push(Change {
            target: target.name.clone(),
            action: "reenable",
            hook_id: Some(hook.id),
            reason: format!(
                "GitLab disabled it ({}): a test delivery re-enables it",
                disabled.alert_status
            ),
        });
        if self.dry_run {
            disabled.detail = Some("dry run".to_owned());
        } else {
            out.writes += 1;
            match self.gitlab.test_hook(&target.owner, hook.id).await? {
                TestOutcome::Delivered => disabled.reenabled = true,
                TestOutcome::Failed(message) => {
                    disabled.detail = Some(format!(
                        "the test delivery failed ({message}): is the service reachable from GitLab at {}?",
                        spec_url
                    ));
                }
                TestOutcome::Unsupported => {
                    disabled.detail = Some(
                        "this GitLab cannot test hooks through its API (before 16.11): use Test in the project's Settings > Webhooks"
                            .to_owned(),
                    );
                }
            }
        }
        out.disabled.push(disabled);
        Ok(())
    }
}

/// Whether a failed write may nonetheless have taken effect (5xx, or the answer was lost).
fn may_have_happened(e: &GitLabError) -> bool {
    matches!(e, GitLabError::Status { .. } | GitLabError::Network { .. })
}

/// Runs `job` over `targets`, a bounded number at a time; results in target order.
async fn run_all(
    job: Arc<Job>,
    targets: Vec<Target>,
) -> Vec<(Target, Result<Outcome, GitLabError>)> {
    let permits = Arc::new(tokio::sync::Semaphore::new(TARGETS_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, target) in targets.into_iter().enumerate() {
        let (job, permits) = (Arc::clone(&job), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = job.run(&target).await;
            (i, target, result)
        });
    }
    let mut results = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        // A panicking task loses only its own target; it shows as missing from the summary.
        if let Ok((i, target, result)) = joined {
            results.insert(i, (target, result));
        }
    }
    results.into_values().collect()
}

fn fold(
    summary: &mut HookSummary,
    target: &Target,
    result: Result<Outcome, GitLabError>,
) -> Option<Outcome> {
    summary.checked += 1;
    match result {
        Ok(out) => {
            summary.created += out.created;
            summary.updated += out.updated;
            summary.unchanged += out.unchanged;
            summary.removed += out.removed;
            summary.reenabled += out.disabled.iter().filter(|d| d.reenabled).count();
            summary.write_requests += out.writes;
            summary.changes.extend(out.changes.iter().cloned());
            summary.disabled.extend(out.disabled.iter().cloned());
            Some(out)
        }
        Err(e) => {
            summary.failed.push(format!("{}: {e}", target.name));
            None
        }
    }
}

/// Makes sure every project has exactly one hook to `options.url` with the secret and settings we
/// need (or its group has one, for `options.groups`), writing only what differs. Per-target
/// failures (a project without Maintainer access, say) are reported in the summary, not fatal.
pub async fn sync_hooks(
    gitlab: &GitLab,
    store: &dyn DiscoveryStore,
    projects: &[ProjectRecord],
    options: &SyncOptions,
) -> Result<HookSummary, HooksError> {
    let key = fingerprint_key(store).await?;
    let job = Arc::new(Job {
        gitlab: gitlab.clone(),
        fingerprints: Arc::new(store.hook_fingerprints().await?),
        wanted_fingerprint: fingerprint(&key, &options.url, &options.secret),
        rotate: options.rotate_secret,
        dry_run: options.dry_run,
    });
    let requests_before = gitlab.request_count();
    let mut summary = HookSummary {
        dry_run: options.dry_run,
        ..HookSummary::default()
    };
    let mut set = Vec::new();
    let mut forget = Vec::new();

    // Group hooks first: a project's own hook is removed only once its group's hook is in place.
    let group_targets: Vec<Target> = options
        .groups
        .iter()
        .map(|g| g.trim_matches('/').to_owned())
        .map(|g| {
            let branch = common_branch(projects.iter().filter(|p| in_group(&p.path, &g)));
            Target {
                owner: HookOwner::Group(g.clone()),
                want: Want::Hook(Arc::new(hook_spec(
                    &options.url,
                    &options.secret,
                    branch.as_deref(),
                ))),
                name: g,
            }
        })
        .collect();
    let mut covered = Vec::new();
    for (target, result) in run_all(Arc::clone(&job), group_targets).await {
        match result {
            Err(GitLabError::NotFound { .. } | GitLabError::Forbidden { .. }) => {
                summary.checked += 1;
                summary.notes.push(format!(
                    "group {}: GitLab refused group webhooks (they need GitLab Premium and the Owner role); its projects keep their own hooks",
                    target.name
                ));
            }
            result => {
                if let Some(out) = fold(&mut summary, &target, result) {
                    set.extend(out.fingerprints);
                    forget.extend(out.forget);
                    summary.group_hooks.push(target.name.clone());
                    covered.push(target.name.clone());
                }
            }
        }
    }

    let project_targets: Vec<Target> = projects
        .iter()
        .map(|p| Target {
            owner: HookOwner::Project(p.id),
            name: p.path.clone(),
            want: if covered.iter().any(|g| in_group(&p.path, g)) {
                Want::Nothing {
                    url: options.url.clone(),
                    reason: "a group hook replaces it",
                }
            } else {
                Want::Hook(Arc::new(hook_spec(
                    &options.url,
                    &options.secret,
                    p.default_branch.as_deref(),
                )))
            },
        })
        .collect();
    for (target, result) in run_all(job, project_targets).await {
        if let Some(out) = fold(&mut summary, &target, result) {
            set.extend(out.fingerprints);
            forget.extend(out.forget);
        }
    }
    summary.failed.sort();
    summary.requests = gitlab.request_count() - requests_before;
    if !options.dry_run {
        store.update_hook_fingerprints(&set, &forget).await?;
        store
            .set_meta(DISABLED_META, &summary.still_disabled().to_string())
            .await?;
        store
            .set_meta(MISSING_META, &summary.failed.len().to_string())
            .await?;
    }
    Ok(summary)
}

/// Removes every hook to `url` from the projects and groups given, and nothing else. Groups where
/// GitLab has no group hooks (Free) or refuses them are skipped: nothing of ours can be there.
pub async fn remove_hooks(
    gitlab: &GitLab,
    store: &dyn DiscoveryStore,
    projects: &[ProjectRecord],
    groups: &[String],
    url: &str,
    dry_run: bool,
) -> Result<HookSummary, HooksError> {
    let job = Arc::new(Job {
        gitlab: gitlab.clone(),
        fingerprints: Arc::new(HashMap::new()),
        wanted_fingerprint: String::new(),
        rotate: false,
        dry_run,
    });
    let requests_before = gitlab.request_count();
    let mut summary = HookSummary {
        dry_run,
        ..HookSummary::default()
    };
    let want = Want::Nothing {
        url: url.to_owned(),
        reason: "uninstall",
    };
    let targets = groups
        .iter()
        .map(|g| Target {
            owner: HookOwner::Group(g.trim_matches('/').to_owned()),
            name: g.trim_matches('/').to_owned(),
            want: want.clone(),
        })
        .chain(projects.iter().map(|p| Target {
            owner: HookOwner::Project(p.id),
            name: p.path.clone(),
            want: want.clone(),
        }))
        .collect();
    let mut forget = Vec::new();
    for (target, result) in run_all(job, targets).await {
        let skipped = matches!(target.owner, HookOwner::Group(_))
            && matches!(
                result,
                Err(GitLabError::NotFound { .. } | GitLabError::Forbidden { .. })
            );
        if skipped {
            summary.checked += 1;
            continue;
        }
        if let Some(out) = fold(&mut summary, &target, result) {
            forget.extend(out.forget);
        }
    }
    summary.failed.sort();
    summary.requests = gitlab.request_count() - requests_before;
    if !dry_run {
        store.update_hook_fingerprints(&[], &forget).await?;
        store.set_meta(DISABLED_META, "0").await?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> SecretString {
        SecretString::from(text)
    }

    fn listed(spec: &HookSpec) -> Hook {
        Hook {
            id: 7,
            url: spec.url.clone(),
            push_events: spec.push_events,
            pipeline_events: spec.pipeline_events,
            tag_push_events: spec.tag_push_events,
            merge_requests_events: spec.merge_requests_events,
            enable_ssl_verification: Some(spec.enable_ssl_verification),
            push_events_branch_filter: Some(spec.push_events_branch_filter.clone()),
            branch_filter_strategy: Some(spec.branch_filter_strategy.clone()),
            alert_status: Some("executable".into()),
            disabled_until: None,
        }
    }

    proptest::proptest! {
        /// Whatever the branch name and scheme, a hook listed back exactly as we wrote it is not
        /// drift, and changing the branch is.
        #[test]
        fn what_we_wrote_reads_back_without_drift(
            branch in proptest::option::of("[a-zA-Z0-9*/._-]{1,30}"),
            https in proptest::bool::ANY,
        ) {
            let url = if https { "https://d.example/hooks/gitlab" } else { "http://d.example/hooks/gitlab" };
            let spec = hook_spec(url, &s("s"), branch.as_deref());
            proptest::prop_assert!(drift(&listed(&spec), &spec).is_empty());
            let other = hook_spec(url, &s("s"), Some("some-other-branch"));
            if branch.as_deref() != Some("some-other-branch") {
                proptest::prop_assert!(drift(&listed(&spec), &other).contains(&"branch filter"));
            }
        }
    }

    #[test]
    fn a_hook_as_we_left_it_has_no_drift() {
        let spec = hook_spec("https://deps.example/hooks/gitlab", &s("s"), Some("main"));
        assert!(drift(&listed(&spec), &spec).is_empty());
    }

    #[test]
    fn older_gitlab_without_strategy_or_with_nulls_is_not_drift() {
        let spec = hook_spec("http://deps.example/hooks/gitlab", &s("s"), None);
        let mut hook = listed(&spec);
        hook.branch_filter_strategy = None;
        hook.push_events_branch_filter = None;
        hook.enable_ssl_verification = None;
        assert!(drift(&hook, &spec).is_empty());
        let from_json: Hook = serde_json::from_value(serde_json::json!({
            "id": 1, "url": "http://x/", "push_events": null, "pipeline_events": true,
            "push_events_branch_filter": null, "alert_status": null, "unknown_field": [1]
        }))
        .unwrap();
        assert!(!from_json.push_events && from_json.pipeline_events);
    }

    #[test]
    fn each_drifted_setting_is_named() {
        let spec = hook_spec("https://deps.example/hooks/gitlab", &s("s"), Some("main"));
        let mut hook = listed(&spec);
        hook.pipeline_events = false;
        hook.push_events_branch_filter = Some("master".into());
        hook.branch_filter_strategy = Some("regex".into());
        assert_eq!(
            drift(&hook, &spec),
            ["pipeline events", "branch filter", "branch filter strategy"]
        );
    }

    #[test]
    fn the_fingerprint_depends_on_key_url_and_secret() {
        let a = fingerprint(b"k1", "http://u/", &s("s"));
        assert_eq!(a.len(), 64);
        assert_eq!(a, fingerprint(b"k1", "http://u/", &s("s")));
        assert_ne!(a, fingerprint(b"k2", "http://u/", &s("s")));
        assert_ne!(a, fingerprint(b"k1", "http://v/", &s("s")));
        assert_ne!(a, fingerprint(b"k1", "http://u/", &s("t")));
        // The separator keeps URL and secret apart.
        assert_ne!(
            fingerprint(b"k", "ab", &s("c")),
            fingerprint(b"k", "a", &s("bc"))
        );
        assert!(!a.contains('s') || a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_group_hook_filters_only_on_a_shared_default_branch() {
        let rec = |path: &str, branch: Option<&str>| ProjectRecord {
            id: 1,
            path: path.into(),
            default_branch: branch.map(Into::into),
            web_url: String::new(),
            registry_prefix: None,
            last_activity_at: None,
            head_sha: None,
            checked_at_ms: None,
        };
        let same = [
            rec("g/a", Some("main")),
            rec("g/b", None),
            rec("g/c", Some("main")),
        ];
        assert_eq!(common_branch(same.iter()).as_deref(), Some("main"));
        let mixed = [rec("g/a", Some("main")), rec("g/b", Some("master"))];
        assert_eq!(common_branch(mixed.iter()), None);
        assert!(in_group("g/sub/a", "g") && in_group("g/a", "g/"));
        assert!(!in_group("gx/a", "g") && !in_group("g", "g"));
    }
}
