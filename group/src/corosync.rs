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
    if ours {
        send(Delivery::Message { from: u32::from(nodeid), payload: Bytes::copy_from_slice(msg) });
    }
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
            while let Ok(payload) = queue.recv() {
                let mut backoff = Duration::from_millis(1);
                loop {
                    match cpg::mcast_joined(&handle, cpg::Guarantee::TypeAgreed, &payload) {
                        Ok(()) => break,
                        // The daemon's flow control: wait and retry.
                        Err(CsError::CsErrTryAgain) => {
                            thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_millis(100));
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
        if payload.len() > self.max_message {
            return Err(GroupError::TooLarge { len: payload.len(), max: self.max_message });
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
        self.max_message
    }
}
