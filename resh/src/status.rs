//! `resh status`: a running resh at a glance, in the terminal: its replicas (process state, vote
//! state in ordered mode, sessions, faults, restarts), the verdicts, and the recent faults, read
//! from `GET /status`. `--watch` redraws it every interval, as `top` does.
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::inject::get;

/// `resh status` arguments.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The admin API of the running resh.
    #[arg(long, env = "RESH_ADMIN", default_value = "http://127.0.0.1:9090", value_name = "URL")]
    pub admin: String,
    /// Redraw every interval until interrupted (Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    /// How often --watch redraws.
    #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..))]
    pub interval_ms: u64,
    /// With --watch: stop after this many views.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Print `/status` as JSON instead of the view.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
}

/// How many recent faults the view lists.
const RECENT: usize = 8;

/// Runs `resh status`.
pub fn main(args: &StatusArgs) -> ExitCode {
    let mut shown = 0u64;
    loop {
        let fetched = get(&args.admin, "/status", Duration::from_secs(5));
        let view = match fetched {
            Ok((200, body)) if args.json => {
                print!("{body}");
                return ExitCode::SUCCESS;
            }
            Ok((200, body)) => match serde_json::from_str::<Value>(&body) {
                Ok(status) => Ok(render(&status)),
                Err(e) => Err(format!("/status is not JSON: {e}")),
            },
            Ok((code, body)) => Err(format!("HTTP {code}: {}", body.trim_end())),
            Err(e) => Err(e.to_string()),
        };
        if args.watch {
            // Clear the screen and go home, then draw: the view replaces the last one.
            print!("\x1b[2J\x1b[H");
        }
        match view {
            Ok(text) => print!("{text}"),
            Err(e) if args.watch => println!("resh status: {e} (retrying)"),
            Err(e) => {
                eprintln!("resh status: {e}");
                return ExitCode::from(2);
            }
        }
        shown += 1;
        if !args.watch || args.count.is_some_and(|n| shown >= n) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms));
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// The view of one `/status` document.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "resh {} · {} mode · quorum {} · up {} · clients on {}",
        text(&status["version"]),
        text(&status["mode"]),
        match status["quorum_target"].as_u64() {
            // A reload raised it; it grows as the added replicas join.
            Some(target) => format!("{} (rising to {target})", text(&status["quorum"])),
            None => text(&status["quorum"]),
        },
        duration(status["uptime_seconds"].as_f64().unwrap_or(0.0)),
        text(&status["listen"]),
    );
    let sessions = &status["sessions"];
    let _ = writeln!(
        out,
        "sessions: {} active, {} total, {} refused · bytes: {} from clients, {} to clients",
        text(&sessions["active"]),
        text(&sessions["total"]),
        text(&sessions["refused"]),
        text(&status["bytes"]["from_clients"]),
        text(&status["bytes"]["to_clients"]),
    );
    if let Some(verdicts) = status["verdicts"].as_object() {
        let list: Vec<String> = verdicts.iter().map(|(k, v)| format!("{k} {}", text(v))).collect();
        let _ = writeln!(out, "verdicts: {}", list.join(", "));
    }
    let ordered = status["mode"] == "ordered";
    let mut rows = vec![vec![
        "REPLICA".to_string(),
        "VERSION".into(),
        "STATE".into(),
        if ordered { "VOTE".into() } else { String::new() },
        // The replica's lag: requests it owes (ordered), how far its output trails (stream).
        if ordered { "BEHIND".into() } else { "TRAIL MS".into() },
        "ANSWER MS".into(),
        "PID".into(),
        "INC".into(),
        "SESSIONS".into(),
        "RESTARTS".into(),
        "FAULTS".into(),
    ]];
    for r in status["replicas"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let faults: Vec<String> = r["faults"]
            .as_object()
            .map(|f| f.iter().filter(|(_, n)| n.as_u64().unwrap_or(0) > 0).map(|(k, n)| format!("{k} {n}")).collect())
            .unwrap_or_default();
        rows.push(vec![
            text(&r["name"]),
            text(&r["version"]),
            text(&r["state"]),
            if ordered { text(&r["vote"]["state"]) } else { String::new() },
            if ordered { text(&r["vote"]["behind"]) } else { millis(&r["trail_ms"]) },
            millis(if ordered { &r["vote"]["answer_ms"] } else { &r["answer_ms"] }),
            text(&r["pid"]),
            text(&r["incarnation"]),
            text(&r["sessions"]),
            text(&r["restarts"]),
            if faults.is_empty() { "-".into() } else { faults.join(", ") },
        ]);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    out.push('\n');
    for row in &rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).filter(|(_, w)| **w > 0).map(|(cell, w)| format!("{cell:<w$}", w = *w)).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    let recent = status["recent_faults"].as_array().map(Vec::as_slice).unwrap_or_default();
    out.push('\n');
    if recent.is_empty() {
        let _ = writeln!(out, "no faults");
    } else {
        let _ = writeln!(out, "recent faults (newest last):");
        for f in &recent[recent.len().saturating_sub(RECENT)..] {
            let _ = writeln!(out, "  {}  {}", text(&f["time"]), text(&f["detail"]));
        }
    }
    out
}

/// Milliseconds with two decimals, `-` for none yet.
fn millis(value: &serde_json::Value) -> String {
    value.as_f64().map_or_else(|| "-".into(), |ms| format!("{ms:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_names_replicas_states_and_faults() {
        let status = serde_json::json!({
            "version": "0.1.0", "mode": "stream", "quorum": 2, "uptime_seconds": 3725.0,
            "listen": "127.0.0.1:6380",
            "sessions": {"active": 1, "total": 9, "refused": 0},
            "bytes": {"from_clients": 10, "to_clients": 20},
            "verdicts": {"agreed": 8, "masked": 1, "undecidable": 0},
            "replicas": [
                {"name": "a", "version": "v1", "state": "ready", "pid": 10, "incarnation": 1, "sessions": 9,
                 "restarts": 0, "faults": {"diverged": 0}, "answer_ms": 1.234, "trail_ms": 0.5},
                {"name": "c", "version": "v3", "state": "quarantined", "pid": null, "incarnation": 2, "sessions": 9,
                 "restarts": 1, "faults": {"diverged": 1, "late": 0}}
            ],
            "recent_faults": [{"time": "2026-12-02T06:55:01.123Z", "detail": "replica c diverged at byte 10"}]
        });
        let view = render(&status);
        assert!(view.contains("stream mode · quorum 2 · up 1h02m"), "{view}");
        assert!(view.contains("verdicts: agreed 8, masked 1, undecidable 0"), "{view}");
        let c = view.lines().find(|l| l.starts_with("c ")).expect("row c");
        assert!(c.contains("quarantined") && c.contains("diverged 1") && !c.contains("late"), "{view}");
        assert!(view.contains("2026-12-02T06:55:01.123Z  replica c diverged at byte 10"), "{view}");
        assert!(!view.contains("VOTE"), "no vote column in stream mode: {view}");
        assert!(view.contains("TRAIL MS") && view.contains("ANSWER MS"), "{view}");
        let a = view.lines().find(|l| l.starts_with("a ")).expect("row a");
        assert!(a.contains("0.50") && a.contains("1.23"), "{view}");
    }

    #[test]
    fn ordered_mode_shows_the_vote_and_the_answer_times() {
        let status = serde_json::json!({
            "mode": "ordered", "replicas": [
                {"name": "r1", "state": "ready", "vote": {"state": "voting", "behind": 3, "answer_ms": 0.4567}},
                {"name": "r2", "state": "ready", "vote": {"state": "syncing", "behind": 0, "answer_ms": null}}
            ]
        });
        let view = render(&status);
        assert!(view.contains("VOTE") && view.contains("BEHIND") && view.contains("ANSWER MS"), "{view}");
        let r1 = view.lines().find(|l| l.starts_with("r1")).expect("r1");
        assert!(r1.contains("voting") && r1.contains(" 3 ") && r1.contains("0.46"), "{view}");
    }
}
