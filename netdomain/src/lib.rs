//! The Domain-NV of resh: the network/voting front end that sits between clients and the
//! replicas of a service.
//!
//! Layout:
//! - [`config`]: the TOML configuration, its defaults and validation (`resh check`).
//! - [`codec`]: framing codecs of ordered mode (RESP, with Redis's own request rules; the
//!   logical checkpoint that copies a keyspace; the command table, each session's client state,
//!   the shapes the vote compares, and the commands answered in steps: random picks, blocking
//!   commands).
//! - [`ordered`]: ordered mode: the sans-I/O ordered core ([`ordered::core`]) that puts every
//!   session's requests in one global order for all replicas, votes the answers, and rebuilds
//!   replicas (replay log, checkpoints); its tokio shell (the sequencer and the replica
//!   connections); the client sessions; resh's own pub/sub broker and WATCH table; a
//!   deterministic simulation for its tests.
//! - [`stream`]: stream mode: one client session, fan-out of client bytes to every replica,
//!   the stream vote on their output (the pure [`voter`] crate), release of agreed bytes; a
//!   sans-I/O session core ([`stream::session`]) and the tokio shell that drives it.
//! - [`http`]: HTTP mode: the pure normal form of a response (what its vote covers, noise
//!   masks, where two responses differ), and the sessions for stateless services (hyper on
//!   both sides, a frame vote per client connection).
//! - [`fault`]: fault events (replica name, position in bytes or requests) and the one sink
//!   both modes report them to: log, metrics, supervisor.
//! - [`metrics`]: counters, the vote latency histogram, recent faults.
//! - [`admin`]: the admin HTTP server (`/status`, `/metrics`, `/injections`, `POST /inject`).
//! - [`server`]: ties them together: the state every session shares, the accept loop, and
//!   the dispatch of each client to its mode ([`run`], [`run_until`]).
//!
//! The `resh` binary and the tools that are not the data path (the demo scenario, `resh inject`,
//! `resh campaign`, `resh bench`) are in the `resh` crate.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
mod chunks;
pub mod codec;
pub mod config;
pub mod fault;
pub mod http;
pub mod metrics;
pub mod ordered;
pub mod reload;
pub mod server;
pub mod stream;
mod sys;

pub use server::{
    default_worker_threads, run, run_until, run_with, InProcess, InProcessError, RunError, RunOptions, Running, Shared,
};
