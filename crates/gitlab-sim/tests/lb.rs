//! The round-robin load balancer and per-client tokens, over real HTTP.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use gitlab_sim::{LoadBalancer, ProjectSpec, Sim, SimOptions};

/// A backend answering `GET /who` with its name.
async fn backend(name: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/who", get(move || async move { name }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// An address nothing listens on (connections are refused).
async fn refused() -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

async fn who(client: &reqwest::Client, lb: &LoadBalancer) -> (u16, String) {
    let r = client
        .get(format!("{}/who?x=1", lb.url()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn requests_alternate_between_backends_even_on_one_connection() {
    let lb = LoadBalancer::start(vec![backend("a").await, backend("b").await])
        .await
        .unwrap();
    // One client: its connection to the balancer is reused, yet every request goes elsewhere.
    let client = reqwest::Client::new();
    let mut names = Vec::new();
    for _ in 0..6 {
        let (status, name) = who(&client, &lb).await;
        assert_eq!(status, 200);
        names.push(name);
    }
    assert_eq!(names, ["a", "b", "a", "b", "a", "b"]);
    assert_eq!(lb.answered(), [3, 3]);
}

#[tokio::test]
async fn a_backend_refusing_connections_is_skipped_until_it_is_back() {
    let dead = refused().await;
    let lb = LoadBalancer::start(vec![backend("a").await, dead])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..4 {
        assert_eq!(who(&client, &lb).await, (200, "a".to_owned()));
    }
    assert_eq!(lb.answered(), [4, 0]);
    lb.set_backend(1, &backend("c").await);
    let mut names: Vec<String> = Vec::new();
    for _ in 0..4 {
        names.push(who(&client, &lb).await.1);
    }
    names.sort();
    assert_eq!(names, ["a", "a", "c", "c"]);
}

#[tokio::test]
async fn no_backend_answers_502() {
    let lb = LoadBalancer::start(vec![refused().await, refused().await])
        .await
        .unwrap();
    let (status, _) = who(&reqwest::Client::new(), &lb).await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn pipelines_record_the_token_that_created_them() {
    let sim = Sim::new(SimOptions::default());
    let url = sim.start().await.unwrap();
    sim.add_project(ProjectSpec::new("g/ci").file(".gitlab-ci.yml", "build:\n  script: [make]\n"));
    sim.accept_token("replica-b");
    let client = reqwest::Client::new();
    let create = |token: &'static str| {
        client
            .post(format!("{url}/api/v4/projects/g%2Fci/pipeline"))
            .header("PRIVATE-TOKEN", token)
            .json(&serde_json::json!({"ref": "main"}))
            .send()
    };
    assert_eq!(create("sim-token").await.unwrap().status(), 201);
    assert_eq!(create("replica-b").await.unwrap().status(), 201);
    assert_eq!(create("unknown").await.unwrap().status(), 401);
    sim.run_pipeline("g/ci", "push");
    let tokens: Vec<Option<String>> = sim.pipelines("g/ci").into_iter().map(|p| p.token).collect();
    assert_eq!(
        tokens,
        [
            Some("sim-token".to_owned()),
            Some("replica-b".to_owned()),
            None
        ]
    );
}
