//! End-to-end tests of ordered mode (RESP): resh in front of three diverse key-value versions
//! (async Rust, Python asyncio, and redis-server or a threaded Rust version), driven by real
//! Redis clients nobody here wrote (`redis-cli`, `redis-benchmark`, from Debian's redis-tools)
//! and by a small RESP client that checks every answer.
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use resh_e2e::{have, kv_config, Resh, RespClient, TempDir};

const WAIT: Duration = Duration::from_secs(30);

fn port(addr: SocketAddr) -> String {
    addr.port().to_string()
}

/// The address `/status` gives for a replica.
fn replica_addr(resh: &Resh, name: &str) -> SocketAddr {
    resh.replica(name)["addr"].as_str().and_then(|a| a.parse().ok()).expect("replica address")
}

/// The names of the three replicas of `kv_config`.
fn replica_names(resh: &Resh) -> Vec<String> {
    resh.status()["replicas"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["name"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Reads `keys` (strings) and `lists` directly from every replica and checks they all hold the
/// same values; returns the values of the first.
fn assert_identical_state(resh: &Resh, keys: &[String], lists: &[&str]) -> Vec<Vec<u8>> {
    let mut states = Vec::new();
    for name in replica_names(resh) {
        let mut direct = RespClient::connect(replica_addr(resh, &name)).expect("connect to replica directly");
        let mut state = Vec::new();
        for key in keys {
            state.push(direct.call(&["GET", key]).expect("GET"));
        }
        for list in lists {
            state.push(direct.call(&["LRANGE", list, "0", "-1"]).expect("LRANGE"));
        }
        states.push((name, state));
    }
    for (name, state) in &states[1..] {
        assert!(state == &states[0].1, "replica {name} differs from replica {}", states[0].0);
    }
    states.swap_remove(0).1
}

fn no_faults(resh: &Resh) -> bool {
    let status = resh.status();
    status["replicas"]
        .as_array()
        .is_some_and(|rs| rs.iter().all(|r| r["faults"].is_object() && resh_e2e::fault_total(r) == 0))
}

#[test]
fn redis_cli_and_redis_benchmark_work_through_resh() {
    if !have("redis-cli") || !have("redis-benchmark") {
        panic!("redis-tools is not installed: run ./scripts/test.sh, which installs it");
    }
    let resh = Resh::start(&kv_config(&[], ""));
    let p = port(resh.clients);
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli").args(["-p", &p]).args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "greeting", "hello"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello");
    assert_eq!(cli(&["INCR", "n"]), "1");
    assert_eq!(cli(&["LPUSH", "l", "a", "b"]), "2");
    assert_eq!(cli(&["LRANGE", "l", "0", "-1"]), "b\na");
    assert!(cli(&["AUTH", "secret"]).contains("per-connection state"), "AUTH must be refused with a reason");
    assert_eq!(cli(&["WATCH", "k"]), "OK", "WATCH is kept by resh, also in front of the diverse versions");

    for pipeline in ["1", "16"] {
        let out = Command::new("redis-benchmark")
            .args(["-p", &p, "-t", "set,get,incr,lpush,lpop", "-n", "20000", "-c", "20", "-P", pipeline, "-q"])
            .output()
            .expect("run redis-benchmark");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        for test in ["SET", "GET", "INCR", "LPUSH", "LPOP"] {
            assert!(text.contains(&format!("{test}: ")) && text.contains("requests per second"), "{test}: {text}");
        }
        assert!(!text.to_lowercase().contains("error"), "{text}");
    }
    let status = resh.status();
    assert_eq!(status["requests"]["undecidable"], 0, "{status}");
    assert!(no_faults(&resh), "an honest replica was blamed: {status}");
    assert_identical_state(&resh, &["key:__rand_int__".to_string(), "counter:__rand_int__".to_string()], &["mylist"]);
}

#[test]
fn concurrent_writers_leave_every_replica_in_the_same_state() {
    let resh = Resh::start(&kv_config(&[], ""));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let addr = resh.clients;
            std::thread::spawn(move || {
                let mut c = RespClient::connect(addr).expect("connect");
                for i in 0..150 {
                    // Everyone writes the same keys: only one global order makes them agree.
                    c.call(&["INCR", "shared:counter"]).expect("INCR");
                    c.call(&["SET", &format!("shared:{}", i % 10), &format!("writer {w} round {i}")]).expect("SET");
                    c.call(&["LPUSH", "shared:list", &format!("{w}.{i}")]).expect("LPUSH");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let mut keys: Vec<String> = (0..10).map(|i| format!("shared:{i}")).collect();
    keys.push("shared:counter".into());
    let state = assert_identical_state(&resh, &keys, &["shared:list"]);
    assert_eq!(state[10], b"$4\r\n1200\r\n", "no INCR lost");
    assert!(no_faults(&resh));
}

#[test]
fn a_planted_bug_is_outvoted_and_the_version_repaired_and_resynchronised() {
    let marks = TempDir::new("bug");
    let once = marks.path().join("fired").display().to_string();
    let resh = Resh::start(&kv_config(&["--wrong-get", "answer", "--once", &once], ""));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(c.call(&["SET", "answer", "42"]).expect("SET"), b"+OK\r\n");
    c.call(&["LPUSH", "history", "a", "b"]).expect("LPUSH");
    // The buggy version answers "42?"; the client must see "42".
    assert_eq!(c.call(&["GET", "answer"]).expect("GET"), b"$2\r\n42\r\n");
    resh.wait_until("the buggy version is caught and repaired", WAIT, |r| {
        let rust = r.replica("rust");
        r.faults("rust", "diverged") == 1 && rust["incarnation"] == 2 && rust["state"] == "ready"
    });
    // Writes go on while and after it rejoins; its state is rebuilt by replay.
    for i in 0..50 {
        c.call(&["INCR", "after"]).expect("INCR");
        c.call(&["SET", &format!("k{i}"), "v"]).expect("SET");
    }
    assert_eq!(c.call(&["GET", "after"]).expect("GET"), b"$2\r\n50\r\n");
    resh.wait_until("the repaired version votes again", WAIT, |r| r.log().contains("replica resynchronised"));
    let mut keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    keys.extend(["answer".to_string(), "after".to_string()]);
    assert_identical_state(&resh, &keys, &["history"]);
    assert_eq!(resh.faults("python", "diverged") + resh.faults("rust", "late"), 0);
    // The outvoted answer counts as masked, for the request and for its session.
    let metrics = resh.metrics();
    assert!(metrics.contains("resh_requests_total{outcome=\"masked\"} 1"), "{metrics}");
    drop(c);
    resh.wait_until("the session with the masked answer is counted", WAIT, |r| {
        r.metrics().contains("resh_verdicts_total{verdict=\"masked\"} 1")
    });
}

#[test]
fn a_flipped_bit_in_a_stored_value_is_masked_and_repaired() {
    let marks = TempDir::new("flip");
    let once = marks.path().join("fired").display().to_string();
    let resh = Resh::start(&kv_config(&["--flip-stored", "precious", "--once", &once], ""));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(c.call(&["SET", "precious", "gold"]).expect("SET"), b"+OK\r\n");
    // The flipped value ("fold") only shows when it is read: the read is outvoted.
    assert_eq!(c.call(&["GET", "precious"]).expect("GET"), b"$4\r\ngold\r\n");
    resh.wait_until("the corrupted replica is repaired", WAIT, |r| {
        r.faults("rust", "diverged") == 1 && r.replica("rust")["incarnation"] == 2
    });
    resh.wait_until("the repaired version votes again", WAIT, |r| r.log().contains("replica resynchronised"));
    let state = assert_identical_state(&resh, &["precious".to_string()], &[]);
    assert_eq!(state[0], b"$4\r\ngold\r\n");
}

#[test]
fn killing_a_replica_mid_workload_loses_nothing() {
    let resh = Resh::start(&kv_config(&[], ""));
    let first_pid = resh.replica("python")["pid"].as_u64().expect("python pid");
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let addr = resh.clients;
            std::thread::spawn(move || {
                let mut c = RespClient::connect(addr).expect("connect");
                for i in 0..400u32 {
                    let reply = c.call(&["INCR", &format!("count:{w}")]).expect("INCR");
                    assert_eq!(reply, format!(":{}\r\n", i + 1).into_bytes(), "worker {w} step {i}");
                    if i % 20 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    resh_e2e::signal_pid(first_pid as u64, libc::SIGKILL).expect("kill");
    for w in workers {
        w.join().expect("the workload finished without errors");
    }
    resh.wait_until("python is back", WAIT, |r| {
        let p = r.replica("python");
        p["state"] == "ready" && p["pid"].as_u64() != Some(first_pid)
    });
    resh.wait_until("python is resynchronised", WAIT, |r| r.log().contains("replica resynchronised"));
    let keys: Vec<String> = (0..4).map(|w| format!("count:{w}")).collect();
    // The restarted replica got the whole history replayed: it holds 400 in every counter.
    let state = assert_identical_state(&resh, &keys, &[]);
    assert!(state.iter().all(|v| v == b"$3\r\n400\r\n"), "{state:?}");
}

#[test]
fn a_hung_replica_is_reported_late_and_the_service_goes_on() {
    let resh = Resh::start(&kv_config(&[], "lag_timeout_ms = 500"));
    let pid = resh.replica("python")["pid"].as_u64().expect("python pid");
    let mut c = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(c.call(&["SET", "before", "1"]).expect("SET"), b"+OK\r\n");
    // SIGSTOP: the process is alive but answers nothing, like a hang.
    resh_e2e::signal_pid(pid as u64, libc::SIGSTOP).expect("kill");
    for i in 0..200 {
        assert_eq!(c.call(&["INCR", "during"]).expect("INCR"), format!(":{}\r\n", i + 1).into_bytes());
    }
    resh.wait_until("python is reported late", WAIT, |r| r.faults("python", "late") >= 1);
    // The supervisor repairs it (kills and restarts it); replay brings its state back.
    resh.wait_until("python is back and resynchronised", WAIT, |r| {
        r.replica("python")["pid"].as_u64() != Some(pid) && r.log().contains("replica resynchronised")
    });
    assert_identical_state(&resh, &["before".to_string(), "during".to_string()], &[]);
    let _ = resh_e2e::signal_pid(pid as u64, libc::SIGCONT);
}

#[test]
fn a_malformed_request_gets_a_protocol_error_not_a_hang() {
    use std::io::{Read, Write};
    let resh = Resh::start(&kv_config(&[], ""));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(c.call(&["PING"]).expect("PING"), b"+PONG\r\n");
    let mut raw = std::net::TcpStream::connect(resh.clients).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    raw.write_all(b"*2\r\n$3\r\nGET\r\n:1\r\n").expect("send");
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).expect("resh answers and closes");
    assert!(answer.starts_with(b"-ERR Protocol error"), "{}", String::from_utf8_lossy(&answer));
    // Other sessions are unaffected.
    assert_eq!(c.call(&["PING"]).expect("PING"), b"+PONG\r\n");
}

#[test]
fn an_injected_output_flip_is_masked_in_ordered_mode() {
    const TOKEN: &str = "ordered-test-token-0123456789";
    let config = kv_config(&[], "").replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    let resh = Resh::start(&config);
    let mut c = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(c.call(&["SET", "k", "a value long enough to flip"]).expect("SET"), b"+OK\r\n");
    let (status, text) =
        resh_e2e::http(resh.admin, "POST", "/inject", Some(TOKEN), r#"{"replica":"python","kind":"outflip","seed":5}"#);
    assert_eq!(status, 200, "{text}");
    // The flip lands in python's next answer; the client still gets the quorum's.
    for _ in 0..20 {
        assert_eq!(c.call(&["GET", "k"]).expect("GET"), b"$27\r\na value long enough to flip\r\n");
    }
    // A flip in a value is a different answer; a flip in RESP framing is output that cannot be
    // framed. Both are divergences.
    resh.wait_until("python is counted diverged", WAIT, |r| r.faults("python", "diverged") == 1);
    resh.wait_until("python is repaired", WAIT, |r| r.replica("python")["incarnation"] == 2);
    resh.wait_until("python is resynchronised", WAIT, |r| r.log().contains("replica resynchronised"));
    assert_identical_state(&resh, &["k".to_string()], &[]);
}
