//! `resh campaign`: fault-injection experiments that measure what voting buys.
//!
//! For each replica count in the campaign (e.g. `[3, 1]`: voted, and the no-voting baseline),
//! the campaign runs
//! 1. a **golden run**: a fresh resh with fresh replicas, the workload without a fault, and a
//!    record of what the client received;
//! 2. **M experiments**, each on a fresh resh with fresh replicas: the workload, one injection
//!    from the plan (kind, target, point in the workload and the injection's own seed are
//!    drawn from the campaign seed, [`plan`]), settling, and a comparison of what the client
//!    received with the golden run ([`classify`]).
//!
//! The plan is the same for every replica count, so the baseline meets exactly the faults the
//! voted runs meet. Results go to `experiments.jsonl` as they come, then to `summary.csv`,
//! `summary.md` and `outcomes.svg` ([`report`]).
//!
//! Layout: [`config`] (campaign.toml), [`plan`] (pure, seeded), [`workload`] (the client),
//! `runner` (one experiment), [`classify`] (pure), [`report`].
pub mod classify;
pub mod config;
pub mod plan;
pub mod report;
mod runner;
pub mod workload;

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use self::config::CampaignConfig;
pub use self::report::PlotError;
pub use self::runner::{ExperimentRecord, GoldenError, Runner, SessionSummary, SetupError};
use crate::error::FileError;
use netdomain::config::ConfigError;

/// `resh campaign` arguments.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = "\
The report directory gets experiments.jsonl (one JSON line per experiment), summary.csv
(replicas,kind,outcome,count), summary.md and outcomes.svg. See the README section
\"Running a fault-injection campaign\" for the file format and how to read the report.

Example:
  cargo build --release
  target/release/resh campaign -c examples/campaign.toml --out campaign-report")]
pub struct CampaignArgs {
    /// The campaign file (TOML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Where the report goes (overrides `out` in the file); created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Use this seed instead of the file's.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run this many experiments per replica count instead of the file's.
    #[arg(long, value_name = "M")]
    pub experiments: Option<usize>,
}

/// Why a campaign could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The user's campaign file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The system: the report directory or a report file could not be written.
    #[error(transparent)]
    File(#[from] FileError),
    /// resh or the service could not be set up for an experiment.
    #[error("experiment: {0}")]
    Experiment(#[from] SetupError),
    /// The golden run did not give a reference to compare with.
    #[error("golden run: {0}")]
    Golden(#[from] GoldenError),
    /// The plot could not be drawn.
    #[error("outcomes.svg: {0}")]
    Report(#[from] PlotError),
}

/// What a finished campaign produced.
#[derive(Debug)]
pub struct Report {
    /// Every experiment, in the order they ran.
    pub records: Vec<ExperimentRecord>,
    /// The report directory.
    pub dir: PathBuf,
    /// The Markdown summary (also in `summary.md`).
    pub summary: String,
    /// How long the campaign took.
    pub runtime: Duration,
}

/// Runs a campaign and writes its report to `out`. `bindir` fills `{bindir}` in the service
/// command; `progress` shows a progress bar on standard error when it is a terminal.
pub async fn run(
    config: &CampaignConfig,
    out: &Path,
    bindir: PathBuf,
    progress: bool,
) -> Result<Report, CampaignError> {
    let began = Instant::now();
    std::fs::create_dir_all(out).map_err(FileError::on("create", out))?;
    let jsonl_path = out.join("experiments.jsonl");
    let mut jsonl = BufWriter::new(File::create(&jsonl_path).map_err(FileError::on("create", &jsonl_path))?);
    let the_plan = plan::plan(config);
    let runner = Runner::new(config, bindir);
    let total = (config.experiments + 1) * config.replicas.len();
    let bar = if progress && std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:36}] {pos}/{len} ETA {eta} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut records = Vec::with_capacity(config.experiments * config.replicas.len());
    let mut first_golden: Option<(usize, Vec<Vec<u8>>)> = None;
    for &n in &config.replicas {
        let batch_began = Instant::now();
        bar.set_message(format!("N={n}: golden run"));
        let golden = runner.golden(n).await?;
        if let Some((m, g)) = &first_golden {
            if *g != golden {
                return Err(GoldenError::Differ { first: *m, second: n }.into());
            }
        } else {
            first_golden = Some((n, golden.clone()));
        }
        bar.inc(1);
        for injection in &the_plan {
            bar.set_message(format!("N={n}: #{} {}", injection.experiment, injection.kind));
            let record = runner.experiment(n, &golden, injection).await?;
            let line = serde_json::to_string(&record).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            writeln!(jsonl, "{line}").and_then(|()| jsonl.flush()).map_err(FileError::on("write", &jsonl_path))?;
            records.push(record);
            bar.inc(1);
        }
        if bar.is_hidden() && progress {
            eprintln!(
                "resh campaign: {n} replica(s): {} experiments done in {:.0} s ({:.0} s in all)",
                config.experiments,
                batch_began.elapsed().as_secs_f64(),
                began.elapsed().as_secs_f64()
            );
        }
    }
    bar.finish_and_clear();
    let runtime = began.elapsed();
    let summary = report::summary_md(config, &records, runtime);
    let svg = report::outcomes_svg(config, &records)?;
    for (name, text) in
        [("summary.csv", report::summary_csv(config, &records)), ("summary.md", summary.clone()), ("outcomes.svg", svg)]
    {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(FileError::on("write", &path))?;
    }
    Ok(Report { records, dir: out.to_path_buf(), summary, runtime })
}

/// Runs `resh campaign`: prints the summary on standard output, errors on standard error.
pub fn main(args: &CampaignArgs) -> ExitCode {
    let mut config = match CampaignConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("resh: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(m) = args.experiments {
        if m == 0 || m > config::MAX_EXPERIMENTS {
            eprintln!("resh: --experiments: must be between 1 and {}, not {m}", config::MAX_EXPERIMENTS);
            return ExitCode::from(2);
        }
        config.experiments = m;
    }
    let Some(out) = args.out.clone().or_else(|| config.out.clone()) else {
        eprintln!(
            "resh: campaign: say where the report goes: --out DIR, or `out = \"DIR\"` in {}",
            args.config.display()
        );
        return ExitCode::from(2);
    };
    let bindir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("resh: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&config, &out, bindir, true)) {
        Ok(report) => {
            print!("{}", report.summary);
            println!(
                "\nresh campaign: {} experiments in {:.0} s; report in {}",
                report.records.len(),
                report.runtime.as_secs_f64(),
                report.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("resh: campaign: {e}");
            ExitCode::FAILURE
        }
    }
}
