//! The command line: argument definitions and one handler per command.

mod context;
mod hooks_cmd;
mod man;
mod output;
mod query;
mod scan_cmd;
mod serve_cmd;

pub use hooks_cmd::{EndpointArgs, HooksArgs, HooksCommand, SyncArgs, UpdateArgs};
pub use serve_cmd::{CancelArgs, RebuildArgs, ServeArgs, StatusArgs, shutdown_signal};

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use context::Context;

use crate::logging::LogFormat;

/// Keeps chains of dependent GitLab projects rebuilt in the right order.
#[derive(Debug, Parser)]
#[command(name = "gitlab-deps", version, about, max_term_width = 100)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command. Each can also be set by environment variable or in the config
/// file; a flag wins over the environment, which wins over the file.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Config file (TOML) [default: ~/.config/gitlab-deps/config.toml if it exists]
    #[arg(long, global = true, env = "GITLAB_DEPS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Base URL of the GitLab instance
    #[arg(long, global = true, env = "GITLAB_DEPS_URL", value_name = "URL")]
    pub gitlab_url: Option<String>,
    /// File holding the GitLab API token (or set GITLAB_DEPS_TOKEN; never pass a token as a flag)
    #[arg(
        long,
        global = true,
        env = "GITLAB_DEPS_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// SQLite database file, or a postgres:// URL [default: ~/.local/share/gitlab-deps/gitlab-deps.db]
    #[arg(
        long,
        global = true,
        env = "GITLAB_DEPS_DB",
        value_name = "FILE|URL",
        hide_env_values = true
    )]
    pub db: Option<crate::store::Location>,
    /// File holding the PostgreSQL password (replaces any password in the URL)
    #[arg(
        long,
        global = true,
        env = "GITLAB_DEPS_DB_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub db_password_file: Option<PathBuf>,
    /// Container registry host (HOST[:PORT]) overriding what GitLab reports
    #[arg(
        long,
        global = true,
        env = "GITLAB_DEPS_REGISTRY",
        value_name = "HOST[:PORT]"
    )]
    pub registry: Option<String>,
    /// Parallel GitLab API requests [default: 8]
    #[arg(long, global = true, env = "GITLAB_DEPS_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// More log output (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr [default: auto: text, coloured on a terminal]
    #[arg(
        long,
        global = true,
        env = "GITLAB_DEPS_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Discover projects and their dependencies and store the graph
    Scan(ScanArgs),
    /// List the known projects
    ListProjects(ListArgs),
    /// What a project is built on
    Deps(DepsArgs),
    /// What is built on a project (what must be rebuilt when it changes)
    Rdeps(DepsArgs),
    /// The rebuild after a change of the given projects, as ordered waves (a dry run)
    Plan(PlanArgs),
    /// Print the whole graph
    Graph(GraphArgs),
    /// Show the warnings of the last scan (unreadable files, unknown projects, unresolved ARGs)
    Warnings(ListArgs),
    /// Receive GitLab webhooks and rebuild downstream projects in dependency order
    Serve(Box<ServeArgs>),
    /// Start a pipeline for a project now (its success cascades through a running `serve`)
    Rebuild(RebuildArgs),
    /// Drop pending rebuilds (applied by the running service)
    Cancel(CancelArgs),
    /// Show pending, running, failed and blocked rebuilds
    Status(StatusArgs),
    /// Manage the webhooks gitlab-deps needs on every project
    Hooks(HooksArgs),
    /// Scan, then sync the webhooks (for a system timer)
    Update(UpdateArgs),
    /// Print a shell completion script (e.g. `gitlab-deps completions bash > /etc/bash_completion.d/gitlab-deps`)
    Completions(CompletionsArgs),
    /// Write the man pages (for packagers)
    // Hidden: a packaging step, documented in the README; users read its result with `man`.
    #[command(hide = true)]
    Man(ManArgs),
    /// Watch a live cascade on a simulated GitLab, all on this machine (no setup)
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Not part of this build (it was built without the `demo` feature)
    // Hidden, so that `--help` lists only what runs; running it says how to get the demo.
    #[cfg(not(feature = "demo"))]
    #[command(hide = true, disable_help_flag = true)]
    Demo(DemoUnavailableArgs),
}

/// `demo` in a build without the `demo` feature: takes any arguments, so that every invocation
/// gets the same explanation instead of an argument error.
#[cfg(not(feature = "demo"))]
#[derive(Debug, Args)]
pub struct DemoUnavailableArgs {
    /// Whatever was passed.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

/// Why `demo` fails in a build without the `demo` feature, and how to get it.
#[cfg(not(feature = "demo"))]
pub const DEMO_UNAVAILABLE: &str = "this gitlab-deps was built without the demo (the production \
build leaves the simulated GitLab out); run it from a source checkout with `cargo run --release -- demo`, \
or build with the default features";

/// `demo`.
#[cfg(feature = "demo")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address of the gitlab-deps server
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// Address of the simulated GitLab
    #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
    pub sim_listen: String,
    /// How long each simulated pipeline runs, in milliseconds
    #[arg(long, default_value_t = 1500, value_name = "MS")]
    pub pipeline_ms: u64,
    /// Exit after the summary instead of serving until Ctrl-C
    #[arg(long)]
    pub exit_when_done: bool,
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    pub shell: clap_complete::Shell,
}

/// `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write gitlab-deps.1 and one page per subcommand (gitlab-deps-scan.1, ...) into this
    /// directory instead of printing gitlab-deps.1
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Group to scan, subgroups included (repeatable) [default: the config's groups, else every visible project]
    #[arg(long = "group", value_name = "PATH")]
    pub groups: Vec<String>,
    /// Re-read every project's files, even those whose content did not change
    #[arg(long)]
    pub full: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// Commands that only list.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
}

/// `deps` and `rdeps`.
#[derive(Debug, Args)]
pub struct DepsArgs {
    /// Full project path (group/sub/name)
    pub project: String,
    /// Follow the graph transitively
    #[arg(long, short)]
    pub recursive: bool,
    /// Print a JSON array of project paths
    #[arg(long)]
    pub json: bool,
}

/// `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Projects that changed
    #[arg(required = true, value_name = "PROJECT")]
    pub projects: Vec<String>,
    /// Print {"waves": [[...], ...]}
    #[arg(long)]
    pub json: bool,
}

/// `graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    /// The same as --format json (every command that prints data takes --json)
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

/// Graph output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz (`dot -Tsvg`)
    Dot,
    /// Mermaid flowchart
    Mermaid,
    /// JSON with projects, edges, external images and cycles
    Json,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(result) = run_without_settings(&cli.command) {
        return result;
    }
    run_with(Context::new(cli.global)?, cli.command).await
}

/// Runs the commands that read no settings (completions, man pages), so that they work without a
/// config file or a database; `None` for every other command.
pub fn run_without_settings(command: &Command) -> Option<anyhow::Result<()>> {
    match command {
        Command::Completions(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut cmd, "gitlab-deps", &mut std::io::stdout());
            Some(Ok(()))
        }
        Command::Man(args) => Some(man::write(args.out_dir.as_deref())),
        _ => None,
    }
}

/// The log format: the flag or environment, then the config file, then `auto`.
pub fn log_format(global: &GlobalArgs, ctx: Option<&Context>) -> LogFormat {
    global
        .log_format
        .or_else(|| ctx.and_then(|c| c.file.log_format))
        .unwrap_or_default()
}

/// Runs a command with its resolved settings.
pub async fn run_with(ctx: Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Completions(_) | Command::Man(_) => match run_without_settings(&command) {
            Some(result) => result,
            None => Ok(()),
        },
        Command::Scan(args) => scan_cmd::run(&ctx, args).await,
        Command::ListProjects(args) => query::list_projects(&ctx, &args).await,
        Command::Deps(args) => query::deps(&ctx, &args, query::Direction::Up).await,
        Command::Rdeps(args) => query::deps(&ctx, &args, query::Direction::Down).await,
        Command::Plan(args) => query::plan(&ctx, &args).await,
        Command::Graph(args) => query::graph(&ctx, &args).await,
        Command::Warnings(args) => query::warnings(&ctx, &args).await,
        Command::Serve(args) => serve_cmd::serve(&ctx, *args).await,
        Command::Rebuild(args) => serve_cmd::rebuild(&ctx, args).await,
        Command::Cancel(args) => serve_cmd::cancel(&ctx, args).await,
        Command::Status(args) => serve_cmd::status(&ctx, args).await,
        Command::Hooks(args) => hooks_cmd::run(&ctx, args).await,
        Command::Update(args) => hooks_cmd::update(&ctx, args).await,
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) => anyhow::bail!(DEMO_UNAVAILABLE),
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            crate::demo::run(crate::demo::DemoOptions {
                listen: args.listen,
                sim_listen: args.sim_listen,
                pipeline_duration: std::time::Duration::from_millis(args.pipeline_ms),
                exit_when_done: args.exit_when_done,
            })
            .await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    /// The command list of `--help`, one command name per line.
    fn listed_commands() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_owned())
            .collect()
    }

    #[cfg(feature = "demo")]
    #[test]
    fn demo_is_listed_and_parses_when_built_in() {
        assert!(listed_commands().iter().any(|c| c == "demo"));
        assert!(Cli::command().render_help().to_string().contains("demo"));
        let cli = Cli::try_parse_from(["gitlab-deps", "demo", "--exit-when-done"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Demo(DemoArgs {
                exit_when_done: true,
                ..
            })
        ));
    }

    #[cfg(not(feature = "demo"))]
    #[test]
    fn demo_is_not_advertised_without_the_feature() {
        assert!(!listed_commands().iter().any(|c| c == "demo"));
        assert!(!Cli::command().render_help().to_string().contains("demo"));
    }

    #[cfg(not(feature = "demo"))]
    #[tokio::test]
    async fn demo_without_the_feature_says_how_to_get_it_whatever_the_arguments() {
        for args in [
            &["gitlab-deps", "demo"][..],
            &[
                "gitlab-deps",
                "demo",
                "--exit-when-done",
                "--pipeline-ms",
                "50",
            ][..],
            &["gitlab-deps", "demo", "--help"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let err = run(cli).await.unwrap_err().to_string();
            assert!(err.contains("built without the demo"), "{err}");
            assert!(err.contains("cargo run --release -- demo"), "{err}");
        }
    }
}
