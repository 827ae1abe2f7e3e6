//! Counters, the vote latency histogram, the recent-fault log, and their two renderings:
//! Prometheus text (`GET /metrics`) and JSON (`GET /status`).
//!
//! Counters are plain atomics updated by sessions; rendering reads them without stopping
//! anyone. Metric names follow the Prometheus conventions: a `resh_` prefix, `_total` for
//! counters, base units (seconds, bytes) in the name.
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use replicas::ReplicaStatus;
use serde::Serialize;

/// How a session ended, as far as the vote is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every replica agreed throughout.
    Agreed,
    /// A minority failed or differed and was masked; the client got only agreed output.
    Masked,
    /// No quorum: the session was aborted, nothing unverified was released.
    Undecidable,
}

impl Verdict {
    /// All verdicts, in the order metrics list them.
    pub const ALL: [Verdict; 3] = [Verdict::Agreed, Verdict::Masked, Verdict::Undecidable];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Agreed => "agreed",
            Verdict::Masked => "masked",
            Verdict::Undecidable => "undecidable",
        }
    }
}

/// Why a client was turned away before a session began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Fewer replicas were admitted (or reachable) than the quorum.
    NoQuorum,
    /// resh itself ran out of file descriptors or memory connecting to the replicas.
    Exhausted,
}

/// Upper bounds of the vote latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// The most fault events `/status` keeps.
const RECENT_FAULTS: usize = 64;

/// One fault as the admin API reports it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// Wall-clock time, seconds since the Unix epoch (RFC 3339 in the admin API).
    #[serde(serialize_with = "serialize_rfc3339")]
    pub time: f64,
    /// The client session.
    pub session: u64,
    /// The replica's name.
    pub replica: String,
    /// The fault kind (`diverged`, `closed_early`, `crashed`, `late`, `flooded`).
    pub kind: &'static str,
    /// Where it was found: a byte offset of the session's output (stream mode) or a request
    /// number of the global order (ordered mode), as `unit` says.
    pub offset: u64,
    /// `byte` or `request`.
    pub unit: &'static str,
    /// The fault as a sentence, with digests or byte counts.
    pub detail: String,
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    sessions_total: AtomicU64,
    sessions_active: AtomicU64,
    refused_no_quorum: AtomicU64,
    refused_exhausted: AtomicU64,
    client_bytes_in: AtomicU64,
    client_bytes_out: AtomicU64,
    verdicts: [AtomicU64; 3],
    requests_released: AtomicU64,
    requests_masked: AtomicU64,
    requests_undecidable: AtomicU64,
    requests_timed_out: AtomicU64,
    requests_refused: AtomicU64,
    /// Per bucket (not cumulative): latencies above the previous bound, up to this one.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    recent: Mutex<VecDeque<FaultRecord>>,
}

impl Metrics {
    /// A session began.
    pub fn session_started(&self) {
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        self.sessions_active.fetch_add(1, Ordering::Relaxed);
    }

    /// A session ended with `verdict`.
    pub fn session_ended(&self, verdict: Verdict) {
        self.sessions_active.fetch_sub(1, Ordering::Relaxed);
        self.verdicts[verdict as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A client was refused.
    pub fn refused(&self, why: Refusal) {
        match why {
            Refusal::NoQuorum => self.refused_no_quorum.fetch_add(1, Ordering::Relaxed),
            Refusal::Exhausted => self.refused_exhausted.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Ordered mode: a request's voted answer was released; `masked`: a minority of replicas
    /// failed or differed on it.
    pub fn request_released(&self, masked: bool) {
        self.requests_released.fetch_add(1, Ordering::Relaxed);
        if masked {
            self.requests_masked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ordered mode: a released request turned out to be masked (the differing answer came
    /// after the release); it was counted as released then.
    pub fn request_masked_late(&self) {
        self.requests_masked.fetch_add(1, Ordering::Relaxed);
    }

    /// Ordered mode: a request was not decided within `ordered.request_timeout_ms`.
    pub fn request_timed_out(&self) {
        self.requests_timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Ordered mode: resh answered a request with its own error (no quorum in the vote, the
    /// service refused it alike on every replica, an answer too large, a fenced host).
    pub fn request_refused(&self) {
        self.requests_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Ordered mode: a request's vote was undecidable.
    pub fn request_undecidable(&self) {
        self.requests_undecidable.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes received from a client.
    pub fn client_in(&self, n: usize) {
        self.client_bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes released to a client.
    pub fn client_out(&self, n: usize) {
        self.client_bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// How long released output (stream mode) or a request's answer (ordered mode) waited for
    /// its quorum.
    ///
    /// Called once per release, on the hot path: it counts into the one bucket the latency falls
    /// in (three atomic adds in all), and the exposition sums the buckets up, instead of adding
    /// to every cumulative bucket here (up to twelve contended adds per release).
    pub fn vote_latency(&self, waited: Duration) {
        let secs = waited.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(waited.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Keeps a fault for `/status` (the oldest go first).
    pub fn record_fault(&self, record: FaultRecord) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_FAULTS {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The recent faults (at most 64), oldest first.
    pub fn recent_faults(&self) -> Vec<FaultRecord> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// Sessions now open.
    pub fn active_sessions(&self) -> u64 {
        self.sessions_active.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of all metrics. `votes`: in ordered mode, each replica's
    /// place in the vote, in the order of `replicas`.
    pub fn prometheus(&self, replicas: &[ReplicaStatus], votes: Option<&[VoteView<'_>]>) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "resh_build_info",
            "gauge",
            "Always 1; the labels say which resh this is.",
            &[(label(&[("version", env!("CARGO_PKG_VERSION"))]), 1)],
        );
        metric(
            "resh_sessions_total",
            "counter",
            "Client sessions begun.",
            &[(String::new(), load(&self.sessions_total))],
        );
        metric(
            "resh_sessions_active",
            "gauge",
            "Client sessions open now.",
            &[(String::new(), load(&self.sessions_active))],
        );
        metric(
            "resh_sessions_refused_total",
            "counter",
            "Clients turned away before a session began, by reason.",
            &[
                (label(&[("reason", "no_quorum")]), load(&self.refused_no_quorum)),
                (label(&[("reason", "exhausted")]), load(&self.refused_exhausted)),
            ],
        );
        metric(
            "resh_client_received_bytes_total",
            "counter",
            "Bytes received from clients.",
            &[(String::new(), load(&self.client_bytes_in))],
        );
        metric(
            "resh_client_sent_bytes_total",
            "counter",
            "Voted bytes released to clients.",
            &[(String::new(), load(&self.client_bytes_out))],
        );
        let verdicts: Vec<(String, u64)> =
            Verdict::ALL.iter().map(|v| (label(&[("verdict", v.name())]), load(&self.verdicts[*v as usize]))).collect();
        metric("resh_verdicts_total", "counter", "Ended sessions by verdict.", &verdicts);
        metric(
            "resh_requests_total",
            "counter",
            "Ordered mode: requests by outcome (masked: released answers a minority failed or differed on, also counted as released; refused: answered by resh itself, e.g. no quorum in the vote).",
            &[
                (label(&[("outcome", "released")]), load(&self.requests_released)),
                (label(&[("outcome", "masked")]), load(&self.requests_masked)),
                (label(&[("outcome", "undecidable")]), load(&self.requests_undecidable)),
                (label(&[("outcome", "timed_out")]), load(&self.requests_timed_out)),
                (label(&[("outcome", "refused")]), load(&self.requests_refused)),
            ],
        );
        let mut faults = Vec::new();
        let mut restarts = Vec::new();
        let mut repair_cuts = Vec::new();
        let mut sessions = Vec::new();
        let mut up = Vec::new();
        let mut vote_states = Vec::new();
        let mut phases = Vec::new();
        let mut output = Vec::new();
        let mut behind = Vec::new();
        let mut answer_us = Vec::new();
        let mut trail_us = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            for (kind, n) in &r.faults {
                faults.push((label(&[("replica", &r.name), ("kind", kind)]), *n));
            }
            restarts.push((label(&[("replica", &r.name)]), r.restarts));
            for phase in replicas::Phase::ALL {
                phases.push((
                    label(&[("replica", &r.name), ("state", phase.name())]),
                    u64::from(r.state == phase.name()),
                ));
            }
            repair_cuts.push((label(&[("replica", &r.name)]), r.repair_cuts));
            sessions.push((label(&[("replica", &r.name)]), r.sessions));
            // Up: it serves clients. In ordered mode that means it votes: a replica the
            // supervisor runs but that is being rebuilt, or out of the vote, is not up.
            output.push((label(&[("replica", &r.name)]), r.output_bytes));
            let view = votes.and_then(|v| v.get(i));
            let vote = view.map(|v| v.state);
            if let Some(view) = view {
                behind.push((label(&[("replica", &r.name)]), view.behind));
                if let Some(latency) = view.answer_latency {
                    answer_us.push((label(&[("replica", &r.name)]), latency.as_micros() as u64));
                }
            } else {
                // Stream mode: the averages the sessions keep in the supervisor.
                if let Some(ms) = r.answer_ms {
                    answer_us.push((label(&[("replica", &r.name)]), (ms * 1000.0) as u64));
                }
                if let Some(ms) = r.trail_ms {
                    trail_us.push((label(&[("replica", &r.name)]), (ms * 1000.0) as u64));
                }
            }
            let serving = match vote {
                Some(state) => state == "voting",
                None => r.state == "ready",
            };
            up.push((label(&[("replica", &r.name), ("version", &r.version)]), u64::from(serving)));
            if let Some(current) = vote {
                for state in ["voting", "syncing", "out", "down"] {
                    vote_states.push((label(&[("replica", &r.name), ("state", state)]), u64::from(current == state)));
                }
            }
        }
        metric("resh_replica_faults_total", "counter", "Faults found by the voter, by replica and kind.", &faults);
        metric("resh_replica_restarts_total", "counter", "Replica restarts (exit, failed start or repair).", &restarts);
        metric(
            "resh_replica_repair_cuts_total",
            "counter",
            "Reports against a replica incarnation that already had its fault counted: sessions that lost it to that fault's repair or exit.",
            &repair_cuts,
        );
        metric("resh_replica_sessions_total", "counter", "Sessions each replica took part in.", &sessions);
        metric(
            "resh_replica_output_bytes_total",
            "counter",
            "Bytes of output read from each replica (ordered mode: its answers), in all sessions.",
            &output,
        );
        metric(
            "resh_replica_state",
            "gauge",
            "1 for the phase the replica's process is in (starting, ready, quarantined, restarting, stopped).",
            &phases,
        );
        metric(
            "resh_replica_up",
            "gauge",
            "1 if the replica serves clients: admitted for new sessions (stream mode), in the vote (ordered mode).",
            &up,
        );
        if votes.is_some() {
            metric(
                "resh_replica_vote_state",
                "gauge",
                "Ordered mode: 1 for the replica's place in the vote (voting, syncing: being rebuilt, out, down).",
                &vote_states,
            );
            metric(
                "resh_replica_behind_requests",
                "gauge",
                "Ordered mode: requests a voting replica has been sent and not answered yet (its lag).",
                &behind,
            );
        }
        metric(
            "resh_replica_answer_microseconds",
            "gauge",
            "How long a replica takes to answer: from a request's ordering to its answer (ordered mode), from a client's input to the replica's first output after it (stream mode); a moving average over about its last 16 answers.",
            &answer_us,
        );
        if votes.is_none() {
            metric(
                "resh_replica_trail_microseconds",
                "gauge",
                "Stream mode: how long after a quorum released them a replica produced the same bytes (0 while it keeps up): its lag, a moving average over about its last 16 reads.",
                &trail_us,
            );
        }

        let _ = writeln!(
            out,
            "# HELP resh_vote_latency_seconds How long released output waited for its quorum.\n# TYPE resh_vote_latency_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += load(count);
            let _ = writeln!(out, "resh_vote_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "resh_vote_latency_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "resh_vote_latency_seconds_sum {}", load(&self.latency_sum_ns) as f64 / 1e9);
        let _ = writeln!(out, "resh_vote_latency_seconds_count {count}");
        out
    }

    /// Session and verdict counts, and the recent faults, for `/status`.
    pub fn status(&self) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let verdicts: serde_json::Map<String, serde_json::Value> =
            Verdict::ALL.iter().map(|v| (v.name().to_string(), load(&self.verdicts[*v as usize]).into())).collect();
        let recent: Vec<FaultRecord> = self.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        serde_json::json!({
            "sessions": {
                "active": load(&self.sessions_active),
                "total": load(&self.sessions_total),
                "refused": load(&self.refused_no_quorum) + load(&self.refused_exhausted),
                "refused_exhausted": load(&self.refused_exhausted),
            },
            "bytes": { "from_clients": load(&self.client_bytes_in), "to_clients": load(&self.client_bytes_out) },
            "verdicts": verdicts,
            "requests": {
                "released": load(&self.requests_released),
                "masked": load(&self.requests_masked),
                "undecidable": load(&self.requests_undecidable),
                "timed_out": load(&self.requests_timed_out),
                "refused": load(&self.requests_refused),
            },
            "recent_faults": recent,
        })
    }
}

/// `{k="v",...}` with Prometheus escaping of values.
fn label(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Unix time `secs` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-02T06:55:01.123Z`.
pub fn rfc3339(secs: f64) -> String {
    let millis = (secs.max(0.0) * 1000.0).round() as u64;
    let (days, ms_of_day) = ((millis / 86_400_000) as i64, millis % 86_400_000);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, ms) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{ms:03}Z")
}

fn serialize_rfc3339<S: serde::Serializer>(secs: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*secs))
}

/// A replica's place in ordered mode's vote, for the metrics.
#[derive(Clone, Copy, Debug)]
pub struct VoteView<'a> {
    /// `voting`, `syncing`, `out` or `down`.
    pub state: &'a str,
    /// Answers it owes.
    pub behind: u64,
    /// How long its answers take (a moving average), once it answered.
    pub answer_latency: Option<std::time::Duration>,
}

/// Seconds since the Unix epoch, for event records.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(rfc3339(1_796_186_101.123), "2026-12-02T04:35:01.123Z");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.vote_latency(Duration::from_micros(50));
        m.vote_latency(Duration::from_millis(3));
        let text = m.prometheus(&[], None);
        assert!(text.contains("resh_vote_latency_seconds_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("resh_vote_latency_seconds_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("resh_vote_latency_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("resh_vote_latency_seconds_count 2\n"), "{text}");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label(&[("replica", "a\"b")]), "{replica=\"a\\\"b\"}");
    }
}
