//! One replica's runtime: the engine's loops run only while this replica leads; a standby keeps
//! its in-memory view of the leader's work current from the store instead. The HTTP side
//! (webhook intake and spool, pages, API) runs on every replica and is not started here.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::engine::Engine;
use super::leader::{Leadership, Role};

/// How often a standby looks whether the leader's state changed.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How often at most the leader publishes that its state changed.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// Store key: `<epoch>:<graph version>:<change counter>` as the leader last published them, so
/// a standby reads the whole state only when the counter moved, and the graph only when the
/// graph version did.
pub(super) const CHANGES_KEY: &str = "engine.changes";
/// How long a stopping term's loops get to finish their step.
const TERM_STOP_WAIT: Duration = Duration::from_secs(5);

impl Engine {
    /// Runs this replica until `shutdown`: the engine loops (and whatever `on_term` starts, the
    /// hook sync) while `leadership` holds the lease, each term under a token of its own that is
    /// cancelled when the term ends; the standby view otherwise. Returns once the last term's
    /// loops stopped, so the caller releases the lease only after that.
    pub async fn run_replica(
        self: Arc<Self>,
        leadership: Arc<Leadership>,
        on_term: impl Fn(CancellationToken) + Send + 'static,
        shutdown: CancellationToken,
    ) {
        self.attach(Arc::clone(&leadership));
        let mut roles = leadership.subscribe();
        let mut led = false;
        while !shutdown.is_cancelled() {
            let role = roles.borrow_and_update().clone();
            let leads = matches!(role, Role::Leader(_));
            if leads != led {
                self.metrics.leadership_changes.inc();
                led = leads;
            }
            self.metrics.leader.set(i64::from(leads));
            let stop = shutdown.child_token();
            let tasks: Vec<JoinHandle<()>> = match role {
                Role::Leader(lease) => {
                    self.metrics.lease_epoch.set(lease.epoch);
                    match self.take_over().await {
                        Ok(()) => {
                            let mut tasks = Arc::clone(&self).spawn(stop.clone());
                            tasks.push(tokio::spawn(
                                Arc::clone(&self).publish_loop(lease.epoch, stop.clone()),
                            ));
                            on_term(stop.clone());
                            tasks
                        }
                        Err(e) => {
                            tracing::error!("cannot load the stored state to run the engine: {e}");
                            leadership
                                .resign(&format!("cannot load the stored state: {e}"))
                                .await;
                            Vec::new()
                        }
                    }
                }
                Role::Standby => vec![tokio::spawn(Arc::clone(&self).follow_loop(stop.clone()))],
            };
            // Pages show the role.
            self.bump();
            tokio::select! {
                changed = roles.changed() => {
                    if changed.is_err() {
                        shutdown.cancelled().await;
                    }
                }
                _ = shutdown.cancelled() => {}
            }
            stop.cancel();
            for task in tasks {
                let _ = tokio::time::timeout(TERM_STOP_WAIT, task).await;
            }
        }
    }

    /// The leader's side of the standby view: after its state changed, records so in the store
    /// (at most every [`PUBLISH_EVERY`], off the engine's commit path).
    async fn publish_loop(self: Arc<Self>, epoch: i64, stop: CancellationToken) {
        let mut changes = self.subscribe();
        loop {
            changes.borrow_and_update();
            self.publish(epoch).await;
            tokio::select! {
                _ = tokio::time::sleep(PUBLISH_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Records the leader's change counter and graph version for the standbys.
    pub(super) async fn publish(&self, epoch: i64) {
        let n = *self.changed.borrow();
        let graph = self.graph_version.load(std::sync::atomic::Ordering::SeqCst);
        let published = format!("{epoch}:{graph}:{n}");
        if let Err(e) = self.store.set_meta(CHANGES_KEY, &published).await {
            tracing::debug!("cannot publish the engine's change counter: {e}");
        }
    }

    /// The standby view: follows the leader's state until `stop`.
    async fn follow_loop(self: Arc<Self>, stop: CancellationToken) {
        let (mut seen, mut graph_seen) = (None, None);
        loop {
            self.follow(&mut seen, &mut graph_seen).await;
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// This replica's role and the current leader, for `/readyz`, `/api/status` and the page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RoleView {
    /// `leader` (this replica runs the engine) or `standby`.
    pub role: &'static str,
    /// The lease as stored (`null`: nobody holds an unexpired one, or the database did not
    /// answer).
    pub leader: Option<LeaderView>,
}

/// The replica holding the engine's lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LeaderView {
    /// Its holder id (`[name-]host-pid-random`).
    pub holder: String,
    /// The lease's epoch (grows with every grant).
    pub epoch: i64,
    /// Milliseconds until the lease expires unless renewed.
    pub expires_in_ms: i64,
}

impl Engine {
    /// This replica's role, and the leader as the store has it (one small read, no GitLab
    /// request).
    pub async fn role_view(&self) -> RoleView {
        let leader = match self.store.lease().await {
            Ok(Some(l)) if l.expires_in_ms > 0 => Some(LeaderView {
                holder: l.holder,
                epoch: l.epoch,
                expires_in_ms: l.expires_in_ms,
            }),
            _ => None,
        };
        RoleView {
            role: if self.is_leader() {
                "leader"
            } else {
                "standby"
            },
            leader,
        }
    }
}
