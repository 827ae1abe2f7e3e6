//! One replica connection of the sequencer: a writer task and a reader task.
//!
//! The writer writes what the core hands it, in order, gathering what is queued into one
//! vectored write, and counts how much it wrote in a [`WriteProgress`] the sequencer reads
//! (the core's flow control counts it). It sends an event for it only when the sequencer asked
//! (the core waits for room): an event per write doubled the events the sequencer woke for. The
//! reader frames the replica's responses with the codec's resumable parser and digests them
//! off the sequencer. A frame larger than `max_frame` is not kept: it is digested as it
//! arrives and passed on as a digest and a length, so that every replica answering the same
//! huge answer is the service's answer (its client gets an error), and a replica that floods
//! costs no memory. The reader stops reading while the core holds the replica's share of
//! answers (a replica that runs ahead of its peers). Both tasks end when the connection is dropped.
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use replicas::inject::Tap;
use replicas::Supervisor;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use voter::Digest;

use super::core::Frame;
use crate::codec::{Codec, FrameDigest};

/// The most chunks one vectored write takes.
const MAX_IOV: usize = 64;

/// What a replica connection's tasks report to the sequencer.
#[derive(Debug)]
pub enum ConnEvent {
    /// A connect finished.
    Connected {
        /// The replica.
        replica: usize,
        /// The incarnation it was for.
        incarnation: u64,
        /// The connection, or why there is none.
        result: io::Result<TcpStream>,
    },
    /// Response frames, in order.
    Frames {
        /// The replica.
        replica: usize,
        /// Its incarnation.
        incarnation: u64,
        /// The frames.
        frames: Vec<Frame>,
    },
    /// The writer wrote bytes while the sequencer waited for it to (see [`Conn::want_progress`]).
    Progress {
        /// The replica.
        replica: usize,
        /// Its incarnation.
        incarnation: u64,
    },
    /// The connection ended.
    Closed {
        /// The replica.
        replica: usize,
        /// Its incarnation.
        incarnation: u64,
        /// Its process has ended (a command replica that exited).
        process_gone: bool,
        /// Its output could not be framed: the digest of what was there.
        malformed: Option<Digest>,
        /// Why, for the log.
        why: String,
    },
}

/// What the writer wrote and the sequencer has not counted yet.
#[derive(Debug, Default)]
struct WriteProgress {
    /// Bytes written (counted as handed over, before any fault-injection tap).
    written: AtomicUsize,
    /// The sequencer waits for room: the next write sends [`ConnEvent::Progress`].
    wanted: AtomicBool,
}

/// Whether the reader may read: the core holds this replica's share of answers (see
/// `OrderedCore::read_paused`). Unread answers wait in the socket, and the replica's own
/// output buffer, rather than in resh's memory.
#[derive(Debug, Default)]
struct ReadGate {
    paused: AtomicBool,
    /// Woken when `paused` clears; a permit is kept if the reader is not waiting yet.
    resume: Notify,
}

impl ReadGate {
    async fn wait_open(&self) {
        while self.paused.load(Ordering::SeqCst) {
            self.resume.notified().await;
        }
    }
}

/// A live replica connection; dropping it closes the connection and ends its tasks.
#[derive(Debug)]
pub struct Conn {
    /// The incarnation it belongs to.
    pub incarnation: u64,
    writer: mpsc::UnboundedSender<Bytes>,
    progress: Arc<WriteProgress>,
    gate: Arc<ReadGate>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Conn {
    /// Queues bytes for the writer (the core bounds what is queued). False if the writer ended.
    pub fn write(&self, bytes: Bytes) -> bool {
        self.writer.send(bytes).is_ok()
    }

    /// Bytes written since the last call.
    pub fn take_written(&self) -> usize {
        self.progress.written.swap(0, Ordering::SeqCst)
    }

    /// Asks the writer for a [`ConnEvent::Progress`] at its next write. Call
    /// [`take_written`](Conn::take_written) after it: a write that finished just before the
    /// request sends no event, but its bytes are counted there.
    pub fn want_progress(&self) {
        self.progress.wanted.store(true, Ordering::SeqCst);
    }

    /// Stops or resumes reading the replica's answers.
    pub fn pause_reading(&self, paused: bool) {
        if self.gate.paused.swap(paused, Ordering::SeqCst) && !paused {
            self.gate.resume.notify_one();
        }
    }
}

/// Connects to `addr` in the background; the result comes as [`ConnEvent::Connected`].
pub fn connect(replica: usize, incarnation: u64, addr: SocketAddr, timeout: Duration, events: mpsc::Sender<ConnEvent>) {
    tokio::spawn(async move {
        let result = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
        };
        let _ = events.send(ConnEvent::Connected { replica, incarnation, result }).await;
    });
}

/// What the reader needs besides the socket.
#[derive(Clone, Debug)]
pub struct ReaderSetup {
    /// The codec.
    pub codec: Arc<dyn Codec>,
    /// Frames larger than this are digested, not kept.
    pub max_frame: usize,
    /// Asked, when the replica closes, whether its process ended.
    pub supervisor: Arc<Supervisor>,
}

/// Starts the writer and the reader of a new connection.
pub fn start(
    replica: usize,
    incarnation: u64,
    stream: TcpStream,
    setup: ReaderSetup,
    events: mpsc::Sender<ConnEvent>,
) -> Conn {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (writer, queue) = mpsc::unbounded_channel();
    let progress = Arc::new(WriteProgress::default());
    let in_tap = setup.supervisor.tap(replica);
    let out_tap = setup.supervisor.tap(replica);
    let writer_progress = Arc::clone(&progress);
    let gate = Arc::new(ReadGate::default());
    let tasks = [
        tokio::spawn(writer_task(replica, incarnation, write, queue, in_tap, writer_progress, events.clone())),
        tokio::spawn(reader_task(replica, incarnation, read, setup, out_tap, Arc::clone(&gate), events)),
    ];
    Conn { incarnation, writer, progress, gate, tasks }
}

/// Writes what is queued, gathering it into vectored writes; counts what was written.
async fn writer_task(
    replica: usize,
    incarnation: u64,
    mut write: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Bytes>,
    mut tap: Tap,
    progress: Arc<WriteProgress>,
    events: mpsc::Sender<ConnEvent>,
) {
    let mut chunks: Vec<Bytes> = Vec::with_capacity(MAX_IOV);
    while let Some(first) = queue.recv().await {
        // Lengths are counted before the tap: the core counts what it handed over.
        let mut counted = first.len();
        chunks.push(tap.input(first));
        while chunks.len() < MAX_IOV {
            let Ok(next) = queue.try_recv() else { break };
            counted += next.len();
            chunks.push(tap.input(next));
        }
        if let Err(e) = write_all_vectored(&mut write, &mut chunks).await {
            // The reader sees the same broken connection and reports it.
            tracing::debug!(replica, error = %e, "replica write failed");
            return;
        }
        // Counted first, then the flag: the sequencer sets the flag first, then reads the
        // count, so one of the two sees this write.
        progress.written.fetch_add(counted, Ordering::SeqCst);
        if progress.wanted.swap(false, Ordering::SeqCst)
            && events.send(ConnEvent::Progress { replica, incarnation }).await.is_err()
        {
            return;
        }
    }
}

/// Writes every chunk, in order, as few system calls as the socket allows.
async fn write_all_vectored(write: &mut (impl AsyncWrite + Unpin), chunks: &mut Vec<Bytes>) -> io::Result<()> {
    chunks.retain(|c| !c.is_empty());
    while !chunks.is_empty() {
        let n = if chunks.len() == 1 {
            write.write(&chunks[0]).await?
        } else {
            let slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
            write.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        crate::chunks::advance(chunks, n);
    }
    Ok(())
}

/// A frame being digested as it arrives because it is larger than resh keeps.
struct Oversized {
    hasher: blake3::Hasher,
    len: u64,
}

/// Frames and digests one replica's responses.
async fn reader_task(
    replica: usize,
    incarnation: u64,
    mut read: OwnedReadHalf,
    setup: ReaderSetup,
    mut tap: Tap,
    gate: Arc<ReadGate>,
    events: mpsc::Sender<ConnEvent>,
) {
    let ReaderSetup { codec, max_frame, supervisor } = setup;
    let mut parser = codec.response_parser();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut oversized: Option<Oversized> = None;
    loop {
        gate.wait_open().await;
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let before = buf.len();
        let ended = match read.read_buf(&mut buf).await {
            Ok(0) => Some("closed its connection".to_string()),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        tap.output(&mut buf[before..]).await;
        let mut frames = Vec::new();
        let mut malformed = None;
        loop {
            match parser.parse(&buf) {
                Ok(Some(len)) => match oversized.take() {
                    Some(mut big) => {
                        big.hasher.update(&buf[..len]);
                        buf.advance(len);
                        let digest = big.hasher.finalize();
                        let digest = FrameDigest { vote: digest, exact: digest, error: false };
                        frames.push(Frame { bytes: None, len: big.len + len as u64, digest });
                    }
                    None => {
                        let frame = buf.split_to(len).freeze();
                        let digest = codec.vote_digest(&frame);
                        frames.push(Frame { len: len as u64, bytes: Some(frame), digest });
                    }
                },
                Ok(None) => {
                    // Larger than resh keeps: digest what was parsed and let it go.
                    let progress = parser.progress();
                    let so_far = oversized.as_ref().map_or(0, |o| o.len) + progress as u64;
                    if progress > 0 && (oversized.is_some() || so_far > max_frame as u64) {
                        let big = oversized.get_or_insert_with(|| Oversized { hasher: blake3::Hasher::new(), len: 0 });
                        big.hasher.update(&buf[..progress]);
                        big.len += progress as u64;
                        buf.advance(progress);
                        parser.consumed(progress);
                    }
                    break;
                }
                Err(e) => {
                    let observed = voter::fault::digest(&buf[..buf.len().min(voter::fault::DIGEST_SPAN)]);
                    malformed = Some((format!("sent output that cannot be framed: {e}"), observed));
                    break;
                }
            }
        }
        if !frames.is_empty() && events.send(ConnEvent::Frames { replica, incarnation, frames }).await.is_err() {
            return;
        }
        let closed = match (malformed, ended) {
            (Some((why, observed)), _) => Some((why, Some(observed))),
            (None, Some(why)) => Some((why, None)),
            (None, None) => None,
        };
        if let Some((why, malformed)) = closed {
            let process_gone = supervisor.process_gone(replica, incarnation);
            let _ = events.send(ConnEvent::Closed { replica, incarnation, process_gone, malformed, why }).await;
            return;
        }
    }
}
