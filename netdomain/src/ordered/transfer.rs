//! D-RESH state transfer: a host that joins gets the service's state from a host that serves,
//! over TCP between the hosts' `group.transfer` addresses, while the group goes on.
//!
//! Protocol, one connection per transfer:
//! - joiner to source: `RESH-STATE <seq>\n`: the state at request `seq` of the group's stream
//!   (the point the joiner numbers the stream from), or at a later request;
//! - source to joiner: `OK <at>\n`, then the state as frames, each a 4-byte big-endian length
//!   and that many bytes of requests that rebuild it (RESP commands, built by the codec's
//!   [`Checkpoint`]), and a zero length at the end; then the order's own state at `at` (the
//!   WATCH table, see [`super::watch`]) as frames the same way, and a zero length; or
//!   `ERR <reason>\n`.
//!
//! The source ([`export`]): its sequencer stops handing delivered requests to its ordered core,
//! waits until the core is at rest (every request answered by every voting replica: their
//! states stand at one point, `at`), and reads that state from a quorum of its voting replicas
//! over connections of its own, comparing their answers (a copy is voted like any answer: a
//! faulty replica's state is never sent). Once every read is answered, the core goes on;
//! the rest of the copy is streamed from memory.
//!
//! The joiner ([`import`]): it empties its replicas (the codec's reset request), writes the
//! copy to each of them and checks their answers, then the sequencer starts a new core at `at`
//! whose replicas join the vote there, and hands it the requests delivered from `at` on (the
//! group delivered them meanwhile; those before `at` are in the copy).
//!
//! Limits: the copy is logical (see the codec's checkpoint: key types, values up to
//! `ordered.max_frame_bytes`, every database with keys, expiry times as they are); the source host's clients wait while its
//! state is read; the connection is neither encrypted nor authenticated: the transfer addresses
//! belong on the hosts' private network, as Corosync's do.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::codec::{Checkpoint, Codec, Reads, ResponseParser};

/// The longest request line.
const MAX_LINE: u64 = 128;

/// The most frames of the order's own state (WATCH entries, one per watching session) a joiner
/// takes.
const ORDER_STATE_FRAMES: usize = 1 << 20;
/// How long a peer may take to send its request line or header.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Restores written to the replicas at once.
const IMPORT_BATCH: usize = 256 * 1024;

/// A joiner's request, for the sequencer.
#[derive(Debug)]
pub struct ExportRequest {
    /// The state at this request or later.
    pub seq: u64,
    /// The joiner's connection.
    pub stream: TcpStream,
    /// The joiner's address.
    pub peer: SocketAddr,
}

/// Connections to the transfer address handled at once (each sends one short line, or is
/// dropped after [`LINE_TIMEOUT`]); more wait in the accept queue.
const MAX_CONNECTIONS: usize = 16;

/// Accepts joiners' connections on `listener` and hands their requests to the sequencer.
pub async fn serve(listener: TcpListener, requests: mpsc::Sender<ExportRequest>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "state transfer: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut stream = stream;
            match tokio::time::timeout(LINE_TIMEOUT, read_line(&mut stream)).await {
                Ok(Ok(line)) => match line.strip_prefix("RESH-STATE ").and_then(|n| n.trim().parse::<u64>().ok()) {
                    Some(seq) => {
                        if let Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) =
                            requests.try_send(ExportRequest { seq, stream, peer })
                        {
                            refuse(r.stream, "busy with another transfer").await;
                        }
                    }
                    None => refuse(stream, "expected `RESH-STATE <seq>`").await,
                },
                Ok(Err(e)) => debug!(%peer, error = %e, "state transfer: bad request"),
                Err(_) => debug!(%peer, "state transfer: no request line in time"),
            }
        });
    }
}

/// Answers a joiner with an error.
pub async fn refuse(mut stream: TcpStream, why: &str) {
    let _ = stream.write_all(format!("ERR {why}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads one line (without its newline), at most [`MAX_LINE`] bytes, a byte at a time: what
/// follows the line on the connection (the copy, after the source's header) stays unread.
async fn read_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        if line.len() as u64 >= MAX_LINE {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
        }
        line.push(byte);
    }
    String::from_utf8(line).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// One connection to a replica, with its response framing.
struct ReplicaLink {
    addr: SocketAddr,
    stream: TcpStream,
    parser: Box<dyn ResponseParser>,
    input: BytesMut,
}

impl ReplicaLink {
    async fn connect(addr: SocketAddr, codec: &dyn Codec, timeout: Duration) -> Result<ReplicaLink, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to replica {addr} timed out"))?
            .map_err(|e| format!("cannot connect to replica {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(ReplicaLink { addr, stream, parser: codec.response_parser(), input: BytesMut::new() })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).await.map_err(|e| format!("writing to replica {}: {e}", self.addr))
    }

    /// The next response frame.
    async fn frame(&mut self, max: usize) -> Result<Bytes, String> {
        loop {
            match self.parser.parse(&self.input) {
                Ok(Some(len)) => return Ok(self.input.split_to(len).freeze()),
                Ok(None) => {}
                Err(e) => return Err(format!("replica {} answered something that cannot be framed: {e}", self.addr)),
            }
            if self.input.len() > max {
                return Err(format!("replica {} answered more than {max} bytes at once", self.addr));
            }
            self.input.reserve(64 * 1024);
            match self.stream.read_buf(&mut self.input).await {
                Ok(0) => return Err(format!("replica {} closed the connection", self.addr)),
                Ok(_) => {}
                Err(e) => return Err(format!("reading from replica {}: {e}", self.addr)),
            }
        }
    }
}

/// What a source copies to a joiner.
#[derive(Debug)]
pub struct Snapshot {
    /// The request the state stands at.
    pub at: u64,
    /// What reads the replicas' state (the codec's).
    pub checkpoint: Box<dyn Checkpoint>,
    /// The order's own state at `at` (the WATCH table's frames).
    pub order_state: Vec<Bytes>,
}

/// Streams the state of `sources` (a quorum of voting replicas, whose states stand at request
/// `at`: nothing is sent to them but these reads until `reads_done` fires) to a joiner.
pub async fn export(
    mut joiner: TcpStream,
    snapshot: Snapshot,
    sources: Vec<SocketAddr>,
    codec: Arc<dyn Codec>,
    max_frame: usize,
    reads_done: oneshot::Sender<()>,
) -> Result<u64, String> {
    let Snapshot { at, mut checkpoint, order_state } = snapshot;
    let mut reads_done = Some(reads_done);
    let mut links = Vec::with_capacity(sources.len());
    for addr in &sources {
        links.push(ReplicaLink::connect(*addr, codec.as_ref(), Duration::from_secs(5)).await?);
    }
    let to_joiner = |e: std::io::Error| format!("writing to the joiner: {e}");
    joiner.write_all(format!("OK {at}\n").as_bytes()).await.map_err(to_joiner)?;
    let mut sent = 0u64;
    loop {
        match checkpoint.next_reads() {
            Reads::Batch(reads) => {
                let bytes: Vec<u8> = reads.concat();
                for link in &mut links {
                    link.write(&bytes).await?;
                }
                for _ in 0..reads.len() {
                    let mut answers = Vec::with_capacity(links.len());
                    for link in &mut links {
                        answers.push(link.frame(max_frame + 1024).await?);
                    }
                    let first = checkpoint.compare_key(&answers[0]);
                    if answers[1..].iter().any(|a| checkpoint.compare_key(a) != first) {
                        return Err(
                            "the source replicas answered a read of the copy differently: their states differ".into()
                        );
                    }
                    checkpoint.answer(&answers[0]).map_err(|e| format!("copying the state failed: {e}"))?;
                }
            }
            Reads::Wait => return Err("internal: the copy waits for answers it was given".into()),
            Reads::Done => {
                // Every read was answered: the sources may go on with the ordered stream.
                if let Some(done) = reads_done.take() {
                    let _ = done.send(());
                }
            }
        }
        for restore in checkpoint.take_restores() {
            let mut frame = BytesMut::with_capacity(4 + restore.len());
            frame.put_u32(restore.len() as u32);
            frame.extend_from_slice(&restore);
            joiner.write_all(&frame).await.map_err(to_joiner)?;
            sent += 1;
        }
        if reads_done.is_none() {
            if !checkpoint.is_complete() {
                return Err("internal: every read was answered but the copy is not complete".into());
            }
            break;
        }
    }
    joiner.write_all(&0u32.to_be_bytes()).await.map_err(to_joiner)?;
    for frame in &order_state {
        joiner.write_all(&(frame.len() as u32).to_be_bytes()).await.map_err(to_joiner)?;
        joiner.write_all(frame).await.map_err(to_joiner)?;
    }
    joiner.write_all(&0u32.to_be_bytes()).await.map_err(to_joiner)?;
    joiner.shutdown().await.map_err(to_joiner)?;
    Ok(sent)
}

/// Gets the state at request `seq` or later from one of `sources` (transfer addresses, tried in
/// turn) into every one of `replicas`; returns the request the state stands at, and the order's
/// own state there (its frames, for the sequencer to read).
pub async fn import(
    sources: Vec<SocketAddr>,
    seq: u64,
    replicas: Vec<SocketAddr>,
    codec: Arc<dyn Codec>,
    max_frame: usize,
    timeout: Duration,
) -> Result<(u64, Vec<Bytes>), String> {
    let mut why = Vec::new();
    for source in sources {
        match tokio::time::timeout(timeout, import_from(source, seq, &replicas, codec.as_ref(), max_frame)).await {
            Ok(Ok((at, restores, order_state))) => {
                info!(%source, at, restores, "state copied from another host");
                return Ok((at, order_state));
            }
            Ok(Err(e)) => why.push(format!("{source}: {e}")),
            Err(_) => why.push(format!("{source}: not done within {} ms", timeout.as_millis())),
        }
    }
    Err(why.join("; "))
}

async fn import_from(
    source: SocketAddr,
    seq: u64,
    replicas: &[SocketAddr],
    codec: &dyn Codec,
    max_frame: usize,
) -> Result<(u64, u64, Vec<Bytes>), String> {
    let mut stream = tokio::time::timeout(LINE_TIMEOUT, TcpStream::connect(source))
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    stream.write_all(format!("RESH-STATE {seq}\n").as_bytes()).await.map_err(|e| format!("cannot ask: {e}"))?;
    // The source may first wait until its core is at rest: the header may take a while.
    let line = read_line(&mut stream).await.map_err(|e| format!("no answer: {e}"))?;
    let at = match line.split_once(' ') {
        Some(("OK", at)) => at.trim().parse::<u64>().map_err(|_| format!("a bad answer: {line}"))?,
        Some(("ERR", why)) => return Err(format!("it refused: {why}")),
        _ => return Err(format!("a bad answer: {line}")),
    };
    if at < seq {
        return Err(format!("it offered the state at request {at}, before the {seq} asked for"));
    }
    let mut links = Vec::with_capacity(replicas.len());
    for addr in replicas {
        links.push(ReplicaLink::connect(*addr, codec, Duration::from_secs(5)).await?);
    }
    if let Some(reset) = codec.reset_request() {
        apply(&mut links, &reset, 1, codec, max_frame).await?;
    }
    let mut input = BufReader::new(stream);
    let mut batch = BytesMut::new();
    let mut count = 0usize;
    let mut total = 0u64;
    loop {
        let len = input.read_u32().await.map_err(|e| format!("the copy was cut short: {e}"))? as usize;
        if len > max_frame + 1024 {
            return Err(format!("a restore of {len} bytes is larger than ordered.max_frame_bytes allows"));
        }
        if len > 0 {
            let mut restore = vec![0u8; len];
            input.read_exact(&mut restore).await.map_err(|e| format!("the copy was cut short: {e}"))?;
            if codec.request_len(&restore) != Ok(Some(len)) {
                return Err("it sent a restore that is not one complete request".into());
            }
            batch.extend_from_slice(&restore);
            count += 1;
            total += 1;
        }
        if (len == 0 || batch.len() >= IMPORT_BATCH) && count > 0 {
            apply(&mut links, &batch, count, codec, max_frame).await?;
            batch.clear();
            count = 0;
        }
        if len == 0 {
            break;
        }
    }
    // The order's own state, bounded like the copy: at most `ORDER_STATE_FRAMES` frames of at
    // most `max_frame_bytes` each.
    let mut order_state = Vec::new();
    loop {
        let len = input.read_u32().await.map_err(|e| format!("the order's state was cut short: {e}"))? as usize;
        if len == 0 {
            break;
        }
        if len > max_frame + 1024 || order_state.len() >= ORDER_STATE_FRAMES {
            return Err("the order's state is larger than this host takes".into());
        }
        let mut frame = vec![0u8; len];
        input.read_exact(&mut frame).await.map_err(|e| format!("the order's state was cut short: {e}"))?;
        order_state.push(Bytes::from(frame));
    }
    Ok((at, total, order_state))
}

/// Writes `count` requests to every replica and checks that none answers an error.
async fn apply(
    links: &mut [ReplicaLink],
    bytes: &[u8],
    count: usize,
    codec: &dyn Codec,
    max: usize,
) -> Result<(), String> {
    for link in links.iter_mut() {
        link.write(bytes).await?;
    }
    for link in links.iter_mut() {
        for _ in 0..count {
            let frame = link.frame(max + 1024).await?;
            if codec.is_error(&frame) {
                let text = String::from_utf8_lossy(&frame[..frame.len().min(200)]).trim_end().to_string();
                return Err(format!("replica {} refused a restore: {text}", link.addr));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::resp::Resp;

    /// A source that answers every connection with `reply` (after reading the request line).
    async fn fake_source(reply: Vec<u8>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = read_line(&mut stream).await;
                let _ = stream.write_all(&reply).await;
                let _ = stream.shutdown().await;
            }
        });
        addr
    }

    fn codec() -> Arc<dyn Codec> {
        Arc::new(Resp::new(1 << 20, None))
    }

    async fn import_one(reply: Vec<u8>, seq: u64) -> Result<u64, String> {
        import_with_state(reply, seq).await.map(|(at, _)| at)
    }

    async fn import_with_state(reply: Vec<u8>, seq: u64) -> Result<(u64, Vec<Bytes>), String> {
        let source = fake_source(reply).await;
        import(vec![source], seq, vec![], codec(), 1 << 20, Duration::from_secs(5)).await
    }

    fn frame(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    #[tokio::test]
    async fn a_copy_is_taken_only_whole_and_from_the_point_asked_for() {
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let mut whole = b"OK 7\n".to_vec();
        whole.extend(frame(set));
        whole.extend(0u32.to_be_bytes());
        // The order's own state: a WATCH entry.
        whole.extend(frame(b"watch entry"));
        whole.extend(0u32.to_be_bytes());
        assert_eq!(import_with_state(whole.clone(), 5).await, Ok((7, vec![Bytes::from_static(b"watch entry")])));
        let mut without = whole[..whole.len() - 19].to_vec();
        without.extend(0u32.to_be_bytes());
        assert_eq!(import_with_state(without, 5).await, Ok((7, Vec::new())));
        // Each of these is refused with a reason, never taken for a state.
        let refused = import_one(b"ERR busy with another transfer\n".to_vec(), 5).await;
        assert!(refused.as_ref().is_err_and(|e| e.contains("refused: busy")), "{refused:?}");
        let early = import_one(b"OK 3\n".to_vec(), 5).await;
        assert!(early.as_ref().is_err_and(|e| e.contains("before the 5")), "{early:?}");
        let cut = import_one(whole[..whole.len() - 2].to_vec(), 5).await;
        assert!(cut.as_ref().is_err_and(|e| e.contains("cut short")), "{cut:?}");
        let mut huge = b"OK 7\n".to_vec();
        huge.extend(u32::MAX.to_be_bytes());
        let huge = import_one(huge, 5).await;
        assert!(huge.as_ref().is_err_and(|e| e.contains("larger than")), "{huge:?}");
        let mut half = b"OK 7\n".to_vec();
        half.extend(frame(&set[..10]));
        half.extend(0u32.to_be_bytes());
        let half = import_one(half, 5).await;
        assert!(half.as_ref().is_err_and(|e| e.contains("not one complete request")), "{half:?}");
        let garbage = import_one(b"HELLO\n".to_vec(), 5).await;
        assert!(garbage.as_ref().is_err_and(|e| e.contains("a bad answer")), "{garbage:?}");
    }

    #[tokio::test]
    async fn a_bad_request_line_is_answered_with_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(serve(listener, tx));
        for line in [&b"GET / HTTP/1.0\n"[..], b"RESH-STATE x\n"] {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(line).await.expect("write");
            let mut answer = String::new();
            c.read_to_string(&mut answer).await.expect("read");
            assert!(answer.starts_with("ERR expected `RESH-STATE <seq>`"), "{answer}");
        }
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"RESH-STATE 42\n").await.expect("write");
        let request = rx.recv().await.expect("a request");
        assert_eq!(request.seq, 42);
    }
}
