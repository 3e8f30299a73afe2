//! The event log as the rest of the tool sees it: what kind of entry an internal or operator input
//! is, how the orchestration state is loaded, and how the CLI hands the service an operator input.

use crate::cascade::{Cascade, Counters, Input, ProjectState};
use crate::store::{Store, StoreError};

/// Event-log kind of an internal or operator input: the body is a serialized [`Input`].
pub const INPUT_EVENT: &str = "gitlab-deps/input";

/// Loads the orchestration state from the store (empty when none was stored).
pub fn load_cascade(store: &dyn Store) -> Result<Cascade, StoreError> {
    let Some(stored) = store.cascade_state()? else {
        return Ok(Cascade::new());
    };
    let counters: Counters = serde_json::from_str(&stored.counters)?;
    let projects = stored
        .projects
        .into_iter()
        .map(|(p, state)| Ok((p, serde_json::from_str::<ProjectState>(&state)?)))
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    Ok(Cascade::from_parts(projects, counters))
}

/// Records an operator input (cancel, rebuild) for the service to apply, from the CLI.
pub fn enqueue_operator_input(store: &dyn Store, input: &Input) -> Result<(), StoreError> {
    let body = serde_json::to_string(input)?;
    let key = format!("operator:{}", uuid::Uuid::new_v4());
    store.insert_event(&key, INPUT_EVENT, &body)?;
    Ok(())
}
