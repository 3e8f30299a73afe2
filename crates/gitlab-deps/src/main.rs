//! The `gitlab-deps` binary: parses arguments, sets up logging, runs the command and turns any error
//! into one clear line and a non-zero exit.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use gitlab_deps::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A service should say what it does; one-shot commands speak only when something is wrong.
    let serving = matches!(cli.command, cli::Command::Serve(_));
    let default_level = match (cli.global.verbose, serving) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{default_level},gitlab_deps={}", default_level))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
