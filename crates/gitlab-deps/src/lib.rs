//! gitlab-deps: discovers the dependencies between GitLab projects (Dockerfile `FROM` lines and
//! `.gitlab-deps` files), stores the graph, and rebuilds downstream projects in dependency order.
//!
//! Layers, bottom up: [`discover`] (pure parsers), [`graph`] (queries over the dependency graph),
//! [`gitlab`] (typed REST client and webhook payloads), [`store`] (SQLite behind async traits),
//! [`scan`] (discovery), [`cascade`] (the pure orchestration state machine), [`orchestrate`] (the
//! runtime around it: event log, engine loop, pipeline creation, reconciler, rescans), [`server`]
//! (HTTP only), [`service`] (one builder that starts them all), and [`cli`].
//!
//! Cargo feature `demo` (on by default) adds the `demo` command and its simulated GitLab; the
//! production build leaves it out with `--no-default-features`.

pub mod cascade;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod discover;
pub mod gitlab;
pub mod graph;
pub mod hooks;
pub mod logging;
pub mod metrics;
pub mod orchestrate;
pub mod scan;
pub mod server;
pub mod service;
pub mod store;
pub mod util;
