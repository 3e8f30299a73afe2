//! One service, started one way: `serve`, `demo`, the benchmarks and the tests all resolve their
//! settings into a [`ServiceConfig`] and start the components (GitLab client, scanner, engine,
//! HTTP server, hook sync) through [`Service::new`] and [`Service::serve`]. Every default lives in
//! [`defaults`], once.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{PathPatterns, ScanSettings};
use crate::gitlab::{GitLab, GitLabError, GitLabOptions, RetryPolicy};
use crate::hooks::{HookSummary, SyncOptions, sync_hooks};
use crate::orchestrate::leader::{StoreLeases, holder_id};
use crate::orchestrate::{Engine, EngineOptions, Leadership, LeaseOptions, RecoveryOptions};
use crate::scan::{DEPS_FILE, Scanner};
use crate::server::{self, ServerError};
pub use crate::server::{HttpLimits, HttpOptions, ReadAccess, bind};
use crate::store::{Store, StoreError};
use crate::util::{Clock, SystemClock};

/// The defaults of every setting the service has, each written once.
pub mod defaults {
    use std::time::Duration;

    /// Where `serve` listens.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// Largest accepted webhook body (GitLab's pipeline events stay far below it).
    pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
    /// Pipelines of ours running at once.
    pub const MAX_RUNNING: usize = 10;
    /// How long a created pipeline may go without a final status before it is polled.
    pub const RECONCILE_AFTER: Duration = Duration::from_secs(10 * 60);
    /// How often catch-up asks GitLab for default-branch successes whose webhook never arrived.
    pub const CATCH_UP_INTERVAL: Duration = Duration::from_secs(5 * 60);
    /// GitLab requests recovery (overdue polls and catch-up) may spend per minute on average.
    pub const RECOVERY_REQUESTS_PER_MINUTE: u32 = 50;
    /// Duration assumed for a project none of whose pipelines was seen finishing yet.
    pub const PIPELINE_DURATION: Duration = Duration::from_secs(5 * 60);
    /// How often the whole instance is rescanned.
    pub const RESCAN_EVERY: Duration = Duration::from_secs(6 * 3600);
    /// GitLab API requests in flight at once.
    pub const CONCURRENCY: usize = 8;
    /// Timeout of one GitLab API request.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Time a client has for a request's headers (and an idle keep-alive connection to live).
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Time a client has for a webhook body (GitLab itself gives up after about 10 s).
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);
    /// HTTP connections served at once.
    pub const MAX_CONNECTIONS: usize = 512;
    /// Webhook body bytes held at once by all requests.
    pub const MAX_BODY_BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;
    /// How long the engine's lease lasts without a renewal: a failed leader is replaced within
    /// about this long. Renewal, retry and safety margin are derived from it
    /// ([`crate::orchestrate::LeaseOptions::with_ttl`]).
    pub const LEASE_TTL: Duration = Duration::from_secs(3);
    /// How often the leader renews its lease (a third of [`LEASE_TTL`]).
    pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(1);
    /// How often a standby asks for the lease (a sixth of [`LEASE_TTL`]).
    pub const LEASE_RETRY_EVERY: Duration = Duration::from_millis(500);
    /// How long before its lease expires the leader stops acting (a sixth of [`LEASE_TTL`]).
    pub const LEASE_MARGIN: Duration = Duration::from_millis(500);
    /// The shortest lease accepted.
    pub const LEASE_TTL_MIN: Duration = Duration::from_millis(300);
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            ttl: defaults::LEASE_TTL,
            renew_every: defaults::LEASE_RENEW_EVERY,
            retry_every: defaults::LEASE_RETRY_EVERY,
            margin: defaults::LEASE_MARGIN,
        }
    }
}

/// Failures while starting or running the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The GitLab client could not be built.
    #[error(transparent)]
    GitLab(#[from] GitLabError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl GitLabOptions {
    /// Options for `base_url` with the default concurrency, timeout and retries.
    pub fn new(base_url: Url, token: SecretString) -> Self {
        Self {
            base_url,
            token,
            concurrency: defaults::CONCURRENCY,
            timeout: defaults::REQUEST_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_running: defaults::MAX_RUNNING,
            max_per_minute: None,
            exclude: PathPatterns::default(),
            reconcile_after: defaults::RECONCILE_AFTER,
            rescan_every: Some(defaults::RESCAN_EVERY),
            watched_files: Vec::new(),
            recovery: RecoveryOptions::default(),
        }
    }
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        Self {
            catch_up_interval: Some(defaults::CATCH_UP_INTERVAL),
            requests_per_minute: defaults::RECOVERY_REQUESTS_PER_MINUTE,
            default_duration: defaults::PIPELINE_DURATION,
        }
    }
}

impl Default for HttpOptions {
    /// No secret (the caller sets one, or has decided to run without), no spool, and the
    /// default limits.
    fn default() -> Self {
        Self {
            webhook_secret: None,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            read_access: server::ReadAccess::default(),
            spool: None,
            limits: HttpLimits::default(),
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: defaults::HEADER_TIMEOUT,
            body_timeout: defaults::BODY_TIMEOUT,
            max_connections: defaults::MAX_CONNECTIONS,
            max_body_bytes_in_flight: defaults::MAX_BODY_BYTES_IN_FLIGHT,
        }
    }
}

/// Keeping the webhooks installed while the service runs.
#[derive(Debug, Clone)]
pub struct HookSyncConfig {
    /// The hook URL (`<public url>/hooks/gitlab`).
    pub url: String,
    /// Groups that get a group hook instead of per-project hooks.
    pub groups: Vec<String>,
}

/// Everything the service needs, resolved once.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How to reach GitLab.
    pub gitlab: GitLabOptions,
    /// Which files to read and where.
    pub scan: ScanSettings,
    /// A registry host overriding what GitLab reports.
    pub registry: Option<String>,
    /// The engine's throttle, reconciler and rescan settings. `watched_files` is derived from
    /// `scan` by [`Service::new`].
    pub engine: EngineOptions,
    /// The webhook receiver's settings.
    pub http: HttpOptions,
    /// Install and repair hooks at start and after every rescan interval (`None`: leave them).
    pub hook_sync: Option<HookSyncConfig>,
    /// The engine lease's timing (replicas sharing the database).
    pub lease: LeaseOptions,
    /// A prefix for this replica's holder id, to tell replicas apart in the status.
    pub replica_name: Option<String>,
}

impl ServiceConfig {
    /// A configuration with every default, for the instance `gitlab` reaches.
    pub fn new(gitlab: GitLabOptions, scan: ScanSettings) -> Self {
        Self {
            gitlab,
            scan,
            registry: None,
            engine: EngineOptions::default(),
            http: HttpOptions::default(),
            hook_sync: None,
            lease: LeaseOptions::default(),
            replica_name: None,
        }
    }
}

/// The dependency files whose change in a push makes the project's rescan worthwhile.
pub fn watched_files(scan: &ScanSettings) -> Vec<String> {
    let mut watched = scan.dockerfiles.clone();
    watched.push(DEPS_FILE.to_owned());
    watched
}

/// The started components of one service.
pub struct Service {
    store: Arc<dyn Store>,
    gitlab: GitLab,
    scanner: Arc<Scanner>,
    engine: Arc<Engine>,
    http: HttpOptions,
    hook_sync: Option<HookSyncConfig>,
    leadership: Arc<Leadership>,
    importer: Option<Arc<dyn Store>>,
}

impl Service {
    /// Builds the client, the scanner and the engine over `store`, with the system clock.
    pub async fn new(config: ServiceConfig, store: Arc<dyn Store>) -> Result<Self, ServiceError> {
        Self::with_clock(config, store, Arc::new(SystemClock)).await
    }

    /// As [`Service::new`], with the clock the engine's timing decisions read (tests move it by
    /// hand).
    pub async fn with_clock(
        config: ServiceConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServiceError> {
        let instance = config.gitlab.base_url.clone();
        let gitlab = GitLab::new(config.gitlab)?;
        let mut engine_options = config.engine;
        engine_options.watched_files = watched_files(&config.scan);
        let scanner = Arc::new(Scanner::new(
            gitlab.clone(),
            store.clone(),
            config.scan,
            instance,
            config.registry,
        ));
        let engine = Arc::new(
            Engine::with_clock(
                Arc::clone(&store),
                gitlab.clone(),
                Some(Arc::clone(&scanner)),
                engine_options,
                clock,
            )
            .await?,
        );
        // The client reports its requests to the engine's metrics (scans included).
        gitlab.set_observer(engine.metrics.api_observer());
        // The hook gauges start from the last sync of any process (`update` from a timer).
        engine.refresh_hook_gauges().await;
        let leadership = Leadership::new(
            Arc::new(StoreLeases(Arc::clone(&store))),
            config.lease,
            holder_id(config.replica_name.as_deref()),
        );
        Ok(Self {
            store,
            gitlab,
            scanner,
            engine,
            http: config.http,
            hook_sync: config.hook_sync,
            leadership,
            importer: None,
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The GitLab client.
    pub fn gitlab(&self) -> &GitLab {
        &self.gitlab
    }

    /// The scanner.
    pub fn scanner(&self) -> &Arc<Scanner> {
        &self.scanner
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// This replica's leadership (it runs once [`Service::serve`] starts).
    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.leadership
    }

    /// Imports the delivery spool through `importer`, a second handle on the service's
    /// database, so an import waiting for a busy database holds up nothing else (default: the
    /// service's own store).
    pub fn with_spool_importer(mut self, importer: Arc<dyn Store>) -> Self {
        self.importer = Some(importer);
        self
    }

    /// The HTTP router alone, for tests that drive it in-process (starts the event writer, so
    /// call it inside a Tokio runtime). [`Service::serve`] runs the engine as well.
    pub fn router(&self) -> Result<axum::Router, ServiceError> {
        Ok(server::router(Arc::clone(&self.engine), self.http.clone())?)
    }

    /// Runs the HTTP server on `listener` (every replica takes webhooks and serves the pages)
    /// until `shutdown` is cancelled, and, while this replica holds the engine's lease, the
    /// engine and (when configured) the hook sync. On shutdown the engine stops first, then the
    /// lease is released, so a standby takes over at once.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServiceError> {
        let lease_stop = CancellationToken::new();
        let leadership = Arc::clone(&self.leadership);
        let keeper = tokio::spawn(Arc::clone(&leadership).run(lease_stop.clone()));
        let hooks = self
            .hook_sync
            .clone()
            .map(|hooks| self.hook_sync_task(hooks));
        let on_term = move |term: CancellationToken| {
            if let Some(start) = &hooks {
                start(term);
            }
        };
        let replica = tokio::spawn(Arc::clone(&self.engine).run_replica(
            leadership,
            on_term,
            shutdown.clone(),
        ));
        let served = server::run(
            Arc::clone(&self.engine),
            self.http,
            self.importer,
            listener,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        let _ = replica.await;
        lease_stop.cancel();
        let _ = keeper.await;
        served?;
        Ok(())
    }

    /// What starts the hook sync for one leader term: it installs or repairs the hooks in the
    /// background (on a large instance this takes minutes, and webhooks must be answered
    /// meanwhile), again after every rescan interval: new projects get a hook, a changed default
    /// branch its push filter, and a hook GitLab disabled another try. A sync with nothing to
    /// change only reads. Only the leader syncs, so replicas do not race each other.
    fn hook_sync_task(&self, hooks: HookSyncConfig) -> impl Fn(CancellationToken) + Send + 'static {
        let options = SyncOptions {
            url: hooks.url,
            secret: self.http.webhook_secret.clone().unwrap_or_default(),
            rotate_secret: false,
            dry_run: false,
            groups: hooks.groups,
        };
        let every = self.engine.options().rescan_every;
        let (gitlab, store, engine) = (
            self.gitlab.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.engine),
        );
        move |shutdown: CancellationToken| {
            let (gitlab, store, engine, options) = (
                gitlab.clone(),
                Arc::clone(&store),
                Arc::clone(&engine),
                options.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let sync = async {
                        match store.projects().await {
                            Ok(projects) => {
                                match sync_hooks(&gitlab, store.as_ref(), &projects, &options).await
                                {
                                    Ok(summary) => log_hook_sync(&summary, &engine),
                                    Err(e) => tracing::error!("webhook sync failed: {e}"),
                                }
                            }
                            Err(e) => tracing::warn!("webhook sync skipped: {e}"),
                        }
                    };
                    // A replica that stops leading leaves the rest of the sync to the next leader.
                    tokio::select! {
                        _ = sync => {}
                        _ = shutdown.cancelled() => break,
                    }
                    let Some(every) = every else { break };
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            });
        }
    }
}

/// Logs what a hook sync did and updates the disabled-hooks gauge.
fn log_hook_sync(summary: &HookSummary, engine: &Engine) {
    engine
        .metrics
        .hooks_disabled
        .set(summary.still_disabled() as i64);
    engine
        .metrics
        .hooks_missing
        .set(summary.failed.len() as i64);
    tracing::info!(
        created = summary.created,
        updated = summary.updated,
        unchanged = summary.unchanged,
        reenabled = summary.reenabled,
        still_disabled = summary.still_disabled(),
        failed = summary.failed.len(),
        "webhooks synced"
    );
    for f in &summary.failed {
        tracing::warn!("webhook not installed: {f}");
    }
    for d in summary.disabled.iter().filter(|d| !d.reenabled) {
        tracing::warn!(
            "webhook of {} is disabled by GitLab ({}): {}",
            d.target,
            d.alert_status,
            d.detail.as_deref().unwrap_or("")
        );
    }
    for n in &summary.notes {
        tracing::warn!("{n}");
    }
}
