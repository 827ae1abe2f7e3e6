//! `resh-web`: our version of the N-version web service (beside nginx and lighttpd): a small
//! static site and a JSON API, written independently of the other two.
//!
//! Where nginx and lighttpd read files from disk per request and map `/api/products/3` to
//! `api/products/3.json` with their rewrite rules, this version loads the whole site into
//! memory at start and routes the API itself. It answers what the two are configured to
//! answer (the demo's configurations, `resh::webdemo`): the same content types, the site's
//! `404.html` with status 404, `index.html` for a directory, a 405 for other methods than GET
//! and HEAD. Its `Server`, `Date` and lack of `ETag`/`Last-Modified` differ from theirs: that
//! is the noise HTTP mode leaves out of the vote.
//!
//! It can carry a planted fault, for demos and tests (`--fault`):
//! - `wrong-price`: the API answers a product's price one cent higher (a software bug in this
//!   version; only `/api/products/...`);
//! - `oversized`: every API answer gets a 64 MiB body (a replica that floods);
//! - `slow-body`: every API answer's body trickles, 64 bytes every 200 ms (a replica that hangs
//!   mid-answer);
//!
//! and `--arm-on-signal` keeps the fault dormant until the process receives SIGUSR1.
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Demo web service, our version (static site and JSON API, in memory).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The site's directory (read whole at start).
    #[arg(long)]
    dir: PathBuf,
    /// A planted fault.
    #[arg(long, value_enum)]
    fault: Option<Fault>,
    /// Keep the fault dormant until SIGUSR1 arrives.
    #[arg(long)]
    arm_on_signal: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Fault {
    WrongPrice,
    Oversized,
    SlowBody,
}

struct Site {
    files: HashMap<String, Bytes>,
    fault: Option<Fault>,
    armed: AtomicBool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut files = HashMap::new();
    if let Err(e) = load(&args.dir, &args.dir, &mut files) {
        eprintln!("resh-web: cannot read the site {}: {e}", args.dir.display());
        return ExitCode::FAILURE;
    }
    let site = Arc::new(Site { files, fault: args.fault, armed: AtomicBool::new(!args.arm_on_signal) });
    if args.arm_on_signal {
        let site = Arc::clone(&site);
        let mut usr1 = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("resh-web: cannot wait for SIGUSR1: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(async move {
            if usr1.recv().await.is_some() {
                site.armed.store(true, Ordering::Relaxed);
            }
        });
    }
    let listener = match TcpListener::bind(("127.0.0.1", args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("resh-web: cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::FAILURE;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let site = Arc::clone(&site);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let site = Arc::clone(&site);
                async move { Ok::<_, Infallible>(site.answer(&request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Reads every file under `dir` into `files`, keyed by its path below `root` with `/`.
fn load(root: &Path, dir: &Path, files: &mut HashMap<String, Bytes>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            load(root, &path, files)?;
        } else {
            let key = path.strip_prefix(root).map_err(std::io::Error::other)?.to_string_lossy().replace('\\', "/");
            files.insert(key, Bytes::from(std::fs::read(&path)?));
        }
    }
    Ok(())
}

impl Site {
    fn answer(&self, request: &Request<Incoming>) -> Response<Answer> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = self.page(StatusCode::METHOD_NOT_ALLOWED, "405.html");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let path = request.uri().path().trim_start_matches('/');
        if path.split('/').any(|part| part == "..") {
            return self.page(StatusCode::NOT_FOUND, "404.html");
        }
        if let Some(api) = path.strip_prefix("api/") {
            return self.api(api);
        }
        let key = if path.is_empty() || path.ends_with('/') { format!("{path}index.html") } else { path.to_string() };
        match self.files.get(&key) {
            Some(body) => respond(StatusCode::OK, content_type(&key), Answer::Whole(Some(body.clone()))),
            None => self.page(StatusCode::NOT_FOUND, "404.html"),
        }
    }

    /// `/api/NAME` is the file `api/NAME.json`.
    fn api(&self, name: &str) -> Response<Answer> {
        let Some(body) = self.files.get(&format!("api/{name}.json")) else {
            return self.page(StatusCode::NOT_FOUND, "404.html");
        };
        let fault = self.fault.filter(|_| self.armed.load(Ordering::Relaxed));
        let body = match fault {
            Some(Fault::WrongPrice) if name.starts_with("products/") => Answer::Whole(Some(wrong_price(body))),
            Some(Fault::Oversized) => {
                Answer::Trickle { chunk: Bytes::from(vec![b' '; 1 << 16]), left: 1024, every: None }
            }
            Some(Fault::SlowBody) => Answer::Trickle {
                chunk: Bytes::from(vec![b' '; 64]),
                left: 600,
                every: Some(Box::pin(tokio::time::sleep(Duration::from_millis(200)))),
            },
            _ => Answer::Whole(Some(body.clone())),
        };
        respond(StatusCode::OK, "application/json", body)
    }

    fn page(&self, status: StatusCode, name: &str) -> Response<Answer> {
        let body = self.files.get(name).cloned().unwrap_or_else(|| Bytes::from(format!("{status}\n")));
        respond(status, "text/html; charset=utf-8", Answer::Whole(Some(body)))
    }
}

/// The planted bug: the first `"price": N` one higher.
fn wrong_price(body: &Bytes) -> Bytes {
    let text = String::from_utf8_lossy(body);
    let Some(at) = text.find("\"price\": ") else { return body.clone() };
    let start = at + "\"price\": ".len();
    let end = text[start..].find(|c: char| !c.is_ascii_digit()).map_or(text.len(), |n| start + n);
    let price: u64 = text[start..end].parse().unwrap_or(0);
    Bytes::from(format!("{}{}{}", &text[..start], price + 1, &text[end..]))
}

fn respond(status: StatusCode, content_type: &'static str, body: Answer) -> Response<Answer> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(hyper::header::SERVER, HeaderValue::from_static("resh-web"));
    response
}

/// The content types the demo's nginx and lighttpd configurations give too.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// A response body: whole, or chunks sent one at a time (the planted flood and trickle).
enum Answer {
    Whole(Option<Bytes>),
    Trickle { chunk: Bytes, left: u32, every: Option<Pin<Box<tokio::time::Sleep>>> },
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Answer::Whole(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            Answer::Trickle { chunk, left, every } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                if let Some(sleep) = every {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let next = sleep.deadline() + Duration::from_millis(200);
                    sleep.as_mut().reset(next);
                }
                *left -= 1;
                Poll::Ready(Some(Ok(Frame::data(chunk.clone()))))
            }
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Answer::Whole(Some(b)) => hyper::body::SizeHint::with_exact(b.len() as u64),
            Answer::Whole(None) => hyper::body::SizeHint::with_exact(0),
            Answer::Trickle { .. } => hyper::body::SizeHint::default(),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Answer::Whole(None) | Answer::Trickle { left: 0, .. })
    }
}
