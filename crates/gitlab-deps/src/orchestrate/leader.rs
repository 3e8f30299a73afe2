//! Leadership among replicas sharing one database: exactly one runs the engine.
//!
//! Each process start has a holder id of its own ([`holder_id`]). [`Leadership::run`] asks the
//! store for the engine's lease at once (a lone replica never waits), renews it every
//! [`LeaseOptions::renew_every`] while it holds it, and otherwise asks again every
//! [`LeaseOptions::retry_every`]. The role is published on a [`watch`] channel.
//!
//! Self-fencing: the holder keeps a local deadline on the monotonic clock, the start of the last
//! successful grant or renewal plus `ttl - margin`. The store's expiry is counted from a later
//! instant (when its transaction ran), so the deadline always passes before another replica can
//! be granted the lease. Past the deadline without a renewal, on a renewal the store refuses,
//! or on a fenced write ([`Leadership::step_down`]), the replica steps down at once.
//! See docs/leadership.md.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{Lease, LeaseInfo, OrchestrationStore, StoreError};

/// The lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long a grant or renewal lasts (by the database's clock).
    pub ttl: Duration,
    /// How often the holder renews it.
    pub renew_every: Duration,
    /// How often a standby asks for it (and a holder retries a failed renewal).
    pub retry_every: Duration,
    /// How long before the lease's expiry the holder stops acting on it (covers clock rate
    /// differences and the time a request takes to reach GitLab).
    pub margin: Duration,
}

impl LeaseOptions {
    /// Timing derived from the ttl: renew every third of it, retry and margin a sixth (the
    /// defaults, 3 s / 1 s / 500 ms / 500 ms, keep these proportions).
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            renew_every: ttl / 3,
            retry_every: ttl / 6,
            margin: ttl / 6,
        }
    }

    /// How long a grant is acted on, counted from the start of the request that got it.
    fn valid_for(&self) -> Duration {
        self.ttl.saturating_sub(self.margin)
    }
}

/// What this replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Another replica (or nobody yet) runs the engine.
    Standby,
    /// This replica runs the engine under this lease.
    Leader(Lease),
}

/// The lease operations leadership needs (a narrow view of [`OrchestrationStore`], so the state
/// machine is tested against a scripted store).
#[async_trait]
pub trait Leases: Send + Sync {
    /// [`OrchestrationStore::acquire_lease`].
    async fn acquire(&self, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError>;
    /// [`OrchestrationStore::renew_lease`].
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError>;
    /// [`OrchestrationStore::release_lease`].
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;
    /// [`OrchestrationStore::lease`].
    async fn current(&self) -> Result<Option<LeaseInfo>, StoreError>;
}

/// [`Leases`] of any orchestration store.
pub struct StoreLeases<S: ?Sized>(pub Arc<S>);

#[async_trait]
impl<S: OrchestrationStore + ?Sized> Leases for StoreLeases<S> {
    async fn acquire(&self, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        self.0.acquire_lease(holder, ttl).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        self.0.renew_lease(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.0.release_lease(lease).await
    }
    async fn current(&self) -> Result<Option<LeaseInfo>, StoreError> {
        self.0.lease().await
    }
}

/// A holder id unique per process start: `[<prefix>-]<hostname>-<pid>-<random>`.
pub fn holder_id(prefix: Option<&str>) -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let host = if host.is_empty() {
        "host".to_owned()
    } else {
        host
    };
    let random = uuid::Uuid::new_v4().simple().to_string();
    let id = format!("{host}-{}-{}", std::process::id(), &random[..8]);
    match prefix.filter(|p| !p.is_empty()) {
        Some(prefix) => format!("{prefix}-{id}"),
        None => id,
    }
}

#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
    /// Acting on the lease stops here.
    deadline: Instant,
}

/// This replica's part in the leadership: the lease it holds, if any, and the task keeping it.
pub struct Leadership {
    holder: String,
    opts: LeaseOptions,
    leases: Arc<dyn Leases>,
    held: Mutex<Option<Held>>,
    role: watch::Sender<Role>,
    /// Wakes [`Leadership::run`] after a step-down from outside (a fenced write).
    lost: Notify,
}

fn lock(held: &Mutex<Option<Held>>) -> std::sync::MutexGuard<'_, Option<Held>> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

impl Leadership {
    /// A standby replica named `holder`, until [`Leadership::run`] wins the lease.
    pub fn new(leases: Arc<dyn Leases>, opts: LeaseOptions, holder: String) -> Arc<Self> {
        Arc::new(Self {
            holder,
            opts,
            leases,
            held: Mutex::new(None),
            role: watch::Sender::new(Role::Standby),
            lost: Notify::new(),
        })
    }

    /// This replica's holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The lease timing.
    pub fn options(&self) -> LeaseOptions {
        self.opts
    }

    /// The role as last published.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// A receiver of every role change.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// The lease this replica may act on now: held, and its local deadline not passed. Checked
    /// right before every pipeline creation.
    pub fn current(&self) -> Option<Lease> {
        lock(&self.held)
            .as_ref()
            .filter(|h| Instant::now() < h.deadline)
            .map(|h| h.lease.clone())
    }

    /// Whether this replica may still act on the lease of `epoch`.
    pub fn holds(&self, epoch: i64) -> bool {
        self.current().is_some_and(|l| l.epoch == epoch)
    }

    /// The stored lease, as every replica reads it (`None` when never granted or on error).
    pub async fn stored(&self) -> Option<LeaseInfo> {
        self.leases.current().await.ok().flatten()
    }

    /// Stops acting as leader at once (a no-op on a standby); `why` goes to the log.
    pub fn step_down(&self, why: &str) {
        let was = lock(&self.held).take();
        if let Some(held) = was {
            tracing::warn!("stepped down: {why} (epoch {})", held.lease.epoch);
            self.role.send_replace(Role::Standby);
            self.lost.notify_one();
        }
    }

    /// Steps down and gives the lease back, so another replica takes over without waiting for it
    /// to expire (after a clean shutdown, or when this replica cannot run the engine).
    pub async fn resign(&self, why: &str) {
        let lease = lock(&self.held).as_ref().map(|h| h.lease.clone());
        let Some(lease) = lease else { return };
        {
            let mut held = lock(&self.held);
            if held.as_ref().is_some_and(|h| h.lease.epoch == lease.epoch) {
                *held = None;
                drop(held);
                tracing::info!("stepped down: {why} (epoch {})", lease.epoch);
                self.role.send_replace(Role::Standby);
            }
        }
        match tokio::time::timeout(self.opts.ttl, self.leases.release(&lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot release the engine lease: {e}"),
            Err(_) => tracing::warn!("cannot release the engine lease: the database is slow"),
        }
    }

    /// Keeps the lease (or asks for it) until `shutdown`, then releases it.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut next = Instant::now();
        let mut warned = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.lost.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            let held = lock(&self.held).clone();
            next = match held {
                None => self.try_acquire(&mut warned).await,
                Some(held) => self.renew(held).await,
            };
        }
        self.resign("shutting down").await;
    }

    /// One ask for the lease; returns when to act next.
    async fn try_acquire(&self, warned: &mut bool) -> Instant {
        let start = Instant::now();
        let deadline = start + self.opts.valid_for();
        let asked =
            tokio::time::timeout_at(deadline, self.leases.acquire(&self.holder, self.opts.ttl))
                .await;
        match asked {
            Ok(Ok(Some(lease))) if Instant::now() < deadline => {
                *warned = false;
                tracing::info!("became leader (epoch {})", lease.epoch);
                *lock(&self.held) = Some(Held {
                    lease: lease.clone(),
                    deadline,
                });
                self.role.send_replace(Role::Leader(lease));
                return (start + self.opts.renew_every).min(deadline);
            }
            // Granted too late to act on: it expires by itself.
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => *warned = false,
            Ok(Err(e)) => {
                if !std::mem::replace(warned, true) {
                    tracing::warn!("cannot ask for the engine lease: {e}");
                }
            }
            Err(_) => {
                if !std::mem::replace(warned, true) {
                    tracing::warn!("cannot ask for the engine lease: the database does not answer");
                }
            }
        }
        Instant::now() + self.opts.retry_every
    }

    /// One renewal; returns when to act next.
    async fn renew(&self, held: Held) -> Instant {
        let start = Instant::now();
        if start >= held.deadline {
            self.step_down_from(&held.lease, "the lease was not renewed in time");
            return start;
        }
        let renewed =
            tokio::time::timeout_at(held.deadline, self.leases.renew(&held.lease, self.opts.ttl))
                .await;
        match renewed {
            Ok(Ok(true)) => {
                let deadline = start + self.opts.valid_for();
                if let Some(h) = lock(&self.held)
                    .as_mut()
                    .filter(|h| h.lease.epoch == held.lease.epoch)
                {
                    h.deadline = deadline;
                }
                (start + self.opts.renew_every).min(deadline)
            }
            Ok(Ok(false)) => {
                self.step_down_from(&held.lease, "another replica took the lease");
                Instant::now()
            }
            Ok(Err(StoreError::Fenced { current, .. })) => {
                let why = format!("another replica took the lease (epoch {current})");
                self.step_down_from(&held.lease, &why);
                Instant::now()
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot renew the engine lease, trying again: {e}");
                (Instant::now() + self.opts.retry_every).min(held.deadline)
            }
            Err(_) => {
                self.step_down_from(
                    &held.lease,
                    "the database did not answer the renewal in time",
                );
                Instant::now()
            }
        }
    }

    /// Steps down if `lease` is still the one held (a newer grant stays).
    fn step_down_from(&self, lease: &Lease, why: &str) {
        let mut held = lock(&self.held);
        if held.as_ref().is_some_and(|h| h.lease.epoch == lease.epoch) {
            *held = None;
            drop(held);
            tracing::warn!("stepped down: {why} (epoch {})", lease.epoch);
            self.role.send_replace(Role::Standby);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// How the scripted store answers.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// Like a database: one holder at a time, a new epoch per grant.
        Normal,
        /// Every call fails.
        Fail,
        /// Every call hangs.
        Hang,
    }

    #[derive(Debug)]
    struct Stored {
        holder: String,
        epoch: i64,
        expires: Instant,
    }

    struct Fake {
        mode: Mutex<Mode>,
        stored: Mutex<Option<Stored>>,
        released: AtomicUsize,
    }

    impl Fake {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                mode: Mutex::new(Mode::Normal),
                stored: Mutex::new(None),
                released: AtomicUsize::new(0),
            })
        }
        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
        async fn gate(&self) -> Result<(), StoreError> {
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Normal => Ok(()),
                Mode::Fail => Err(StoreError::Worker("cut off".into())),
                Mode::Hang => std::future::pending().await,
            }
        }
        /// Another replica takes the lease (as after this one's expiry).
        fn supersede(&self) {
            let mut stored = self.stored.lock().unwrap();
            let epoch = stored.as_ref().map_or(0, |s| s.epoch) + 1;
            *stored = Some(Stored {
                holder: "other".into(),
                epoch,
                expires: Instant::now() + Duration::from_secs(3600),
            });
        }
    }

    #[async_trait]
    impl Leases for Fake {
        async fn acquire(&self, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
            self.gate().await?;
            let mut stored = self.stored.lock().unwrap();
            let now = Instant::now();
            if let Some(s) = stored.as_ref()
                && s.holder != holder
                && s.expires > now
            {
                return Ok(None);
            }
            let epoch = stored.as_ref().map_or(0, |s| s.epoch) + 1;
            *stored = Some(Stored {
                holder: holder.into(),
                epoch,
                expires: now + ttl,
            });
            Ok(Some(Lease {
                holder: holder.into(),
                epoch,
            }))
        }
        async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
            self.gate().await?;
            let mut stored = self.stored.lock().unwrap();
            match stored.as_mut() {
                Some(s) if s.epoch == lease.epoch => {
                    s.expires = Instant::now() + ttl;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
            self.gate().await?;
            let mut stored = self.stored.lock().unwrap();
            if let Some(s) = stored.as_mut().filter(|s| s.epoch == lease.epoch) {
                s.expires = Instant::now();
                self.released.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
        async fn current(&self) -> Result<Option<LeaseInfo>, StoreError> {
            self.gate().await?;
            Ok(None)
        }
    }

    const TTL: Duration = Duration::from_secs(3);

    fn start(fake: &Arc<Fake>, name: &str) -> (Arc<Leadership>, CancellationToken) {
        let leadership = Leadership::new(
            Arc::clone(fake) as Arc<dyn Leases>,
            LeaseOptions::with_ttl(TTL),
            name.into(),
        );
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&leadership).run(stop.clone()));
        (leadership, stop)
    }

    /// Waits (on the paused clock) until `leadership` has the role `leader` says.
    async fn role_becomes(leadership: &Leadership, leader: bool) {
        let mut role = leadership.subscribe();
        tokio::time::timeout(
            Duration::from_secs(60),
            role.wait_for(|r| matches!(r, Role::Leader(_)) == leader),
        )
        .await
        .expect("role changed in time")
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_replica_leads_at_once_and_keeps_the_lease() {
        let fake = Fake::new();
        let (a, _stop) = start(&fake, "a");
        role_becomes(&a, true).await;
        assert_eq!(a.current().map(|l| l.epoch), Some(1));
        // Renewals keep it well past the ttl.
        tokio::time::sleep(TTL * 10).await;
        assert_eq!(a.current().map(|l| l.epoch), Some(1));
        assert_eq!(a.role(), Role::Leader(a.current().unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn of_two_replicas_one_leads_and_the_other_takes_over_after_a_clean_shutdown() {
        let fake = Fake::new();
        let (a, stop_a) = start(&fake, "a");
        role_becomes(&a, true).await;
        let (b, _stop_b) = start(&fake, "b");
        tokio::time::sleep(TTL * 3).await;
        assert_eq!(b.role(), Role::Standby);
        stop_a.cancel();
        role_becomes(&b, true).await;
        assert_eq!(fake.released.load(Ordering::SeqCst), 1);
        // Released, not expired: the standby took over within one retry interval.
        assert_eq!(b.current().map(|l| l.epoch), Some(2));
        assert_eq!(a.role(), Role::Standby);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_database_makes_the_leader_step_down_by_its_deadline() {
        let fake = Fake::new();
        let (a, _stop) = start(&fake, "a");
        role_becomes(&a, true).await;
        let cut = Instant::now();
        fake.set(Mode::Hang);
        role_becomes(&a, false).await;
        // Never later than the last renewal's start plus ttl - margin.
        assert!(Instant::now() - cut <= LeaseOptions::with_ttl(TTL).valid_for());
        assert_eq!(a.current(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_make_the_leader_step_down_and_it_returns_when_the_database_does() {
        let fake = Fake::new();
        let (a, _stop) = start(&fake, "a");
        role_becomes(&a, true).await;
        fake.set(Mode::Fail);
        role_becomes(&a, false).await;
        fake.set(Mode::Normal);
        role_becomes(&a, true).await;
        assert_eq!(
            a.current().map(|l| l.epoch),
            Some(2),
            "a new grant, a new epoch"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_superseded_lease_is_given_up_at_the_next_renewal() {
        let fake = Fake::new();
        let (a, _stop) = start(&fake, "a");
        role_becomes(&a, true).await;
        fake.supersede();
        role_becomes(&a, false).await;
        tokio::time::sleep(TTL).await;
        assert_eq!(a.role(), Role::Standby, "the other holder keeps it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_down_from_outside_takes_effect_at_once() {
        let fake = Fake::new();
        let (a, _stop) = start(&fake, "a");
        role_becomes(&a, true).await;
        let epoch = a.current().unwrap().epoch;
        fake.supersede();
        a.step_down("a write was fenced");
        assert_eq!(a.current(), None);
        assert!(!a.holds(epoch));
        assert_eq!(a.role(), Role::Standby);
    }

    #[test]
    fn holder_ids_differ_per_start_and_carry_the_prefix() {
        let (a, b) = (holder_id(None), holder_id(Some("eu-1")));
        assert_ne!(a, holder_id(None));
        assert!(b.starts_with("eu-1-"), "{b}");
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }

    #[test]
    fn the_default_timing_keeps_its_proportions() {
        let o = LeaseOptions::with_ttl(Duration::from_secs(3));
        assert_eq!(o.renew_every, Duration::from_secs(1));
        assert_eq!(o.retry_every, Duration::from_millis(500));
        assert_eq!(o.margin, Duration::from_millis(500));
    }
}
