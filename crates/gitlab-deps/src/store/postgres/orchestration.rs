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
use tokio_postgres::types::ToSql;

use super::pipeline::{self, Step};
use super::{LOCK_EVENTS, PostgresStore, lease};
use crate::cascade::{Counters, ProjectState};
use crate::store::{
    ACTIVITY_STORED, Activity, Lease, LeaseInfo, NewEvent, OrchestrationStore, StoreError,
    StoredCascade, StoredEvent,
};

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
        let client = self.client().await?;
        let lock = client
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await?;
        // ORDER BY the position: sequence numbers follow the batch's order.
        let insert = client
            .prepare_cached(
                "INSERT INTO events (delivery_key, kind, body, received_ms)
                 SELECT k, t, b, $4 FROM unnest($1::text[], $2::text[], $3::text[])
                     WITH ORDINALITY AS u(k, t, b, o) ORDER BY o
                 ON CONFLICT (delivery_key) DO NOTHING
                 RETURNING delivery_key, seq",
            )
            .await?;
        let lock_params: [&(dyn ToSql + Sync); 1] = [&LOCK_EVENTS];
        let insert_params: [&(dyn ToSql + Sync); 4] = [&keys, &kinds, &bodies, &now];
        let mut replies =
            pipeline::transaction(&client, &[(&lock, &lock_params), (&insert, &insert_params)])
                .await?;
        let rows = replies.pop().unwrap_or_default();
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
        activity: Activity<'_>,
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
        let client = self.client().await?;
        let fence_check = client.prepare_cached(lease::CHECK_FENCE).await?;
        let state = client
            .prepare_cached(
                "INSERT INTO cascade_state (id, state) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            )
            .await?;
        let upsert = client
            .prepare_cached(
                "INSERT INTO cascade_projects (project, state) SELECT * FROM unnest($1::text[], $2::text[])
                 ON CONFLICT (project) DO UPDATE SET state = excluded.state",
            )
            .await?;
        let delete = client
            .prepare_cached("DELETE FROM cascade_projects WHERE project = ANY($1::text[])")
            .await?;
        let processed = client
            .prepare_cached("UPDATE events SET processed = true WHERE NOT processed AND seq <= $1")
            .await?;
        let log = client
            .prepare_cached(
                "INSERT INTO activity (at_ms, line)
                 SELECT $1, l FROM unnest($2::text[]) WITH ORDINALITY AS u(l, o) ORDER BY o",
            )
            .await?;
        let trim = client
            .prepare_cached(
                "DELETE FROM activity WHERE seq <= (SELECT MAX(seq) FROM activity) - $1",
            )
            .await?;
        let epoch = fence.map(|l| l.epoch);
        let up_to = processed_up_to.unwrap_or(i64::MIN);
        let fence_params: [&(dyn ToSql + Sync); 1] = [&epoch];
        let state_params: [&(dyn ToSql + Sync); 1] = [&counters];
        let upsert_params: [&(dyn ToSql + Sync); 2] = [&upsert_projects, &upsert_states];
        let delete_params: [&(dyn ToSql + Sync); 1] = [&deletes];
        let processed_params: [&(dyn ToSql + Sync); 1] = [&up_to];
        let log_params: [&(dyn ToSql + Sync); 2] = [&activity.at_ms, &activity.lines];
        let trim_params: [&(dyn ToSql + Sync); 1] = [&ACTIVITY_STORED];
        // The fence first: when it fails, nothing after it is written.
        let mut steps: Vec<Step<'_>> = Vec::with_capacity(7);
        if fence.is_some() {
            steps.push((&fence_check, &fence_params));
        }
        steps.push((&state, &state_params));
        if !upsert_projects.is_empty() {
            steps.push((&upsert, &upsert_params));
        }
        if !deletes.is_empty() {
            steps.push((&delete, &delete_params));
        }
        if processed_up_to.is_some() {
            steps.push((&processed, &processed_params));
        }
        if !activity.lines.is_empty() {
            steps.push((&log, &log_params));
            steps.push((&trim, &trim_params));
        }
        pipeline::transaction(&client, &steps)
            .await
            .map_err(|e| match fence {
                Some(lease) => lease::fenced(e, lease),
                None => e.into(),
            })?;
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
