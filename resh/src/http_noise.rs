//! `resh http-noise`: what differs between the replicas' HTTP responses, and the masks that
//! would leave it out of HTTP mode's vote.
//!
//! Sends each given path (GET, so that nothing changes on the replicas) to every replica
//! directly, `--rounds` times with `--pause-ms` between rounds (a clock that ticks in seconds
//! shows up then), and prints what [`netdomain::http::noise::analyse`] found: headers that
//! differ (and whether the default vote counts them), JSON fields, text, and what no mask should
//! cover; then an `[http]` snippet to review. The replicas come from a running resh's admin API
//! (`--admin`) or are given (`--replica name=host:port`).
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use netdomain::http::noise::{analyse, Report, Sample};

use crate::inject::get;

/// `resh http-noise` arguments.
#[derive(Args, Debug, Clone)]
pub struct HttpNoiseArgs {
    /// The paths to sample (GET), e.g. `/ /api/items/1`.
    #[arg(value_name = "PATH", default_value = "/")]
    pub paths: Vec<String>,
    /// The admin API of a running resh: its replicas are sampled.
    #[arg(long, env = "RESH_ADMIN", value_name = "URL", conflicts_with = "replica")]
    pub admin: Option<String>,
    /// A replica to sample, as NAME=HOST:PORT (repeat it; at least two).
    #[arg(long, value_name = "NAME=ADDR")]
    pub replica: Vec<String>,
    /// How many times each path is sent to each replica.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// The pause between rounds (a little over a second shows what changes every second).
    #[arg(long, default_value_t = 1100, value_name = "MS")]
    pub pause_ms: u64,
    /// A request header to send, as `Name: value` (repeat it).
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    pub headers: Vec<String>,
    /// How much of each body is compared.
    #[arg(long, default_value_t = 8 << 20, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// Print only the proposed `[http]` snippet.
    #[arg(long)]
    pub snippet: bool,
}

/// Why the sampling could not be done.
#[derive(Debug, thiserror::Error)]
pub enum HttpNoiseError {
    /// The user: the arguments.
    #[error("{0}")]
    Usage(String),
    /// The admin API could not tell the replicas.
    #[error("the admin API at {admin}: {why}")]
    Admin {
        /// Its URL.
        admin: String,
        /// What failed.
        why: String,
    },
    /// A replica could not be asked.
    #[error("replica {replica} ({addr}), GET {path}: {why}")]
    Replica {
        /// Its name.
        replica: String,
        /// Its address.
        addr: SocketAddr,
        /// The path.
        path: String,
        /// What failed.
        why: String,
    },
}

/// Runs `resh http-noise`.
pub fn main(args: &HttpNoiseArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("resh http-noise: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok((replicas, report)) => {
            if args.snippet {
                print!("{}", report.proposal());
            } else {
                print!("{}", render(&replicas, args.rounds, &report));
            }
            ExitCode::SUCCESS
        }
        Err(e @ HttpNoiseError::Usage(_)) => {
            eprintln!("resh http-noise: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("resh http-noise: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Samples the replicas and analyses their responses.
pub async fn run(args: &HttpNoiseArgs) -> Result<(Vec<(String, SocketAddr)>, Report), HttpNoiseError> {
    let replicas = replicas(args)?;
    let mut headers = Vec::new();
    for (i, h) in args.headers.iter().enumerate() {
        let Some((name, value)) = h.split_once(':') else {
            return Err(HttpNoiseError::Usage(format!("--header #{}: {h:?} is not `Name: value`", i + 1)));
        };
        let name = hyper::header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| HttpNoiseError::Usage(format!("--header {h:?}: {e}")))?;
        let value = hyper::header::HeaderValue::from_str(value.trim())
            .map_err(|e| HttpNoiseError::Usage(format!("--header {h:?}: {e}")))?;
        headers.push((name, value));
    }
    for path in &args.paths {
        if !path.starts_with('/') {
            return Err(HttpNoiseError::Usage(format!("{path:?} is not a path (a path starts with '/')")));
        }
    }
    let mut samples = Vec::new();
    for round in 0..args.rounds {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        }
        for path in &args.paths {
            for (name, addr) in &replicas {
                let (status, response_headers, body) =
                    fetch(*addr, path, &headers, args.max_body_bytes).await.map_err(|why| HttpNoiseError::Replica {
                        replica: name.clone(),
                        addr: *addr,
                        path: path.clone(),
                        why,
                    })?;
                samples.push(Sample {
                    replica: name.clone(),
                    request: format!("GET {path}"),
                    status,
                    headers: response_headers,
                    body,
                });
            }
        }
    }
    Ok((replicas, analyse(&samples)))
}

/// The replicas to sample: from `--replica`, or the admin API's `/status`.
fn replicas(args: &HttpNoiseArgs) -> Result<Vec<(String, SocketAddr)>, HttpNoiseError> {
    let mut out = Vec::new();
    if let Some(admin) = &args.admin {
        let failed = |why: String| HttpNoiseError::Admin { admin: admin.clone(), why };
        let body = match get(admin, "/status", Duration::from_secs(5)) {
            Ok((200, body)) => body,
            Ok((code, body)) => return Err(failed(format!("GET /status: HTTP {code}: {}", body.trim_end()))),
            Err(e) => return Err(failed(e.to_string())),
        };
        let status: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| failed(format!("/status is not JSON: {e}")))?;
        for r in status["replicas"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or("?").to_string();
            match r["addr"].as_str().and_then(|a| a.parse().ok()) {
                Some(addr) => out.push((name, addr)),
                None => {
                    eprintln!("resh http-noise: replica {name} has no address now (state {}); left out", r["state"])
                }
            }
        }
    } else {
        for given in &args.replica {
            let parsed = given.split_once('=').and_then(|(n, a)| Some((n.to_string(), a.parse::<SocketAddr>().ok()?)));
            match parsed {
                Some((name, addr)) if !name.is_empty() => out.push((name, addr)),
                _ => return Err(HttpNoiseError::Usage(format!("--replica {given:?} is not NAME=HOST:PORT"))),
            }
        }
    }
    if out.len() < 2 {
        return Err(HttpNoiseError::Usage(format!(
            "{} replica(s) to compare: give --admin URL of a running resh, or --replica NAME=ADDR at least twice",
            out.len()
        )));
    }
    Ok(out)
}

/// `GET path` on a new connection: (status, headers, body cut at `max_body`).
async fn fetch(
    addr: SocketAddr,
    path: &str,
    headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
    max_body: usize,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        for (name, value) in headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let (head, mut body) = response.into_parts();
        let mut body_bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
            if let Ok(data) = frame.into_data() {
                let room = max_body.saturating_sub(body_bytes.len());
                body_bytes.extend_from_slice(&data[..data.len().min(room)]);
                if room <= data.len() {
                    break;
                }
            }
        }
        let headers = head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        Ok::<_, String>((head.status.as_u16(), headers, body_bytes))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.map_err(|_| "no response within 10 s".to_string())?
}

/// The report for people.
pub fn render(replicas: &[(String, SocketAddr)], rounds: u32, report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let names: Vec<String> = replicas.iter().map(|(n, a)| format!("{n} ({a})")).collect();
    let _ = writeln!(
        out,
        "resh http-noise: {} request(s) x {rounds} round(s) to {}: {} responses compared\n",
        report.requests,
        names.join(", "),
        report.samples
    );
    let examples = |e: &[(String, String)]| e.iter().map(|(r, v)| format!("{r}: {v:?}")).collect::<Vec<_>>().join("  ");
    let requests = |r: &std::collections::BTreeSet<String>| {
        let shown: Vec<&str> = r.iter().take(3).map(String::as_str).collect();
        if r.len() > 3 {
            format!("{} and {} more", shown.join(", "), r.len() - 3)
        } else {
            shown.join(", ")
        }
    };
    if !report.headers.is_empty() {
        let _ = writeln!(out, "headers that differ:");
        for h in &report.headers {
            let vote = if h.counted { "VOTED by default" } else { "not voted" };
            let time = if h.changes_over_time { ", changes between rounds" } else { "" };
            let _ = writeln!(out, "  {:<24} {vote}{time}; on {}", h.name, requests(&h.requests));
            let _ = writeln!(out, "  {:<24} {}", "", examples(&h.examples));
        }
        out.push('\n');
    }
    for (title, list) in
        [("JSON fields that differ (mask_json):", &report.json), ("text that differs (mask_text):", &report.text)]
    {
        if !list.is_empty() {
            let _ = writeln!(out, "{title}");
            for b in list {
                let _ = writeln!(out, "  {:<24} on {}", b.mask, requests(&b.requests));
                let _ = writeln!(out, "  {:<24} {}", "", examples(&b.examples));
            }
            out.push('\n');
        }
    }
    if !report.disagreements.is_empty() {
        let _ = writeln!(out, "not noise: the replicas disagree (no mask proposed; check the replicas):");
        for d in &report.disagreements {
            let _ = writeln!(out, "  {}: {}", d.request, d.what);
        }
        out.push('\n');
    }
    if report.quiet_by_default() {
        let _ = writeln!(out, "with the default vote the replicas agree on every sample: no mask is needed.");
    } else {
        let _ = writeln!(out, "proposed configuration:\n");
        out.push_str(&report.proposal());
    }
    out
}
