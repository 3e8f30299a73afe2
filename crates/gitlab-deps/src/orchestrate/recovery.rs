//! Recovery without stalls: what the engine does when webhooks may have been lost.
//!
//! - Our running pipelines are polled when their final status is overdue: they ran longer than
//!   the project's recent pipelines took (plus a margin), then again with back-off, and at the
//!   latest every `reconcile_after` ([`PollSchedule`]). Every running pipeline is polled at start-up
//!   and after a failure to record a webhook ([`Engine::intake_failed`]).
//! - Catch-up asks GitLab, for each project with dependents, for the newest successful
//!   default-branch pipeline updated since it was last asked, and feeds it in as an ordinary event:
//!   at start-up, after intake failures, and every `catch_up_interval` ([`Engine::catch_up`]).
//! - Both draw from one request budget ([`Bucket`]) and are counted in the metrics.
//!
//! See docs/recovery.md for the rules and why catch-up cannot start a rebuild storm.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, lock};
use crate::cascade::{Cascade, Input, PipelineStatus};
use crate::gitlab::Pipeline;
use crate::gitlab::payload::{SourceClass, classify_source};
use crate::store::{Store, StoreError};

/// Store key: when the service first ran (Unix ms). Changes from before it never count.
const FIRST_START_KEY: &str = "recovery.first_start_ms";
/// Store key: every project with dependents was asked for successes since at least this time.
const SINCE_KEY: &str = "recovery.since_ms";

/// Pipeline durations remembered per project for the estimate.
const DURATION_SAMPLES: usize = 5;
/// Smallest margin added to a duration estimate before a pipeline counts as overdue.
const MIN_MARGIN_MS: i64 = 30_000;
/// First back-off after a poll found the pipeline still running; it doubles from there.
const FIRST_BACKOFF_MS: i64 = 60_000;
/// Catch-up asks GitLab for pipelines updated a little before the last ask: clocks differ, and a
/// pipeline found twice is deduplicated.
const OVERLAP_MS: i64 = 5 * 60_000;
/// A start-up or intake-failure catch-up asks a project again only after this long.
const URGENT_GAP_MS: i64 = 60_000;
/// Catch-up asks in flight at once.
const CATCH_UP_CONCURRENCY: usize = 4;
/// Pipelines listed per catch-up ask: the newest that builds the branch is taken, so a few child
/// or other side pipelines on top of it do not hide it.
const CATCH_UP_PAGE: u32 = 10;

/// Recovery settings.
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// Ask for missed root changes this often (`None`: only at start-up and after intake failures).
    pub catch_up_interval: Option<Duration>,
    /// GitLab requests recovery may spend per minute on average (polls and catch-up together).
    pub requests_per_minute: u32,
    /// Duration assumed for a project none of whose pipelines we saw finish yet.
    pub default_duration: Duration,
}

/// Why a recovery request is made (the `reason` label of `gitlab_deps_recovery_polls_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollReason {
    /// Every running pipeline, at start-up.
    Startup,
    /// The pipeline ran longer than its project's pipelines usually take.
    Overdue,
    /// `reconcile_after` passed since the pipeline started (or since its last poll).
    Limit,
    /// A webhook could not be recorded: any running pipeline's may have been that one.
    IntakeFailure,
}

impl PollReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            PollReason::Startup => "startup",
            PollReason::Overdue => "overdue",
            PollReason::Limit => "limit",
            PollReason::IntakeFailure => "intake_failure",
        }
    }
}

/// What starts a catch-up round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUpReason {
    /// The service just started: changes may have happened while it was down.
    Startup,
    /// The interval passed.
    Scheduled,
    /// A webhook could not be recorded.
    IntakeFailure,
}

impl CatchUpReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CatchUpReason::Startup => "catch_up_startup",
            CatchUpReason::Scheduled => "catch_up_scheduled",
            CatchUpReason::IntakeFailure => "catch_up_intake_failure",
        }
    }
}

/// What one catch-up round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUpReport {
    /// Projects with dependents due for an ask.
    pub due: usize,
    /// Projects asked (requests made).
    pub asked: usize,
    /// Asks that failed (asked again next round).
    pub failed: usize,
    /// Asks postponed for lack of budget.
    pub deferred: usize,
    /// Successful pipelines fed in as events.
    pub found: usize,
}

/// A token bucket over the engine clock: `per_minute` tokens a minute, at most `capacity` saved.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    tokens: f64,
    capacity: f64,
    per_ms: f64,
    at_ms: i64,
}

impl Bucket {
    /// A full bucket.
    pub(super) fn new(per_minute: u32, capacity: u32, now_ms: i64) -> Self {
        let capacity = f64::from(capacity.max(1));
        Self {
            tokens: capacity,
            capacity,
            per_ms: f64::from(per_minute) / 60_000.0,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: i64) {
        let elapsed = (now_ms - self.at_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Takes one token if there is one.
    pub(super) fn try_take(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token even without one: the debt delays later optional requests, so the
    /// average stays within the budget.
    pub(super) fn force_take(&mut self, now_ms: i64) {
        self.refill(now_ms);
        self.tokens -= 1.0;
    }

    /// Takes up to `wanted` tokens, leaving `reserve`; returns how many it took.
    pub(super) fn take_up_to(&mut self, wanted: usize, reserve: f64, now_ms: i64) -> usize {
        self.refill(now_ms);
        let spare = (self.tokens - reserve).floor().max(0.0) as usize;
        let n = wanted.min(spare);
        self.tokens -= n as f64;
        n
    }
}

/// The margin added to a duration estimate: a quarter of it, at least [`MIN_MARGIN_MS`].
pub(super) fn margin_ms(estimate_ms: i64) -> i64 {
    (estimate_ms / 4).max(MIN_MARGIN_MS)
}

/// When a pipeline is next polled, per pipeline id.
#[derive(Debug, Clone, Default)]
pub(super) struct PollSchedule {
    polls: HashMap<u64, Poll>,
}

#[derive(Debug, Clone, Copy)]
struct Poll {
    next_ms: i64,
    backoff_ms: i64,
}

impl PollSchedule {
    /// Whether the pipeline is due for a poll now, and why. First due when it has run for its
    /// estimate plus a margin, and never later than `limit_ms` after it started.
    pub(super) fn due(
        &mut self,
        pipeline_id: u64,
        started_ms: i64,
        estimate_ms: i64,
        limit_ms: i64,
        now_ms: i64,
    ) -> Option<PollReason> {
        let poll = self.polls.entry(pipeline_id).or_insert_with(|| Poll {
            next_ms: started_ms + (estimate_ms + margin_ms(estimate_ms)).min(limit_ms),
            backoff_ms: 0,
        });
        (now_ms >= poll.next_ms).then(|| {
            if poll.backoff_ms >= limit_ms || now_ms - started_ms >= limit_ms {
                PollReason::Limit
            } else {
                PollReason::Overdue
            }
        })
    }

    /// The pipeline was polled and is still running: next time after a doubled back-off, at
    /// most `limit_ms`.
    pub(super) fn polled(&mut self, pipeline_id: u64, limit_ms: i64, now_ms: i64) {
        let poll = self.polls.entry(pipeline_id).or_insert(Poll {
            next_ms: now_ms,
            backoff_ms: 0,
        });
        poll.backoff_ms = if poll.backoff_ms == 0 {
            FIRST_BACKOFF_MS
        } else {
            poll.backoff_ms.saturating_mul(2)
        }
        .min(limit_ms)
        .max(1);
        poll.next_ms = now_ms + poll.backoff_ms;
    }

    /// Forgets pipelines that no longer run.
    pub(super) fn retain(&mut self, running: &HashSet<u64>) {
        self.polls.retain(|id, _| running.contains(id));
    }
}

/// Recent pipeline durations per project (engine clock, from dispatch to the final status).
#[derive(Debug, Clone, Default)]
pub(super) struct Durations {
    by_project: HashMap<String, VecDeque<i64>>,
}

impl Durations {
    /// Records one duration.
    pub(super) fn record(&mut self, project: &str, ms: i64) {
        let samples = self.by_project.entry(project.to_owned()).or_default();
        samples.push_back(ms.max(0));
        if samples.len() > DURATION_SAMPLES {
            samples.pop_front();
        }
    }

    /// The longest of the recent durations: a webhook is overdue only once the pipeline ran
    /// longer than any recent one, so a slow run is not polled for nothing.
    pub(super) fn estimate(&self, project: &str) -> Option<i64> {
        self.by_project.get(project)?.iter().copied().max()
    }
}

/// The engine's recovery state.
pub(super) struct Recovery {
    pub(super) opts: RecoveryOptions,
    pub(super) durations: Mutex<Durations>,
    pub(super) schedule: Mutex<PollSchedule>,
    pub(super) budget: Mutex<Bucket>,
    /// Project id -> when catch-up last asked it (engine clock).
    asked: Mutex<HashMap<u64, i64>>,
    /// Changes from before this never count (the first start).
    floor_ms: AtomicI64,
    /// Projects not asked yet in this process are asked from here.
    since_ms: AtomicI64,
    /// An intake failure not yet answered by a poll of every running pipeline.
    pub(super) poll_all: AtomicBool,
    /// An intake failure not yet answered by a catch-up round.
    catch_up_now: AtomicBool,
    /// When running pipelines were last all polled for an intake failure.
    pub(super) last_poll_all_ms: AtomicI64,
    pub(super) poll_wake: Notify,
    catch_up_wake: Notify,
}

impl Recovery {
    /// Loads the catch-up start point; on the first start records it as now.
    pub(super) async fn load(
        store: &dyn Store,
        opts: RecoveryOptions,
        max_running: usize,
        now_ms: i64,
    ) -> Result<Self, StoreError> {
        let parse = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
        let floor_ms = match parse(store.meta(FIRST_START_KEY).await?) {
            Some(t) => t,
            None => {
                store.set_meta(FIRST_START_KEY, &now_ms.to_string()).await?;
                now_ms
            }
        };
        let since_ms = parse(store.meta(SINCE_KEY).await?)
            .unwrap_or(now_ms)
            .max(floor_ms);
        // One interval's worth saved up (at least a minute's), so a round can ask that many at
        // once; polls of running pipelines keep a reserve of one each.
        let interval_min = opts
            .catch_up_interval
            .map_or(1.0, |d| (d.as_secs_f64() / 60.0).max(1.0));
        let per_minute = opts.requests_per_minute.max(1);
        let capacity = (f64::from(per_minute) * interval_min) as u32 + max_running as u32;
        Ok(Self {
            budget: Mutex::new(Bucket::new(per_minute, capacity, now_ms)),
            opts,
            durations: Mutex::new(Durations::default()),
            schedule: Mutex::new(PollSchedule::default()),
            asked: Mutex::new(HashMap::new()),
            floor_ms: AtomicI64::new(floor_ms),
            since_ms: AtomicI64::new(since_ms),
            poll_all: AtomicBool::new(false),
            catch_up_now: AtomicBool::new(false),
            last_poll_all_ms: AtomicI64::new(i64::MIN),
            poll_wake: Notify::new(),
            catch_up_wake: Notify::new(),
        })
    }

    /// Reads the catch-up start point again, as a start-up does (another replica moved it while
    /// this one was standby), and forgets what this process asked and scheduled: the new term
    /// asks and polls as after a restart.
    pub(super) async fn reload(&self, store: &dyn Store, now_ms: i64) -> Result<(), StoreError> {
        let parse = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
        let floor_ms = parse(store.meta(FIRST_START_KEY).await?)
            .unwrap_or_else(|| self.floor_ms.load(Ordering::SeqCst));
        let since_ms = parse(store.meta(SINCE_KEY).await?)
            .unwrap_or(now_ms)
            .max(floor_ms);
        self.floor_ms.store(floor_ms, Ordering::SeqCst);
        self.since_ms.store(since_ms, Ordering::SeqCst);
        lock(&self.asked).clear();
        *lock(&self.schedule) = PollSchedule::default();
        Ok(())
    }

    /// The duration estimate of a project (the default when none was seen).
    pub(super) fn estimate_ms(&self, project: &str) -> i64 {
        lock(&self.durations)
            .estimate(project)
            .unwrap_or(self.opts.default_duration.as_millis() as i64)
    }
}

/// The finished pipeline as a cascade input, fed in under the poll path's delivery key, so a poll,
/// an adoption and a catch-up find of the same status are one event.
pub(super) fn finished_input(
    project: String,
    pipeline: &Pipeline,
    attempt: Option<String>,
    status: PipelineStatus,
    how: &str,
) -> (String, Input) {
    let id = pipeline.id;
    (
        format!("poll:{id}:{}", pipeline.status),
        Input::PipelineFinished {
            project,
            pipeline_id: id,
            attempt,
            status,
            reason: Some(format!("pipeline #{id} {} ({how})", pipeline.status)),
            created_ms: pipeline
                .created_at
                .as_deref()
                .and_then(crate::util::parse_timestamp_ms),
        },
    )
}

impl Engine {
    /// Call when a webhook could not be recorded: every running pipeline is polled and a
    /// catch-up round starts soon (coalesced, within the request budget).
    pub fn intake_failed(&self) {
        self.recovery.poll_all.store(true, Ordering::SeqCst);
        self.recovery.catch_up_now.store(true, Ordering::SeqCst);
        self.recovery.poll_wake.notify_one();
        self.recovery.catch_up_wake.notify_one();
    }

    /// Learns a project's pipeline duration from one of ours finishing (called before `input`
    /// is applied, while the cascade still knows when the pipeline started).
    pub(super) fn observe_finish(&self, cascade: &Cascade, input: &Input, now_ms: i64) {
        let Input::PipelineFinished {
            project,
            pipeline_id,
            attempt,
            ..
        } = input
        else {
            return;
        };
        if !cascade.is_ours(project, *pipeline_id, attempt.as_deref()) {
            return;
        }
        if let Some(run) = cascade.state(project).and_then(|s| s.running.as_ref()) {
            let limit = self.opts.reconcile_after.as_millis() as i64;
            lock(&self.recovery.durations).record(project, (now_ms - run.started_ms).min(limit));
        }
    }

    pub(super) async fn catch_up_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut reason = CatchUpReason::Startup;
        loop {
            let report = self.catch_up(reason).await;
            // Routine rounds that found nothing stay out of the log.
            if report.found > 0 || (reason != CatchUpReason::Scheduled && report.asked > 0) {
                tracing::info!(
                    asked = report.asked,
                    found = report.found,
                    failed = report.failed,
                    deferred = report.deferred,
                    "catch-up ({}) asked GitLab for missed pipelines",
                    reason.label()
                );
            }
            let interval = self.recovery.opts.catch_up_interval;
            // Asks the budget postponed are retried once it has refilled a little.
            let retry = (report.deferred > 0).then_some(Duration::from_secs(30));
            let wait = match (interval, retry) {
                (Some(i), Some(r)) => Some(i.min(r)),
                (i, r) => i.or(r),
            };
            reason = tokio::select! {
                _ = async {
                    match wait {
                        Some(w) => tokio::time::sleep(w).await,
                        None => std::future::pending().await,
                    }
                } => CatchUpReason::Scheduled,
                _ = self.recovery.catch_up_wake.notified() => CatchUpReason::IntakeFailure,
                _ = shutdown.cancelled() => return,
            };
            if reason == CatchUpReason::IntakeFailure {
                // Failures come in bursts: one round after the burst, not one per failure.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }

    /// One catch-up round: asks each due project with dependents (within the budget) for the
    /// newest successful default-branch pipeline updated since it was last asked, and logs it as an
    /// event. Redeliveries are no-ops: the delivery key dedups finds, the cascade dedups a find
    /// whose webhook did arrive.
    pub async fn catch_up(self: &Arc<Self>, reason: CatchUpReason) -> CatchUpReport {
        let recovery = &self.recovery;
        if reason == CatchUpReason::IntakeFailure {
            recovery.catch_up_now.store(false, Ordering::SeqCst);
        }
        let now = self.clock.now_ms();
        let min_gap = match (reason, recovery.opts.catch_up_interval) {
            (CatchUpReason::Scheduled, Some(interval)) => interval.as_millis() as i64,
            _ => URGENT_GAP_MS,
        };
        let graph = self.graph();
        let records = self.records();
        // A project whose pipeline creation is unresolved is left to adoption: its newest success
        // may be ours before we know its id.
        let pending: HashSet<String> = self
            .cascade
            .lock()
            .await
            .pending_attempts()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let mut with_dependents = Vec::new();
        let mut due = Vec::new();
        {
            let asked = lock(&recovery.asked);
            for project in graph.projects() {
                if graph.downstreams(project).is_empty() {
                    continue;
                }
                let Some(record) = records.by_path.get(project) else {
                    continue;
                };
                let last = asked.get(&record.id).copied();
                with_dependents.push(record.id);
                let Some(branch) = record.default_branch.clone() else {
                    continue;
                };
                if pending.contains(project) || last.is_some_and(|t| now - t < min_gap) {
                    continue;
                }
                due.push((last, record.id, project.to_owned(), branch));
            }
        }
        // Never asked first, then the longest unasked.
        due.sort_by_key(|(last, id, ..)| (last.unwrap_or(i64::MIN), *id));
        let reserve = self.opts.max_running as f64;
        let n = lock(&recovery.budget).take_up_to(due.len(), reserve, now);
        let mut report = CatchUpReport {
            due: due.len(),
            deferred: due.len() - n,
            ..CatchUpReport::default()
        };
        self.metrics
            .recovery_deferred
            .inc_by(report.deferred as u64);
        due.truncate(n);
        let results: Vec<(u64, Result<bool, String>)> = futures::stream::iter(due)
            .map(|(last, id, project, branch)| async move {
                let since = last.unwrap_or(recovery.since_ms.load(Ordering::SeqCst));
                let after = (since - OVERLAP_MS).max(recovery.floor_ms.load(Ordering::SeqCst));
                self.metrics.recovery_poll(reason.label());
                let found = self
                    .gitlab
                    .successful_pipelines_since(id, &branch, after, CATCH_UP_PAGE)
                    .await;
                let result = match found {
                    Ok(list) => Ok(self.feed_caught_up(project, &list).await),
                    Err(e) => {
                        tracing::warn!("{project}: catch-up cannot list pipelines: {e}");
                        Err(e.to_string())
                    }
                };
                (id, result)
            })
            .buffer_unordered(CATCH_UP_CONCURRENCY)
            .collect()
            .await;
        let covered = {
            let mut asked = lock(&recovery.asked);
            for (id, result) in &results {
                report.asked += 1;
                match result {
                    // Asked as of the round's start: anything updated after it is found next time.
                    Ok(found) => {
                        asked.insert(*id, now);
                        report.found += usize::from(*found);
                    }
                    Err(_) => report.failed += 1,
                }
            }
            // Every project with dependents has been asked from here on: a restart asks from here.
            with_dependents
                .iter()
                .map(|id| {
                    asked
                        .get(id)
                        .copied()
                        .unwrap_or(recovery.since_ms.load(Ordering::SeqCst))
                })
                .min()
                .unwrap_or(now)
        };
        if let Err(e) = self.store.set_meta(SINCE_KEY, &covered.to_string()).await {
            tracing::warn!("cannot record the catch-up point: {e}");
        }
        report
    }

    /// Logs the newest branch-building success in `list` as an event unless the cascade has
    /// already applied it (its webhook arrived); true when it was news.
    async fn feed_caught_up(&self, project: String, list: &[Pipeline]) -> bool {
        let Some(newest) = list
            .iter()
            .filter(|p| p.status == "success")
            .find(|p| classify_source(p.source.as_deref()) == SourceClass::Branch)
        else {
            return false;
        };
        // The usual case: nothing to log. (A webhook still waiting in the log is deduplicated by
        // the cascade when the find is applied after it.)
        let applied = self.cascade.lock().await.state(&project).is_some_and(|s| {
            s.seen
                .iter()
                .any(|seen| seen.id == newest.id && seen.status == PipelineStatus::Success)
        });
        if applied {
            return false;
        }
        let (key, input) =
            finished_input(project, newest, None, PipelineStatus::Success, "caught up");
        let new = self.enqueue(&key, &input).await;
        if new {
            self.metrics.caught_up.inc();
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_capacity() {
        let mut b = Bucket::new(60, 3, 0);
        assert_eq!(b.take_up_to(10, 0.0, 0), 3);
        assert!(!b.try_take(0));
        assert!(!b.try_take(999));
        assert!(b.try_take(1_000), "one token a second");
        assert_eq!(b.take_up_to(10, 0.0, 3_600_000), 3, "capacity caps saving");
        b.force_take(3_600_000);
        assert!(!b.try_take(3_600_999), "a forced take is paid back first");
        assert!(b.try_take(3_602_000));
    }

    #[test]
    fn the_bucket_keeps_its_reserve() {
        let mut b = Bucket::new(60, 10, 0);
        assert_eq!(b.take_up_to(100, 4.0, 0), 6);
        assert!(b.try_take(0), "the reserve is there for polls");
    }

    #[test]
    fn a_pipeline_is_polled_after_its_estimate_then_with_back_off_up_to_the_limit() {
        let limit = 600_000;
        let mut s = PollSchedule::default();
        // Estimate 2 min: due at 2.5 min (margin 30 s).
        assert_eq!(s.due(7, 1_000, 120_000, limit, 150_000), None);
        assert_eq!(
            s.due(7, 1_000, 120_000, limit, 151_000),
            Some(PollReason::Overdue)
        );
        s.polled(7, limit, 151_000);
        assert_eq!(s.due(7, 1_000, 120_000, limit, 210_999), None);
        assert_eq!(
            s.due(7, 1_000, 120_000, limit, 211_000),
            Some(PollReason::Overdue)
        );
        let mut at = 211_000;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            s.polled(7, limit, at);
            let mut next = at;
            while s.due(7, 1_000, 120_000, limit, next).is_none() {
                next += 1_000;
            }
            gaps.push(next - at);
            at = next;
        }
        assert_eq!(gaps, [120_000, 240_000, 480_000, 600_000, 600_000]);
        assert_eq!(s.due(7, 1_000, 120_000, limit, at), Some(PollReason::Limit));
    }

    #[test]
    fn a_long_estimate_is_capped_by_the_limit() {
        let mut s = PollSchedule::default();
        assert_eq!(s.due(1, 0, 3_600_000, 600_000, 599_999), None);
        assert_eq!(
            s.due(1, 0, 3_600_000, 600_000, 600_000),
            Some(PollReason::Limit)
        );
        s.retain(&HashSet::new());
        assert!(s.polls.is_empty());
    }

    #[test]
    fn the_estimate_is_the_longest_recent_duration() {
        let mut d = Durations::default();
        assert_eq!(d.estimate("a"), None);
        for ms in [10, 50, 20, 30, 40, 25] {
            d.record("a", ms);
        }
        // Only the last five count: the 10 fell out, the 50 is still in.
        assert_eq!(d.estimate("a"), Some(50));
        for ms in [1, 2, 3, 4, 5] {
            d.record("a", ms);
        }
        assert_eq!(d.estimate("a"), Some(5));
    }

    proptest::proptest! {
        /// Any time from 1970 to 2200 survives formatting for `updated_after` and parsing back.
        #[test]
        fn any_timestamp_round_trips(ms in 0i64..7_258_118_400_000) {
            let text = crate::util::format_timestamp_ms(ms);
            proptest::prop_assert_eq!(crate::util::parse_timestamp_ms(&text), Some(ms));
        }

        /// Whatever the estimate, a pipeline is first due after at least the minimum margin and
        /// never later than the limit.
        #[test]
        fn the_first_poll_lies_between_the_margin_and_the_limit(
            estimate in 0i64..86_400_000,
            limit in 1i64..3_600_000,
        ) {
            let mut s = PollSchedule::default();
            let first = (0..=limit)
                .step_by(1_000)
                .chain([limit])
                .find(|&t| s.due(1, 0, estimate, limit, t).is_some());
            let first = first.unwrap_or(i64::MAX);
            proptest::prop_assert!(first <= limit);
            proptest::prop_assert!(first >= MIN_MARGIN_MS.min(limit));
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let ms = 1_767_225_600_123;
        let text = crate::util::format_timestamp_ms(ms);
        assert_eq!(text, "2026-01-01T00:00:00.123Z");
        assert_eq!(crate::util::parse_timestamp_ms(&text), Some(ms));
    }
}
