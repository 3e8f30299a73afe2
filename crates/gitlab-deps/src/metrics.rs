//! The service's Prometheus metrics, observed by the orchestration runtime and served by
//! [`crate::server`] at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cascade::Cascade;

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
    /// GitLab requests spent by recovery (pipeline polls and catch-up lists).
    pub recovery_requests: Counter,
    /// Recovery asks postponed because the request budget was spent.
    pub recovery_deferred: Counter,
    /// Successful pipelines found by catch-up and fed in as events.
    pub caught_up: Counter,
    recovery_polls: Family<ReasonLabels, Counter>,
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
        Self {
            hooks_disabled,
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
