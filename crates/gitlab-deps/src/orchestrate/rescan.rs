//! Rescans: one project after a push that touched its dependency files, the whole instance on a
//! schedule, and taking the results into the engine's graph.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::engine::{Engine, lock};
use crate::scan::{Rescanned, ScanRequest};
use crate::store::StoreError;

/// Attempts to rescan a project after a push before leaving it to the scheduled rescan.
const RESCAN_TRIES: u32 = 3;

impl Engine {
    pub(super) fn spawn_rescan(self: Arc<Self>, project: String) {
        let Some(scanner) = self.scanner.clone() else {
            return;
        };
        {
            let mut rescanning = lock(&self.rescanning);
            if let Some(again) = rescanning.get_mut(&project) {
                // The running rescan may have read the files before this push.
                *again = true;
                return;
            }
            rescanning.insert(project.clone(), false);
        }
        tokio::spawn(async move {
            loop {
                tracing::info!("{project}: its dependency files changed, rescanning it");
                let mut delay = Duration::from_secs(2);
                for attempt in 1..=RESCAN_TRIES {
                    match scanner.rescan_project(&project).await {
                        Ok(Rescanned::Project { id }) => {
                            self.after_project_rescan(id).await;
                            break;
                        }
                        Ok(Rescanned::Everything) => {
                            self.after_scan().await;
                            break;
                        }
                        Ok(Rescanned::Nothing) => break,
                        Err(e) if attempt < RESCAN_TRIES => {
                            tracing::warn!("{project}: rescan failed, trying again: {e}");
                            tokio::time::sleep(delay).await;
                            delay *= 4;
                        }
                        // The scheduled full rescan catches up later.
                        Err(e) => tracing::warn!("{project}: rescan failed: {e}"),
                    }
                }
                let mut rescanning = lock(&self.rescanning);
                if rescanning.get(&project) == Some(&true) {
                    rescanning.insert(project.clone(), false);
                } else {
                    rescanning.remove(&project);
                    return;
                }
            }
        });
    }

    /// Takes one rescanned project's new upstream edges and record into the graph and records,
    /// without reloading the rest. Falls back to a whole reload when the project is not where
    /// the graph has it (a scan of another process moved things meanwhile).
    pub async fn after_project_rescan(&self, id: u64) {
        match self.update_project(id).await {
            // The next engine step uses the new graph.
            Ok(true) => self.notify(),
            Ok(false) => self.after_scan().await,
            Err(e) => tracing::error!("cannot update the graph: {e}"),
        }
    }

    /// `Ok(false)` when a one-project update does not fit the current graph.
    pub(super) async fn update_project(&self, id: u64) -> Result<bool, StoreError> {
        let _writer = self.graph_writer.lock().await;
        let Some(record) = self.store.project(id).await? else {
            return Ok(false);
        };
        if self.records().path_by_id.get(&id) != Some(&record.path) {
            return Ok(false);
        }
        let upstreams: Vec<String> = self
            .store
            .upstream_edges(&record.path)
            .await?
            .into_iter()
            .map(|e| e.upstream)
            .collect();
        let Some(graph) = self.graph().with_upstreams(&record.path, &upstreams) else {
            return Ok(false);
        };
        // The engine uses a record's id, default branch and web URL; the id and path are the same.
        // Copying the maps for a head commit alone would cost O(projects) per push.
        let stale = self.records().by_path.get(&record.path).is_none_or(|r| {
            r.default_branch != record.default_branch || r.web_url != record.web_url
        });
        if stale {
            let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
            // Copies the maps only while a reader still holds the old ones.
            Arc::make_mut(&mut records)
                .by_path
                .insert(record.path.clone(), record);
        }
        *self.graph.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(graph);
        self.graph_version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.bump();
        Ok(true)
    }

    pub(super) async fn after_scan(&self) {
        let before = self.records();
        if let Err(e) = self.reload().await {
            tracing::error!("cannot reload the graph: {e}");
            return;
        }
        self.observe_scan().await;
        let after = self.records();
        let graph = self.graph();
        let mut cascade = self.cascade.lock().await;
        // A renamed or moved project keeps its id: its pending work follows it instead of being
        // pruned (which would unblock what waits for it and forget its running pipeline).
        for (id, old_path) in &before.path_by_id {
            if let Some(new_path) = after.path_by_id.get(id)
                && new_path != old_path
                && cascade.state(old_path).is_some()
            {
                tracing::info!("{old_path} is now {new_path}; its pending work follows it");
                cascade.rename(old_path, new_path);
            }
        }
        let gone = cascade.prune(&graph);
        drop(cascade);
        if !gone.is_empty() {
            tracing::info!(
                "dropped pending work of projects that left the graph: {}",
                gone.join(", ")
            );
        }
        // The next engine step persists the renames and removals.
        self.notify();
    }

    pub(super) async fn rescan_loop(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let Some(scanner) = self.scanner.clone() else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            match scanner
                .scan(&ScanRequest::default(), &crate::scan::NoProgress)
                .await
            {
                Ok(summary) => {
                    tracing::info!(
                        projects = summary.projects_seen,
                        read = summary.projects_read,
                        edges = summary.edges,
                        "scheduled rescan done"
                    );
                    // The scan's new stamp makes the engine loop reload the graph, as it does
                    // for a scan by another process; reloading here too would do it twice.
                }
                Err(e) => tracing::warn!("scheduled rescan failed: {e}"),
            }
        }
    }
}
