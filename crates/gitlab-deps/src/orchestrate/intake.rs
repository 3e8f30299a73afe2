//! Group commit for webhook deliveries: handlers hand their event to one writer task, which commits
//! whatever has queued up meanwhile in one transaction and then answers each handler. Under load
//! that turns thousands of small transactions into a few large ones; alone, an event is committed
//! at once. The engine records its internal inputs (creation results and the like) through a
//! writer of its own, without a spool.
//!
//! When the database does not answer within [`DB_WAIT`] (another process holds its lock, or it
//! fails), the batch goes to the [`Spool`] instead and is acknowledged once that file is synced;
//! from then on every batch goes to the spool, behind the ones already there, until an import
//! has moved them all into the event log in order and emptied the file. GitLab thus never waits
//! for the database lock, and the event log keeps the order of arrival.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::spool::Spool;
use crate::store::{NewEvent, Store, StoreError};

/// Most events committed in one transaction.
const MAX_BATCH: usize = 512;

/// How long a batch waits for the database before it goes to the spool. Commits take
/// milliseconds; a lock held by another process holds them for up to the busy timeout (10 s),
/// about as long as GitLab waits for an answer.
pub(crate) const DB_WAIT: Duration = Duration::from_millis(500);

/// Pause between two failed imports of the spool.
const IMPORT_RETRY: Duration = Duration::from_secs(1);

/// Most bytes of the spool read for one import step (a larger single record is read alone).
const IMPORT_WINDOW: u64 = 8 * 1024 * 1024;

/// Where a delivery was made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Committed to the event log as a new event.
    New,
    /// A redelivery of an event already in the log.
    Duplicate,
    /// Synced to the spool; imported (and deduplicated) once the database is free.
    Spooled,
}

type Reply = oneshot::Sender<Result<Recorded, String>>;
type Insert = JoinHandle<Result<Vec<Option<i64>>, StoreError>>;

/// What the writer tells the engine.
pub(crate) struct Signals {
    /// Events reached the event log (wakes the engine).
    pub committed: Box<dyn Fn() + Send + Sync>,
    /// The database refused or delayed a commit.
    pub failed: Box<dyn Fn() + Send + Sync>,
}

/// The handle handlers use to record a delivery durably.
#[derive(Clone)]
pub(crate) struct Intake {
    tx: mpsc::Sender<(NewEvent, Reply)>,
}

impl Intake {
    /// Starts the writer task. Batches are committed through `store` (the engine's connection: a
    /// second writer connection would make the two contend for SQLite's lock under load). The
    /// spool is imported through `importer` when given, a connection of its own, so that an
    /// import waiting for a locked database holds up nothing else. Without a spool, every batch
    /// waits for the database as long as it takes (tests and in-memory stores).
    pub(crate) fn start(
        store: Arc<dyn Store>,
        spool: Option<Spool>,
        importer: Option<Arc<dyn Store>>,
        signals: Signals,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<(NewEvent, Reply)>(4 * MAX_BATCH);
        let writer = Writer {
            importer: importer.unwrap_or_else(|| Arc::clone(&store)),
            store,
            spooled: spool.as_ref().map_or(0, Spool::len),
            spool: spool.map(|s| Arc::new(Mutex::new(s))),
            imported: 0,
            inflight: None,
            import: None,
            next_import: Some(Instant::now()),
            signals,
        };
        tokio::spawn(writer.run(rx));
        Self { tx }
    }

    /// Records one delivery.
    pub(crate) async fn record(&self, event: NewEvent) -> Result<Recorded, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| "the event writer stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the event writer stopped".to_owned())?
    }
}

struct Writer {
    store: Arc<dyn Store>,
    importer: Arc<dyn Store>,
    spool: Option<Arc<Mutex<Spool>>>,
    /// Bytes in the spool (only this task appends and empties it).
    spooled: u64,
    /// Bytes at the start of the spool already in the event log.
    imported: u64,
    /// A commit that outlived [`DB_WAIT`]; its batch is in the spool too. Imports wait for it,
    /// so the event log keeps the order of arrival.
    inflight: Option<Insert>,
    /// The running import step: the offset it reached, or why it failed.
    import: Option<JoinHandle<Result<u64, String>>>,
    /// When to start the next import step (while the spool holds unimported records).
    next_import: Option<Instant>,
    signals: Signals,
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    // The spool's state is its file and length, both consistent after any failed call.
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

async fn join<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<(NewEvent, Reply)>) {
        loop {
            let pending = self.spooled > self.imported;
            let import_at = self
                .next_import
                .filter(|_| pending && self.import.is_none() && self.inflight.is_none());
            tokio::select! {
                next = rx.recv() => {
                    let Some(first) = next else { break };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    self.write(batch).await;
                }
                done = join(&mut self.inflight) => {
                    self.inflight = None;
                    // Its events are in the spool as well; the import deduplicates them.
                    if matches!(done, Ok(Ok(_))) {
                        (self.signals.committed)();
                    }
                }
                done = join(&mut self.import) => {
                    self.import = None;
                    self.imported(done.map_err(|e| e.to_string()).and_then(|r| r)).await;
                }
                () = sleep_until(import_at), if import_at.is_some() => self.start_import(),
            }
        }
    }

    /// Commits a batch to the database, or to the spool when the database is slow, failing, or
    /// still has spooled events to take first.
    async fn write(&mut self, batch: Vec<(NewEvent, Reply)>) {
        let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.into_iter().unzip();
        if self.spool.is_none() || (self.spooled == 0 && self.inflight.is_none()) {
            let store = Arc::clone(&self.store);
            let events = events.clone();
            // A task of its own, so a commit that outlives DB_WAIT can be left running.
            let mut insert = tokio::spawn(async move { store.insert_events(&events).await });
            let answer = if self.spool.is_some() {
                tokio::time::timeout(DB_WAIT, &mut insert).await.ok()
            } else {
                Some((&mut insert).await)
            };
            match answer {
                Some(Ok(Ok(seqs))) => {
                    for (reply, seq) in replies.into_iter().zip(seqs) {
                        let recorded = match seq {
                            Some(_) => Recorded::New,
                            None => Recorded::Duplicate,
                        };
                        let _ = reply.send(Ok(recorded));
                    }
                    (self.signals.committed)();
                    return;
                }
                Some(Ok(Err(e))) => {
                    tracing::warn!("cannot commit webhook deliveries to the database: {e}");
                    (self.signals.failed)();
                    if self.spool.is_none() {
                        return answer_all(replies, Err(e.to_string()));
                    }
                }
                Some(Err(e)) => {
                    (self.signals.failed)();
                    if self.spool.is_none() {
                        return answer_all(replies, Err(format!("writer task failed: {e}")));
                    }
                }
                None => {
                    (self.signals.failed)();
                    self.inflight = Some(insert);
                }
            }
        }
        let result = self.append(events).await;
        answer_all(replies, result.map(|()| Recorded::Spooled));
    }

    /// Appends to the spool (blocking I/O, off the async workers).
    async fn append(&mut self, events: Vec<NewEvent>) -> Result<(), String> {
        let Some(spool) = self.spool.clone() else {
            return Err("no spool".into());
        };
        let first = self.spooled == 0;
        let appended = tokio::task::spawn_blocking(move || {
            let mut spool = lock(&spool);
            spool.append(&events).map(|()| spool.len())
        })
        .await
        .map_err(|e| format!("spool writer failed: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
        match appended {
            Ok(len) => {
                if first {
                    tracing::warn!(
                        "the database is busy: webhook deliveries are kept in the spool until it is free"
                    );
                    self.next_import = Some(Instant::now() + IMPORT_RETRY);
                }
                self.spooled = len;
                Ok(())
            }
            Err(e) => {
                tracing::error!("cannot record webhook deliveries anywhere: {e}");
                Err(e)
            }
        }
    }

    /// Reads the next records of the spool and commits them in one transaction (deduplicated by
    /// delivery key, like any delivery).
    fn start_import(&mut self) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        self.next_import = None;
        let (from, end) = (self.imported, self.spooled);
        let store = Arc::clone(&self.importer);
        self.import = Some(tokio::spawn(async move {
            let reader = Arc::clone(&spool);
            let (events, to) = tokio::task::spawn_blocking(move || {
                let spool = lock(&reader);
                let (events, to) = spool
                    .read(from, end.min(from + IMPORT_WINDOW), MAX_BATCH)
                    .map_err(|e| e.to_string())?;
                if events.is_empty() {
                    // One record larger than the window.
                    spool.read(from, end, 1).map_err(|e| e.to_string())
                } else {
                    Ok((events, to))
                }
            })
            .await
            .map_err(|e| format!("spool reader failed: {e}"))??;
            if events.is_empty() {
                return Err(format!(
                    "unreadable record at byte {from} of {}",
                    lock(&spool).path().display()
                ));
            }
            store
                .insert_events(&events)
                .await
                .map_err(|e| e.to_string())?;
            Ok(to)
        }));
    }

    /// After an import step: advance, empty the spool once all of it is in the log, or retry.
    async fn imported(&mut self, result: Result<u64, String>) {
        match result {
            Ok(to) => {
                self.imported = to;
                (self.signals.committed)();
                self.next_import = Some(Instant::now());
                if self.imported >= self.spooled {
                    self.clear().await;
                }
            }
            Err(e) => {
                tracing::warn!("cannot import spooled webhook deliveries yet: {e}");
                (self.signals.failed)();
                self.next_import = Some(Instant::now() + IMPORT_RETRY);
            }
        }
    }

    async fn clear(&mut self) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        let cleared = tokio::task::spawn_blocking(move || lock(&spool).clear()).await;
        match cleared {
            Ok(Ok(())) => {
                tracing::info!("spooled webhook deliveries are all in the event log");
                self.spooled = 0;
                self.imported = 0;
            }
            // Left as it is: the records stay imported, and a restart imports them again, which
            // the delivery keys make harmless. New deliveries keep going to the spool.
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("spool writer failed: {e}"),
        }
    }
}

fn answer_all(replies: Vec<Reply>, result: Result<Recorded, String>) {
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn signals(commits: &Arc<AtomicUsize>) -> Signals {
        let counter = Arc::clone(commits);
        Signals {
            committed: Box::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
            failed: Box::new(|| {}),
        }
    }

    fn event(k: usize) -> NewEvent {
        NewEvent {
            delivery_key: format!("k{k}"),
            kind: "Push Hook".into(),
            body: format!("{{\"n\":{k}}}"),
        }
    }

    #[tokio::test]
    async fn concurrent_records_are_committed_and_deduplicated() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let commits = Arc::new(AtomicUsize::new(0));
        let intake = Intake::start(Arc::clone(&store), None, None, signals(&commits));
        let results =
            futures::future::join_all((0..200).map(|k| intake.record(event(k % 50)))).await;
        let new = results.iter().filter(|r| **r == Ok(Recorded::New)).count();
        let dupes = results
            .iter()
            .filter(|r| **r == Ok(Recorded::Duplicate))
            .count();
        assert_eq!((new, dupes), (50, 150));
        assert_eq!(store.unprocessed_events(1000).await.unwrap().len(), 50);
        assert!(commits.load(Ordering::Relaxed) >= 1);
    }

    /// Waits (with a deadline) until `done` holds.
    async fn eventually(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "condition not met in 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_database_spools_then_imports_in_order_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("deps.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
        let spool_path = dir.path().join("deps.db.spool");
        // A record left by an earlier run, already imported before that run stopped: imported
        // again, it is deduplicated.
        store.insert_events(&[event(0)]).await.unwrap();
        let mut spool = Spool::open(&spool_path).unwrap();
        spool.append(&[event(0)]).unwrap();
        let commits = Arc::new(AtomicUsize::new(0));
        let sig = signals(&commits);
        // Lock the database from another connection before the writer starts.
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let locker_db = db.clone();
        let locker = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&locker_db).unwrap();
            conn.execute_batch(
                "BEGIN EXCLUSIVE; INSERT INTO meta (key, value) VALUES ('lock', '1');",
            )
            .unwrap();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            conn.execute_batch("COMMIT").unwrap();
        });
        locked_rx.recv().unwrap();
        let importer: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
        let intake = Intake::start(Arc::clone(&store), Some(spool), Some(importer), sig);
        for k in 1..=5 {
            // Each answer comes from the spool while the lock holds.
            assert_eq!(intake.record(event(k)).await, Ok(Recorded::Spooled));
        }
        // A redelivery while spooled is acknowledged too; the import drops it.
        assert_eq!(intake.record(event(3)).await, Ok(Recorded::Spooled));
        release_tx.send(()).unwrap();
        locker.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.unprocessed_events(100).await.unwrap().len() != 6 {
            assert!(
                Instant::now() < deadline,
                "spooled events not imported in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let keys: Vec<String> = store
            .unprocessed_events(100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect();
        let expected: Vec<String> = (0..=5).map(|k| event(k).body).collect();
        assert_eq!(keys, expected);
        // The spool empties, and deliveries go straight to the database again.
        eventually(|| std::fs::metadata(&spool_path).unwrap().len() == 0).await;
        assert_eq!(intake.record(event(6)).await, Ok(Recorded::New));
        assert!(commits.load(Ordering::Relaxed) >= 1);
    }
}
