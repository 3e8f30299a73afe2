//! Group commit for webhook deliveries: handlers hand their event to one writer task, which commits
//! whatever has queued up meanwhile in one transaction and then answers each handler. Under load
//! that turns thousands of small transactions into a few large ones; alone, an event is committed
//! at once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{NewEvent, OrchestrationStore};

/// Most events committed in one transaction.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<Option<i64>, String>>;

/// The handle handlers use to record a delivery durably.
#[derive(Clone)]
pub(crate) struct Intake {
    tx: mpsc::Sender<(NewEvent, Reply)>,
}

impl Intake {
    /// Starts the writer task; `committed` runs after each batch (it wakes the engine).
    pub(crate) fn start(
        store: Arc<dyn OrchestrationStore>,
        committed: impl Fn() + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<(NewEvent, Reply)>(4 * MAX_BATCH);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.into_iter().unzip();
                match store.insert_events(&events).await {
                    Ok(seqs) => {
                        for (reply, seq) in replies.into_iter().zip(seqs) {
                            let _ = reply.send(Ok(seq));
                        }
                        committed();
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Records one delivery; `Ok(None)` for a redelivery of a recorded event.
    pub(crate) async fn record(&self, event: NewEvent) -> Result<Option<i64>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn concurrent_records_are_committed_and_deduplicated() {
        let store: Arc<dyn OrchestrationStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let commits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&commits);
        let intake = Intake::start(Arc::clone(&store), move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let event = |k: usize| NewEvent {
            delivery_key: format!("k{}", k % 50),
            kind: "Push Hook".into(),
            body: "{}".into(),
        };
        let results = futures::future::join_all((0..200).map(|k| intake.record(event(k)))).await;
        let new = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
        let dupes = results.iter().filter(|r| matches!(r, Ok(None))).count();
        assert_eq!((new, dupes), (50, 150));
        assert_eq!(store.unprocessed_events(1000).await.unwrap().len(), 50);
        assert!(commits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    }
}
