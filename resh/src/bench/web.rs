//! The `http` workload: wrk (Debian's, a real HTTP client) against nginx serving the web
//! demo's site, directly, through HAProxy in `mode http`, and through resh in HTTP mode with
//! one and three nginx replicas, and in HTTP ordered mode with three (identical copies, as in the other workloads, so that the
//! figures are resh's cost, not the spread between diverse servers).
//!
//! Each connection asks for `/api/products/3` (a 62-byte JSON answer) with keep-alive, one
//! request in flight; wrk reports the throughput and the latency percentiles (50, 75, 90, 99:
//! it has no 99.9th). Errors are wrk's socket errors and non-2xx answers.
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::procs::{self, Proc, ProcError};
use super::{median, write_config, BenchArgs, BenchError, Env, Outcome, Sample};
use crate::webdemo;

/// The path every request asks for.
pub const PATH: &str = "/api/products/3";

/// One running target.
struct Target {
    name: String,
    addr: SocketAddr,
    proxy: Option<u32>,
    backends: Vec<u32>,
}

/// Runs the `http` workload against every target, interleaved, as the other workloads are.
pub(super) fn run(
    env: &Env,
    args: &BenchArgs,
    targets: &[&'static str],
    notes: &mut Vec<String>,
) -> Result<Vec<Outcome>, BenchError> {
    let outcome = |target: &str, note: String| Outcome {
        workload: "http".into(),
        target: target.into(),
        note: Some(note),
        rounds: Vec::new(),
        median: None,
    };
    let (Some(nginx), Some(wrk)) = (procs::find_program("nginx"), procs::find_program("wrk")) else {
        notes.push("the http workload needs nginx and wrk (apt-get install nginx-light wrk): skipped".into());
        return Ok(targets.iter().map(|t| outcome(t, "nginx or wrk not installed".into())).collect());
    };
    if args.requests.is_some() {
        notes.push("the http workload runs for --seconds (wrk has no request count)".into());
    }
    let work = env.dir.join("web");
    let site = work.join("site");
    webdemo::write_site(&site)?;
    let template = webdemo::nginx_template(&work, &site)?;

    let mut procs: Vec<Proc> = Vec::new();
    let mut running: Vec<Target> = Vec::new();
    let mut unavailable: Vec<(&str, String)> = Vec::new();
    let port = procs::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let text = std::fs::read_to_string(&template).map_err(crate::error::FileError::on("read", &template))?;
    let conf = work.join("nginx-direct.conf");
    write_config(&conf, text.replace("@PORT@", &port.to_string()))?;
    let mut direct = Proc::spawn(
        "nginx",
        Command::new(&nginx).arg("-p").arg(&work).arg("-c").arg(&conf),
        &env.dir.join("nginx-direct.log"),
    )?;
    procs::wait_listening(addr, &mut direct, Duration::from_secs(10))?;
    let direct_pid = direct.pid();
    procs.push(direct);
    for &name in targets {
        match name {
            "direct" => running.push(Target { name: name.into(), addr, proxy: None, backends: vec![direct_pid] }),
            "haproxy" => match &env.bins.haproxy {
                None => unavailable.push((name, "haproxy not installed".into())),
                Some(haproxy) => {
                    let (proc, front) = start_haproxy(env, haproxy, addr)?;
                    running.push(Target {
                        name: name.into(),
                        addr: front,
                        proxy: Some(proc.pid()),
                        backends: vec![direct_pid],
                    });
                    procs.push(proc);
                }
            },
            _ => {
                let n = if name == "resh1" { 1 } else { 3 };
                let mode = if name == "ordered3" { "ordered" } else { "stream" };
                let builds = std::iter::once((name.to_string(), &env.bins.resh))
                    .chain(env.bins.baseline.iter().map(|b| (format!("{name}@base"), b)));
                for (label, binary) in builds {
                    let mut config = format!(
                        "listen = \"127.0.0.1:0\"\nmax_sessions = 16384\n[vote]\nmode = \"{mode}\"\nprotocol = \"http\"\n\
                         [session]\nidle_timeout_ms = 600000\n[admin]\nlisten = \"\"\n",
                    );
                    for i in 1..=n {
                        config.push_str(&format!(
                            "[[replica]]\nname = \"r{i}\"\ncommand = {}\n",
                            webdemo::nginx_command(&template, &work)
                        ));
                    }
                    let path = env.dir.join(format!("{label}-web.toml"));
                    write_config(&path, config)?;
                    let resh = procs::start_resh(
                        binary,
                        &label,
                        &path,
                        env.threads,
                        &env.dir.join(format!("{label}-web.log")),
                    )?;
                    let pid = resh.proc.pid();
                    running.push(Target {
                        name: label,
                        addr: resh.clients,
                        proxy: Some(pid),
                        backends: procs::children(pid),
                    });
                    procs.push(resh.proc);
                }
            }
        }
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); running.len()];
    let mut failures: Vec<Option<String>> = vec![None; running.len()];
    for round in 0..args.rounds {
        for t in (0..running.len()).map(|k| (k + round) % running.len()) {
            if failures[t].is_some() {
                continue;
            }
            let target = &running[t];
            if !args.json {
                eprintln!("resh bench: round {}/{}: http against {}", round + 1, args.rounds, target.name);
            }
            match measure(args, &wrk, target) {
                Ok(sample) => samples[t].push(sample),
                Err(e) => {
                    notes.push(format!("http against {}: {e}", target.name));
                    failures[t] = Some(e);
                }
            }
        }
        for p in &mut procs {
            p.check_alive()?;
        }
    }
    let mut out = Vec::new();
    for &name in targets {
        let mut found = false;
        for (t, target) in running.iter().enumerate() {
            if target.name != name && target.name.strip_suffix("@base") != Some(name) {
                continue;
            }
            found = true;
            let rounds = std::mem::take(&mut samples[t]);
            let note = failures[t].take().map(|e| format!("failed: {e}"));
            let median = (!rounds.is_empty()).then(|| median(&rounds));
            out.push(Outcome { workload: "http".into(), target: target.name.clone(), note, rounds, median });
        }
        if !found {
            let note =
                unavailable.iter().find(|(n, _)| *n == name).map_or_else(|| "no result".into(), |(_, w)| w.clone());
            out.push(outcome(name, note));
        }
    }
    Ok(out)
}

/// HAProxy in `mode http` (keep-alive on both sides, its default) in front of `backend`.
fn start_haproxy(env: &Env, haproxy: &Path, backend: SocketAddr) -> Result<(Proc, SocketAddr), ProcError> {
    let port = procs::free_port()?;
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let config = format!(
        "global\n    nbthread {threads}\n    maxconn 4096\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 300s\n    timeout server 300s\n    maxconn 4096\n\n\
         frontend bench\n    bind {front}\n    default_backend replica\n\n\
         backend replica\n    server r1 {backend}\n",
        threads = env.threads,
    );
    let path = env.dir.join("haproxy-web.cfg");
    write_config(&path, config)?;
    let mut proc = Proc::spawn(
        "haproxy",
        Command::new(haproxy).arg("-db").arg("-f").arg(&path),
        &env.dir.join("haproxy-web.log"),
    )?;
    procs::wait_listening(front, &mut proc, Duration::from_secs(10))?;
    Ok((proc, front))
}

/// One wrk run against `target` (after an unmeasured warm-up run), with the CPU time and the
/// peak RSS around it.
fn measure(args: &BenchArgs, wrk: &Path, target: &Target) -> Result<Sample, String> {
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
        run(args.warmup.max(1.0))?;
    }
    let reset_ok = target.proxy.is_some_and(procs::reset_peak_rss);
    let probe = || {
        let proxy = target.proxy.and_then(procs::cpu_seconds);
        let backends: f64 = target.backends.iter().filter_map(|&p| procs::cpu_seconds(p)).sum();
        (proxy, proxy.unwrap_or(0.0) + backends, children_cpu_seconds().unwrap_or(0.0))
    };
    let before = probe();
    let started = std::time::Instant::now();
    let report = run(args.seconds)?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let after = probe();
    let parsed = parse_wrk(&report).ok_or_else(|| format!("cannot read wrk's report: {report}"))?;
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

/// The CPU time of this process's waited-for children (wrk), in seconds: cutime + cstime.
fn children_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of stat(5), i.e. 14 and 15 after the name.
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some((cutime + cstime) as f64 / 100.0)
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
