//! `resh demo --web`: N-version programming for a web service.
//!
//! Three web servers written independently, nginx, lighttpd and our `resh-web` (the `demo`
//! crate), serve the same small site and JSON API behind resh in HTTP mode. They never answer
//! byte for byte alike (`Server`, `Date`, `ETag`, `Last-Modified`, `Accept-Ranges`, header
//! order and case): HTTP mode's default vote leaves that noise out. A workload of clients
//! checks every page, API answer and a 2 MB file it gets; half-way a bug is planted in
//! resh-web (its API starts answering a price one cent too high). The clients never see it:
//! resh outvotes, names and restarts resh-web.
//!
//! [`prepare`] writes the site, the nginx and lighttpd configurations and the resh
//! configuration; the end-to-end tests (`tests/http_nversion.rs`) run the same setup with
//! curl and wrk.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use netdomain::config::{Config, ConfigError};
use netdomain::InProcessError;

use crate::demo::{print_result, run_workload, DemoOptions, PlantError, Tally};
use crate::error::FileError;

/// The site every version serves (`demo/web/site`), carried in the binary.
pub const SITE: &[(&str, &str)] = &[
    ("index.html", include_str!("../../demo/web/site/index.html")),
    ("about.html", include_str!("../../demo/web/site/about.html")),
    ("style.css", include_str!("../../demo/web/site/style.css")),
    ("404.html", include_str!("../../demo/web/site/404.html")),
    ("api/products.json", include_str!("../../demo/web/site/api/products.json")),
    ("api/products/1.json", include_str!("../../demo/web/site/api/products/1.json")),
    ("api/products/2.json", include_str!("../../demo/web/site/api/products/2.json")),
    ("api/products/3.json", include_str!("../../demo/web/site/api/products/3.json")),
    ("api/products/4.json", include_str!("../../demo/web/site/api/products/4.json")),
    ("api/products/5.json", include_str!("../../demo/web/site/api/products/5.json")),
];

/// The 2 MB file of the site, made at [`prepare`] (not kept in the repository).
pub const CATALOGUE: &str = "files/catalogue.bin";

const NGINX_CONF: &str = include_str!("../../demo/web/nginx.conf.in");
const LIGHTTPD_CONF: &str = include_str!("../../demo/web/lighttpd.conf.in");

/// The 2 MB file's bytes: the same for every version, from a fixed seed.
pub fn catalogue() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..2_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Why the web demo could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum WebDemoError {
    /// The system: a file or directory of the demo could not be made.
    #[error(transparent)]
    File(#[from] FileError),
    /// The setup: a program the demo runs is missing.
    #[error("{0}")]
    Missing(String),
    /// resh itself: the configuration the demo wrote is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// resh could not be started.
    #[error("cannot start resh: {0}")]
    Start(#[from] InProcessError),
    /// The versions: not all of them started.
    #[error("only {ready} of {total} versions started (see the log)")]
    NotReady {
        /// Versions ready.
        ready: usize,
        /// Versions configured.
        total: usize,
    },
    /// The bug could not be planted in resh-web.
    #[error(transparent)]
    Plant(#[from] PlantError),
}

/// Writes the three versions' sites and the nginx and lighttpd configurations under `work`,
/// and returns a resh configuration (HTTP mode, clients and admin API on free loopback ports)
/// for nginx, lighttpd and resh-web (`resh_web`, with `web_args`: a planted fault, say).
pub fn prepare(work: &Path, resh_web: &Path, web_args: &[&str]) -> Result<String, FileError> {
    for version in ["nginx", "lighttpd", "resh-web"] {
        write_site(&work.join(version).join("site"))?;
    }
    let nginx = nginx_template(work, &work.join("nginx/site"))?;
    let lighttpd = work.join("lighttpd.conf.in");
    write(&lighttpd, fill(LIGHTTPD_CONF, work, &work.join("lighttpd/site")).as_bytes())?;
    let quote = |p: &Path| format!("{:?}", p.display().to_string());
    let mut web = vec![quote(resh_web), "\"--port\"".into(), "\"{port}\"".into(), "\"--dir\"".into()];
    web.push(quote(&work.join("resh-web/site")));
    web.extend(web_args.iter().map(|a| format!("{a:?}")));
    Ok(format!(
        r#"listen = "127.0.0.1:0"
[vote]
protocol = "http"
[admin]
listen = "127.0.0.1:0"
[[replica]]
name = "nginx"
command = {nginx}
[[replica]]
name = "lighttpd"
command = {lighttpd}
[[replica]]
name = "resh-web"
command = [{web}]
"#,
        nginx = nginx_command(&nginx, work),
        lighttpd = port_shell(&lighttpd, "lighttpd -D -f"),
        web = web.join(", "),
    ))
}

/// Writes the site (and its 2 MB file) into `site`.
pub fn write_site(site: &Path) -> Result<(), FileError> {
    for (path, text) in SITE {
        write(&site.join(path), text.as_bytes())?;
    }
    write(&site.join(CATALOGUE), &catalogue())
}

/// Writes `work/nginx.conf.in`, nginx's configuration serving `site` with `@PORT@` for its port
/// (and the directory nginx keeps its temporary files in); returns its path.
pub fn nginx_template(work: &Path, site: &Path) -> Result<PathBuf, FileError> {
    let temp = work.join("nginx-tmp");
    std::fs::create_dir_all(&temp).map_err(FileError::on("create", &temp))?;
    let path = work.join("nginx.conf.in");
    write(&path, fill(NGINX_CONF, work, site).as_bytes())?;
    Ok(path)
}

/// A replica's `command` (TOML) that runs nginx with `template` on the port resh chooses.
pub fn nginx_command(template: &Path, work: &Path) -> String {
    port_shell(template, &format!("nginx -p '{}' -c", work.display()))
}

fn fill(template: &str, work: &Path, site: &Path) -> String {
    template.replace("@WORK@", &work.display().to_string()).replace("@SITE@", &site.display().to_string())
}

/// nginx and lighttpd read their port from their configuration file: a shell writes one per
/// port resh chose ({port}), then becomes the server (exec), which resh then supervises.
/// (Debian keeps both in /usr/sbin, which a user's PATH may lack.)
fn port_shell(template: &Path, server: &str) -> String {
    let conf = template.with_extension("").display().to_string();
    let command = format!(
        "sed 's/@PORT@/{{port}}/g' '{}' > '{conf}-{{port}}' && PATH=$PATH:/usr/sbin exec {server} '{conf}-{{port}}'",
        template.display()
    );
    format!("[\"sh\", \"-c\", {command:?}]")
}

fn write(path: &Path, data: &[u8]) -> Result<(), FileError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(FileError::on("create", dir))?;
    }
    std::fs::write(path, data).map_err(FileError::on("write", path))
}

/// Runs the web demo in a fresh work directory; `Ok(true)` when it went as it should.
pub async fn run(options: DemoOptions) -> Result<bool, WebDemoError> {
    let work = std::env::temp_dir().join(format!("resh-web-demo-{}", std::process::id()));
    let result = run_in(&options, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run_in(options: &DemoOptions, work: &Path) -> Result<bool, WebDemoError> {
    for program in ["nginx", "lighttpd"] {
        if crate::bench::procs::find_program(program).is_none() {
            return Err(WebDemoError::Missing(format!(
                "{program} is not installed (Debian: apt-get install nginx-light lighttpd; ./scripts/demo.sh --web installs them)"
            )));
        }
    }
    let here = std::env::current_exe().map_err(|e| WebDemoError::Missing(format!("the resh binary: {e}")))?;
    let resh_web = here.parent().map(|d| d.join("resh-web")).unwrap_or_default();
    if !resh_web.is_file() {
        return Err(WebDemoError::Missing(format!(
            "{} not found next to resh: build the demo services with `cargo build -p demo`",
            resh_web.display()
        )));
    }
    let text = prepare(work, &resh_web, &["--fault", "wrong-price", "--arm-on-signal"])?;
    let config = Config::parse(&text, "the web demo configuration")?;
    println!("resh demo --web: three web servers written independently behind resh (HTTP mode)");
    println!("  version nginx     nginx, static files, rewrite /api/X to api/X.json");
    println!("  version lighttpd  lighttpd, the same with its own rules");
    println!("  version resh-web  ours (Rust, hyper): the site in memory, its own API routes");

    let resh = netdomain::InProcess::start(config).await?;
    let running = resh.running.clone();
    let supervisor = Arc::clone(&running.shared.supervisor);
    if supervisor.ready_count() < 3 {
        let ready = supervisor.ready_count();
        resh.stop(Duration::from_secs(10)).await;
        return Err(WebDemoError::NotReady { ready, total: 3 });
    }
    println!("  resh serves clients on http://{}/\n", running.clients);

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + options.duration;
    let clients: Vec<_> =
        (0..options.clients).map(|c| tokio::spawn(client(c, running.clients, deadline, Arc::clone(&tally)))).collect();
    let bug = ("resh-web", "resh-web now answers /api/products/N with a price one cent too high");
    let repaired = run_workload(&running, options, (started, &tally), clients, bug, "resh demo --web").await?;
    let status = supervisor.status();
    print_result(&tally, &status);
    let wrong = tally.wrong.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let caught = status.iter().any(|r| r.name == "resh-web" && r.faults.iter().any(|(k, n)| k == "diverged" && *n > 0));
    let false_faults = status.iter().any(|r| r.name != "resh-web" && r.faults.values().sum::<u64>() > 0);
    let ok = wrong == 0 && errors == 0 && caught && repaired && !false_faults;
    if ok {
        println!("\nthe planted bug was outvoted: clients only ever saw the majority's answers, and the");
        println!("servers' differences in Date, Server, ETag and the like were never taken for faults;");
        println!("resh named the faulty version and restarted it.");
    } else {
        println!(
            "\nthe demo did NOT go as expected (caught: {caught}, repaired: {repaired}, faults of a correct version: {false_faults})"
        );
    }
    if options.keep {
        println!(
            "\nresh keeps running: try `curl http://{}/api/products/3` (admin API: {}); Ctrl-C stops it",
            running.clients,
            running.admin.map(|a| format!("http://{a}/status")).unwrap_or_else(|| "off".into())
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    resh.stop(Duration::from_secs(10)).await;
    Ok(ok)
}

/// What a correct service answers to each request of the workload: (path, status, body).
fn workload() -> Vec<(String, u16, Vec<u8>)> {
    let file =
        |name: &str| SITE.iter().find(|(p, _)| *p == name).map(|(_, t)| t.as_bytes().to_vec()).unwrap_or_default();
    let mut requests = vec![
        ("/".to_string(), 200, file("index.html")),
        ("/about.html".to_string(), 200, file("about.html")),
        ("/style.css".to_string(), 200, file("style.css")),
        ("/api/products".to_string(), 200, file("api/products.json")),
        ("/no/such/page".to_string(), 404, file("404.html")),
    ];
    for id in 1..=5 {
        requests.push((format!("/api/products/{id}"), 200, file(&format!("api/products/{id}.json"))));
    }
    requests
}

/// One client: the workload in turn on one kept-alive connection (the 2 MB file every 50th
/// request), every answer checked.
async fn client(id: usize, addr: SocketAddr, deadline: Instant, tally: Arc<Tally>) -> Result<(), String> {
    let requests = workload();
    let catalogue = catalogue();
    let mut connection = HttpClient::connect(addr).await?;
    let mut n = id;
    while Instant::now() < deadline {
        n += 1;
        let (path, status, body) = if n % 50 == 0 {
            (format!("/{CATALOGUE}"), 200, &catalogue)
        } else {
            let (p, s, b) = &requests[n % requests.len()];
            (p.clone(), *s, b)
        };
        let (got_status, got_body) = connection.get(&path).await?;
        tally.requests.fetch_add(1, Ordering::Relaxed);
        if got_status != status || &got_body != body {
            tally.wrong.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "\nresh demo --web: GET {path} answered {got_status}: {}",
                String::from_utf8_lossy(&got_body[..got_body.len().min(200)])
            );
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 client on one kept-alive connection (resh frames its answers with
/// Content-Length).
struct HttpClient {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl HttpClient {
    /// Connects to `addr`.
    async fn connect(addr: SocketAddr) -> Result<HttpClient, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(HttpClient { stream, buffer: Vec::new() })
    }

    /// `GET path`: (status, body).
    async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: resh-demo\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await.map_err(|e| format!("cannot send GET {path}: {e}"))?;
        let head_end = loop {
            if let Some(i) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill(path).await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_string();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
            .ok_or_else(|| format!("GET {path}: an answer without Content-Length: {head}"))?;
        while self.buffer.len() < head_end + length {
            self.fill(path).await?;
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        Ok((status, body))
    }

    async fn fill(&mut self, path: &str) -> Result<(), String> {
        let mut chunk = [0u8; 65536];
        let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await;
        match read {
            Err(_) => Err(format!("GET {path}: no answer within 10 s")),
            Ok(Err(e)) => Err(format!("GET {path}: {e}")),
            Ok(Ok(0)) => Err(format!("GET {path}: connection closed")),
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_is_fixed_and_the_configuration_is_valid() {
        let a = catalogue();
        assert_eq!(a.len(), 2_000_000);
        assert_eq!(a, catalogue());
        let work = std::env::temp_dir().join(format!("resh-webdemo-unit-{}", std::process::id()));
        let text = prepare(&work, Path::new("/bin/true"), &["--fault", "wrong-price"]);
        let text = text.map_err(|e| e.to_string());
        let parsed = text.as_ref().map(|t| Config::parse(t, "test").map(|c| c.replicas.len()));
        assert!(matches!(parsed, Ok(Ok(3))), "{parsed:?}");
        assert!(std::fs::read(work.join("lighttpd/site/files/catalogue.bin")).is_ok_and(|b| b == a));
        let nginx = std::fs::read_to_string(work.join("nginx.conf.in")).unwrap_or_default();
        assert!(nginx.contains(&format!("root {}/nginx/site;", work.display())), "{nginx}");
        let _ = std::fs::remove_dir_all(&work);
    }
}
