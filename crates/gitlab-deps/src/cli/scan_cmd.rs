//! `gitlab-deps scan`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::{ScanJson, print_json};
use super::{Context, ScanArgs};
use crate::scan::{ScanProgress, ScanRequest, ScanSummary, Scanner};

/// Shows listing and reading progress on a terminal; draws nothing otherwise.
struct Bar(ProgressBar);

impl ScanProgress for Bar {
    fn listed(&self, n: usize) {
        self.0.inc_length(n as u64);
    }
    fn project_done(&self, path: &str) {
        self.0.inc(1);
        self.0.set_message(path.to_owned());
    }
}

pub async fn run(ctx: &Context, args: ScanArgs) -> anyhow::Result<()> {
    let (summary, cycles) = scan(ctx, args.groups, args.full, args.json).await?;
    if args.json {
        return print_json(&ScanJson::new(&summary, cycles));
    }
    print_summary(&summary, &cycles);
    Ok(())
}

/// Runs a scan (with a progress bar on a terminal unless `quiet`); the summary and the cycles.
pub async fn scan(
    ctx: &Context,
    groups: Vec<String>,
    full: bool,
    quiet: bool,
) -> anyhow::Result<(ScanSummary, Vec<Vec<String>>)> {
    let store = ctx.store().await?;
    let gitlab = ctx.gitlab()?;
    let scanner = Scanner::new(
        gitlab,
        store.clone(),
        ctx.scan_settings()?,
        ctx.gitlab_url()?,
        ctx.registry(),
    );
    let target = if std::io::stderr().is_terminal() && !quiet {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} scanning [{bar:30}] {pos}/{len} projects  {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let request = ScanRequest { groups, full };
    let result = scanner.scan(&request, &Bar(bar.clone())).await;
    bar.finish_and_clear();
    let summary = result?;
    let graph = ctx.graph(store.as_ref()).await?;
    Ok((summary, graph.cycles()))
}

pub fn print_summary(s: &ScanSummary, cycles: &[Vec<String>]) {
    println!(
        "Scanned {} projects in {:.1}s ({} read, {} unchanged{}{}).",
        s.projects_seen,
        s.duration.as_secs_f64(),
        s.projects_read,
        s.skipped_unchanged + s.files_unchanged,
        if s.removed > 0 {
            format!(", {} removed", s.removed)
        } else {
            String::new()
        },
        if s.failed > 0 {
            format!(", {} failed", s.failed)
        } else {
            String::new()
        },
    );
    println!("  with dependencies  {}", s.with_dependencies);
    println!("  edges              {}", s.edges);
    println!("  external images    {}", s.external_images);
    println!("  cycles             {}", cycles.len());
    println!("  warnings           {}", s.warnings.len());
    println!("  API requests       {}", s.requests);
    for cycle in cycles {
        let mut path = cycle.clone();
        if let Some(first) = cycle.first() {
            path.push(first.clone());
        }
        println!("cycle: {}", path.join(" -> "));
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
}
