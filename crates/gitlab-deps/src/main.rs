//! The `gitlab-deps` binary: parses arguments, sets up logging, runs the command and turns any error
//! into one clear line and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;

use gitlab_deps::cli::{self, Cli, Context};
use gitlab_deps::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Completions and man pages need no settings: they work without a config file.
    if let Some(result) = cli::run_without_settings(&cli.command) {
        return exit(result);
    }
    // The config file is read before logging starts, since it may choose the log format.
    let ctx = match Context::new(cli.global.clone()) {
        Ok(ctx) => ctx,
        Err(e) => return exit(Err(e)),
    };
    let serving = matches!(cli.command, cli::Command::Serve(_));
    let format = cli::log_format(&cli.global, Some(&ctx));
    if let Err(e) = logging::init(format, logging::filter(cli.global.verbose, serving)) {
        return exit(Err(e.into()));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    exit(runtime.block_on(cli::run_with(ctx, cli.command)))
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
