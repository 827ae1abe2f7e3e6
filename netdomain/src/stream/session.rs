//! The core of a stream-mode session: every decision a session makes, without I/O.
//!
//! [`Session`] is a deterministic state machine in the style of [`voter::StreamVoter`] (which it
//! wraps) and of smoltcp: no sockets, no tasks, no clock of its own. A front end owns the
//! client's connection and one connection per replica, moves the bytes, and tells the core what
//! happened; the core tells it what to do next. Time is passed in as a [`Duration`] since the
//! session started. The tokio front end is the shell in [`super`]; another one (smoltcp on a TAP
//! device, say) drives the same core, so flow control, the clocks and the verdict are written
//! and tested once, here, without sockets.
//!
//! What the core decides:
//! - **flow control**: the client is read only while every replica took all of the previous
//!   chunk ([`Session::wants_client_input`]); a replica's output is read only as far as
//!   [`Session::read_room`] allows (bounded unreleased output, the `max_lag_bytes` window, no
//!   reading while released output waits for the client or an injected delay holds a chunk);
//! - **the clocks**: the vote clock stands still while the client takes no output (a slow client
//!   makes nobody late); a replica's input stall counts only while its output is read (one whose
//!   output is left unread may well be unable to take input); the idle timeout, and while output
//!   waits for the client, the slow-client timeout instead;
//! - **the end**: the client's half-close is passed on to every replica, the client's side is
//!   closed once a quorum closed at the same offset, and a session that ends undecided, or with
//!   output the client has not fully got, ends with a reset ([`Close::Reset`]), since a FIN could
//!   pass for the end of a complete answer.
//!
//! # Driving it
//!
//! A front end works in rounds; the tokio shell runs this order, and the tests follow it:
//! 1. [`tick`](Session::tick) with the current time: applies what is due.
//! 2. **input**: writes [`pending_input`](Session::pending_input) to each replica that has some
//!    and reports [`input_written`](Session::input_written) (or
//!    [`input_failed`](Session::input_failed)); then, if
//!    [`wants_client_input`](Session::wants_client_input), reads the client: data is reported
//!    with [`client_data`](Session::client_data) and written, straight from the front end's
//!    buffer, to every replica that [`takes_input`](Session::takes_input), each write reported
//!    with [`input_offered`](Session::input_offered) (the core keeps what a replica did not take);
//!    the end of the client's input is [`client_closed`](Session::client_closed), a failed
//!    connection [`client_failed`](Session::client_failed).
//! 3. **output**: reads at most [`read_room`](Session::read_room) bytes from each replica and
//!    reports [`replica_data`](Session::replica_data) (or
//!    [`replica_data_delayed`](Session::replica_data_delayed)),
//!    [`replica_closed`](Session::replica_closed) or [`replica_failed`](Session::replica_failed).
//! 4. **release**: [`release`](Session::release), then writes [`output`](Session::output) to the
//!    client, reporting every write attempt with [`client_took`](Session::client_took) (0 when
//!    its socket is full: that starts the slow-client clock).
//! 5. **actions**: carries out every [`poll_action`](Session::poll_action): cut a faulty replica
//!    off (and report its fault), pass the half-close on, close the client's side.
//! 6. Once [`end`](Session::end) says how the session ends, closes the replicas' connections and
//!    the client's (FIN or RST); otherwise waits for its sockets or for
//!    [`next_deadline`](Session::next_deadline).
//!
//! Client input is never copied on the way through unless a replica does not take all of it:
//! only the length goes through the core, the bytes go from the front end's read buffer to the
//! replicas' sockets. Replica output is copied once, by the voter.
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use bytes::{Buf, Bytes};
use voter::{ConfigError, Fault, FaultKind, Status, StreamConfig, StreamVoter, Undecidable};

use crate::metrics::Verdict;

/// What the front end has to do, beyond moving the bytes [`Session`] hands it. Taken with
/// [`Session::poll_action`], in the order they arose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close replica `0`'s input (its write side): the client half-closed, and the replica took
    /// all the input there was.
    CloseInput(usize),
    /// Replica `fault.replica` is faulty: report the fault and close its connection. The core has
    /// already left it out of everything (no input, no reads, no timers).
    Cut(Fault),
    /// The client has all of its output, and a quorum closed there: close the client's write
    /// side (FIN). Its input may still come.
    CloseOutput,
}

/// How the client's connection is closed at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// A normal close: the client got every byte of its output.
    Fin,
    /// A reset: the vote was undecidable, or the client has not got all of its output.
    Reset,
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The client has all of its output and closed its side, and every replica still in the
    /// vote was checked to the end.
    Done,
    /// No traffic either way for the idle timeout.
    Idle,
    /// Output waited for the client for the idle timeout: the client took none of it.
    ClientStalled,
    /// The client's connection failed (an error, or it takes no more output).
    ClientGone,
    /// No quorum could be reached.
    Undecidable(Undecidable),
    /// resh was draining and the session was quiet, owing nothing.
    Drained,
    /// resh stopped and cut the session off.
    Shutdown,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Done => f.write_str("done"),
            Reason::Idle => f.write_str("idle"),
            Reason::ClientStalled => f.write_str("client stopped taking output"),
            Reason::ClientGone => f.write_str("client connection failed"),
            Reason::Undecidable(why) => why.fmt(f),
            Reason::Drained => f.write_str("drained on shutdown"),
            Reason::Shutdown => f.write_str("resh stopped"),
        }
    }
}

/// How a session ended: what [`Session::end`] returns once it is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    /// How to close the client's connection.
    pub close: Close,
    /// The verdict, for the metrics.
    pub verdict: Verdict,
    /// Why it ended.
    pub reason: Reason,
    /// Bytes the vote released in the session.
    pub released: u64,
}

/// Output the vote released since the last [`Session::release`], for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// How many bytes.
    pub bytes: usize,
    /// How long the first of them waited for its quorum (`None` if nothing was released).
    pub waited: Option<Duration>,
}

/// How one replica kept time, since the last [`Session::take_timing`]: for per-replica metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// How long from the client's input to the replica's first output after it.
    pub answer: Option<Duration>,
    /// How far its latest output trailed the vote ([`StreamVoter::take_trail`]).
    pub trail: Option<Duration>,
}

/// One replica, as far as the session (not the vote) is concerned.
#[derive(Debug, Default)]
struct ReplicaFlow {
    /// Cut off for a fault: no input, no reads, no timers.
    cut: bool,
    /// Its output ended (closed or failed): it is not read any more.
    output_ended: bool,
    /// It gets no more input: the client's half-close was passed on, a write failed, or it
    /// stopped taking input after its output ended.
    input_closed: bool,
    /// What it has not taken yet of the client's last chunk. The client is not read until every
    /// replica took all of it, so a replica that falls behind on input holds the client back
    /// rather than memory growing.
    pending_in: Option<Bytes>,
    /// Since when it has taken no input while it had some to take.
    input_blocked_since: Option<Duration>,
    /// Output held back by an injected delay, and until when.
    delayed: Option<(Duration, Bytes)>,
    /// When the client's input it has not answered yet began (for its answer time).
    asked_at: Option<Duration>,
    /// How long it took to start answering the client's last input, not taken yet.
    answer_time: Option<Duration>,
}

impl ReplicaFlow {
    fn cut(&mut self) {
        self.cut = true;
        self.pending_in = None;
        self.input_blocked_since = None;
        self.delayed = None;
    }

    /// Whether it gets client input: connected, its input open, nothing left of the last chunk.
    fn takes_input(&self) -> bool {
        !self.cut && !self.input_closed && self.pending_in.is_none()
    }
}

/// The core of one stream-mode session. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Session {
    voter: StreamVoter,
    lanes: Vec<ReplicaFlow>,
    idle: Duration,
    /// The client's input ended (or the client was given up on): it is not read any more.
    client_ended: bool,
    /// The client's output is complete and its write side was closed (or given up on).
    output_finished: bool,
    /// Released output the client has not taken yet.
    out: Vec<Bytes>,
    /// Whether the voter may hold released output not moved to `out` yet: set by every voter
    /// call, cleared by [`release`](Self::release). The client's side is closed only when it is
    /// clear, so a FIN can never overtake the last released bytes.
    undrained: bool,
    /// Time the client spent not taking output, up to its last take: the vote clock's pauses.
    paused: Duration,
    /// Since when released output has been waiting for the client (the vote clock stands still).
    out_blocked_since: Option<Duration>,
    last_activity: Duration,
    /// Since when output has been waiting for a quorum (for the vote-latency metric).
    waiting_since: Option<Duration>,
    faults_seen: usize,
    actions: VecDeque<Action>,
    /// Why the session stopped early, if it did.
    stopped: Option<Reason>,
    /// Whether output was released since the client's last input (or the client sent none): a
    /// session whose last input has no answer yet is owed one, even if nothing is queued.
    answered: bool,
    /// resh cut the session off on shutdown with something owed: it ends in a reset.
    cut_off: bool,
}

impl Session {
    /// A session over `vote.replicas` replicas, all connected, at session time zero.
    /// A replica whose connection could not be made is reported with
    /// [`replica_failed`](Self::replica_failed) at time zero.
    pub fn new(vote: StreamConfig, idle_timeout: Duration) -> Result<Session, ConfigError> {
        let lanes = (0..vote.replicas).map(|_| ReplicaFlow::default()).collect();
        Ok(Session {
            voter: StreamVoter::new(vote)?,
            lanes,
            idle: idle_timeout,
            client_ended: false,
            output_finished: false,
            out: Vec::new(),
            undrained: false,
            paused: Duration::ZERO,
            out_blocked_since: None,
            last_activity: Duration::ZERO,
            waiting_since: None,
            faults_seen: 0,
            actions: VecDeque::new(),
            stopped: None,
            answered: true,
            cut_off: false,
        })
    }

    /// The vote (read only: what was released, its status, how far each replica got).
    pub fn voter(&self) -> &StreamVoter {
        &self.voter
    }

    // ---- Phase 1: deadlines ----

    /// Applies whatever is due at `now`: the idle or slow-client timeout, input stalls, delayed
    /// output, the vote's timeouts. True if anything changed. Call once per round, before
    /// anything else.
    pub fn tick(&mut self, now: Duration) -> bool {
        // While output waits for the client, the client's slowness is what is timed, not
        // idleness (replicas are not read then, so there is no traffic to count).
        if let Some(since) = self.out_blocked_since {
            if now >= since.saturating_add(self.idle) {
                self.client_ended = true;
                self.output_finished = true;
                self.stop(Reason::ClientStalled);
                return true;
            }
        } else if now >= self.last_activity.saturating_add(self.idle) {
            self.stop(Reason::Idle);
            return true;
        }
        let vnow = self.vote_clock(now);
        let stall_limit = self.stall_limit();
        let mut changed = false;
        for i in 0..self.lanes.len() {
            let reading = self.read_room(i) > 0;
            let lane = &mut self.lanes[i];
            if let Some(since) = lane.input_blocked_since {
                if lane.output_ended {
                    // Its output is complete (and voted on); that it takes no more input is no
                    // fault (a server that answers and closes). It gets no more.
                    if now >= since.saturating_add(stall_limit) {
                        lane.input_blocked_since = None;
                        lane.pending_in = None;
                        lane.input_closed = true;
                        changed = true;
                    }
                } else if !reading {
                    // Its output is not being read, so it may well be unable to take input:
                    // not its fault. Time starts again once its output is read.
                    lane.input_blocked_since = Some(now);
                } else if now >= since.saturating_add(stall_limit) {
                    lane.input_blocked_since = None;
                    self.voter.exclude_for(i, FaultKind::Late { behind: 0 }, vnow);
                    self.undrained = true;
                    changed = true;
                }
            }
            let lane = &mut self.lanes[i];
            if lane.delayed.as_ref().is_some_and(|(until, _)| now >= *until) {
                if let Some((_, bytes)) = lane.delayed.take() {
                    self.push(i, &bytes, now, vnow);
                    changed = true;
                }
            }
        }
        // The vote's clock stands still while the client takes no output, so its deadlines
        // cannot come then. And a tick votes again, so only when one of them is due: most rounds
        // have nothing for it.
        if self.out_blocked_since.is_none() && self.voter.next_deadline().is_some_and(|d| vnow >= d) {
            self.voter.tick(vnow);
            self.undrained = true;
            changed = true;
        }
        if changed {
            self.collect_faults();
        }
        changed
    }

    /// The earliest session time at which [`tick`](Self::tick) may change something: the idle
    /// or slow-client timeout, the vote's deadlines (on the session's clock), an input stall,
    /// delayed output. There is always one (the idle timeout).
    pub fn next_deadline(&self) -> Duration {
        let mut next = match self.out_blocked_since {
            Some(since) => since.saturating_add(self.idle),
            None => {
                let idle = self.last_activity.saturating_add(self.idle);
                // The vote clock runs `paused` behind the session's while the client takes output.
                self.voter.next_deadline().map_or(idle, |d| idle.min(d.saturating_add(self.paused)))
            }
        };
        let stall_limit = self.stall_limit();
        for lane in &self.lanes {
            if let Some(since) = lane.input_blocked_since {
                next = next.min(since.saturating_add(stall_limit));
            }
            if let Some((until, _)) = &lane.delayed {
                next = next.min(*until);
            }
        }
        next
    }

    // ---- Phase 2: input ----

    /// What replica `i` has not yet taken of the client's last chunk: write it before anything
    /// else, then report [`input_written`](Self::input_written).
    pub fn pending_input(&self, i: usize) -> Option<&[u8]> {
        self.lanes.get(i).and_then(|l| l.pending_in.as_deref())
    }

    /// Replica `i` took the first `n` bytes of its [`pending_input`](Self::pending_input)
    /// (0 if its socket was full).
    pub fn input_written(&mut self, i: usize, n: usize, now: Duration) {
        let Some(lane) = self.lanes.get_mut(i) else { return };
        let Some(rest) = lane.pending_in.as_mut() else { return };
        if n >= rest.len() {
            lane.pending_in = None;
            lane.input_blocked_since = None;
            if self.client_ended {
                // The half-close waited for this replica to take the input before it.
                self.close_input(i);
            }
        } else if n > 0 {
            rest.advance(n);
            // It takes input, if slowly: the stall is timed from its last progress.
            lane.input_blocked_since = Some(now);
        }
    }

    /// Whether the front end should read from the client now: its input has not ended, and
    /// every replica took all of the last chunk (so a replica that is behind on input holds the
    /// client back, and client input never waits in memory for more than one chunk).
    pub fn wants_client_input(&self) -> bool {
        !self.client_ended && self.stopped.is_none() && self.lanes.iter().all(|l| l.pending_in.is_none())
    }

    /// The client sent `len` bytes (only when [`wants_client_input`](Self::wants_client_input)).
    /// The front end writes them to every replica that [`takes_input`](Self::takes_input) and
    /// reports each write with [`input_offered`](Self::input_offered).
    pub fn client_data(&mut self, len: usize, now: Duration) {
        debug_assert!(self.wants_client_input(), "the client was read while a replica is behind on input");
        if len > 0 {
            self.last_activity = now;
            self.answered = false;
            for lane in &mut self.lanes {
                if !lane.cut && !lane.output_ended {
                    lane.asked_at.get_or_insert(now);
                }
            }
        }
    }

    /// Whether replica `i` gets the client's next chunk.
    pub fn takes_input(&self, i: usize) -> bool {
        self.lanes.get(i).is_some_and(ReplicaFlow::takes_input)
    }

    /// Replica `i` was offered `data` (the client's chunk, as it goes to this replica) and took
    /// the first `taken` bytes. The core keeps the rest as its
    /// [`pending_input`](Self::pending_input) (the only copy of client input it makes).
    pub fn input_offered(&mut self, i: usize, data: &[u8], taken: usize, now: Duration) {
        let Some(lane) = self.lanes.get_mut(i) else { return };
        if !lane.takes_input() {
            return;
        }
        if let Some(rest) = data.get(taken..).filter(|r| !r.is_empty()) {
            lane.pending_in = Some(Bytes::copy_from_slice(rest));
            lane.input_blocked_since = Some(now);
        }
    }

    /// A write to replica `i` failed: it takes no more input. Its verdict is left to its output,
    /// which sees the same broken connection (an error or an end): a replica that answered and
    /// closed (and so resets a connection that still brings input) is not at fault, and one that
    /// closed early is `closed_early` by the vote on its output.
    pub fn input_failed(&mut self, i: usize) {
        let Some(lane) = self.lanes.get_mut(i) else { return };
        lane.pending_in = None;
        lane.input_blocked_since = None;
        lane.input_closed = true;
    }

    /// The client closed its side (its input ended): passed on to every replica
    /// ([`Action::CloseInput`]) once it took all the input before it.
    pub fn client_closed(&mut self) {
        if self.client_ended {
            return;
        }
        self.client_ended = true;
        for i in 0..self.lanes.len() {
            if self.lanes[i].takes_input() {
                self.close_input(i);
            }
        }
    }

    /// The client's connection failed: the session ends.
    pub fn client_failed(&mut self) {
        self.stop(Reason::ClientGone);
    }

    // ---- Phase 3: output ----

    /// How much of replica `i`'s output may be read now (0: none). Not once it ended or was cut
    /// off, nor while an injected delay holds some back, nor while released output waits for the
    /// client; no more than the voter may hold unreleased for it; and no further than
    /// `max_lag_bytes` ahead of the slowest replica still in the vote. The last bound is flow
    /// control, not a fault: without it a replica that is merely slower (descheduled, or a slower
    /// version) falls behind by whatever the sockets buffer and is excluded as late at once; with
    /// it the others wait, and a slow one is late only once it trails by `lag_timeout`. (Exactly
    /// the voter's limit: a wider window would read past the point where it declares one late.)
    pub fn read_room(&self, i: usize) -> usize {
        let Some(lane) = self.lanes.get(i) else { return 0 };
        if lane.cut || lane.output_ended || lane.delayed.is_some() || !self.out.is_empty() {
            return 0;
        }
        let limits = self.voter.config();
        let ahead = self.voter.slowest_produced().map_or(0, |s| self.voter.produced(i).saturating_sub(s));
        let lag_room = (limits.max_lag_bytes as u64).saturating_sub(ahead) as usize;
        limits.max_unreleased.saturating_sub(self.voter.unreleased(i)).min(lag_room)
    }

    /// Replica `i` produced `data`.
    pub fn replica_data(&mut self, i: usize, data: &[u8], now: Duration) {
        let vnow = self.vote_clock(now);
        self.push(i, data, now, vnow);
        self.collect_faults();
    }

    /// Takes how replica `i` kept time since the last call (see [`Timing`]).
    pub fn take_timing(&mut self, i: usize) -> Timing {
        let answer = self.lanes.get_mut(i).and_then(|l| l.answer_time.take());
        Timing { answer, trail: self.voter.take_trail(i) }
    }

    /// Replica `i` produced `data`, which an injected delay holds back until session time
    /// `until`. The replica is not read meanwhile, so its output stays in order.
    pub fn replica_data_delayed(&mut self, i: usize, data: &[u8], until: Duration) {
        let Some(lane) = self.lanes.get_mut(i) else { return };
        if lane.cut || data.is_empty() {
            return;
        }
        lane.delayed = Some(match lane.delayed.take() {
            // Not read while delayed, so this only happens to a front end that reads anyway;
            // keep the order and the later time.
            Some((before, held)) => (before.max(until), [&held[..], data].concat().into()),
            None => (until, Bytes::copy_from_slice(data)),
        });
    }

    /// Replica `i` closed its output (an end of stream, or a reset from a process that is still
    /// there: a server that closes with input unread). Voted as an end, so a short output is
    /// still `closed_early`.
    pub fn replica_closed(&mut self, i: usize, now: Duration) {
        let Some(lane) = self.lanes.get_mut(i) else { return };
        lane.output_ended = true;
        let vnow = self.vote_clock(now);
        self.voter.close(i, vnow);
        self.undrained = true;
        self.collect_faults();
    }

    /// Replica `i`'s connection failed, could not be made, or its process ended: a crash.
    pub fn replica_failed(&mut self, i: usize, now: Duration) {
        let Some(lane) = self.lanes.get_mut(i) else { return };
        lane.output_ended = true;
        let vnow = self.vote_clock(now);
        self.voter.fail(i, vnow);
        self.undrained = true;
        self.collect_faults();
    }

    // ---- Phase 4: release ----

    /// Moves what the vote released to the client's [`output`](Self::output) and says how much
    /// that was. Call once per round, before writing to the client.
    pub fn release(&mut self, now: Duration) -> Released {
        let mut bytes = 0;
        while let Some(chunk) = self.voter.take_released() {
            // (An empty slice alone would make a write return 0, which means a closed socket.)
            if !chunk.is_empty() {
                bytes += chunk.len();
                self.out.push(chunk);
            }
        }
        self.undrained = false;
        let mut waited = None;
        if bytes > 0 {
            self.last_activity = now;
            self.answered = true;
            waited = self.waiting_since.map(|since| now.saturating_sub(since));
            self.waiting_since = (self.voter.unreleased_total() > 0).then_some(now);
        }
        self.check_output_done();
        Released { bytes, waited }
    }

    /// Released output the client has not taken yet, in order: write all of it (one chunk is
    /// the common case), then report [`client_took`](Self::client_took).
    pub fn output(&self) -> &[Bytes] {
        &self.out
    }

    /// The client took the first `n` bytes of [`output`](Self::output) in one write attempt (0 if
    /// its socket was full). Call after every attempt: output left after one is output waiting
    /// for the client, and while it waits, replicas are not read, the vote clock stands still,
    /// and the client is timed instead.
    pub fn client_took(&mut self, n: usize, now: Duration) {
        crate::chunks::advance(&mut self.out, n);
        if n > 0 {
            // The client took something: what is timed is how long it takes nothing.
            if let Some(since) = self.out_blocked_since.take() {
                self.paused = self.paused.saturating_add(now.saturating_sub(since));
                if self.out.is_empty() {
                    // Replicas are read again from now on: an input stall counts from here, not
                    // from before, when their output could not be read. (Only after a wait:
                    // output the client takes at once must not hold off a stalled replica.)
                    for lane in self.lanes.iter_mut().filter(|l| !l.output_ended) {
                        if let Some(since) = lane.input_blocked_since.as_mut() {
                            *since = now;
                        }
                    }
                }
            }
        }
        if !self.out.is_empty() {
            self.out_blocked_since.get_or_insert(now);
        }
        self.check_output_done();
    }

    // ---- Phase 5: actions ----

    /// The next thing the front end has to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ---- Phase 6: the end ----

    /// Whether the session is over: the vote is undecidable, the client is gone or timed out,
    /// the session was idle, or the client has all of its output, closed its side, and every
    /// replica still in the vote was checked to the end (so a slow minority's faults are found
    /// even though the client no longer waits for them).
    pub fn is_over(&self) -> bool {
        self.stopped.is_some()
            || matches!(self.voter.status(), Status::Undecidable(_))
            || (self.output_finished && self.client_ended && self.voter.settled())
    }

    /// How the session ends, once [`is_over`](Self::is_over); `None` before.
    pub fn end(&mut self) -> Option<End> {
        if !self.is_over() {
            return None;
        }
        // Output the vote released but the front end never moved out counts as not delivered.
        while let Some(chunk) = self.voter.take_released() {
            if !chunk.is_empty() {
                self.out.push(chunk);
            }
        }
        let status = self.voter.status();
        // Output the client has not got all of: agreed bytes not yet taken, or output that was
        // still waiting for its quorum (a FIN could pass for the end of a complete answer).
        let incomplete = !self.out.is_empty() || (*status != Status::Finished && self.voter.unreleased_total() > 0);
        let (verdict, reason) = match status {
            Status::Undecidable(why) => (Verdict::Undecidable, Reason::Undecidable(why.clone())),
            _ if self.faults_seen > 0 => (Verdict::Masked, self.stopped.clone().unwrap_or(Reason::Done)),
            _ => (Verdict::Agreed, self.stopped.clone().unwrap_or(Reason::Done)),
        };
        let close =
            if verdict == Verdict::Undecidable || incomplete || self.cut_off { Close::Reset } else { Close::Fin };
        Some(End { close, verdict, reason, released: self.voter.released() })
    }

    // ---- Shutdown ----

    /// The session time of the last byte moved either way.
    pub fn last_activity(&self) -> Duration {
        self.last_activity
    }

    /// Whether nothing is owed either way, as far as the core sees: no released output waits
    /// for the client, no output waits for its quorum, no client input waits for a replica,
    /// and output came after the client's last input. Stream mode cannot see where an answer
    /// ends: a front end that drains also checks that nothing is on its way in the kernel's
    /// queues, and that the session was quiet for a while.
    pub fn owes_nothing(&self) -> bool {
        self.answered
            && self.out.is_empty()
            && !self.undrained
            && self.voter.unreleased_total() == 0
            && self.lanes.iter().all(|l| l.pending_in.is_none() && l.delayed.is_none())
    }

    /// resh is draining and the front end found the session done (see
    /// [`owes_nothing`](Self::owes_nothing)): it ends, with a FIN.
    pub fn close_drained(&mut self) {
        self.stop(Reason::Drained);
    }

    /// resh stops now with the session not done: it ends at once, with a reset. A client whose
    /// output was cut must never take the close for the end of a complete answer.
    pub fn shut_down(&mut self) {
        self.cut_off = true;
        self.stop(Reason::Shutdown);
    }

    // ---- internals ----

    fn stop(&mut self, reason: Reason) {
        self.stopped.get_or_insert(reason);
    }

    /// The vote's clock: session time, less the time spent blocked on the client.
    fn vote_clock(&self, now: Duration) -> Duration {
        let blocked = self.out_blocked_since.map_or(Duration::ZERO, |since| now.saturating_sub(since));
        now.saturating_sub(self.paused.saturating_add(blocked))
    }

    /// How long a replica may take no input (while its output is read) before it is late: the
    /// lag timeout, as the voter has it.
    fn stall_limit(&self) -> Duration {
        self.voter.config().lag_timeout
    }

    /// Output from replica `i`, into the voter.
    fn push(&mut self, i: usize, data: &[u8], now: Duration, vnow: Duration) {
        self.last_activity = now;
        if let Some(lane) = self.lanes.get_mut(i) {
            if let Some(asked_at) = lane.asked_at.take() {
                lane.answer_time = Some(now.saturating_sub(asked_at));
            }
        }
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        self.voter.push(i, data, vnow);
        self.undrained = true;
    }

    /// Cuts off every replica the voter found faulty since the last call, and asks the front end
    /// to do the same and report the fault.
    fn collect_faults(&mut self) {
        for fault in self.voter.take_faults() {
            self.faults_seen += 1;
            if let Some(lane) = self.lanes.get_mut(fault.replica) {
                lane.cut();
            }
            self.actions.push_back(Action::Cut(fault));
        }
    }

    fn close_input(&mut self, i: usize) {
        self.lanes[i].input_closed = true;
        self.actions.push_back(Action::CloseInput(i));
    }

    /// Closes the client's side once its output is complete: a quorum closed at the released
    /// offset and the client took every released byte.
    fn check_output_done(&mut self) {
        if !self.output_finished && !self.undrained && self.out.is_empty() && *self.voter.status() == Status::Finished {
            self.output_finished = true;
            self.actions.push_back(Action::CloseOutput);
        }
    }
}

#[cfg(test)]
mod tests;
