//! Two replicas on one database, in-process: two `Service`s, each with its own SQLite handle on
//! one file and its own HTTP server, against gitlab-sim. Exactly one runs the engine; the other
//! takes webhooks and shows the leader's work, and takes over when the leader shuts down or
//! loses its database. The simulator delivers webhooks to the standby only, so the leader sees
//! them through the shared event log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use common::diamond;

use async_trait::async_trait;
use gitlab_deps::cascade::{Counters, Input, ProjectState};
use gitlab_deps::config::{ScanFileConfig, ScanSettings};
use gitlab_deps::gitlab::GitLabOptions;
use gitlab_deps::orchestrate::{Engine, Leadership, LeaseOptions, Role};
use gitlab_deps::scan::{NoProgress, ScanRequest};
use gitlab_deps::server;
use gitlab_deps::service::{Service, ServiceConfig};
use gitlab_deps::store::{
    Activity, DeriveFn, DiscoveryStore, Edge, External, FileBlobs, Lease, LeaseInfo, MetaStore,
    NewEvent, OrchestrationStore, PrefixRule, ProjectRecord, ProjectScan, Reference,
    ReplaceOutcome, Resolution, ResolveInput, ResolveVersions, SqliteStore, Store, StoreError,
    StoredCascade, StoredEvent, Warning,
};
use gitlab_sim::{Outcome, PipelineInfo, Sim, SimOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "replicas-secret";
const WAIT: Duration = Duration::from_secs(30);
/// Short, so a lost leader is replaced within seconds; long enough that a loaded test machine
/// does not miss renewals.
const TTL: Duration = Duration::from_secs(2);

const PROJECTS: [&str; 4] = ["images/base", "images/ruby", "images/tools", "apps/app"];

struct Replica {
    engine: Arc<Engine>,
    leadership: Arc<Leadership>,
    url: String,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Replica {
    fn leads(&self) -> bool {
        matches!(self.leadership.role(), Role::Leader(_))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Stops it cleanly (engine first, then the lease is released) and waits for that.
    async fn stop(self) {
        self.shutdown.cancel();
        let mut this = self;
        (&mut this.served).await.unwrap();
    }
}

/// A replica named `name` serving `store`; scans first when `scan`.
async fn replica(sim: &Sim, url: &str, store: Arc<dyn Store>, name: &str, scan: bool) -> Replica {
    let mut config = ServiceConfig::new(
        GitLabOptions::new(format!("{url}/").parse().unwrap(), sim.token().into()),
        ScanSettings::from_file(&ScanFileConfig::default()).unwrap(),
    );
    config.engine.rescan_every = None;
    config.http.webhook_secret = Some(SECRET.into());
    config.lease = LeaseOptions::with_ttl(TTL);
    config.replica_name = Some(name.into());
    let service = Service::new(config, store).await.unwrap();
    if scan {
        service
            .scanner()
            .scan(&ScanRequest::default(), &NoProgress)
            .await
            .unwrap();
        service.engine().reload().await.unwrap();
    }
    let engine = Arc::clone(service.engine());
    let leadership = Arc::clone(service.leadership());
    let (listener, addr) = server::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let served = tokio::spawn(async move {
        service.serve(listener, stop).await.unwrap();
    });
    Replica {
        engine,
        leadership,
        url: format!("http://{addr}"),
        shutdown,
        served,
    }
}

/// Waits for `cond`, polling every 20 ms; panics with `what` after [`WAIT`].
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pipelines gitlab-deps created (source `api`) for a project.
fn ours(sim: &Sim, project: &str) -> Vec<PipelineInfo> {
    sim.pipelines(project)
        .into_iter()
        .filter(|p| p.source == "api")
        .collect()
}

fn finish_ours(sim: &Sim, project: &str) {
    for p in ours(sim, project) {
        if !p.status.is_finished() {
            sim.finish_pipeline(project, p.id, Outcome::Success);
        }
    }
}

/// The state `/api/status` of `replica` reports for a project (`None`: idle).
fn state_in(status: &Value, project: &str) -> Option<String> {
    status["projects"]
        .as_array()?
        .iter()
        .find(|p| p["project"] == project)
        .and_then(|p| p["state"].as_str())
        .map(str::to_owned)
}

fn hook_to(sim: &Sim, replica: &Replica) {
    for project in PROJECTS {
        sim.add_hook(project, &format!("{}/hooks/gitlab", replica.url), SECRET);
    }
}

async fn simulator() -> (Sim, String, tempfile::TempDir) {
    let sim = Sim::new(SimOptions {
        auto_finish: false,
        ..SimOptions::default()
    });
    let url = sim.start().await.unwrap();
    diamond(&sim);
    (sim, url, tempfile::tempdir().unwrap())
}

fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(&dir.path().join("deps.db")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_the_standby_shows_its_work_and_finishes_the_cascade_after_it_stops() {
    let (sim, url, dir) = simulator().await;
    let a = replica(&sim, &url, open(&dir), "a", true).await;
    until("a leads", async || a.leads()).await;
    let b = replica(&sim, &url, open(&dir), "b", false).await;
    hook_to(&sim, &b);

    // Exactly one leader, and each replica says which; both are ready (both take webhooks).
    let (status, ready_a) = a.get("/readyz").await;
    assert_eq!((status, ready_a["role"].as_str()), (200, Some("leader")));
    let (status, ready_b) = b.get("/readyz").await;
    assert_eq!((status, ready_b["role"].as_str()), (200, Some("standby")));
    assert_eq!(ready_b["status"], "ready");
    let holder = a.leadership.holder().to_owned();
    assert!(holder.starts_with("a-"), "{holder}");
    assert_eq!(ready_b["leader"]["holder"], holder.as_str());
    assert_eq!(ready_a["leader"]["holder"], holder.as_str());
    assert!(!b.leads() && !b.engine.is_leader());

    // base succeeds; the webhook reaches the standby, the leader starts ruby and tools.
    let base = sim.run_pipeline("images/base", "push");
    sim.finish_pipeline("images/base", base, Outcome::Success);
    assert!(
        sim.wait_for(WAIT, |s| ours(s, "images/ruby").len() == 1
            && ours(s, "images/tools").len() == 1)
            .await,
        "ruby and tools started"
    );
    // The standby shows the leader's cascade in progress.
    until("the standby shows ruby running", async || {
        let (_, status) = b.get("/api/status").await;
        state_in(&status, "images/ruby").as_deref() == Some("running")
            && state_in(&status, "apps/app").is_some()
    })
    .await;
    let (_, status) = b.get("/api/status").await;
    assert_eq!(status["role"], "standby");
    assert_eq!(status["leader"]["holder"], holder.as_str());
    let page = reqwest::get(format!("{}/", b.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("standby (leader: <code>a-"), "{page}");
    assert_eq!(a.engine.metrics.pipelines_created.get(), 2);

    // The leader stops cleanly: it releases the lease and the standby takes over at once.
    a.stop().await;
    until("b leads", async || b.leads()).await;
    let (_, ready_b) = b.get("/readyz").await;
    assert_eq!(ready_b["role"], "leader");
    assert!(
        ready_b["leader"]["holder"]
            .as_str()
            .unwrap()
            .starts_with("b-")
    );
    assert_eq!(b.engine.metrics.leader.get(), 1);
    assert!(ours(&sim, "apps/app").is_empty(), "app waits for both");
    finish_ours(&sim, "images/ruby");
    finish_ours(&sim, "images/tools");
    assert!(
        sim.wait_for(WAIT, |s| ours(s, "apps/app").len() == 1).await,
        "the new leader starts app once both finished"
    );
    finish_ours(&sim, "apps/app");
    until("the cascade is over", async || {
        gitlab_deps::orchestrate::describe(&b.engine.snapshot().await).is_empty()
    })
    .await;
    // Every project built exactly once, app only after both of its upstreams.
    for project in ["images/ruby", "images/tools", "apps/app"] {
        assert_eq!(ours(&sim, project).len(), 1, "{project}");
    }
    let app = &ours(&sim, "apps/app")[0];
    for upstream in ["images/ruby", "images/tools"] {
        assert!(ours(&sim, upstream)[0].id < app.id, "{upstream} before app");
    }
    assert_eq!(b.engine.metrics.pipelines_created.get(), 1);
}

/// How [`Switch`] answers.
#[derive(Default)]
struct Cut(AtomicBool);

impl Cut {
    /// Every call from now on hangs (a database that stopped answering, a cut connection).
    fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    async fn gate(&self) {
        if self.0.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

/// A store that passes every call through until it is cut off.
struct Switch {
    inner: Arc<dyn Store>,
    cut: Arc<Cut>,
}

#[async_trait]
impl MetaStore for Switch {
    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.cut.gate().await;
        self.inner.meta(key).await
    }
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.cut.gate().await;
        self.inner.set_meta(key, value).await
    }
}

#[async_trait]
impl DiscoveryStore for Switch {
    async fn projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        self.cut.gate().await;
        self.inner.projects().await
    }
    async fn project(&self, id: u64) -> Result<Option<ProjectRecord>, StoreError> {
        self.cut.gate().await;
        self.inner.project(id).await
    }
    async fn save_scans(&self, scans: &[ProjectScan]) -> Result<(), StoreError> {
        self.cut.gate().await;
        self.inner.save_scans(scans).await
    }
    async fn update_records(&self, records: &[ProjectRecord]) -> Result<(), StoreError> {
        self.cut.gate().await;
        self.inner.update_records(records).await
    }
    async fn remove_projects(&self, ids: &[u64]) -> Result<(), StoreError> {
        self.cut.gate().await;
        self.inner.remove_projects(ids).await
    }
    async fn file_blobs(&self) -> Result<std::collections::HashMap<u64, FileBlobs>, StoreError> {
        self.cut.gate().await;
        self.inner.file_blobs().await
    }
    async fn project_file_blobs(&self, id: u64) -> Result<FileBlobs, StoreError> {
        self.cut.gate().await;
        self.inner.project_file_blobs(id).await
    }
    async fn project_findings(
        &self,
        id: u64,
    ) -> Result<(Vec<Reference>, Vec<Warning>), StoreError> {
        self.cut.gate().await;
        self.inner.project_findings(id).await
    }
    async fn references(&self) -> Result<Vec<(String, Reference)>, StoreError> {
        self.cut.gate().await;
        self.inner.references().await
    }
    async fn replace_resolution(&self, resolution: &Resolution) -> Result<(), StoreError> {
        self.cut.gate().await;
        self.inner.replace_resolution(resolution).await
    }
    async fn resolve_input(&self) -> Result<ResolveInput, StoreError> {
        self.cut.gate().await;
        self.inner.resolve_input().await
    }
    async fn replace_resolution_from(
        &self,
        resolution: &Resolution,
        read: &ResolveVersions,
    ) -> Result<ReplaceOutcome, StoreError> {
        self.cut.gate().await;
        self.inner.replace_resolution_from(resolution, read).await
    }
    async fn resolve_project(
        &self,
        id: u64,
        rule: &PrefixRule,
        derive: DeriveFn,
    ) -> Result<Option<Resolution>, StoreError> {
        self.cut.gate().await;
        self.inner.resolve_project(id, rule, derive).await
    }
    async fn upstream_edges(&self, downstream: &str) -> Result<Vec<Edge>, StoreError> {
        self.cut.gate().await;
        self.inner.upstream_edges(downstream).await
    }
    async fn edges(&self) -> Result<Vec<Edge>, StoreError> {
        self.cut.gate().await;
        self.inner.edges().await
    }
    async fn externals(&self) -> Result<Vec<External>, StoreError> {
        self.cut.gate().await;
        self.inner.externals().await
    }
    async fn warnings(&self) -> Result<Vec<Warning>, StoreError> {
        self.cut.gate().await;
        self.inner.warnings().await
    }
    async fn hook_fingerprints(
        &self,
    ) -> Result<std::collections::HashMap<u64, String>, StoreError> {
        self.cut.gate().await;
        self.inner.hook_fingerprints().await
    }
    async fn update_hook_fingerprints(
        &self,
        set: &[(u64, String)],
        forget: &[u64],
    ) -> Result<(), StoreError> {
        self.cut.gate().await;
        self.inner.update_hook_fingerprints(set, forget).await
    }
}

#[async_trait]
impl OrchestrationStore for Switch {
    async fn insert_event(
        &self,
        delivery_key: &str,
        kind: &str,
        body: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.cut.gate().await;
        self.inner.insert_event(delivery_key, kind, body).await
    }
    async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Option<i64>>, StoreError> {
        self.cut.gate().await;
        self.inner.insert_events(events).await
    }
    async fn insert_input(&self, key: &str, input: &Input) -> Result<Option<i64>, StoreError> {
        self.cut.gate().await;
        self.inner.insert_input(key, input).await
    }
    async fn unprocessed_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.cut.gate().await;
        self.inner.unprocessed_events(limit).await
    }
    async fn commit_cascade(
        &self,
        changes: &[(String, Option<&ProjectState>)],
        counters: Counters,
        processed_up_to: Option<i64>,
        activity: Activity<'_>,
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        self.cut.gate().await;
        self.inner
            .commit_cascade(changes, counters, processed_up_to, activity, fence)
            .await
    }
    async fn prune_events(&self, received_before_ms: i64) -> Result<usize, StoreError> {
        self.cut.gate().await;
        self.inner.prune_events(received_before_ms).await
    }
    async fn cascade_state(&self) -> Result<Option<StoredCascade>, StoreError> {
        self.cut.gate().await;
        self.inner.cascade_state().await
    }
    async fn recent_activity(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        self.cut.gate().await;
        self.inner.recent_activity(limit).await
    }
    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.cut.gate().await;
        self.inner.acquire_lease(holder, ttl).await
    }
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        self.cut.gate().await;
        self.inner.renew_lease(lease, ttl).await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.cut.gate().await;
        self.inner.release_lease(lease).await
    }
    async fn lease(&self) -> Result<Option<LeaseInfo>, StoreError> {
        self.cut.gate().await;
        self.inner.lease().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_database_creates_nothing_after_its_deadline() {
    let (sim, url, dir) = simulator().await;
    let cut = Arc::new(Cut::default());
    let switched: Arc<dyn Store> = Arc::new(Switch {
        inner: open(&dir),
        cut: Arc::clone(&cut),
    });
    let a = replica(&sim, &url, switched, "a", true).await;
    until("a leads", async || a.leads()).await;
    let b = replica(&sim, &url, open(&dir), "b", false).await;
    hook_to(&sim, &b);
    // GitLab refuses the leader's creations for now: it keeps retrying them.
    sim.faults().fail_next("POST", "/pipeline", 10_000, 502);
    let base = sim.run_pipeline("images/base", "push");
    sim.finish_pipeline("images/base", base, Outcome::Success);
    let posts = |sim: &Sim| {
        sim.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/pipeline"))
            .count()
    };
    assert!(
        sim.wait_for(WAIT, |s| posts(s) >= 2).await,
        "the leader tried to create ruby and tools"
    );

    // The leader loses its database: its renewals hang, and by its deadline it steps down.
    cut.cut();
    until("a steps down", async || !a.leads()).await;
    assert!(!a.engine.is_leader());
    until("b leads", async || b.leads()).await;
    // Its creations notice the lost lease before their next request and give up (GitLab still
    // refuses every creation, so neither replica's pipeline exists to be adopted instead).
    until("a gives both creations up", async || {
        a.engine.metrics.creations_abandoned.get() >= 2
    })
    .await;
    assert!(ours(&sim, "images/ruby").is_empty() && ours(&sim, "images/tools").is_empty());
    sim.faults().clear();
    // ...and the new leader resolves the intents: each pipeline exists exactly once.
    assert!(
        sim.wait_for(WAIT, |s| ours(s, "images/ruby").len() == 1
            && ours(s, "images/tools").len() == 1)
            .await,
        "the new leader created ruby and tools"
    );
    // The new leader counts a creation once GitLab's answer is back.
    until("b counted both creations", async || {
        b.engine.metrics.pipelines_created.get() >= 2
    })
    .await;
    assert_eq!(a.engine.metrics.pipelines_created.get(), 0);
    assert_eq!(b.engine.metrics.pipelines_created.get(), 2);
    finish_ours(&sim, "images/ruby");
    finish_ours(&sim, "images/tools");
    assert!(
        sim.wait_for(WAIT, |s| ours(s, "apps/app").len() == 1).await,
        "the new leader goes on with the cascade"
    );
    for project in ["images/ruby", "images/tools", "apps/app"] {
        assert_eq!(ours(&sim, project).len(), 1, "{project}");
    }
    assert_eq!(a.engine.metrics.pipelines_created.get(), 0);
    assert!(!a.leads(), "the cut-off replica stays standby");
}

/// `GET` of a running binary's JSON endpoint, from the simulator's runtime.
fn get_json(server: &common::SimServer, url: &str) -> Value {
    server
        .runtime
        .block_on(async { reqwest::get(url).await?.json::<Value>().await })
        .unwrap()
}

#[test]
fn a_second_serve_on_the_same_database_stays_standby_and_takes_over_after_kill_9() {
    let server = common::SimServer::start(SimOptions::default());
    server.sim.with_sample_instance();
    let (work, mut first) = common::scan_and_serve(&server, &[], None);
    common::wait_until(10, "the first serve leads", || {
        get_json(&server, &format!("{}/readyz", first.url))["role"] == "leader"
    });
    let second = common::Service::start(
        &work,
        &server.url,
        "127.0.0.1:0",
        &["--replica-name", "second"],
    );
    let ready = get_json(&server, &format!("{}/readyz", second.url));
    assert_eq!(ready["role"], "standby", "{ready}");
    let holder = ready["leader"]["holder"].as_str().unwrap().to_owned();
    assert!(!holder.starts_with("second-"), "{holder}");
    first.kill();
    // The lease expires within its ttl (3 s by default) and the standby takes it.
    common::wait_until(20, "the second serve leads", || {
        get_json(&server, &format!("{}/readyz", second.url))["role"] == "leader"
    });
    let ready = get_json(&server, &format!("{}/readyz", second.url));
    assert!(
        ready["leader"]["holder"]
            .as_str()
            .is_some_and(|h| h.starts_with("second-")),
        "{ready}"
    );
    assert!(ready["leader"]["epoch"].as_i64() > Some(1), "{ready}");
}
