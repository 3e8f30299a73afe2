//! Webhook payloads as GitLab sends them, through the real router in-process: our fixtures (written
//! in the shapes of GitLab's documented examples, nulls included) get the right answer, and no JSON
//! at all makes the service answer with a 5xx or panic.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gitlab_deps::config::ScanSettings;
use gitlab_deps::gitlab::GitLabOptions;
use gitlab_deps::gitlab::payload::{self, HookEvent};
use gitlab_deps::orchestrate::Engine;
use gitlab_deps::server::HttpOptions;
use gitlab_deps::service::{Service, ServiceConfig};
use gitlab_deps::store::{SqliteStore, Store};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "fixture-secret";
const MAX_BODY: usize = 64 * 1024;

struct Running {
    router: Router,
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
}

/// The service with an empty graph; GitLab is never called (nothing is ever due to be built).
fn service() -> Running {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let gitlab = GitLabOptions {
        concurrency: 1,
        timeout: Duration::from_secs(1),
        ..GitLabOptions::new("http://127.0.0.1:9/".parse().unwrap(), "unused".into())
    };
    let mut config = ServiceConfig::new(
        gitlab,
        ScanSettings::from_file(&Default::default()).unwrap(),
    );
    config.engine.max_running = 1;
    config.engine.rescan_every = None;
    config.http = HttpOptions {
        webhook_secret: Some(SECRET.into()),
        max_body_bytes: MAX_BODY,
        ..HttpOptions::default()
    };
    let service = Service::new(config, Arc::clone(&store)).unwrap();
    Running {
        router: service.router(),
        engine: Arc::clone(service.engine()),
        store,
    }
}

/// Posts a body and returns the status and the answer's text.
async fn post(router: &Router, kind: Option<&str>, body: Vec<u8>) -> (StatusCode, String) {
    let mut request = Request::post("/hooks/gitlab")
        .header("X-Gitlab-Token", SECRET)
        .header("Content-Type", "application/json");
    if let Some(kind) = kind {
        request = request.header("X-Gitlab-Event", kind);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every fixture with the `X-Gitlab-Event` GitLab sends it with, and whether we keep it.
const FIXTURES: [(&str, &str, bool); 15] = [
    ("pipeline_push_success.json", "Pipeline Hook", true),
    (
        "pipeline_container_registry_push.json",
        "Pipeline Hook",
        false,
    ),
    ("pipeline_child.json", "Pipeline Hook", false),
    ("pipeline_merge_request.json", "Pipeline Hook", false),
    ("pipeline_tag.json", "Pipeline Hook", false),
    ("push_readme.json", "Push Hook", false),
    ("push_rename_into_subdirectory.json", "Push Hook", true),
    ("push_rewind.json", "Push Hook", true),
    ("push_other_branch.json", "Push Hook", false),
    ("tag_push.json", "Tag Push Hook", false),
    ("job.json", "Job Hook", false),
    ("merge_request.json", "Merge Request Hook", false),
    ("note.json", "Note Hook", false),
    ("system_hook_project_create.json", "System Hook", false),
    ("system_hook_push.json", "System Hook", false),
];

#[tokio::test]
async fn gitlabs_example_payloads_are_accepted_or_ignored_never_refused() {
    let s = service();
    let mut kept = 0;
    for (name, kind, keep) in FIXTURES {
        let body = serde_json::to_vec(&fixture(name)).unwrap();
        let (status, text) = post(&s.router, Some(kind), body).await;
        assert_eq!(status, StatusCode::OK, "{name}: {text}");
        let expected = if keep { "accepted" } else { "ignored" };
        assert!(text.starts_with(expected), "{name}: {text}");
        kept += usize::from(keep);
    }
    assert_eq!(s.store.unprocessed_events(100).unwrap().len(), kept);
    s.engine.process().await.unwrap();
    assert!(s.store.unprocessed_events(100).unwrap().is_empty());
}

#[test]
fn the_pipeline_example_reads_as_expected() {
    let body = serde_json::to_vec(&fixture("pipeline_push_success.json")).unwrap();
    let Some(HookEvent::Pipeline(p)) = payload::parse("Pipeline Hook", &body).unwrap() else {
        panic!("not a pipeline");
    };
    assert_eq!((p.project_id, p.pipeline_id), (31, 4107));
    assert_eq!(p.project.as_deref(), Some("images/base"));
    assert_eq!((p.git_ref.as_str(), p.status.as_str()), ("main", "success"));
    assert!(p.is_default_branch_build());
    // The variable with a null value is skipped, the other kept.
    assert_eq!(p.variable("NIGHTLY"), None);
    assert_eq!(p.variable("PUSH_TARGET"), Some("registry.example.test"));
    assert!(p.created_ms.is_some());

    let body = serde_json::to_vec(&fixture("push_rewind.json")).unwrap();
    let Some(HookEvent::Push(push)) = payload::parse("Push Hook", &body).unwrap() else {
        panic!("not a push");
    };
    assert_eq!((push.listed_commits, push.truncated), (0, false));
    assert!(push.touches(&["Dockerfile"]));
}

#[tokio::test]
async fn unknown_sources_are_ignored_and_counted() {
    let s = service();
    let mut body = fixture("pipeline_push_success.json");
    body["object_attributes"]["source"] = json!("hologram");
    let (status, text) = post(&s.router, Some("Pipeline Hook"), body.to_string().into()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("unknown pipeline source"), "{text}");
    assert!(s.store.unprocessed_events(10).unwrap().is_empty());
    let metrics = s.engine.metrics.encode();
    assert!(
        metrics.contains("event=\"Pipeline Hook\",result=\"unknown_source\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn only_missing_needed_fields_are_refused() {
    let s = service();
    for (path, field) in [
        ("project", "id"),
        ("object_attributes", "id"),
        ("object_attributes", "status"),
        ("object_attributes", "ref"),
    ] {
        let mut body = fixture("pipeline_push_success.json");
        body[path].as_object_mut().unwrap().remove(field);
        let (status, text) = post(&s.router, Some("Pipeline Hook"), body.to_string().into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}.{field}");
        assert!(text.contains(&format!("{path}.{field}")), "{text}");
    }
    let (status, _) = post(&s.router, None, b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&s.router, Some("Job Hook"), b"not json".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
}

/// Kinds GitLab sends (and one it does not), for the property test.
const KINDS: [&str; 7] = [
    "Pipeline Hook",
    "Push Hook",
    "Tag Push Hook",
    "Job Hook",
    "System Hook",
    "Note Hook",
    "Deployment Hook",
];

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "main",
            "success",
            "push",
            "container_registry_push",
            "refs/heads/main",
            "0000000000000000000000000000000000000000",
            "Dockerfile",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A fixture with one value somewhere in it replaced (or removed, for `None`).
fn mutated_fixture() -> impl Strategy<Value = (usize, Value)> {
    (
        0..FIXTURES.len(),
        prop::collection::vec(any::<prop::sample::Index>(), 1..5),
        prop::option::of(arbitrary_json()),
    )
        .prop_map(|(which, path, replacement)| {
            let mut body = fixture(FIXTURES[which].0);
            mutate(&mut body, &path, replacement);
            (which, body)
        })
}

/// Walks down `path` (each step picks a child) and replaces or removes where it ends.
fn mutate(value: &mut Value, path: &[prop::sample::Index], replacement: Option<Value>) {
    let Some((step, rest)) = path.split_first() else {
        return;
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(step.index(map.len())).unwrap().clone();
            if rest.is_empty() || !matches!(map[&key], Value::Object(_) | Value::Array(_)) {
                match replacement {
                    Some(v) => {
                        map.insert(key, v);
                    }
                    None => {
                        map.remove(&key);
                    }
                }
            } else {
                mutate(map.get_mut(&key).unwrap(), rest, replacement);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let at = step.index(items.len());
            if rest.is_empty() {
                match replacement {
                    Some(v) => items[at] = v,
                    None => {
                        items.remove(at);
                    }
                }
            } else {
                mutate(&mut items[at], rest, replacement);
            }
        }
        _ => {}
    }
}

/// Posts, checks the answer is one the service may give, and lets the engine fold whatever was kept.
fn check(rt: &tokio::runtime::Runtime, s: &Running, kind: &str, body: Vec<u8>) {
    rt.block_on(async {
        let (status, text) = post(&s.router, Some(kind), body).await;
        assert!(
            status.is_success()
                || [
                    StatusCode::BAD_REQUEST,
                    StatusCode::UNAUTHORIZED,
                    StatusCode::PAYLOAD_TOO_LARGE
                ]
                .contains(&status),
            "{kind}: {status} {text}"
        );
        s.engine.process().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn any_json_is_answered_without_a_server_error(kind in prop::sample::select(KINDS.to_vec()), value in arbitrary_json()) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let s = rt.block_on(async { service() });
        check(&rt, &s, kind, value.to_string().into_bytes());
    }

    #[test]
    fn mutated_examples_are_answered_without_a_server_error((which, body) in mutated_fixture()) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let s = rt.block_on(async { service() });
        check(&rt, &s, FIXTURES[which].1, body.to_string().into_bytes());
        prop_assert!(s.store.unprocessed_events(10).unwrap().is_empty());
    }
}
