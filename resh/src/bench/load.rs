//! The bench's load generator: `c` closed-loop connections, each sending one request, waiting
//! for the whole reply, checking it and recording the latency, then sending the next.
//!
//! It runs on the caller's runtime (the bench uses a current-thread runtime, so the generator
//! takes at most one core of the machine it shares with the system under test), allocates
//! nothing per request, and checks every reply byte for byte: a target that answers wrongly
//! counts errors instead of looking fast.
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The longest a single request may take before its connection counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What each request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// RESP `SET bench:<conn> <value>` and `GET bench:<conn>`, alternating, with values of
    /// this many bytes. Each connection has its own key, so replicas that see the sessions in
    /// different orders (stream mode) still answer alike.
    Resp {
        /// Value size in bytes.
        value: usize,
    },
    /// Raw bytes echoed back: send a message of this many bytes, read as many back.
    Echo {
        /// Message size in bytes.
        size: usize,
    },
}

impl Workload {
    /// The name used in tables and `--workloads`.
    pub fn name(self) -> String {
        match self {
            Workload::Resp { .. } => "resp".into(),
            Workload::Echo { size } if size >= 1024 && size % 1024 == 0 => format!("echo{}k", size / 1024),
            Workload::Echo { size } => format!("echo{size}"),
        }
    }

    /// Whether this is a RESP workload (the only one ordered mode serves).
    pub fn is_resp(self) -> bool {
        matches!(self, Workload::Resp { .. })
    }
}

/// One run of the generator against one address.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The requests.
    pub workload: Workload,
    /// Connections, each with one request in flight.
    pub connections: usize,
    /// Requests before the measurement starts (caches, TCP windows, allocator pools warm up).
    pub warmup: Duration,
    /// How long to measure (ignored when `requests` is set).
    pub duration: Duration,
    /// Measure this many requests in all (split among the connections) instead of a duration.
    pub requests: Option<u64>,
}

/// Why the load could not be run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target: a connection could not be opened.
    #[error("cannot open connection {conn} to {addr}: {error}")]
    Connect {
        /// The connection's number.
        conn: usize,
        /// The target's address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// resh itself: a connection's task panicked.
    #[error("a load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why one connection stopped sending: the target failed it.
#[derive(Debug, thiserror::Error)]
pub enum RequestFailure {
    /// The reply was not the expected one (its first bytes).
    #[error("wrong reply: {0:?}")]
    WrongReply(String),
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// No whole reply within the request timeout.
    #[error("no reply within {0:?}")]
    NoReply(Duration),
}

/// What one run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Requests completed in the measured window.
    pub requests: u64,
    /// Connections that failed (error, timeout or a wrong reply); they stop sending.
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<RequestFailure>,
    /// The measured window.
    pub elapsed: Duration,
    /// Request latencies in nanoseconds.
    pub latency: Histogram<u64>,
}

impl LoadResult {
    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }
}

/// A fresh latency histogram: 1 ns to 60 s, three significant digits.
pub fn histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (the unit test below checks them): no input
    // can make this fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// The fixed request and reply bytes of one connection.
struct Script {
    /// Requests sent in turn.
    requests: Vec<Vec<u8>>,
    /// The exact reply expected to each.
    replies: Vec<Vec<u8>>,
}

impl Script {
    fn new(workload: Workload, conn: usize) -> Script {
        match workload {
            Workload::Resp { value } => {
                let key = format!("bench:{conn}");
                let value: Vec<u8> = (0..value).map(|i| b'a' + ((i + conn) % 26) as u8).collect();
                let set = resp_command(&[b"SET", key.as_bytes(), &value]);
                let get = resp_command(&[b"GET", key.as_bytes()]);
                let mut bulk = format!("${}\r\n", value.len()).into_bytes();
                bulk.extend_from_slice(&value);
                bulk.extend_from_slice(b"\r\n");
                Script { requests: vec![set, get], replies: vec![b"+OK\r\n".to_vec(), bulk] }
            }
            Workload::Echo { size } => {
                let message: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(31) ^ conn) as u8).collect();
                Script { requests: vec![message.clone()], replies: vec![message] }
            }
        }
    }
}

/// A RESP array of bulk strings.
pub fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs the load: connects every connection, warms up, then measures. `probe` is called when
/// the measurement starts and when it ends (for the CPU time of the processes under test), and
/// both readings are returned with the result.
pub async fn run<T>(spec: &LoadSpec, probe: impl Fn() -> T) -> Result<(LoadResult, T, T), LoadError> {
    let mut streams = Vec::with_capacity(spec.connections);
    for conn in 0..spec.connections {
        let stream =
            TcpStream::connect(spec.addr).await.map_err(|error| LoadError::Connect { conn, addr: spec.addr, error })?;
        let _ = stream.set_nodelay(true);
        streams.push(stream);
    }
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let stop = spec.requests.is_none().then(|| measure_from + spec.duration);
    let per_conn = spec.requests.map(|n| n.div_ceil(spec.connections.max(1) as u64));
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(conn, stream)| {
            let script = Script::new(spec.workload, conn);
            tokio::spawn(connection(stream, script, measure_from, stop, per_conn))
        })
        .collect();
    tokio::time::sleep_until(measure_from).await;
    let first = probe();
    if let Some(stop) = stop {
        tokio::time::sleep_until(stop).await;
    }
    let mut result =
        LoadResult { requests: 0, errors: 0, first_error: None, elapsed: Duration::ZERO, latency: histogram() };
    let mut last_done = measure_from;
    for task in tasks {
        let outcome = task.await?;
        result.requests += outcome.requests;
        let _ = result.latency.add(&outcome.latency);
        last_done = last_done.max(outcome.finished);
        if let Some(e) = outcome.error {
            result.errors += 1;
            result.first_error.get_or_insert(e);
        }
    }
    let last = probe();
    result.elapsed = match stop {
        Some(stop) => stop.saturating_duration_since(measure_from),
        None => last_done.saturating_duration_since(measure_from),
    };
    Ok((result, first, last))
}

struct ConnOutcome {
    requests: u64,
    latency: Histogram<u64>,
    finished: Instant,
    error: Option<RequestFailure>,
}

async fn connection(
    mut stream: TcpStream,
    script: Script,
    measure_from: Instant,
    stop: Option<Instant>,
    quota: Option<u64>,
) -> ConnOutcome {
    let mut outcome = ConnOutcome { requests: 0, latency: histogram(), finished: Instant::now(), error: None };
    let longest = script.replies.iter().map(Vec::len).max().unwrap_or(0);
    let mut reply = vec![0u8; longest];
    // RESP starts with a SET, so every GET finds its key.
    let mut turn = 0usize;
    loop {
        let sent = Instant::now();
        if stop.is_some_and(|s| sent >= s) || quota.is_some_and(|q| outcome.requests >= q) {
            break;
        }
        let i = turn % script.requests.len();
        let expected = &script.replies[i];
        let exchange = async {
            stream.write_all(&script.requests[i]).await?;
            stream.read_exact(&mut reply[..expected.len()]).await?;
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(())) if reply[..expected.len()] == expected[..] => {}
            Ok(Ok(())) => {
                let got = String::from_utf8_lossy(&reply[..expected.len().min(40)]).into_owned();
                outcome.error = Some(RequestFailure::WrongReply(got));
                break;
            }
            Ok(Err(e)) => {
                outcome.error = Some(RequestFailure::Io(e));
                break;
            }
            Err(_) => {
                outcome.error = Some(RequestFailure::NoReply(REQUEST_TIMEOUT));
                break;
            }
        }
        let done = Instant::now();
        turn += 1;
        if sent >= measure_from {
            outcome.requests += 1;
            outcome.finished = done;
            let _ = outcome.latency.record(done.duration_since(sent).as_nanos().min(u64::MAX as u128) as u64);
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_accepted() {
        let mut h = histogram();
        h.record(1).expect("min");
        h.record(60_000_000_000).expect("max");
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn resp_script_matches_the_protocol() {
        let s = Script::new(Workload::Resp { value: 3 }, 1);
        assert_eq!(s.requests[0], b"*3\r\n$3\r\nSET\r\n$7\r\nbench:1\r\n$3\r\nbcd\r\n".to_vec());
        assert_eq!(s.requests[1], b"*2\r\n$3\r\nGET\r\n$7\r\nbench:1\r\n".to_vec());
        assert_eq!(s.replies[1], b"$3\r\nbcd\r\n".to_vec());
        assert_eq!(Workload::Echo { size: 65536 }.name(), "echo64k");
        assert_eq!(Workload::Echo { size: 64 }.name(), "echo64");
    }
}
