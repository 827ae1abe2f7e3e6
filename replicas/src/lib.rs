//! Replicas of the service behind resh, and the supervisor that keeps them healthy.
//!
//! Layout:
//! - [`spec`]: what a replica is: a command resh starts (with a `{port}` placeholder that resh
//!   fills with a free loopback port) or the address of one that is already running.
//! - [`supervisor`]: starts the command replicas, waits until each accepts connections,
//!   restarts one that exits (with backoff), and quarantines one that a vote found faulty: no
//!   new sessions go to it, it is restarted (or, for an address replica, probed) and readmitted
//!   when it answers again. It also keeps the per-replica counters that `/status` and
//!   `/metrics` show.
//! - [`watchdog`]: a small process that kills the replicas' process groups if resh dies
//!   without stopping them (SIGKILL), so a wrapped replica never outlives resh.
//! - [`inject`]: fault injection for experiments: bit flips in a replica's output, input or
//!   process memory, crash, hang and output delay, each seeded and recorded.
//!
//! Sessions ask the supervisor for the admitted replicas when they start and report every
//! fault back, tagged with the replica's *incarnation*, so that the crash a repair causes in
//! older sessions does not count as a new reason to repair it again.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod inject;
pub mod spec;
pub mod supervisor;
mod sys;
pub mod watchdog;

pub use spec::{Launch, ReplicaSpec};
pub use supervisor::{AddError, Admitted, Phase, ReplicaStatus, ReplicaTiming, Reported, Supervisor, SupervisorConfig};
