//! The campaign report: `summary.csv` (one row per replicas × kind × outcome), `summary.md`
//! (tables a person reads), `outcomes.svg` (outcomes per fault kind, each replica count side
//! by side). `experiments.jsonl` is written by the campaign loop as experiments finish.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use replicas::inject::InjectKind;

use super::classify::Outcome;
use super::config::CampaignConfig;
use super::runner::ExperimentRecord;

/// Counts and timings per (replica count, kind).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    /// Experiments by outcome.
    pub outcomes: BTreeMap<Outcome, usize>,
    /// Experiments in this cell.
    pub experiments: usize,
    /// Experiments whose target crashed.
    pub crashed: usize,
    /// Experiments whose target hung.
    pub hung: usize,
    /// Experiments whose injection was refused (e.g. the process was gone).
    pub refused: usize,
    /// Detection latencies, ms.
    pub detection_ms: Vec<f64>,
    /// Times to repair, ms.
    pub repair_ms: Vec<f64>,
}

impl Cell {
    /// Experiments with outcome `o`.
    pub fn count(&self, o: Outcome) -> usize {
        self.outcomes.get(&o).copied().unwrap_or(0)
    }

    fn add(&mut self, r: &ExperimentRecord) {
        *self.outcomes.entry(r.outcome).or_default() += 1;
        self.experiments += 1;
        self.crashed += usize::from(r.target_crashed);
        self.hung += usize::from(r.target_hung);
        self.refused += usize::from(r.error.is_some());
        self.detection_ms.extend(r.detection_latency_ms);
        self.repair_ms.extend(r.repair_ms);
    }
}

/// The tallies of a campaign, keyed by (replicas, kind); `None` as kind is the total.
pub fn tally(records: &[ExperimentRecord]) -> BTreeMap<(usize, Option<InjectKind>), Cell> {
    let mut cells: BTreeMap<(usize, Option<InjectKind>), Cell> = BTreeMap::new();
    for r in records {
        cells.entry((r.replicas, Some(r.injection.kind))).or_default().add(r);
        cells.entry((r.replicas, None)).or_default().add(r);
    }
    cells
}

/// `summary.csv`: `replicas,kind,outcome,count`, one row for every replica count × kind ×
/// outcome of the campaign (zeros included), in the campaign's order.
pub fn summary_csv(config: &CampaignConfig, records: &[ExperimentRecord]) -> String {
    let cells = tally(records);
    let mut out = String::from("replicas,kind,outcome,count\n");
    for &n in &config.replicas {
        for &kind in &config.kinds {
            let cell = cells.get(&(n, Some(kind)));
            for o in Outcome::ALL {
                let _ = writeln!(out, "{n},{kind},{},{}", o.name(), cell.map_or(0, |c| c.count(o)));
            }
        }
    }
    out
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] })
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.1}"))
}

/// `summary.md`: the headline (how many wrong answers with and without voting), then one
/// table per replica count.
pub fn summary_md(config: &CampaignConfig, records: &[ExperimentRecord], runtime: Duration) -> String {
    let cells = tally(records);
    let mut out = String::new();
    let _ = writeln!(out, "# Fault-injection campaign\n");
    let w = &config.workload;
    let _ = writeln!(
        out,
        "Seed {}, {} experiments per replica count ({} in all, {:.0} s). Service: `{}`. Workload: {} sessions × {} requests × {} bytes.\n",
        config.seed,
        config.experiments,
        records.len(),
        runtime.as_secs_f64(),
        config.service.command.join(" "),
        w.sessions,
        w.requests,
        w.request_bytes,
    );
    let _ = writeln!(out, "## What voting buys\n");
    let _ = writeln!(
        out,
        "| replicas | experiments | sdc (wrong bytes to the client) | fail-stop | timeout | masked | no-effect |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &config.replicas {
        let c = cells.get(&(n, None)).cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "| {n} | {} | {} | {} | {} | {} | {} |",
            c.experiments,
            c.count(Outcome::Sdc),
            c.count(Outcome::FailStop),
            c.count(Outcome::Timeout),
            c.count(Outcome::Masked),
            c.count(Outcome::NoEffect)
        );
    }
    // The same outcome can cost the client very different time: a hang masked by the vote
    // costs nothing, the same hang without voting stalls the client for as long as it lasts.
    let _ = writeln!(out, "\n## Client-visible time of the workload, by outcome\n");
    let _ = writeln!(out, "| replicas | outcome | experiments | median ms | max ms |");
    let _ = writeln!(out, "|---:|---|---:|---:|---:|");
    for &n in &config.replicas {
        for outcome in Outcome::ALL {
            let times: Vec<f64> =
                records.iter().filter(|r| r.replicas == n && r.outcome == outcome).map(|r| r.workload_ms).collect();
            if times.is_empty() {
                continue;
            }
            let max = times.iter().copied().fold(f64::NAN, f64::max);
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} | {} |",
                outcome.name(),
                times.len(),
                ms(median(&times)),
                ms(Some(max))
            );
        }
    }
    for &n in &config.replicas {
        let _ = writeln!(out, "\n## {n} replica{}\n", if n == 1 { " (no voting: the baseline)" } else { "s" });
        let _ = writeln!(
            out,
            "| kind | experiments | no-effect | masked | sdc | fail-stop | timeout | target crashed | target hung | refused | median detection ms | median repair ms |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let rows =
            config.kinds.iter().map(|k| (k.name(), cells.get(&(n, Some(*k))))).chain([("all", cells.get(&(n, None)))]);
        for (name, cell) in rows {
            let c = cell.cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.experiments,
                c.count(Outcome::NoEffect),
                c.count(Outcome::Masked),
                c.count(Outcome::Sdc),
                c.count(Outcome::FailStop),
                c.count(Outcome::Timeout),
                c.crashed,
                c.hung,
                c.refused,
                ms(median(&c.detection_ms)),
                ms(median(&c.repair_ms)),
            );
        }
    }
    out.push_str(
        "\n## How to read this\n\n\
         - **no-effect**: no replica output diverged and the client got exactly the golden run's bytes.\n\
         - **masked**: a replica diverged or failed, the voter outvoted it and named it; the client got the golden bytes.\n\
         - **sdc**: silent data corruption: the client received wrong bytes (or a normal close before the whole answer).\n\
         - **fail-stop**: a session was reset or refused, and every byte the client got was right.\n\
         - **timeout**: the workload did not finish within `workload.timeout_ms`.\n\
         - *target crashed*: the target's process exited (the crash itself, or a memflip that killed it); \
           *target hung*: it was stopped (hang) or the voter found it late; *refused*: the injection could not be done \
           (e.g. the process was gone), see `error` in experiments.jsonl.\n\
         - *detection*: from the fault taking effect to resh's first fault report; *repair*: until the target was \
           admitted again in a new incarnation.\n",
    );
    out
}

/// Outcome colours: grey, green, red, blue, orange.
fn colour(o: Outcome) -> RGBColor {
    match o {
        Outcome::NoEffect => RGBColor(158, 158, 158),
        Outcome::Masked => RGBColor(67, 160, 71),
        Outcome::Sdc => RGBColor(229, 57, 53),
        Outcome::FailStop => RGBColor(30, 136, 229),
        Outcome::Timeout => RGBColor(251, 140, 0),
    }
}

/// Why `outcomes.svg` could not be drawn (resh itself: the plotting library refused).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct PlotError(#[from] DrawingAreaErrorKind<io::Error>);

/// `outcomes.svg`: for every fault kind, one stacked bar per replica count (in the order of the
/// configuration, as the tables have them), stacked by outcome.
pub fn outcomes_svg(config: &CampaignConfig, records: &[ExperimentRecord]) -> Result<String, PlotError> {
    let cells = tally(records);
    let counts: Vec<usize> = config.replicas.clone();
    let kinds = &config.kinds;
    let tallest = cells.iter().filter(|((_, k), _)| k.is_some()).map(|(_, c)| c.experiments).max().unwrap_or(1).max(1);
    let mut svg = String::new();
    {
        let width = (140 + 130 * kinds.len() as u32).max(640);
        let root = SVGBackend::with_string(&mut svg, (width, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!(
            "Outcomes per fault kind (seed {}, {} experiments per replica count)",
            config.seed, config.experiments
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(48)
            // Headroom above the tallest bar keeps the legend off the bars.
            .build_cartesian_2d(0f64..kinds.len() as f64, 0usize..(tallest * 3).div_ceil(2) + 1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(0)
            .y_labels(10)
            .y_desc("experiments")
            .label_style(("sans-serif", 13))
            .draw()?;
        let slot = 0.8 / counts.len().max(1) as f64;
        for o in Outcome::ALL {
            let mut bars = Vec::new();
            for (k, kind) in kinds.iter().enumerate() {
                for (j, n) in counts.iter().enumerate() {
                    let Some(cell) = cells.get(&(*n, Some(*kind))) else { continue };
                    let below: usize = Outcome::ALL.iter().take_while(|x| **x != o).map(|x| cell.count(*x)).sum();
                    let here = cell.count(o);
                    if here == 0 {
                        continue;
                    }
                    let x0 = k as f64 + 0.1 + j as f64 * slot;
                    bars.push(Rectangle::new(
                        [(x0 + 0.02, below), (x0 + slot - 0.02, below + here)],
                        colour(o).filled(),
                    ));
                }
            }
            let c = colour(o);
            chart
                .draw_series(bars)?
                .label(o.name())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
        let small = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        let big = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (k, kind) in kinds.iter().enumerate() {
            for (j, n) in counts.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(k as f64 + 0.1 + (j as f64 + 0.5) * slot, 0));
                root.draw(&Text::new(format!("N={n}"), (px, py + 4), small.clone()))?;
            }
            let (px, py) = chart.backend_coord(&(k as f64 + 0.5, 0));
            root.draw(&Text::new(kind.name().to_string(), (px, py + 22), big.clone()))?;
        }
        root.present()?;
    }
    Ok(svg)
}
