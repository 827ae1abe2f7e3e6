//! Live reconfiguration: what a re-read configuration file may change in a running resh.
//!
//! [`plan`] compares the running configuration with a new, validated one and returns the
//! configuration to run with from now on: the running one with every *live* key taken from the
//! new file, and the changed keys it could not take, named. It is pure; the server applies the
//! result (`Shared::reload`) on SIGHUP, `resh reload` or `POST /reload`.
//!
//! Live, for the sessions that start from then on: the stream vote (`vote.*` but `mode` and
//! `protocol`) and the replicas, in stream mode; the session timeouts, ordered mode's
//! per-session limits (`ordered.max_in_flight`, `ordered.max_session_bytes`), `max_sessions`,
//! the admin token, and the log filter (`log`). A session keeps the values (and the replicas)
//! it started with. Ordered mode has one core for every session: it takes new timeouts
//! (`vote.lag_timeout_ms`, `ordered.request_timeout_ms`) for the requests waiting too, and,
//! on one host, the replicas and the quorum (`OrderedCore::reconfigure`: added replicas are
//! rebuilt and join, removed ones leave without blame). Everything else needs a restart:
//! addresses, the mode, the supervisor's timing, ordered mode's other core limits, and the
//! group; a D-RESH host keeps its replicas (the hosts' state transfers copy a core's replica
//! set as it was built), and so does HTTP in ordered mode (its lanes are numbered once).
use serde_json::Value;

use crate::config::{Config, Mode};

/// What a reload does.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The configuration to run with: the running one, with the live keys of the new file.
    pub config: Config,
    /// Changed keys that take effect (dotted paths, e.g. `vote.vote_timeout_ms`).
    pub applied: Vec<String>,
    /// Changed keys that do not take effect until resh is restarted.
    pub not_live: Vec<String>,
}

/// Whether `key` (a dotted path of a changed value) can change in a running resh in `mode`
/// (`fixed_replicas`: the replicas and quorum stay until a restart: a D-RESH host, whose
/// hosts' state transfers copy a core's replica set as it was built, and HTTP in ordered
/// mode, whose sequencer numbers its vote lanes once).
pub fn is_live(key: &str, mode: Mode, fixed_replicas: bool) -> bool {
    let top = key.split('.').next().unwrap_or(key);
    match top {
        "max_sessions" | "log" | "session" => true,
        // A stream session takes the replicas admitted when it starts; the supervisor starts
        // and stops replicas as they come and go (`Supervisor::add`, `Supervisor::remove`).
        // Ordered mode's core takes them too (`Ordered::change_replicas`), with the quorum.
        "replica" => mode == Mode::Stream || !fixed_replicas,
        "vote" => match mode {
            Mode::Stream => !matches!(key, "vote.mode" | "vote.protocol"),
            // New timeouts (`Ordered::retune`) and the quorum, with the replicas.
            Mode::Ordered => {
                matches!(key, "vote.lag_timeout_ms" | "vote.vote_timeout_ms")
                    || (key == "vote.quorum" && !fixed_replicas)
            }
        },
        "ordered" => {
            matches!(key, "ordered.max_in_flight" | "ordered.max_session_bytes" | "ordered.request_timeout_ms")
        }
        "admin" => matches!(key, "admin.token" | "admin.token_file"),
        _ => false,
    }
}

/// The reload of `running` to `new` (both validated; see the module documentation).
pub fn plan(running: &Config, new: &Config) -> Plan {
    let mut changed = Vec::new();
    diff("", &as_value(running), &as_value(new), &mut changed);
    // The token is not serialised (it must never be printed): compare it here.
    if running.admin.token != new.admin.token {
        changed.push("admin.token".to_string());
    }
    let mode = running.vote.mode;
    // A D-RESH host keeps its replicas and quorum; so does HTTP in ordered mode, whose
    // sequencer (`http::ordered`) numbers its vote lanes once.
    let fixed_replicas = running.group.is_some()
        || (mode == Mode::Ordered && running.vote.protocol == Some(crate::config::Protocol::Http));
    // The quorum goes with the replicas it counts: both are live or neither (see `is_live`),
    // so the new file's quorum never meets the old replicas.
    let (applied, not_live): (Vec<String>, Vec<String>) =
        changed.into_iter().partition(|k| is_live(k, mode, fixed_replicas));
    let mut config = running.clone();
    if !applied.is_empty() {
        config.max_sessions = new.max_sessions;
        config.log.clone_from(&new.log);
        config.session = new.session.clone();
        if mode == Mode::Stream {
            config.replicas.clone_from(&new.replicas);
            let (kept_mode, kept_protocol) = (config.vote.mode, config.vote.protocol);
            config.vote = new.vote.clone();
            config.vote.mode = kept_mode;
            config.vote.protocol = kept_protocol;
        } else {
            config.vote.lag_timeout_ms = new.vote.lag_timeout_ms;
            config.vote.vote_timeout_ms = new.vote.vote_timeout_ms;
            if !fixed_replicas {
                config.replicas.clone_from(&new.replicas);
                config.vote.quorum = new.vote.quorum;
            }
        }
        config.ordered.max_in_flight = new.ordered.max_in_flight;
        config.ordered.max_session_bytes = new.ordered.max_session_bytes;
        config.ordered.request_timeout_ms = new.ordered.request_timeout_ms;
        config.admin.token.clone_from(&new.admin.token);
        config.admin.token_file.clone_from(&new.admin.token_file);
    }
    Plan { config, applied, not_live }
}

fn as_value(config: &Config) -> Value {
    serde_json::to_value(config).unwrap_or(Value::Null)
}

/// The dotted paths at which `a` and `b` differ (arrays are compared whole: `replica` changed).
fn diff(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                diff(&path, x.get(key).unwrap_or(&Value::Null), y.get(key).unwrap_or(&Value::Null), out);
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!("{extra}\n[[replica]]\nname = \"a\"\naddress = \"127.0.0.1:7001\"\n[[replica]]\nname = \"b\"\naddress = \"127.0.0.1:7002\"\n[[replica]]\nname = \"c\"\naddress = \"127.0.0.1:7003\"\n");
        Config::parse(&text, "test").expect("valid")
    }

    #[test]
    fn live_keys_are_applied_and_the_rest_is_named() {
        let running = config("listen = \"127.0.0.1:7000\"");
        let new = config("listen = \"127.0.0.1:7100\"\nmax_sessions = 10\n[vote]\nvote_timeout_ms = 500\n[session]\nidle_timeout_ms = 1000\n[supervisor]\nquarantine_ms = 5");
        let plan = plan(&running, &new);
        // The lag timeout follows the vote timeout when it is not set: it changed too.
        assert_eq!(
            plan.applied,
            ["max_sessions", "session.idle_timeout_ms", "vote.lag_timeout_ms", "vote.vote_timeout_ms"]
        );
        assert_eq!(plan.not_live, ["listen", "supervisor.quarantine_ms"]);
        assert_eq!(plan.config.vote.vote_timeout_ms, 500);
        assert_eq!(plan.config.session.idle_timeout_ms, 1000);
        assert_eq!(plan.config.max_sessions, 10);
        assert_eq!(plan.config.listen, "127.0.0.1:7000", "not live: kept");
        assert_eq!(plan.config.supervisor.quarantine_ms, running.supervisor.quarantine_ms);
    }

    #[test]
    fn an_unchanged_file_changes_nothing_and_replicas_are_not_live() {
        let running = config("");
        let same = plan(&running, &config(""));
        assert!(same.applied.is_empty() && same.not_live.is_empty());
        assert_eq!(same.config, running);
        let mut more = config("");
        more.replicas.pop();
        // Stream mode takes the replicas, with the quorum of the new file.
        let fewer = plan(&running, &more);
        assert_eq!(fewer.applied, ["replica"]);
        assert_eq!(fewer.config.replicas.len(), 2);
    }

    #[test]
    fn ordered_mode_takes_replicas_with_their_quorum_but_a_dresh_host_keeps_both() {
        let ordered = "[vote]\nmode = \"ordered\"\nprotocol = \"resp\"\n";
        let running = config(ordered);
        let mut new = config(&format!("{ordered}quorum = 1\n[session]\nidle_timeout_ms = 700"));
        new.replicas.pop();
        let one_host = plan(&running, &new);
        assert_eq!(one_host.applied, ["replica", "session.idle_timeout_ms", "vote.quorum"]);
        assert_eq!((one_host.config.vote.quorum, one_host.config.replicas.len()), (Some(1), 2));
        // A D-RESH host keeps both: one fewer in the file, with a quorum of 1, must not lower
        // the quorum of the three that run.
        let mut running = running.clone();
        running.group = Some(crate::config::Group {
            engine: crate::config::Engine::Corosync,
            name: "g".into(),
            hosts: 3,
            max_message_bytes: 1 << 16,
            transfer: Default::default(),
        });
        new.group.clone_from(&running.group);
        let plan = plan(&running, &new);
        assert_eq!(plan.applied, ["session.idle_timeout_ms"]);
        assert_eq!(plan.not_live, ["replica", "vote.quorum"]);
        assert_eq!(plan.config.vote.quorum, Some(2));
        assert_eq!(plan.config.replicas.len(), 3);
    }

    #[test]
    fn the_token_is_compared_though_it_is_never_printed() {
        let running = config("[admin]\ntoken = \"0123456789abcdef0123\"");
        let new = config("[admin]\ntoken = \"abcdef0123456789abcd\"");
        let plan = plan(&running, &new);
        assert_eq!(plan.applied, ["admin.token"]);
        assert_eq!(plan.config.admin.token.as_deref(), Some("abcdef0123456789abcd"));
    }

    #[test]
    fn ordered_mode_keeps_its_vote_but_takes_new_timeouts() {
        let ordered = "[vote]\nmode = \"ordered\"\nprotocol = \"resp\"\n";
        let running = config(ordered);
        let new = config(&format!(
            "{ordered}lag_timeout_ms = 300\n[ordered]\nmax_in_flight = 3\nrequest_timeout_ms = 5\nmax_outstanding = 9"
        ));
        let plan = plan(&running, &new);
        assert_eq!(plan.applied, ["ordered.max_in_flight", "ordered.request_timeout_ms", "vote.lag_timeout_ms"]);
        assert_eq!(plan.not_live, ["ordered.max_outstanding"]);
        assert_eq!(plan.config.vote.lag_timeout_ms, Some(300));
        assert_eq!(plan.config.vote.quorum, running.vote.quorum);
        assert_eq!(plan.config.ordered.request_timeout_ms, 5);
        assert_eq!(plan.config.ordered.max_outstanding, running.ordered.max_outstanding);
    }

    #[test]
    fn http_in_ordered_mode_keeps_its_replicas_and_quorum() {
        let ordered = "[vote]\nmode = \"ordered\"\nprotocol = \"http\"\n";
        let running = config(ordered);
        let mut new = config(&format!("{ordered}quorum = 1\nlag_timeout_ms = 300"));
        new.replicas.pop();
        let plan = plan(&running, &new);
        assert!(plan.applied.contains(&"vote.lag_timeout_ms".to_string()), "{plan:?}");
        assert!(plan.not_live.contains(&"vote.quorum".to_string()), "{plan:?}");
        assert_eq!(plan.config.replicas.len(), running.replicas.len());
    }
}
