//! Stream-mode sessions: a sans-I/O core ([`session::Session`]) and the tokio shell around it.
//!
//! The core decides everything that must be right (flow control, the clocks, the vote, how the
//! session ends) and is tested without sockets; this shell only moves bytes between the sockets
//! and the core. The client is reached through [`client::ClientIo`] (a tokio [`TcpStream`]
//! today), the replicas through tokio [`TcpStream`]s.
//!
//! Phases, in the order they run:
//! 1. **admit**: take the replicas the supervisor admits now; fewer than the quorum and the
//!    client is refused (reset) at once, since nothing it sent could ever be answered.
//! 2. **connect** to every admitted replica at once, each bounded by the connect timeout;
//!    a replica that cannot be reached is a `crashed` fault.
//! 3. **relay**: one task owns the client's and every replica's socket and polls them all
//!    (`Relay::poll`), in rounds that follow the core's order (see [`session`]): deadlines;
//!    input (what a replica has not taken of the last chunk, then the client, whose chunk is
//!    written to every replica straight from the read buffer); output (each replica as far as
//!    the core's read room allows, through the fault-injection taps, into the core); the
//!    released output to the client in one write; the core's actions (cut a faulty replica and
//!    report it, pass a half-close on).
//!
//!    Why one task: on the hot path the wake-ups, not the bytes, are what costs on a small
//!    machine. With a task per socket every request crossed tasks twice (client reader, replica
//!    reader, session loop), each a wake-up and a queue; here a request costs the two wake-ups any
//!    proxy has (client readable, replica readable), like HAProxy's event loop. Reads land in a
//!    per-thread scratch buffer (the voter copies what it keeps, the replicas' sockets take the
//!    rest), so an idle session holds no buffer and the hot path allocates nothing.
//! 4. **end**: once the core says the session is over, the replicas' connections are closed,
//!    then the client's: a FIN when it got all of its output, a reset (RST) when the vote was
//!    undecidable or its output is incomplete.
pub mod client;
pub mod session;

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};

use crate::fault::{FaultEvent, Position};
use crate::metrics::{Refusal, Verdict};
use crate::server::{Shared, Stopping};
use client::ClientIo;
use replicas::inject::Tap;
use replicas::Admitted;
use session::{Action, Close, End, Reason, Session};

/// The largest read from a socket, and so the largest chunk voted or passed on at once.
const READ_CHUNK: usize = 64 * 1024;
/// The most slices one vectored write to the client takes.
const MAX_IOV: usize = 64;
/// Rounds of work one poll of a session may do before it lets the other sessions of its
/// thread run (tokio's cooperative budget also stops a busy session, at socket operations).
const ROUNDS_PER_POLL: usize = 32;

thread_local! {
    /// Where socket reads land. One per worker thread, not one per session: every byte read is
    /// used before the poll that read it returns (the voter copies what it keeps; a replica that
    /// does not take a whole chunk at once keeps a copy of the rest, in the core).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// One replica connection of a session: the sockets and hooks the core does not see.
struct ReplicaConn {
    admitted: Admitted,
    /// The connection; `None` if it could not be made or once the replica was cut off.
    stream: Option<TcpStream>,
    /// Fault-injection hooks of the output (an armed `outflip` or `delay` acts before the voter
    /// sees the bytes) and the input (an armed `inflip` corrupts this replica's copy only).
    out_tap: Tap,
    in_tap: Tap,
}

/// Serves one client connection in stream mode to its end.
pub(crate) async fn serve(shared: Arc<Shared>, client: TcpStream, id: u64) {
    let _ = client.set_nodelay(true);
    serve_client(shared, client, id).await
}

/// Serves one client, reached through any [`ClientIo`], in stream mode to its end.
async fn serve_client<C: ClientIo>(shared: Arc<Shared>, client: C, id: u64) {
    let Ok((config, admitted)) = shared.admit_session() else {
        client.reset();
        return;
    };
    debug!(peer = ?client.peer_addr().ok(), to = ?client.original_dst().ok(), "stream session");
    let mut core = match Session::new(config.stream_vote(admitted.len()), config.idle_timeout()) {
        Ok(core) => core,
        Err(e) => {
            // The configuration was validated, so this is a bug, not bad input.
            warn!(error = %e, "internal: voter parameters refused");
            client.reset();
            return;
        }
    };

    // Phase 2: connect to every admitted replica at once, in this task (a task per connect
    // would cost a spawn per replica per session).
    let connects =
        admitted.iter().map(|r| Box::pin(tokio::time::timeout(config.connect_timeout(), TcpStream::connect(r.addr))));
    let connected = join_all(connects.collect()).await;
    // Out of file descriptors (or memory) is resh's own limit, not the replica's fault: the
    // client is refused (reset) and no replica is blamed.
    if let Some(e) = connected
        .iter()
        .find_map(|c| c.as_ref().ok().and_then(|r| r.as_ref().err()))
        .filter(|e| crate::server::resh_exhausted(e))
    {
        warn!(error = %e, "refusing client: resh is out of file descriptors or memory (raise `ulimit -n` or lower max_sessions); no replica is blamed");
        shared.metrics.refused(Refusal::Exhausted);
        client.reset();
        return;
    }
    shared.metrics.session_started();
    let start = Instant::now();
    let mut links: Vec<ReplicaConn> = Vec::with_capacity(admitted.len());
    for (i, (replica, connect)) in admitted.into_iter().zip(connected).enumerate() {
        let (out_tap, in_tap) = (shared.supervisor.tap(replica.index), shared.supervisor.tap(replica.index));
        let mut link = ReplicaConn { admitted: replica, stream: None, out_tap, in_tap };
        match connect {
            Ok(Ok(stream)) => {
                shared.supervisor.count_session(link.admitted.index);
                let _ = stream.set_nodelay(true);
                link.stream = Some(stream);
            }
            Ok(Err(e)) => {
                warn!(replica = %link.admitted.name, addr = %link.admitted.addr, error = %e, "cannot connect to replica");
                core.replica_failed(i, Duration::ZERO);
            }
            Err(_) => {
                warn!(replica = %link.admitted.name, addr = %link.admitted.addr, "cannot connect to replica: connect timeout");
                core.replica_failed(i, Duration::ZERO);
            }
        }
        links.push(link);
    }

    // Phase 3: relay until the end.
    let mut relay = Relay {
        shared: &shared,
        id,
        core,
        links,
        client,
        start,
        timer: Box::pin(tokio::time::sleep_until(far(start))),
        armed: far(start),
        from_client: 0,
    };
    // A shutdown reaches the session here. Draining, it is looked at every tenth of the quiet
    // time and ends (FIN) once it owes nothing (see `Relay::done`); cut off, it ends at once, in
    // a reset unless it is done.
    let mut stopping = shared.stopping();
    // A shutdown that began before this session subscribed is acted on at once.
    stopping.mark_changed();
    let mut draining: Option<tokio::time::Interval> = None;
    let end = loop {
        let look = async {
            match draining.as_mut() {
                Some(interval) => interval.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            end = poll_fn(|cx| relay.poll(cx)) => break end,
            changed = stopping.changed() => {
                match changed.map(|()| *stopping.borrow_and_update()) {
                    Ok(Stopping::No) => {}
                    Ok(Stopping::Drain) => {
                        draining = Some(tokio::time::interval(crate::server::DRAIN_QUIET / 10));
                    }
                    Ok(Stopping::Now) | Err(_) => {
                        if relay.done() {
                            relay.core.close_drained();
                        } else {
                            relay.core.shut_down();
                        }
                    }
                }
            }
            _ = look => {
                if relay.done() {
                    relay.core.close_drained();
                }
            }
        }
    };

    // Phase 4: end. The replicas' connections close first.
    let Relay { links, client, from_client, .. } = relay;
    drop(links);
    let idle_ms = config.idle_timeout().as_millis() as u64;
    let End { close, verdict, reason, released } = end;
    if reason == Reason::Idle {
        info!(idle_ms, "closing idle session");
    }
    if verdict == Verdict::Undecidable {
        warn!(%reason, released, "vote undecidable: aborting session (reset), nothing unverified released");
        // Reset, and no FIN first: a client could take a FIN for a complete answer.
        client.reset();
    } else if close == Close::Reset {
        // A FIN here could pass for the end of a complete answer (protocols that end a response
        // by closing the connection); a reset cannot.
        info!(%reason, "session closed with output incomplete: reset");
        client.reset();
    } else {
        if reason == Reason::ClientStalled {
            info!(%reason, "session closed");
        }
        client.close();
    }
    shared.metrics.session_ended(verdict);
    // One line per session, as an access log has it (the span adds the session id and client).
    info!(
        verdict = verdict.name(),
        %reason,
        close = if close == Close::Reset { "reset" } else { "fin" },
        duration_ms = start.elapsed().as_millis() as u64,
        from_client,
        to_client = released,
        "session ended"
    );
}

/// Awaits every future, all at once; their outputs in order.
async fn join_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match Pin::new(future).poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// A time that is never reached in practice: the timer's resting deadline.
fn far(now: Instant) -> Instant {
    now + Duration::from_secs(86_400)
}

/// The relay phase of one session: the sockets, and the core that decides what they do.
struct Relay<'a, C> {
    shared: &'a Shared,
    id: u64,
    core: Session,
    links: Vec<ReplicaConn>,
    client: C,
    /// Session time zero: the core's clock is the time since.
    start: Instant,
    /// One timer for the session, re-armed only to fire *earlier*: when it fires before the
    /// current deadline (which moves later with every byte), the relay just looks again.
    /// Re-arming it on every chunk would cost a timer-wheel update per chunk.
    timer: Pin<Box<Sleep>>,
    armed: Instant,
    /// Bytes the client sent (for the session's log line).
    from_client: u64,
}

/// Why a write did not complete.
enum WriteError {
    /// The socket is full: its waker is registered.
    Full,
    /// The connection failed.
    Io(io::Error),
}

impl<C: ClientIo> Relay<'_, C> {
    /// Whether the session is done as far as a shutdown can tell: it owes nothing (see
    /// `Session::owes_nothing`), no byte moved for [`DRAIN_QUIET`](crate::server::DRAIN_QUIET),
    /// and the kernel holds nothing on its way in any of its connections.
    fn done(&self) -> bool {
        let quiet = Instant::now().saturating_duration_since(self.start).saturating_sub(self.core.last_activity());
        quiet >= crate::server::DRAIN_QUIET
            && self.core.owes_nothing()
            && !self.client.in_flight()
            && self
                .links
                .iter()
                .filter_map(|l| l.stream.as_ref())
                .all(|s| crate::sys::queued(s).is_ok_and(|q| q.is_empty()))
    }

    /// Does all the work there is, round after round, until no socket and no deadline has more;
    /// `Ready` with how it ends once the session is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            // One clock reading per poll: its rounds take microseconds, and a reading costs a
            // noticeable share of a small request in a VM.
            let instant = Instant::now();
            let now = instant.saturating_duration_since(self.start);
            for _ in 0..ROUNDS_PER_POLL {
                let mut progress = self.core.tick(now);
                progress |= self.pass_input(cx, &mut scratch, now);
                if self.read_output(cx, &mut scratch, now) {
                    progress = true;
                    self.record_timings();
                }
                progress |= self.write_output(cx, now);
                progress |= self.apply_actions(cx);
                if let Some(end) = self.core.end() {
                    // What the last rounds measured (a delayed output's push, say).
                    self.record_timings();
                    return Poll::Ready(end);
                }
                if !progress && !self.arm_timer(cx, now, instant) {
                    return Poll::Pending;
                }
            }
            // Still busy: let the other sessions on this thread have their turn.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    /// Arms the timer for the core's next deadline; true if one is due already.
    fn arm_timer(&mut self, cx: &mut Context<'_>, now: Duration, instant: Instant) -> bool {
        let next = self.core.next_deadline();
        if next <= now {
            return true;
        }
        let at = self.start.checked_add(next).unwrap_or_else(|| far(instant));
        if at < self.armed {
            self.armed = at;
            self.timer.as_mut().reset(at);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            // An elapsed timer stays ready: park it far away, or a next deadline beyond `far`
            // would find it ready on every round (a busy loop).
            self.armed = far(instant);
            self.timer.as_mut().reset(self.armed);
            return true;
        }
        false
    }

    /// Passes client input on to the replicas: first what some replica has not yet taken of
    /// the last chunk, then, once every replica took all of it, the next chunk. True if anything
    /// moved.
    fn pass_input(&mut self, cx: &mut Context<'_>, scratch: &mut [u8], now: Duration) -> bool {
        let mut progress = false;
        for i in 0..self.links.len() {
            let (Some(stream), Some(rest)) = (self.links[i].stream.as_mut(), self.core.pending_input(i)) else {
                continue;
            };
            let mut left = rest;
            let result = write_some(stream, cx, &mut left);
            let written = rest.len() - left.len();
            match result {
                Ok(()) | Err(WriteError::Full) => {
                    progress |= written > 0;
                    self.core.input_written(i, written, now);
                }
                Err(WriteError::Io(e)) => {
                    progress = true;
                    self.input_failed(i, e);
                }
            }
        }
        if !self.core.wants_client_input() {
            return progress;
        }
        match self.client.poll_read(cx, scratch) {
            Poll::Pending => progress,
            Poll::Ready(Err(e)) => {
                debug!(error = %e, "client connection failed");
                self.core.client_failed();
                true
            }
            Poll::Ready(Ok(0)) => {
                // The client's half-close: the core passes it on.
                self.core.client_closed();
                true
            }
            Poll::Ready(Ok(n)) => {
                let chunk = &scratch[..n.min(scratch.len())];
                self.shared.metrics.client_in(chunk.len());
                self.from_client += chunk.len() as u64;
                self.core.client_data(chunk.len(), now);
                for i in 0..self.links.len() {
                    if !self.core.takes_input(i) {
                        continue;
                    }
                    let link = &mut self.links[i];
                    let Some(stream) = link.stream.as_mut() else { continue };
                    let data = link.in_tap.input_slice(chunk);
                    let mut rest: &[u8] = &data;
                    match write_some(stream, cx, &mut rest) {
                        Ok(()) => {}
                        Err(WriteError::Full) => {
                            let taken = data.len() - rest.len();
                            self.core.input_offered(i, &data, taken, now);
                        }
                        Err(WriteError::Io(e)) => self.input_failed(i, e),
                    }
                }
                true
            }
        }
    }

    /// A write to replica `i` failed: it takes no more input (see [`Session::input_failed`]).
    fn input_failed(&mut self, i: usize, error: io::Error) {
        debug!(replica = %self.links[i].admitted.name, %error, "replica takes no more input");
        self.core.input_failed(i);
    }

    /// Reads one chunk of output from every replica that has some and may be read
    /// ([`Session::read_room`]), into the core. True if anything was read.
    fn read_output(&mut self, cx: &mut Context<'_>, scratch: &mut [u8], now: Duration) -> bool {
        let mut progress = false;
        for i in 0..self.links.len() {
            let room = self.core.read_room(i).min(scratch.len());
            if room == 0 {
                continue;
            }
            let link = &mut self.links[i];
            let Some(stream) = link.stream.as_mut() else { continue };
            let mut buf = ReadBuf::new(&mut scratch[..room]);
            match Pin::new(stream).poll_read(cx, &mut buf) {
                Poll::Pending => continue,
                // A reset from a process that is still there is how a replica that closes its
                // connection with input unread ends its output: voted as an end, so a short
                // output is still `closed_early`. From a process that ended, it is a crash.
                Poll::Ready(Err(e)) if e.kind() != io::ErrorKind::ConnectionReset => {
                    debug!(replica = %link.admitted.name, error = %e, "replica connection failed");
                    self.core.replica_failed(i, now);
                }
                Poll::Ready(result) if result.is_err() || buf.filled().is_empty() => {
                    let admitted = &link.admitted;
                    if self.shared.supervisor.process_gone(admitted.index, admitted.incarnation) {
                        debug!(replica = %admitted.name, "output closed by a process that ended: a crash");
                        self.core.replica_failed(i, now);
                    } else {
                        self.core.replica_closed(i, now);
                    }
                }
                Poll::Ready(_) => {
                    // Data (errors and the end are taken above).
                    let n = buf.filled().len();
                    self.shared.supervisor.count_output(link.admitted.index, n);
                    let output = &mut scratch[..n];
                    match link.out_tap.output_now(output) {
                        Some(delay) => self.core.replica_data_delayed(i, output, now.saturating_add(delay)),
                        None => self.core.replica_data(i, output, now),
                    }
                }
            }
            progress = true;
        }
        progress
    }

    /// Hands the replicas' answer times and trails since the last call to their moving
    /// averages (`resh_replica_answer_microseconds`, `resh_replica_trail_microseconds`).
    fn record_timings(&mut self) {
        for (i, link) in self.links.iter().enumerate() {
            let timing = self.core.take_timing(i);
            if timing.answer.is_some() || timing.trail.is_some() {
                link.admitted.timing.record(timing.answer, timing.trail);
            }
        }
    }

    /// Writes released output to the client, all of it in one (vectored) write if the socket
    /// takes it. True if anything was written.
    fn write_output(&mut self, cx: &mut Context<'_>, now: Duration) -> bool {
        let released = self.core.release(now);
        if released.bytes > 0 {
            self.shared.metrics.client_out(released.bytes);
            if let Some(waited) = released.waited {
                self.shared.metrics.vote_latency(waited);
            }
        }
        let mut progress = false;
        loop {
            let out = self.core.output();
            let written = match out.len() {
                0 => return progress,
                // One chunk (the common case for request/response traffic): a plain `send`,
                // which costs the kernel less than `writev`'s iovec handling.
                1 => self.client.poll_write(cx, &out[0]),
                _ => {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let count = out.len().min(MAX_IOV);
                    for (slot, chunk) in slices.iter_mut().zip(out) {
                        *slot = IoSlice::new(chunk);
                    }
                    self.client.poll_write_vectored(cx, &slices[..count])
                }
            };
            match written {
                Poll::Pending => {
                    self.core.client_took(0, now);
                    return progress;
                }
                Poll::Ready(Ok(0)) => {
                    debug!("client connection failed: it takes no more output");
                    self.core.client_failed();
                    return true;
                }
                Poll::Ready(Err(e)) => {
                    debug!(error = %e, "client connection failed");
                    self.core.client_failed();
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    progress = true;
                    self.core.client_took(n, now);
                }
            }
        }
    }

    /// Carries out what the core asks for: cut faulty replicas off (and report their faults),
    /// pass the client's half-close on, close the client's write side. True if there was any.
    fn apply_actions(&mut self, cx: &mut Context<'_>) -> bool {
        let mut any = false;
        while let Some(action) = self.core.poll_action() {
            any = true;
            match action {
                Action::CloseInput(i) => {
                    if let Some(stream) = self.links.get_mut(i).and_then(|l| l.stream.as_mut()) {
                        let _ = Pin::new(stream).poll_shutdown(cx);
                    }
                }
                Action::Cut(fault) => {
                    let Some(link) = self.links.get_mut(fault.replica) else { continue };
                    link.stream = None;
                    self.shared.faults.report(&FaultEvent {
                        session: Some(self.id),
                        replica: link.admitted.index,
                        name: Arc::clone(&link.admitted.name),
                        incarnation: link.admitted.incarnation,
                        position: Position::Byte(fault.offset),
                        kind: fault.kind,
                    });
                }
                Action::CloseOutput => {
                    let _ = self.client.poll_shutdown(cx);
                }
            }
        }
        any
    }
}

/// Writes as much of `data` as the socket takes, advancing it; `Ok` once all of it is written.
fn write_some(stream: &mut TcpStream, cx: &mut Context<'_>, data: &mut impl Buf) -> Result<(), WriteError> {
    while data.has_remaining() {
        match Pin::new(&mut *stream).poll_write(cx, data.chunk()) {
            Poll::Pending => return Err(WriteError::Full),
            Poll::Ready(Ok(0)) => return Err(WriteError::Io(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => data.advance(n),
            Poll::Ready(Err(e)) => return Err(WriteError::Io(e)),
        }
    }
    Ok(())
}
