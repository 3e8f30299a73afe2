//! Two `serve` replicas on one PostgreSQL, behind a round-robin load balancer, against gitlab-sim:
//! the leader is killed (`kill -9`) in the middle of a layered cascade, or cut off from the
//! database, and every affected project is still built exactly once, after its upstreams, by
//! whichever replica leads at the time; a cut-off leader creates nothing once it lost its lease.
//!
//! Each test gets a fresh database on the test cluster (`GITLAB_DEPS_TEST_POSTGRES`, or one started
//! by `scripts/test-postgres`); without PostgreSQL they say SKIPPED and return (in CI they fail).

mod common;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{SECRET, SimServer, Workdir, gitlab_deps, ours, wait_until};
use gitlab_deps::store::postgres::testing;
use gitlab_sim::{FaultRule, LoadBalancer, PipelineStatus, ProjectSpec, Sim, SimOptions};

const CI: &str = "build:\n  script: [make]\n";
/// Short, so that failovers take about a second; the bound a standby waits for.
const LEASE_TTL: Duration = Duration::from_secs(1);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh database on the test cluster, or `None` (the test is skipped) when there is none.
fn pg_database() -> Option<testing::TestDatabase> {
    runtime().block_on(testing::database())
}

/// Runs `sql` on the database at `url` (the test database's superuser URL).
fn admin_sql(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client.batch_execute(sql).await
    })
}

/// Login roles made for one test, dropped (with their sessions) at its end.
struct Roles {
    admin: String,
    names: Vec<String>,
}

impl Roles {
    /// A superuser login role `name` with a password; its URL on the test database.
    fn create(&mut self, name: &str) -> String {
        admin_sql(
            &self.admin,
            &format!("CREATE ROLE {name} LOGIN SUPERUSER PASSWORD 'pw'"),
        )
        .unwrap();
        self.names.push(name.to_owned());
        let mut url = url::Url::parse(&self.admin).unwrap();
        url.set_username(name).unwrap();
        url.set_password(Some("pw")).unwrap();
        url.to_string()
    }

    /// No new sessions for `name`, and its open ones ended: cut off from the database.
    fn cut_off(&self, name: &str) {
        admin_sql(
            &self.admin,
            &format!(
                "ALTER ROLE {name} NOLOGIN; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'"
            ),
        )
        .unwrap();
    }

    /// `name` may log in again.
    fn restore(&self, name: &str) {
        admin_sql(&self.admin, &format!("ALTER ROLE {name} LOGIN")).unwrap();
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = admin_sql(
                &self.admin,
                &format!(
                    "ALTER ROLE {name} NOLOGIN; \
                     SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'; \
                     DROP ROLE IF EXISTS {name}"
                ),
            );
        }
    }
}

/// A deterministic generator (SplitMix64), so every run builds the same graph.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

/// The projects of a test instance with their upstreams, and which ones a change of the root
/// affects.
struct Graph {
    root: String,
    upstreams: Vec<(String, Vec<String>)>,
    affected: Vec<String>,
}

impl Graph {
    /// Adds `upstreams` to the simulator: a Dockerfile `FROM` each upstream and a CI file.
    fn build(sim: &Sim, root: &str, upstreams: Vec<(String, Vec<String>)>) -> Self {
        let reg = sim.registry_host();
        for (path, ups) in &upstreams {
            let mut dockerfile: String = ups
                .iter()
                .enumerate()
                .map(|(k, u)| format!("FROM {reg}/{u} AS s{k}\n"))
                .collect();
            if ups.is_empty() {
                dockerfile.push_str("FROM debian:bookworm\n");
            }
            sim.add_project(
                ProjectSpec::new(path.clone())
                    .file("Dockerfile", dockerfile)
                    .file(".gitlab-ci.yml", CI),
            );
        }
        // Everything downstream of the root; upstreams come first in the list.
        let mut affected: Vec<String> = Vec::new();
        for (path, ups) in &upstreams {
            if ups.iter().any(|u| u == root || affected.contains(u)) {
                affected.push(path.clone());
            }
        }
        Self {
            root: root.to_owned(),
            upstreams,
            affected,
        }
    }

    /// `base/root`, then `layers` layers of `width` projects, each built on one project of the
    /// layer above and up to two more of any layer above (diamonds everywhere); and a small
    /// `other/` family beside it that the root's change must leave alone.
    fn layered(sim: &Sim, layers: usize, width: usize, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let root = "base/root".to_owned();
        let mut by_layer: Vec<Vec<String>> = vec![vec![root.clone()]];
        let mut upstreams = vec![(root.clone(), Vec::new())];
        for layer in 1..=layers {
            let mut names = Vec::new();
            for i in 0..width {
                let name = format!("l{layer}/p{i:02}");
                let above = &by_layer[layer - 1];
                let mut ups = vec![above[rng.below(above.len())].clone()];
                for _ in 0..rng.below(3) {
                    let pool = &by_layer[rng.below(layer)];
                    ups.push(pool[rng.below(pool.len())].clone());
                }
                ups.sort();
                ups.dedup();
                upstreams.push((name.clone(), ups));
                names.push(name);
            }
            by_layer.push(names);
        }
        upstreams.push(("other/root".to_owned(), Vec::new()));
        for i in 0..4 {
            let mut ups = vec!["other/root".to_owned()];
            if i > 0 {
                ups.push(format!("other/p{}", i - 1));
            }
            upstreams.push((format!("other/p{i}"), ups));
        }
        Self::build(sim, &root, upstreams)
    }

    /// Pipelines of the affected projects created so far (by any replica).
    fn created(&self, sim: &Sim) -> usize {
        self.affected
            .iter()
            .map(|p| ours(sim, p).len())
            .sum::<usize>()
    }

    /// Whether every affected project has a successful pipeline of ours.
    fn all_built(&self, sim: &Sim) -> bool {
        self.affected.iter().all(|p| {
            ours(sim, p)
                .iter()
                .any(|pl| pl.status == PipelineStatus::Success)
        })
    }

    /// Every affected project built exactly once, each pipeline created only after all its
    /// affected upstreams' pipelines succeeded (the root's own counts for the root), nothing else
    /// built.
    fn assert_built_once_in_order(&self, sim: &Sim) {
        let finished = |project: &str| {
            let pipelines = if project == self.root {
                sim.pipelines(project)
            } else {
                ours(sim, project)
            };
            let [pipeline] = pipelines.as_slice() else {
                panic!("{project}: {} pipelines, want 1", pipelines.len());
            };
            assert_eq!(pipeline.status, PipelineStatus::Success, "{project}");
            pipeline.clone()
        };
        for (project, ups) in &self.upstreams {
            if !self.affected.contains(project) {
                assert!(
                    ours(sim, project).is_empty(),
                    "{project} is not downstream of {} but was built",
                    self.root
                );
                continue;
            }
            let created = finished(project).created_at;
            for up in ups {
                if *up != self.root && !self.affected.contains(up) {
                    continue;
                }
                let done = finished(up)
                    .finished_at
                    .unwrap_or_else(|| panic!("{up} finished without a time"));
                assert!(
                    created >= done,
                    "{project} was created at {created} before its upstream {up} succeeded at {done}"
                );
            }
        }
    }
}

/// A plain HTTP/1.0 GET: the answer's body, `None` when nothing answers.
fn http_get(url: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// One `gitlab-deps serve` process of the pair; killed (SIGKILL) on drop.
struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    /// `/readyz`, parsed.
    fn readyz(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&http_get(&self.url, "/readyz")?).ok()
    }

    fn is_leader(&self) -> bool {
        self.readyz()
            .is_some_and(|r| r["role"].as_str() == Some("leader"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How replica slot `i` connects: its database URL and its GitLab token.
struct Slot {
    name: String,
    db: String,
    token: String,
}

/// gitlab-sim, a scanned PostgreSQL database, two replicas in slots behind a load balancer with
/// the hooks pointing at it. The replicas' logs are printed when a test fails.
struct Pair {
    server: SimServer,
    work: Workdir,
    slots: Vec<Slot>,
    replicas: Vec<Replica>,
    lb: LoadBalancer,
    logs: Vec<PathBuf>,
}

impl Pair {
    /// Scans into the database at `admin` (the test database's owner), then starts a replica per
    /// slot (waiting for the first to lead before starting the others, so that which one leads
    /// first is known), then points the hooks at the balancer.
    fn start(server: SimServer, admin: &str, slots: Vec<Slot>, extra: &[&str]) -> Self {
        let work = Workdir::new();
        gitlab_deps(&work, &server.url, None)
            .env("GITLAB_DEPS_DB", admin)
            .arg("scan")
            .assert()
            .success();
        let lb = server
            .runtime
            .block_on(LoadBalancer::start(vec![String::new(); slots.len()]))
            .unwrap();
        let mut pair = Self {
            server,
            work,
            slots,
            replicas: Vec::new(),
            lb,
            logs: Vec::new(),
        };
        for i in 0..pair.slots.len() {
            let replica = pair.spawn(i, extra);
            pair.lb.set_backend(i, &replica.url);
            pair.replicas.push(replica);
            if i == 0 {
                wait_until(30, "the first replica leads", || {
                    pair.replicas[0].is_leader()
                });
            }
        }
        gitlab_deps(&pair.work, &pair.server.url, None)
            .env("GITLAB_DEPS_DB", admin)
            .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
            .args(["hooks", "sync", "--public-url", pair.lb.url()])
            .assert()
            .success();
        pair
    }

    fn sim(&self) -> &Sim {
        &self.server.sim
    }

    /// Starts a replica for slot `i` on a free port and waits until it serves.
    fn spawn(&mut self, i: usize, extra: &[&str]) -> Replica {
        use std::io::BufRead as _;
        let slot = &self.slots[i];
        let n = self.logs.len();
        let log = self.work.path(&format!("{}-{n}.log", slot.name));
        let spool = self.work.path(&format!("{}-{n}.spool", slot.name));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gitlab-deps"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.work.dir.path())
            .env("GITLAB_DEPS_URL", &self.server.url)
            .env("GITLAB_DEPS_TOKEN", &slot.token)
            .env("GITLAB_DEPS_DB", &slot.db)
            .env("GITLAB_DEPS_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "gitlab_deps=info")
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--replica-name",
                &slot.name,
            ])
            .arg("--lease-ttl")
            .arg(format!("{}ms", LEASE_TTL.as_millis()))
            .arg("--spool")
            .arg(&spool)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.logs.push(log.clone());
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            panic!(
                "replica {} did not start: {line:?}\n{}",
                slot.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Replica {
            url: url.to_owned(),
            child,
        }
    }

    /// The slot of the replica that says it leads, when exactly one does.
    fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.replicas.len())
            .filter(|i| self.replicas[*i].is_leader())
            .collect();
        match leaders.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// `kill -9` of slot `i`'s replica, then a new one in its place (on another port, which the
    /// balancer learns).
    fn kill_and_restart(&mut self, i: usize, extra: &[&str]) {
        self.replicas[i].kill();
        let replica = self.spawn(i, extra);
        self.lb.set_backend(i, &replica.url);
        self.replicas[i] = replica;
    }

    /// Whether the leader's `/api/status` lists no project in progress.
    fn leader_idle(&self) -> bool {
        let Some(i) = self.leader() else {
            return false;
        };
        http_get(&self.replicas[i].url, "/api/status")
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["projects"].as_array().is_some_and(Vec::is_empty))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in &self.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("---- {} (last lines)", log.display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

#[test]
fn killing_the_leader_three_times_mid_cascade_loses_and_repeats_nothing() {
    let Some(db) = pg_database() else {
        return;
    };
    let server = SimServer::start(SimOptions {
        pipeline_duration: Duration::from_millis(600),
        ..SimOptions::default()
    });
    let graph = Graph::layered(&server.sim, 6, 9, 11);
    let affected = graph.affected.len();
    assert!(
        affected >= 40,
        "a graph worth the name: {affected} affected"
    );
    let slots = ["a", "b"]
        .map(|name| Slot {
            name: name.to_owned(),
            db: db.url.clone(),
            token: "sim-token".to_owned(),
        })
        .into();
    let mut pair = Pair::start(server, &db.url, slots, &[]);
    pair.sim().run_pipeline(&graph.root, "push");
    for kill in 1..=3 {
        // Kills at the start, a quarter and half way: at least two waves left at the last one,
        // so the cascade cannot have ended between the check below and the kill.
        let progress = (kill - 1) * affected / 4 + 1;
        wait_until(
            60,
            &format!("{progress} pipelines before kill {kill}"),
            || graph.created(pair.sim()) >= progress,
        );
        let mut leader = None;
        wait_until(30, &format!("a leader before kill {kill}"), || {
            leader = pair.leader();
            leader.is_some()
        });
        let created = graph.created(pair.sim());
        assert!(
            created < affected,
            "the cascade ended ({created} of {affected}) before kill {kill}: not mid-cascade"
        );
        eprintln!(
            "kill {kill}: slot {} led, {created} of {affected} pipelines created",
            leader.unwrap()
        );
        pair.kill_and_restart(leader.unwrap(), &[]);
    }
    wait_until(90, "every affected project built", || {
        graph.all_built(pair.sim())
    });
    wait_until(30, "the leader sees nothing left to do", || {
        pair.leader_idle()
    });
    graph.assert_built_once_in_order(pair.sim());
    let answered = pair.lb.answered();
    assert!(
        answered.iter().all(|n| *n > 0),
        "deliveries went to both slots: {answered:?}"
    );
}

#[test]
fn a_leader_cut_off_from_the_database_creates_nothing_once_its_lease_is_gone() {
    let Some(db) = pg_database() else {
        return;
    };
    let server = SimServer::start(SimOptions {
        pipeline_duration: Duration::from_millis(500),
        ..SimOptions::default()
    });
    // Wide: many projects ready at once, released a few at a time by max_running, so the leader
    // is always about to create one; and each creation takes a while on GitLab's side.
    let root = "base/root";
    let mut upstreams = vec![(root.to_owned(), Vec::new())];
    for i in 0..24 {
        upstreams.push((format!("wide/p{i:02}"), vec![root.to_owned()]));
    }
    for i in 0..6 {
        let ups = (0..3)
            .map(|k| format!("wide/p{:02}", (i * 4 + k) % 24))
            .collect();
        upstreams.push((format!("next/p{i}"), ups));
    }
    upstreams.push(("other/p".to_owned(), Vec::new()));
    let graph = Graph::build(&server.sim, root, upstreams);
    server.sim.faults().add(FaultRule::delay(
        "POST",
        "/pipeline",
        usize::MAX,
        Duration::from_millis(100),
    ));
    // Each replica its own database role, to cut one off, and its own GitLab token, to tell
    // their creations apart.
    let mut roles = Roles {
        admin: db.url.clone(),
        names: Vec::new(),
    };
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let role_a = format!("gd_a_{}", &unique[..12]);
    let role_b = format!("gd_b_{}", &unique[..12]);
    let slots = vec![
        Slot {
            name: "a".to_owned(),
            db: roles.create(&role_a),
            token: "token-a".to_owned(),
        },
        Slot {
            name: "b".to_owned(),
            db: roles.create(&role_b),
            token: "token-b".to_owned(),
        },
    ];
    for slot in &slots {
        server.sim.accept_token(&slot.token);
    }
    let pair = Pair::start(server, &db.url, slots, &["--max-running", "4"]);
    let epoch_a = pair.replicas[0].readyz().unwrap()["leader"]["epoch"]
        .as_i64()
        .unwrap();
    pair.sim().run_pipeline(root, "push");
    let by = |token: &str| {
        pair.sim()
            .all_pipelines()
            .into_iter()
            .filter(|(_, p)| p.source == "api" && p.token.as_deref() == Some(token))
            .count()
    };
    wait_until(30, "a has created pipelines", || by("token-a") >= 4);
    roles.cut_off(&role_a);
    // When b's epoch began, from the stored lease as b reads it: the first answer showing the new
    // epoch, less the part of the lease already gone (nothing renewed it yet, so soon after).
    let mut began = None;
    wait_until(30, "b takes the lease", || {
        let asked = Instant::now();
        let Some(ready) = pair.replicas[1].readyz() else {
            return false;
        };
        let leader = &ready["leader"];
        if leader["epoch"].as_i64().is_some_and(|e| e > epoch_a)
            && leader["holder"]
                .as_str()
                .is_some_and(|h| h.starts_with("b-"))
        {
            let left = Duration::from_millis(leader["expires_in_ms"].as_u64().unwrap_or(0));
            began = Some(asked - LEASE_TTL.saturating_sub(left));
            return true;
        }
        false
    });
    let began = began.unwrap();
    // a may come back: it must find itself fenced off, a standby.
    roles.restore(&role_a);
    wait_until(60, "every affected project built", || {
        graph.all_built(pair.sim())
    });
    wait_until(30, "the leader sees nothing left to do", || {
        pair.leader_idle()
    });
    assert_eq!(pair.leader(), Some(1), "b leads");
    let late: Vec<_> = pair
        .sim()
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                && r.path.ends_with("/pipeline")
                && r.token.as_deref() == Some("token-a")
                && r.received >= began
        })
        .collect();
    assert!(
        late.is_empty(),
        "a asked for pipelines after losing its lease: {late:?}"
    );
    let last_a = pair
        .sim()
        .requests()
        .into_iter()
        .filter(|r| r.token.as_deref() == Some("token-a") && r.method == "POST")
        .map(|r| r.received)
        .max();
    eprintln!(
        "a created {}, b {}; a's last creation request {:?} before b's epoch began",
        by("token-a"),
        by("token-b"),
        last_a.map(|t| began - t)
    );
    assert!(by("token-b") > 0, "b went on with the cascade");
    graph.assert_built_once_in_order(pair.sim());
    drop(pair);
    drop(roles);
}
