//! The campaign's built-in client: deterministic request/response traffic through resh.
//!
//! Sessions run one after the other. Each connects, sends `requests` requests of
//! `request_bytes` bytes (the same bytes in every run), `gap_ms` apart, while a reader collects
//! everything that comes back; then it half-closes and waits for the server's end. Just
//! before each request the runner's step hook is called, which is where the injection happens,
//! so "when" in a plan is a point in the workload, not a wall-clock time.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use replicas::inject::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::classify::{SessionEnd, SessionResult};
use super::config::Workload;

/// The bytes of request `request` of session `session`.
pub fn request_bytes(session: usize, request: usize, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(((session as u64) << 32) ^ request as u64 ^ 0x5EED_CAFE_F00D);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs the workload against `addr` until done or `deadline`; `step(session, request)` is called
/// before every request, also in sessions that could not connect (the plan's injection point
/// stays where it is). Sessions that did not run before the deadline are `TimedOut`.
pub async fn run(
    addr: SocketAddr,
    workload: &Workload,
    deadline: Instant,
    step: &mut dyn FnMut(usize, usize),
) -> Vec<SessionResult> {
    let mut results = Vec::with_capacity(workload.sessions);
    for s in 0..workload.sessions {
        if Instant::now() >= deadline {
            results.push(SessionResult { received: Vec::new(), end: SessionEnd::TimedOut });
            continue;
        }
        results.push(session(addr, s, workload, deadline, step).await);
    }
    results
}

async fn session(
    addr: SocketAddr,
    s: usize,
    workload: &Workload,
    deadline: Instant,
    step: &mut dyn FnMut(usize, usize),
) -> SessionResult {
    let gap = Duration::from_millis(workload.gap_ms);
    let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        other => {
            for r in 0..workload.requests {
                step(s, r);
            }
            let end = if other.is_err() { SessionEnd::TimedOut } else { SessionEnd::Refused };
            return SessionResult { received: Vec::new(), end };
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) => return SessionEnd::Closed,
                Ok(n) => sink.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return SessionEnd::Reset,
                Err(e) => return SessionEnd::Failed(e.to_string()),
            }
        }
    });
    let mut writing = true;
    for r in 0..workload.requests {
        step(s, r);
        if writing {
            let data = request_bytes(s, r, workload.request_bytes);
            // A write that fails means the session was aborted: the reader sees how.
            writing = matches!(timeout_at(deadline, write.write_all(&data)).await, Ok(Ok(())));
        }
        if r + 1 < workload.requests && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    if writing {
        let _ = timeout_at(deadline, write.shutdown()).await;
    }
    let mut reader = reader;
    let end = match timeout_at(deadline, &mut reader).await {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => SessionEnd::Failed(format!("reader task: {e}")),
        Err(_) => {
            reader.abort();
            SessionEnd::TimedOut
        }
    };
    // On a timeout, the bytes read so far are the record.
    let received = std::mem::take(&mut *received.lock().unwrap_or_else(|p| p.into_inner()));
    drop(write);
    SessionResult { received, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_deterministic_and_distinct() {
        assert_eq!(request_bytes(1, 2, 100), request_bytes(1, 2, 100));
        assert_ne!(request_bytes(1, 2, 100), request_bytes(2, 1, 100));
        assert_eq!(request_bytes(0, 0, 13).len(), 13);
    }
}
