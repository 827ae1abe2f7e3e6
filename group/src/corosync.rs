//! The Corosync CPG engine: the [`Group`] trait over a process group of the Corosync daemon
//! running on this host (reached over libqb IPC, so one per network namespace).
//!
//! Threads, because libcpg calls back through plain `fn` pointers and blocks: a *dispatch*
//! thread owns the handle's callbacks (they find their channel in a thread-local, since the
//! callback's context argument does not round-trip in the binding) and blocks in
//! `cpg_dispatch`; a *sender* thread takes multicasts from a bounded queue and calls
//! `cpg_mcast_joined`, retrying while the daemon says TRY_AGAIN (its flow control). No callback
//! panics (a panic there would abort the process): a full delivery queue makes the callback
//! wait, which is Corosync's own backpressure; a dropped receiver makes it discard.
//!
//! Members are CPG addresses (node id, pid); a host is its node id, one resh per node.
//! Messages go with `CPG_TYPE_AGREED`: CPG has no safe delivery (see the crate docs).
//!
//! **Envelopes.** The sender thread packs every multicast waiting in its queue into one CPG
//! message (a count, then each message with its length), and the dispatch thread unpacks it into
//! as many deliveries, in order. Why: Corosync lets each node send a few messages per turn of
//! its token (`max_messages`), so many small messages wait for many turns; one message per turn
//! carries them all. Order is kept: an envelope holds consecutive multicasts of one sender, and
//! the group's order between senders is the order of the envelopes.
use std::cell::RefCell;
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use rust_corosync::cpg;
use rust_corosync::{CsError, DispatchFlags, NodeId};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{Delivery, Group, GroupError, HostId, LeaveReason, View};

/// Multicasts waiting for the sender thread.
const SEND_QUEUE: usize = 1024;
/// Deliveries waiting for the Domain-NV; at this the dispatch thread waits.
const DELIVERY_QUEUE: usize = 4096;

/// A member of a CPG group.
#[derive(Debug)]
pub struct CorosyncGroup {
    local: HostId,
    max_message: usize,
    sends: std_mpsc::SyncSender<Bytes>,
    deliveries: mpsc::Receiver<Delivery>,
}

/// What the callbacks of the dispatch thread deliver into.
struct Sink {
    tx: mpsc::Sender<Delivery>,
    group: String,
    /// Views this host installed.
    views: u64,
    members: Vec<HostId>,
}

thread_local! {
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
}

fn send(delivery: Delivery) {
    SINK.with(|sink| {
        if let Some(sink) = sink.borrow().as_ref() {
            // Waits while the queue is full (the daemon then holds back further deliveries);
            // fails only if the receiver is gone, and then nobody wants them.
            let _ = sink.tx.blocking_send(delivery);
        }
    });
}

fn deliver_fn(_handle: &cpg::Handle, group: String, nodeid: NodeId, _pid: u32, msg: &[u8], _len: usize) {
    let ours = SINK.with(|sink| sink.borrow().as_ref().is_some_and(|s| s.group == group));
    if !ours {
        return;
    }
    let from = u32::from(nodeid);
    match unpack(msg) {
        Some(messages) => {
            for payload in messages {
                send(Delivery::Message { from, payload });
            }
        }
        // Not an envelope (another program in the group, or a corrupted message): delivered as
        // it is, for the caller to refuse (it decodes what it is given).
        None => {
            warn!(from, len = msg.len(), "a group message that is not an envelope");
            send(Delivery::Message { from, payload: Bytes::copy_from_slice(msg) });
        }
    }
}

/// Envelope overhead: the count, and a length per message.
const ENVELOPE: usize = 4;
const ENTRY: usize = 4;

/// Packs messages into one envelope.
fn pack(messages: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE + messages.iter().map(|m| ENTRY + m.len()).sum::<usize>());
    out.extend_from_slice(&(messages.len() as u32).to_be_bytes());
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// The messages of an envelope, or `None` if it is not a whole one.
fn unpack(envelope: &[u8]) -> Option<Vec<Bytes>> {
    let count = u32::from_be_bytes(envelope.get(..ENVELOPE)?.try_into().ok()?) as usize;
    let mut rest = &envelope[ENVELOPE..];
    if count > rest.len() / ENTRY {
        return None;
    }
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u32::from_be_bytes(rest.get(..ENTRY)?.try_into().ok()?) as usize;
        let body = rest.get(ENTRY..ENTRY + len)?;
        messages.push(Bytes::copy_from_slice(body));
        rest = &rest[ENTRY + len..];
    }
    rest.is_empty().then_some(messages)
}

fn confchg_fn(
    _handle: &cpg::Handle,
    group: &str,
    members: Vec<cpg::Address>,
    left: Vec<cpg::Address>,
    joined: Vec<cpg::Address>,
) {
    let view = SINK.with(|sink| {
        let mut sink = sink.borrow_mut();
        let sink = sink.as_mut().filter(|s| s.group == group)?;
        let mut ids: Vec<HostId> = members.iter().map(|a| u32::from(a.nodeid)).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != members.len() {
            warn!(group, "more than one process of a node is in the group: each node counts once");
        }
        sink.views += 1;
        let before = std::mem::replace(&mut sink.members, ids.clone());
        let mut joined: Vec<HostId> =
            joined.iter().map(|a| u32::from(a.nodeid)).filter(|h| !before.contains(h)).collect();
        joined.sort_unstable();
        joined.dedup();
        let left =
            left.iter().map(|a| (u32::from(a.nodeid), reason(a.reason))).filter(|(h, _)| !ids.contains(h)).collect();
        Some(View { id: sink.views, members: ids, joined, left })
    });
    if let Some(view) = view {
        send(Delivery::View(view));
    }
}

fn reason(r: cpg::Reason) -> LeaveReason {
    match r {
        cpg::Reason::Leave => LeaveReason::Left,
        cpg::Reason::NodeDown => LeaveReason::NodeDown,
        cpg::Reason::ProcDown => LeaveReason::ProcessDown,
        _ => LeaveReason::Other,
    }
}

fn failed(what: &str, e: CsError) -> GroupError {
    GroupError::Join(format!("{what}: {e} (is corosync running on this host, and may this user use it?)"))
}

impl CorosyncGroup {
    /// Joins CPG group `name` through the local Corosync daemon. The first delivery is the view
    /// this host joined.
    pub fn join(name: &str) -> Result<CorosyncGroup, GroupError> {
        let model = cpg::ModelData::ModelV1(cpg::Model1Data {
            flags: cpg::Model1Flags::None,
            deliver_fn: Some(deliver_fn),
            confchg_fn: Some(confchg_fn),
            totem_confchg_fn: None,
        });
        let handle = cpg::initialize(&model, 0).map_err(|e| failed("cpg_initialize", e))?;
        let local = match cpg::local_get(&handle) {
            Ok(id) => u32::from(id),
            Err(e) => {
                let _ = cpg::finalize(&handle);
                return Err(failed("cpg_local_get", e));
            }
        };
        let max_message = cpg::max_atomic_msgsize_get(&handle).map_or(1 << 20, |m| m as usize);
        let (tx, deliveries) = mpsc::channel(DELIVERY_QUEUE);
        let (sends, queue) = std_mpsc::sync_channel::<Bytes>(SEND_QUEUE);
        let (joined_tx, joined_rx) = std_mpsc::channel();
        let group = name.to_string();
        let dispatch_handle = handle.clone();
        let spawned = thread::Builder::new().name("cpg-dispatch".into()).spawn(move || {
            SINK.with(|sink| {
                *sink.borrow_mut() = Some(Sink { tx: tx.clone(), group: group.clone(), views: 0, members: vec![] })
            });
            // Joined from this thread, so that the first view finds the sink.
            let joined = cpg::join(&dispatch_handle, &group).map_err(|e| failed("cpg_join", e));
            let ok = joined.is_ok();
            let _ = joined_tx.send(joined);
            if !ok {
                return;
            }
            let why = match cpg::dispatch(&dispatch_handle, DispatchFlags::Blocking) {
                Ok(()) => "the group was left".to_string(),
                Err(e) => format!("the connection to corosync ended: {e}"),
            };
            debug!(%why, "cpg dispatch ended");
            let _ = tx.blocking_send(Delivery::Lost(why));
            SINK.with(|sink| *sink.borrow_mut() = None);
            let _ = cpg::finalize(&dispatch_handle);
        });
        if let Err(e) = spawned {
            let _ = cpg::finalize(&handle);
            return Err(GroupError::Join(format!("cannot start the dispatch thread: {e}")));
        }
        match joined_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(GroupError::Join("the dispatch thread ended".into())),
        }
        let sender = thread::Builder::new().name("cpg-send".into()).spawn(move || {
            let mut carried: Option<Bytes> = None;
            loop {
                // Everything waiting goes out in one envelope, up to the largest message.
                let first = match carried.take() {
                    Some(first) => first,
                    None => match queue.recv() {
                        Ok(first) => first,
                        Err(_) => return,
                    },
                };
                let mut size = ENVELOPE + ENTRY + first.len();
                let mut batch = vec![first];
                // No lingering for more: measured, waiting even 0.3 ms for company cost more
                // latency than the fewer messages saved.
                while let Ok(next) = queue.try_recv() {
                    if size + ENTRY + next.len() > max_message {
                        carried = Some(next);
                        break;
                    }
                    size += ENTRY + next.len();
                    batch.push(next);
                }
                let payload = pack(&batch);
                let mut backoff = Duration::from_micros(100);
                loop {
                    match cpg::mcast_joined(&handle, cpg::Guarantee::TypeAgreed, &payload) {
                        Ok(()) => break,
                        // The daemon's flow control: wait and retry.
                        Err(CsError::CsErrTryAgain) => {
                            thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_millis(20));
                        }
                        Err(e) => {
                            warn!(error = %e, "cpg_mcast_joined failed: the group is gone for this host");
                            return;
                        }
                    }
                }
            }
        });
        if let Err(e) = sender {
            return Err(GroupError::Join(format!("cannot start the sender thread: {e}")));
        }
        Ok(CorosyncGroup { local, max_message, sends, deliveries })
    }
}

impl Group for CorosyncGroup {
    fn local(&self) -> HostId {
        self.local
    }

    fn multicast(&self, payload: Bytes) -> Result<(), GroupError> {
        if payload.len() + ENVELOPE + ENTRY > self.max_message {
            return Err(GroupError::TooLarge { len: payload.len(), max: self.max_message - ENVELOPE - ENTRY });
        }
        self.sends.try_send(payload).map_err(|e| match e {
            std_mpsc::TrySendError::Full(_) => GroupError::Full,
            std_mpsc::TrySendError::Disconnected(_) => GroupError::Gone("the sender thread ended".into()),
        })
    }

    fn deliveries(&mut self) -> &mut mpsc::Receiver<Delivery> {
        &mut self.deliveries
    }

    fn max_message(&self) -> usize {
        self.max_message - ENVELOPE - ENTRY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_partial_ones_are_refused() {
        let messages = vec![Bytes::from_static(b"one"), Bytes::new(), Bytes::from_static(b"three")];
        let envelope = pack(&messages);
        assert_eq!(unpack(&envelope), Some(messages));
        for cut in 0..envelope.len() {
            assert_eq!(unpack(&envelope[..cut]), None, "a cut envelope unpacked");
        }
        let mut longer = envelope.clone();
        longer.push(0);
        assert_eq!(unpack(&longer), None);
        assert_eq!(unpack(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
