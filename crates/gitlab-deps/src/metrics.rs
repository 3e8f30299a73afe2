//! The service's Prometheus metrics, observed by the orchestration runtime and served by
//! [`crate::server`] at `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cascade::Cascade;
use crate::gitlab::ApiObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// GitLab API figures, fed by the client through [`ApiObserver`]. Shares its storage with the
/// families registered in [`Metrics`].
#[derive(Clone)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    retries: Family<EndpointLabels, Counter>,
    rate_limit_wait: Family<EndpointLabels, Counter<f64, AtomicU64>>,
}

impl ApiObserver for ApiMetrics {
    fn request(&self, endpoint: &'static str, outcome: &'static str, _took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                status: outcome,
            })
            .inc();
    }

    fn retry(&self, endpoint: &'static str) {
        self.retries
            .get_or_create(&EndpointLabels { endpoint })
            .inc();
    }

    fn rate_limited(&self, endpoint: &'static str, wait: Duration) {
        self.rate_limit_wait
            .get_or_create(&EndpointLabels { endpoint })
            .inc_by(wait.as_secs_f64());
    }
}

/// Buckets from 1 ms to about 2.3 h, doubling: webhook handling (milliseconds) and chains (hours)
/// on one scale.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 24)
}

fn histogram() -> Histogram {
    Histogram::new(seconds_buckets())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    event: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    projects: Family<StateLabels, Gauge>,
    /// Pipelines created.
    pub pipelines_created: Counter,
    /// Pipeline creations refused by GitLab.
    pub create_failures: Counter,
    /// Events folded into the cascade.
    pub events_processed: Counter,
    /// Final statuses found by polling (lost webhooks).
    pub reconciled: Counter,
    /// Hooks of ours GitLab still had disabled after the last hook sync.
    pub hooks_disabled: Gauge,
    /// Projects and groups the last hook sync could not give a hook.
    pub hooks_missing: Gauge,
    /// GitLab requests spent by recovery (pipeline polls and catch-up lists).
    pub recovery_requests: Counter,
    /// Recovery asks postponed because the request budget was spent.
    pub recovery_deferred: Counter,
    /// Successful pipelines found by catch-up and fed in as events.
    pub caught_up: Counter,
    recovery_polls: Family<ReasonLabels, Counter>,
    /// Time to answer a webhook delivery.
    pub webhook_seconds: Histogram,
    /// From the engine applying an upstream's success to the request creating a downstream pipeline.
    pub trigger_delay_seconds: Histogram,
    /// From a root change to the last project of its chain finishing.
    pub chain_seconds: Histogram,
    /// Stale projects: waiting for an upstream, for the throttle, or to be started.
    pub queue_stale: Gauge,
    /// Stale projects that nothing above blocks, held back only by `max_running`/`max_per_minute`.
    pub queue_throttled: Gauge,
    /// Wall time of the last complete scan.
    pub scan_duration_seconds: Gauge<f64, AtomicU64>,
    /// Projects in the graph after the last scan.
    pub scan_projects: Gauge,
    /// Dependency edges after the last scan.
    pub scan_edges: Gauge,
    /// Warnings after the last scan.
    pub scan_warnings: Gauge,
    /// 1 while this replica runs the engine, else 0.
    pub leader: Gauge,
    /// Times this replica became leader or stepped down.
    pub leadership_changes: Counter,
    /// Epoch of the lease this replica holds or last held (0: never held one).
    pub lease_epoch: Gauge,
    /// Pipeline creations given up because the leadership was lost before the request.
    pub creations_abandoned: Counter,
    api: ApiMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gitlab_deps");
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries by event and result",
            webhooks.clone(),
        );
        let projects = Family::<StateLabels, Gauge>::default();
        registry.register(
            "projects",
            "Projects by orchestration state",
            projects.clone(),
        );
        let pipelines_created = Counter::default();
        registry.register(
            "pipelines_created",
            "Pipelines created",
            pipelines_created.clone(),
        );
        let create_failures = Counter::default();
        registry.register(
            "pipeline_create_failures",
            "Pipeline creations GitLab refused",
            create_failures.clone(),
        );
        let events_processed = Counter::default();
        registry.register(
            "events_processed",
            "Events applied to the cascade",
            events_processed.clone(),
        );
        let reconciled = Counter::default();
        registry.register(
            "reconciled_pipelines",
            "Final pipeline statuses found by polling instead of a webhook",
            reconciled.clone(),
        );
        let hooks_missing = Gauge::default();
        registry.register(
            "hooks_missing",
            "Projects and groups the last hook sync could not give a webhook of gitlab-deps (refused or unreachable)",
            hooks_missing.clone(),
        );
        let hooks_disabled = Gauge::default();
        registry.register(
            "hooks_disabled",
            "Webhooks of gitlab-deps that GitLab had disabled after failed deliveries and the last hook sync could not re-enable",
            hooks_disabled.clone(),
        );
        let recovery_requests = Counter::default();
        registry.register(
            "recovery_requests",
            "GitLab requests spent by recovery: polls of our pipelines and catch-up lists",
            recovery_requests.clone(),
        );
        let recovery_deferred = Counter::default();
        registry.register(
            "recovery_deferred",
            "Recovery polls and catch-up asks postponed because the request budget was spent",
            recovery_deferred.clone(),
        );
        let caught_up = Counter::default();
        registry.register(
            "caught_up_pipelines",
            "Successful default-branch pipelines found by catch-up instead of a webhook",
            caught_up.clone(),
        );
        let recovery_polls = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "recovery_polls",
            "Recovery polls by reason (startup, overdue, limit, intake_failure; catch_up_* for catch-up asks)",
            recovery_polls.clone(),
        );
        let api = ApiMetrics {
            requests: Family::default(),
            retries: Family::default(),
            rate_limit_wait: Family::default(),
        };
        registry.register(
            "gitlab_requests",
            "GitLab API requests by endpoint class and outcome (HTTP status class, 429, or the network error)",
            api.requests.clone(),
        );
        registry.register(
            "gitlab_retries",
            "GitLab API requests repeated after a transient failure, by endpoint class",
            api.retries.clone(),
        );
        registry.register_with_unit(
            "gitlab_rate_limit_wait",
            "Time spent waiting after GitLab rate-limited a request (429), by endpoint class",
            Unit::Seconds,
            api.rate_limit_wait.clone(),
        );
        let webhook_seconds = histogram();
        registry.register_with_unit(
            "webhook_duration",
            "Time to answer a webhook delivery",
            Unit::Seconds,
            webhook_seconds.clone(),
        );
        let trigger_delay_seconds = histogram();
        registry.register_with_unit(
            "trigger_delay",
            "From an upstream's success (as applied by the engine) to the request creating a downstream pipeline",
            Unit::Seconds,
            trigger_delay_seconds.clone(),
        );
        let chain_seconds = histogram();
        registry.register_with_unit(
            "chain_duration",
            "From a root change to the last project of its chain finishing (or being dropped)",
            Unit::Seconds,
            chain_seconds.clone(),
        );
        let queue_stale = Gauge::default();
        registry.register(
            "queue_stale",
            "Stale projects waiting to be rebuilt",
            queue_stale.clone(),
        );
        let queue_throttled = Gauge::default();
        registry.register(
            "queue_throttled",
            "Stale projects nothing above blocks, held back only by max_running or max_per_minute",
            queue_throttled.clone(),
        );
        let scan_duration_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "scan_duration",
            "Wall time of the last complete scan",
            Unit::Seconds,
            scan_duration_seconds.clone(),
        );
        let scan_projects = Gauge::default();
        registry.register(
            "scan_projects",
            "Projects in the graph after the last scan",
            scan_projects.clone(),
        );
        let scan_edges = Gauge::default();
        registry.register(
            "scan_edges",
            "Dependency edges after the last scan",
            scan_edges.clone(),
        );
        let scan_warnings = Gauge::default();
        registry.register(
            "scan_warnings",
            "Warnings after the last scan",
            scan_warnings.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the engine (holds the lease), else 0",
            leader.clone(),
        );
        let leadership_changes = Counter::default();
        registry.register(
            "leadership_changes",
            "Times this replica became leader or stepped down",
            leadership_changes.clone(),
        );
        let lease_epoch = Gauge::default();
        registry.register(
            "lease_epoch",
            "Epoch of the engine lease this replica holds or last held (0: never held one)",
            lease_epoch.clone(),
        );
        let creations_abandoned = Counter::default();
        registry.register(
            "pipeline_creations_abandoned",
            "Pipeline creations given up because this replica lost the leadership before sending them (the next leader adopts or creates them)",
            creations_abandoned.clone(),
        );
        Self {
            leader,
            leadership_changes,
            lease_epoch,
            creations_abandoned,
            hooks_disabled,
            hooks_missing,
            webhook_seconds,
            trigger_delay_seconds,
            chain_seconds,
            queue_stale,
            queue_throttled,
            scan_duration_seconds,
            scan_projects,
            scan_edges,
            scan_warnings,
            api,
            recovery_requests,
            recovery_deferred,
            caught_up,
            recovery_polls,
            registry,
            webhooks,
            projects,
            pipelines_created,
            create_failures,
            events_processed,
            reconciled,
        }
    }

    /// Counts a webhook delivery.
    pub fn webhook(&self, event: &str, result: &str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                event: event.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one recovery request made for `reason`.
    pub fn recovery_poll(&self, reason: &str) {
        self.recovery_requests.inc();
        self.recovery_polls
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The observer to hand the GitLab client.
    pub fn api_observer(&self) -> Arc<dyn ApiObserver> {
        Arc::new(self.api.clone())
    }

    /// Updates the per-state gauges from the cascade's counts (kept by the cascade as it changes,
    /// so this costs the same on every step, whatever the number of projects).
    pub fn observe(&self, cascade: &Cascade) {
        let counts = cascade.counts();
        for (state, n) in [
            ("stale", counts.stale),
            ("running", counts.running),
            ("failed", counts.failed),
        ] {
            self.projects
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.queue_stale
            .set(i64::try_from(counts.stale).unwrap_or(i64::MAX));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
