//! `gitlab-deps man`: roff man pages rendered from the same argument definitions as `--help`.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::Cli;

/// Prints `gitlab-deps.1`, or writes it and one page per (visible) subcommand into `out_dir`.
pub fn write(out_dir: Option<&Path>) -> anyhow::Result<()> {
    let cmd = Cli::command();
    match out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::Write::write_all(&mut std::io::stdout(), &page)
                .context("cannot write the man page to stdout")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        }
    }
    Ok(())
}
