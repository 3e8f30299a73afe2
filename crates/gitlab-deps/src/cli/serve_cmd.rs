//! `serve`, `rebuild`, `cancel`, `status` and `hooks`: the orchestration commands.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};
use tokio_util::sync::CancellationToken;

use super::Context;
use super::hooks_cmd::{hook_groups, hook_url, public_url, webhook_secret};
use super::output::{CancelJson, PipelineJson, PlanJson, RebuildJson, print_json, table};
use crate::cascade::{Input, VAR_CASCADE, VAR_ROOT, VAR_UPSTREAM};
use crate::config::{self, PathPatterns, ServeFileConfig};
use crate::orchestrate::{self, EngineOptions, LeaseOptions, RecoveryOptions, Snapshot, describe};
use crate::service::{
    self, HookSyncConfig, HttpLimits, HttpOptions, Service, ServiceConfig, defaults,
};

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "GITLAB_DEPS_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// URL under which GitLab reaches this service (used by --sync-hooks)
    #[arg(long, env = "GITLAB_DEPS_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// File holding the webhook secret (or set GITLAB_DEPS_WEBHOOK_SECRET)
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Accept webhooks without a secret (only for trusted networks)
    #[arg(long)]
    pub insecure_no_webhook_secret: bool,
    /// Largest accepted webhook body in bytes [default: 5242880]
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// At most this many pipelines created by gitlab-deps running at once [default: 10]
    #[arg(long, value_name = "N")]
    pub max_running: Option<usize>,
    /// At most this many pipelines created per minute [default: unlimited]
    #[arg(long, value_name = "N")]
    pub max_per_minute: Option<u32>,
    /// Poll a created pipeline whose final status has not arrived after this long [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub reconcile_after: Option<String>,
    /// Rescan the whole instance this often; 0s disables [default: 6h]
    #[arg(long, value_name = "DURATION")]
    pub rescan_every: Option<String>,
    /// Ask GitLab for default-branch successes whose webhook never arrived this often; 0s: only at start-up and after failures to record a webhook [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub catch_up_interval: Option<String>,
    /// GitLab requests overdue polls and catch-up may spend per minute on average [default: 50]
    #[arg(long, value_name = "N")]
    pub recovery_requests_per_minute: Option<u32>,
    /// Install or repair the webhook on every known project at start, then after every rescan interval (needs --public-url)
    #[arg(long)]
    pub sync_hooks: bool,
    /// File keeping webhook deliveries while the database is busy or unreachable [default: the database file's name + .spool]
    #[arg(long, value_name = "FILE")]
    pub spool: Option<PathBuf>,
    /// How long the engine's lease lasts unrenewed; with replicas on one database, a failed leader is replaced within about this long [default: 3s]
    #[arg(long, value_name = "DURATION")]
    pub lease_ttl: Option<String>,
    /// Name put in front of this replica's id in the status (default: none; the id has host, pid and a random part)
    #[arg(long, env = "GITLAB_DEPS_REPLICA_NAME", value_name = "NAME")]
    pub replica_name: Option<String>,
}

/// `rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Project to rebuild now
    pub project: String,
    /// Only print what would be rebuilt, in order
    #[arg(long)]
    pub dry_run: bool,
    /// Let the running service start it, after any pending work above it and within its throttle
    /// (instead of starting a pipeline now)
    #[arg(long, conflicts_with = "dry_run")]
    pub queue: bool,
    /// Print what was done as JSON
    #[arg(long)]
    pub json: bool,
}

/// `cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Projects whose pending rebuild is dropped
    #[arg(required = true, value_name = "PROJECT")]
    pub projects: Vec<String>,
    /// Also drop the pending rebuilds of everything below them
    #[arg(long)]
    pub descendants: bool,
    /// Also forget their running pipelines and failures (a pipeline that never finishes, parked
    /// on a manual job, say); what waits below them is then started
    #[arg(long)]
    pub force: bool,
    /// Print what was asked as JSON
    #[arg(long)]
    pub json: bool,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

fn duration(
    key: &'static str,
    flag: Option<&String>,
    file: Option<&String>,
) -> anyhow::Result<Option<Duration>> {
    flag.or(file)
        .map(|value| Ok(config::parse_duration(key, value)?))
        .transpose()
}

/// Builds the engine options from flags and the config file, over the defaults.
pub fn engine_options(ctx: &Context, args: &ServeArgs) -> anyhow::Result<EngineOptions> {
    let cascade = &ctx.file.cascade;
    let defaults = EngineOptions::default();
    let rescan = duration(
        "rescan_every",
        args.rescan_every.as_ref(),
        ctx.file.serve.rescan_every.as_ref(),
    )?;
    let catch_up = duration(
        "catch_up_interval",
        args.catch_up_interval.as_ref(),
        ctx.file.serve.catch_up_interval.as_ref(),
    )?;
    let recovery = RecoveryOptions {
        catch_up_interval: match catch_up {
            Some(every) => (!every.is_zero()).then_some(every),
            None => defaults.recovery.catch_up_interval,
        },
        requests_per_minute: args
            .recovery_requests_per_minute
            .or(ctx.file.serve.recovery_requests_per_minute)
            .unwrap_or(defaults.recovery.requests_per_minute)
            .max(1),
        ..defaults.recovery.clone()
    };
    Ok(EngineOptions {
        max_running: args
            .max_running
            .or(cascade.max_running)
            .unwrap_or(defaults.max_running)
            .max(1),
        max_per_minute: args.max_per_minute.or(cascade.max_per_minute),
        exclude: PathPatterns::new("cascade.exclude", &cascade.exclude)?,
        reconcile_after: duration(
            "reconcile_after",
            args.reconcile_after.as_ref(),
            cascade.reconcile_after.as_ref(),
        )?
        .unwrap_or(defaults.reconcile_after),
        rescan_every: match rescan {
            Some(every) => (!every.is_zero()).then_some(every),
            None => defaults.rescan_every,
        },
        watched_files: Vec::new(),
        recovery,
    })
}

/// The HTTP limits from `[serve]`, over the defaults.
fn http_limits(file: &ServeFileConfig) -> anyhow::Result<HttpLimits> {
    let defaults = HttpLimits::default();
    let limits = HttpLimits {
        header_timeout: duration("serve.header_timeout", file.header_timeout.as_ref(), None)?
            .unwrap_or(defaults.header_timeout),
        body_timeout: duration("serve.body_timeout", file.body_timeout.as_ref(), None)?
            .unwrap_or(defaults.body_timeout),
        max_connections: file.max_connections.unwrap_or(defaults.max_connections),
        max_body_bytes_in_flight: file
            .max_body_bytes_in_flight
            .unwrap_or(defaults.max_body_bytes_in_flight),
    };
    anyhow::ensure!(
        !limits.header_timeout.is_zero() && !limits.body_timeout.is_zero(),
        "serve.header_timeout and serve.body_timeout must be longer than 0s"
    );
    anyhow::ensure!(
        limits.max_connections > 0,
        "serve.max_connections must be at least 1"
    );
    Ok(limits)
}

/// Secrets shorter than this are easy to guess.
const MIN_SECRET_BYTES: usize = 16;

/// Resolves `serve`'s flags, environment and config file into the service's configuration.
pub fn service_config(
    ctx: &Context,
    args: &ServeArgs,
    secret: Option<SecretString>,
) -> anyhow::Result<ServiceConfig> {
    let hook_sync = if args.sync_hooks {
        let Some(url) = public_url(ctx, args.public_url.as_ref()) else {
            bail!("--sync-hooks needs --public-url (how GitLab reaches this service)");
        };
        Some(HookSyncConfig {
            url: hook_url(&url),
            groups: hook_groups(ctx),
        })
    } else {
        None
    };
    let mut config = ServiceConfig::new(ctx.gitlab_options()?, ctx.scan_settings()?);
    config.registry = ctx.registry();
    config.engine = engine_options(ctx, args)?;
    config.http = HttpOptions {
        webhook_secret: secret,
        max_body_bytes: args
            .max_body_bytes
            .or(ctx.file.serve.max_body_bytes)
            .unwrap_or(config.http.max_body_bytes),
        spool: Some(ctx.spool_path(args.spool.clone())?),
        limits: http_limits(&ctx.file.serve)?,
        read_access: service::ReadAccess {
            token: ctx
                .file
                .serve
                .read_token_file
                .as_deref()
                .map(|path| crate::config::read_secret_file(path, "status page read token"))
                .transpose()?,
            trusted_user_header: ctx.file.serve.trusted_user_header.clone(),
        },
    };
    config.hook_sync = hook_sync;
    config.lease = lease_options(ctx, args)?;
    config.replica_name = args
        .replica_name
        .clone()
        .or_else(|| ctx.file.serve.replica_name.clone());
    Ok(config)
}

/// The lease timing from `--lease-ttl` / `[serve] lease_ttl`, over the defaults.
fn lease_options(ctx: &Context, args: &ServeArgs) -> anyhow::Result<LeaseOptions> {
    let ttl = duration(
        "lease_ttl",
        args.lease_ttl.as_ref(),
        ctx.file.serve.lease_ttl.as_ref(),
    )?;
    let Some(ttl) = ttl else {
        return Ok(LeaseOptions::default());
    };
    anyhow::ensure!(
        ttl >= defaults::LEASE_TTL_MIN,
        "lease_ttl must be at least {}",
        humantime::format_duration(defaults::LEASE_TTL_MIN)
    );
    Ok(LeaseOptions::with_ttl(ttl))
}

pub async fn serve(ctx: &Context, args: ServeArgs) -> anyhow::Result<()> {
    let secret = webhook_secret(ctx, args.webhook_secret_file.as_ref())?;
    if secret.is_none() && !args.insecure_no_webhook_secret {
        bail!(
            "no webhook secret: pass --webhook-secret-file FILE or set GITLAB_DEPS_WEBHOOK_SECRET \
             (or --insecure-no-webhook-secret to accept unauthenticated webhooks)"
        );
    }
    if let Some(short) = secret
        .as_ref()
        .map(|s| s.expose_secret().len())
        .filter(|n| *n < MIN_SECRET_BYTES)
    {
        tracing::warn!(
            "the webhook secret is only {short} bytes long: use at least {MIN_SECRET_BYTES} random \
             bytes (e.g. `openssl rand -hex 32`), then `gitlab-deps hooks sync --rotate-secret`"
        );
    }
    let config = service_config(ctx, &args, secret)?;
    let store = ctx.store().await?;
    // The spool is imported through a second handle, so an import waiting for a busy database
    // holds up nothing else.
    let importer = ctx.store().await?;
    let service = Service::new(config, Arc::clone(&store))
        .await?
        .with_spool_importer(importer);
    if store.projects().await?.is_empty() {
        tracing::warn!(
            "the database holds no projects: run `gitlab-deps scan` so that changes can cascade"
        );
    }
    let listen = args
        .listen
        .clone()
        .or_else(|| ctx.file.serve.listen.clone())
        .unwrap_or_else(|| defaults::LISTEN.to_owned());
    let (listener, addr) = service::bind(&listen).await?;
    println!("gitlab-deps serving on http://{addr} (webhooks: POST http://{addr}/hooks/gitlab)");
    let _ = std::io::stdout().flush();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    service.serve(listener, shutdown).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM (systemd's stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn rebuild(ctx: &Context, args: RebuildArgs) -> anyhow::Result<()> {
    let store = ctx.store().await?;
    let graph = ctx.graph(store.as_ref()).await?;
    let project = super::query::require(&graph, &args.project)?.to_owned();
    let waves = graph.plan(&[project.as_str()]);
    let json = |action, pipeline, waves| {
        print_json(&RebuildJson {
            project: project.clone(),
            action,
            pipeline,
            plan: PlanJson {
                roots: vec![project.clone()],
                waves,
            },
        })
    };
    if args.dry_run {
        if args.json {
            return json("dry_run", None, waves);
        }
        println!("Would start a pipeline for {project} now.");
        super::query::print_plan(&[project.as_str()], &waves);
        return Ok(());
    }
    if args.queue {
        orchestrate::enqueue_operator_input(
            store.as_ref(),
            &Input::Rebuild {
                project: project.clone(),
            },
        )
        .await?;
        if args.json {
            return json("queued", None, waves);
        }
        println!(
            "Queued a rebuild of {project} and what is built on it: the running service starts it once nothing above it is pending."
        );
        return Ok(());
    }
    let record = store
        .projects()
        .await?
        .into_iter()
        .find(|r| r.path == project)
        .context("the project vanished from the database")?;
    let Some(branch) = record.default_branch.clone() else {
        bail!("{project} has no default branch");
    };
    let gitlab = ctx.gitlab()?;
    let cascade_id = format!("manual-{}", uuid::Uuid::new_v4().simple());
    let variables = vec![
        (VAR_UPSTREAM.to_owned(), String::new()),
        (VAR_ROOT.to_owned(), project.clone()),
        (VAR_CASCADE.to_owned(), cascade_id),
    ];
    let pipeline = gitlab
        .create_pipeline(record.id, &branch, &variables)
        .await?;
    if args.json {
        let started = PipelineJson {
            project: project.clone(),
            id: pipeline.id,
            git_ref: branch,
            web_url: pipeline.web_url,
        };
        return json("started", Some(started), waves);
    }
    println!(
        "Started pipeline #{} for {project} on {branch}: {}",
        pipeline.id,
        pipeline.web_url.as_deref().unwrap_or("")
    );
    if !waves.is_empty() {
        let total: usize = waves.iter().map(Vec::len).sum();
        println!(
            "When it succeeds, a running `gitlab-deps serve` rebuilds {total} downstream project(s) in {} wave(s).",
            waves.len()
        );
    }
    Ok(())
}

pub async fn cancel(ctx: &Context, args: CancelArgs) -> anyhow::Result<()> {
    let store = ctx.store().await?;
    let graph = ctx.graph(store.as_ref()).await?;
    let projects = args
        .projects
        .iter()
        .map(|p| super::query::require(&graph, p).map(str::to_owned))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.force {
        orchestrate::enqueue_operator_input(
            store.as_ref(),
            &Input::Forget {
                projects: projects.clone(),
            },
        )
        .await?;
    }
    orchestrate::enqueue_operator_input(
        store.as_ref(),
        &Input::Cancel {
            projects: projects.clone(),
            with_descendants: args.descendants,
        },
    )
    .await?;
    if args.json {
        return print_json(&CancelJson {
            projects,
            descendants: args.descendants,
            force: args.force,
        });
    }
    println!(
        "Dropping the pending rebuilds of {}{}: the service applies it within a second.",
        projects.join(", "),
        if args.descendants {
            " and everything below"
        } else {
            ""
        }
    );
    Ok(())
}

pub async fn status(ctx: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let store = ctx.store().await?;
    let graph = Arc::new(ctx.graph(store.as_ref()).await?);
    let cascade = orchestrate::load_cascade(store.as_ref())
        .await
        .context("the stored orchestration state is unreadable")?;
    let snapshot = Snapshot {
        cascade,
        graph,
        web_urls: store
            .projects()
            .await?
            .into_iter()
            .map(|p| (p.path, p.web_url))
            .collect(),
    };
    let views = describe(&snapshot);
    if args.json {
        return print_json(&views);
    }
    if views.is_empty() {
        println!("Nothing to rebuild: every project is up to date.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| vec![v.project.clone(), v.state.to_owned(), v.detail.clone()])
        .collect();
    print!("{}", table(&["PROJECT", "STATE", "DETAIL"], &rows));
    Ok(())
}
