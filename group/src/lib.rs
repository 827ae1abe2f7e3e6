//! # group — one agreed order of messages and membership views across hosts
//!
//! D-RESH joins several RESH hosts into one fail-stop service. Every host multicasts its
//! clients' requests to the group, and every host feeds what the group *delivers*, in the
//! order it delivers it, to its ordered core: all hosts' replicas then execute one sequence.
//! This crate is that group, behind one small trait, [`Group`]: multicast a message, and take
//! deliveries — messages and membership [`View`]s — in one order that every member sees
//! alike (*extended virtual synchrony*: a view change is delivered at the same point of the
//! message order at every host that installs it).
//!
//! What the group does **not** promise, and what is built on top must therefore not assume:
//! a message is *agreed* (same order everywhere), not *safe* — a message delivered at one host
//! may be lost with that host (Corosync implements no safe delivery: `CPG_TYPE_SAFE` is the
//! same as agreed). A partitioned host forms a view of its own and keeps running; whether a
//! view holds a quorum of the expected hosts ([`View::has_quorum`]) is for the caller to act on.
//!
//! ## Layout
//! - this file: the [`Group`] trait and what it delivers ([`Delivery`], [`View`]), and
//!   [`GroupError`];
//! - [`sim`]: a deterministic group without I/O (hosts, an agreed order per connected
//!   component, crashes that lose what was not spread yet, partitions, views), driven step by
//!   step by a test; it checks the guarantees above and lets what is built on top be tested
//!   against every interleaving a seed can produce;
//! - [`dresh`]: the D-RESH state machine of one host, pure and driven by deliveries: which
//!   requests the ordered core gets in which order, when an answer may be released, when a
//!   host stops serving (no quorum) or leaves (its answers differ from the group's), how a
//!   host gets in sync;
//! - [`local`]: the [`Group`] trait over one [`sim::SimGroup`] shared by the members of an
//!   in-process group, for async tests;
//! - `corosync` (feature `corosync`): the engine for real deployments, Corosync's CPG (the
//!   group communication layer of Linux HA clusters). Its handle is owned by one thread that
//!   dispatches into a channel.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

use bytes::Bytes;
use tokio::sync::mpsc;

#[cfg(feature = "corosync")]
pub mod corosync;
pub mod dresh;
pub mod local;
pub mod sim;

/// A host in the group: Corosync's node id (from 1), or a test's number.
pub type HostId = u32;

/// A membership view: who is in the group from this point of the order on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// Grows with every view this host installs (its count of views; not comparable across
    /// hosts that joined at different times).
    pub id: u64,
    /// The members, sorted.
    pub members: Vec<HostId>,
    /// Who joined with this view.
    pub joined: Vec<HostId>,
    /// Who left with this view, and why.
    pub left: Vec<(HostId, LeaveReason)>,
}

impl View {
    /// Whether the view holds more than half of the `expected` hosts: a host in a view without
    /// quorum must stop serving (the others may be serving without it).
    pub fn has_quorum(&self, expected: usize) -> bool {
        self.members.len() * 2 > expected
    }

    /// Whether `host` is a member.
    pub fn contains(&self, host: HostId) -> bool {
        self.members.binary_search(&host).is_ok()
    }
}

/// Why a host left a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// It left the group itself.
    Left,
    /// Its node is unreachable: crashed, or cut off (a partition).
    NodeDown,
    /// Its process ended (the node still runs).
    ProcessDown,
    /// Another reason the engine reported.
    Other,
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaveReason::Left => "left",
            LeaveReason::NodeDown => "node down or unreachable",
            LeaveReason::ProcessDown => "process ended",
            LeaveReason::Other => "other",
        })
    }
}

/// What the group delivers, in its agreed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A message some member multicast (this host's own too).
    Message {
        /// Who multicast it.
        from: HostId,
        /// What it multicast.
        payload: Bytes,
    },
    /// A new view, at this point of the order.
    View(View),
    /// The engine is gone (the local daemon died, or the group was left): nothing more comes,
    /// and this host can no longer tell what the others decide.
    Lost(String),
}

/// Why a multicast or the group itself failed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    /// The engine is gone (see [`Delivery::Lost`]).
    #[error("the group engine is gone: {0}")]
    Gone(String),
    /// The message is larger than the engine carries.
    #[error("a message of {len} bytes is larger than the group carries ({max})")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The largest.
        max: usize,
    },
    /// The multicast queue is full: try again once deliveries have been taken.
    #[error("the group's send queue is full")]
    Full,
    /// The engine could not be started or joined.
    #[error("cannot join the group: {0}")]
    Join(String),
}

/// Multicast in agreed order, and the deliveries — the one interface the Domain-NV uses.
pub trait Group: Send {
    /// This host.
    fn local(&self) -> HostId;
    /// Multicasts `payload` to every member, this host included; it is delivered later, in the
    /// agreed order, or never (if this host crashes or is cut off first).
    fn multicast(&self, payload: Bytes) -> Result<(), GroupError>;
    /// The deliveries, in the agreed order. The first is the view this host joined.
    fn deliveries(&mut self) -> &mut mpsc::Receiver<Delivery>;
    /// The largest message the engine carries.
    fn max_message(&self) -> usize {
        usize::MAX
    }
}
