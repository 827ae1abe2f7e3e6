//! HTTP mode's sessions, for stateless services: each client connection gets one connection
//! per replica and a frame vote of its own ([`voter::FrameVoter`]); no global order.
//!
//! Per request (hyper serves the client's HTTP/1.1, one request at a time):
//! 1. the request body is read whole (up to `http.max_request_bytes`, else 413);
//! 2. the request goes to every replica still in the session, hop-by-hop headers left out
//!    (RFC 9110 §7.6.1); a replica whose keep-alive connection the server closed meanwhile is
//!    reconnected first: normal HTTP, not a fault;
//! 3. each response is reduced to its normal form as it comes ([`super::normal`]: status, the
//!    headers that count, the body with its masks) and voted by its digest; each body is held
//!    up to `http.max_body_bytes` so that the agreed one can be released;
//! 4. once a quorum agrees, the client gets the agreed response of the lowest-numbered replica
//!    of the quorum, with its own headers (those that do not count are one replica's,
//!    unvoted), at once; the replicas still answering are judged as their answers come, or
//!    are late after the lag timeout, in a task of their own, and before the next request goes
//!    to them (each replica's answers stay in order).
//!
//! What every replica does alike is the service's behaviour, never a fault: all slow (504
//! after `http.request_timeout_ms`), all closing or all answering what cannot be parsed (502),
//! all answering more than resh holds (502). With no quorum the client gets a 502 that says
//! where the responses differ, and nobody is blamed. A replica that differs from a quorum, fails
//! or is late is reported and left out of the session.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use voter::{FrameConfig, FrameOutcome, FrameVoter, Vote};

use super::normal::{difference, Normal, Rules};
use crate::fault::{FaultEvent, Position};
use crate::metrics::Verdict;
use crate::server::Shared;
use replicas::Admitted;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
pub(super) const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// One replica's exchange of one request: (its lane, its connection to keep, how it ended).
type ExchangeFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (usize, Option<SendRequest<Full<Bytes>>>, Exchange)> + Send>>;

/// One replica of the session.
struct Link {
    admitted: Admitted,
    /// Its connection (`None`: not connected now; reconnected before the next request). A
    /// replica out of the session's vote (for a fault, or resh's own limits) is sent nothing
    /// more.
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// What one replica answered to one request.
pub(super) struct Answer {
    pub(super) normal: Normal,
    pub(super) head: hyper::http::response::Parts,
    /// The body, if it stayed within `http.max_body_bytes` (and `http.max_held_bytes` had
    /// room for it).
    pub(super) body: Option<Bytes>,
    /// The body was not held for lack of room in `http.max_held_bytes`: resh's limit.
    pub(super) over_budget: bool,
    /// Its share of `http.max_held_bytes`, given back when the answer is dropped.
    _held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// How a replica's exchange ended.
pub(super) enum Exchange {
    Answered(Box<Answer>),
    /// Its connection failed or closed before a whole response.
    Closed(String),
    /// Its response could not be parsed as HTTP.
    Malformed(String),
    /// A new connection (its server had closed the kept-alive one) could not be made: the
    /// request never reached it. `resh_exhausted`: for resh's own reasons (file descriptors,
    /// memory), never the replica's fault.
    Unreachable(ConnectError),
}

impl Exchange {
    /// The end of an exchange hyper reported an error for.
    pub(super) fn failed(e: hyper::Error) -> Exchange {
        if e.is_parse() {
            Exchange::Malformed(e.to_string())
        } else {
            Exchange::Closed(e.to_string())
        }
    }
}

/// The session's state, used by one request at a time (hyper's HTTP/1.1 server serves a
/// connection's requests in turn).
struct State {
    shared: Arc<Shared>,
    rules: Arc<Rules>,
    id: u64,
    links: Vec<Link>,
    voter: FrameVoter,
    start: Instant,
    masked: bool,
    requests: u64,
    /// The exchanges still running when the last request was decided.
    straggling: Option<Straggling>,
}

/// The exchanges still running when a request was decided: its client got its answer at
/// once, and they are awaited (until they are late) before the next request.
struct Straggling {
    /// The request they answer.
    seq: u64,
    /// The normal form of the answer agreed on.
    agreed: Normal,
    exchanges: FuturesUnordered<ExchangeFuture>,
}

/// Serves one client connection in HTTP mode to its end.
pub(crate) async fn serve(shared: Arc<Shared>, rules: Arc<Rules>, mut client: TcpStream, peer: SocketAddr, id: u64) {
    let (config, admitted) = match shared.admit_session() {
        Ok(admission) => admission,
        Err(reason) => {
            let reason = format!("{reason}\n");
            let text = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}",
            reason.len()
        );
            let _ = tokio::io::AsyncWriteExt::write_all(&mut client, text.as_bytes()).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut client).await;
            return;
        }
    };
    shared.metrics.session_started();
    let frame = FrameConfig { replicas: admitted.len(), quorum: config.quorum(), lag_timeout: config.lag_timeout() };
    let mut voter = match FrameVoter::new(frame) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "internal: voter parameters refused");
            return;
        }
    };
    let start = Instant::now();
    let mut links = Vec::with_capacity(admitted.len());
    for (r, admitted) in admitted.into_iter().enumerate() {
        shared.supervisor.count_session(admitted.index);
        voter.join_at(r, 0, Duration::ZERO);
        links.push(Link { admitted, sender: None });
    }
    let state = Arc::new(tokio::sync::Mutex::new(State {
        shared: Arc::clone(&shared),
        rules,
        id,
        links,
        voter,
        start,
        masked: false,
        requests: 0,
        straggling: None,
    }));
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = {
        let state = Arc::clone(&state);
        let busy = Arc::clone(&busy);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let state = Arc::clone(&state);
            let busy = Arc::clone(&busy);
            async move {
                let (response, straggling) = {
                    let mut state = state.lock().await;
                    let response = state.handle(request, &busy).await;
                    (response, state.straggling.is_some())
                };
                busy.store(false, std::sync::atomic::Ordering::Relaxed);
                if straggling {
                    // The client has its answer; the replicas still answering are judged now,
                    // as their answers come (or they turn late), whether or not the client
                    // sends another request. The next request waits for the state's lock.
                    tokio::spawn(async move {
                        let mut state = state.lock().await;
                        let config = state.shared.config();
                        state.settle_stragglers(&config).await;
                    });
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let client = IdleGuard::new(client, config.idle_timeout(), busy);
    let served = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), service).await;
    // (After the stragglers of the last request were judged: they hold the lock until then.)
    let state = state.lock().await;
    let verdict = if state.masked { Verdict::Masked } else { Verdict::Agreed };
    shared.metrics.session_ended(verdict);
    info!(
        peer = %peer,
        requests = state.requests,
        duration_ms = start.elapsed().as_millis() as u64,
        verdict = verdict.name(),
        end = served.err().map(|e| error_chain(&e)).unwrap_or_else(|| "closed".into()),
        "session ended"
    );
}

impl State {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Answers one client request (see the module documentation).
    /// `busy` is set once the request is read: the replicas' time is not the client's idleness.
    async fn handle(
        &mut self,
        request: Request<Incoming>,
        busy: &std::sync::atomic::AtomicBool,
    ) -> Response<Full<Bytes>> {
        self.requests += 1;
        let config = self.shared.config();
        let (parts, body) = request.into_parts();
        let head = parts.method == hyper::Method::HEAD;
        let body = match read_request_body(body, config.http.max_request_bytes).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        };
        self.shared.metrics.client_in(body.len());
        busy.store(true, std::sync::atomic::Ordering::Relaxed);
        self.settle_stragglers(&config).await;
        let quorum = self.voter.config().quorum;
        if self.voter.live_count() < quorum {
            // Replicas left this session (faults): it cannot decide any more. The client is
            // told so and the connection closed; a new one is given the replicas ready now.
            self.shared.metrics.request_refused();
            let mut response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} replicas are left in this connection's vote, fewer than the quorum of {quorum}: the request was not sent; reconnect",
                    self.voter.live_count()
                ),
            );
            response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        let seq = self.voter.submit(self.now());
        // The exchanges are polled in this task (no task spawned per replica and request: a
        // wake-up and an allocation less each; measured with `resh bench --workloads http`).
        let mut exchanges: FuturesUnordered<ExchangeFuture> = FuturesUnordered::new();
        for r in 0..self.links.len() {
            if !self.voter.is_live(r) {
                continue;
            }
            let kept = self.links[r].sender.take();
            let outgoing = forward(&parts, body.clone());
            let rules = Arc::clone(&self.rules);
            let limits = (config.http.max_body_bytes, Arc::clone(&self.shared.http_held));
            let replica = (self.links[r].admitted.addr, config.connect_timeout());
            exchanges.push(Box::pin(async move {
                let (kept, exchange) = exchange(kept, outgoing, &rules, (limits.0, &limits.1), replica).await;
                (r, kept, exchange)
            }));
        }
        let mut answers: Vec<Option<Answer>> = (0..self.links.len()).map(|_| None).collect();
        let request_deadline = Instant::now() + Duration::from_millis(config.http.request_timeout_ms);
        let mut decision = None;
        loop {
            if let Some(d) = self.take_decision(seq) {
                decision = Some(d);
            }
            // Decided: the client gets its answer now; the replicas still answering are
            // awaited before the next request (`settle_stragglers`).
            if decision.is_some() || exchanges.is_empty() {
                break;
            }
            // The client's limit, or sooner when a replica turns late (which may decide the
            // request: the others agree, or no quorum is left).
            let deadline = match self.voter.next_deadline() {
                Some(late) => request_deadline.min(self.start + late),
                None => request_deadline,
            };
            tokio::select! {
                joined = exchanges.next() => {
                    let Some((r, kept, exchange)) = joined else { continue };
                    if let Some(answer) = self.record(r, kept, exchange) {
                        answers[r] = Some(answer);
                    }
                    self.report_faults(seq);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.voter.tick(self.now());
                    self.report_faults(seq);
                    if decision.is_none() {
                        decision = self.take_decision(seq);
                        if decision.is_some() {
                            // Decided by a replica turning late.
                            continue;
                        }
                    }
                    if decision.is_none() && Instant::now() >= request_deadline {
                        // Nobody agreed in time: every replica was slow alike.
                        exchanges.clear();
                        for link in &mut self.links {
                            link.sender = None;
                        }
                        self.forget(seq);
                        self.shared.metrics.request_timed_out();
                        return plain(
                            StatusCode::GATEWAY_TIMEOUT,
                            format!("no agreed response within http.request_timeout_ms ({} ms)", config.http.request_timeout_ms),
                        );
                    }
                    // Undecided, before the client's limit: a replica turned late; go on.
                }
            }
        }
        if let Some(d) = self.take_decision(seq) {
            decision.get_or_insert(d);
        }
        self.report_faults(seq);
        let agreed = match decision.as_ref().map(|d| &d.outcome) {
            Some(FrameOutcome::Release { replica, .. }) => {
                answers.get(*replica).and_then(|a| a.as_ref()).map(|a| a.normal.clone())
            }
            _ => None,
        };
        match agreed {
            Some(agreed) if !exchanges.is_empty() => {
                self.straggling = Some(Straggling { seq, agreed, exchanges });
            }
            _ => {
                drop(exchanges);
                self.forget(seq);
            }
        }
        self.respond(decision, answers, head)
    }

    /// Takes one replica's exchange into the vote (`kept`: its connection, if it is to be
    /// used again); returns its answer, if it answered.
    fn record(&mut self, r: usize, kept: Option<SendRequest<Full<Bytes>>>, exchange: Exchange) -> Option<Answer> {
        let now = self.now();
        let name = Arc::clone(&self.links[r].admitted.name);
        self.links[r].sender = kept;
        match exchange {
            Exchange::Answered(answer) => {
                self.voter.response(r, Vote::Frame(answer.normal.digest()), now);
                return Some(*answer);
            }
            Exchange::Closed(why) => {
                debug!(replica = %name, "replica connection ended: {why}");
                self.voter.response(r, Vote::Closed, now);
            }
            Exchange::Malformed(why) => {
                warn!(replica = %name, "replica response cannot be parsed: {why}");
                self.voter.response(r, Vote::Frame(malformed_digest()), now);
            }
            Exchange::Unreachable(ConnectError { why, resh_exhausted: true }) => {
                warn!(replica = %name, "cannot reach replica for resh's own reason: {why}");
                self.voter.leave(r, now);
            }
            Exchange::Unreachable(ConnectError { why, .. }) => {
                debug!(replica = %name, "cannot reach replica: {why}");
                self.voter.fail(r, now);
            }
        }
        None
    }

    /// The replicas still answering the last request (its client has its answer) vote on it
    /// now, or are late: in a task of their own right after the answer (see `serve`), and
    /// before the next request goes out, so each replica's answers stay in order.
    async fn settle_stragglers(&mut self, config: &crate::config::Config) {
        let Some(Straggling { seq, agreed, exchanges: mut stragglers }) = self.straggling.take() else { return };
        while !stragglers.is_empty() {
            let late =
                self.voter.next_deadline().map_or_else(|| Instant::now() + config.lag_timeout(), |d| self.start + d);
            tokio::select! {
                biased;
                joined = stragglers.next() => {
                    let Some((r, kept, exchange)) = joined else { continue };
                    if let Some(answer) = self.record(r, kept, exchange) {
                        if let Some(d) = difference(&agreed, &answer.normal) {
                            info!(session = self.id, replica = %self.links[r].admitted.name, "its response differs from the agreed one: {d}");
                        }
                    }
                    self.report_faults(seq);
                }
                _ = tokio::time::sleep_until(late) => {
                    self.voter.tick(self.now());
                    self.report_faults(seq);
                    // The ones late now are out (the voter said so at its tick); the others get
                    // until they are late. With no one left to judge, the rest are given up
                    // without blame (`forget`).
                    if self.voter.next_deadline().is_none() {
                        break;
                    }
                }
            }
        }
        // What they still owed is dropped with their connections.
        drop(stragglers);
        self.forget(seq);
    }

    /// The vote's decision on request `seq`, if there is one (decisions on earlier requests,
    /// settled without their clients, are dropped).
    fn take_decision(&mut self, seq: u64) -> Option<voter::Decision> {
        while let Some(d) = self.voter.take_decision() {
            if d.seq == seq {
                return Some(d);
            }
        }
        None
    }

    /// Request `seq` is over for the client: a replica still in the vote that has not answered
    /// it (its exchange was given up with the request) starts afresh with the next request, on
    /// a new connection, without blame; nothing it owed can arrive any more.
    fn forget(&mut self, seq: u64) {
        let now = self.now();
        let next = self.voter.next_seq();
        for r in 0..self.links.len() {
            if self.voter.is_live(r) && self.voter.next_answer(r).is_some_and(|n| n <= seq) {
                self.links[r].sender = None;
                self.voter.join_at(r, next, now);
            }
        }
        while self.voter.take_decision().is_some() {}
    }

    /// The client's response once the vote on a request ended.
    /// (`head`: the request was a HEAD.)
    fn respond(
        &mut self,
        decision: Option<voter::Decision>,
        answers: Vec<Option<Answer>>,
        head: bool,
    ) -> Response<Full<Bytes>> {
        let names: Vec<Arc<str>> = self.links.iter().map(|l| Arc::clone(&l.admitted.name)).collect();
        let (response, masked) = respond(&self.shared, &names, self.id, head, decision, answers);
        self.masked |= masked;
        response
    }

    /// Reports the voter's faults and leaves those replicas out of the session.
    fn report_faults(&mut self, seq: u64) {
        for fault in self.voter.take_faults() {
            let Some(link) = self.links.get_mut(fault.replica) else { continue };
            link.sender = None;
            self.masked = true;
            self.shared.faults.report(&FaultEvent {
                session: Some(self.id),
                replica: link.admitted.index,
                name: Arc::clone(&link.admitted.name),
                incarnation: link.admitted.incarnation,
                position: Position::Request(fault.offset.min(seq)),
                kind: fault.kind,
            });
        }
    }
}

/// The client's response once the vote on a request ended (`names`: the replicas' names by
/// vote lane; `session`: for the log), and whether a replica's answer was masked.
pub(super) fn respond(
    shared: &Shared,
    names: &[Arc<str>],
    session: u64,
    head: bool,
    decision: Option<voter::Decision>,
    mut answers: Vec<Option<Answer>>,
) -> (Response<Full<Bytes>>, bool) {
    let Some(decision) = decision else {
        shared.metrics.request_undecidable();
        return (plain(StatusCode::BAD_GATEWAY, "the replicas' responses did not settle".into()), false);
    };
    let name = |r: usize| names.get(r).cloned().unwrap_or_else(|| Arc::from("?"));
    let response = match decision.outcome {
        FrameOutcome::Release { vote: Vote::Closed, .. } => {
            shared.metrics.request_refused();
            plain(StatusCode::BAD_GATEWAY, "the service closed the connection without a response".into())
        }
        FrameOutcome::Release { vote: Vote::Frame(d), .. } if d == malformed_digest() => {
            shared.metrics.request_refused();
            plain(StatusCode::BAD_GATEWAY, "the service's response is not valid HTTP".into())
        }
        FrameOutcome::Release { vote: Vote::Frame(d), .. } if d == timed_out_digest() => {
            shared.metrics.request_timed_out();
            plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the service gave no whole response within http.request_timeout_ms; the request may have taken effect"
                    .into(),
            )
        }
        FrameOutcome::Release { replica, .. } => {
            let Some(answer) = answers.get_mut(replica).and_then(Option::take) else {
                return (plain(StatusCode::BAD_GATEWAY, "internal: the agreed response is gone".into()), false);
            };
            let Some(body) = answer.body else {
                if answer.over_budget {
                    // resh's own limit: no replica's fault, and the service's answer is fine.
                    shared.metrics.request_refused();
                    return (
                        plain(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "resh holds as many response bodies as http.max_held_bytes allows: try again".into(),
                        ),
                        false,
                    );
                }
                // The quorum agreed on a body larger than resh holds: the service's answer,
                // not a fault.
                return (
                    plain(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "the agreed response's body ({} bytes) is larger than http.max_body_bytes",
                            answer.normal.body_len
                        ),
                    ),
                    false,
                );
            };
            shared.metrics.request_released(decision.masked);
            shared.metrics.client_out(body.len());
            // What a replica that answered otherwise differs in, for whoever chooses masks.
            for (r, other) in answers.iter().enumerate() {
                if let Some(d) = other.as_ref().and_then(|o| difference(&answer.normal, &o.normal)) {
                    info!(session, replica = %name(r), "its response differs from the agreed one: {d}");
                }
            }
            let mut response = Response::from_parts(answer.head, Full::new(body));
            // resh speaks HTTP/1.1 to its client, whatever the replica spoke.
            *response.version_mut() = hyper::Version::HTTP_11;
            for name in connection_named(response.headers()) {
                response.headers_mut().remove(name.as_str());
            }
            for name in HOP_BY_HOP {
                response.headers_mut().remove(*name);
            }
            // hyper frames the body it sends; a HEAD or 304 response keeps the length of
            // the body it stands for (voted: see `exchange`).
            if !(head || response.status() == StatusCode::NOT_MODIFIED) {
                response.headers_mut().remove(hyper::header::CONTENT_LENGTH);
            }
            return (response, decision.masked);
        }
        FrameOutcome::Undecidable => {
            shared.metrics.request_undecidable();
            let answered: Vec<(usize, &Answer)> =
                answers.iter().enumerate().filter_map(|(r, a)| a.as_ref().map(|a| (r, a))).collect();
            let why = answered
                .iter()
                .enumerate()
                .find_map(|(i, (ra, a))| {
                    answered[i + 1..].iter().find_map(|(rb, b)| {
                        difference(&a.normal, &b.normal).map(|d| format!("{} and {} differ: {d}", name(*ra), name(*rb)))
                    })
                })
                .unwrap_or_else(|| "too few replicas answered".into());
            warn!(session, "no quorum agreed on a response: {why}");
            plain(
                StatusCode::BAD_GATEWAY,
                format!("no quorum of replicas agreed on the response: {why} (if that part is noise, leave it out of the vote: see [http] in the README)"),
            )
        }
    };
    (response, false)
}

/// The client's connection, closed once it is idle for `limit` (`session.idle_timeout_ms`):
/// nothing read from the client and nothing written to it, while no request is being
/// answered. That covers a keep-alive connection left open, a client that sends its request
/// head and stops, and a client that takes no output (it would otherwise hold its session,
/// and the response held for it, for ever); a slow reader makes progress and is served.
/// (hyper's own header-read timeout is not used: it also runs while a long response is being
/// written, and cut off slow readers mid-body.)
pub(super) struct IdleGuard<T> {
    inner: T,
    limit: Duration,
    last_progress: Instant,
    /// Set while a request is answered (the replicas may take longer than `limit`).
    busy: Arc<std::sync::atomic::AtomicBool>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<T> IdleGuard<T> {
    pub(super) fn new(inner: T, limit: Duration, busy: Arc<std::sync::atomic::AtomicBool>) -> Self {
        let now = Instant::now();
        IdleGuard { inner, limit, last_progress: now, busy, timer: Box::pin(tokio::time::sleep_until(now + limit)) }
    }

    /// After an attempt to read or write: notes progress, or fails once idle too long.
    fn watch<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<R>>,
    ) -> std::task::Poll<std::io::Result<R>> {
        use std::future::Future;
        if polled.is_ready() {
            self.last_progress = Instant::now();
            return polled;
        }
        if self.busy.load(std::sync::atomic::Ordering::Relaxed) {
            self.last_progress = Instant::now();
            return polled;
        }
        let deadline = self.last_progress + self.limit;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client's connection was idle (nothing read or written) for session.idle_timeout_ms",
            )));
        }
        std::task::Poll::Pending
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleGuard<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.watch(cx, polled)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleGuard<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The request as a replica gets it: origin-form target, hop-by-hop headers left out.
pub(super) fn forward(parts: &hyper::http::request::Parts, body: Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".parse().unwrap_or_default(), |pq| pq.as_str().parse().unwrap_or_default());
    // And the headers the client's Connection header names: they are for this hop too.
    let named = connection_named(&parts.headers);
    for (name, value) in &parts.headers {
        let hop = HOP_BY_HOP.contains(&name.as_str()) || named.iter().any(|n| n == name.as_str());
        if !hop && name != hyper::header::CONTENT_LENGTH {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    request
}

/// Why a replica could not be reached.
#[derive(Debug)]
pub(super) struct ConnectError {
    pub(super) why: String,
    /// For resh's own reasons (file descriptors, memory).
    pub(super) resh_exhausted: bool,
}

/// A new HTTP/1.1 connection to a replica.
pub(super) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
    let failed = |why: String, resh_exhausted| ConnectError { why, resh_exhausted };
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(failed(format!("no connection to {addr} within session.connect_timeout_ms"), false)),
        Ok(Err(e)) => return Err(failed(format!("cannot connect to {addr}: {e}"), crate::server::resh_exhausted(&e))),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(format!("HTTP handshake with {addr}: {e}"), false))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends `request` to one replica (`replica`: its address and the connect timeout) and reads
/// its response into its normal form, holding the body up to `max_body` bytes. It goes on
/// `kept`, the replica's kept-alive connection, unless the server closed that meanwhile
/// (normal HTTP, no fault): then on a new one; a request the connection never sent (the
/// server closed it as the request went out) is sent again once, on a new connection.
/// Returns the connection to keep (after a whole answer) and how the exchange ended. A HEAD's
/// response's Content-Length is its meaning (there is no body to vote).
pub(super) async fn exchange(
    kept: Option<SendRequest<Full<Bytes>>>,
    request: Request<Full<Bytes>>,
    rules: &Rules,
    (max_body, budget): (usize, &Arc<tokio::sync::Semaphore>),
    replica: (SocketAddr, Duration),
) -> (Option<SendRequest<Full<Bytes>>>, Exchange) {
    let is_head = request.method() == hyper::Method::HEAD;
    let mut kept = kept;
    if let Some(s) = kept.as_mut() {
        if s.ready().await.is_err() {
            kept = None;
        }
    }
    let mut sender = match kept {
        Some(s) => s,
        None => match connect(replica.0, replica.1).await {
            Ok(s) => s,
            Err(e) => return (None, Exchange::Unreachable(e)),
        },
    };
    let exchanged = read_answer(&mut sender, request, rules, max_body, budget, is_head, replica).await;
    let keep = matches!(exchanged, Exchange::Answered(_)).then_some(sender);
    (keep, exchanged)
}

/// [`exchange`] on a ready connection.
async fn read_answer(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
    rules: &Rules,
    max_body: usize,
    budget: &Arc<tokio::sync::Semaphore>,
    is_head: bool,
    reconnect: (SocketAddr, Duration),
) -> Exchange {
    let response = match sender.try_send_request(request).await {
        Ok(r) => r,
        Err(mut e) => match e.take_message() {
            Some(unsent) => {
                *sender = match connect(reconnect.0, reconnect.1).await {
                    Ok(s) => s,
                    Err(c) => return Exchange::Unreachable(c),
                };
                match sender.send_request(unsent).await {
                    Ok(r) => r,
                    Err(e) => return Exchange::failed(e),
                }
            }
            None => return Exchange::failed(e.into_error()),
        },
    };
    let (head, mut body) = response.into_parts();
    let status = head.status.as_u16();
    let mut normal = rules.response(status, head.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    if is_head || status == 304 {
        // No body: what the length says is what a client learns.
        if let Some(length) = head.headers.get(hyper::header::CONTENT_LENGTH) {
            normal.count_header("content-length", length.as_bytes());
        }
    }
    let mut held = Some(BytesMut::new());
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut over_budget = false;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Exchange::failed(e),
        };
        if let Ok(data) = frame.into_data() {
            normal.body(&data);
            if let Some(h) = held.as_mut() {
                let room =
                    u32::try_from(data.len()).ok().and_then(|n| Arc::clone(budget).try_acquire_many_owned(n).ok());
                match room {
                    Some(p) if h.len() + data.len() <= max_body => {
                        h.extend_from_slice(&data);
                        match permit.as_mut() {
                            Some(held_permit) => held_permit.merge(p),
                            None => permit = Some(p),
                        }
                    }
                    // Still digested as it comes, no longer held: larger than a body resh
                    // holds, or no room left among everything held now.
                    room => {
                        over_budget = room.is_none() && h.len() + data.len() <= max_body;
                        held = None;
                        permit = None;
                    }
                }
            }
        }
    }
    Exchange::Answered(Box::new(Answer {
        normal: normal.finish(),
        head,
        body: held.map(BytesMut::freeze),
        over_budget,
        _held: permit,
    }))
}

/// A client's request body, whole, up to `limit` bytes; else the client's answer: 413 beyond
/// the limit, 400 when it cannot be read.
pub(super) async fn read_request_body(body: Incoming, limit: usize) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than http.max_request_bytes ({limit})"),
        )),
        Err(e) => Err(plain(StatusCode::BAD_REQUEST, format!("the request body could not be read: {e}"))),
    }
}

/// The headers a Connection header names (RFC 9110 §7.6.1): for this hop only.
pub(super) fn connection_named(headers: &hyper::HeaderMap) -> Vec<String> {
    headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// An error with its causes, `a: b: c` (hyper's errors keep the I/O error as their source).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The vote of a response that is not valid HTTP: all such responses vote alike.
pub(super) fn malformed_digest() -> voter::Digest {
    voter::fault::digest(b"\0resh: a response that is not valid HTTP")
}

/// The vote of a replica that gave no whole response within `http.request_timeout_ms`
/// (ordered mode, where a request must end for the order to go on): all such votes alike.
pub(super) fn timed_out_digest() -> voter::Digest {
    voter::fault::digest(b"\0resh: no whole response within http.request_timeout_ms")
}

/// resh's own response.
pub(super) fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("resh: {text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_absolute_form_are_not_forwarded() {
        let request = Request::builder()
            .method("POST")
            .uri("http://example.com/a/b?c=d")
            .header("Connection", "keep-alive, x-private")
            .header("Keep-Alive", "timeout=5")
            .header("Transfer-Encoding", "chunked")
            .header("Host", "example.com")
            .header("Content-Length", "3")
            .header("Accept", "text/html")
            .header("X-Private", "1")
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        let out = forward(&parts, Bytes::from_static(b"abc"));
        assert_eq!(out.uri(), "/a/b?c=d");
        assert_eq!(out.method(), "POST");
        let names: Vec<&str> = out.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "accept"]);
    }
}
