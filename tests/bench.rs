//! `resh bench`, briefly: the command runs its targets as real processes and reports what the
//! documentation says it reports. Figures are not asserted beyond "something was served": timed
//! tests on a shared machine would be flaky, and the bench is for people to read.
use std::process::Command;

use resh_e2e::binary;

#[test]
fn a_short_bench_reports_every_figure_in_json() {
    let out = Command::new(binary("resh"))
        .args(["bench", "--seconds", "0.5", "--warmup", "0.1", "--rounds", "1", "-c", "4", "--json"])
        .args(["--only", "direct,resh1,ordered3", "--workloads", "resp,echo64", "--idle-sessions", "20"])
        .output()
        .expect("run resh bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "resh bench failed:\n{stderr}\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    let results = report["results"].as_array().expect("results");
    // Two workloads, three targets each; ordered mode does not apply to echo.
    assert_eq!(results.len(), 6, "{report}");
    for r in results {
        let (workload, target) = (r["workload"].as_str().unwrap_or(""), r["target"].as_str().unwrap_or(""));
        if workload == "echo64" && target == "ordered3" {
            assert!(r["median"].is_null() && r["note"].as_str().is_some_and(|n| n.contains("n/a")), "{r}");
            continue;
        }
        let m = &r["median"];
        assert!(m["throughput"].as_f64().is_some_and(|t| t > 0.0), "{workload}/{target}: {r}");
        assert_eq!(m["errors"], 0, "{workload}/{target}: {r}");
        for key in ["p50_us", "p99_us", "p999_us", "total_cpu_us", "loadgen_cores"] {
            assert!(m[key].as_f64().is_some(), "{workload}/{target}: no {key}: {r}");
        }
        if target == "direct" {
            assert!(m["proxy_cpu_us"].is_null(), "{r}");
        } else {
            assert!(m["proxy_cpu_us"].as_f64().is_some(), "{r}");
            assert!(m["proxy_peak_rss_kib"].as_u64().is_some_and(|k| k > 0), "{r}");
        }
    }
    let idle = &report["idle"];
    assert_eq!(idle["sessions"], 20, "{report}");
    assert!(idle["bytes_per_session"].as_f64().is_some(), "{report}");
}

#[test]
fn unknown_targets_and_workloads_are_refused() {
    let out = Command::new(binary("resh")).args(["bench", "--only", "nginx"]).output().expect("run resh bench");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--only: unknown target `nginx`"));
}

/// The http workload: wrk against nginx directly and through resh's HTTP mode with three
/// replicas; wrk gives no 99.9th percentile, and says so as null.
#[test]
fn the_http_workload_runs_wrk_against_nginx_and_resh() {
    let out = Command::new(binary("resh"))
        .args(["bench", "--seconds", "1", "--warmup", "0", "--rounds", "1", "-c", "4", "--json"])
        .args(["--only", "direct,resh3", "--workloads", "http", "--idle-sessions", "0"])
        .output()
        .expect("run resh bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "resh bench failed:\n{stderr}\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{report}");
    for r in results {
        assert_eq!(r["workload"], "http", "{r}");
        let m = &r["median"];
        assert!(m["throughput"].as_f64().is_some_and(|t| t > 0.0), "{r}");
        assert_eq!(m["errors"], 0, "{r}");
        assert!(m["p50_us"].as_f64().is_some_and(|p| p > 0.0) && m["p999_us"].is_null(), "{r}");
    }
}
