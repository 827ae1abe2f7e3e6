//! What a replica is and how it is reached.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// The placeholder in a command's arguments and environment that resh replaces with the port
/// it chose for the replica.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// One replica of the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplicaSpec {
    /// A unique, stable name (used in logs, metrics and the admin API).
    pub name: String,
    /// The version label, for N-version sets (which implementation this replica runs).
    pub version: String,
    /// How the replica is started or reached.
    pub launch: Launch,
}

/// How a replica is started or reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Launch {
    /// resh starts `argv` itself, after replacing `{port}` with a free loopback port, and
    /// connects to `127.0.0.1:{port}`.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Extra environment variables (`{port}` is replaced in values too).
        env: BTreeMap<String, String>,
        /// Working directory; resh's own when absent.
        cwd: Option<PathBuf>,
    },
    /// The replica is already running at this `host:port`; resh only connects to it.
    Address(String),
}

impl Launch {
    /// The command line with the port filled in.
    pub fn argv_for(argv: &[String], port: u16) -> Vec<String> {
        argv.iter().map(|a| a.replace(PORT_PLACEHOLDER, &port.to_string())).collect()
    }
}
