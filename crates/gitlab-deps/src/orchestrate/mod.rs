//! The orchestration runtime around the pure [`crate::cascade`] state machine.
//!
//! Flow: the HTTP layer commits each webhook to the store's event log ([`intake`]; while the
//! database is busy, to the [`spool`] first) and wakes the engine. The engine ([`engine`]) folds
//! logged events into the cascade state, persists the state (which records every pipeline it is
//! about to create) and only then calls GitLab ([`create`]).
//! Results of those calls, reconciler findings ([`reconcile`]) and operator commands ([`log`]) go
//! through the same event log, so one ordered, durable path decides everything and a restart
//! resumes exactly where the log stops. Rescans ([`rescan`]) keep the graph current.
//!
//! Several replicas may share one database: each takes webhooks, but only the one holding the
//! engine's lease ([`leader`]) runs the engine; the others follow its state from the store
//! (`replica`).

mod create;
mod engine;
pub(crate) mod intake;
pub mod leader;
pub mod log;
pub mod observe;
mod reconcile;
mod recovery;
mod replica;
mod rescan;
pub mod spool;
pub mod view;

pub use engine::{Engine, EngineOptions, Snapshot};
pub use leader::{Leadership, LeaseOptions, Role};
pub use log::{INPUT_EVENT, enqueue_operator_input, load_cascade};
pub use recovery::{CatchUpReason, CatchUpReport, PollReason, RecoveryOptions};
pub use replica::{LeaderView, RoleView};
pub use spool::{Spool, SpoolError};
pub use view::{ProjectView, describe};

#[cfg(test)]
mod rescan_tests;
