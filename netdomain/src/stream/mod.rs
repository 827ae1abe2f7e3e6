//! One client session in stream mode: the async shell around [`voter::StreamVoter`].
//!
//! Phases, in the order they run:
//! 1. **admit**: take the replicas the supervisor admits now; fewer than the quorum and the
//!    client is refused (reset) at once, since nothing it sent could ever be answered.
//! 2. **connect** to every admitted replica at once, each bounded by the connect timeout;
//!    a replica that cannot be reached is a `crashed` fault.
//! 3. **relay**: one task owns the client's and every replica's socket and polls them all
//!    ([`Relay::poll`]). Each round it
//!    - passes client input on: a chunk read from the client is written to every replica's
//!      socket; a replica whose socket is full keeps the rest of the chunk and the client is
//!      not read again until every replica took all of it (reading from the client pauses while
//!      a replica is behind on input). A replica that takes no input for the lag timeout, while
//!      its output is being read, is reported late. The client's half-close is passed on;
//!    - reads replica output into the voter, each replica only while the voter holds less than
//!      `max_unreleased_bytes` of its output (unreleased output per replica is bounded) and
//!      while it is less than `max_lag_bytes` ahead of the slowest replica (a replica that is
//!      merely slower holds the others back, and is late only after `lag_timeout`);
//!    - reports the voter's faults and cuts the faulty replicas off;
//!    - writes what the voter released to the client in one vectored write. While the client
//!      takes no output, replicas are not read (released output is bounded too) and the
//!      voter's clock stands still, so replicas do not look late for the client's slowness.
//!
//!    Why one task: on the hot path the wake-ups, not the bytes, are what costs on a small
//!    machine. With a task per socket every request crossed tasks twice (client reader, replica
//!    reader, session loop), each a wake-up and a queue; here a request costs the two wake-ups any
//!    proxy has (client readable, replica readable), like HAProxy's event loop. Reads land in a
//!    per-thread scratch buffer (the voter copies what it keeps, the replicas' sockets take the
//!    rest), so an idle session holds no buffer and the hot path allocates nothing.
//! 4. **end**: when a quorum of replicas closed at the same offset, the client's write side is
//!    closed (half-close); the session ends once the client closed its side too and every replica
//!    still in the vote was checked to the end. When the vote is undecidable, the client is reset
//!    (RST) and nothing unverified is released; so is a session that ends (idle, or a client that
//!    took nothing) with output the client has not fully got, since a FIN could pass for the end
//!    of a complete answer.
pub mod session;

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};
use voter::{FaultKind, Status, StreamVoter};

use crate::fault::{FaultEvent, Position};
use crate::metrics::{Refusal, Verdict};
use crate::server::Shared;
use replicas::inject::Tap;
use replicas::Admitted;

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
    /// does not take a whole chunk at once keeps a copy of the rest).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// One replica connection of a session.
struct Lane {
    admitted: Admitted,
    /// The connection; `None` if it could not be made or once the replica was cut off.
    stream: Option<TcpStream>,
    /// Fault-injection hooks of the output (an armed `outflip` or `delay` acts before the voter
    /// sees the bytes) and the input (an armed `inflip` corrupts this replica's copy only).
    out_tap: Tap,
    in_tap: Tap,
    /// The replica closed its output, or its connection failed.
    output_ended: bool,
    /// No more input goes to this replica (the client's half-close was passed on, or a write
    /// failed).
    input_closed: bool,
    /// What this replica has not yet taken of the current client chunk.
    pending_in: Option<Bytes>,
    /// Since when the replica has taken no input while it had some to take.
    input_blocked_since: Option<Instant>,
    /// Output held back by an injected delay, and until when.
    delayed: Option<(Instant, Bytes)>,
}

impl Lane {
    /// Closes the connection (both directions) and forgets what was pending for it.
    fn cut(&mut self) {
        self.stream = None;
        self.pending_in = None;
        self.input_blocked_since = None;
        self.delayed = None;
    }
}

/// Serves one client connection in stream mode to its end.
pub(crate) async fn serve(shared: Arc<Shared>, client: TcpStream, id: u64) {
    let config = &shared.config;
    let quorum = config.quorum();
    let admitted = shared.supervisor.admit_session();
    if admitted.len() < quorum {
        warn!(admitted = admitted.len(), quorum, "refusing client: fewer replicas admitted than the quorum");
        shared.metrics.refused(Refusal::NoQuorum);
        reset(client);
        return;
    }
    let _ = client.set_nodelay(true);
    shared.metrics.session_started();
    let mut voter = match StreamVoter::new(config.stream_vote(admitted.len())) {
        Ok(v) => v,
        Err(e) => {
            // The configuration was validated, so this is a bug, not bad input.
            warn!(error = %e, "internal: voter parameters refused");
            shared.metrics.session_ended(Verdict::Undecidable);
            reset(client);
            return;
        }
    };

    // Phase 2: connect to every admitted replica at once, in this task (a task per connect
    // would cost a spawn per replica per session).
    let connects =
        admitted.iter().map(|r| Box::pin(tokio::time::timeout(config.connect_timeout(), TcpStream::connect(r.addr))));
    let connected = join_all(connects.collect()).await;
    let start = Instant::now();
    let mut lanes: Vec<Lane> = Vec::with_capacity(admitted.len());
    for (i, (replica, connect)) in admitted.into_iter().zip(connected).enumerate() {
        let (out_tap, in_tap) = (shared.supervisor.tap(replica.index), shared.supervisor.tap(replica.index));
        let mut lane = Lane {
            admitted: replica,
            stream: None,
            out_tap,
            in_tap,
            output_ended: false,
            input_closed: false,
            pending_in: None,
            input_blocked_since: None,
            delayed: None,
        };
        match connect {
            Ok(Ok(stream)) => {
                shared.supervisor.count_session(lane.admitted.index);
                let _ = stream.set_nodelay(true);
                lane.stream = Some(stream);
            }
            Ok(Err(e)) => {
                warn!(replica = %lane.admitted.name, addr = %lane.admitted.addr, error = %e, "cannot connect to replica");
                voter.fail(i, Duration::ZERO);
            }
            Err(_) => {
                warn!(replica = %lane.admitted.name, addr = %lane.admitted.addr, "cannot connect to replica: connect timeout");
                voter.fail(i, Duration::ZERO);
            }
        }
        lanes.push(lane);
    }

    // Phase 3: relay until the end.
    let mut relay = Relay {
        shared: &shared,
        id,
        idle: config.idle_timeout(),
        voter,
        lanes,
        client,
        client_ended: false,
        output_finished: false,
        out: Vec::new(),
        out_bytes: 0,
        start,
        paused: Duration::ZERO,
        out_blocked_since: None,
        last_activity: start,
        waiting_since: None,
        faults_seen: 0,
        timer: Box::pin(tokio::time::sleep_until(far(start))),
        armed: far(start),
        ended: false,
        aborted: None,
    };
    relay.report_faults();
    poll_fn(|cx| relay.poll(cx)).await;

    // Phase 4: end.
    let Relay { voter, lanes, client, faults_seen, aborted, out, .. } = relay;
    // Output the client has not got all of: agreed bytes not yet written, or output that was
    // still waiting for its quorum when the session ended (idle, or a client that took nothing).
    let incomplete = !out.is_empty() || (*voter.status() != Status::Finished && voter.unreleased_total() > 0);
    let verdict = if matches!(voter.status(), Status::Undecidable(_)) {
        Verdict::Undecidable
    } else if faults_seen > 0 {
        Verdict::Masked
    } else {
        Verdict::Agreed
    };
    // The replicas' connections close first.
    drop(lanes);
    if verdict == Verdict::Undecidable {
        let why = aborted.unwrap_or_default();
        warn!(reason = %why, released = voter.released(), "vote undecidable: aborting session (reset), nothing unverified released");
        // Reset, and no FIN first: a client could take a FIN for a complete answer.
        reset(client);
    } else if incomplete {
        // A FIN here could pass for the end of a complete answer (protocols that end a response
        // by closing the connection); a reset cannot.
        info!(reason = aborted.as_deref().unwrap_or("idle"), "session closed with output incomplete: reset");
        reset(client);
    } else {
        if let Some(why) = aborted {
            info!(reason = %why, "session closed");
        }
        drop(client);
    }
    shared.metrics.session_ended(verdict);
    debug!(verdict = verdict.name(), released = voter.released(), "session ended");
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

/// The relay phase of one session: every socket, the voter, and what is in flight between them.
struct Relay<'a> {
    shared: &'a Shared,
    id: u64,
    idle: Duration,
    voter: StreamVoter,
    lanes: Vec<Lane>,
    client: TcpStream,
    /// The client closed its side (its input ended).
    client_ended: bool,
    /// The client's output is complete and its write side was closed.
    output_finished: bool,
    /// Released output not yet written to the client, and how many bytes of it.
    out: Vec<Bytes>,
    out_bytes: usize,
    start: Instant,
    /// Time spent blocked on a client that took no output: not counted by the voter's clock.
    paused: Duration,
    /// Since when released output has been waiting for the client to take it.
    out_blocked_since: Option<Instant>,
    last_activity: Instant,
    /// Since when output has been waiting for a quorum (for the vote-latency metric).
    waiting_since: Option<Instant>,
    faults_seen: usize,
    /// One timer for the session, re-armed only to fire *earlier*: when it fires before the
    /// current deadline (which moves later with every byte), the relay just looks again.
    /// Re-arming it on every chunk would cost a timer-wheel update per chunk.
    timer: Pin<Box<Sleep>>,
    armed: Instant,
    /// The session is over (client gone, idle, or the vote ended it).
    ended: bool,
    /// Why the session ended early, if it did.
    aborted: Option<String>,
}

/// Why a write did not complete.
enum WriteError {
    /// The socket is full: its waker is registered.
    Full,
    /// The connection failed.
    Io(io::Error),
}

impl Relay<'_> {
    /// Does all the work there is, round after round, until no socket and no deadline has more;
    /// `Ready` once the session is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            // One clock reading per poll: its rounds take microseconds, and a reading costs a
            // noticeable share of a small request in a VM.
            let now = Instant::now();
            for _ in 0..ROUNDS_PER_POLL {
                let mut progress = self.on_deadlines(now);
                progress |= self.pass_input(cx, &mut scratch, now);
                progress |= self.read_output(cx, &mut scratch, now);
                self.report_faults();
                progress |= self.write_released(cx, now);
                if self.over() {
                    return Poll::Ready(());
                }
                if !progress && !self.arm_timer(cx, now) {
                    return Poll::Pending;
                }
            }
            // Still busy: let the other sessions on this thread have their turn.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    /// The voter's clock: session time, less the time spent blocked on the client.
    fn voter_now(&self, now: Instant) -> Duration {
        let blocked = self.out_blocked_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        now.saturating_duration_since(self.start).saturating_sub(self.paused + blocked)
    }

    /// How much of replica `i`'s output may be read now (0: none). Not once it ended, nor while
    /// an injected delay holds some back, nor while released output waits for the client; no
    /// more than the voter may hold unreleased for it; and no further than `max_lag_bytes`
    /// ahead of the slowest replica still in the vote. The last bound is flow control, not a
    /// fault: without it a replica that is merely slower (descheduled, or a slower version)
    /// falls behind by whatever the sockets buffer and is excluded as late at once; with it the
    /// others wait, and a slow one is late only once it trails by `lag_timeout`. (Exactly the
    /// voter's limit: a wider window would read past the point where it declares one late.)
    fn read_room(&self, i: usize, slowest: Option<u64>) -> usize {
        let lane = &self.lanes[i];
        if lane.output_ended || lane.delayed.is_some() || !self.out.is_empty() {
            return 0;
        }
        let limits = self.voter.config();
        let ahead = slowest.map_or(0, |s| self.voter.produced(i).saturating_sub(s));
        let lag_room = (limits.max_lag_bytes as u64).saturating_sub(ahead) as usize;
        limits.max_unreleased.saturating_sub(self.voter.unreleased(i)).min(lag_room)
    }

    /// Whether replica `i`'s output is read now, and so whether its not taking input counts:
    /// a replica whose output is left unread may well be unable to take input.
    fn reading(&self, i: usize) -> bool {
        self.read_room(i, self.voter.slowest_produced()) > 0
    }

    /// How long a replica may take no input (while its output is read) before it is late: the
    /// lag timeout, as the voter has it.
    fn stall_limit(&self) -> Duration {
        self.voter.config().lag_timeout
    }

    fn over(&mut self) -> bool {
        if let Status::Undecidable(why) = self.voter.status() {
            self.aborted.get_or_insert_with(|| why.to_string());
            return true;
        }
        // Done when the client has all of its output and closed its side, and every replica
        // still in the vote has been checked up to the end (so a slow minority's faults are
        // found even though the client no longer waits for them).
        self.ended || self.aborted.is_some() || (self.output_finished && self.client_ended && self.voter.settled())
    }

    /// The earliest time something is due: the idle timeout, the voter's deadlines, a replica
    /// not taking input, delayed output, a client not taking output.
    fn next_deadline(&self, now: Instant) -> Instant {
        let mut next = match self.out_blocked_since {
            Some(since) => since + self.idle,
            None => {
                let idle = self.last_activity + self.idle;
                self.voter.next_deadline().map_or(idle, |d| idle.min(self.start + self.paused + d))
            }
        };
        for lane in &self.lanes {
            if let Some(since) = lane.input_blocked_since {
                next = next.min(since + self.stall_limit());
            }
            if let Some((until, _)) = &lane.delayed {
                next = next.min(*until);
            }
        }
        next.max(now)
    }

    /// Arms the timer for the next deadline; true if one is due already.
    fn arm_timer(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let next = self.next_deadline(now);
        if next <= now {
            return true;
        }
        if next < self.armed {
            self.armed = next;
            self.timer.as_mut().reset(next);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            // An elapsed timer stays ready: park it far away, or a next deadline beyond `far`
            // would find it ready on every round (a busy loop).
            self.armed = far(now);
            self.timer.as_mut().reset(self.armed);
            return true;
        }
        false
    }

    /// Applies whatever is due at `now`; true if anything changed.
    fn on_deadlines(&mut self, now: Instant) -> bool {
        // While output waits for the client, the client's slowness is what is timed, not idleness.
        if let Some(since) = self.out_blocked_since {
            if now >= since + self.idle {
                self.client_ended = true;
                self.output_finished = true;
                self.aborted.get_or_insert_with(|| "client stopped taking output".to_string());
                return true;
            }
        } else if now >= self.last_activity + self.idle {
            info!(idle_ms = self.idle.as_millis() as u64, "closing idle session");
            self.ended = true;
            return true;
        }
        let vnow = self.voter_now(now);
        let stall_limit = self.stall_limit();
        let mut changed = false;
        for i in 0..self.lanes.len() {
            let reading = self.reading(i);
            let lane = &mut self.lanes[i];
            if let Some(since) = lane.input_blocked_since {
                if lane.output_ended {
                    // Its output is complete (and voted on); that it takes no more input is
                    // no fault (a server that answers and closes). It gets no more.
                    if now >= since + stall_limit {
                        lane.input_blocked_since = None;
                        lane.pending_in = None;
                        lane.input_closed = true;
                        changed = true;
                    }
                } else if !reading {
                    // Its output is not being read, so it may well be unable to take input:
                    // not its fault. Time starts again once its output is read.
                    lane.input_blocked_since = Some(now);
                } else if now >= since + stall_limit {
                    lane.input_blocked_since = None;
                    self.voter.exclude_for(i, FaultKind::Late { behind: 0 }, vnow);
                    changed = true;
                }
            }
            if lane.delayed.as_ref().is_some_and(|(until, _)| now >= *until) {
                if let Some((_, bytes)) = lane.delayed.take() {
                    self.push_output(i, &bytes, now, vnow);
                    changed = true;
                }
            }
        }
        // Only when one of the voter's deadlines is due: a tick votes again, and most rounds
        // have nothing for it.
        if self.out_blocked_since.is_none() && self.voter.next_deadline().is_some_and(|d| vnow >= d) {
            self.voter.tick(vnow);
            changed = true;
        }
        changed
    }

    /// Passes client input on to the replicas: first what some replica has not yet taken of
    /// the current chunk, then, once every replica took all of it, the next chunk. True if
    /// anything moved.
    fn pass_input(&mut self, cx: &mut Context<'_>, scratch: &mut [u8], now: Instant) -> bool {
        let mut progress = false;
        let mut behind = false;
        for i in 0..self.lanes.len() {
            let lane = &mut self.lanes[i];
            let (Some(stream), Some(rest)) = (lane.stream.as_mut(), lane.pending_in.as_mut()) else { continue };
            let before = rest.len();
            match write_some(stream, cx, rest) {
                Ok(()) => {
                    lane.pending_in = None;
                    lane.input_blocked_since = None;
                    progress = true;
                }
                Err(WriteError::Full) => {
                    behind = true;
                    if rest.len() < before {
                        lane.input_blocked_since = Some(now);
                        progress = true;
                    }
                }
                Err(WriteError::Io(e)) => {
                    progress = true;
                    self.input_failed(i, e);
                }
            }
        }
        if behind || self.client_ended {
            return progress;
        }
        let mut buf = ReadBuf::new(scratch);
        match Pin::new(&mut self.client).poll_read(cx, &mut buf) {
            Poll::Pending => progress,
            Poll::Ready(Err(e)) => {
                debug!(error = %e, "client connection failed");
                self.ended = true;
                true
            }
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                // The client's half-close: pass it on.
                self.client_ended = true;
                for lane in &mut self.lanes {
                    if let (Some(stream), false) = (lane.stream.as_mut(), lane.input_closed) {
                        let _ = Pin::new(stream).poll_shutdown(cx);
                        lane.input_closed = true;
                    }
                }
                true
            }
            Poll::Ready(Ok(())) => {
                let chunk = buf.filled();
                self.shared.metrics.client_in(chunk.len());
                self.last_activity = now;
                for i in 0..self.lanes.len() {
                    let lane = &mut self.lanes[i];
                    let Some(stream) = lane.stream.as_mut().filter(|_| !lane.input_closed) else { continue };
                    let data = lane.in_tap.input_slice(chunk);
                    let mut rest: &[u8] = &data;
                    match write_some(stream, cx, &mut rest) {
                        Ok(()) => {}
                        Err(WriteError::Full) => {
                            lane.pending_in = Some(Bytes::copy_from_slice(rest));
                            lane.input_blocked_since = Some(now);
                        }
                        Err(WriteError::Io(e)) => self.input_failed(i, e),
                    }
                }
                true
            }
        }
    }

    /// A write to replica `i` failed: it takes no more input. Its verdict is left to the read
    /// side, which sees the same broken connection (an error or an end of its output): a
    /// replica that answered and closed (and so resets a connection that still brings input) is
    /// not at fault, and one that closed early is `closed_early` by the vote on its output.
    fn input_failed(&mut self, i: usize, error: io::Error) {
        let lane = &mut self.lanes[i];
        debug!(replica = %lane.admitted.name, %error, "replica takes no more input");
        lane.pending_in = None;
        lane.input_blocked_since = None;
        lane.input_closed = true;
    }

    /// Reads one chunk of output from every replica that has some and may be read
    /// ([`read_room`](Self::read_room)), into the voter. True if anything was read.
    fn read_output(&mut self, cx: &mut Context<'_>, scratch: &mut [u8], now: Instant) -> bool {
        let vnow = self.voter_now(now);
        let slowest = self.voter.slowest_produced();
        let mut progress = false;
        for i in 0..self.lanes.len() {
            let room = self.read_room(i, slowest).min(scratch.len());
            let lane = &mut self.lanes[i];
            if room == 0 {
                continue;
            }
            let Some(stream) = lane.stream.as_mut() else { continue };
            let mut buf = ReadBuf::new(&mut scratch[..room]);
            match Pin::new(stream).poll_read(cx, &mut buf) {
                Poll::Pending => continue,
                // A reset from a process that is still there is how a replica that closes its
                // connection with input unread ends its output: voted as an end, so a short
                // output is still `closed_early`. From a process that ended, it is a crash.
                Poll::Ready(Err(e)) if e.kind() != io::ErrorKind::ConnectionReset => {
                    debug!(replica = %lane.admitted.name, error = %e, "replica connection failed");
                    lane.output_ended = true;
                    self.voter.fail(i, vnow);
                }
                Poll::Ready(result) if result.is_err() || buf.filled().is_empty() => {
                    lane.output_ended = true;
                    let admitted = &lane.admitted;
                    if self.shared.supervisor.process_gone(admitted.index, admitted.incarnation) {
                        debug!(replica = %admitted.name, "output closed by a process that ended: a crash");
                        self.voter.fail(i, vnow);
                    } else {
                        self.voter.close(i, vnow);
                    }
                }
                Poll::Ready(_) => {
                    // Data (errors and the end are taken above).
                    let n = buf.filled().len();
                    let output = &mut scratch[..n];
                    match lane.out_tap.output_now(output) {
                        Some(delay) => lane.delayed = Some((now + delay, Bytes::copy_from_slice(output))),
                        None => self.push_output(i, output, now, vnow),
                    }
                }
            }
            progress = true;
        }
        progress
    }

    /// Output from replica `i`, into the voter.
    fn push_output(&mut self, i: usize, output: &[u8], now: Instant, vnow: Duration) {
        self.last_activity = now;
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        self.voter.push(i, output, vnow);
    }

    /// Writes released output to the client, all of it in one (vectored) write if the socket
    /// takes it; closes the client's write side once the output is complete. True if anything
    /// was written.
    fn write_released(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        while let Some(chunk) = self.voter.take_released() {
            // (An empty slice alone would make the write return 0, which means a closed socket.)
            if !chunk.is_empty() {
                self.out_bytes += chunk.len();
                self.out.push(chunk);
            }
        }
        let mut progress = false;
        while !self.out.is_empty() {
            let written = if self.out.len() == 1 {
                // One chunk (the common case for request/response traffic): a plain `send`,
                // which costs the kernel less than `writev`'s iovec handling.
                Pin::new(&mut self.client).poll_write(cx, &self.out[0])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let count = self.out.len().min(MAX_IOV);
                for (slot, chunk) in slices.iter_mut().zip(&self.out) {
                    *slot = IoSlice::new(chunk);
                }
                Pin::new(&mut self.client).poll_write_vectored(cx, &slices[..count])
            };
            match written {
                Poll::Pending => {
                    self.out_blocked_since.get_or_insert(now);
                    return progress;
                }
                Poll::Ready(Ok(0)) => {
                    debug!("client connection failed: it takes no more output");
                    self.ended = true;
                    return true;
                }
                Poll::Ready(Err(e)) => {
                    debug!(error = %e, "client connection failed");
                    self.ended = true;
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    progress = true;
                    advance(&mut self.out, n);
                    // The client took something: what is timed is how long it takes nothing.
                    if let Some(since) = self.out_blocked_since.take() {
                        self.paused += now.saturating_duration_since(since);
                    }
                }
            }
        }
        if self.out_bytes > 0 {
            self.shared.metrics.client_out(std::mem::take(&mut self.out_bytes));
            self.last_activity = now;
            if let Some(since) = self.waiting_since {
                self.shared.metrics.vote_latency(now.saturating_duration_since(since));
            }
            self.waiting_since = (self.voter.unreleased_total() > 0).then_some(now);
        }
        if *self.voter.status() == Status::Finished && !self.output_finished {
            self.output_finished = true;
            let _ = Pin::new(&mut self.client).poll_shutdown(cx);
            progress = true;
        }
        progress
    }

    /// Logs, counts and reports every new fault, and cuts the faulty replicas off.
    fn report_faults(&mut self) {
        for fault in self.voter.take_faults() {
            self.faults_seen += 1;
            let Some(lane) = self.lanes.get_mut(fault.replica) else { continue };
            lane.cut();
            self.shared.faults.report(&FaultEvent {
                session: Some(self.id),
                replica: lane.admitted.index,
                name: Arc::clone(&lane.admitted.name),
                incarnation: lane.admitted.incarnation,
                position: Position::Byte(fault.offset),
                kind: fault.kind,
            });
        }
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

/// Drops the first `n` bytes of the chunks in `out`.
fn advance(out: &mut Vec<Bytes>, mut n: usize) {
    let mut done = 0;
    for chunk in out.iter_mut() {
        if n < chunk.len() {
            chunk.advance(n);
            break;
        }
        n -= chunk.len();
        done += 1;
    }
    out.drain(..done);
}

/// Closes a connection with a reset, so the client cannot mistake it for a complete answer.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
