//! The bench's table: one section per workload, one line per target, with ratios against the
//! service alone (`direct`) and against HAProxy.
use std::fmt::Write as _;

use super::{Outcome, Report, Sample};

/// `value / reference`, or a dash when either is missing.
fn ratio(value: Option<f64>, reference: Option<f64>) -> String {
    match (value, reference) {
        (Some(v), Some(r)) if r > 0.0 => format!("{:.2}", v / r),
        _ => "-".into(),
    }
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// The report as text tables.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let setup = &report.setup;
    let _ = writeln!(
        out,
        "resh bench: {} cpus, resh worker threads {} (= haproxy nbthread), c={}, {} round(s) of {}, warm-up {} s",
        setup["cpus"],
        setup["resh_threads"],
        setup["connections"],
        setup["rounds"],
        match setup["requests"].as_u64() {
            Some(n) => format!("{n} requests"),
            None => format!("{} s", setup["seconds"]),
        },
        setup["warmup_seconds"],
    );
    let _ = writeln!(out, "figures are medians over the rounds; x direct / x haproxy are ratios (throughput: higher is better, p50: lower is better)");
    let mut workloads: Vec<&str> = Vec::new();
    for o in &report.results {
        if !workloads.contains(&o.workload.as_str()) {
            workloads.push(&o.workload);
        }
    }
    for workload in workloads {
        let rows: Vec<&Outcome> = report.results.iter().filter(|o| o.workload == workload).collect();
        let find = |t: &str| rows.iter().find(|o| o.target == t).and_then(|o| o.median.as_ref());
        let direct = find("direct");
        let haproxy = find("haproxy");
        let _ = writeln!(out, "\n== {workload}");
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>6}",
            "target",
            "req/s",
            "x dir",
            "x hap",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "p50 xd",
            "p50 xh",
            "cpu/req",
            "all/req",
            "peak RSS",
            "errors"
        );
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>6}",
            "", "", "", "", "", "", "", "", "", "proxy us", "us", "MiB", ""
        );
        for o in rows {
            let Some(m) = &o.median else {
                let note = o.note.as_deref().unwrap_or("no result");
                let _ = writeln!(out, "{:<14} {note}", o.target);
                continue;
            };
            let t = |s: Option<&Sample>| s.map(|s| s.throughput);
            let p = |s: Option<&Sample>| s.map(|s| s.p50_us);
            let _ = writeln!(
                out,
                "{:<14} {:>9.0} {:>7} {:>7} {:>8.1} {:>8.1} {:>8} {:>7} {:>7} {:>9} {:>9.1} {:>9} {:>6}",
                o.target,
                m.throughput,
                ratio(Some(m.throughput), t(direct)),
                ratio(Some(m.throughput), t(haproxy)),
                m.p50_us,
                m.p99_us,
                opt(m.p999_us.is_finite().then_some(m.p999_us), 1),
                ratio(Some(m.p50_us), p(direct)),
                ratio(Some(m.p50_us), p(haproxy)),
                opt(m.proxy_cpu_us, 1),
                m.total_cpu_us,
                opt(m.proxy_peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
                m.errors,
            );
            if let Some(note) = &o.note {
                let _ = writeln!(out, "{:<14} note: {note}", "");
            }
        }
        let cores: Vec<f64> = report
            .results
            .iter()
            .filter(|o| o.workload == workload)
            .filter_map(|o| o.median.as_ref().map(|m| m.loadgen_cores))
            .collect();
        if let Some(max) = cores.iter().copied().reduce(f64::max) {
            let _ = writeln!(out, "(the load generator used up to {max:.2} of a core in these runs)");
        }
    }
    if let Some(idle) = &report.idle {
        let _ = writeln!(
            out,
            "\n== idle sessions (fresh resh, N=3, stream mode)\n{} sessions: RSS {} KiB before, {} KiB connected, {} KiB after one 64 B echo each\n\
             per idle session: {:.0} bytes connected, {:.0} bytes after an echo",
            idle.sessions,
            idle.rss_before_kib,
            idle.rss_connected_kib,
            idle.rss_after_echo_kib,
            idle.bytes_per_session,
            idle.bytes_per_session_after_echo,
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}
