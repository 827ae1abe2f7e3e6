//! End-to-end tests of stream mode: a real `resh run` in front of three real `resh-echo`
//! replicas, one of which is told to misbehave; a real TCP client checks every byte it gets,
//! and the admin API must name the faulty replica.
use std::time::Duration;

use resh_e2e::{echo_config, exchange, payload, Resh, TempDir};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn honest_replicas_answer_like_a_direct_connection() {
    let resh = Resh::start(&echo_config([&[], &[], &[]], ""));
    let data = payload(300_000, 1);
    let through = exchange(resh.clients, &data);
    assert!(through.error.is_none(), "{:?}", through.error);
    let direct_addr = resh.replica("a")["addr"].as_str().expect("addr").parse().expect("socket addr");
    let direct = exchange(direct_addr, &data);
    assert!(direct.received == through.received, "resh's answer differs from a direct connection's");
    assert!(through.received == data);
    resh.wait_until("the session is counted as agreed", WAIT, |r| r.status()["verdicts"]["agreed"] == 1);
    for name in ["a", "b", "c"] {
        assert_eq!(resh.replica(name)["state"], "ready");
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0);
    }
}

#[test]
fn a_corrupted_byte_is_masked_and_attributed() {
    let resh = Resh::start(&echo_config([&[], &[], &["--corrupt-at", "1000"]], ""));
    let data = payload(50_000, 2);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none(), "{:?}", got.error);
    assert!(got.received == data, "the client got wrong bytes");
    resh.wait_until("c is counted diverged", WAIT, |r| r.faults("c", "diverged") == 1);
    assert_eq!(resh.faults("a", "diverged") + resh.faults("b", "diverged"), 0);
    let status = resh.status();
    let fault = &status["recent_faults"][0];
    assert_eq!(fault["replica"], "c");
    assert_eq!(fault["kind"], "diverged");
    assert_eq!(fault["offset"], 1000);
    let metrics = resh.metrics();
    assert!(metrics.contains("resh_replica_faults_total{replica=\"c\",kind=\"diverged\"} 1\n"), "{metrics}");
    assert!(metrics.contains("resh_verdicts_total{verdict=\"masked\"} 1\n"), "{metrics}");
    // The faulty replica is repaired (restarted) and admitted again.
    resh.wait_until("c is restarted and ready", WAIT, |r| {
        let c = r.replica("c");
        c["restarts"].as_u64() >= Some(1) && c["state"] == "ready"
    });
}

#[test]
fn an_exiting_replica_is_masked_restarted_and_readmitted() {
    let marks = TempDir::new("exit");
    let once = marks.path().join("exited").display().to_string();
    let resh = Resh::start(&echo_config([&[], &[], &["--exit-at", "20000", "--once", &once]], ""));
    let first_pid = resh.replica("c")["pid"].clone();
    let data = payload(100_000, 3);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none(), "{:?}", got.error);
    assert!(got.received == data, "the client got wrong bytes");
    resh.wait_until("c was restarted and readmitted", WAIT, |r| {
        let c = r.replica("c");
        c["restarts"].as_u64() >= Some(1) && c["state"] == "ready" && c["pid"] != first_pid
    });
    let faults = resh.faults("c", "crashed") + resh.faults("c", "closed_early");
    assert!(faults >= 1, "c's exit was not reported: {}", resh.status());
    // The readmitted replica takes part in new sessions again.
    let sessions_before = resh.replica("c")["sessions"].as_u64();
    let again = exchange(resh.clients, &data);
    assert!(again.error.is_none() && again.received == data);
    assert!(resh.replica("c")["sessions"].as_u64() > sessions_before);
}

#[test]
fn a_stalled_replica_is_masked_and_reported_late() {
    let config = echo_config([&[], &[], &["--stall-at", "1000"]], "[vote]\nlag_timeout_ms = 300\n");
    let resh = Resh::start(&config);
    let data = payload(20_000, 4);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none(), "{:?}", got.error);
    assert!(got.received == data, "the client got wrong bytes");
    resh.wait_until("c is counted late", WAIT, |r| r.faults("c", "late") >= 1);
}

#[test]
fn a_replica_that_closes_early_is_masked() {
    let resh = Resh::start(&echo_config([&["--close-at", "700"], &[], &[]], ""));
    let data = payload(30_000, 5);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data, "{:?}", got.error);
    resh.wait_until("a is counted closed early", WAIT, |r| r.faults("a", "closed_early") >= 1);
}

#[test]
fn a_flooding_replica_is_masked() {
    let resh = Resh::start(&echo_config([&[], &["--flood-at", "100"], &[]], ""));
    let data = payload(30_000, 6);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data, "{:?}", got.error);
    resh.wait_until("b is counted faulty", WAIT, |r| r.faults("b", "diverged") + r.faults("b", "flooded") >= 1);
}

#[test]
fn two_replicas_corrupting_differently_abort_the_session_without_a_wrong_byte() {
    let config = echo_config(
        [&[], &["--corrupt-at", "1000", "--corrupt-mask", "1"], &["--corrupt-at", "1000", "--corrupt-mask", "2"]],
        "",
    );
    let resh = Resh::start(&config);
    let data = payload(50_000, 7);
    let got = exchange(resh.clients, &data);
    assert!(got.received.len() <= 1000, "released {} bytes past the disputed offset", got.received.len());
    assert!(got.received == data[..got.received.len()], "the client got a wrong byte");
    let error = got.error.expect("the session must be aborted, not closed normally");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    resh.wait_until("the verdict is undecidable", WAIT, |r| r.status()["verdicts"]["undecidable"] == 1);
}

#[test]
fn two_hundred_concurrent_sessions_are_all_answered_correctly() {
    let resh = Resh::start(&echo_config([&[], &[], &[]], ""));
    let clients: Vec<_> = (0..200u64)
        .map(|i| {
            let addr = resh.clients;
            std::thread::spawn(move || {
                let data = payload(8_192 + i as usize * 16, 100 + i);
                let got = exchange(addr, &data);
                got.error.is_none() && got.received == data
            })
        })
        .collect();
    let correct = clients.into_iter().map(|c| c.join()).filter(|ok| matches!(ok, Ok(true))).count();
    assert_eq!(correct, 200, "log:\n{}", resh.log());
    resh.wait_until("all sessions are counted", WAIT, |r| r.status()["sessions"]["total"] == 200);
    assert_eq!(resh.status()["verdicts"]["agreed"], 200);
}

#[test]
fn with_one_replica_a_crash_is_a_reset_never_a_truncated_answer() {
    let echo = resh_e2e::binary("resh-echo").display().to_string();
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[replica]]\nname = \"only\"\n\
         command = [{echo:?}, \"--port\", \"{{port}}\", \"--exit-at\", \"5000\"]\n"
    );
    let resh = Resh::start(&config);
    // Small enough that the replica has read all of it when it dies: the kernel then closes
    // its connection with a plain FIN, exactly like a complete answer.
    let data = payload(8_000, 8);
    let got = exchange(resh.clients, &data);
    assert!(got.received.len() <= 5000 && got.received == data[..got.received.len()], "wrong bytes");
    let error = got.error.expect("a dying replica's close must not look like a complete answer");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    resh.wait_until("the crash is counted", WAIT, |r| r.faults("only", "crashed") == 1);
}
