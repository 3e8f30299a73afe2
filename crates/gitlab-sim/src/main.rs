//! `gitlab-sim [--listen ADDR] [--sample] [--token T] [--pipeline-ms N]`:
//! serves a simulated GitLab until Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use gitlab_sim::{Sim, SimOptions};

const USAGE: &str = "usage: gitlab-sim [--listen 127.0.0.1:9999] [--sample] [--token TOKEN] [--pipeline-ms MS] [--latency-ms MS]";

#[tokio::main]
async fn main() -> ExitCode {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut sample = false;
    let mut opts = SimOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let ok = match arg.as_str() {
            "--sample" => {
                sample = true;
                true
            }
            "--listen" => args
                .next()
                .and_then(|v| v.parse().ok())
                .map(|a| listen = a)
                .is_some(),
            "--token" => args.next().map(|t| opts.token = t).is_some(),
            "--pipeline-ms" => args
                .next()
                .and_then(|v| v.parse().ok())
                .map(|ms| opts.pipeline_duration = Duration::from_millis(ms))
                .is_some(),
            "--latency-ms" => args
                .next()
                .and_then(|v| v.parse().ok())
                .map(|ms| opts.latency = Duration::from_millis(ms))
                .is_some(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => false,
        };
        if !ok {
            eprintln!("gitlab-sim: bad argument {arg}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let sim = Sim::new(opts);
    if sample {
        let info = sim.with_sample_instance();
        println!(
            "sample instance: {} projects (failing: {})",
            info.projects.len(),
            info.failing
        );
    }
    let url = match sim.start_on(listen).await {
        Ok(url) => url,
        Err(e) => {
            eprintln!("gitlab-sim: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("url:   {url}");
    println!("token: {}", sim.token());
    println!(
        "try:   curl -H 'PRIVATE-TOKEN: {}' {url}/api/v4/projects",
        sim.token()
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("gitlab-sim: {e}");
    }
    ExitCode::SUCCESS
}
