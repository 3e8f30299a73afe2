//! The engine's side of push rescans: one project's edges swapped in place, and the fall-back
//! to a whole reload when the update does not fit the graph it has.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::gitlab::{GitLab, GitLabOptions};
use crate::scan::{resolve, resolve_project};
use crate::store::{ProjectRecord, ProjectScan, RefKind, Reference, SqliteStore, Store};
use url::Url;

fn url() -> Url {
    Url::parse("https://git.example.org/").unwrap()
}

fn scan(id: u64, path: &str, froms: &[&str]) -> ProjectScan {
    ProjectScan {
        record: ProjectRecord {
            id,
            path: path.into(),
            default_branch: Some("main".into()),
            web_url: format!("https://git.example.org/{path}"),
            registry_prefix: None,
            last_activity_at: None,
            head_sha: Some("h".into()),
            checked_at_ms: None,
        },
        refs: froms
            .iter()
            .enumerate()
            .map(|(i, f)| Reference {
                kind: RefKind::Image,
                file: "Dockerfile".into(),
                line: i as u32 + 1,
                value: format!("registry.git.example.org/{f}:1"),
            })
            .collect(),
        warnings: vec![],
        files: Default::default(),
    }
}

/// A push moves app from base onto tools: its new references are saved and its part resolved.
async fn push_app_onto_tools(store: &dyn Store) {
    store
        .save_scans(&[scan(3, "apps/app", &["img/tools"])])
        .await
        .unwrap();
    resolve_project(store, 3, None, &url())
        .await
        .unwrap()
        .unwrap();
}

/// base, tools, app (from base), resolved, and an engine on it (which never calls GitLab here).
pub(super) async fn engine() -> (Arc<dyn Store>, Engine) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    store
        .save_scans(&[
            scan(1, "img/base", &[]),
            scan(2, "img/tools", &[]),
            scan(3, "apps/app", &["img/base"]),
        ])
        .await
        .unwrap();
    resolve(store.as_ref(), None, &url()).await.unwrap();
    let mut options = GitLabOptions::new(Url::parse("http://127.0.0.1:9/").unwrap(), "t".into());
    options.timeout = Duration::from_secs(1);
    let gitlab = GitLab::new(options).unwrap();
    let engine = Engine::new(
        Arc::clone(&store),
        gitlab,
        None,
        EngineOptions {
            max_running: 1,
            rescan_every: None,
            watched_files: vec!["Dockerfile".into()],
            ..EngineOptions::default()
        },
    )
    .await
    .unwrap();
    (store, engine)
}

#[tokio::test]
async fn a_push_rescan_swaps_that_projects_edges_into_the_graph() {
    let (store, engine) = engine().await;
    assert_eq!(engine.graph().upstreams("apps/app"), ["img/base"]);
    push_app_onto_tools(store.as_ref()).await;
    assert!(engine.update_project(3).await.unwrap());
    assert_eq!(engine.graph().upstreams("apps/app"), ["img/tools"]);
    assert!(engine.graph().downstreams("img/base").is_empty());
}

#[tokio::test]
async fn an_update_naming_a_project_the_graph_lacks_falls_back_to_a_reload() {
    let (store, engine) = engine().await;
    // A scan by another process added a project; the engine has not reloaded yet when a push
    // moves app onto it.
    store.save_scans(&[scan(4, "img/new", &[])]).await.unwrap();
    store
        .save_scans(&[scan(3, "apps/app", &["img/new"])])
        .await
        .unwrap();
    resolve_project(store.as_ref(), 3, None, &url())
        .await
        .unwrap()
        .unwrap();
    assert!(!engine.update_project(3).await.unwrap());
    engine.after_project_rescan(3).await;
    // The reload brings both: the other process's project and the push's edge.
    assert_eq!(engine.graph().upstreams("apps/app"), ["img/new"]);
    assert!(engine.records().path_by_id.contains_key(&4));
}

#[tokio::test]
async fn a_reload_and_a_later_push_update_both_install_the_stores_current_edges() {
    let (store, engine) = engine().await;
    push_app_onto_tools(store.as_ref()).await;
    // Another process's whole scan resolves meanwhile (it sees the push's references).
    resolve(store.as_ref(), None, &url()).await.unwrap();
    engine.reload().await.unwrap();
    assert_eq!(engine.graph().upstreams("apps/app"), ["img/tools"]);
    // The push's own update, arriving after the reload, reads the store as it is now.
    assert!(engine.update_project(3).await.unwrap());
    assert_eq!(engine.graph().upstreams("apps/app"), ["img/tools"]);
}

#[tokio::test]
async fn a_standby_follows_the_leaders_state_and_its_push_rescans() {
    let (store, leader) = engine().await;
    let leader = Arc::new(leader);
    let standby = Engine::new(
        Arc::clone(&store),
        leader.gitlab.clone(),
        None,
        leader.opts.clone(),
    )
    .await
    .unwrap();
    let (mut seen, mut graph_seen) = (None, None);
    leader.publish(1).await;
    standby.follow(&mut seen, &mut graph_seen).await;
    let quiet = *standby.changed.borrow();
    // Nothing published moved: a second look reads nothing and changes nothing.
    standby.follow(&mut seen, &mut graph_seen).await;
    assert_eq!(*standby.changed.borrow(), quiet);

    // The leader starts base; the standby shows it once the leader published.
    let input = crate::cascade::Input::Rebuild {
        project: "img/base".into(),
    };
    crate::orchestrate::enqueue_operator_input(store.as_ref(), &input)
        .await
        .unwrap();
    leader.process().await.unwrap();
    leader.publish(1).await;
    standby.follow(&mut seen, &mut graph_seen).await;
    let running = standby.cascade.lock().await.counts().running;
    assert_eq!(running, 1);
    assert!(*standby.changed.borrow() > quiet, "live pages are told");

    // A push rescan on the leader moves no scan stamp; its graph version tells the standby.
    push_app_onto_tools(store.as_ref()).await;
    assert!(leader.update_project(3).await.unwrap());
    assert_eq!(standby.graph().upstreams("apps/app"), ["img/base"]);
    leader.publish(1).await;
    standby.follow(&mut seen, &mut graph_seen).await;
    assert_eq!(standby.graph().upstreams("apps/app"), ["img/tools"]);
}
