//! The `resh` command line and the tools around the Domain-NV.
//!
//! The data path (configuration, sessions, votes, admin API) is the `netdomain` crate; this
//! crate holds what is *not* on the data path, so that none of it (plotting, progress bars,
//! benchmark histograms) is linked into the code that handles client traffic:
//! - `src/main.rs`: the `resh` binary: `run`, `check`, `status`, `reload`, `inject`, `campaign`, `bench`, `demo`,
//!   `http-noise`.
//! - [`demo`]: the scenario `resh demo` runs (three diverse versions, a planted bug).
//! - [`webdemo`]: `resh demo --web`: the same with three web servers (nginx, lighttpd, ours)
//!   in HTTP mode.
//! - [`inject`]: `resh inject`, a small client of the admin API's `POST /inject`.
//! - [`http_noise`]: `resh http-noise`: samples the replicas of an HTTP service, reports what
//!   differs between their responses and proposes masks.
//! - [`reload`]: `resh reload`, the same for `POST /reload`.
//! - [`status`]: `resh status [--watch]`, a terminal view of `GET /status`.
//! - [`campaign`]: `resh campaign`: fault-injection experiments on fresh in-process resh
//!   instances ([`netdomain::run_until`]), classified against a golden run, with reports.
//! - [`bench`](mod@bench): `resh bench`: throughput, latency, CPU and memory of resh against the service
//!   alone and HAProxy, with real processes.
//! - [`error`]: errors the tools share ([`error::FileError`]).
//!
//! Every fallible operation returns an error enum of its own (thiserror) whose variants say
//! whose the problem is: the user's input or configuration, a replica or process, the system,
//! or resh itself. Only `src/main.rs` and the commands' `main` functions turn them into text.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod campaign;
pub mod demo;
pub mod error;
pub mod http_noise;
pub mod inject;
pub mod reload;
pub mod status;
pub mod webdemo;
