//! The `http` workload's own parts: the web demo's site for nginx (the service; replicas are
//! identical copies, as in the other workloads, so that the figures are resh's cost, not the
//! spread between diverse servers), and wrk (Debian's, a real HTTP client) as the load
//! generator. The targets are run as for every workload (`run_group`): HAProxy in `mode
//! http`, resh in HTTP mode with one and three replicas, and in HTTP ordered mode with three.
//!
//! Each connection asks for `/api/products/3` (a 62-byte JSON answer) with keep-alive, one
//! request in flight; wrk reports the throughput and the latency percentiles (50, 75, 90, 99:
//! it has no 99.9th). Errors are wrk's socket errors and non-2xx answers.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::procs;
use super::{BenchArgs, MeasureError, Sample, Target};
use crate::error::FileError;
use crate::webdemo;

/// The path every request asks for.
pub const PATH: &str = "/api/products/3";

/// The web demo's site and nginx configuration, written once for the group's processes.
pub(super) struct Site {
    work: PathBuf,
    template: PathBuf,
}

impl Site {
    /// Writes the site and nginx's configuration template under `dir/web`.
    pub(super) fn write(dir: &Path) -> Result<Site, FileError> {
        let work = dir.join("web");
        let site = work.join("site");
        webdemo::write_site(&site)?;
        let template = webdemo::nginx_template(&work, &site)?;
        Ok(Site { work, template })
    }

    /// nginx's arguments to serve on `port` (its configuration for that port written first).
    pub(super) fn direct_args(&self, port: u16) -> Result<Vec<std::ffi::OsString>, FileError> {
        let text = std::fs::read_to_string(&self.template).map_err(FileError::on("read", &self.template))?;
        let conf = self.work.join("nginx-direct.conf");
        std::fs::write(&conf, text.replace("@PORT@", &port.to_string())).map_err(FileError::on("write", &conf))?;
        Ok(vec!["-p".into(), self.work.clone().into(), "-c".into(), conf.into()])
    }

    /// A replica's `command` (TOML): nginx on the port resh chooses.
    pub(super) fn replica_command(&self) -> String {
        webdemo::nginx_command(&self.template, &self.work)
    }
}

/// One wrk run against `target` (after an unmeasured warm-up run), with the CPU time and the
/// peak RSS around it.
pub(super) fn measure(args: &BenchArgs, wrk: Option<&Path>, target: &Target) -> Result<Sample, MeasureError> {
    let wrk = wrk.ok_or_else(|| MeasureError::Wrk("wrk is not installed".into()))?;
    let url = format!("http://{}{PATH}", target.addr);
    let connections = args.connections.to_string();
    // wrk takes whole seconds.
    let run = |seconds: f64| -> Result<String, String> {
        let out = Command::new(wrk)
            .args(["-t1", "-c", &connections, "-d", &format!("{}s", seconds.ceil().max(1.0) as u64), "--latency", &url])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", wrk.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(text)
    };
    if args.warmup > 0.0 {
        run(args.warmup.max(1.0)).map_err(MeasureError::Wrk)?;
    }
    let reset_ok = target.proxy.is_some_and(procs::reset_peak_rss);
    let probe = || {
        let proxy = target.proxy.and_then(procs::cpu_seconds);
        let backends: f64 = target.backends.iter().filter_map(|&p| procs::cpu_seconds(p)).sum();
        (proxy, proxy.unwrap_or(0.0) + backends, procs::children_cpu_seconds().unwrap_or(0.0))
    };
    let before = probe();
    let started = std::time::Instant::now();
    let report = run(args.seconds).map_err(MeasureError::Wrk)?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let after = probe();
    let parsed = parse_wrk(&report).ok_or_else(|| MeasureError::Wrk(format!("cannot read wrk's report: {report}")))?;
    let peak = target.proxy.and_then(|p| procs::status_kib(p, if reset_ok { "VmHWM" } else { "VmRSS" }));
    let requests = parsed.requests.max(1) as f64;
    Ok(Sample {
        throughput: parsed.throughput,
        requests: parsed.requests,
        errors: parsed.errors,
        p50_us: parsed.p50_us,
        p99_us: parsed.p99_us,
        p999_us: f64::NAN,
        mean_us: parsed.mean_us,
        proxy_cpu_us: match (before.0, after.0) {
            (Some(a), Some(b)) => Some((b - a) * 1e6 / requests),
            _ => None,
        },
        total_cpu_us: (after.1 - before.1) * 1e6 / requests,
        proxy_peak_rss_kib: peak,
        loadgen_cores: (after.2 - before.2) / elapsed,
    })
}

/// What a wrk report says.
#[derive(Debug, PartialEq)]
struct WrkReport {
    requests: u64,
    throughput: f64,
    errors: u64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Reads wrk's report (with `--latency`).
fn parse_wrk(text: &str) -> Option<WrkReport> {
    let duration_us = |s: &str| -> Option<f64> {
        let split = s.find(|c: char| c.is_ascii_alphabetic())?;
        let value: f64 = s[..split].parse().ok()?;
        let scale = match &s[split..] {
            "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" => 60e6,
            _ => return None,
        };
        Some(value * scale)
    };
    let mut report = WrkReport { requests: 0, throughput: 0.0, errors: 0, mean_us: 0.0, p50_us: 0.0, p99_us: 0.0 };
    let mut seen = 0;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", "Distribution"] => {}
            ["Latency", avg, ..] => report.mean_us = duration_us(avg)?,
            ["50%", v] => report.p50_us = duration_us(v)?,
            ["99%", v] => {
                report.p99_us = duration_us(v)?;
                seen += 1;
            }
            [n, "requests", "in", ..] => {
                report.requests = n.parse().ok()?;
                seen += 1;
            }
            ["Requests/sec:", v] => {
                report.throughput = v.parse().ok()?;
                seen += 1;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => report.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                report.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>();
            }
            _ => {}
        }
    }
    (seen == 3).then_some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let text = "Running 3s test @ http://127.0.0.1:8080/api/products/3\n  1 threads and 50 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.23ms  456.00us  10.00ms   90.00%\n    Req/Sec    20.00k     1.00k   22.00k    80.00%\n  Latency Distribution\n     50%  840.00us\n     75%    1.30ms\n     90%    1.50ms\n     99%    2.00ms\n  60000 requests in 3.00s, 20.00MB read\n  Non-2xx or 3xx responses: 5\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  20000.50\nTransfer/sec:      6.67MB\n";
        let r = parse_wrk(text);
        assert_eq!(
            r,
            Some(WrkReport {
                requests: 60000,
                throughput: 20000.5,
                errors: 8,
                mean_us: 1230.0,
                p50_us: 840.0,
                p99_us: 2000.0
            })
        );
        assert_eq!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused"), None);
    }
}
