//! End-to-end tests of the simulator over real HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gitlab_sim::{Outcome, PipelineStatus, ProjectSpec, Sim, SimOptions};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("PRIVATE-TOKEN", "sim-token")
        .send()
        .await
        .expect("request")
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}

/// Extracts the URL of `rel` from a Link header.
fn link(r: &reqwest::Response, rel: &str) -> Option<String> {
    let h = header(r, "link")?;
    h.split(", ").find_map(|part| {
        let (url, r) = part.split_once("; ")?;
        (r == format!("rel=\"{rel}\""))
            .then(|| url.trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

async fn sim_with(opts: SimOptions) -> (Sim, String) {
    let sim = Sim::new(opts);
    let url = sim.start().await.expect("start");
    (sim, url)
}

async fn sim() -> (Sim, String) {
    sim_with(SimOptions::default()).await
}

fn ci_project(path: &str) -> ProjectSpec {
    ProjectSpec::new(path)
        .file("Dockerfile", "FROM debian\n")
        .file(".gitlab-ci.yml", "build:\n  script: [make]\n")
}

/// A local webhook receiver collecting (headers, JSON body).
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(HeaderMap, Value)>>>);

impl Receiver {
    async fn start(status: StatusCode) -> (String, Self) {
        let rec = Self::default();
        let r2 = rec.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let r = r2.clone();
                async move {
                    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    r.0.lock().expect("lock").push((headers, v));
                    status
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        (url, rec)
    }

    fn all(&self) -> Vec<(HeaderMap, Value)> {
        self.0.lock().expect("lock").clone()
    }

    fn pipeline_statuses(&self) -> Vec<String> {
        self.all()
            .iter()
            .filter(|(_, v)| v["object_kind"] == "pipeline")
            .map(|(_, v)| {
                v["object_attributes"]["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }
}

#[tokio::test]
async fn auth_is_required() {
    let (sim, url) = sim().await;
    sim.add_project(ci_project("g/p"));
    let r = client()
        .get(format!("{url}/api/v4/projects"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "401 Unauthorized"})
    );
    let r = client()
        .get(format!("{url}/api/v4/projects"))
        .header("PRIVATE-TOKEN", "wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let r = client()
        .get(format!("{url}/api/v4/projects"))
        .bearer_auth("sim-token")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let r = get(&format!("{url}/api/v4/nope")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn project_json_and_lookup() {
    let (sim, url) = sim().await;
    let id = sim.add_project(ci_project("images/lang/Ruby"));
    sim.add_project(ProjectSpec::new("images/empty").empty());
    let r = get(&format!("{url}/api/v4/projects/images%2Flang%2FRuby")).await;
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["id"], id);
    assert_eq!(p["path_with_namespace"], "images/lang/Ruby");
    assert_eq!(p["name_with_namespace"], "images / lang / Ruby");
    assert_eq!(p["namespace"]["full_path"], "images/lang");
    assert_eq!(p["namespace"]["kind"], "group");
    assert_eq!(p["default_branch"], "main");
    assert_eq!(p["archived"], false);
    assert_eq!(p["empty_repo"], false);
    assert_eq!(p["web_url"], format!("{url}/images/lang/Ruby"));
    assert_eq!(p["http_url_to_repo"], format!("{url}/images/lang/Ruby.git"));
    assert_eq!(
        p["container_registry_image_prefix"],
        "registry.gitlab.test/images/lang/ruby"
    );
    let last = p["last_activity_at"].as_str().expect("string");
    assert!(last.ends_with('Z') && last.len() == 24, "{last}");

    let e: Value = get(&format!("{url}/api/v4/projects/images%2Fempty"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(e["default_branch"], Value::Null);
    assert_eq!(e["empty_repo"], true);

    let r = get(&format!("{url}/api/v4/projects/999")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "404 Project Not Found"})
    );
}

#[tokio::test]
async fn offset_pagination_headers() {
    let (sim, url) = sim().await;
    for i in 0..45 {
        let spec = ProjectSpec::new(format!("g/p{i}"));
        sim.add_project(if i % 10 == 0 { spec.archived() } else { spec });
    }
    // 45 projects, 5 archived -> 40 active.
    let r = get(&format!(
        "{url}/api/v4/projects?archived=false&order_by=id&sort=asc&per_page=15&page=2"
    ))
    .await;
    assert_eq!(header(&r, "x-page").as_deref(), Some("2"));
    assert_eq!(header(&r, "x-per-page").as_deref(), Some("15"));
    assert_eq!(header(&r, "x-next-page").as_deref(), Some("3"));
    assert_eq!(header(&r, "x-prev-page").as_deref(), Some("1"));
    assert_eq!(header(&r, "x-total").as_deref(), Some("40"));
    assert_eq!(header(&r, "x-total-pages").as_deref(), Some("3"));
    let next = link(&r, "next").expect("next");
    assert!(
        next.starts_with(&format!("{url}/api/v4/projects?")),
        "{next}"
    );
    assert!(
        next.contains("page=3") && next.contains("archived=false"),
        "{next}"
    );
    assert!(link(&r, "prev").is_some() && link(&r, "first").is_some());
    assert!(link(&r, "last").expect("last").contains("page=3"));
    let body: Vec<Value> = r.json().await.expect("json");
    assert_eq!(body.len(), 15);
    assert!(body.iter().all(|p| p["archived"] == false));

    // Walk all pages by X-Next-Page.
    let mut ids = Vec::new();
    let mut page = "1".to_owned();
    while !page.is_empty() {
        let r = get(&format!(
            "{url}/api/v4/projects?archived=false&per_page=15&page={page}"
        ))
        .await;
        page = header(&r, "x-next-page").expect("x-next-page");
        let body: Vec<Value> = r.json().await.expect("json");
        ids.extend(body.iter().map(|p| p["id"].as_u64().expect("id")));
    }
    assert_eq!(ids.len(), 40);
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "default order is created_at desc"
    );

    // Last page: empty X-Next-Page, no rel=next.
    let r = get(&format!("{url}/api/v4/projects?per_page=20&page=3")).await;
    assert_eq!(header(&r, "x-next-page").as_deref(), Some(""));
    assert!(link(&r, "next").is_none());
    assert_eq!(r.json::<Vec<Value>>().await.expect("json").len(), 5);
}

#[tokio::test]
async fn totals_omitted_above_count_limit() {
    let (sim, url) = sim_with(SimOptions {
        count_limit: 30,
        ..SimOptions::default()
    })
    .await;
    for i in 0..45 {
        sim.add_project(ProjectSpec::new(format!("g/p{i}")));
    }
    let r = get(&format!("{url}/api/v4/projects?per_page=20&page=2")).await;
    assert_eq!(header(&r, "x-total"), None);
    assert_eq!(header(&r, "x-total-pages"), None);
    assert_eq!(header(&r, "x-next-page").as_deref(), Some("3"));
    assert!(link(&r, "last").is_none());
    assert!(link(&r, "next").is_some());
}

#[tokio::test]
async fn totals_omitted_above_ten_thousand() {
    let (sim, url) = sim().await;
    for i in 0..10_050 {
        sim.add_project(ProjectSpec::new(format!("g{}/p{i}", i % 7)));
    }
    let r = get(&format!("{url}/api/v4/projects?per_page=100&page=100")).await;
    assert_eq!(header(&r, "x-total"), None);
    assert_eq!(header(&r, "x-total-pages"), None);
    assert_eq!(header(&r, "x-next-page").as_deref(), Some("101"));
    assert!(link(&r, "last").is_none());
    let r = get(&format!("{url}/api/v4/projects?per_page=100&page=101")).await;
    assert_eq!(header(&r, "x-next-page").as_deref(), Some(""));
    assert_eq!(r.json::<Vec<Value>>().await.expect("json").len(), 50);
    let r = get(&format!("{url}/api/v4/groups/g1/projects?per_page=5")).await;
    assert_eq!(header(&r, "x-total").as_deref(), Some("1436"));
}

#[tokio::test]
async fn keyset_pagination_follows_links() {
    let (sim, url) = sim().await;
    for i in 0..45 {
        let spec = ProjectSpec::new(format!("g/p{i}"));
        sim.add_project(if i == 3 { spec.archived() } else { spec });
    }
    let mut next = Some(format!(
        "{url}/api/v4/projects?archived=false&pagination=keyset&order_by=id&sort=asc&per_page=20"
    ));
    let mut ids = Vec::new();
    let mut pages = 0;
    while let Some(u) = next.take() {
        let r = get(&u).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-next-page"), None);
        assert_eq!(header(&r, "x-total"), None);
        next = link(&r, "next");
        if let Some(n) = &next {
            assert!(n.contains("id_after="), "{n}");
        }
        let body: Vec<Value> = r.json().await.expect("json");
        ids.extend(body.iter().map(|p| p["id"].as_u64().expect("id")));
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 44);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let r = get(&format!(
        "{url}/api/v4/projects?pagination=keyset&order_by=name"
    ))
    .await;
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn group_projects_with_subgroups() {
    let (sim, url) = sim().await;
    sim.add_project(ProjectSpec::new("images/base"));
    sim.add_project(ProjectSpec::new("images/sub/a"));
    sim.add_project(ProjectSpec::new("images/sub/deeper/b").archived());
    sim.add_project(ProjectSpec::new("other/c"));
    let paths = |v: Vec<Value>| {
        let mut p: Vec<String> = v
            .iter()
            .map(|p| p["path_with_namespace"].as_str().expect("path").to_owned())
            .collect();
        p.sort();
        p
    };
    let r = get(&format!(
        "{url}/api/v4/groups/images/projects?include_subgroups=true"
    ))
    .await;
    assert_eq!(header(&r, "x-total").as_deref(), Some("3"));
    assert_eq!(
        paths(r.json().await.expect("json")),
        ["images/base", "images/sub/a", "images/sub/deeper/b"]
    );
    let r = get(&format!(
        "{url}/api/v4/groups/images%2Fsub/projects?include_subgroups=true&archived=false"
    ))
    .await;
    assert_eq!(paths(r.json().await.expect("json")), ["images/sub/a"]);
    let r = get(&format!("{url}/api/v4/groups/images/projects")).await;
    assert_eq!(paths(r.json().await.expect("json")), ["images/base"]);
    let r = get(&format!("{url}/api/v4/groups/nope/projects")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "404 Group Not Found"})
    );
}

#[tokio::test]
async fn files_and_branches() {
    let (sim, url) = sim().await;
    sim.add_project(ProjectSpec::new("g/p").file("docker/Dockerfile", "FROM alpine\n"));
    let base = format!("{url}/api/v4/projects/g%2Fp/repository");
    let r = get(&format!("{base}/files/docker%2FDockerfile/raw?ref=main")).await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "content-type")
            .expect("ct")
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.expect("text"), "FROM alpine\n");
    for bad in [
        format!("{base}/files/Dockerfile/raw?ref=main"),
        format!("{base}/files/docker%2FDockerfile/raw?ref=nope"),
    ] {
        let r = get(&bad).await;
        assert_eq!(r.status(), 404, "{bad}");
        assert_eq!(
            r.json::<Value>().await.expect("json"),
            json!({"message": "404 File Not Found"})
        );
    }
    let r = client()
        .head(format!("{base}/files/docker%2FDockerfile?ref=main"))
        .header("PRIVATE-TOKEN", "sim-token")
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 200);
    let commit = header(&r, "x-gitlab-commit-id").expect("commit id");
    assert_eq!(Some(commit.clone()), sim.head_commit("g/p"));
    assert!(header(&r, "x-gitlab-blob-id").is_some());
    assert_eq!(header(&r, "x-gitlab-last-commit-id"), Some(commit.clone()));
    let r = client()
        .head(format!("{base}/files/missing?ref=main"))
        .header("PRIVATE-TOKEN", "sim-token")
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 404);

    let b: Value = get(&format!("{base}/branches/main"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(b["name"], "main");
    assert_eq!(b["default"], true);
    let head1 = b["commit"]["id"].as_str().expect("id").to_owned();
    assert_eq!(head1.len(), 40);
    assert_eq!(b["commit"]["short_id"], &head1[..8]);

    sim.set_file("g/p", "docker/Dockerfile", "FROM alpine:3.20\n");
    let b: Value = get(&format!("{base}/branches/main"))
        .await
        .json()
        .await
        .expect("json");
    let head2 = b["commit"]["id"].as_str().expect("id").to_owned();
    assert_ne!(head1, head2);
    assert_eq!(Some(head2), sim.head_commit("g/p"));
    let r = get(&format!("{base}/files/docker%2FDockerfile/raw?ref=main")).await;
    assert_eq!(r.text().await.expect("text"), "FROM alpine:3.20\n");

    sim.remove_file("g/p", "docker/Dockerfile");
    let r = get(&format!("{base}/files/docker%2FDockerfile/raw?ref=main")).await;
    assert_eq!(r.status(), 404);
    let r = get(&format!("{base}/branches/nope")).await;
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "404 Branch Not Found"})
    );
}

#[tokio::test]
async fn pipeline_lifecycle_delivers_webhooks() {
    let (sim, url) = sim().await;
    sim.add_project(ci_project("apps/web"));
    let (hook_url, rec) = Receiver::start(StatusCode::OK).await;
    let http = client();
    let r = http
        .post(format!("{url}/api/v4/projects/apps%2Fweb/hooks"))
        .header("PRIVATE-TOKEN", "sim-token")
        .json(&json!({"url": hook_url, "token": "s3cret", "pipeline_events": true, "push_events": false}))
        .send()
        .await
        .expect("create hook");
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{url}/api/v4/projects/apps%2Fweb/pipeline"))
        .header("PRIVATE-TOKEN", "sim-token")
        .json(&json!({"ref": "main", "variables": [{"key": "UPSTREAM", "value": "images/base", "variable_type": "env_var"}]}))
        .send()
        .await
        .expect("create pipeline");
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["status"], "created");
    assert_eq!(p["source"], "api");
    assert_eq!(p["ref"], "main");
    let id = p["id"].as_u64().expect("id");
    assert_eq!(p["sha"].as_str(), sim.head_commit("apps/web").as_deref());
    assert_eq!(p["web_url"], format!("{url}/apps/web/-/pipelines/{id}"));

    assert_eq!(
        sim.wait_pipeline(id, WAIT).await,
        Some(PipelineStatus::Success)
    );
    assert!(
        sim.wait_for(WAIT, |_| rec.pipeline_statuses().len() >= 3)
            .await,
        "{:?}",
        rec.pipeline_statuses()
    );
    assert_eq!(rec.pipeline_statuses(), ["pending", "running", "success"]);
    let all = rec.all();
    let (h, v) = &all[2];
    assert_eq!(h["x-gitlab-event"], "Pipeline Hook");
    assert_eq!(h["x-gitlab-token"], "s3cret");
    assert_eq!(h["x-gitlab-instance"], url.as_str());
    assert_eq!(h["user-agent"], "GitLab/17.6.0");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        all[0].0["x-gitlab-webhook-uuid"],
        h["x-gitlab-webhook-uuid"]
    );
    assert_ne!(all[0].0["x-gitlab-event-uuid"], h["x-gitlab-event-uuid"]);
    assert_ne!(all[0].0["idempotency-key"], h["idempotency-key"]);
    let attrs = &v["object_attributes"];
    assert_eq!(attrs["id"], id);
    assert_eq!(attrs["source"], "api");
    assert_eq!(attrs["tag"], false);
    assert_eq!(
        attrs["variables"],
        json!([{"key": "UPSTREAM", "value": "images/base"}])
    );
    assert!(
        attrs["finished_at"]
            .as_str()
            .expect("finished")
            .ends_with(" UTC")
    );
    assert_eq!(v["merge_request"], Value::Null);
    assert_eq!(v["project"]["path_with_namespace"], "apps/web");
    assert!(v.get("source_pipeline").is_none());

    let r = get(&format!("{url}/api/v4/projects/apps%2Fweb/pipelines/{id}")).await;
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["status"], "success");
    let vars: Value = get(&format!(
        "{url}/api/v4/projects/apps%2Fweb/pipelines/{id}/variables"
    ))
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(vars[0]["key"], "UPSTREAM");
    assert_eq!(vars[0]["value"], "images/base");
    assert_eq!(vars[0]["variable_type"], "env_var");

    let list = get(&format!(
        "{url}/api/v4/projects/apps%2Fweb/pipelines?ref=main&source=api&status=success"
    ))
    .await;
    assert_eq!(header(&list, "x-total").as_deref(), Some("1"));
    let none = get(&format!(
        "{url}/api/v4/projects/apps%2Fweb/pipelines?source=push"
    ))
    .await;
    assert_eq!(none.json::<Vec<Value>>().await.expect("json").len(), 0);
    assert!(sim.deliveries().iter().all(|d| d.ok()));
}

#[tokio::test]
async fn pipeline_creation_errors() {
    let (sim, url) = sim().await;
    sim.add_project(ci_project("g/ci"));
    sim.add_project(ProjectSpec::new("g/noci").file("Dockerfile", "FROM x"));
    let post = |path: &str, body: Value| {
        client()
            .post(format!("{url}/api/v4/projects/{path}/pipeline"))
            .header("PRIVATE-TOKEN", "sim-token")
            .json(&body)
            .send()
    };
    let r = post("g%2Fci", json!({"ref": "nope"})).await.expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": {"base": ["Reference not found"]}})
    );
    let r = post("g%2Fnoci", json!({"ref": "main"}))
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": {"base": ["Missing CI config file"]}})
    );
    sim.set_maintainer("g/ci", false);
    let r = post("g%2Fci", json!({"ref": "main"})).await.expect("post");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "403 Forbidden"})
    );
    let r = get(&format!("{url}/api/v4/projects/g%2Fci/hooks")).await;
    assert_eq!(r.status(), 403);
    let r = client()
        .post(format!("{url}/api/v4/projects/g%2Fci/pipeline"))
        .header("PRIVATE-TOKEN", "sim-token")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    sim.set_maintainer("g/ci", true);
    let r = client()
        .post(format!("{url}/api/v4/projects/g%2Fci/pipeline"))
        .header("PRIVATE-TOKEN", "sim-token")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    assert!(sim.pipelines("g/ci").is_empty());
}

#[tokio::test]
async fn retry_reruns_failed_pipeline() {
    let (sim, url) = sim_with(SimOptions {
        pipeline_duration: Duration::from_millis(60),
        ..SimOptions::default()
    })
    .await;
    sim.add_project(ci_project("g/p"));
    sim.queue_pipeline_outcomes("g/p", &[Outcome::Failed, Outcome::Success]);
    let id = sim.run_pipeline("g/p", "push");
    assert_eq!(
        sim.wait_pipeline(id, WAIT).await,
        Some(PipelineStatus::Failed)
    );
    let r = client()
        .post(format!("{url}/api/v4/projects/g%2Fp/pipelines/{id}/retry"))
        .header("PRIVATE-TOKEN", "sim-token")
        .send()
        .await
        .expect("retry");
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["id"], id);
    assert!(p["status"] == "pending" || p["status"] == "running", "{p}");
    assert_eq!(
        sim.wait_pipeline(id, WAIT).await,
        Some(PipelineStatus::Success)
    );
    let info = sim.pipelines("g/p");
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].retries, 1);
    assert_eq!(info[0].source, "push");
}

#[tokio::test]
async fn manual_finish_and_webhook_payload_kinds() {
    let (sim, _url) = sim_with(SimOptions {
        auto_finish: false,
        pipeline_duration: Duration::from_millis(20),
        ..SimOptions::default()
    })
    .await;
    sim.add_project(ci_project("g/up"));
    sim.add_project(ci_project("g/p"));
    sim.add_tag("g/p", "v1.0");
    let (hook_url, rec) = Receiver::start(StatusCode::OK).await;
    sim.add_hook("g/p", &hook_url, "t");
    let up = sim.run_pipeline("g/up", "push");
    let tag = sim.run_pipeline_with(
        "g/p",
        gitlab_sim::PipelineSpec::new("push")
            .tag("v1.0")
            .upstream("g/up", up)
            .variable("A", "1"),
    );
    assert!(
        sim.wait_for(WAIT, |s| s
            .pipeline(tag)
            .is_some_and(|p| p.status == "running"))
            .await
    );
    // Stays running without auto_finish.
    assert!(
        !sim.wait_for(Duration::from_millis(100), |s| s
            .pipeline(tag)
            .is_some_and(|p| p.status.is_finished()))
            .await
    );
    sim.finish_pipeline("g/p", tag, Outcome::Canceled);
    assert_eq!(
        sim.wait_pipeline(tag, WAIT).await,
        Some(PipelineStatus::Canceled)
    );
    assert!(
        sim.wait_for(WAIT, |_| rec.pipeline_statuses().len() == 3)
            .await
    );
    let last = rec.all().pop().expect("payload").1;
    assert_eq!(last["object_attributes"]["tag"], true);
    assert_eq!(last["object_attributes"]["ref"], "v1.0");
    assert_eq!(last["object_attributes"]["source"], "pipeline");
    assert_eq!(last["source_pipeline"]["pipeline_id"], up);

    let mr = sim.run_pipeline_with(
        "g/p",
        gitlab_sim::PipelineSpec::new("push").merge_request(gitlab_sim::MergeRequestSpec {
            iid: 7,
            title: "Bump base".into(),
            source_branch: "bump".into(),
            target_branch: "main".into(),
        }),
    );
    sim.finish_pipeline("g/p", mr, Outcome::Success);
    assert!(
        sim.wait_for(WAIT, |_| rec
            .all()
            .iter()
            .any(|(_, v)| v["object_attributes"]["id"] == mr
                && v["object_attributes"]["status"] == "success"))
            .await
    );
    let mr_payload = rec
        .all()
        .into_iter()
        .find(|(_, v)| v["object_attributes"]["id"] == mr)
        .expect("mr payload")
        .1;
    assert_eq!(
        mr_payload["object_attributes"]["source"],
        "merge_request_event"
    );
    assert_eq!(mr_payload["merge_request"]["iid"], 7);
    sim.finish_pipeline("g/up", up, Outcome::Success);
}

#[tokio::test]
async fn rate_limit_and_502_faults() {
    let (sim, url) = sim().await;
    sim.add_project(ci_project("g/p"));
    sim.faults().rate_limit_next("GET", "/projects", 2, 1);
    for _ in 0..2 {
        let r = get(&format!("{url}/api/v4/projects")).await;
        assert_eq!(r.status(), 429);
        assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
        assert_eq!(header(&r, "ratelimit-remaining").as_deref(), Some("0"));
        assert!(header(&r, "ratelimit-limit").is_some());
        let reset: i64 = header(&r, "ratelimit-reset")
            .expect("reset")
            .parse()
            .expect("int");
        assert!(reset > 1_700_000_000);
        assert_eq!(r.text().await.expect("text").trim(), "Retry later");
    }
    assert_eq!(get(&format!("{url}/api/v4/projects")).await.status(), 200);

    sim.faults().fail_next("POST", "/pipeline", 3, 502);
    let post = || {
        client()
            .post(format!("{url}/api/v4/projects/g%2Fp/pipeline"))
            .header("PRIVATE-TOKEN", "sim-token")
            .json(&json!({"ref": "main"}))
            .send()
    };
    for _ in 0..3 {
        // A GET on the same path is not affected.
        assert_eq!(
            get(&format!("{url}/api/v4/projects/g%2Fp/pipelines"))
                .await
                .status(),
            200
        );
        assert_eq!(post().await.expect("post").status(), 502);
    }
    assert_eq!(post().await.expect("post").status(), 201);
    assert!(sim.faults().get().fail_next.is_empty());
    let injected = sim.requests().iter().filter(|r| r.injected).count();
    assert_eq!(injected, 5);
    assert_eq!(sim.request_count(), 10);
    sim.reset_request_log();
    assert_eq!(sim.request_count(), 0);
}

#[tokio::test]
async fn hooks_crud_never_shows_token() {
    let (sim, url) = sim().await;
    sim.add_project(ci_project("g/p"));
    let http = client();
    let base = format!("{url}/api/v4/projects/g%2Fp/hooks");
    let created: Value = http
        .post(&base)
        .header("PRIVATE-TOKEN", "sim-token")
        .json(&json!({"url": "http://127.0.0.1:1/h", "token": "tok", "pipeline_events": true, "push_events": false, "push_events_branch_filter": "main", "enable_ssl_verification": false}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_u64().expect("id");
    assert!(created.get("token").is_none());
    assert_eq!(created["pipeline_events"], true);
    assert_eq!(created["push_events"], false);
    assert_eq!(created["push_events_branch_filter"], "main");
    assert_eq!(created["enable_ssl_verification"], false);
    assert!(created["created_at"].is_string());
    assert_eq!(sim.hooks("g/p")[0].token, "tok");

    let list = get(&base).await;
    assert_eq!(header(&list, "x-total").as_deref(), Some("1"));
    let list: Vec<Value> = list.json().await.expect("json");
    assert!(list[0].get("token").is_none());
    let one: Value = get(&format!("{base}/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(one, created);

    let updated: Value = http
        .put(format!("{base}/{id}"))
        .header("PRIVATE-TOKEN", "sim-token")
        .json(&json!({"url": "http://127.0.0.1:2/h", "token": "new", "push_events": true}))
        .send()
        .await
        .expect("put")
        .json()
        .await
        .expect("json");
    assert_eq!(updated["url"], "http://127.0.0.1:2/h");
    assert_eq!(updated["push_events"], true);
    assert_eq!(updated["pipeline_events"], true);
    assert!(updated.get("token").is_none());
    assert_eq!(sim.hooks("g/p")[0].token, "new");

    let r = http
        .delete(format!("{base}/{id}"))
        .header("PRIVATE-TOKEN", "sim-token")
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let r = get(&format!("{base}/{id}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "404 Hook Not Found"})
    );
    assert!(sim.hooks("g/p").is_empty());
    let r = http
        .post(&base)
        .header("PRIVATE-TOKEN", "sim-token")
        .json(&json!({"token": "x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn dropped_webhook_then_redelivery_and_push() {
    let (sim, _url) = sim().await;
    sim.add_project(ProjectSpec::new("g/noci").file("Dockerfile", "FROM a"));
    let (hook_url, rec) = Receiver::start(StatusCode::OK).await;
    sim.add_hook("g/noci", &hook_url, "tok");
    sim.faults().drop_webhooks(1);
    let pipeline = sim.push(
        "g/noci",
        &[("Dockerfile", Some("FROM b")), ("old.txt", None)],
    );
    assert_eq!(pipeline, None, "no .gitlab-ci.yml, no pipeline");
    assert!(
        sim.wait_for(WAIT, |s| s.deliveries().iter().any(|d| d.dropped))
            .await
    );
    assert!(rec.all().is_empty());
    sim.redeliver_last("g/noci");
    assert!(sim.wait_for(WAIT, |_| rec.all().len() == 1).await);
    // The receiver answers before the simulator records the delivery's outcome.
    assert!(sim.wait_for(WAIT, |s| s.deliveries().len() == 2).await);
    let (h, v) = &rec.all()[0];
    assert_eq!(h["x-gitlab-event"], "Push Hook");
    assert_eq!(v["object_kind"], "push");
    assert_eq!(v["ref"], "refs/heads/main");
    assert_eq!(v["after"].as_str(), sim.head_commit("g/noci").as_deref());
    assert_eq!(v["commits"][0]["modified"], json!(["Dockerfile"]));
    assert_eq!(v["total_commits_count"], 1);
    let d = sim.deliveries();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].idempotency_key, d[1].idempotency_key);
    assert_eq!(h["idempotency-key"], d[0].idempotency_key.as_str());
    assert!(d[1].redelivery && d[1].ok());

    // Push with CI starts a pipeline with source push; duplicates keep the key.
    sim.set_file("g/noci", ".gitlab-ci.yml", "x: {script: [a]}");
    sim.faults().duplicate_webhooks(true);
    let id = sim
        .push("g/noci", &[("Dockerfile", Some("FROM c"))])
        .expect("pipeline");
    assert_eq!(
        sim.wait_pipeline(id, WAIT).await,
        Some(PipelineStatus::Success)
    );
    assert_eq!(sim.pipelines("g/noci")[0].source, "push");
    // 1 push + 3 statuses, each twice.
    assert!(
        sim.wait_for(WAIT, |_| rec.all().len() == 1 + 8).await,
        "{}",
        rec.all().len()
    );
    let all = rec.all();
    assert_eq!(all[1].0["idempotency-key"], all[2].0["idempotency-key"]);
    assert_ne!(
        all[1].0["x-gitlab-event-uuid"],
        all[2].0["x-gitlab-event-uuid"]
    );
}

#[tokio::test]
async fn failing_receiver_is_retried_and_logged() {
    let (sim, _url) = sim_with(SimOptions {
        pipeline_duration: Duration::from_millis(20),
        ..SimOptions::default()
    })
    .await;
    sim.add_project(ci_project("g/p"));
    let (hook_url, rec) = Receiver::start(StatusCode::INTERNAL_SERVER_ERROR).await;
    sim.add_hook("g/p", &hook_url, "tok");
    let id = sim.run_pipeline("g/p", "web");
    assert_eq!(
        sim.wait_pipeline(id, WAIT).await,
        Some(PipelineStatus::Success)
    );
    assert!(sim.wait_for(WAIT, |s| s.deliveries().len() == 9).await);
    let d = sim.deliveries();
    assert!(d.iter().all(|d| d.status == Some(500)));
    assert_eq!(d.iter().map(|d| d.attempt).max(), Some(3));
    assert_eq!(rec.all().len(), 9);
}

#[tokio::test]
async fn sample_instance_is_consistent() {
    let (sim, url) = sim().await;
    let info = sim.with_sample_instance();
    assert_eq!(info.failing, "apps/legacy");
    assert!(info.projects.len() >= 11);
    let r = get(&format!(
        "{url}/api/v4/projects?archived=false&per_page=100"
    ))
    .await;
    let list: Vec<Value> = r.json().await.expect("json");
    assert_eq!(list.len(), info.projects.len() - 1);
    let web = sim.file("apps/web", "Dockerfile").expect("dockerfile");
    assert!(web.contains("registry.gitlab.test/images/lang/ruby:3.3 AS build"));
    assert!(web.contains("FROM registry.gitlab.test/tools/ci-tools:latest"));
    for p in &info.active {
        assert!(sim.file(p, ".gitlab-ci.yml").is_some(), "{p}");
    }
    let id = sim.run_pipeline("apps/legacy", "api");
    assert_eq!(
        sim.wait_pipeline(id, WAIT).await,
        Some(PipelineStatus::Failed)
    );
}
