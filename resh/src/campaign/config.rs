//! `campaign.toml`: what a fault-injection campaign runs, with defaults and keyed validation
//! in the style of the main configuration (every problem at once, each as `key: reason`).
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use replicas::inject::{InjectKind, MemRegion, MAX_BITS, MAX_DURATION_MS, MAX_SPAN_BYTES};
use serde::{Deserialize, Serialize};

use netdomain::config::{parse_all, ConfigError};

/// The placeholder in `service.command` and `service.env` for the directory of the running
/// `resh` executable, so a campaign file can name `resh-echo` built beside it.
pub const BINDIR_PLACEHOLDER: &str = "{bindir}";

/// The most replicas an experiment may run (a campaign starts N processes per experiment).
pub const MAX_CAMPAIGN_REPLICAS: usize = 9;
/// The most experiments per replica count.
pub const MAX_EXPERIMENTS: usize = 100_000;

/// The whole campaign file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// The seed every injection is drawn from: the same seed gives the same plan.
    pub seed: u64,
    /// Experiments per replica count.
    pub experiments: usize,
    /// Replica counts to run the same plan with; `1` is the no-voting baseline.
    #[serde(default = "defaults::replicas")]
    pub replicas: Vec<usize>,
    /// Fault kinds, drawn in equal shares.
    #[serde(default = "defaults::kinds")]
    pub kinds: Vec<InjectKind>,
    /// The report directory when `--out` is not given.
    pub out: Option<PathBuf>,
    /// The service under test.
    pub service: Service,
    /// What the client does.
    #[serde(default)]
    pub workload: Workload,
    /// How faults are drawn.
    #[serde(default)]
    pub faults: Faults,
    /// resh's timing during experiments.
    #[serde(default)]
    pub resh: Resh,
}

/// `[service]`: started like a `[[replica]]` with `command`, N times per experiment.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Program and arguments; `{port}` is the port resh chose, `{bindir}` the directory of the
    /// running `resh`.
    pub command: Vec<String>,
    /// Extra environment (`{port}` and `{bindir}` work here too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
}

/// `[workload]`: `sessions` client connections one after the other; each sends `requests`
/// requests of `request_bytes` deterministic bytes, `gap_ms` apart, then half-closes and reads
/// the answer to its end.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Client sessions, one after another.
    #[serde(default = "defaults::sessions")]
    pub sessions: usize,
    /// Requests per session (an injection happens just before one of them).
    #[serde(default = "defaults::requests")]
    pub requests: usize,
    /// Bytes per request.
    #[serde(default = "defaults::request_bytes")]
    pub request_bytes: usize,
    /// Pause between requests.
    #[serde(default = "defaults::gap_ms")]
    pub gap_ms: u64,
    /// The whole workload must finish within this time, or the experiment is a `timeout`.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
}

/// `[faults]`: parameters of the injections.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Bits per outflip, inflip and memflip.
    #[serde(default = "defaults::bits")]
    pub bits: u32,
    /// outflip, inflip: the bits land in this many bytes after the injection point; default:
    /// as few as hold them.
    pub span_bytes: Option<u64>,
    /// memflip: which writable mappings may be hit.
    #[serde(default)]
    pub region: MemRegion,
    /// hang: the duration is drawn from `[min, max]` milliseconds.
    #[serde(default = "defaults::hang_ms")]
    pub hang_ms: [u64; 2],
    /// delay: the delay is drawn from `[min, max]` milliseconds.
    #[serde(default = "defaults::delay_ms")]
    pub delay_ms: [u64; 2],
}

/// `[resh]`: the front end's timing in every experiment.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resh {
    /// `vote.vote_timeout_ms`.
    #[serde(default = "defaults::vote_timeout_ms")]
    pub vote_timeout_ms: u64,
    /// `vote.lag_timeout_ms`: a replica this far behind is `late` (so a longer hang is masked).
    #[serde(default = "defaults::lag_timeout_ms")]
    pub lag_timeout_ms: u64,
    /// `supervisor.restart_backoff_ms`.
    #[serde(default = "defaults::restart_backoff_ms")]
    pub restart_backoff_ms: u64,
    /// `supervisor.ready_timeout_ms`.
    #[serde(default = "defaults::ready_timeout_ms")]
    pub ready_timeout_ms: u64,
    /// After the workload: how long to wait for sessions to end and for the target replica's
    /// repair (time to repair is measured within it).
    #[serde(default = "defaults::settle_ms")]
    pub settle_ms: u64,
}

mod defaults {
    use replicas::inject::InjectKind;
    pub fn replicas() -> Vec<usize> {
        vec![3, 1]
    }
    pub fn kinds() -> Vec<InjectKind> {
        InjectKind::ALL.to_vec()
    }
    pub fn sessions() -> usize {
        3
    }
    pub fn requests() -> usize {
        8
    }
    pub fn request_bytes() -> usize {
        256
    }
    pub fn gap_ms() -> u64 {
        5
    }
    pub fn timeout_ms() -> u64 {
        5000
    }
    pub fn bits() -> u32 {
        1
    }
    pub fn hang_ms() -> [u64; 2] {
        [100, 1000]
    }
    pub fn delay_ms() -> [u64; 2] {
        [50, 1000]
    }
    pub fn vote_timeout_ms() -> u64 {
        1000
    }
    pub fn lag_timeout_ms() -> u64 {
        300
    }
    pub fn restart_backoff_ms() -> u64 {
        50
    }
    pub fn ready_timeout_ms() -> u64 {
        5000
    }
    pub fn settle_ms() -> u64 {
        3000
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            sessions: defaults::sessions(),
            requests: defaults::requests(),
            request_bytes: defaults::request_bytes(),
            gap_ms: defaults::gap_ms(),
            timeout_ms: defaults::timeout_ms(),
        }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            bits: defaults::bits(),
            span_bytes: None,
            region: MemRegion::Any,
            hang_ms: defaults::hang_ms(),
            delay_ms: defaults::delay_ms(),
        }
    }
}

impl Default for Resh {
    fn default() -> Self {
        Resh {
            vote_timeout_ms: defaults::vote_timeout_ms(),
            lag_timeout_ms: defaults::lag_timeout_ms(),
            restart_backoff_ms: defaults::restart_backoff_ms(),
            ready_timeout_ms: defaults::ready_timeout_ms(),
            settle_ms: defaults::settle_ms(),
        }
    }
}

impl CampaignConfig {
    /// Reads, parses and validates a campaign file.
    pub fn load(path: &Path) -> Result<CampaignConfig, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            problems: vec![("file".into(), format!("cannot read: {e}"))],
        })?;
        CampaignConfig::parse(&text, &source)
    }

    /// Parses and validates campaign text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<CampaignConfig, ConfigError> {
        let config: CampaignConfig =
            parse_all(text).map_err(|problems| ConfigError { source: source.to_string(), problems })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { source: source.to_string(), problems })
        }
    }

    fn validate(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |key: &str, reason: String| p.push((key.to_string(), reason));
        if self.experiments == 0 || self.experiments > MAX_EXPERIMENTS {
            bad("experiments", format!("must be between 1 and {MAX_EXPERIMENTS}, not {}", self.experiments));
        }
        if self.replicas.is_empty() {
            bad("replicas", "name at least one replica count, e.g. [3, 1]".into());
        }
        let mut seen = HashSet::new();
        for &n in &self.replicas {
            if n == 0 || n > MAX_CAMPAIGN_REPLICAS {
                bad("replicas", format!("each count must be between 1 and {MAX_CAMPAIGN_REPLICAS}, not {n}"));
            } else if !seen.insert(n) {
                bad("replicas", format!("{n} is listed twice"));
            }
        }
        if self.kinds.is_empty() {
            bad("kinds", "name at least one fault kind".into());
        }
        let mut seen = HashSet::new();
        for k in &self.kinds {
            if !seen.insert(k) {
                bad("kinds", format!("{k} is listed twice"));
            }
        }
        if self.service.command.first().is_none_or(|c| c.is_empty()) {
            bad("service.command", "must not be empty".into());
        } else if !self.service.command.iter().chain(self.service.env.values()).any(|a| a.contains("{port}")) {
            bad("service.command", "must pass {port} to the service (in an argument or in service.env)".into());
        }
        let w = &self.workload;
        for (key, value) in [
            ("workload.sessions", w.sessions as u64),
            ("workload.requests", w.requests as u64),
            ("workload.request_bytes", w.request_bytes as u64),
            ("workload.timeout_ms", w.timeout_ms),
            ("resh.vote_timeout_ms", self.resh.vote_timeout_ms),
            ("resh.lag_timeout_ms", self.resh.lag_timeout_ms),
            ("resh.restart_backoff_ms", self.resh.restart_backoff_ms),
            ("resh.ready_timeout_ms", self.resh.ready_timeout_ms),
        ] {
            if value == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        if w.request_bytes > 1 << 20 {
            bad("workload.request_bytes", "must be at most 1048576".into());
        }
        if w.sessions.saturating_mul(w.requests) > 100_000 {
            bad("workload", "sessions × requests must be at most 100000".into());
        }
        let f = &self.faults;
        if f.bits == 0 || f.bits > MAX_BITS {
            bad("faults.bits", format!("must be between 1 and {MAX_BITS}, not {}", f.bits));
        }
        if let Some(span) = f.span_bytes {
            let need = u64::from(f.bits).div_ceil(8);
            if span < need || span > MAX_SPAN_BYTES {
                bad("faults.span_bytes", format!("must be between {need} and {MAX_SPAN_BYTES}, not {span}"));
            }
        }
        for (key, [lo, hi]) in [("faults.hang_ms", f.hang_ms), ("faults.delay_ms", f.delay_ms)] {
            if lo == 0 || lo > hi || hi > MAX_DURATION_MS {
                bad(key, format!("must be [min, max] with 1 <= min <= max <= {MAX_DURATION_MS}, not [{lo}, {hi}]"));
            }
        }
        p
    }

    /// The largest replica count (the plan draws targets among this many).
    pub fn max_replicas(&self) -> usize {
        self.replicas.iter().copied().max().unwrap_or(1)
    }

    /// The service command with `{bindir}` filled in.
    pub fn service_command(&self, bindir: &Path) -> (Vec<String>, BTreeMap<String, String>) {
        let dir = bindir.display().to_string();
        let fill = |s: &String| s.replace(BINDIR_PLACEHOLDER, &dir);
        (
            self.service.command.iter().map(fill).collect(),
            self.service.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "seed = 1\nexperiments = 4\n[service]\ncommand = [\"echo\", \"{port}\"]\n";

    fn problems(text: &str) -> Vec<String> {
        CampaignConfig::parse(text, "t")
            .err()
            .map(|e| e.problems.into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_fill_a_minimal_file() {
        let c = CampaignConfig::parse(MINIMAL, "t").expect("valid");
        assert_eq!(c.replicas, [3, 1]);
        assert_eq!(c.kinds, InjectKind::ALL);
        assert_eq!(c.workload, Workload::default());
        assert_eq!(c.max_replicas(), 3);
    }

    #[test]
    fn every_problem_is_named_by_key() {
        let text = "seed = 1\nexperiments = 0\nreplicas = [3, 3, 0]\nkinds = []\n[service]\ncommand = [\"x\"]\n\
                    [workload]\nsessions = 0\n[faults]\nbits = 9\nspan_bytes = 1\nhang_ms = [10, 5]\n";
        assert_eq!(
            problems(text),
            [
                "experiments",
                "replicas",
                "replicas",
                "kinds",
                "service.command",
                "workload.sessions",
                "faults.span_bytes",
                "faults.hang_ms"
            ]
        );
    }

    #[test]
    fn unknown_kinds_and_keys_are_errors() {
        let e =
            CampaignConfig::parse(&MINIMAL.replace("experiments = 4", "experiments = 4\nkinds = [\"bitflip\"]"), "t")
                .expect_err("unknown kind");
        assert!(e.to_string().contains("unknown variant `bitflip`"), "{e}");
        assert_eq!(problems(&MINIMAL.replace("seed", "sead"))[0], "sead");
    }

    #[test]
    fn bindir_is_filled_in() {
        let c = CampaignConfig::parse(&MINIMAL.replace("\"echo\"", "\"{bindir}/resh-echo\""), "t").expect("valid");
        let (argv, _) = c.service_command(Path::new("/opt/resh"));
        assert_eq!(argv, ["/opt/resh/resh-echo", "{port}"]);
    }
}
