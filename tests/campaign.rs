//! `resh campaign` end to end: a small campaign (40 experiments, with 3 replicas and with the
//! 1-replica baseline) against real `resh-echo` replicas, run twice with the same seed.
use std::collections::BTreeMap;
use std::process::Command;

use resh_e2e::{binary, workspace, TempDir};
use serde_json::Value;

const CAMPAIGN: &str = r#"
seed = 31337
experiments = 40
replicas = [3, 1]
kinds = ["outflip", "inflip", "memflip", "crash", "hang", "delay"]

[service]
command = ["{bindir}/resh-echo", "--port", "{port}"]

[workload]
sessions = 2
requests = 6
request_bytes = 200
gap_ms = 3
timeout_ms = 5000

[faults]
hang_ms = [100, 600]
delay_ms = [50, 600]

[resh]
lag_timeout_ms = 250
settle_ms = 2000
"#;

struct Run {
    lines: Vec<Value>,
    csv: String,
    md: String,
    svg: String,
}

fn campaign(dir: &TempDir, name: &str) -> Run {
    let config = dir.path().join("campaign.toml");
    std::fs::write(&config, CAMPAIGN).expect("write campaign.toml");
    let out = dir.path().join(name);
    let run = Command::new(binary("resh"))
        .args(["campaign", "-c"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run resh campaign");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "resh campaign failed: {stderr}");
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let lines = read("experiments.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line ({e}): {l}")))
        .collect();
    Run { lines, csv: read("summary.csv"), md: read("summary.md"), svg: read("outcomes.svg") }
}

fn of(run: &Run, replicas: u64) -> Vec<&Value> {
    run.lines.iter().filter(|l| l["replicas"] == replicas).collect()
}

fn outcome(l: &Value) -> &str {
    l["outcome"].as_str().unwrap_or("?")
}

#[test]
fn voting_masks_what_reaches_the_client_without_it_and_the_seed_fixes_the_plan() {
    let dir = TempDir::new("campaign");
    let first = campaign(&dir, "first");
    assert_eq!(first.lines.len(), 80);
    let (three, one) = (of(&first, 3), of(&first, 1));
    assert_eq!((three.len(), one.len()), (40, 40));

    // With voting, no wrong byte ever reached the client.
    let sdc3: Vec<&&Value> = three.iter().filter(|l| outcome(l) == "sdc").collect();
    assert!(sdc3.is_empty(), "sdc with 3 replicas: {sdc3:?}");
    // Every stream flip that fired was caught and named by the voter.
    for l in &three {
        let kind = l["injection"]["kind"].as_str().unwrap_or("");
        if (kind == "outflip" || kind == "inflip") && l["fired"]["status"] == "fired" {
            assert_eq!(outcome(l), "masked", "{l}");
            assert_eq!(l["faults"][0]["replica"], l["target"], "{l}");
            assert!(l["detection_latency_ms"].is_number(), "{l}");
        }
    }
    // Without voting, the same flips reach the client.
    let flips1: Vec<&&Value> =
        one.iter().filter(|l| l["injection"]["kind"] == "outflip" && l["fired"]["status"] == "fired").collect();
    assert!(!flips1.is_empty(), "no outflip fired with 1 replica");
    for l in &flips1 {
        assert_eq!(outcome(l), "sdc", "{l}");
        let wrong = l["sessions"].as_array().and_then(|s| s.iter().find(|s| s["first_wrong_byte"].is_number()));
        assert!(wrong.is_some(), "an sdc names the first wrong byte: {l}");
    }
    // Crashes: masked with voting (or, when the supervisor restarted the replica before any
    // session used it, without effect), never masked without.
    for l in three.iter().filter(|l| l["injection"]["kind"] == "crash") {
        assert!(matches!(outcome(l), "masked" | "no-effect"), "{l}");
        assert_eq!(l["target_crashed"], true);
    }
    assert!(one.iter().filter(|l| l["injection"]["kind"] == "crash").all(|l| outcome(l) != "masked"));

    // The summary agrees with the lines: one row per replicas × kind × outcome.
    let mut rows = first.csv.lines();
    assert_eq!(rows.next(), Some("replicas,kind,outcome,count"));
    let counts: BTreeMap<(String, String, String), u64> = rows
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            assert_eq!(f.len(), 4, "{r}");
            ((f[0].into(), f[1].into(), f[2].into()), f[3].parse().expect("count"))
        })
        .collect();
    assert_eq!(counts.len(), 2 * 6 * 5);
    for l in &first.lines {
        let key =
            (l["replicas"].to_string(), l["injection"]["kind"].as_str().unwrap_or("").to_string(), outcome(l).into());
        assert!(counts.get(&key).is_some_and(|&c| c > 0), "{key:?} missing from summary.csv");
    }
    for n in ["3", "1"] {
        let total: u64 = counts.iter().filter(|((r, _, _), _)| r == n).map(|(_, c)| c).sum();
        assert_eq!(total, 40);
    }
    let sdc1: u64 = counts.iter().filter(|((r, _, o), _)| r == "1" && o == "sdc").map(|(_, c)| c).sum();
    assert!(sdc1 >= 1);
    assert!(first.md.contains("## What voting buys") && first.md.contains("| outflip |"), "{}", first.md);
    assert!(first.md.contains("## Client-visible time of the workload, by outcome"), "{}", first.md);
    assert!(first.lines.iter().all(|l| l["workload_ms"].as_f64().is_some_and(|ms| ms > 0.0)));
    // The chart lists the replica counts in the configuration's order (3, then 1), as the tables.
    let (n3, n1) = (first.svg.find("N=3"), first.svg.find("N=1"));
    assert!(n3.zip(n1).is_some_and(|(a, b)| a < b), "N=3 should come before N=1 in the chart");
    assert!(first.svg.starts_with("<svg") && first.svg.contains("N=1") && first.svg.contains("outflip"));

    // The same seed gives the same injections.
    let second = campaign(&dir, "second");
    let plan = |r: &Run| {
        r.lines.iter().map(|l| (l["replicas"].clone(), l["injection"].clone(), l["target"].clone())).collect::<Vec<_>>()
    };
    assert_eq!(plan(&first), plan(&second));
    // And the same bits: stream flips land at the same places relative to where they fired.
    let bits = |l: &Value| -> Vec<(u64, u64)> {
        let flips = l["fired"]["effect"]["flips"].as_array().cloned().unwrap_or_default();
        let base = flips.iter().filter_map(|f| f["offset"].as_u64()).min().unwrap_or(0);
        flips.iter().map(|f| (f["offset"].as_u64().unwrap_or(0) - base, f["bit"].as_u64().unwrap_or(0))).collect()
    };
    for (a, b) in first.lines.iter().zip(&second.lines) {
        assert_eq!(bits(a), bits(b), "{a}\n{b}");
        assert_eq!(a["record"]["seed"], b["record"]["seed"]);
    }
}

#[test]
fn a_bad_campaign_file_names_every_key() {
    let dir = TempDir::new("campaign-bad");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "seed = 1\nexperiments = 0\nreplicas = []\n[service]\ncommand = [\"x\"]\n").expect("write");
    let out = Command::new(binary("resh")).args(["campaign", "-c"]).arg(&config).output().expect("run resh campaign");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["experiments:", "replicas:", "service.command: must pass {port}"] {
        assert!(stderr.contains(key), "{key} not in: {stderr}");
    }
}

#[test]
fn the_shipped_example_is_valid_and_complete() {
    let c = resh::campaign::CampaignConfig::load(&workspace().join("examples/campaign.toml")).expect("valid example");
    assert_eq!(c.replicas, [3, 1]);
    assert_eq!(c.kinds.len(), 6);
    assert!(c.service.command[0].ends_with("/resh-echo"));
}
