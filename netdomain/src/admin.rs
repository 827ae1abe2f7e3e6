//! The admin HTTP server (hyper, HTTP/1.1): `GET /status` (JSON) and `GET /metrics`
//! (Prometheus text format). It listens on loopback unless the configuration allows more.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use crate::session::Shared;

/// Serves admin requests on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, started: Instant) {
    loop {
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
                async move { Ok::<_, Infallible>(route(&req, &shared, started)) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn route(req: &Request<Incoming>, shared: &Shared, started: Instant) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => {
            let body = status_json(shared, started);
            respond(StatusCode::OK, "application/json", body)
        }
        (&Method::GET, "/metrics") => {
            let body = shared.metrics.prometheus(&shared.supervisor.status());
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        (_, "/status" | "/metrics") => {
            respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET is allowed here\n".into())
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found: try /status or /metrics\n".into()),
    }
}

/// The `/status` document.
pub fn status_json(shared: &Shared, started: Instant) -> String {
    let mut doc = shared.metrics.status();
    if let Some(map) = doc.as_object_mut() {
        map.insert("listen".into(), shared.config.listen.clone().into());
        map.insert("uptime_seconds".into(), started.elapsed().as_secs_f64().into());
        map.insert("mode".into(), "stream".into());
        map.insert("quorum".into(), shared.config.quorum().into());
        map.insert(
            "replicas".into(),
            serde_json::to_value(shared.supervisor.status()).unwrap_or(serde_json::Value::Null),
        );
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
