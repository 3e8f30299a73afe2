//! The store conformance suite: what every implementation of [`DiscoveryStore`] and
//! [`OrchestrationStore`] must do, written against the traits only.
//!
//! Each case takes a fresh, empty store. [`crate::store_conformance_tests!`] turns the whole suite
//! into one `#[tokio::test]` per case for a store factory, so a new backend runs it with one line:
//!
//! ```ignore
//! gitlab_deps::store_conformance_tests!(postgres, || async { (Arc::new(connect().await) as Arc<dyn Store>, Box::new(()) as Box<dyn Any + Send>) });
//! ```
//!
//! Outside this crate enable the `store-conformance` feature.

use std::collections::HashMap;

use super::{
    Activity, DiscoveryStore, Edge, External, FileBlobs, INPUT_EVENT, Lease, NewEvent, PrefixRule,
    ProjectRecord, ProjectScan, RefKind, Reference, ReplaceOutcome, Resolution, Store, Warning,
};
use crate::cascade::{Cascade, Input, ProjectState, Throttle};
use crate::graph::DepGraph;

/// Generates one `#[tokio::test]` per conformance case in a module `$name`. `$factory` is a
/// closure returning a future of `(Arc<dyn Store>, Box<dyn Any + Send>)`: a fresh, empty store and
/// whatever must live as long as it (a temporary directory, a scratch database). With `optional`,
/// the future's output is an `Option` of that, and a case returns at once on `None` (a backend
/// whose server is not available here, having said so).
#[macro_export]
macro_rules! store_conformance_tests {
    (@get required $factory:expr) => {
        ::std::option::Option::Some(($factory)().await)
    };
    (@get optional $factory:expr) => {
        ($factory)().await
    };
    (@cases $kind:ident $factory:expr; $($case:ident,)*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let ::std::option::Option::Some((store, _keep)): ::std::option::Option<(
                    ::std::sync::Arc<dyn $crate::store::Store>,
                    ::std::boxed::Box<dyn ::std::any::Any + Send>,
                )> = $crate::store_conformance_tests!(@get $kind $factory) else {
                    return;
                };
                $crate::store::conformance::$case(store.as_ref()).await;
            }
        )*
    };
    (@module $name:ident $kind:ident $factory:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::store_conformance_tests!(@cases $kind $factory;
                rescans_replace_a_projects_data_and_leave_the_others,
                a_batch_of_scans_is_saved_whole,
                a_rename_keeps_the_id_and_removal_takes_everything_along,
                derived_rows_are_replaced_as_a_whole_and_read_in_order,
                references_versions_and_the_catalog_move_as_documented,
                a_whole_resolve_is_refused_when_the_catalog_moved,
                a_whole_resolve_keeps_projects_rescanned_after_its_read,
                resolve_project_reads_and_writes_one_projects_part,
                events_are_deduplicated_and_come_back_in_order,
                inputs_are_logged_as_input_events,
                commit_cascade_stores_states_and_processed_marks_together,
                pruning_forgets_only_old_processed_events,
                the_cascade_state_round_trips,
                activity_comes_back_newest_first,
                meta_values_are_set_and_replaced,
                hook_fingerprints_are_set_replaced_and_forgotten,
                the_lease_is_held_by_one_holder_until_it_expires,
                renewal_and_release_follow_the_epoch,
                a_superseded_epoch_commits_nothing,
            );
        }
    };
    ($name:ident, optional $factory:expr) => {
        $crate::store_conformance_tests!(@module $name optional $factory);
    };
    ($name:ident, $factory:expr) => {
        $crate::store_conformance_tests!(@module $name required $factory);
    };
}

fn record(id: u64, path: &str) -> ProjectRecord {
    ProjectRecord {
        id,
        path: path.into(),
        default_branch: Some("main".into()),
        web_url: format!("https://gitlab.test/{path}"),
        registry_prefix: None,
        last_activity_at: None,
        head_sha: None,
        checked_at_ms: None,
    }
}

fn reference(kind: RefKind, file: &str, line: u32, value: &str) -> Reference {
    Reference {
        kind,
        file: file.into(),
        line,
        value: value.into(),
    }
}

fn scan(id: u64, path: &str, images: &[&str]) -> ProjectScan {
    ProjectScan {
        record: record(id, path),
        refs: images
            .iter()
            .enumerate()
            .map(|(i, v)| reference(RefKind::Image, "Dockerfile", i as u32 + 1, v))
            .collect(),
        warnings: vec![],
        files: FileBlobs::from([(
            "Dockerfile".to_owned(),
            format!("blob-{id}-{}", images.len()),
        )]),
    }
}

fn warning(project: &str, message: &str) -> Warning {
    Warning {
        project: project.into(),
        file: Some("Dockerfile".into()),
        line: Some(1),
        message: message.into(),
    }
}

fn edge(upstream: &str, downstream: &str) -> Edge {
    Edge {
        upstream: upstream.into(),
        downstream: downstream.into(),
        via: "Dockerfile:1".into(),
    }
}

async fn values(store: &dyn DiscoveryStore) -> Vec<String> {
    store
        .references()
        .await
        .unwrap()
        .iter()
        .map(|(p, r)| format!("{p}={}", r.value))
        .collect()
}

/// A rescan replaces a project's references, file warnings and blob ids, and nothing of others.
pub async fn rescans_replace_a_projects_data_and_leave_the_others(s: &dyn Store) {
    let mut a = scan(1, "g/a", &["x", "y"]);
    a.warnings.push(warning("g/a", "odd"));
    let b = scan(2, "g/b", &["z"]);
    s.save_scans(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(values(s).await, ["g/a=x", "g/a=y", "g/b=z"]);
    assert_eq!(
        s.project_findings(1).await.unwrap(),
        (a.refs.clone(), a.warnings.clone())
    );
    assert_eq!(s.project_file_blobs(1).await.unwrap(), a.files);
    assert_eq!(s.warnings().await.unwrap(), a.warnings);

    let mut again = scan(1, "g/a", &["w"]);
    again.files.clear();
    s.save_scans(&[again]).await.unwrap();
    assert_eq!(values(s).await, ["g/a=w", "g/b=z"]);
    assert!(s.project_findings(1).await.unwrap().1.is_empty());
    assert!(s.project_file_blobs(1).await.unwrap().is_empty());
    assert!(s.warnings().await.unwrap().is_empty());
    let blobs = s.file_blobs().await.unwrap();
    assert_eq!(blobs.get(&2), Some(&b.files));
    assert_eq!(s.projects().await.unwrap(), [a.record, b.record]);
}

/// A batch of scans lands whole: a project listed twice ends with its last scan, and one read
/// after the call sees every project of the batch.
pub async fn a_batch_of_scans_is_saved_whole(s: &dyn Store) {
    let batch: Vec<ProjectScan> = (1..=20)
        .map(|i| scan(i, &format!("g/p{i:02}"), &["base"]))
        .chain([scan(1, "g/p01", &["other"])])
        .collect();
    s.save_scans(&batch).await.unwrap();
    let refs = s.references().await.unwrap();
    assert_eq!(refs.len(), 20);
    assert_eq!(refs[0].1.value, "other");
    assert_eq!(s.file_blobs().await.unwrap().len(), 20);
    // Listing metadata alone leaves references be.
    let mut moved = record(2, "g/p02");
    moved.default_branch = Some("trunk".into());
    s.update_records(&[moved.clone()]).await.unwrap();
    assert_eq!(s.project(2).await.unwrap(), Some(moved));
    assert_eq!(s.references().await.unwrap().len(), 20);
}

/// A rename keeps the id (and the references with it); removing a project removes what it owns.
pub async fn a_rename_keeps_the_id_and_removal_takes_everything_along(s: &dyn Store) {
    let mut a = scan(1, "g/a", &["x"]);
    a.warnings.push(warning("g/a", "odd"));
    s.save_scans(&[a, scan(2, "g/b", &["y"])]).await.unwrap();
    s.update_records(&[record(1, "g/renamed")]).await.unwrap();
    assert_eq!(s.project(1).await.unwrap().unwrap().path, "g/renamed");
    assert_eq!(values(s).await, ["g/b=y", "g/renamed=x"]);
    assert_eq!(s.warnings().await.unwrap()[0].project, "g/renamed");
    // A new project taking a stale row's path replaces that row.
    s.update_records(&[record(3, "g/b")]).await.unwrap();
    assert!(s.project(2).await.unwrap().is_none());
    s.remove_projects(&[1, 3, 99]).await.unwrap();
    assert!(s.projects().await.unwrap().is_empty());
    assert!(s.references().await.unwrap().is_empty());
    assert!(s.warnings().await.unwrap().is_empty());
    assert!(s.file_blobs().await.unwrap().is_empty());
}

/// `replace_resolution` swaps the whole derived graph; reads come back in their documented order.
pub async fn derived_rows_are_replaced_as_a_whole_and_read_in_order(s: &dyn Store) {
    s.save_scans(&[
        scan(1, "g/a", &[]),
        scan(2, "g/b", &[]),
        scan(3, "g/c", &[]),
    ])
    .await
    .unwrap();
    let first = Resolution {
        edges: vec![edge("g/b", "g/c"), edge("g/a", "g/c"), edge("g/a", "g/b")],
        externals: vec![
            External {
                project: "g/b".into(),
                image: "z".into(),
            },
            External {
                project: "g/a".into(),
                image: "y".into(),
            },
        ],
        warnings: vec![warning("g/c", "unknown project")],
    };
    s.replace_resolution(&first).await.unwrap();
    let edges: Vec<(String, String)> = s
        .edges()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.upstream, e.downstream))
        .collect();
    let pair = |u: &str, d: &str| (u.to_owned(), d.to_owned());
    assert_eq!(
        edges,
        [pair("g/a", "g/b"), pair("g/a", "g/c"), pair("g/b", "g/c")]
    );
    assert_eq!(
        s.upstream_edges("g/c").await.unwrap(),
        [edge("g/a", "g/c"), edge("g/b", "g/c")]
    );
    assert_eq!(s.externals().await.unwrap()[0].project, "g/a");
    assert_eq!(s.warnings().await.unwrap(), first.warnings);
    s.replace_resolution(&Resolution::default()).await.unwrap();
    assert!(s.edges().await.unwrap().is_empty());
    assert!(s.externals().await.unwrap().is_empty());
    assert!(s.warnings().await.unwrap().is_empty());
}

/// Saving references bumps the project's version; only new projects, renames, removals and new
/// registry prefixes move the catalog.
pub async fn references_versions_and_the_catalog_move_as_documented(s: &dyn Store) {
    s.save_scans(&[scan(1, "g/a", &["x"])]).await.unwrap();
    let before = s.resolve_input().await.unwrap();
    assert_eq!(before.projects, [record(1, "g/a")]);
    assert_eq!(before.references.len(), 1);
    s.save_scans(&[scan(1, "g/a", &["y"])]).await.unwrap();
    let after = s.resolve_input().await.unwrap().versions;
    assert_eq!(after.catalog, before.versions.catalog);
    assert!(after.projects[&1].1 > before.versions.projects[&1].1);
    // Same path and prefix: nothing moves.
    s.update_records(&[record(1, "g/a")]).await.unwrap();
    assert_eq!(s.resolve_input().await.unwrap().versions, after);
    s.update_records(&[record(1, "g/renamed")]).await.unwrap();
    let renamed = s.resolve_input().await.unwrap().versions;
    assert!(renamed.catalog > after.catalog);
    assert!(renamed.projects[&1].1 > after.projects[&1].1);
    assert_eq!(renamed.projects[&1].0, "g/renamed");
    let mut prefixed = record(1, "g/renamed");
    prefixed.registry_prefix = Some("reg.test/g/renamed".into());
    s.update_records(&[prefixed]).await.unwrap();
    let reprefixed = s.resolve_input().await.unwrap().versions;
    assert!(reprefixed.catalog > renamed.catalog);
    s.remove_projects(&[1]).await.unwrap();
    assert!(s.resolve_input().await.unwrap().versions.catalog > reprefixed.catalog);
}

/// A whole resolve read before a project was added writes nothing.
pub async fn a_whole_resolve_is_refused_when_the_catalog_moved(s: &dyn Store) {
    s.save_scans(&[scan(1, "g/a", &[])]).await.unwrap();
    s.replace_resolution(&Resolution {
        edges: vec![edge("g/x", "g/a")],
        ..Resolution::default()
    })
    .await
    .unwrap();
    let read = s.resolve_input().await.unwrap().versions;
    s.save_scans(&[scan(2, "g/b", &[])]).await.unwrap();
    let stale = Resolution::default();
    assert_eq!(
        s.replace_resolution_from(&stale, &read).await.unwrap(),
        ReplaceOutcome::CatalogMoved
    );
    assert_eq!(s.edges().await.unwrap(), [edge("g/x", "g/a")]);
}

/// A whole resolve writes everything but the part of projects rescanned after its read.
pub async fn a_whole_resolve_keeps_projects_rescanned_after_its_read(s: &dyn Store) {
    s.save_scans(&[
        scan(1, "g/a", &[]),
        scan(2, "g/b", &[]),
        scan(3, "g/c", &[]),
    ])
    .await
    .unwrap();
    let read = s.resolve_input().await.unwrap().versions;
    // g/c is rescanned and resolved on its own meanwhile.
    s.save_scans(&[scan(3, "g/c", &["new"])]).await.unwrap();
    s.replace_resolution(&Resolution {
        edges: vec![edge("g/b", "g/c")],
        ..Resolution::default()
    })
    .await
    .unwrap();
    let older = Resolution {
        edges: vec![edge("g/a", "g/b"), edge("g/a", "g/c")],
        externals: vec![External {
            project: "g/c".into(),
            image: "old".into(),
        }],
        warnings: vec![],
    };
    assert_eq!(
        s.replace_resolution_from(&older, &read).await.unwrap(),
        ReplaceOutcome::Written {
            kept: vec!["g/c".into()]
        }
    );
    assert_eq!(
        s.edges().await.unwrap(),
        [edge("g/a", "g/b"), edge("g/b", "g/c")]
    );
    assert!(s.externals().await.unwrap().is_empty());
}

/// `resolve_project` hands `derive` the project's path and references (by file, line) and
/// look-ups over the stored projects, and replaces only that project's part with the result.
pub async fn resolve_project_reads_and_writes_one_projects_part(s: &dyn Store) {
    let mut app = scan(3, "g/app", &[]);
    app.refs = vec![
        reference(RefKind::Project, ".gitlab-deps", 1, "G/LIB"),
        reference(RefKind::Image, "Dockerfile", 1, "reg.test/g/base"),
    ];
    let mut base = scan(1, "g/base", &[]);
    base.record.registry_prefix = Some("reg.test/g/base".into());
    s.save_scans(&[base, scan(2, "g/lib", &[]), app])
        .await
        .unwrap();
    s.replace_resolution(&Resolution {
        edges: vec![edge("g/old", "g/app"), edge("g/base", "g/lib")],
        externals: vec![External {
            project: "g/app".into(),
            image: "old".into(),
        }],
        warnings: vec![warning("g/app", "old")],
    })
    .await
    .unwrap();
    let rule = PrefixRule {
        reported: true,
        base: "registry.gitlab.test".into(),
    };
    let got = s
        .resolve_project(
            3,
            &rule,
            Box::new(|project, refs, lookup| {
                assert_eq!(project, "g/app");
                assert_eq!(refs[0].file, ".gitlab-deps");
                let by_path = lookup.project_by_path(&refs[0].value)?;
                let by_prefix = lookup.project_by_prefix(&refs[1].value)?;
                let derived = lookup.project_by_prefix("registry.gitlab.test/g/lib")?;
                let none = lookup.project_by_prefix("registry.gitlab.test/g/base")?;
                assert_eq!(
                    (by_path.as_deref(), by_prefix.as_deref(), derived.as_deref()),
                    (Some("g/lib"), Some("g/base"), Some("g/lib"))
                );
                assert_eq!(none, None, "a reported prefix hides the derived one");
                Ok(Resolution {
                    edges: vec![edge("g/lib", project), edge("g/base", project)],
                    externals: vec![],
                    warnings: vec![],
                })
            }),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.edges.len(), 2);
    assert_eq!(
        s.upstream_edges("g/app").await.unwrap(),
        [edge("g/base", "g/app"), edge("g/lib", "g/app")]
    );
    assert_eq!(
        s.upstream_edges("g/lib").await.unwrap(),
        [edge("g/base", "g/lib")]
    );
    assert!(s.externals().await.unwrap().is_empty());
    assert!(s.warnings().await.unwrap().is_empty());
    let unknown = s
        .resolve_project(99, &rule, Box::new(|_, _, _| Ok(Resolution::default())))
        .await
        .unwrap();
    assert!(unknown.is_none());
    // A failing derive writes nothing.
    let failed = s
        .resolve_project(
            3,
            &rule,
            Box::new(|_, _, _| Err(super::StoreError::Worker("derive failed".into()))),
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(s.upstream_edges("g/app").await.unwrap().len(), 2);
}

fn event(key: &str) -> NewEvent {
    NewEvent {
        delivery_key: key.into(),
        kind: "Push Hook".into(),
        body: format!(r#"{{"key":"{key}"}}"#),
    }
}

/// Deliveries are deduplicated by key, within and across batches, and come back oldest first.
pub async fn events_are_deduplicated_and_come_back_in_order(s: &dyn Store) {
    let first = s.insert_event("a", "Push Hook", "{}").await.unwrap();
    assert!(first.is_some());
    assert_eq!(s.insert_event("a", "Push Hook", "{}").await.unwrap(), None);
    let got = s
        .insert_events(&[event("a"), event("b"), event("b"), event("c")])
        .await
        .unwrap();
    assert!(got[0].is_none() && got[2].is_none());
    let (b, c) = (got[1].unwrap(), got[3].unwrap());
    assert!(first.unwrap() < b && b < c);
    let pending = s.unprocessed_events(10).await.unwrap();
    let seqs: Vec<i64> = pending.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [first.unwrap(), b, c]);
    assert_eq!(pending[1].body, r#"{"key":"b"}"#);
    assert_eq!(pending[1].kind, "Push Hook");
    assert_eq!(s.unprocessed_events(2).await.unwrap().len(), 2);
}

/// A typed input goes into the log as an [`INPUT_EVENT`] whose body decodes back to it.
pub async fn inputs_are_logged_as_input_events(s: &dyn Store) {
    let input = Input::Rebuild {
        project: "g/a".into(),
    };
    assert!(s.insert_input("op:1", &input).await.unwrap().is_some());
    assert!(s.insert_input("op:1", &input).await.unwrap().is_none());
    super::enqueue_operator_input(s, &input).await.unwrap();
    let pending = s.unprocessed_events(10).await.unwrap();
    assert_eq!(pending.len(), 2);
    for e in pending {
        assert_eq!(e.kind, INPUT_EVENT);
        assert_eq!(serde_json::from_str::<Input>(&e.body).unwrap(), input);
    }
}

/// Real states: `g/a` running its first attempt, `g/b` waiting for it.
fn busy_cascade() -> (Cascade, DepGraph) {
    let graph = DepGraph::from_parts(
        ["g/a".to_owned(), "g/b".to_owned()],
        [("g/a".to_owned(), "g/b".to_owned())],
    );
    let mut cascade = Cascade::new();
    cascade.apply(
        &graph,
        Input::Rebuild {
            project: "g/a".into(),
        },
        1_000,
    );
    let throttle = Throttle {
        max_running: 5,
        can_create: 5,
    };
    let actions = cascade.dispatch(&graph, throttle, &|_| false, 1_000);
    assert_eq!(actions.len(), 1);
    (cascade, graph)
}

/// States, counters and processed marks are committed together.
pub async fn commit_cascade_stores_states_and_processed_marks_together(s: &dyn Store) {
    let (mut cascade, _graph) = busy_cascade();
    let e1 = s.insert_event("e1", "Push Hook", "{}").await.unwrap();
    let e2 = s.insert_event("e2", "Push Hook", "{}").await.unwrap();
    let e3 = s.insert_event("e3", "Push Hook", "{}").await.unwrap();
    let counters = cascade.counters();
    let changes = cascade.take_dirty();
    assert_eq!(changes.len(), 2);
    s.commit_cascade(&changes, counters, e2, Activity::NONE, None)
        .await
        .unwrap();
    let pending: Vec<i64> = s
        .unprocessed_events(10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(pending, [e3.unwrap()]);
    assert!(e1 < e2);
    let stored = s.cascade_state().await.unwrap().unwrap();
    assert_eq!(stored.counters, counters);
    assert_eq!(stored.projects.len(), 2);
    // `None` deletes a project's state; no events marked without `processed_up_to`.
    s.commit_cascade(
        &[("g/b".to_owned(), None)],
        counters,
        None,
        Activity::NONE,
        None,
    )
    .await
    .unwrap();
    let stored = s.cascade_state().await.unwrap().unwrap();
    assert_eq!(stored.projects.len(), 1);
    assert_eq!(stored.projects[0].0, "g/a");
    assert_eq!(s.unprocessed_events(10).await.unwrap().len(), 1);
}

/// Pruning forgets processed events received before the cut-off, and their delivery keys; it
/// never drops an unprocessed event.
pub async fn pruning_forgets_only_old_processed_events(s: &dyn Store) {
    let old = s.insert_event("old", "Push Hook", "{}").await.unwrap();
    s.insert_event("open", "Push Hook", "{}").await.unwrap();
    s.commit_cascade(&[], Default::default(), old, Activity::NONE, None)
        .await
        .unwrap();
    let now = crate::util::now_ms();
    assert_eq!(s.prune_events(now - 3_600_000).await.unwrap(), 0);
    assert_eq!(s.prune_events(now + 60_000).await.unwrap(), 1);
    assert_eq!(s.unprocessed_events(10).await.unwrap().len(), 1);
    // Its key is forgotten: the same delivery key is new again.
    assert!(
        s.insert_event("old", "Push Hook", "{}")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.insert_event("open", "Push Hook", "{}")
            .await
            .unwrap()
            .is_none()
    );
}

/// What is committed comes back equal: counters and every project's full state.
pub async fn the_cascade_state_round_trips(s: &dyn Store) {
    assert_eq!(s.cascade_state().await.unwrap(), None);
    assert_eq!(
        super::load_cascade(s).await.unwrap().counters(),
        Default::default()
    );
    let (mut cascade, _graph) = busy_cascade();
    let counters = cascade.counters();
    let expected: HashMap<String, ProjectState> = cascade
        .projects()
        .map(|(p, state)| (p.to_owned(), state.clone()))
        .collect();
    let changes = cascade.take_dirty();
    s.commit_cascade(&changes, counters, None, Activity::NONE, None)
        .await
        .unwrap();
    let stored = s.cascade_state().await.unwrap().unwrap();
    assert_eq!(stored.counters, counters);
    let got: HashMap<String, ProjectState> = stored.projects.iter().cloned().collect();
    assert_eq!(got, expected);
    assert!(got["g/a"].running.is_some() && got["g/b"].stale.is_some());
    let loaded = super::load_cascade(s).await.unwrap();
    assert_eq!(loaded.counters(), counters);
    assert_eq!(loaded.state("g/a"), expected.get("g/a"));
}

/// Activity lines are committed with the step and come back newest first, at most `limit`;
/// the store keeps the newest [`super::ACTIVITY_STORED`].
pub async fn activity_comes_back_newest_first(s: &dyn Store) {
    let log = |at_ms: i64, lines: Vec<String>| async move {
        let activity = Activity {
            at_ms,
            lines: &lines,
        };
        s.commit_cascade(&[], Default::default(), None, activity, None)
            .await
            .unwrap();
    };
    log(1, vec![]).await;
    assert!(s.recent_activity(10).await.unwrap().is_empty());
    log(1, vec!["one".into(), "two".into()]).await;
    log(2, vec!["three".into()]).await;
    assert_eq!(
        s.recent_activity(2).await.unwrap(),
        [(2, "three".to_owned()), (1, "two".to_owned())]
    );
    assert_eq!(s.recent_activity(10).await.unwrap().len(), 3);
    let kept = super::ACTIVITY_STORED as usize;
    log(3, (0..kept).map(|i| format!("line {i}")).collect()).await;
    let all = s.recent_activity(kept + 10).await.unwrap();
    assert_eq!(all.len(), kept);
    assert_eq!(all[0], (3, format!("line {}", kept - 1)));
    assert_eq!(all[kept - 1], (3, "line 0".to_owned()));
}

/// Meta values are set, replaced and read back; unknown keys are `None`.
pub async fn meta_values_are_set_and_replaced(s: &dyn Store) {
    assert_eq!(s.meta("k").await.unwrap(), None);
    s.set_meta("k", "v1").await.unwrap();
    s.set_meta("k", "v2").await.unwrap();
    assert_eq!(s.meta("k").await.unwrap().as_deref(), Some("v2"));
}

/// A fresh store has a random hook fingerprint key; fingerprints are set, replaced and forgotten.
pub async fn hook_fingerprints_are_set_replaced_and_forgotten(s: &dyn Store) {
    let key = s.meta("hook_fingerprint_key").await.unwrap().unwrap();
    assert_eq!(key.len(), 64, "a random 256-bit key, hex");
    assert!(s.hook_fingerprints().await.unwrap().is_empty());
    s.update_hook_fingerprints(&[(1, "a".into()), (2, "b".into())], &[])
        .await
        .unwrap();
    s.update_hook_fingerprints(&[(1, "c".into())], &[2])
        .await
        .unwrap();
    assert_eq!(
        s.hook_fingerprints().await.unwrap(),
        HashMap::from([(1, "c".to_owned())])
    );
}

const LONG: std::time::Duration = std::time::Duration::from_secs(60);

/// A lease that runs out at once: it is free again for any later request (expiry is strict).
const NONE: std::time::Duration = std::time::Duration::ZERO;

pub async fn the_lease_is_held_by_one_holder_until_it_expires(s: &dyn Store) {
    assert_eq!(s.lease().await.unwrap(), None);
    let a = s
        .acquire_lease("a", LONG)
        .await
        .unwrap()
        .expect("a free lease is granted");
    assert_eq!(a.holder, "a");
    assert!(
        s.acquire_lease("b", LONG).await.unwrap().is_none(),
        "held by a"
    );
    let info = s.lease().await.unwrap().expect("stored");
    assert_eq!((info.holder.as_str(), info.epoch), ("a", a.epoch));
    assert!(info.expires_in_ms > 0);
    // The holder asking again gets a new epoch (it may have lost track of its old one).
    let a2 = s
        .acquire_lease("a", LONG)
        .await
        .unwrap()
        .expect("own lease");
    assert!(a2.epoch > a.epoch);
    // Once it has expired, anyone may take it, with a higher epoch.
    assert!(s.renew_lease(&a2, NONE).await.unwrap());
    let b = s
        .acquire_lease("b", LONG)
        .await
        .unwrap()
        .expect("expired lease is free");
    assert!(b.epoch > a2.epoch);
    assert_eq!(
        s.lease().await.unwrap().map(|l| l.holder),
        Some("b".to_owned())
    );
}

pub async fn renewal_and_release_follow_the_epoch(s: &dyn Store) {
    let a = s.acquire_lease("a", LONG).await.unwrap().expect("granted");
    assert!(s.renew_lease(&a, LONG).await.unwrap());
    // Released: free for another at once, and the old epoch renews nothing after the take-over.
    s.release_lease(&a).await.unwrap();
    let b = s
        .acquire_lease("b", LONG)
        .await
        .unwrap()
        .expect("released lease is free");
    assert!(!s.renew_lease(&a, LONG).await.unwrap());
    // A stale release leaves the current holder alone.
    s.release_lease(&a).await.unwrap();
    assert!(s.acquire_lease("c", LONG).await.unwrap().is_none());
    assert!(s.renew_lease(&b, LONG).await.unwrap());
    let forged = Lease {
        holder: "b".into(),
        epoch: b.epoch + 1,
    };
    assert!(!s.renew_lease(&forged, LONG).await.unwrap());
}

pub async fn a_superseded_epoch_commits_nothing(s: &dyn Store) {
    let (cascade, _) = busy_cascade();
    let (project, state) = cascade.projects().next().expect("a busy project");
    let a = s.acquire_lease("a", NONE).await.unwrap().expect("granted");
    s.commit_cascade(
        &[(project.to_owned(), Some(state))],
        cascade.counters(),
        None,
        Activity::NONE,
        Some(&a),
    )
    .await
    .expect("the current epoch commits");
    let b = s
        .acquire_lease("b", LONG)
        .await
        .unwrap()
        .expect("expired lease is free");
    let e = s.insert_event("k1", "Pipeline Hook", "{}").await.unwrap();
    let err = s
        .commit_cascade(
            &[(project.to_owned(), None)],
            Default::default(),
            e,
            Activity {
                at_ms: 1,
                lines: &["fenced".to_owned()],
            },
            Some(&a),
        )
        .await
        .expect_err("a superseded epoch is fenced off");
    assert!(
        matches!(err, super::StoreError::Fenced { held, current } if held == a.epoch && current == b.epoch),
        "{err}"
    );
    // Nothing of the fenced commit landed: the state is as before, the event unprocessed.
    let stored = s.cascade_state().await.unwrap().expect("stored");
    assert_eq!(stored.projects.len(), 1);
    assert_eq!(s.unprocessed_events(10).await.unwrap().len(), 1);
    assert!(s.recent_activity(10).await.unwrap().is_empty());
    // Without a fence (single-process use) and with the current epoch, commits go through.
    s.commit_cascade(&[], Default::default(), None, Activity::NONE, Some(&b))
        .await
        .expect("current epoch");
    s.commit_cascade(&[], Default::default(), e, Activity::NONE, None)
        .await
        .expect("unfenced");
    assert!(s.unprocessed_events(10).await.unwrap().is_empty());
}
