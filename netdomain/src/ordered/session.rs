//! One client session in ordered mode.
//!
//! The session frames the client's requests, hands each one to the sequencer (or answers it
//! locally, as the codec says), and writes the answers back in request order, so pipelining
//! clients (`redis-benchmark -P 16`) work. Two tasks:
//! - the *reader* (this function's body) parses requests and queues one reply slot per
//!   request; at most `max_in_flight` slots are queued, so a client that pipelines without
//!   reading answers is not read further (backpressure);
//! - the *writer* awaits the slots in order and writes answers in batches.
//!
//! A malformed request gets the codec's protocol error and the connection is closed. A request
//! whose vote is undecidable ends the session: the client gets the codec's error (if the
//! protocol has one) and nothing after it.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

use super::{Ordered, Reply, Submit};
use crate::codec::Dispatch;
use crate::metrics::Verdict;
use crate::server::Shared;

/// Bytes of answers gathered before one write.
const WRITE_BATCH: usize = 64 * 1024;

/// An answer slot, in request order.
enum Slot {
    Ready(Bytes),
    Pending(oneshot::Receiver<Reply>),
    Close(Bytes),
}

/// How the writer ended.
#[derive(Debug, PartialEq, Eq)]
enum WriterEnd {
    Done,
    Undecidable,
    ClientGone,
}

/// Serves one client in ordered mode.
pub async fn serve(shared: Arc<Shared>, ordered: Ordered, client: TcpStream, peer: SocketAddr, id: u64) {
    let span = tracing::info_span!("session", id, %peer);
    run(shared, ordered, client).instrument(span).await
}

async fn run(shared: Arc<Shared>, ordered: Ordered, client: TcpStream) {
    let _ = client.set_nodelay(true);
    shared.metrics.session_started();
    let idle = shared.config.idle_timeout();
    let codec = Arc::clone(&ordered.codec);
    let (mut read, write) = client.into_split();
    let (slots, slots_rx) = mpsc::channel::<Slot>(shared.config.ordered.max_in_flight);
    let writer = tokio::spawn(answer_writer(write, slots_rx, idle, Arc::clone(&ordered.codec), Arc::clone(&shared)));
    let mut buf = BytesMut::with_capacity(16 * 1024);
    'session: loop {
        // Every complete request in the buffer, in order.
        loop {
            let len = match codec.request_len(&buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    info!(error = %e, "malformed request: closing");
                    let _ = slots.send(Slot::Close(codec.protocol_error(&e))).await;
                    break 'session;
                }
            };
            let request = buf.split_to(len);
            let slot = match codec.dispatch(&request) {
                Ok(Dispatch::Forward { request, logged }) => {
                    let (reply, answer) = oneshot::channel();
                    if ordered.submit(Submit { request, logged, reply }).await.is_err() {
                        break 'session;
                    }
                    Slot::Pending(answer)
                }
                Ok(Dispatch::Reply(answer)) => Slot::Ready(answer),
                Ok(Dispatch::Close(answer)) => {
                    let _ = slots.send(Slot::Close(answer)).await;
                    break 'session;
                }
                Ok(Dispatch::Ignore) => continue,
                Err(e) => {
                    info!(error = %e, "malformed request: closing");
                    let _ = slots.send(Slot::Close(codec.protocol_error(&e))).await;
                    break 'session;
                }
            };
            if slots.send(slot).await.is_err() {
                break 'session; // the writer ended (client gone or undecidable)
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match tokio::time::timeout(idle, read.read_buf(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => shared.metrics.client_in(n),
            Ok(Err(e)) => {
                debug!(error = %e, "client connection failed");
                break;
            }
            Err(_) => {
                info!(idle_ms = idle.as_millis() as u64, "closing idle session");
                break;
            }
        }
    }
    drop(slots);
    let end = writer.await.unwrap_or(WriterEnd::ClientGone);
    let verdict = if end == WriterEnd::Undecidable { Verdict::Undecidable } else { Verdict::Agreed };
    if end == WriterEnd::Undecidable {
        warn!("session ended: a request's vote was undecidable");
    }
    shared.metrics.session_ended(verdict);
}

/// Writes answers in request order; ends the session on an undecidable vote.
async fn answer_writer(
    mut write: OwnedWriteHalf,
    mut slots: mpsc::Receiver<Slot>,
    idle: Duration,
    codec: Arc<dyn crate::codec::Codec>,
    shared: Arc<Shared>,
) -> WriterEnd {
    let mut out = BytesMut::with_capacity(WRITE_BATCH);
    let mut end = WriterEnd::Done;
    while let Some(slot) = slots.recv().await {
        match slot {
            Slot::Ready(answer) => out.extend_from_slice(&answer),
            Slot::Pending(answer) => match answer.await {
                Ok(Reply::Response(answer)) => out.extend_from_slice(&answer),
                Ok(Reply::Undecidable) | Err(_) => {
                    if let Some(answer) = codec.undecidable() {
                        out.extend_from_slice(&answer);
                    }
                    end = WriterEnd::Undecidable;
                    break;
                }
            },
            Slot::Close(answer) => {
                out.extend_from_slice(&answer);
                break;
            }
        }
        if (out.len() >= WRITE_BATCH || slots.is_empty()) && !flush(&mut write, &mut out, idle, &shared).await {
            return WriterEnd::ClientGone;
        }
    }
    if !flush(&mut write, &mut out, idle, &shared).await {
        return WriterEnd::ClientGone;
    }
    let _ = write.shutdown().await;
    end
}

async fn flush(write: &mut OwnedWriteHalf, out: &mut BytesMut, idle: Duration, shared: &Shared) -> bool {
    if out.is_empty() {
        return true;
    }
    match tokio::time::timeout(idle, write.write_all(out)).await {
        Ok(Ok(())) => {
            shared.metrics.client_out(out.len());
            out.clear();
            true
        }
        _ => false,
    }
}
