//! The admin HTTP server (hyper, HTTP/1.1): `GET /health` (alive), `GET /ready` (a quorum
//! serves), `GET /status` (JSON), `GET /metrics` (Prometheus text format), `GET /injections`
//! (the injection log) and `POST /inject` (fault injection). It listens on loopback unless the
//! configuration allows more.
//!
//! It is bounded like the data port: at most [`MAX_CONNECTIONS`] connections at once (more wait
//! in the kernel's accept queue, holding no descriptor of resh's), request headers must arrive
//! within [`HEADER_TIMEOUT`], and a connection lives at most [`CONNECTION_LIFETIME`]. Half-sent
//! requests must not hold descriptors the data port needs.
//!
//! Mutating endpoints (`POST /inject`) need `Authorization: Bearer TOKEN` with the token from
//! `admin.token` or `admin.token_file`; without either they are disabled (403). A missing or
//! wrong token gets 401 and a warning in the log. Read-only endpoints need no token.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use replicas::inject::{self, InjectError, InjectRequest, RecordStatus};
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn};

use crate::server::Shared;

/// The largest `POST /inject` body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a request's headers may take to arrive (and an idle keep-alive connection may wait).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest an admin connection lives (`POST /inject` with `wait_ms` is the slowest request).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Serves admin requests on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, started: Instant) {
    // Said once at start; the token itself is looked up per request (a reload may change it).
    let _ = Auth::from_config(&shared.config().admin, true);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut said_full = false;
    loop {
        // Said once per time the limit is reached (again once half the slots are free).
        let free = slots.available_permits();
        if free == 0 && !said_full {
            warn!(limit = MAX_CONNECTIONS, "admin: connection limit reached; further connections wait");
            said_full = true;
        } else if free > MAX_CONNECTIONS / 2 {
            said_full = false;
        }
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                debug!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(req, &shared, started, peer).await) }
            });
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "admin connection ended with an error"),
                Err(_) => debug!(%peer, "admin connection closed: it lived the longest an admin connection may"),
            }
            drop(slot);
        });
    }
}

/// The token that mutating endpoints require; `None`: they are disabled.
struct Auth {
    token: Option<String>,
}

impl Auth {
    /// The token in force; `say` logs that mutating endpoints are off when there is none.
    fn from_config(admin: &crate::config::Admin, say: bool) -> Auth {
        match admin.resolve_token() {
            Ok(token) => {
                if token.is_none() && say {
                    info!("admin: mutating endpoints (POST /inject) are disabled: no admin.token or admin.token_file");
                }
                Auth { token }
            }
            Err(crate::config::Problem { key, reason }) => {
                // Validated at startup; the file may have gone since. Fail closed.
                error!(key, reason, "admin: cannot read the token; mutating endpoints are disabled");
                Auth { token: None }
            }
        }
    }

    /// `Ok` when the request carries the right bearer token; a refusal is logged.
    fn check(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<(), Denied> {
        let Some(token) = &self.token else { return Err(Denied::Disabled) };
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let why = match given {
            None => Denied::Missing,
            Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => return Ok(()),
            Some(_) => Denied::Wrong,
        };
        warn!(%peer, method = %req.method(), path = req.uri().path(), "admin: unauthorized request: {}", why.reason());
        Err(why)
    }
}

/// Why a mutating request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Denied {
    /// No token is configured: mutating endpoints are off.
    Disabled,
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not the configured one.
    Wrong,
}

impl Denied {
    fn reason(self) -> &'static str {
        match self {
            Denied::Disabled => "mutating endpoints are disabled",
            Denied::Missing => "missing bearer token",
            Denied::Wrong => "wrong bearer token",
        }
    }

    fn response(self) -> Response<Full<Bytes>> {
        if self == Denied::Disabled {
            return respond(
                StatusCode::FORBIDDEN,
                "text/plain",
                "mutating admin endpoints are disabled: set admin.token or admin.token_file in the configuration\n"
                    .into(),
            );
        }
        let mut response =
            respond(StatusCode::UNAUTHORIZED, "text/plain", format!("unauthorized: {}\n", self.reason()));
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"resh\""));
        response
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(req: Request<Incoming>, shared: &Shared, started: Instant, peer: SocketAddr) -> Response<Full<Bytes>> {
    let auth = || Auth::from_config(&shared.config().admin, false);
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/inject") => match auth().check(&req, peer) {
            Ok(()) => post_inject(req, shared, peer).await,
            Err(denied) => denied.response(),
        },
        (&Method::POST, "/reload") => match auth().check(&req, peer) {
            Ok(()) => post_reload(shared, peer).await,
            Err(denied) => denied.response(),
        },
        (_, "/inject" | "/reload") => {
            respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only POST is allowed here\n".into())
        }
        (&Method::GET, "/injections") => {
            let records = shared.supervisor.injector().records();
            respond(StatusCode::OK, "application/json", json_text(&records))
        }
        _ => route(&req, shared, started),
    }
}

/// `POST /reload`: re-reads the configuration file, as SIGHUP does; answers with what changed
/// (`applied`) and what needs a restart (`not_live`), or 400 with why the file was refused.
async fn post_reload(shared: &Shared, peer: SocketAddr) -> Response<Full<Bytes>> {
    info!(%peer, "admin: reload requested");
    match shared.reload_and_log("POST /reload").await {
        Ok(plan) => respond(
            StatusCode::OK,
            "application/json",
            json_text(&serde_json::json!({"applied": plan.applied, "not_live": plan.not_live})),
        ),
        Err(e @ crate::server::ReloadError::NoFile) => {
            respond(StatusCode::CONFLICT, "text/plain", format!("cannot reload: {e}\n"))
        }
        Err(e) => respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("reload refused, the running configuration stays: {e}\n"),
        ),
    }
}

/// `POST /inject`: a JSON [`InjectRequest`]; answers with the injection record.
async fn post_inject(req: Request<Incoming>, shared: &Shared, peer: SocketAddr) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("cannot read the body (at most {MAX_BODY} bytes): {e}\n"),
            )
        }
    };
    let request: InjectRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return respond(StatusCode::BAD_REQUEST, "text/plain", format!("invalid injection request: {e}\n")),
    };
    let record = match inject::perform(&shared.supervisor, &request) {
        Ok(r) => r,
        Err(e) => {
            let status = match e {
                InjectError::Invalid(_) => StatusCode::BAD_REQUEST,
                InjectError::UnknownReplica(_) => StatusCode::NOT_FOUND,
                InjectError::NoProcess { .. } | InjectError::ProcessGone { .. } => StatusCode::CONFLICT,
                InjectError::NoWritableMemory { .. } | InjectError::AddressNotWritable { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                InjectError::NoReadableByte { .. }
                | InjectError::FlipNotTaken { .. }
                | InjectError::StatFormat { .. }
                | InjectError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            warn!(%peer, replica = %request.replica, kind = request.kind.name(), error = %e, "admin: injection refused");
            return respond(status, "text/plain", format!("injection refused: {e}\n"));
        }
    };
    info!(%peer, replica = %record.replica, kind = record.kind.name(), id = record.id, "admin: injection");
    let record = match (record.status, request.wait_ms) {
        (RecordStatus::Armed, Some(ms)) => {
            shared.supervisor.injector().wait_fired(record.id, Duration::from_millis(ms)).await.unwrap_or(record)
        }
        _ => record,
    };
    respond(StatusCode::OK, "application/json", json_text(&record))
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

fn route(req: &Request<Incoming>, shared: &Shared, started: Instant) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        // Liveness: the process runs and answers. Nothing else: a liveness probe that failed
        // for lack of quorum would have an orchestrator restart resh, which cannot help.
        (&Method::GET | &Method::HEAD, "/health") => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        // Readiness: clients sent here are served now.
        (&Method::GET | &Method::HEAD, "/ready") => match shared.readiness() {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {why}\n")),
        },
        (&Method::GET, "/status") => {
            let body = status_json(shared, started);
            respond(StatusCode::OK, "application/json", body)
        }
        (&Method::GET, "/metrics") => {
            let replicas = shared.supervisor.status();
            // One per replica listed, by number (the core may not show one a reload just added).
            let states: Option<Vec<crate::metrics::VoteView<'_>>> = shared.ordered.as_ref().map(|o| {
                replicas
                    .iter()
                    .map(|r| match o.view(r.index) {
                        Some(v) => crate::metrics::VoteView {
                            state: v.state,
                            behind: v.behind,
                            answer_latency: v.answer_latency,
                        },
                        None => crate::metrics::VoteView { state: "down", behind: 0, answer_latency: None },
                    })
                    .collect()
            });
            let mut body = shared.metrics.prometheus(&replicas, states.as_deref());
            if let Some(group) = shared.ordered.as_ref().and_then(|o| o.group.as_ref()) {
                group.prometheus(&mut body);
            }
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        (_, "/status" | "/metrics" | "/health" | "/ready") => {
            respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET is allowed here\n".into())
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /health, /ready, /status, /metrics, /injections, POST /inject or POST /reload\n".into(),
        ),
    }
}

/// The `/status` document.
pub fn status_json(shared: &Shared, started: Instant) -> String {
    let mut doc = shared.metrics.status();
    if let Some(map) = doc.as_object_mut() {
        let config = shared.config();
        map.insert("listen".into(), config.listen.clone().into());
        map.insert("uptime_seconds".into(), started.elapsed().as_secs_f64().into());
        let now = crate::metrics::unix_now();
        map.insert("now".into(), crate::metrics::rfc3339(now).into());
        map.insert("started_at".into(), crate::metrics::rfc3339(now - started.elapsed().as_secs_f64()).into());
        map.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        let mode = match (config.vote.mode, config.vote.protocol) {
            (crate::config::Mode::Stream, Some(crate::config::Protocol::Http)) => "http",
            (crate::config::Mode::Stream, _) => "stream",
            (crate::config::Mode::Ordered, _) => "ordered",
        };
        map.insert("mode".into(), mode.into());
        match &shared.ordered {
            // A reload that added replicas raises the quorum as they join.
            Some(ordered) => {
                let (quorum, target) = ordered.quorum();
                map.insert("quorum".into(), quorum.into());
                if let Some(target) = target {
                    map.insert("quorum_target".into(), target.into());
                }
            }
            None => {
                map.insert("quorum".into(), config.quorum().into());
            }
        }
        let listed = shared.supervisor.status();
        let mut replicas = serde_json::to_value(&listed).unwrap_or(serde_json::Value::Null);
        if let (Some(ordered), Some(list)) = (&shared.ordered, replicas.as_array_mut()) {
            // Ordered mode: where each replica stands in the vote, besides its process's phase.
            for (replica, status) in list.iter_mut().zip(&listed) {
                let Some(view) = ordered.view(status.index) else { continue };
                if let Some(obj) = replica.as_object_mut() {
                    let progress = view.progress.map(|(done, total)| serde_json::json!({"done": done, "of": total}));
                    obj.insert(
                        "vote".into(),
                        serde_json::json!({
                            "state": view.state,
                            "detail": view.detail,
                            "progress": progress,
                            "incarnation": view.incarnation,
                            "behind": view.behind,
                            "answer_ms": view.answer_latency.map(|d| d.as_secs_f64() * 1000.0),
                        }),
                    );
                }
            }
        }
        map.insert("replicas".into(), replicas);
        if let Some(group) = shared.ordered.as_ref().and_then(|o| o.group.as_ref()) {
            map.insert("group".into(), group.status());
        }
    }
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
