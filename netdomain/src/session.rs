//! One client session in stream mode: the async shell around [`voter::StreamVoter`].
//!
//! Phases, in the order they run:
//! 1. **admit**: take the replicas the supervisor admits now; fewer than the quorum and the
//!    client is refused (reset) at once, since nothing it sent could ever be answered.
//! 2. **connect** to every admitted replica in parallel, each bounded by the connect timeout;
//!    a replica that cannot be reached is a `crashed` fault.
//! 3. **relay**, with one task per direction and socket:
//!    - the *client reader* reads client bytes and hands each chunk to every replica's bounded
//!      input queue, so every replica sees the same bytes in the same order. When a queue is
//!      full it waits: reading from the client pauses while a replica is behind on input.
//!      A replica that does not take input for the lag timeout is reported late.
//!    - one *replica writer* per replica drains its queue into the socket and carries the
//!      client's half-close through.
//!    - one *replica reader* per replica reads output, but only as much as its credit allows:
//!      the credit is `max_unreleased_bytes`, spent by reads and given back as the voter
//!      releases or drops that replica's bytes, so unreleased output per replica is bounded.
//!    - the *client writer* writes released bytes, and the end of stream, to the client.
//!
//!    The session loop feeds reader events to the voter, passes released bytes to the client
//!    writer, reports faults, and cuts off excluded replicas.
//! 4. **end**: when a quorum of replicas closed at the same offset, the client's write side is
//!    closed (half-close); the session ends once the client closed its side too. When the vote
//!    is undecidable, the client is reset (RST) and nothing unverified is released.
//!
//! The voter's clock is session time minus the time the loop spent blocked on a slow client:
//! while the client does not take output, replicas cannot be read either, and that must not
//! make them look late.
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
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
/// Chunks queued toward one replica before the client reader waits.
const INPUT_QUEUE: usize = 8;
/// Reader events queued toward the session loop.
const EVENT_QUEUE: usize = 64;
/// Chunks queued toward the client writer.
const OUTPUT_QUEUE: usize = 8;

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
    /// Bytes arrived from the client (already fanned out).
    ClientInput(usize),
    /// The client closed its side.
    ClientEnd,
    /// The client's connection failed.
    ClientError(io::Error),
}

/// What the client writer is asked to do.
#[derive(Debug)]
enum ToClient {
    Data(Bytes),
    Finish,
    Abort,
}

/// One replica connection of a session.
struct Lane {
    admitted: Admitted,
    credit: Arc<Semaphore>,
    /// Bytes read under credit and not yet given back.
    outstanding: usize,
    tasks: Vec<JoinHandle<()>>,
}

impl Lane {
    fn cut(&mut self) {
        self.credit.close();
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
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
    let mut lanes: Vec<Lane> = Vec::with_capacity(admitted.len());
    let mut inputs: Vec<Option<mpsc::Sender<Bytes>>> = Vec::with_capacity(admitted.len());
    let mut faults_seen = 0usize;
    for (i, (replica, connect)) in admitted.into_iter().zip(connects).enumerate() {
        let credit = Arc::new(Semaphore::new(config.vote.max_unreleased_bytes));
        let mut lane = Lane { admitted: replica, credit: Arc::clone(&credit), outstanding: 0, tasks: Vec::new() };
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
                let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
                inputs.push(Some(input_tx));
                let chunk = READ_CHUNK.min(config.vote.max_unreleased_bytes);
                let (out_tap, in_tap) =
                    (shared.supervisor.tap(lane.admitted.index), shared.supervisor.tap(lane.admitted.index));
                lane.tasks.push(tokio::spawn(replica_reader(i, read, credit, chunk, events_tx.clone(), out_tap)));
                lane.tasks.push(tokio::spawn(replica_writer(i, write, input_rx, events_tx.clone(), in_tap)));
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

    let (client_read, client_write) = client.into_split();
    let (to_client, client_rx) = mpsc::channel::<ToClient>(OUTPUT_QUEUE);
    let idle = config.idle_timeout();
    let client_reader = tokio::spawn(client_reader(
        client_read,
        inputs,
        events_tx.clone(),
        Duration::from_millis(config.vote.lag_timeout_ms.unwrap_or(config.vote.vote_timeout_ms)),
    ));
    let client_writer = tokio::spawn(client_writer(client_write, client_rx, idle, events_tx));

    // Phase 3: the relay loop.
    let mut paused = Duration::ZERO;
    let mut last_activity = Instant::now();
    let mut waiting_since: Option<Instant> = None;
    let mut client_ended = false;
    let mut output_finished = false;
    let mut aborted: Option<String> = None;
    loop {
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
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                let now = voter_now(start, paused);
                match event {
                    Event::Output(i, bytes) => {
                        last_activity = Instant::now();
                        if total_unreleased(&voter, lanes.len()) == 0 {
                            waiting_since = Some(last_activity);
                        }
                        lanes[i].outstanding += bytes.len();
                        voter.push(i, &bytes, now);
                    }
                    Event::OutputEnd(i) => voter.close(i, now),
                    Event::ReplicaError(i, e) => {
                        debug!(replica = %lanes[i].admitted.name, error = %e, "replica connection failed");
                        voter.fail(i, now);
                    }
                    Event::InputStalled(i) => voter.exclude_for(i, FaultKind::Late { behind: 0 }, now),
                    Event::ClientInput(n) => {
                        last_activity = Instant::now();
                        shared.metrics.client_in(n);
                    }
                    Event::ClientEnd => client_ended = true,
                    Event::ClientError(e) => {
                        debug!(error = %e, "client connection failed");
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= idle_deadline {
                    info!(idle_ms = idle.as_millis() as u64, "closing idle session");
                    break;
                }
                voter.tick(voter_now(start, paused));
            }
        }
        report_faults(&shared, id, &mut voter, &mut lanes, &mut faults_seen);
        give_back_credit(&voter, &mut lanes);

        // Released output goes to the client; waiting for it pauses the voter's clock.
        let mut released_any = false;
        while let Some(chunk) = voter.take_released() {
            released_any = true;
            let n = chunk.len();
            let blocked_from = Instant::now();
            match tokio::time::timeout(idle, to_client.send(ToClient::Data(chunk))).await {
                Ok(Ok(())) => shared.metrics.client_out(n),
                Ok(Err(_)) | Err(_) => {
                    client_ended = true;
                    output_finished = true;
                    aborted.get_or_insert_with(|| "client stopped taking output".to_string());
                    break;
                }
            }
            paused += blocked_from.elapsed();
            last_activity = Instant::now();
        }
        if released_any {
            if let Some(since) = waiting_since {
                shared.metrics.vote_latency(since.elapsed());
            }
            waiting_since = (total_unreleased(&voter, lanes.len()) > 0).then(Instant::now);
        }
        if aborted.is_some() {
            break;
        }
        if *voter.status() == Status::Finished && !output_finished {
            output_finished = true;
            let _ = to_client.send(ToClient::Finish).await;
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
        let _ = to_client.send(ToClient::Abort).await;
    } else if let Some(why) = aborted {
        info!(reason = %why, "session closed");
    }
    drop(to_client);
    let _ = tokio::time::timeout(Duration::from_secs(1), client_writer).await;
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
            lane.credit.add_permits(lane.outstanding - held);
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

/// Reads client bytes and hands every chunk to every replica's input queue, in order.
async fn client_reader(
    mut read: OwnedReadHalf,
    mut inputs: Vec<Option<mpsc::Sender<Bytes>>>,
    events: mpsc::Sender<Event>,
    stall_limit: Duration,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        let n = match read.read_buf(&mut buf).await {
            Ok(0) => {
                // Dropping the queues makes every replica writer carry the half-close on.
                drop(inputs);
                let _ = events.send(Event::ClientEnd).await;
                return;
            }
            Ok(n) => n,
            Err(e) => {
                let _ = events.send(Event::ClientError(e)).await;
                return;
            }
        };
        let chunk = buf.split().freeze();
        for (i, input) in inputs.iter_mut().enumerate() {
            let Some(queue) = input else { continue };
            match tokio::time::timeout(stall_limit, queue.send(chunk.clone())).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => *input = None, // the replica was cut off
                Err(_) => {
                    *input = None;
                    let _ = events.send(Event::InputStalled(i)).await;
                }
            }
        }
        if events.send(Event::ClientInput(n)).await.is_err() {
            return;
        }
    }
}

/// Writes the client's bytes to one replica; closes the replica's input when the client did.
/// `tap` is the fault-injection hook (an armed `inflip` corrupts this replica's copy only).
async fn replica_writer(
    i: usize,
    mut write: OwnedWriteHalf,
    mut input: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<Event>,
    mut tap: Tap,
) {
    while let Some(chunk) = input.recv().await {
        let chunk = tap.input(chunk);
        if let Err(e) = write.write_all(&chunk).await {
            let _ = events.send(Event::ReplicaError(i, e)).await;
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Reads one replica's output within its credit. `tap` is the fault-injection hook (an armed
/// `outflip` or `delay` acts on the output before the voter sees it).
async fn replica_reader(
    i: usize,
    mut read: OwnedReadHalf,
    credit: Arc<Semaphore>,
    chunk: usize,
    events: mpsc::Sender<Event>,
    mut tap: Tap,
) {
    let mut buf = BytesMut::new();
    loop {
        let Ok(permit) = credit.acquire_many(chunk as u32).await else { return };
        permit.forget();
        buf.reserve(chunk);
        match read.read_buf(&mut (&mut buf).limit(chunk)).await {
            Ok(0) => {
                let _ = events.send(Event::OutputEnd(i)).await;
                return;
            }
            Ok(n) => {
                credit.add_permits(chunk - n);
                let mut output = buf.split();
                tap.output(&mut output).await;
                if events.send(Event::Output(i, output.freeze())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = events.send(Event::ReplicaError(i, e)).await;
                return;
            }
        }
    }
}

/// Writes released output to the client, then closes or resets the connection.
async fn client_writer(
    mut write: OwnedWriteHalf,
    mut output: mpsc::Receiver<ToClient>,
    idle: Duration,
    events: mpsc::Sender<Event>,
) {
    while let Some(next) = output.recv().await {
        match next {
            ToClient::Data(chunk) => match tokio::time::timeout(idle, write.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let _ = events.send(Event::ClientError(e)).await;
                    return;
                }
                Err(_) => {
                    let _ = events
                        .send(Event::ClientError(io::Error::new(io::ErrorKind::TimedOut, "client took no output")))
                        .await;
                    return;
                }
            },
            ToClient::Finish => {
                let _ = write.shutdown().await;
            }
            ToClient::Abort => {
                // Reset, and no FIN first: dropping the half would send one, and a client could
                // take a FIN for a complete answer. The socket closes with the read half.
                let _ = write.as_ref().set_zero_linger();
                write.forget();
                return;
            }
        }
    }
}

/// Closes a connection with a reset, so the client cannot mistake it for a complete answer.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
