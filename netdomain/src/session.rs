//! One client session in stream mode: the async shell around [`voter::StreamVoter`].
//!
//! Phases, in the order they run:
//! 1. **admit**: take the replicas the supervisor admits now; fewer than the quorum and the
//!    client is refused (reset) at once, since nothing it sent could ever be answered.
//! 2. **connect** to every admitted replica in parallel, each bounded by the connect timeout;
//!    a replica that cannot be reached is a `crashed` fault.
//! 3. **relay**, with these tasks:
//!    - the *client reader* reads client bytes and writes each chunk to every replica's socket
//!      in turn, so every replica sees the same bytes in the same order. When a replica's socket
//!      buffer is full it waits: reading from the client pauses while a replica is behind on
//!      input. A replica that does not take input for the lag timeout is reported late. It
//!      carries the client's half-close through to every replica.
//!    - one *replica reader* per replica reads output, but only as much as its credit allows:
//!      the credit is `max_unreleased_bytes`, spent by reads and given back as the voter
//!      releases or drops that replica's bytes, so unreleased output per replica is bounded.
//!    - the *session loop* takes reader events in batches (everything queued at one wake-up),
//!      feeds them to the voter, writes what it released to the client in one vectored write,
//!      reports faults, and cuts off excluded replicas.
//!
//!    Why so few tasks: on the hot path every hand-over between tasks is a wake-up, and on a
//!    small machine the wake-ups, not the bytes, are what costs. The client reader writes to the
//!    replicas itself and the loop writes to the client itself (both try the socket first and
//!    wait only when it is full), so a request crosses one task boundary (reader to loop).
//!    Buffers are taken only when a socket is readable, so an idle session holds none.
//! 4. **end**: when a quorum of replicas closed at the same offset, the client's write side is
//!    closed (half-close); the session ends once the client closed its side too. When the vote
//!    is undecidable, the client is reset (RST) and nothing unverified is released.
//!
//! The voter's clock is session time minus the time the loop spent blocked on a slow client:
//! while the client does not take output, replicas cannot be read either, and that must not
//! make them look late.
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};
use voter::{Fault, FaultKind, Status, StreamVoter};

use crate::config::Config;
use crate::metrics::{unix_now, FaultRecord, Metrics, Refusal, Verdict};
use replicas::inject::Tap;
use replicas::{Admitted, Supervisor};

/// The largest read from a socket, and so the largest chunk voted at once.
const READ_CHUNK: usize = 64 * 1024;
/// A read buffer with less room than this is replaced by a fresh one of `READ_CHUNK` bytes
/// (the old one lives on in the chunks cut from it until they are dropped). Small reads so
/// share one allocation instead of taking one each.
const MIN_READ_ROOM: usize = 4 * 1024;
/// Reader events queued toward the session loop.
const EVENT_QUEUE: usize = 64;
/// The most slices one vectored write to the client takes.
const MAX_IOV: usize = 64;

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    /// The effective configuration.
    pub config: Config,
    /// The replica supervisor.
    pub supervisor: Arc<Supervisor>,
    /// Process-wide counters.
    pub metrics: Arc<Metrics>,
    /// The sequencer, in ordered mode.
    pub ordered: Option<crate::ordered::Ordered>,
    next_id: AtomicU64,
}

impl Shared {
    /// Shared state for a running resh.
    pub fn new(
        config: Config,
        supervisor: Arc<Supervisor>,
        metrics: Arc<Metrics>,
        ordered: Option<crate::ordered::Ordered>,
    ) -> Arc<Shared> {
        Arc::new(Shared { config, supervisor, metrics, ordered, next_id: AtomicU64::new(1) })
    }

    /// A new session number.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Serves one client connection to its end.
pub async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    let id = shared.next_session_id();
    if let Some(ordered) = shared.ordered.clone() {
        return crate::ordered::session::serve(shared, ordered, client, peer, id).await;
    }
    let span = tracing::info_span!("session", id, %peer);
    run(shared, client, id).instrument(span).await
}

/// Something a socket task observed.
#[derive(Debug)]
enum Event {
    /// Output from replica `.0`.
    Output(usize, Bytes),
    /// Replica `.0` closed its output.
    OutputEnd(usize),
    /// Replica `.0`'s connection failed.
    ReplicaError(usize, io::Error),
    /// Replica `.0` took no input for the lag timeout.
    InputStalled(usize),
    /// The client closed its side.
    ClientEnd,
    /// The client's connection failed.
    ClientError(io::Error),
}

/// One replica connection of a session.
struct Lane {
    admitted: Admitted,
    credit: Arc<Credit>,
    /// Bytes read under credit and not yet given back.
    outstanding: usize,
    reader: Option<JoinHandle<()>>,
    /// Tells the client reader to drop this replica's write half (the connection closes with
    /// the reader's half); `None` once sent, or if the replica was never connected.
    cut_input: Option<(usize, mpsc::UnboundedSender<usize>)>,
}

impl Lane {
    fn cut(&mut self) {
        self.credit.close();
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        if let Some((index, cuts)) = self.cut_input.take() {
            let _ = cuts.send(index);
        }
    }
}

/// The output one replica reader may still read, in bytes: spent by reads, given back by the
/// session loop as the voter releases or drops the bytes. An atomic counter, not a semaphore:
/// tokio's semaphore takes a lock whenever permits are added, and credit is added twice per
/// read; here the lock-free path is the common one, and the reader waits (on a `Notify`) only
/// when the replica is a full `max_unreleased_bytes` ahead of the vote.
#[derive(Debug)]
struct Credit {
    available: AtomicUsize,
    closed: AtomicBool,
    wake: Notify,
}

impl Credit {
    fn new(bytes: usize) -> Arc<Credit> {
        Arc::new(Credit { available: AtomicUsize::new(bytes), closed: AtomicBool::new(false), wake: Notify::new() })
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.available.fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| a.checked_sub(bytes)).is_ok()
    }

    /// Takes `bytes` of credit, waiting until there is that much; false once closed.
    async fn take(&self, bytes: usize) -> bool {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.try_take(bytes) {
                return true;
            }
            // Register for a wake-up before looking again, so a `give` in between is not lost.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.try_take(bytes) {
                return true;
            }
            notified.await;
        }
    }

    /// Returns credit the reader took and did not use.
    fn refund(&self, bytes: usize) {
        self.available.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives back credit for bytes the voter no longer holds, waking a waiting reader.
    fn give(&self, bytes: usize) {
        self.available.fetch_add(bytes, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Stops the reader: it takes no more credit.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// One replica's input side, owned by the client reader.
struct LaneInput {
    write: OwnedWriteHalf,
    /// The fault-injection hook of this replica's input (an armed `inflip` corrupts this
    /// replica's copy only).
    tap: Tap,
}

/// Why a write did not complete.
enum WriteFailure {
    /// The peer took nothing for the time allowed.
    Stalled,
    /// The connection failed.
    Io(io::Error),
}

async fn run(shared: Arc<Shared>, client: TcpStream, id: u64) {
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

    // Phase 2: connect to every admitted replica at once.
    let connects: Vec<_> = admitted
        .iter()
        .map(|r| {
            let addr = r.addr;
            tokio::spawn(tokio::time::timeout(config.connect_timeout(), TcpStream::connect(addr)))
        })
        .collect();
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
    let start = Instant::now();
    let (events_tx, mut events) = mpsc::channel::<Event>(EVENT_QUEUE);
    let (cuts_tx, cuts_rx) = mpsc::unbounded_channel::<usize>();
    let mut lanes: Vec<Lane> = Vec::with_capacity(admitted.len());
    let mut inputs: Vec<Option<LaneInput>> = Vec::with_capacity(admitted.len());
    let mut faults_seen = 0usize;
    for (i, (replica, connect)) in admitted.into_iter().zip(connects).enumerate() {
        let credit = Credit::new(config.vote.max_unreleased_bytes);
        let mut lane =
            Lane { admitted: replica, credit: Arc::clone(&credit), outstanding: 0, reader: None, cut_input: None };
        let connected = match connect.await {
            Ok(Ok(Ok(stream))) => Ok(stream),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(_)) => Err("connect timeout".to_string()),
            Err(e) => Err(e.to_string()),
        };
        match connected {
            Ok(stream) => {
                shared.supervisor.count_session(lane.admitted.index);
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                let chunk = READ_CHUNK.min(config.vote.max_unreleased_bytes);
                let (out_tap, in_tap) =
                    (shared.supervisor.tap(lane.admitted.index), shared.supervisor.tap(lane.admitted.index));
                inputs.push(Some(LaneInput { write, tap: in_tap }));
                lane.cut_input = Some((i, cuts_tx.clone()));
                lane.reader = Some(tokio::spawn(replica_reader(i, read, credit, chunk, events_tx.clone(), out_tap)));
            }
            Err(why) => {
                warn!(replica = %lane.admitted.name, addr = %lane.admitted.addr, error = %why, "cannot connect to replica");
                inputs.push(None);
                voter.fail(i, voter_now(start, Duration::ZERO));
            }
        }
        lanes.push(lane);
    }
    report_faults(&shared, id, &mut voter, &mut lanes, &mut faults_seen);

    let (client_read, mut client_write) = client.into_split();
    let idle = config.idle_timeout();
    // Bytes received from the client so far: the client reader counts, the loop looks at the
    // count only when its timer fires (instead of an event, and a wake-up, per client read).
    let client_activity = Arc::new(AtomicU64::new(0));
    let client_reader = tokio::spawn(client_reader(
        client_read,
        inputs,
        cuts_rx,
        events_tx,
        Duration::from_millis(config.vote.lag_timeout_ms.unwrap_or(config.vote.vote_timeout_ms)),
        Arc::clone(&shared.metrics),
        Arc::clone(&client_activity),
    ));
    drop(cuts_tx);

    // Phase 3: the relay loop.
    let mut paused = Duration::ZERO;
    let mut last_activity = Instant::now();
    let mut activity_seen = 0u64;
    let mut waiting_since: Option<Instant> = None;
    let mut client_ended = false;
    let mut output_finished = false;
    let mut aborted: Option<String> = None;
    let mut batch: Vec<Event> = Vec::with_capacity(EVENT_QUEUE);
    let mut out: Vec<Bytes> = Vec::new();
    // One timer for the whole session. It is re-armed only to fire *earlier*; when it fires
    // before the current deadline (which moves later with every byte), the loop just looks
    // again. Re-arming it on every event would cost a timer-wheel update per chunk.
    let far = || Instant::now() + Duration::from_secs(86_400);
    let mut armed = far();
    let timer = tokio::time::sleep_until(armed);
    tokio::pin!(timer);
    'relay: loop {
        if let Status::Undecidable(why) = voter.status() {
            aborted = Some(why.to_string());
            break;
        }
        // Done when the client has all of its output and closed its side, and every replica
        // still in the vote has been checked up to the end (so a slow minority's faults are
        // found even though the client no longer waits for them).
        if output_finished && client_ended && voter.settled() {
            break;
        }
        let idle_deadline = last_activity + idle;
        let vote_deadline = voter.next_deadline().map(|d| start + paused + d);
        let wake = vote_deadline.map_or(idle_deadline, |d| d.min(idle_deadline));
        if wake < armed {
            armed = wake;
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            count = events.recv_many(&mut batch, EVENT_QUEUE) => {
                if count == 0 {
                    break;
                }
                if lanes.len() > 1 && count < lanes.len() {
                    // Woken by one replica's output, the loop would often run before the other
                    // replicas' readers (tokio runs a task that was just woken first) and vote
                    // once per replica. Letting them run first makes it one vote per request.
                    tokio::task::yield_now().await;
                    while batch.len() < EVENT_QUEUE {
                        let Ok(event) = events.try_recv() else { break };
                        batch.push(event);
                    }
                }
                // One clock reading for the whole batch.
                let clock = Instant::now();
                let now = clock.saturating_duration_since(start).saturating_sub(paused);
                for event in batch.drain(..) {
                    match event {
                        Event::Output(i, bytes) => {
                            last_activity = clock;
                            if total_unreleased(&voter, lanes.len()) == 0 {
                                waiting_since = Some(clock);
                            }
                            lanes[i].outstanding += bytes.len();
                            voter.push(i, &bytes, now);
                        }
                        Event::OutputEnd(i) => {
                            let admitted = &lanes[i].admitted;
                            if shared.supervisor.process_gone(admitted.index, admitted.incarnation) {
                                debug!(replica = %admitted.name, "output closed by a process that ended: a crash");
                                voter.fail(i, now);
                            } else {
                                voter.close(i, now);
                            }
                        }
                        Event::ReplicaError(i, e) => {
                            debug!(replica = %lanes[i].admitted.name, error = %e, "replica connection failed");
                            voter.fail(i, now);
                        }
                        Event::InputStalled(i) => voter.exclude_for(i, FaultKind::Late { behind: 0 }, now),
                        Event::ClientEnd => client_ended = true,
                        Event::ClientError(e) => {
                            debug!(error = %e, "client connection failed");
                            break 'relay;
                        }
                    }
                }
            }
            () = &mut timer => {
                armed = far();
                let activity = client_activity.load(Ordering::Relaxed);
                if activity != activity_seen {
                    activity_seen = activity;
                    last_activity = Instant::now();
                }
                if Instant::now() >= last_activity + idle {
                    info!(idle_ms = idle.as_millis() as u64, "closing idle session");
                    break;
                }
                voter.tick(voter_now(start, paused));
            }
        }
        report_faults(&shared, id, &mut voter, &mut lanes, &mut faults_seen);
        give_back_credit(&voter, &mut lanes);

        // Released output goes to the client, all of it in one (vectored) write; waiting for a
        // client that takes no output pauses the voter's clock.
        let mut released = 0;
        while let Some(chunk) = voter.take_released() {
            released += chunk.len();
            out.push(chunk);
        }
        let released_any = released > 0;
        if released_any {
            match write_all_vectored(&client_write, &mut out, idle).await {
                Ok(blocked) => {
                    shared.metrics.client_out(released);
                    paused += blocked;
                }
                Err(WriteFailure::Stalled) => {
                    client_ended = true;
                    output_finished = true;
                    aborted.get_or_insert_with(|| "client stopped taking output".to_string());
                }
                Err(WriteFailure::Io(e)) => {
                    debug!(error = %e, "client connection failed");
                    break;
                }
            }
        }
        if released_any {
            let clock = Instant::now();
            last_activity = clock;
            if let Some(since) = waiting_since {
                shared.metrics.vote_latency(clock.saturating_duration_since(since));
            }
            waiting_since = (total_unreleased(&voter, lanes.len()) > 0).then_some(clock);
        }
        if aborted.is_some() {
            break;
        }
        if *voter.status() == Status::Finished && !output_finished {
            output_finished = true;
            let _ = client_write.shutdown().await;
        }
    }

    // Phase 4: end.
    let verdict = if matches!(voter.status(), Status::Undecidable(_)) {
        Verdict::Undecidable
    } else if faults_seen > 0 {
        Verdict::Masked
    } else {
        Verdict::Agreed
    };
    client_reader.abort();
    for lane in &mut lanes {
        lane.cut();
    }
    if verdict == Verdict::Undecidable {
        let why = aborted.unwrap_or_default();
        warn!(reason = %why, released = voter.released(), "vote undecidable: aborting session (reset), nothing unverified released");
        // Reset, and no FIN first: dropping the half would send one, and a client could take a
        // FIN for a complete answer. The socket closes with the read half.
        let _ = client_write.as_ref().set_zero_linger();
        client_write.forget();
    } else {
        if let Some(why) = aborted {
            info!(reason = %why, "session closed");
        }
        drop(client_write);
    }
    shared.metrics.session_ended(verdict);
    debug!(verdict = verdict.name(), released = voter.released(), "session ended");
}

fn voter_now(start: Instant, paused: Duration) -> Duration {
    start.elapsed().saturating_sub(paused)
}

fn total_unreleased(voter: &StreamVoter, lanes: usize) -> usize {
    (0..lanes).map(|i| voter.unreleased(i)).sum()
}

/// Returns credit for the bytes the voter no longer holds (released, checked or dropped).
fn give_back_credit(voter: &StreamVoter, lanes: &mut [Lane]) {
    for (i, lane) in lanes.iter_mut().enumerate() {
        let held = voter.unreleased(i);
        if lane.outstanding > held {
            lane.credit.give(lane.outstanding - held);
            lane.outstanding = held;
        }
    }
}

/// Logs, counts and reports every new fault, and cuts the faulty replicas off.
fn report_faults(shared: &Shared, session: u64, voter: &mut StreamVoter, lanes: &mut [Lane], seen: &mut usize) {
    for fault in voter.take_faults() {
        *seen += 1;
        let Some(lane) = lanes.get_mut(fault.replica) else { continue };
        lane.cut();
        let name = &lane.admitted.name;
        let detail = describe(&fault, name);
        warn!(replica = %name, kind = fault.kind.name(), offset = fault.offset, "fault: {detail}");
        shared.metrics.record_fault(FaultRecord {
            time: unix_now(),
            session,
            replica: name.to_string(),
            kind: fault.kind.name(),
            offset: fault.offset,
            detail: detail.clone(),
        });
        shared.supervisor.report_fault(lane.admitted.index, lane.admitted.incarnation, &fault.kind, detail);
    }
}

fn describe(fault: &Fault, name: &str) -> String {
    let text = fault.to_string();
    // The voter numbers lanes; people know replicas by name.
    text.replacen(&format!("replica {}", fault.replica), &format!("replica {name}"), 1)
}

/// Reads client bytes and writes every chunk to every replica, in order; carries the client's
/// half-close through. Counts the bytes for the metrics and for the session's idle timer.
async fn client_reader(
    read: OwnedReadHalf,
    mut inputs: Vec<Option<LaneInput>>,
    mut cuts: mpsc::UnboundedReceiver<usize>,
    events: mpsc::Sender<Event>,
    stall_limit: Duration,
    metrics: Arc<Metrics>,
    activity: Arc<AtomicU64>,
) {
    let mut read = read;
    let mut buf = BytesMut::new();
    loop {
        // A new buffer is taken only once the client sent something, so a session that never
        // gets input holds none. (The read itself is `read_buf`, not `try_read_buf`: after a
        // short read it knows the socket is drained and skips the `EAGAIN` read before waiting.)
        if buf.capacity() - buf.len() < MIN_READ_ROOM {
            let ready = tokio::select! {
                biased;
                Some(i) = cuts.recv() => {
                    cut_input(&mut inputs, i);
                    continue;
                }
                ready = read.readable() => ready,
            };
            if let Err(e) = ready {
                let _ = events.send(Event::ClientError(e)).await;
                return;
            }
            buf.reserve(READ_CHUNK);
        }
        let read_result = tokio::select! {
            biased;
            Some(i) = cuts.recv() => {
                cut_input(&mut inputs, i);
                continue;
            }
            n = read.read_buf(&mut buf) => n,
        };
        let n = match read_result {
            Ok(0) => {
                for input in inputs.iter_mut().flatten() {
                    let _ = input.write.shutdown().await;
                }
                let _ = events.send(Event::ClientEnd).await;
                return;
            }
            Ok(n) => n,
            Err(e) => {
                let _ = events.send(Event::ClientError(e)).await;
                return;
            }
        };
        metrics.client_in(n);
        activity.fetch_add(n as u64, Ordering::Relaxed);
        let chunk = buf.split().freeze();
        while let Ok(i) = cuts.try_recv() {
            cut_input(&mut inputs, i);
        }
        for (i, slot) in inputs.iter_mut().enumerate() {
            let Some(input) = slot else { continue };
            let data = input.tap.input(chunk.clone());
            let failure = match write_all_within(&input.write, &data, stall_limit).await {
                Ok(()) => continue,
                Err(WriteFailure::Stalled) => Event::InputStalled(i),
                Err(WriteFailure::Io(e)) => Event::ReplicaError(i, e),
            };
            *slot = None;
            if events.send(failure).await.is_err() {
                return;
            }
        }
    }
}

/// Drops replica `i`'s write half: the connection closes together with its reader's half.
fn cut_input(inputs: &mut [Option<LaneInput>], i: usize) {
    if let Some(input) = inputs.get_mut(i) {
        *input = None;
    }
}

/// Writes all of `data` to a socket, waiting at most `limit` each time it is full. The write is
/// tried first: a socket with room costs one system call and no timer.
async fn write_all_within(write: &OwnedWriteHalf, mut data: &[u8], limit: Duration) -> Result<(), WriteFailure> {
    while !data.is_empty() {
        match write.try_write(data) {
            Ok(0) => return Err(WriteFailure::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(limit, write.writable()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(WriteFailure::Io(e)),
                    Err(_) => return Err(WriteFailure::Stalled),
                }
            }
            Err(e) => return Err(WriteFailure::Io(e)),
        }
    }
    Ok(())
}

/// Writes every chunk of `chunks` to the client in as few (vectored) writes as the socket takes,
/// waiting at most `limit` each time it is full; empties `chunks`. Returns how long it waited.
async fn write_all_vectored(
    write: &OwnedWriteHalf,
    chunks: &mut Vec<Bytes>,
    limit: Duration,
) -> Result<Duration, WriteFailure> {
    let mut blocked = Duration::ZERO;
    let mut first = 0;
    while first < chunks.len() {
        let written = {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(&chunks[first..]) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            write.try_write_vectored(&slices[..count])
        };
        match written {
            Ok(0) => return Err(WriteFailure::Io(io::ErrorKind::WriteZero.into())),
            Ok(mut n) => {
                while n > 0 {
                    let len = chunks[first].len();
                    if n >= len {
                        n -= len;
                        first += 1;
                    } else {
                        chunks[first].advance(n);
                        n = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let from = Instant::now();
                match tokio::time::timeout(limit, write.writable()).await {
                    Ok(Ok(())) => blocked += from.elapsed(),
                    Ok(Err(e)) => return Err(WriteFailure::Io(e)),
                    Err(_) => return Err(WriteFailure::Stalled),
                }
            }
            Err(e) => return Err(WriteFailure::Io(e)),
        }
    }
    chunks.clear();
    Ok(blocked)
}

/// Reads one replica's output within its credit. `tap` is the fault-injection hook (an armed
/// `outflip` or `delay` acts on the output before the voter sees it).
///
/// Reads go into one buffer until it has less than [`MIN_READ_ROOM`] left, each read cut off
/// as a chunk of its own: small outputs share an allocation rather than taking one each. A new
/// buffer is taken only once the socket is readable.
async fn replica_reader(
    i: usize,
    mut read: OwnedReadHalf,
    credit: Arc<Credit>,
    chunk: usize,
    events: mpsc::Sender<Event>,
    mut tap: Tap,
) {
    let mut buf = BytesMut::new();
    loop {
        if !credit.take(chunk).await {
            return;
        }
        if buf.capacity() - buf.len() < MIN_READ_ROOM.min(chunk) {
            if let Err(e) = read.readable().await {
                let _ = events.send(Event::ReplicaError(i, e)).await;
                return;
            }
            buf.reserve(chunk);
        }
        let room = (buf.capacity() - buf.len()).min(chunk);
        let n = match read.read_buf(&mut (&mut buf).limit(room)).await {
            Ok(n) => n,
            Err(e) => {
                let _ = events.send(Event::ReplicaError(i, e)).await;
                return;
            }
        };
        if n == 0 {
            let _ = events.send(Event::OutputEnd(i)).await;
            return;
        }
        credit.refund(chunk - n);
        let mut output = buf.split();
        tap.output(&mut output).await;
        if events.send(Event::Output(i, output.freeze())).await.is_err() {
            return;
        }
    }
}

/// Closes a connection with a reset, so the client cannot mistake it for a complete answer.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
