//! The webhook receiver under a busy database and under slow or hostile clients: the real
//! `gitlab-deps serve` binary, with gitlab-sim running pipelines and delivering webhooks.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Service, SimServer, Workdir, gitlab_deps, json, ours, wait_until};
use gitlab_sim::{ProjectSpec, Sim, SimOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CI: &str = "build:\n  script: [make]\n";

/// The database's busy timeout: the lock in the test outlasts it.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

struct Setup {
    server: SimServer,
    work: Workdir,
    service: Service,
}

/// images/base -> apps/app, scanned, served, hooks installed.
fn setup(config: Option<&str>) -> Setup {
    let server = SimServer::start(SimOptions::default());
    let reg = server.sim.registry_host();
    server.sim.add_project(
        ProjectSpec::new("images/base")
            .file("Dockerfile", "FROM debian:bookworm\n")
            .file(".gitlab-ci.yml", CI),
    );
    server.sim.add_project(
        ProjectSpec::new("apps/app")
            .file("Dockerfile", format!("FROM {reg}/images/base\n"))
            .file(".gitlab-ci.yml", CI),
    );
    let (work, service) = common::scan_and_serve(&server, &[], config);
    Setup {
        server,
        work,
        service,
    }
}

fn built(sim: &Sim, project: &str) -> bool {
    ours(sim, project).iter().any(|p| p.status == "success")
}

fn settled(s: &Setup) -> bool {
    let out = gitlab_deps(&s.work, &s.server.url, None)
        .args(["status", "--json"])
        .output()
        .unwrap();
    json(&out).as_array().unwrap().is_empty()
}

/// `GET /healthz` with a deadline: the request fails if the answer takes longer.
fn healthz(s: &Setup, deadline: Duration) {
    let client = reqwest::Client::builder()
        .timeout(deadline)
        .build()
        .unwrap();
    let url = format!("{}/healthz", s.service.url);
    let response = s
        .server
        .runtime
        .block_on(async { client.get(url).send().await })
        .unwrap_or_else(|e| panic!("/healthz did not answer within {deadline:?}: {e}"));
    assert_eq!(response.status().as_u16(), 200);
}

/// Memory the service process holds now (`VmRSS`), in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn a_locked_database_delays_no_delivery_and_loses_none() {
    let s = setup(None);
    let sim = &s.server.sim;
    // Another process (here: a connection of this one) holds the write lock.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let db = s.work.db();
    let locker = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "BEGIN EXCLUSIVE; INSERT OR REPLACE INTO meta (key, value) VALUES ('test.lock', '1');",
        )
        .unwrap();
        locked_tx.send(Instant::now()).unwrap();
        release_rx.recv().unwrap();
        conn.execute_batch("COMMIT").unwrap();
    });
    let locked_at = locked_rx.recv().unwrap();

    sim.run_pipeline("images/base", "push");
    wait_until(30, "base's success delivered", || {
        sim.deliveries().iter().any(|d| {
            d.project == "images/base"
                && d.pipeline_status.as_deref() == Some("success")
                && (d.status.is_some() || d.error.is_some())
        })
    });
    healthz(&s, Duration::from_secs(2));
    // Hold the lock past the busy timeout, so that every wait on it inside the service expires.
    std::thread::sleep((BUSY_TIMEOUT + Duration::from_secs(1)).saturating_sub(locked_at.elapsed()));
    healthz(&s, Duration::from_secs(2));
    assert!(
        ours(sim, "apps/app").is_empty(),
        "nothing could be processed while the database was locked"
    );
    release_tx.send(()).unwrap();
    locker.join().unwrap();

    wait_until(60, "app rebuilt after the lock", || built(sim, "apps/app"));
    wait_until(30, "nothing pending", || settled(&s));
    assert_eq!(ours(sim, "apps/app").len(), 1, "app built exactly once");
    for d in sim.deliveries() {
        assert!(
            d.status.is_some_and(|c| (200..300).contains(&c)) && d.attempt == 1,
            "a delivery was not acknowledged at once: {d:?}"
        );
    }
    let log = std::fs::read_to_string(s.work.path("serve.log")).unwrap();
    assert!(log.contains("kept in the spool"), "{log}");
    let spool = common::Workdir::path(&s.work, "deps.db.spool");
    wait_until(30, "the spool emptied", || {
        std::fs::metadata(&spool).is_ok_and(|m| m.len() == 0)
    });
}

/// Connects and sends nothing.
async fn idle(addr: String, open: Arc<AtomicUsize>) -> tokio::net::TcpStream {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    open.fetch_add(1, Ordering::SeqCst);
    stream
}

/// Sends the headers of a webhook without a token, reads the answer (within a deadline: a server
/// that waits for the body never answers), then tries to send most of a 5 MB body.
async fn slow_body(addr: String, open: Arc<AtomicUsize>) -> String {
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    open.fetch_add(1, Ordering::SeqCst);
    let head = format!(
        "POST /hooks/gitlab HTTP/1.1\r\nHost: {addr}\r\nX-Gitlab-Event: Pipeline Hook\r\n\
         Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..70 {
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
    }
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[test]
fn slow_bodies_and_idle_connections_neither_pin_memory_nor_block_deliveries() {
    let s = setup(None);
    let sim = &s.server.sim;
    let addr = s.service.addr.clone();
    let open = Arc::new(AtomicUsize::new(0));
    let idle_conns: Vec<_> = (0..300)
        .map(|_| {
            s.server
                .runtime
                .spawn(idle(addr.clone(), Arc::clone(&open)))
        })
        .collect();
    let slow: Vec<_> = (0..100)
        .map(|_| {
            s.server
                .runtime
                .spawn(slow_body(addr.clone(), Arc::clone(&open)))
        })
        .collect();
    wait_until(30, "400 connections open", || {
        open.load(Ordering::SeqCst) == 400
    });
    // A real delivery is still answered and acted on.
    sim.run_pipeline("images/base", "push");
    wait_until(60, "app rebuilt", || built(sim, "apps/app"));
    let rss = rss(s.service.pid());
    assert!(
        rss < 100 * 1024 * 1024,
        "the service holds {} MB under slow bodies",
        rss / (1024 * 1024)
    );
    // The bodies were refused for their missing token, without being read.
    let answers: Vec<String> = slow
        .into_iter()
        .map(|t| s.server.runtime.block_on(t).unwrap())
        .collect();
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    }
    healthz(&s, Duration::from_secs(5));
    drop(idle_conns);
}

#[test]
fn idle_connections_are_closed_after_the_header_timeout() {
    let s = setup(Some("[serve]\nheader_timeout = \"1s\"\n"));
    let addr = s.service.addr.clone();
    let closed = s.server.runtime.block_on(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        // The server closes the connection (EOF) long before this deadline.
        tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await
    });
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection stayed open: {closed:?}"
    );
}

#[test]
fn a_short_webhook_secret_is_warned_about_and_an_empty_one_named() {
    let server = SimServer::start(SimOptions::default());
    let work = Workdir::new();
    let empty = work.write("empty-secret", "\n");
    let out = gitlab_deps(&work, &server.url, None)
        .args(["serve", "--listen", "127.0.0.1:0", "--webhook-secret-file"])
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot read the webhook secret file {}: the file is empty",
            empty.display()
        )),
        "{stderr}"
    );

    let short = work.write("short-secret", "hunter2\n");
    let short = short.to_str().unwrap();
    let _service = Service::start(
        &work,
        &server.url,
        "127.0.0.1:0",
        &["--webhook-secret-file", short],
    );
    let log = std::fs::read_to_string(work.path("serve.log")).unwrap();
    assert!(
        log.contains("the webhook secret is only 7 bytes long"),
        "{log}"
    );
}

/// One HTTP/1.1 keep-alive request on `stream`; the status line and headers of the answer.
async fn request(stream: &mut tokio::net::TcpStream, addr: &str) -> String {
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = stream.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[test]
fn connections_beyond_the_limit_wait_until_one_closes() {
    let s = setup(Some(
        "[serve]\nmax_connections = 2\nheader_timeout = \"60s\"\n",
    ));
    let addr = s.service.addr.clone();
    s.server.runtime.block_on(async move {
        // Two kept-alive connections, each answered once: both are being served.
        let mut first = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut second = tokio::net::TcpStream::connect(&addr).await.unwrap();
        assert!(request(&mut first, &addr).await.starts_with("HTTP/1.1 200"));
        assert!(
            request(&mut second, &addr)
                .await
                .starts_with("HTTP/1.1 200")
        );
        // A third is not served while they stay open...
        let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        third.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 1024];
        let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut answer)).await;
        assert!(early.is_err(), "served beyond the limit: {early:?}");
        // ...and is as soon as one closes.
        drop(first);
        let n = tokio::time::timeout(Duration::from_secs(20), third.read(&mut answer))
            .await
            .expect("not served after a connection closed")
            .unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    });
}
