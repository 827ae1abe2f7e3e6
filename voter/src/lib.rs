//! Output voting for resh, without I/O.
//!
//! The Domain-NV hands every client's input to N replicas and may release to the client
//! only what a quorum of them produced. This crate is the part that decides: it is a pure,
//! deterministic state machine (no sockets, no tasks, no clock of its own: the caller passes
//! the time in), so every decision can be replayed and tested exhaustively.
//!
//! Layout:
//! - [`stream`]: the stream vote. Each replica's output is a byte stream; the voter releases
//!   the longest prefix that at least `quorum` replicas produced identically, and names the
//!   replicas that diverge, close early, crash, lag or flood.
//! - [`frame`]: the frame vote of ordered mode: one vote per request, over the digests of the
//!   replicas' response frames (or their closing the connection), with lateness judged
//!   against the quorum's progress.
//! - [`fault`]: what a fault is (replica, offset, kind, the blake3 digests that differed).
//! - [`prefix`]: the byte comparison the vote is built on.
//!
//! The voter never releases a byte that fewer than `quorum` replicas produced; when no quorum
//! can be reached any more it says so ([`Status::Undecidable`]) and the caller must abort the
//! session: fail-stop, never fail-wrong.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod fault;
pub mod frame;
pub mod prefix;
pub mod stream;

pub use fault::{Digest, Fault, FaultKind};
pub use frame::{Decision, FrameConfig, FrameOutcome, FrameVoter, Vote};
pub use stream::{ConfigError, Status, StreamConfig, StreamVoter, Undecidable};
