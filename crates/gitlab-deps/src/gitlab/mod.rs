//! A typed client for the parts of the GitLab REST API v4 that gitlab-deps uses.
//!
//! Every request goes through [`GitLab::send`], which bounds concurrency, retries transient failures
//! (network errors, 5xx, 429) with exponential backoff and jitter, and honours `Retry-After` and
//! `RateLimit-Reset`. Permanent errors (401, 403, 404, 400) are returned at once.

mod client;
mod error;
mod hooks;
pub mod observer;
mod paginate;
pub mod payload;
mod retry;
pub mod types;

pub use client::{ClientHealth, GitLab, GitLabOptions, ProjectScope};
pub use error::GitLabError;
pub use hooks::{HookOwner, TestOutcome};
pub use observer::ApiObserver;
pub use retry::RetryPolicy;
pub use types::{Branch, Hook, HookSpec, Pipeline, Project, TreeEntry, Variable};
