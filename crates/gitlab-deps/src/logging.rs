//! Log output: human-readable text or JSON lines on stderr, at a level set by `-v` or `RUST_LOG`.

use std::io::IsTerminal as _;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text, coloured when stderr is a terminal
    #[default]
    Auto,
    /// Human-readable text, never coloured
    Text,
    /// One JSON object per line (for log collectors)
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up logging: {0}")]
pub struct LoggingError(String);

/// The level filter: `RUST_LOG` if set, else from the `-v` count. A service says what it does;
/// one-shot commands speak only when something is wrong.
pub fn filter(verbose: u8, serving: bool) -> EnvFilter {
    let level = match (verbose, serving) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},gitlab_deps={level}")))
}

/// Installs the global subscriber writing to stderr.
pub fn init(format: LogFormat, filter: EnvFilter) -> Result<(), LoggingError> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        // Fields flattened into the object so that `message` and the event's own fields sit side
        // by side, as log collectors expect.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Auto => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
    };
    result.map_err(|e| LoggingError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_spelling_matches_the_flag() {
        #[derive(Deserialize)]
        struct File {
            log_format: LogFormat,
        }
        for (text, format) in [
            ("auto", LogFormat::Auto),
            ("text", LogFormat::Text),
            ("json", LogFormat::Json),
        ] {
            let parsed: File = toml::from_str(&format!("log_format = {text:?}")).unwrap();
            assert_eq!(parsed.log_format, format);
            let flag = <LogFormat as clap::ValueEnum>::from_str(text, false).unwrap();
            assert_eq!(flag, format);
        }
        assert!(toml::from_str::<File>("log_format = \"xml\"").is_err());
    }
}
