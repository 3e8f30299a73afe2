//! The orchestration half on PostgreSQL: the event log, the cascade state, the activity log.
//!
//! Event order. The engine marks events processed "up to sequence N", so an event must never
//! become visible after one with a higher sequence number: it would be skipped. With several
//! writers a `BIGSERIAL` alone allows exactly that (a transaction draws 7, another draws 8 and
//! commits first). Every insert into the log therefore takes the events advisory lock before it
//! draws numbers and holds it to its commit: numbers are drawn and committed in one order, and a
//! reader that sees N sees everything below it. Inserts are group commits (one transaction, one
//! statement per batch), so the lock is taken once per batch, not per delivery.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::IsolationLevel;

use super::{LOCK_EVENTS, PostgresStore, lease};
use crate::cascade::{Counters, ProjectState};
use crate::store::{
    Lease, LeaseInfo, NewEvent, OrchestrationStore, StoreError, StoredCascade, StoredEvent,
};

/// Activity lines kept (as SQLite keeps).
const ACTIVITY_KEPT: i64 = 10_000;

#[async_trait]
impl OrchestrationStore for PostgresStore {
    async fn insert_event(
        &self,
        delivery_key: &str,
        kind: &str,
        body: &str,
    ) -> Result<Option<i64>, StoreError> {
        let event = NewEvent {
            delivery_key: delivery_key.to_owned(),
            kind: kind.to_owned(),
            body: body.to_owned(),
        };
        Ok(self
            .insert_events(std::slice::from_ref(&event))
            .await?
            .pop()
            .flatten())
    }

    async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Option<i64>>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // The first of each key in the batch is inserted (unless stored before); later ones are
        // redeliveries.
        let mut seen = HashSet::new();
        let first: Vec<&NewEvent> = events
            .iter()
            .filter(|e| seen.insert(e.delivery_key.as_str()))
            .collect();
        let keys: Vec<&str> = first.iter().map(|e| e.delivery_key.as_str()).collect();
        let kinds: Vec<&str> = first.iter().map(|e| e.kind.as_str()).collect();
        let bodies: Vec<&str> = first.iter().map(|e| e.body.as_str()).collect();
        let now = crate::util::now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock_stmt = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await?;
        // ORDER BY the position: sequence numbers follow the batch's order.
        let insert = tx
            .prepare_cached(
                "INSERT INTO events (delivery_key, kind, body, received_ms)
                 SELECT k, t, b, $4 FROM unnest($1::text[], $2::text[], $3::text[])
                     WITH ORDINALITY AS u(k, t, b, o) ORDER BY o
                 ON CONFLICT (delivery_key) DO NOTHING
                 RETURNING delivery_key, seq",
            )
            .await?;
        // Pipelined: the lock, then the insert, in one round trip.
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&LOCK_EVENTS];
        let insert_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&keys, &kinds, &bodies, &now];
        let (_, rows) = tokio::try_join!(
            tx.execute(&lock_stmt, &lock_params),
            tx.query(&insert, &insert_params),
        )?;
        tx.commit().await?;
        let mut seqs: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(events
            .iter()
            .map(|e| seqs.remove(&e.delivery_key))
            .collect())
    }

    async fn unprocessed_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT seq, kind, body FROM events WHERE NOT processed ORDER BY seq LIMIT $1",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(client
            .query(&stmt, &[&limit])
            .await?
            .iter()
            .map(|r| StoredEvent {
                seq: r.get(0),
                kind: r.get(1),
                body: r.get(2),
            })
            .collect())
    }

    async fn commit_cascade(
        &self,
        changes: &[(String, Option<&ProjectState>)],
        counters: Counters,
        processed_up_to: Option<i64>,
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        // The last change per project, as one-by-one writes would leave it.
        let mut last: HashMap<&str, Option<String>> = HashMap::new();
        for (project, state) in changes {
            last.insert(project, state.map(serde_json::to_string).transpose()?);
        }
        let (mut upsert_projects, mut upsert_states, mut deletes) = (vec![], vec![], vec![]);
        for (project, state) in last {
            match state {
                Some(state) => {
                    upsert_projects.push(project);
                    upsert_states.push(state);
                }
                None => deletes.push(project),
            }
        }
        let counters = serde_json::to_string(&counters)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(lease) = fence {
            lease::check_fence(&tx, lease).await?;
        }
        let state = tx
            .prepare_cached(
                "INSERT INTO cascade_state (id, state) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            )
            .await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO cascade_projects (project, state) SELECT * FROM unnest($1::text[], $2::text[])
                 ON CONFLICT (project) DO UPDATE SET state = excluded.state",
            )
            .await?;
        let delete = tx
            .prepare_cached("DELETE FROM cascade_projects WHERE project = ANY($1::text[])")
            .await?;
        let processed = tx
            .prepare_cached("UPDATE events SET processed = true WHERE NOT processed AND seq <= $1")
            .await?;
        // Pipelined: one round trip for the writes (they touch different rows).
        let up_to = processed_up_to.unwrap_or(i64::MIN);
        let state_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&counters];
        let upsert_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&upsert_projects, &upsert_states];
        let delete_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&deletes];
        let processed_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&up_to];
        tokio::try_join!(
            tx.execute(&state, &state_params),
            tx.execute(&upsert, &upsert_params),
            tx.execute(&delete, &delete_params),
            tx.execute(&processed, &processed_params),
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn prune_events(&self, received_before_ms: i64) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM events WHERE processed AND received_ms < $1")
            .await?;
        let n = client.execute(&stmt, &[&received_before_ms]).await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn cascade_state(&self) -> Result<Option<StoredCascade>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot: counters and states from the same commit.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let stmt = tx
            .prepare_cached("SELECT state FROM cascade_state WHERE id = 1")
            .await?;
        let Some(counters) = tx.query_opt(&stmt, &[]).await? else {
            return Ok(None);
        };
        let counters: String = counters.get(0);
        let stmt = tx
            .prepare_cached("SELECT project, state FROM cascade_projects ORDER BY project")
            .await?;
        let rows = tx.query(&stmt, &[]).await?;
        tx.commit().await?;
        Ok(Some(StoredCascade {
            counters: serde_json::from_str(&counters)?,
            projects: rows
                .iter()
                .map(|r| Ok((r.get(0), serde_json::from_str(r.get::<_, &str>(1))?)))
                .collect::<Result<_, serde_json::Error>>()?,
        }))
    }

    async fn log_activity(&self, at_ms: i64, lines: &[String]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO activity (at_ms, line)
                 SELECT $1, l FROM unnest($2::text[]) WITH ORDINALITY AS u(l, o) ORDER BY o",
            )
            .await?;
        let trim = tx
            .prepare_cached(
                "DELETE FROM activity WHERE seq <= (SELECT MAX(seq) FROM activity) - $1",
            )
            .await?;
        tx.execute(&insert, &[&at_ms, &lines]).await?;
        tx.execute(&trim, &[&ACTIVITY_KEPT]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn recent_activity(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT at_ms, line FROM activity ORDER BY seq DESC LIMIT $1")
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(client
            .query(&stmt, &[&limit])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        lease::acquire(&*self.client().await?, holder, ttl).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        lease::renew(&*self.client().await?, lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        lease::release(&*self.client().await?, lease).await
    }

    async fn lease(&self) -> Result<Option<LeaseInfo>, StoreError> {
        lease::current(&*self.client().await?).await
    }
}
