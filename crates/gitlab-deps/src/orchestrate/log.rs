//! The event log as the rest of the tool sees it: what kind of entry an internal or operator input
//! is, how the orchestration state is loaded, and how the CLI hands the service an operator input.
//! All three are typed helpers over [`crate::store::OrchestrationStore`]; the encoding is the
//! store's.

pub use crate::store::{INPUT_EVENT, enqueue_operator_input, load_cascade};
