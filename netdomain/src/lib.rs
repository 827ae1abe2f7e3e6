//! The Domain-NV of resh: the network/voting front end that sits between clients and the
//! replicas of a service.
//!
//! Layout:
//! - [`config`]: the TOML configuration, its defaults and validation (`resh check`).
//! - [`session`]: one client session: fan-out of client bytes to every replica, the stream
//!   vote on their output (the pure [`voter`] crate), release of agreed bytes, fault reports.
//! - [`metrics`]: counters, the vote latency histogram, recent faults.
//! - [`admin`]: the admin HTTP server (`/status`, `/metrics`).
//! - [`run`]: ties them together: starts the replica supervisor, waits for the replicas,
//!   accepts clients (at most `max_sessions` at once) until SIGINT or SIGTERM.
//!
//! The binary `resh` (src/main.rs) is the command-line front of this library.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod metrics;
pub mod session;

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use replicas::Supervisor;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::session::Shared;

/// Why resh could not start or keep running.
#[derive(Debug)]
pub enum RunError {
    /// A listen address could not be bound.
    Bind {
        /// The configuration key.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Bind { key, addr, error } => write!(f, "{key}: cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Runs resh with a validated configuration until SIGINT or SIGTERM.
///
/// Prints the addresses it serves on standard output once it is ready, one per line:
/// `resh: clients on ADDR` and `resh: admin on http://ADDR`.
pub async fn run(config: Config) -> Result<(), RunError> {
    let started = Instant::now();
    let quorum = config.quorum();
    if config.quorum_below_majority() {
        warn!(
            quorum,
            replicas = config.replicas.len(),
            "quorum is below a majority: two disagreeing groups could each reach it, and the first to do so wins"
        );
    }
    let listen = config.listen_addr();
    let client_listener =
        TcpListener::bind(listen).await.map_err(|error| RunError::Bind { key: "listen", addr: listen, error })?;
    let admin_listener = match config.admin_addr() {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.map_err(|error| RunError::Bind { key: "admin.listen", addr, error })?)
        }
        None => None,
    };

    let supervisor = Supervisor::start(config.replica_specs(), config.supervisor());
    let total = supervisor.len();
    let ready = supervisor.wait_ready(total, config.supervisor().ready_timeout).await;
    if ready < quorum {
        error!(ready, quorum, "fewer replicas ready than the quorum: clients are refused until more are up");
    } else if ready < total {
        warn!(ready, total, "not every replica is ready; serving with the ones that are");
    }
    let max_sessions = config.max_sessions;
    let shared = Shared::new(config, Arc::clone(&supervisor));

    let client_addr = client_listener.local_addr().unwrap_or(listen);
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "resh: clients on {client_addr}");
    if let Some(admin) = admin_listener {
        let admin_addr = admin.local_addr().ok();
        if let Some(a) = admin_addr {
            let _ = writeln!(stdout, "resh: admin on http://{a}");
        }
        tokio::spawn(admin::serve(admin, Arc::clone(&shared), started));
    }
    let _ = stdout.flush();
    info!(%client_addr, replicas = total, ready, quorum, "resh is serving");

    let slots = Arc::new(Semaphore::new(max_sessions));
    let accept = async {
        loop {
            // At most max_sessions at once: further clients wait in the kernel's accept queue.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
            match client_listener.accept().await {
                Ok((stream, peer)) => {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        session::serve(shared, stream, peer).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        signal = shutdown_signal() => info!(signal, "stopping"),
    }
    supervisor.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
