//! `hooks sync`, `hooks remove` and `update` (scan, then hooks sync).

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use secrecy::SecretString;

use super::Context;
use super::output::{ScanJson, UpdateJson, print_json};
use crate::config;
use crate::hooks::{HookSummary, SyncOptions, remove_hooks, sync_hooks};

/// `hooks`.
#[derive(Debug, Args)]
pub struct HooksArgs {
    /// What to do
    #[command(subcommand)]
    pub command: HooksCommand,
}

/// Where GitLab reaches the service, and the secret it must send.
#[derive(Debug, Args, Clone, Default)]
pub struct EndpointArgs {
    /// URL under which GitLab reaches the service
    #[arg(long, env = "GITLAB_DEPS_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// File holding the webhook secret (or set GITLAB_DEPS_WEBHOOK_SECRET)
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
}

/// `hooks sync` options.
#[derive(Debug, Args, Clone, Default)]
pub struct SyncArgs {
    /// Where GitLab reaches the service.
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Rewrite every hook with the current secret (after changing it)
    #[arg(long)]
    pub rotate_secret: bool,
    /// Only print what would change; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// `hooks` subcommands.
#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Install or repair the webhook on every known project (or group, with `[hooks] group`),
    /// writing only what changed
    Sync(SyncArgs),
    /// Uninstall: remove every webhook to our URL from the known projects and configured groups,
    /// and nothing else
    Remove {
        /// URL under which GitLab reaches the service
        #[arg(long, env = "GITLAB_DEPS_PUBLIC_URL", value_name = "URL")]
        public_url: Option<String>,
        /// Only print what would be removed
        #[arg(long)]
        dry_run: bool,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
}

/// `update`: what the old tool's timer did.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Re-read every project's files, even those whose head commit did not move
    #[arg(long)]
    pub full: bool,
    /// Where GitLab reaches the service.
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Rewrite every hook with the current secret (after changing it)
    #[arg(long)]
    pub rotate_secret: bool,
    /// Print {"scan": ..., "hooks": ...} as JSON
    #[arg(long)]
    pub json: bool,
}

/// The webhook secret: the flag's file, then GITLAB_DEPS_WEBHOOK_SECRET, then the config's file.
pub fn webhook_secret(
    ctx: &Context,
    file: Option<&PathBuf>,
) -> anyhow::Result<Option<SecretString>> {
    if let Some(path) = file {
        return Ok(Some(config::read_secret_file(
            path,
            config::WEBHOOK_SECRET,
        )?));
    }
    if let Some(secret) = config::secret_from_env("GITLAB_DEPS_WEBHOOK_SECRET") {
        return Ok(Some(secret));
    }
    if let Some(path) = &ctx.file.serve.webhook_secret_file {
        return Ok(Some(config::read_secret_file(
            path,
            config::WEBHOOK_SECRET,
        )?));
    }
    Ok(None)
}

/// The public URL without a trailing slash: the flag, then the config.
pub fn public_url(ctx: &Context, flag: Option<&String>) -> Option<String> {
    flag.cloned()
        .or_else(|| ctx.file.serve.public_url.clone())
        .map(|u| u.trim_end_matches('/').to_owned())
}

/// The hook URL for a public URL.
pub fn hook_url(public_url: &str) -> String {
    format!("{public_url}/hooks/gitlab")
}

/// Groups that get a group hook: the configured scan groups, with `[hooks] group = true`.
pub fn hook_groups(ctx: &Context) -> Vec<String> {
    if ctx.file.hooks.group {
        ctx.file.scan.groups.clone()
    } else {
        Vec::new()
    }
}

fn require_url(ctx: &Context, flag: Option<&String>) -> anyhow::Result<String> {
    match public_url(ctx, flag) {
        Some(url) => Ok(url),
        None => bail!("no public URL: pass --public-url URL (how GitLab reaches the service)"),
    }
}

/// Runs `hooks sync` and prints its summary. Fails when a target failed.
pub async fn sync(ctx: &Context, args: &SyncArgs) -> anyhow::Result<()> {
    let summary = run_sync(ctx, args).await?;
    report(&summary, args.json, "sync")
}

/// Runs `hooks sync` and returns its summary.
async fn run_sync(ctx: &Context, args: &SyncArgs) -> anyhow::Result<HookSummary> {
    let url = require_url(ctx, args.endpoint.public_url.as_ref())?;
    let Some(secret) = webhook_secret(ctx, args.endpoint.webhook_secret_file.as_ref())? else {
        bail!(
            "no webhook secret: pass --webhook-secret-file FILE or set GITLAB_DEPS_WEBHOOK_SECRET"
        );
    };
    let store = ctx.store().await?;
    let projects = store.projects().await?;
    if projects.is_empty() {
        bail!("the database holds no projects: run `gitlab-deps scan` first");
    }
    let gitlab = ctx.gitlab()?;
    let options = SyncOptions {
        url: hook_url(&url),
        secret,
        rotate_secret: args.rotate_secret,
        dry_run: args.dry_run,
        groups: hook_groups(ctx),
    };
    Ok(sync_hooks(&gitlab, store.as_ref(), &projects, &options).await?)
}

fn report(summary: &HookSummary, json: bool, verb: &str) -> anyhow::Result<()> {
    if json {
        print_json(summary)?;
    } else {
        print_summary(summary, verb);
    }
    fail_on_failed(summary)
}

fn fail_on_failed(summary: &HookSummary) -> anyhow::Result<()> {
    if !summary.failed.is_empty() {
        bail!(
            "{} project(s) or group(s) failed (see above)",
            summary.failed.len()
        );
    }
    Ok(())
}

fn print_summary(s: &HookSummary, verb: &str) {
    let would = if s.dry_run { "would be " } else { "" };
    for c in &s.changes {
        let id = c.hook_id.map(|i| format!(" #{i}")).unwrap_or_default();
        let action = if s.dry_run {
            format!("would {}", c.action)
        } else {
            c.action.to_owned()
        };
        println!("{action} {}{id}: {}", c.target, c.reason);
    }
    if verb == "remove" {
        println!(
            "Webhooks: {} {would}removed from {} projects and groups, {} failed.",
            s.removed,
            s.checked,
            s.failed.len()
        );
    } else {
        println!(
            "Webhooks: {} {would}added, {} {would}repaired, {} unchanged, {} {would}removed, {} {would}re-enabled, {} failed ({} write requests).",
            s.created,
            s.updated,
            s.unchanged,
            s.removed,
            s.reenabled,
            s.failed.len(),
            s.write_requests,
        );
    }
    for g in &s.group_hooks {
        println!("group hook: {g}");
    }
    for d in s.disabled.iter().filter(|d| !d.reenabled) {
        println!(
            "disabled: {} #{} ({}{}){}",
            d.target,
            d.hook_id,
            d.alert_status,
            d.disabled_until
                .as_deref()
                .map(|u| format!(" until {u}"))
                .unwrap_or_default(),
            d.detail
                .as_deref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        );
    }
    for n in &s.notes {
        println!("note: {n}");
    }
    for f in &s.failed {
        println!("failed: {f}");
    }
}

/// `hooks ...`.
pub async fn run(ctx: &Context, args: HooksArgs) -> anyhow::Result<()> {
    match args.command {
        HooksCommand::Sync(sync_args) => sync(ctx, &sync_args).await,
        HooksCommand::Remove {
            public_url: flag,
            dry_run,
            json,
        } => {
            let url = require_url(ctx, flag.as_ref())?;
            let store = ctx.store().await?;
            let projects = store.projects().await?;
            let gitlab = ctx.gitlab()?;
            // Group hooks may have been installed under an earlier config: look in every
            // configured group, whatever `[hooks] group` says now.
            let groups = ctx.file.scan.groups.clone();
            let summary = remove_hooks(
                &gitlab,
                store.as_ref(),
                &projects,
                &groups,
                &hook_url(&url),
                dry_run,
            )
            .await?;
            report(&summary, json, "remove")
        }
    }
}

/// `update`: `scan`, then `hooks sync`. Stops before the hooks when the scan fails.
pub async fn update(ctx: &Context, args: UpdateArgs) -> anyhow::Result<()> {
    // Check the hook settings before spending a scan on them.
    require_url(ctx, args.endpoint.public_url.as_ref())?;
    if webhook_secret(ctx, args.endpoint.webhook_secret_file.as_ref())?.is_none() {
        bail!(
            "no webhook secret: pass --webhook-secret-file FILE or set GITLAB_DEPS_WEBHOOK_SECRET"
        );
    }
    let (scanned, cycles) = super::scan_cmd::scan(ctx, Vec::new(), args.full, args.json).await?;
    if !args.json {
        super::scan_cmd::print_summary(&scanned, &cycles);
    }
    let sync_args = SyncArgs {
        endpoint: args.endpoint,
        rotate_secret: args.rotate_secret,
        dry_run: false,
        json: args.json,
    };
    if !args.json {
        return sync(ctx, &sync_args).await;
    }
    let hooks = run_sync(ctx, &sync_args).await?;
    let out = UpdateJson {
        scan: ScanJson::new(&scanned, cycles),
        hooks,
    };
    print_json(&out)?;
    fail_on_failed(&out.hooks)
}
