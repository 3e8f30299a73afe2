//! The dependency graph as stored: project paths and resolved edges.

use super::{DiscoveryStore, Edge, ProjectRecord, StoreError};
use crate::graph::DepGraph;

/// The dependency graph of stored projects and resolved edges.
pub fn graph_of(projects: &[ProjectRecord], edges: Vec<Edge>) -> DepGraph {
    DepGraph::from_parts(
        projects.iter().map(|p| p.path.clone()),
        edges.into_iter().map(|e| (e.upstream, e.downstream)),
    )
}

/// Loads the dependency graph from the store.
pub async fn load_graph(store: &dyn DiscoveryStore) -> Result<DepGraph, StoreError> {
    Ok(graph_of(&store.projects().await?, store.edges().await?))
}
