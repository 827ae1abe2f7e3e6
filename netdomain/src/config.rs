//! The configuration file (TOML), its defaults and its validation.
//!
//! Parsing is strict: an unknown key is an error that names it (a typo must not silently fall
//! back to a default). Validation collects every problem, each as `key: reason`, e.g.
//! `replica[2].command: must not be empty`, so a user fixes a file in one round.
//! [`Config::load`] returns the *effective* configuration: defaults filled in, the quorum
//! resolved; `resh check` prints it back as TOML.
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use replicas::{Launch, ReplicaSpec, SupervisorConfig};
use serde::{Deserialize, Serialize};
use voter::StreamConfig;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect (`ip:port`).
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// The most client sessions served at once; further clients wait in the accept queue.
    #[serde(default = "defaults::max_sessions")]
    pub max_sessions: usize,
    /// The log filter (`info`, `netdomain=debug,replicas=info`, ...) when neither `--log` nor
    /// `RUST_LOG` gives one; a reload changes it live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// How output is voted.
    #[serde(default)]
    pub vote: Vote,
    /// Ordered mode: limits and the replay log.
    #[serde(default)]
    pub ordered: Ordered,
    /// HTTP mode (`vote.protocol = "http"`): what a response's vote covers, and limits.
    #[serde(default)]
    pub http: Http,
    /// Per-session timeouts.
    #[serde(default)]
    pub session: Session,
    /// The admin/metrics HTTP server.
    #[serde(default)]
    pub admin: Admin,
    /// Replica start, restart and repair.
    #[serde(default)]
    pub supervisor: Supervisor,
    /// The replicas, in order; at least one.
    #[serde(default, rename = "replica")]
    pub replicas: Vec<Replica>,
    /// D-RESH: several hosts as one service (ordered mode only); absent: a single host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
}

/// `[group]`: this host is one of several resh hosts that serve as one (D-RESH).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The group communication engine.
    pub engine: Engine,
    /// The group's name (Corosync: the CPG group name); the same on every host.
    pub name: String,
    /// The group's expected size: a host serves only in a view of more than half of them.
    pub hosts: usize,
    /// Requests (and answer digests) are multicast in messages of about this size.
    #[serde(default = "defaults::group_message_bytes")]
    pub max_message_bytes: usize,
    /// Each host's state-transfer address (`ip:port`), by its node id (Corosync's `nodeid`):
    /// a host listens on its own and gives its state there to a host that joins; a joining
    /// host asks the others there. One table, the same on every host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transfer: BTreeMap<String, String>,
}

impl Group {
    /// The state-transfer addresses, by node id (validated: every entry parses).
    pub fn transfer_addrs(&self) -> BTreeMap<u32, SocketAddr> {
        self.transfer.iter().filter_map(|(node, addr)| Some((node.parse().ok()?, addr.parse().ok()?))).collect()
    }
}

/// `group.engine`
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Corosync's CPG, through the Corosync daemon running on this host.
    Corosync,
}

/// `[vote]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// How client traffic is dispatched and output compared.
    #[serde(default)]
    pub mode: Mode,
    /// The request/response protocol of ordered mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Identical outputs needed to release bytes; default: a majority of the replicas.
    pub quorum: Option<usize>,
    /// Output that no quorum confirms within this time is decided (see the README).
    #[serde(default = "defaults::vote_timeout_ms")]
    pub vote_timeout_ms: u64,
    /// A replica behind the released output for this long is late; default: `vote_timeout_ms`.
    pub lag_timeout_ms: Option<u64>,
    /// Unreleased output held per replica and session; a replica at the limit is not read
    /// until the others catch up.
    #[serde(default = "defaults::max_unreleased_bytes")]
    pub max_unreleased_bytes: usize,
    /// Released output kept per session for replicas that are behind; further behind is late.
    #[serde(default = "defaults::max_lag_bytes")]
    pub max_lag_bytes: usize,
}

/// Dispatch discipline.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Client bytes go to every replica as they come; outputs are voted as byte streams.
    #[default]
    Stream,
    /// Requests get one global order across all sessions; responses are voted per request.
    Ordered,
}

/// Framing protocol of ordered mode.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The Redis serialisation protocol.
    Resp,
    /// HTTP/1.1: each response voted on its normal form (see [`Http`]).
    Http,
}

/// `[http]`: HTTP mode. See `netdomain::http::normal` for what a vote covers.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Headers that count besides the default ones.
    #[serde(default)]
    pub count_headers: Vec<String>,
    /// Default counted headers that do not count here.
    #[serde(default)]
    pub ignore_headers: Vec<String>,
    /// Every header counts (the hop-by-hop ones aside): to find out what differs.
    #[serde(default)]
    pub count_all_headers: bool,
    /// JSON pointers whose values are masked in JSON bodies (released unvoted).
    #[serde(default)]
    pub mask_json: Vec<String>,
    /// Regular expressions whose matches are masked in text bodies (released unvoted).
    #[serde(default)]
    pub mask_text: Vec<String>,
    /// The largest body the masks apply to; a larger one is voted whole.
    #[serde(default = "defaults::http_max_masked_body_bytes")]
    pub max_masked_body_bytes: usize,
    /// The largest response body resh holds per replica until the vote: a larger one is a
    /// 502 for the client (and a fault for a replica whose peers stayed below).
    #[serde(default = "defaults::http_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The response bodies resh holds at once, across every session and replica, until
    /// their votes end: beyond it a body is digested but not held, and if it is the agreed
    /// one the client gets a 503 (resh's own limit, no replica's fault).
    #[serde(default = "defaults::http_max_held_bytes")]
    pub max_held_bytes: usize,
    /// The largest request body taken from a client (413 beyond).
    #[serde(default = "defaults::http_max_request_bytes")]
    pub max_request_bytes: usize,
    /// How long a client waits for an agreed response before it gets a 504.
    #[serde(default = "defaults::http_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            count_headers: Vec::new(),
            ignore_headers: Vec::new(),
            count_all_headers: false,
            mask_json: Vec::new(),
            mask_text: Vec::new(),
            max_masked_body_bytes: defaults::http_max_masked_body_bytes(),
            max_body_bytes: defaults::http_max_body_bytes(),
            max_held_bytes: defaults::http_max_held_bytes(),
            max_request_bytes: defaults::http_max_request_bytes(),
            request_timeout_ms: defaults::http_request_timeout_ms(),
        }
    }
}

impl Http {
    /// The normal form's rules.
    pub fn rule_config(&self) -> crate::http::normal::RuleConfig {
        crate::http::normal::RuleConfig {
            count_headers: self.count_headers.clone(),
            ignore_headers: self.ignore_headers.clone(),
            count_all_headers: self.count_all_headers,
            mask_json: self.mask_json.clone(),
            mask_text: self.mask_text.clone(),
            max_masked_body: self.max_masked_body_bytes,
        }
    }
}

/// `[ordered]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ordered {
    /// Requests one session may have waiting for answers; more pause reading from its client.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// The flow-control window: requests between the slowest voting replica's next answer
    /// and the newest sent. A slower replica sets the pace instead of being blamed; sessions
    /// wait while the window is full.
    #[serde(default = "defaults::max_outstanding")]
    pub max_outstanding: usize,
    /// How long a client waits for its request's agreed answer; then it gets an error (the
    /// request may still take effect) and nobody is blamed.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Answer bytes one session holds for its client: at this the client is no longer read;
    /// past this plus `max_frame_bytes` the session is closed (a client that does not read).
    #[serde(default = "defaults::max_session_bytes")]
    pub max_session_bytes: usize,
    /// Request and answer bytes the sequencer holds for all sessions; at this, sessions wait.
    #[serde(default = "defaults::max_held_bytes")]
    pub max_held_bytes: usize,
    /// The largest request or response frame.
    #[serde(default = "defaults::max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Bytes of state-changing requests kept for replaying to a replica that rejoins; past it,
    /// a restarted replica cannot be resynchronised (see the README).
    #[serde(default = "defaults::log_max_bytes")]
    pub log_max_bytes: usize,
    /// If set, only these commands are served (an N-version set's common subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Commands refused by default because they act on every replica at once (`SHUTDOWN`,
    /// `REPLICAOF`, `CONFIG SET`, `DEBUG` but for its read-only subcommands...) that are passed
    /// nonetheless: names from the list in the README, like `"CONFIG SET"` or `"DEBUG"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_unsafe: Vec<String>,
}

impl Default for Ordered {
    fn default() -> Self {
        Ordered {
            max_in_flight: defaults::max_in_flight(),
            max_outstanding: defaults::max_outstanding(),
            request_timeout_ms: defaults::request_timeout_ms(),
            max_session_bytes: defaults::max_session_bytes(),
            max_held_bytes: defaults::max_held_bytes(),
            max_frame_bytes: defaults::max_frame_bytes(),
            log_max_bytes: defaults::log_max_bytes(),
            allow: None,
            allow_unsafe: Vec::new(),
        }
    }
}

/// `[session]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// How long connecting to a replica may take.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// A session with no traffic either way for this long is closed; also how long a client
    /// may refuse to take output.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long sessions may take to finish before the ones left are
    /// reset: no new client is accepted meanwhile, and a session closes (FIN) as soon as nothing
    /// is owed either way.
    #[serde(default = "defaults::drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

/// `[admin]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where the admin API listens; an empty string turns it off.
    #[serde(default = "defaults::admin_listen")]
    pub listen: String,
    /// Must be true to listen on an address other than loopback.
    #[serde(default)]
    pub allow_remote: bool,
    /// The bearer token that mutating endpoints (`POST /inject`) require. Never printed back
    /// by `resh check`: the effective configuration must not leak it.
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    /// A file whose content (trailing whitespace trimmed) is the token; read at startup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Admin {
    /// The token mutating endpoints require, or `None` when they are disabled (neither
    /// `token` nor `token_file` is set). An error names the key and the reason.
    pub fn resolve_token(&self) -> Result<Option<String>, Problem> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                Err(Problem::new("admin.token", "set either admin.token or admin.token_file, not both"))
            }
            (Some(t), None) => check_token(t).map(Some).map_err(|r| Problem::new("admin.token", r)),
            (None, Some(path)) => {
                let key = "admin.token_file";
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Problem::new(key, format!("cannot read {}: {e}", path.display())))?;
                check_token(text.trim_end())
                    .map(Some)
                    .map_err(|r| Problem::new(key, format!("{}: the token {r}", path.display())))
            }
            (None, None) => Ok(None),
        }
    }
}

/// One problem with one key of the user's configuration, shown as `key: reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct Problem {
    /// The key, e.g. `admin.token_file`.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl Problem {
    fn new(key: &'static str, reason: impl ToString) -> Problem {
        Problem { key, reason: reason.to_string() }
    }
}

/// The shortest admin token accepted: a short token is guessable by anyone who can reach the
/// admin port.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why an admin token is refused (the user's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`].
    #[error("must be at least {MIN_TOKEN_LEN} characters long")]
    TooShort,
    /// Holds a space, a control character or non-ASCII.
    #[error("may only hold printable ASCII characters without spaces")]
    NotPrintable,
}

fn check_token(token: &str) -> Result<String, TokenError> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort);
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(TokenError::NotPrintable);
    }
    Ok(token.to_string())
}

/// `[supervisor]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Supervisor {
    /// How long a started replica may take to accept connections.
    #[serde(default = "defaults::ready_timeout_ms")]
    pub ready_timeout_ms: u64,
    /// First restart backoff; doubled after each failed start.
    #[serde(default = "defaults::restart_backoff_ms")]
    pub restart_backoff_ms: u64,
    /// Longest restart backoff.
    #[serde(default = "defaults::restart_backoff_max_ms")]
    pub restart_backoff_max_ms: u64,
    /// How long an address replica stays quarantined before it is probed again.
    #[serde(default = "defaults::quarantine_ms")]
    pub quarantine_ms: u64,
}

/// `[[replica]]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    #[serde(default)]
    pub name: String,
    /// Version label (for N-version sets); default: the name.
    pub version: Option<String>,
    /// Program and arguments that resh starts; `{port}` is replaced by a free port.
    pub command: Option<Vec<String>>,
    /// `host:port` of a replica that is already running.
    pub address: Option<String>,
    /// Extra environment for `command` (`{port}` is replaced in values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory for `command`.
    pub cwd: Option<PathBuf>,
}

mod defaults {
    pub fn http_max_masked_body_bytes() -> usize {
        1 << 20
    }
    pub fn http_max_body_bytes() -> usize {
        16 << 20
    }
    pub fn http_max_held_bytes() -> usize {
        256 << 20
    }
    pub fn http_max_request_bytes() -> usize {
        16 << 20
    }
    pub fn http_request_timeout_ms() -> u64 {
        30_000
    }
    pub fn listen() -> String {
        "127.0.0.1:6380".into()
    }
    pub fn max_sessions() -> usize {
        1024
    }
    pub fn vote_timeout_ms() -> u64 {
        2000
    }
    pub fn max_unreleased_bytes() -> usize {
        1 << 20
    }
    pub fn max_lag_bytes() -> usize {
        1 << 20
    }
    pub fn max_in_flight() -> usize {
        1024
    }
    pub fn max_outstanding() -> usize {
        4096
    }
    pub fn request_timeout_ms() -> u64 {
        60_000
    }
    pub fn max_session_bytes() -> usize {
        32 << 20
    }
    pub fn max_held_bytes() -> usize {
        256 << 20
    }
    pub fn max_frame_bytes() -> usize {
        16 << 20
    }
    pub fn log_max_bytes() -> usize {
        64 << 20
    }
    pub fn connect_timeout_ms() -> u64 {
        3000
    }
    pub fn idle_timeout_ms() -> u64 {
        300_000
    }
    pub fn drain_timeout_ms() -> u64 {
        10_000
    }
    pub fn admin_listen() -> String {
        "127.0.0.1:9090".into()
    }
    pub fn ready_timeout_ms() -> u64 {
        10_000
    }
    pub fn restart_backoff_ms() -> u64 {
        100
    }
    pub fn restart_backoff_max_ms() -> u64 {
        5000
    }
    pub fn quarantine_ms() -> u64 {
        1000
    }
    pub fn group_message_bytes() -> usize {
        64 * 1024
    }
}

impl Default for Vote {
    fn default() -> Self {
        Vote {
            mode: Mode::Stream,
            protocol: None,
            quorum: None,
            vote_timeout_ms: defaults::vote_timeout_ms(),
            lag_timeout_ms: None,
            max_unreleased_bytes: defaults::max_unreleased_bytes(),
            max_lag_bytes: defaults::max_lag_bytes(),
        }
    }
}

impl Default for Session {
    fn default() -> Self {
        Session {
            connect_timeout_ms: defaults::connect_timeout_ms(),
            idle_timeout_ms: defaults::idle_timeout_ms(),
            drain_timeout_ms: defaults::drain_timeout_ms(),
        }
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin { listen: defaults::admin_listen(), allow_remote: false, token: None, token_file: None }
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            ready_timeout_ms: defaults::ready_timeout_ms(),
            restart_backoff_ms: defaults::restart_backoff_ms(),
            restart_backoff_max_ms: defaults::restart_backoff_max_ms(),
            quarantine_ms: defaults::quarantine_ms(),
        }
    }
}

/// The most hosts of a group (Corosync's own limit is in the same range).
pub const MAX_GROUP_HOSTS: usize = 32;
/// The largest `group.max_message_bytes`: Corosync carries about 1 MiB in one message.
pub const MAX_GROUP_MESSAGE_BYTES: usize = 512 * 1024;

/// The largest count limit (sessions, requests in flight or outstanding).
pub const MAX_COUNT: u64 = 1_000_000;
/// The largest stream-mode window (`max_unreleased_bytes`, `max_lag_bytes`): per session and
/// replica, so it multiplies.
pub const MAX_WINDOW_BYTES: u64 = 1 << 30;
/// The largest request or answer (Redis's own default limit on a bulk string is 512 MiB).
pub const MAX_FRAME_BYTES: u64 = 512 << 20;
/// The largest byte budget held in memory (answers held, the replay log).
pub const MAX_HELD_BYTES: u64 = 64 << 30;
/// The longest timeout: a day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// The smallest `max_unreleased_bytes`: one read from a replica must fit.
pub const MIN_UNRELEASED_BYTES: usize = 4096;

/// Everything wrong with a configuration file, one `key: reason` per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the configuration came from.
    pub source: String,
    /// `(key, reason)` pairs.
    pub problems: Vec<(String, String)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}:", self.source)?;
        for (key, reason) in &self.problems {
            write!(f, "\n  {key}: {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            problems: vec![("file".into(), format!("cannot read: {e}"))],
        })?;
        Config::parse(&text, &source)
    }

    /// Parses and validates configuration text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        let (config, mut problems) = parse_repaired::<Config>(text);
        let Some(mut config) = config else {
            return Err(ConfigError { source: source.to_string(), problems });
        };
        // The rest of the file's problems too, but for keys already named (a key taken out for
        // its type must not also be reported as missing).
        let schema: Vec<String> = problems.iter().map(|(k, _)| k.clone()).collect();
        let related = |k: &str| schema.iter().any(|s| k.starts_with(s.as_str()) || s.starts_with(k));
        problems.extend(config.validate().into_iter().filter(|(k, _)| !related(k)));
        if let Ok(table) = text.parse::<toml::Table>() {
            problems.extend(config.keys_without_effect(&table).into_iter().filter(|(k, _)| !related(k)));
        }
        if problems.is_empty() {
            config.resolve();
            Ok(config)
        } else {
            Err(ConfigError { source: source.to_string(), problems })
        }
    }

    /// The effective configuration as TOML.
    /// Keys that have no effect in the configuration's mode are left out (see
    /// [`keys_without_effect`](Self::keys_without_effect)), so the output reads back.
    pub fn to_toml(&self) -> String {
        let mut table = match toml::Table::try_from(self) {
            Ok(t) => t,
            Err(e) => return format!("# cannot print the configuration: {e}\n"),
        };
        if self.vote.protocol != Some(Protocol::Http) {
            table.remove("http");
        } else if let Some(vote) = table.get_mut("vote").and_then(toml::Value::as_table_mut) {
            vote.remove("max_unreleased_bytes");
            vote.remove("max_lag_bytes");
        }
        match self.vote.mode {
            Mode::Stream => {
                table.remove("ordered");
            }
            Mode::Ordered => {
                if let Some(vote) = table.get_mut("vote").and_then(toml::Value::as_table_mut) {
                    vote.remove("max_unreleased_bytes");
                    vote.remove("max_lag_bytes");
                }
                // HTTP in ordered mode takes only the replay log's size from [ordered].
                if self.vote.protocol == Some(Protocol::Http) {
                    if let Some(ordered) = table.get_mut("ordered").and_then(toml::Value::as_table_mut) {
                        ordered.retain(|k, _| k == "log_max_bytes");
                    }
                }
            }
        }
        toml::to_string_pretty(&table).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    fn validate(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |key: &str, reason: String| p.push((key.to_string(), reason));
        if let Err(e) = self.listen.parse::<SocketAddr>() {
            bad("listen", format!("`{}` is not an ip:port address ({e})", self.listen));
        }
        if self.max_sessions == 0 {
            bad("max_sessions", "must be at least 1".into());
        }
        if let Some(filter) = &self.log {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
                bad("log", format!("`{filter}` is not a log filter: {e}"));
            }
        }
        let n = self.replicas.len();
        if n == 0 {
            bad("replica", "at least one [[replica]] is required".into());
        }
        if n > voter::stream::MAX_REPLICAS {
            bad("replica", format!("{n} replicas configured, at most {} are supported", voter::stream::MAX_REPLICAS));
        }
        if let Some(q) = self.vote.quorum {
            if q == 0 || (n > 0 && q > n) {
                bad("vote.quorum", format!("must be between 1 and the number of replicas ({n}), not {q}"));
            }
        }
        for (key, value, max) in [
            ("max_sessions", self.max_sessions as u64, MAX_COUNT),
            ("vote.max_unreleased_bytes", self.vote.max_unreleased_bytes as u64, MAX_WINDOW_BYTES),
            ("vote.max_lag_bytes", self.vote.max_lag_bytes as u64, MAX_WINDOW_BYTES),
            ("ordered.max_in_flight", self.ordered.max_in_flight as u64, MAX_COUNT),
            ("ordered.max_outstanding", self.ordered.max_outstanding as u64, MAX_COUNT),
            ("ordered.max_frame_bytes", self.ordered.max_frame_bytes as u64, MAX_FRAME_BYTES),
            ("ordered.max_session_bytes", self.ordered.max_session_bytes as u64, MAX_HELD_BYTES),
            ("ordered.max_held_bytes", self.ordered.max_held_bytes as u64, MAX_HELD_BYTES),
            ("ordered.log_max_bytes", self.ordered.log_max_bytes as u64, MAX_HELD_BYTES),
            ("vote.vote_timeout_ms", self.vote.vote_timeout_ms, MAX_TIMEOUT_MS),
            ("vote.lag_timeout_ms", self.vote.lag_timeout_ms.unwrap_or(1), MAX_TIMEOUT_MS),
            ("ordered.request_timeout_ms", self.ordered.request_timeout_ms, MAX_TIMEOUT_MS),
            ("http.request_timeout_ms", self.http.request_timeout_ms, MAX_TIMEOUT_MS),
            ("http.max_body_bytes", self.http.max_body_bytes as u64, MAX_FRAME_BYTES),
            ("http.max_request_bytes", self.http.max_request_bytes as u64, MAX_FRAME_BYTES),
            ("http.max_held_bytes", self.http.max_held_bytes as u64, MAX_HELD_BYTES),
            ("http.max_masked_body_bytes", self.http.max_masked_body_bytes as u64, MAX_FRAME_BYTES),
            ("session.connect_timeout_ms", self.session.connect_timeout_ms, MAX_TIMEOUT_MS),
            ("session.idle_timeout_ms", self.session.idle_timeout_ms, MAX_TIMEOUT_MS),
            ("session.drain_timeout_ms", self.session.drain_timeout_ms, MAX_TIMEOUT_MS),
            ("supervisor.ready_timeout_ms", self.supervisor.ready_timeout_ms, MAX_TIMEOUT_MS),
            ("supervisor.restart_backoff_ms", self.supervisor.restart_backoff_ms, MAX_TIMEOUT_MS),
            ("supervisor.restart_backoff_max_ms", self.supervisor.restart_backoff_max_ms, MAX_TIMEOUT_MS),
            ("supervisor.quarantine_ms", self.supervisor.quarantine_ms, MAX_TIMEOUT_MS),
        ] {
            if value > max {
                bad(
                    key,
                    format!("{value} is more than the most resh accepts ({max}): a limit this high protects nothing"),
                );
            }
        }
        for (key, value) in [
            ("vote.vote_timeout_ms", self.vote.vote_timeout_ms),
            ("vote.lag_timeout_ms", self.vote.lag_timeout_ms.unwrap_or(1)),
            ("session.connect_timeout_ms", self.session.connect_timeout_ms),
            ("session.idle_timeout_ms", self.session.idle_timeout_ms),
            ("supervisor.ready_timeout_ms", self.supervisor.ready_timeout_ms),
            ("supervisor.restart_backoff_ms", self.supervisor.restart_backoff_ms),
        ] {
            if value == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        if self.supervisor.restart_backoff_max_ms < self.supervisor.restart_backoff_ms {
            bad("supervisor.restart_backoff_max_ms", "must not be below restart_backoff_ms".into());
        }
        if self.vote.max_unreleased_bytes < MIN_UNRELEASED_BYTES {
            bad("vote.max_unreleased_bytes", format!("must be at least {MIN_UNRELEASED_BYTES}"));
        }
        if self.vote.max_lag_bytes == 0 {
            bad("vote.max_lag_bytes", "must be at least 1".into());
        }
        match (self.vote.mode, self.vote.protocol) {
            (Mode::Ordered, None) => bad("vote.protocol", "ordered mode needs a protocol: \"resp\" or \"http\"".into()),
            (Mode::Stream, Some(Protocol::Resp)) => {
                bad("vote.protocol", "\"resp\" only applies to mode = \"ordered\" (stream mode votes raw bytes)".into())
            }
            (Mode::Ordered, Some(Protocol::Http)) if self.group.is_some() => {
                bad("group", "D-RESH's group order carries RESP only: HTTP in ordered mode runs on one host".into())
            }
            _ => {}
        }
        if self.vote.protocol == Some(Protocol::Http) {
            if let Err(problems) = crate::http::normal::Rules::new(&self.http.rule_config()) {
                for problem in problems {
                    bad(&problem.key, problem.reason);
                }
            }
            for (key, value) in [
                ("http.max_body_bytes", self.http.max_body_bytes as u64),
                ("http.max_request_bytes", self.http.max_request_bytes as u64),
                ("http.max_held_bytes", self.http.max_held_bytes as u64),
                ("http.request_timeout_ms", self.http.request_timeout_ms),
            ] {
                if value == 0 {
                    bad(key, "must be at least 1".into());
                }
            }
        }
        for (key, value) in [
            ("ordered.max_in_flight", self.ordered.max_in_flight),
            ("ordered.max_outstanding", self.ordered.max_outstanding),
            ("ordered.max_frame_bytes", self.ordered.max_frame_bytes),
            ("ordered.max_session_bytes", self.ordered.max_session_bytes),
            ("ordered.max_held_bytes", self.ordered.max_held_bytes),
            ("ordered.request_timeout_ms", self.ordered.request_timeout_ms as usize),
        ] {
            if value == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        if self.ordered.max_held_bytes < self.ordered.max_frame_bytes {
            bad(
                "ordered.max_held_bytes",
                format!(
                    "must be at least ordered.max_frame_bytes ({}): one request and its answer must fit",
                    self.ordered.max_frame_bytes
                ),
            );
        }
        if let Some(allow) = &self.ordered.allow {
            if allow.is_empty() {
                bad("ordered.allow", "must name at least one command (leave it out to allow all)".into());
            }
        }
        for name in &self.ordered.allow_unsafe {
            let known = crate::codec::resp::UNSAFE;
            if !known.iter().any(|u| u.eq_ignore_ascii_case(name.trim())) {
                bad(
                    "ordered.allow_unsafe",
                    format!(
                        "`{name}` is not a command ordered mode refuses as unsafe (those are: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        if !self.admin.listen.is_empty() {
            match self.admin.listen.parse::<SocketAddr>() {
                Err(e) => bad("admin.listen", format!("`{}` is not an ip:port address ({e})", self.admin.listen)),
                Ok(a) if !a.ip().is_loopback() && !self.admin.allow_remote => bad(
                    "admin.listen",
                    format!("{a} is not a loopback address; set admin.allow_remote = true to expose the admin API"),
                ),
                Ok(_) => {}
            }
        }
        if let Err(Problem { key, reason }) = self.admin.resolve_token() {
            bad(key, reason);
        }
        if let Some(group) = &self.group {
            if self.vote.mode != Mode::Ordered {
                bad("group", "several hosts share one global order of requests: needs vote.mode = \"ordered\"".into());
            }
            if group.engine == Engine::Corosync && !cfg!(feature = "corosync") {
                bad(
                    "group.engine",
                    "this resh was built without Corosync support: build it with `--features corosync` (it links Corosync's client libraries; the README's D-RESH section lists the packages)".into(),
                );
            }
            // CPG_MAX_NAME_LENGTH is 128, with the terminating NUL.
            if group.name.is_empty() || group.name.len() > 127 {
                bad("group.name", format!("must be 1 to 127 bytes, not {}", group.name.len()));
            }
            if group.hosts == 0 || group.hosts > MAX_GROUP_HOSTS {
                bad("group.hosts", format!("must be between 1 and {MAX_GROUP_HOSTS}, not {}", group.hosts));
            }
            for (node, addr) in &group.transfer {
                if !node.parse::<u32>().is_ok_and(|n| n >= 1) || node.starts_with('0') {
                    bad(
                        &format!("group.transfer.{node}"),
                        "keys are node ids (1, 2, ...), as Corosync's nodeid".into(),
                    );
                }
                if let Err(e) = addr.parse::<SocketAddr>() {
                    bad(&format!("group.transfer.{node}"), format!("`{addr}` is not an ip:port address ({e})"));
                }
            }
            if !(1024..=MAX_GROUP_MESSAGE_BYTES).contains(&group.max_message_bytes) {
                bad(
                    "group.max_message_bytes",
                    format!("must be between 1024 and {MAX_GROUP_MESSAGE_BYTES}, not {}", group.max_message_bytes),
                );
            }
        }
        let mut names = HashSet::new();
        for (i, r) in self.replicas.iter().enumerate() {
            let key = |field: &str| format!("replica[{i}].{field}");
            if r.name.is_empty() {
                bad(&key("name"), "is required".into());
            } else if !r.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                bad(&key("name"), format!("`{}` may only hold letters, digits, '-', '_' and '.'", r.name));
            } else if !names.insert(r.name.as_str()) {
                bad(&key("name"), format!("`{}` is used by another replica", r.name));
            }
            match (&r.command, &r.address) {
                (Some(_), Some(_)) => {
                    bad(&format!("replica[{i}]"), "set either `command` or `address`, not both".into())
                }
                (None, None) => bad(
                    &format!("replica[{i}]"),
                    "set `command` (resh starts it) or `address` (already running)".into(),
                ),
                (Some(argv), None) => {
                    if argv.is_empty() || argv[0].is_empty() {
                        bad(&key("command"), "must not be empty".into());
                    }
                }
                (None, Some(addr)) => {
                    if let Err(reason) = check_host_port(addr) {
                        bad(&key("address"), reason.to_string());
                    }
                    if !r.env.is_empty() {
                        bad(&key("env"), "only applies to `command` replicas".into());
                    }
                    if r.cwd.is_some() {
                        bad(&key("cwd"), "only applies to `command` replicas".into());
                    }
                }
            }
        }
        p
    }

    /// Keys the file sets that have no effect in its mode: errors, since `run` would silently
    /// ignore them (an `[ordered] allow` list in stream mode filters nothing).
    fn keys_without_effect(&self, table: &toml::Table) -> Vec<(String, String)> {
        let set = |section: &str| -> Vec<String> {
            table.get(section).and_then(toml::Value::as_table).map(|t| t.keys().cloned().collect()).unwrap_or_default()
        };
        let mut p = Vec::new();
        if self.vote.protocol != Some(Protocol::Http) {
            for key in set("http") {
                p.push((format!("http.{key}"), "only applies to vote.protocol = \"http\"".to_string()));
            }
        } else {
            for key in set("vote") {
                if matches!(key.as_str(), "max_unreleased_bytes" | "max_lag_bytes") {
                    p.push((
                        format!("vote.{key}"),
                        "only applies to stream mode's byte vote: HTTP mode votes whole responses (see http.max_body_bytes)".to_string(),
                    ));
                }
            }
        }
        match self.vote.mode {
            Mode::Stream => {
                for key in set("ordered") {
                    p.push((
                        format!("ordered.{key}"),
                        "only applies to vote.mode = \"ordered\": stream mode passes bytes and does not see requests"
                            .to_string(),
                    ));
                }
            }
            Mode::Ordered if self.vote.protocol == Some(Protocol::Http) => {
                // HTTP's own sequencer keeps a replay log and takes its limits from [http].
                for key in set("ordered").into_iter().filter(|k| k != "log_max_bytes") {
                    p.push((
                        format!("ordered.{key}"),
                        "only applies to protocol = \"resp\": HTTP in ordered mode takes ordered.log_max_bytes and its limits from [http]".to_string(),
                    ));
                }
            }
            Mode::Ordered => {
                for key in set("vote") {
                    if matches!(key.as_str(), "max_unreleased_bytes" | "max_lag_bytes") {
                        p.push((
                            format!("vote.{key}"),
                            "only applies to stream mode: ordered mode votes whole answers (see ordered.max_frame_bytes and ordered.max_session_bytes)".to_string(),
                        ));
                    }
                }
            }
        }
        p
    }

    /// What is valid but probably a mistake, as `(key, reason)`: `resh check` prints these
    /// and `resh run` logs them.
    pub fn warnings(&self) -> Vec<(String, String)> {
        let mut w = Vec::new();
        if self.quorum_below_majority() {
            w.push((
                "vote.quorum".to_string(),
                format!(
                    "{} is below a majority of {} replicas: two disagreeing groups could each reach it",
                    self.quorum(),
                    self.replicas.len()
                ),
            ));
        }
        let mut addresses: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if let Some(argv) = &r.command {
                let placeholder = replicas::spec::PORT_PLACEHOLDER;
                if !argv.iter().chain(r.env.values()).any(|a| a.contains(placeholder)) {
                    w.push((
                        format!("replica[{i}].command"),
                        format!("has no {placeholder}: resh gives each replica a free port there and waits until it listens on it; a replica on a port of its own is never ready (use `address` for a replica that is already running)"),
                    ));
                }
                if let Some(program) = argv.first().filter(|p| p.contains('/')) {
                    let path = match &r.cwd {
                        Some(dir) if !program.starts_with('/') => dir.join(program),
                        _ => PathBuf::from(program),
                    };
                    if !path.is_file() {
                        w.push((
                            format!("replica[{i}].command"),
                            format!("{} does not exist or is not a file", path.display()),
                        ));
                    }
                }
                if let Some(dir) = &r.cwd {
                    if !dir.is_dir() {
                        w.push((format!("replica[{i}].cwd"), format!("{} is not a directory", dir.display())));
                    }
                }
            }
            if let Some(addr) = &r.address {
                if let Some(first) = addresses.insert(addr.as_str(), i) {
                    w.push((
                        format!("replica[{i}].address"),
                        format!("{addr} is replica[{first}]'s address too: one server voting twice is no redundancy"),
                    ));
                }
            }
        }
        w
    }

    /// Fills in the defaults that depend on other keys.
    fn resolve(&mut self) {
        let n = self.replicas.len();
        self.vote.quorum.get_or_insert(n / 2 + 1);
        self.vote.lag_timeout_ms.get_or_insert(self.vote.vote_timeout_ms);
        for r in &mut self.replicas {
            r.version.get_or_insert_with(|| r.name.clone());
        }
    }

    /// The client listen address (validated).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 6380)))
    }

    /// The admin listen address, or `None` when the admin API is off.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.listen.parse().ok()
    }

    /// The quorum in force.
    pub fn quorum(&self) -> usize {
        self.vote.quorum.unwrap_or(self.replicas.len() / 2 + 1)
    }

    /// Whether the quorum is below a majority (two disagreeing groups could both reach it).
    pub fn quorum_below_majority(&self) -> bool {
        self.quorum() <= self.replicas.len() / 2
    }

    /// Voter parameters for a session over `replicas` admitted replicas.
    pub fn stream_vote(&self, replicas: usize) -> StreamConfig {
        StreamConfig {
            replicas,
            quorum: self.quorum(),
            vote_timeout: Duration::from_millis(self.vote.vote_timeout_ms),
            lag_timeout: Duration::from_millis(self.vote.lag_timeout_ms.unwrap_or(self.vote.vote_timeout_ms)),
            max_unreleased: self.vote.max_unreleased_bytes,
            max_lag_bytes: self.vote.max_lag_bytes,
        }
    }

    /// The parameters of the ordered core.
    pub fn ordered_core(&self) -> crate::ordered::core::CoreConfig {
        use crate::ordered::core::{CoreConfig, ReplicaConfig};
        CoreConfig {
            replicas: self
                .replicas
                .iter()
                .map(|r| ReplicaConfig { name: r.name.as_str().into(), address: r.address.is_some() })
                .collect(),
            quorum: self.quorum(),
            lag_timeout: Duration::from_millis(self.vote.lag_timeout_ms.unwrap_or(self.vote.vote_timeout_ms)),
            request_timeout: Duration::from_millis(self.ordered.request_timeout_ms),
            max_outstanding: self.ordered.max_outstanding,
            max_queued_bytes: crate::ordered::MAX_QUEUED_BYTES,
            max_held_bytes: self.ordered.max_held_bytes,
            log_max_bytes: self.ordered.log_max_bytes,
            max_frame_bytes: self.ordered.max_frame_bytes,
            retry_delay: crate::ordered::RETRY_DELAY,
        }
    }

    /// Supervisor timing.
    pub fn supervisor(&self) -> SupervisorConfig {
        SupervisorConfig {
            ready_timeout: Duration::from_millis(self.supervisor.ready_timeout_ms),
            restart_backoff: Duration::from_millis(self.supervisor.restart_backoff_ms),
            restart_backoff_max: Duration::from_millis(self.supervisor.restart_backoff_max_ms),
            quarantine: Duration::from_millis(self.supervisor.quarantine_ms),
            ..SupervisorConfig::default()
        }
    }

    /// The replica specs, in order.
    pub fn replica_specs(&self) -> Vec<ReplicaSpec> {
        self.replicas
            .iter()
            .map(|r| ReplicaSpec {
                name: r.name.clone(),
                version: r.version.clone().unwrap_or_else(|| r.name.clone()),
                launch: match (&r.command, &r.address) {
                    (Some(argv), _) => Launch::Command { argv: argv.clone(), env: r.env.clone(), cwd: r.cwd.clone() },
                    (None, addr) => Launch::Address(addr.clone().unwrap_or_default()),
                },
            })
            .collect()
    }

    /// How long a replica may trail the quorum (`vote.lag_timeout_ms`, or the vote timeout).
    pub fn lag_timeout(&self) -> Duration {
        Duration::from_millis(self.vote.lag_timeout_ms.unwrap_or(self.vote.vote_timeout_ms))
    }

    /// Connect timeout to a replica.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.session.connect_timeout_ms)
    }

    /// Session idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.session.idle_timeout_ms)
    }

    /// How long sessions may finish on shutdown (0: reset at once).
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.session.drain_timeout_ms)
    }
}

/// Why an address is not `host:port` (the user's configuration).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// No colon.
    #[error("`{0}` is not host:port")]
    NotHostPort(String),
    /// Nothing before the colon.
    #[error("`{0}` has no host")]
    NoHost(String),
    /// The port is not a number in 1..=65535.
    #[error("`{0}` has no valid port (1-65535)")]
    BadPort(String),
}

/// `host:port` with a non-empty host and a port in 1..=65535.
fn check_host_port(addr: &str) -> Result<(), HostPortError> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(HostPortError::NotHostPort(addr.to_string()));
    };
    if host.is_empty() {
        return Err(HostPortError::NoHost(addr.to_string()));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(HostPortError::BadPort(addr.to_string())),
    }
}

/// Deserializes `text`, naming every schema problem (a wrong type, an unknown key, a missing
/// field) by its key, all at once: after each problem the offending key is taken out and the
/// rest is tried again, so a user fixes a file in one round. A syntax error stops the parse
/// (the rest cannot be read reliably) and is named by line and column.
pub fn parse_all<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Vec<(String, String)>> {
    match parse_repaired(text) {
        (Some(value), problems) if problems.is_empty() => Ok(value),
        (_, problems) => Err(problems),
    }
}

/// [`parse_all`], with what is left once the faulty keys are out (`None` if even that does not
/// parse), so that its other problems can be found too.
pub fn parse_repaired<T: serde::de::DeserializeOwned>(text: &str) -> (Option<T>, Vec<(String, String)>) {
    let mut table_of_file: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return (None, vec![parse_problem(&e, text)]),
    };
    let mut problems = Vec::new();
    let mut current = text.to_string();
    // Each round takes one key out: bounded by the keys there are.
    for _ in 0..256 {
        let e = match toml::from_str::<T>(&current) {
            Ok(value) => return (Some(value), problems),
            Err(e) => e,
        };
        let message = e.message().trim().to_string();
        // A missing field is named at the table that lacks it (its span is the table's: the
        // whole file for the top level, which cannot be read on without it); the table is then
        // taken out whole, so that no key the span happens to start at is blamed. Any other
        // problem is named at its key, and the key taken out.
        let missing = message.strip_prefix("missing field `").and_then(|r| r.split('`').next());
        let (path, problem) = match missing {
            Some(field) => {
                let table = e
                    .span()
                    .filter(|s| !(s.start == 0 && s.end >= current.trim_end().len()))
                    .map(|span| key_path_at(&current, span.start))
                    .filter(|p| !p.is_empty());
                let Some(path) = table else {
                    problems.push((field.to_string(), "is required".to_string()));
                    return (None, problems);
                };
                let problem = (format!("{}.{field}", path_name(&path)), "is required".to_string());
                (path, problem)
            }
            None => {
                let path = e.span().map(|span| key_path_at(&current, span.start)).unwrap_or_default();
                // Where in the user's file: the key's line there (the text tried now is a rewrite).
                let line = line_of(text, &path).map(|n| format!(" (line {n})")).unwrap_or_default();
                let problem = (path_name(&path), format!("{message}{line}"));
                (path, problem)
            }
        };
        if path.is_empty() || !remove_path(&mut table_of_file, &path) {
            problems.push(match missing {
                Some(_) => problem,
                None if problems.is_empty() => parse_problem(&e, &current),
                None => ("toml".into(), message),
            });
            return (None, problems);
        }
        problems.push(problem);
        current = match toml::to_string(&table_of_file) {
            Ok(t) => t,
            Err(_) => return (None, problems),
        };
    }
    (None, problems)
}

/// One step of a key path: a table key or an index of an array of tables.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn path_name(path: &[Step]) -> String {
    let mut name = String::new();
    for step in path {
        match step {
            Step::Key(k) if name.is_empty() => name.push_str(k),
            Step::Key(k) => {
                name.push('.');
                name.push_str(k);
            }
            Step::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

/// The key path of what is at byte `at` of TOML `text`: the key of its line (or of the nearest
/// line above it with one, for a value spread over lines), under the table header above it; a
/// header line itself names the table. `[[name]]` tables are numbered as they come.
fn key_path_at(text: &str, at: usize) -> Vec<Step> {
    let at = at.min(text.len());
    let lines: Vec<&str> = text.split('\n').collect();
    let line_no = text.get(..at).map_or(0, |b| b.matches('\n').count());
    let header = |line: &str| -> Option<(bool, String)> {
        let t = line.trim();
        if let Some(inner) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            return Some((true, inner.trim().to_string()));
        }
        t.strip_prefix('[').and_then(|r| r.split(']').next()).map(|inner| (false, inner.trim().to_string()))
    };
    // The table the line is in, with the array tables numbered.
    let table_of = |upto: usize| -> Vec<Step> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut path = Vec::new();
        for line in lines.iter().take(upto + 1) {
            if let Some((array, name)) = header(line) {
                let parts: Vec<String> = name.split('.').map(|p| p.trim().trim_matches('"').to_string()).collect();
                path = Vec::new();
                let mut prefix = String::new();
                for (i, part) in parts.iter().enumerate() {
                    prefix = if prefix.is_empty() { part.clone() } else { format!("{prefix}.{part}") };
                    path.push(Step::Key(part.clone()));
                    let last = i + 1 == parts.len();
                    if array && last {
                        let n = counts.entry(prefix.clone()).and_modify(|n| *n += 1).or_insert(0);
                        path.push(Step::Index(*n));
                    } else if let Some(n) = counts.get(&prefix) {
                        path.push(Step::Index(*n));
                    }
                }
            }
        }
        path
    };
    let line = lines.get(line_no).copied().unwrap_or("");
    if header(line).is_some() {
        return table_of(line_no);
    }
    for n in (0..=line_no).rev() {
        let candidate = lines.get(n).copied().unwrap_or("");
        if header(candidate).is_some() {
            break;
        }
        if let Some((key, _)) = candidate.split_once('=') {
            let key = key.trim().trim_matches('"');
            if !key.is_empty() && !key.starts_with('#') {
                let mut path = table_of(n);
                path.extend(key.split('.').map(|k| Step::Key(k.trim().trim_matches('"').to_string())));
                return path;
            }
        }
    }
    table_of(line_no)
}

/// The line (from 1) of `text` that holds the key at `path`, if one does.
fn line_of(text: &str, path: &[Step]) -> Option<usize> {
    let mut offset = 0;
    for (n, line) in text.split('\n').enumerate() {
        if !line.trim().is_empty() && key_path_at(text, offset) == path {
            return Some(n + 1);
        }
        offset += line.len() + 1;
    }
    None
}

/// Takes the value at `path` out of `table`; false if there is none.
fn remove_path(table: &mut toml::Table, path: &[Step]) -> bool {
    let Some((Step::Key(first), rest)) = path.split_first() else { return false };
    if rest.is_empty() {
        return table.remove(first).is_some();
    }
    let mut value = match table.get_mut(first) {
        Some(v) => v,
        None => return false,
    };
    for (i, step) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        match (step, value) {
            (Step::Key(k), toml::Value::Table(t)) if last => return t.remove(k).is_some(),
            (Step::Index(n), toml::Value::Array(a)) if last => {
                if *n < a.len() {
                    a.remove(*n);
                    return true;
                }
                return false;
            }
            (Step::Key(k), toml::Value::Table(t)) => match t.get_mut(k) {
                Some(v) => value = v,
                None => return false,
            },
            (Step::Index(n), toml::Value::Array(a)) => match a.get_mut(*n) {
                Some(v) => value = v,
                None => return false,
            },
            _ => return false,
        }
    }
    false
}

/// A TOML syntax or schema error as `line L, column C: reason` (the parser knows where, and
/// names the key in its message, e.g. "unknown field `quorom`, expected one of ...").
pub fn parse_problem(e: &toml::de::Error, text: &str) -> (String, String) {
    let message = e.message().trim().to_string();
    let place = match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}")
        }
        None => "toml".to_string(),
    };
    (place, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:6380"
[vote]
quorum = 2
vote_timeout_ms = 2000
[admin]
listen = "127.0.0.1:9090"
[[replica]]
name = "a"
command = ["python3", "server.py", "--port", "{port}"]
[[replica]]
name = "b"
address = "127.0.0.1:7002"
[[replica]]
name = "c"
address = "localhost:7003"
"#;

    fn problems(text: &str) -> Vec<(String, String)> {
        Config::parse(text, "test").err().map(|e| e.problems).unwrap_or_default()
    }

    #[test]
    fn accepts_the_documented_shape() {
        let c = Config::parse(GOOD, "test").expect("valid");
        assert_eq!(c.quorum(), 2);
        assert_eq!(c.vote.lag_timeout_ms, Some(2000));
        assert_eq!(c.replicas[0].version.as_deref(), Some("a"));
        assert!(matches!(c.replica_specs()[1].launch, Launch::Address(ref a) if a == "127.0.0.1:7002"));
        // The effective configuration prints and parses back to itself.
        let again = Config::parse(&c.to_toml(), "printed").expect("printed config parses");
        assert_eq!(again, c);
    }

    #[test]
    fn a_group_is_checked_key_by_key() {
        let ordered = GOOD.replace("[vote]\n", "[vote]\nmode = \"ordered\"\nprotocol = \"resp\"\n");
        let good = format!(
            "{ordered}[group]\nengine = \"corosync\"\nname = \"kv\"\nhosts = 3\n[group.transfer]\n1 = \"10.0.0.1:6390\"\n2 = \"10.0.0.2:6390\"\n"
        );
        if cfg!(feature = "corosync") {
            let c = Config::parse(&good, "t").expect("valid");
            let group = c.group.as_ref().expect("group");
            let addrs = group.transfer_addrs();
            assert_eq!(addrs.get(&2), Some(&"10.0.0.2:6390".parse().expect("addr")));
            assert_eq!(addrs.get(&3), None);
            assert_eq!(Config::parse(&c.to_toml(), "printed").expect("printed config parses"), c);
        } else {
            assert_eq!(problems(&good).iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["group.engine"]);
        }
        let bad = format!(
            "{GOOD}[group]\nengine = \"corosync\"\nname = \"\"\nhosts = 0\nmax_message_bytes = 10\n[group.transfer]\nx = \"10.0.0.1\"\n"
        );
        let keys: Vec<String> = problems(&bad).into_iter().map(|(k, _)| k).filter(|k| k != "group.engine").collect();
        assert_eq!(
            keys,
            ["group", "group.name", "group.hosts", "group.transfer.x", "group.transfer.x", "group.max_message_bytes"]
        );
        let unknown = format!("{ordered}[group]\nengine = \"zookeeper\"\nname = \"kv\"\nhosts = 3\n");
        assert!(problems(&unknown)[0].1.contains("expected `corosync`"), "{:?}", problems(&unknown));
    }

    #[test]
    fn majority_is_the_default_quorum() {
        let text = GOOD.replace("quorum = 2\n", "");
        assert_eq!(Config::parse(&text, "t").expect("valid").quorum(), 2);
    }

    #[test]
    fn empty_command_names_the_key() {
        let text = GOOD.replace(r#"command = ["python3", "server.py", "--port", "{port}"]"#, "command = []");
        assert_eq!(problems(&text), vec![("replica[0].command".to_string(), "must not be empty".to_string())]);
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
listen = "nowhere"
[vote]
quorum = 5
[admin]
listen = "0.0.0.0:9090"
[[replica]]
name = "a"
[[replica]]
name = "a"
address = "7002"
"#;
        let keys: Vec<String> = problems(text).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["listen", "vote.quorum", "admin.listen", "replica[0]", "replica[1].name", "replica[1].address"]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = GOOD.replace("vote_timeout_ms", "vote_timout_ms");
        let p = problems(&text);
        assert_eq!(p.len(), 1);
        assert!(p[0].1.contains("vote_timout_ms"), "{p:?}");
    }

    #[test]
    fn every_schema_problem_is_named_by_its_key_at_once() {
        let text = "listen = \"nowhere\"\nmax_sessions = \"many\"\n[vote]\nvote_timeout_ms = \"2s\"\n\
                    [[replica]]\nname = \"a\"\naddress = 5\nbogus = 1\n[[replica]]\nname = \"b\"\ncommand = \"srv\"\n";
        let p = problems(text);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "max_sessions",
            "vote.vote_timeout_ms",
            "replica[0].address",
            "replica[0].bogus",
            "replica[1].command",
            "listen",
        ] {
            assert!(keys.contains(&key), "{key} is not named: {p:?}");
        }
        // A key taken out for its type is not also reported missing.
        assert!(!keys.contains(&"replica[0]"), "{p:?}");
        // A missing field is named in its table, and blames no other key.
        let ordered = GOOD.replace("quorum = 2", "quorum = 2\nmode = \"ordered\"\nprotocol = \"resp\"");
        let p = problems(&format!("{ordered}\n[group]\nname = \"g\"\nhosts = 3\n"));
        assert_eq!(p, [("group.engine".to_string(), "is required".to_string())]);
        assert!(!keys.contains(&"replica[1]"), "{p:?}");
    }

    #[test]
    fn http_mode_is_checked_with_its_masks() {
        let http = GOOD.replace("quorum = 2", "quorum = 2\nprotocol = \"http\"");
        let c = Config::parse(&format!("{http}\n[http]\nmask_json = [\"/meta/t\"]\n"), "t").expect("valid");
        assert_eq!(c.http.mask_json, ["/meta/t"]);
        assert!(!c.to_toml().contains("max_lag_bytes"), "{}", c.to_toml());
        assert_eq!(Config::parse(&c.to_toml(), "printed").expect("printed config parses"), c);
        let p = problems(&format!("{http}\n[http]\nmask_json = [\"meta\"]\nmask_text = [\"(\"]\n"));
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["http.mask_json[0]", "http.mask_text[0]"], "{p:?}");
        // HTTP in ordered mode (a stateful web service) is a mode of its own.
        let p = problems(&GOOD.replace("quorum = 2", "quorum = 2\nmode = \"ordered\"\nprotocol = \"http\""));
        assert!(p.is_empty(), "{p:?}");
        let ordered_http = GOOD.replace("quorum = 2", "quorum = 2\nmode = \"ordered\"\nprotocol = \"http\"");
        let p = problems(&format!("{ordered_http}\n[ordered]\nlog_max_bytes = 1000000\nallow = [\"GET\"]\n"));
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ordered.allow"], "{p:?}");
        let c = Config::parse(&ordered_http, "t").expect("valid");
        assert_eq!(Config::parse(&c.to_toml(), "printed").expect("printed config parses"), c);
        let p = problems(&format!("{GOOD}\n[http]\ncount_all_headers = true\n"));
        assert_eq!(p[0].0, "http.count_all_headers");
        let p = problems(&http.replace("vote_timeout_ms = 2000", "vote_timeout_ms = 2000\nmax_lag_bytes = 5"));
        assert_eq!(p[0].0, "vote.max_lag_bytes");
    }

    #[test]
    fn keys_without_effect_in_the_mode_are_errors() {
        let p = problems(&format!("{GOOD}\n[ordered]\nallow = [\"GET\"]\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "ordered.allow");
        let ordered =
            GOOD.replace("quorum = 2", "quorum = 2\nmode = \"ordered\"\nprotocol = \"resp\"\nmax_lag_bytes = 4096");
        let p = problems(&ordered);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "vote.max_lag_bytes");
    }

    #[test]
    fn absurd_limits_are_errors() {
        let p =
            problems(&GOOD.replace(
                "vote_timeout_ms = 2000",
                "vote_timeout_ms = 99999999999\nmax_unreleased_bytes = 99999999999999",
            ));
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"vote.vote_timeout_ms") && keys.contains(&"vote.max_unreleased_bytes"), "{p:?}");
    }

    #[test]
    fn wrong_types_are_errors() {
        let p = problems(&GOOD.replace("quorum = 2", "quorum = \"two\""));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].1.contains("invalid type"), "{p:?}");
    }

    #[test]
    fn allow_unsafe_names_only_what_is_refused_as_unsafe() {
        let ordered = |list: &str| {
            GOOD.replace("quorum = 2", "quorum = 2\nmode = \"ordered\"\nprotocol = \"resp\"")
                + &format!("\n[ordered]\nallow_unsafe = {list}\n")
        };
        let c = Config::parse(&ordered("[\"CONFIG SET\", \"debug\"]"), "t").expect("valid");
        assert_eq!(c.ordered.allow_unsafe, vec!["CONFIG SET".to_string(), "debug".to_string()]);
        let p = problems(&ordered("[\"GET\"]"));
        assert_eq!(p[0].0, "ordered.allow_unsafe", "{p:?}");
        assert!(p[0].1.contains("`GET` is not a command ordered mode refuses as unsafe"), "{p:?}");
    }

    #[test]
    fn ordered_mode_needs_a_protocol() {
        let text = GOOD.replace("quorum = 2", "quorum = 2\nmode = \"ordered\"");
        assert_eq!(problems(&text)[0].0, "vote.protocol");
        let text = GOOD.replace("quorum = 2", "quorum = 2\nmode = \"ordered\"\nprotocol = \"resp\"");
        let c = Config::parse(&text, "t").expect("valid");
        assert_eq!(c.vote.mode, Mode::Ordered);
        assert_eq!(Config::parse(&c.to_toml(), "printed").expect("round trip"), c);
        let text = GOOD.replace("quorum = 2", "quorum = 2\nprotocol = \"resp\"");
        assert_eq!(problems(&text)[0].0, "vote.protocol");
    }

    #[test]
    fn admin_token_is_checked_and_never_printed() {
        let with = GOOD
            .replace("listen = \"127.0.0.1:9090\"", "listen = \"127.0.0.1:9090\"\ntoken = \"0123456789abcdef-secret\"");
        let c = Config::parse(&with, "t").expect("valid");
        assert_eq!(c.admin.resolve_token(), Ok(Some("0123456789abcdef-secret".to_string())));
        assert!(!c.to_toml().contains("secret"), "{}", c.to_toml());
        let short = GOOD.replace("listen = \"127.0.0.1:9090\"", "listen = \"127.0.0.1:9090\"\ntoken = \"abc\"");
        assert_eq!(problems(&short)[0].0, "admin.token");
        let both = GOOD.replace(
            "listen = \"127.0.0.1:9090\"",
            "listen = \"127.0.0.1:9090\"\ntoken = \"0123456789abcdef\"\ntoken_file = \"/x\"",
        );
        assert!(problems(&both)[0].1.contains("not both"));
        let missing = GOOD
            .replace("listen = \"127.0.0.1:9090\"", "listen = \"127.0.0.1:9090\"\ntoken_file = \"/nonexistent/token\"");
        let p = problems(&missing);
        assert_eq!(p[0].0, "admin.token_file");
        assert!(p[0].1.contains("cannot read /nonexistent/token"), "{p:?}");
        assert_eq!(Config::parse(GOOD, "t").expect("valid").admin.resolve_token(), Ok(None));
    }

    #[test]
    fn no_replicas() {
        assert_eq!(problems("")[0].0, "replica");
    }
}
