//! End-to-end tests of what an operator does to a running resh: stop it (drain, then a reset for
//! whatever was cut), and what resh does about the processes it started.
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use resh_e2e::{echo_config, exchange, payload, redis_ordered_config, Resh, RespClient};

const WAIT: Duration = Duration::from_secs(20);

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

fn replica_pids(resh: &Resh) -> Vec<u64> {
    let status = resh.status();
    status["replicas"].as_array().expect("replicas").iter().map(|r| r["pid"].as_u64().expect("pid")).collect()
}

/// resh exited cleanly after the signal sent at `signalled`, without waiting out the default
/// drain time, and its replicas `pids` are gone.
fn exited_promptly(resh: &mut Resh, signalled: Instant, pids: &[u64]) {
    let status = resh.wait_exit(WAIT).expect("resh did not exit after SIGTERM");
    assert!(status.success(), "resh exited with {status}");
    // The default drain time is 10 s; sessions that ended must not wait for it.
    assert!(signalled.elapsed() < Duration::from_secs(5), "resh took {:?} to stop", signalled.elapsed());
    wait_gone(pids);
}

/// Sends `data` on `stream` from a thread of its own, then half-closes: the caller reads
/// meanwhile (a large echo would fill both directions' buffers otherwise).
fn send_in_background(stream: &TcpStream, data: Vec<u8>) -> std::thread::JoinHandle<()> {
    let mut writer = stream.try_clone().expect("clone");
    std::thread::spawn(move || {
        let _ = writer.write_all(&data).and_then(|()| writer.shutdown(Shutdown::Write));
    })
}

/// Waits (at most `WAIT`) until none of `pids` runs.
fn wait_gone(pids: &[u64]) {
    let deadline = Instant::now() + WAIT;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes still running: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM while a client is in the middle of a large answer it reads slowly: resh lets it go
/// on for the drain time, then cuts it off with a reset. A FIN there would make the part the
/// client got look like the whole answer.
#[test]
fn sigterm_during_a_large_download_ends_in_a_reset_and_stops_the_replicas() {
    let mut resh = Resh::start(&echo_config([&[], &[], &[]], "[session]\ndrain_timeout_ms = 300\n"));
    let pids = replica_pids(&resh);
    let data = payload(8 << 20, 11);
    let mut stream = TcpStream::connect(resh.clients).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let sender = send_in_background(&stream, data.clone());
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut signalled = false;
    let end = loop {
        match stream.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
        if !signalled && received.len() >= 1 << 20 {
            resh.signal(libc::SIGTERM);
            signalled = true;
        }
        // A slow reader: 16 KiB per 5 ms cannot take 8 MiB within the drain time.
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = sender.join();
    assert!(signalled, "the answer ended before the signal: {} bytes, {end:?}", received.len());
    assert!(received.len() < data.len(), "the whole answer arrived: the drain time was not enforced");
    assert!(received == data[..received.len()], "the client got wrong bytes");
    let Err(error) = end else { panic!("a cut answer must end in a reset, not a FIN\n{}", resh.log()) };
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    let status = resh.wait_exit(WAIT).expect("resh did not exit after SIGTERM");
    assert!(status.success(), "resh exited with {status}\n{}", resh.log());
    wait_gone(&pids);
    let log = resh.log();
    assert!(log.contains("draining") && log.contains("cutting off"), "{log}");
}

/// SIGTERM with a short request in flight: the request is answered in full, resh takes no new
/// client meanwhile, and exits once the session ended, without waiting for the drain time.
#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let mut resh = Resh::start(&echo_config([&["--delay-ms", "600"], &["--delay-ms", "600"], &[]], ""));
    let pids = replica_pids(&resh);
    let addr = resh.clients;
    let data = payload(2000, 12);
    let client = {
        let data = data.clone();
        std::thread::spawn(move || exchange(addr, &data))
    };
    resh.wait_until("the session is open", WAIT, |r| r.status()["sessions"]["active"] == 1);
    let signalled = Instant::now();
    resh.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    let refused = TcpStream::connect(addr);
    assert!(refused.is_err(), "resh accepted a new client while draining");
    let got = client.join().expect("client");
    assert!(got.error.is_none(), "the request in flight was not let finish: {:?}\n{}", got.error, resh.log());
    assert!(got.received == data, "the client got {} of {} bytes", got.received.len(), data.len());
    exited_promptly(&mut resh, signalled, &pids);
}

/// Ordered mode: SIGTERM while a blocking request waits. A BLPOP that ends within the drain
/// time is answered, and the connection then closes cleanly; a subscriber, owed nothing, is
/// closed at once; resh exits without waiting out the drain time.
#[test]
fn ordered_sigterm_answers_what_is_in_flight_then_closes() {
    let mut resh = Resh::start(&redis_ordered_config("", ""));
    let pids = replica_pids(&resh);
    let status = resh.status();
    for r in status["replicas"].as_array().expect("replicas") {
        assert_eq!(r["vote"]["behind"], 0, "an idle voting replica owes nothing: {r}");
    }
    assert!(resh.metrics().contains("resh_replica_behind_requests{replica=\"r1\"} 0\n"));
    let mut setter = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(setter.call(&["SET", "k", "v"]).expect("SET"), b"+OK\r\n");
    resh.wait_until("answer times are shown", WAIT, |r| {
        r.status()["replicas"].as_array().is_some_and(|rs| rs.iter().all(|x| x["vote"]["answer_ms"].is_number()))
    });
    assert!(resh.metrics().contains("resh_replica_answer_microseconds{replica=\"r2\"} "));
    drop(setter);
    let mut subscriber = RespClient::connect(resh.clients).expect("connect");
    assert!(subscriber.call(&["SUBSCRIBE", "news"]).expect("SUBSCRIBE").starts_with(b"*3\r\n"));
    let mut waiter = RespClient::connect(resh.clients).expect("connect");
    waiter.send(&RespClient::encode(&["BLPOP", "empty", "1"])).expect("send BLPOP");
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    resh.signal(libc::SIGTERM);
    assert_eq!(waiter.reply().expect("the BLPOP in flight is answered"), b"*-1\r\n");
    assert!(signalled.elapsed() >= Duration::from_millis(600), "BLPOP answered early: {:?}", signalled.elapsed());
    // Then a clean close: no more requests are taken.
    let mut rest = Vec::new();
    let end = waiter.stream().read_to_end(&mut rest);
    assert!(end.is_ok() && rest.is_empty(), "after its answer: {end:?}, {rest:?}");
    let mut rest = Vec::new();
    let end = subscriber.stream().read_to_end(&mut rest);
    assert!(end.is_ok() && rest.is_empty(), "the subscriber: {end:?}, {rest:?}");
    exited_promptly(&mut resh, signalled, &pids);
    // resh stopped the replicas itself: the core saw them go, and that is nobody's fault.
    let log = resh.log();
    assert!(!log.contains("fault:") && !log.contains("quarantined"), "{log}");
}

/// Ordered mode: a blocking request still waiting when the drain time is over is cut off with a
/// reset, not a close that could pass for "no answer".
#[test]
fn ordered_sigterm_resets_what_outlasts_the_drain() {
    let mut resh =
        Resh::start(&redis_ordered_config("", "").replace("[admin]", "[session]\ndrain_timeout_ms = 300\n[admin]"));
    let mut waiter = RespClient::connect(resh.clients).expect("connect");
    waiter.send(&RespClient::encode(&["BLPOP", "empty", "30"])).expect("send BLPOP");
    std::thread::sleep(Duration::from_millis(200));
    resh.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    let end = waiter.stream().read_to_end(&mut rest);
    let error = end.expect_err("a request cut off must end in a reset");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    assert!(rest.is_empty());
    let status = resh.wait_exit(WAIT).expect("resh did not exit after SIGTERM");
    assert!(status.success(), "resh exited with {status}");
}

/// The processes a replica's process started, by scanning /proc for their parent.
fn children_of(pid: u64) -> Vec<u64> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(candidate) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{candidate}/stat")) else { continue };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        if after.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()) == Some(pid) {
            found.push(candidate);
        }
    }
    found
}

/// `kill -9` of resh gives it no chance to stop its replicas: the watchdog does, including the
/// server a wrapper shell started (which the parent-death signal of the wrapper does not reach).
#[test]
fn kill_9_of_resh_leaves_no_process_of_a_wrapped_replica() {
    let echo = resh_e2e::binary("resh-echo").display().to_string();
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[replica]]\nname = \"wrapped\"\n\
         command = [\"sh\", \"-c\", \"'{echo}' --port {{port}}; echo the server ended\"]\n"
    );
    let mut resh = Resh::start(&config);
    let wrapper = replica_pids(&resh)[0];
    let servers = children_of(wrapper);
    assert_eq!(servers.len(), 1, "the wrapper should have started one server: {servers:?}");
    let got = exchange(resh.clients, b"hello");
    assert_eq!(got.received, b"hello");
    resh.kill();
    wait_gone(&[wrapper, servers[0]]);
}

/// Startup mistakes name their cause: a program not on the PATH (and the PATH), a missing
/// working directory, an address nobody listens on (with the connect error), a replica that
/// exits with an error (with the end of its standard error), and a restart loop that backs off
/// says so. The one good replica serves meanwhile.
#[test]
fn startup_mistakes_name_their_cause() {
    let echo = resh_e2e::binary("resh-echo").display().to_string();
    let closed = resh_e2e::free_port();
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[vote]\nquorum = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [supervisor]\nready_timeout_ms = 2000\nrestart_backoff_ms = 50\nrestart_backoff_max_ms = 200\n\
         [[replica]]\nname = \"good\"\ncommand = [{echo:?}, \"--port\", \"{{port}}\"]\n\
         [[replica]]\nname = \"typo\"\ncommand = [\"resh-ehco\", \"--port\", \"{{port}}\"]\n\
         [[replica]]\nname = \"nodir\"\ncommand = [{echo:?}, \"--port\", \"{{port}}\"]\ncwd = \"/nonexistent/dir\"\n\
         [[replica]]\nname = \"failing\"\ncommand = [\"sh\", \"-c\", \"echo 'fatal: cannot open data file' >&2; exit 3\", \"{{port}}\"]\n\
         [[replica]]\nname = \"down\"\naddress = \"127.0.0.1:{closed}\"\n"
    );
    let resh = Resh::start(&config);
    resh.wait_until("the restart loop says it backs off", WAIT, |r| r.log().contains("keeps failing"));
    let log = resh.log();
    assert!(log.contains("`resh-ehco` was not found on the PATH ("), "{log}");
    assert!(log.contains("cwd /nonexistent/dir: No such file or directory"), "{log}");
    assert!(log.contains(&format!("connecting to 127.0.0.1:{closed}: Connection refused")), "{log}");
    assert!(log.contains("the end of its standard error") && log.contains("fatal: cannot open data file"), "{log}");
    assert!(log.contains("not ready: "), "the start summary names the replicas that are not ready: {log}");
    let got = exchange(resh.clients, b"still served");
    assert_eq!(got.received, b"still served");
}

/// A replica that fails is counted once, however many sessions were using it: the sessions
/// that lose it to the repair (resh kills it) count as the repair's consequences.
#[test]
fn a_fault_is_counted_once_and_the_repair_is_not_counted_as_new_faults() {
    let resh = Resh::start(&echo_config([&[], &[], &["--corrupt-at", "100000"]], ""));
    let sessions = 6;
    let connected: Vec<TcpStream> = (0..sessions).map(|_| TcpStream::connect(resh.clients).expect("connect")).collect();
    resh.wait_until("every session is open", WAIT, |r| r.status()["sessions"]["active"] == sessions);
    let clients: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            std::thread::spawn(move || {
                let data = payload(300_000, 40 + i as u64);
                stream.set_read_timeout(Some(WAIT)).expect("timeout");
                let sender = send_in_background(&stream, data.clone());
                let mut received = Vec::new();
                let end = stream.read_to_end(&mut received);
                let _ = sender.join();
                end.is_ok() && received == data
            })
        })
        .collect();
    let correct = clients.into_iter().map(|c| c.join()).filter(|ok| matches!(ok, Ok(true))).count();
    assert_eq!(correct, sessions as usize, "every client gets the right answer\n{}", resh.log());
    resh.wait_until("every session ended", WAIT, |r| r.status()["sessions"]["active"] == 0);
    let c = resh.replica("c");
    let faults = resh_e2e::fault_total(&c);
    assert_eq!(faults, 1, "one incarnation failed once: {c}");
    assert_eq!(resh.faults("c", "diverged"), 1, "{c}");
    assert_eq!(c["repair_cuts"], sessions - 1, "the other sessions lost c to its repair: {c}");
    let metrics = resh.metrics();
    assert!(
        metrics.contains(&format!("resh_replica_repair_cuts_total{{replica=\"c\"}} {}\n", sessions - 1)),
        "{metrics}"
    );
    assert_eq!(resh.status()["recent_faults"].as_array().map(Vec::len), Some(1));
}

/// `/health` says the process is alive; `/ready` whether a quorum serves: it turns 503, with
/// the reason, while two of three replicas cannot start, and back to 200 once they can.
#[test]
fn ready_flips_when_the_quorum_is_lost_and_back() {
    let echo = resh_e2e::binary("resh-echo").display().to_string();
    let dir = resh_e2e::TempDir::new("ready");
    let gate = dir.path().join("may-start");
    std::fs::write(&gate, "").expect("gate");
    let gated = format!(
        "command = [\"sh\", \"-c\", \"[ -e \\\"$1\\\" ] && exec \\\"$2\\\" --port \\\"$0\\\"\", \"{{port}}\", {:?}, {echo:?}]\n",
        gate.display().to_string()
    );
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [supervisor]\nrestart_backoff_ms = 50\nrestart_backoff_max_ms = 200\n\
         [[replica]]\nname = \"a\"\ncommand = [{echo:?}, \"--port\", \"{{port}}\"]\n\
         [[replica]]\nname = \"b\"\n{gated}[[replica]]\nname = \"c\"\n{gated}"
    );
    let resh = Resh::start(&config);
    let get = |path: &str| resh_e2e::http(resh.admin, "GET", path, None, "");
    assert_eq!(get("/health"), (200, "ok\n".to_string()));
    assert_eq!(get("/ready"), (200, "ready\n".to_string()));
    std::fs::remove_file(&gate).expect("close the gate");
    for name in ["b", "c"] {
        let pid = resh.replica(name)["pid"].as_u64().expect("pid");
        // SAFETY: kill(2) takes integers only.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    resh.wait_until("/ready says no quorum", WAIT, |_| get("/ready").0 == 503);
    let (_, why) = get("/ready");
    assert!(why.contains("fewer than the quorum of 2"), "{why}");
    assert_eq!(get("/health").0, 200, "resh is alive without a quorum");
    std::fs::write(&gate, "").expect("open the gate");
    resh.wait_until("/ready is back", WAIT, |_| get("/ready").0 == 200);
    let got = exchange(resh.clients, b"served again");
    assert_eq!(got.received, b"served again");
}

/// Hundreds of half-sent admin requests under a low limit on open files: the admin server holds
/// a bounded number of them, times them out, and data clients are served meanwhile.
#[test]
fn half_open_admin_connections_do_not_stop_data_clients() {
    let resh = resh_e2e::Resh::start_with_limit(&echo_config([&[], &[], &[]], ""), Some("-n 128"));
    let half_sent = |count: usize| {
        let mut open = Vec::new();
        for _ in 0..count {
            // Past the accept queue's length the kernel drops the SYN: do not wait for retries.
            if let Ok(mut c) = TcpStream::connect_timeout(&resh.admin, Duration::from_millis(20)) {
                let _ = c.write_all(b"GET /sta");
                open.push(c);
            }
        }
        open
    };
    // More than the admin server serves at once: a fresh request waits until the held ones
    // time out (5 s), then it is answered.
    let held = half_sent(40);
    assert_eq!(held.len(), 40);
    let started = Instant::now();
    let mut probe = TcpStream::connect(resh.admin).expect("connect admin");
    probe.set_read_timeout(Some(Duration::from_secs(40))).expect("timeout");
    probe.write_all(b"GET /health HTTP/1.1\r\nHost: resh\r\nConnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    probe.read_to_string(&mut answer).expect("the admin server answers once held connections time out");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(3), "answered after {waited:?}: the connection limit did not hold");
    drop(held);

    // Hundreds at once, under a limit of 128 open files: data clients are served meanwhile.
    let idle = half_sent(500);
    assert!(idle.len() >= 100, "only {} admin connections could be opened", idle.len());
    let served = Instant::now();
    for i in 0..20u64 {
        let data = payload(10_000, 60 + i);
        let got = exchange(resh.clients, &data);
        assert!(got.error.is_none() && got.received == data, "data client {i}: {:?}\n{}", got.error, resh.log());
    }
    assert!(served.elapsed() < Duration::from_secs(3), "data clients waited {:?}", served.elapsed());
    drop(idle);
}

/// How long until the server closes an idle connection: `None` if it is still open after `limit`.
fn closed_when_idle(addr: std::net::SocketAddr, limit: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => Some(started.elapsed()),
        _ => None,
    }
}

/// SIGHUP re-reads the configuration: a changed timeout applies to the sessions that start
/// afterwards, a key that cannot change live is named, an invalid file is refused with its
/// errors and the running configuration stays; resh and its replicas keep running throughout.
/// `resh reload` (POST /reload) does the same.
#[test]
fn sighup_reloads_what_can_change_live_and_keeps_running_on_a_bad_file() {
    let token = "reload-token-0123456789";
    let echo = resh_e2e::binary("resh-echo").display().to_string();
    let config = |listen: &str, vote_timeout: u64, session: &str| {
        let mut text = format!(
            "listen = \"{listen}\"\n[vote]\nvote_timeout_ms = {vote_timeout}\n[session]\n{session}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"
        );
        for name in ["a", "b", "c"] {
            text.push_str(&format!("[[replica]]\nname = \"{name}\"\ncommand = [{echo:?}, \"--port\", \"{{port}}\"]\n"));
        }
        text
    };
    let base = config("127.0.0.1:0", 2000, "");
    let resh = Resh::start(&base);
    let pids = replica_pids(&resh);
    assert_eq!(closed_when_idle(resh.clients, Duration::from_millis(800)), None, "idle timeout is 300 s");

    let changed = config("127.0.0.1:1", 1500, "idle_timeout_ms = 300");
    resh.rewrite_config(&changed);
    resh.signal(libc::SIGHUP);
    resh.wait_until("the reload is logged", WAIT, |r| r.log().contains("reload: applied"));
    let log = resh.log();
    // The lag timeout defaults to the vote timeout: it changed with it.
    assert!(log.contains("changed=session.idle_timeout_ms, vote.lag_timeout_ms, vote.vote_timeout_ms"), "{log}");
    assert!(log.contains("these changes need a restart of resh") && log.contains("keys=listen"), "{log}");
    let closed = closed_when_idle(resh.clients, Duration::from_secs(5)).expect("the new idle timeout applies");
    assert!(closed >= Duration::from_millis(250), "closed after {closed:?}");

    // An invalid file: refused, the running configuration stays.
    resh.rewrite_config(&changed.replace("idle_timeout_ms = 300", "idle_timeout_ms = 0"));
    resh.signal(libc::SIGHUP);
    resh.wait_until("the refusal is logged", WAIT, |r| r.log().contains("reload refused"));
    assert!(resh.log().contains("session.idle_timeout_ms: must be at least 1"), "{}", resh.log());
    assert!(closed_when_idle(resh.clients, Duration::from_secs(5)).is_some(), "the running idle timeout stays");
    let data = payload(5000, 70);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data, "resh serves after a refused reload");
    assert_eq!(replica_pids(&resh), pids, "a reload must not restart the replicas");

    // `resh reload`: the same through the admin API, with its report; refused without the token.
    resh.rewrite_config(&changed.replace("idle_timeout_ms = 300", "idle_timeout_ms = 60000"));
    let reload = |token: Option<&str>| {
        let mut command = std::process::Command::new(resh_e2e::binary("resh"));
        command.args(["reload", "--admin", &format!("http://{}", resh.admin)]);
        if let Some(t) = token {
            command.args(["--token", t]);
        }
        command.env_remove("RESH_ADMIN_TOKEN").output().expect("run resh reload")
    };
    let denied = reload(None);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("HTTP 401"), "{denied:?}");
    let out = reload(Some(token));
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["applied"], serde_json::json!(["session.idle_timeout_ms"]), "{report}");
    assert_eq!(report["not_live"], serde_json::json!(["listen"]), "{report}");
    assert_eq!(closed_when_idle(resh.clients, Duration::from_millis(800)), None, "idle timeout is 60 s again");
}

/// What an operator watches: one log line per session, `resh status` (once and `--watch`), the
/// status document's objects and times, and the build and state metrics.
#[test]
fn observability_session_lines_status_view_and_metrics() {
    let resh = Resh::start(&echo_config([&[], &[], &[]], ""));
    let data = payload(3000, 80);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data);
    resh.wait_until("the session's line is logged", WAIT, |r| r.log().contains("session ended"));
    let log = resh.log();
    let line = log.lines().find(|l| l.contains("session ended")).expect("line");
    for field in ["verdict=\"agreed\"", "close=\"fin\"", "from_client=3000", "to_client=3000", "duration_ms=", "peer="]
    {
        assert!(line.contains(field), "{field} missing: {line}");
    }

    let status = resh.status();
    assert!(status["replicas"][0]["faults"].is_object(), "{status}");
    let started = status["started_at"].as_str().expect("started_at");
    assert!(started.len() == 24 && started.ends_with('Z') && started.as_bytes()[10] == b'T', "{started}");
    let metrics = resh.metrics();
    assert!(metrics.contains("resh_build_info{version=\""), "{metrics}");
    assert!(metrics.contains("resh_replica_state{replica=\"a\",state=\"ready\"} 1\n"), "{metrics}");
    assert!(metrics.contains("resh_replica_output_bytes_total{replica=\"b\"} 3000\n"), "{metrics}");

    let admin = format!("http://{}", resh.admin);
    let view = std::process::Command::new(resh_e2e::binary("resh"))
        .args(["status", "--admin", &admin])
        .output()
        .expect("resh status");
    let text = String::from_utf8_lossy(&view.stdout);
    assert!(view.status.success(), "{view:?}");
    assert!(text.contains("stream mode · quorum 2") && text.contains("no faults"), "{text}");
    for name in ["a", "b", "c"] {
        assert!(text.lines().any(|l| l.starts_with(name) && l.contains("ready")), "{text}");
    }
    let watched = std::process::Command::new(resh_e2e::binary("resh"))
        .args(["status", "--admin", &admin, "--watch", "--count", "2", "--interval-ms", "100"])
        .output()
        .expect("resh status --watch");
    let text = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(text.matches("REPLICA").count(), 2, "{text}");
    let down = std::process::Command::new(resh_e2e::binary("resh"))
        .args(["status", "--admin", "http://127.0.0.1:1"])
        .output()
        .expect("resh status");
    assert_eq!(down.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot connect to the admin API"), "{down:?}");
}

/// `--log-format json` writes one JSON object per line; without `--log` the configuration's
/// `log` filter applies, and a reload changes it.
#[test]
fn json_logs_and_the_configured_filter_change_on_reload() {
    let quiet = echo_config([&[], &[], &[]], "").replacen("listen", "log = \"warn\"\nlisten", 1);
    let resh = Resh::start_logging(&quiet, &["--log-format", "json"]);
    let data = payload(100, 90);
    assert!(exchange(resh.clients, &data).received == data);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!resh.log().contains("session ended"), "info lines with log = warn:\n{}", resh.log());
    resh.rewrite_config(&quiet.replacen("log = \"warn\"", "log = \"info\"", 1));
    resh.signal(libc::SIGHUP);
    resh.wait_until("the reload is applied", WAIT, |r| r.log().contains("reload: applied"));
    assert!(exchange(resh.clients, &data).received == data);
    resh.wait_until("the session's line is logged", WAIT, |r| r.log().contains("session ended"));
    let log = resh.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(object["level"].is_string() && object["fields"].is_object(), "{line}");
    }
    let ended = log.lines().find(|l| l.contains("session ended")).expect("line");
    let ended: serde_json::Value = serde_json::from_str(ended).expect("JSON");
    assert_eq!(ended["fields"]["verdict"], "agreed", "{ended}");
    assert!(ended["span"]["peer"].is_string(), "the session's span is in the line: {ended}");
}

/// A replica's first process exits and leaves a process of its group running (a wrapper that
/// backgrounds its server): resh stops the whole group, not only what it reaped.
#[test]
fn a_wrapper_that_exits_takes_its_group_with_it() {
    let echo = resh_e2e::binary("resh-echo").display().to_string();
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[supervisor]\nrestart_backoff_ms = 5000\n\
         [[replica]]\nname = \"wrapped\"\n\
         command = [\"sh\", \"-c\", \"'{echo}' --port {{port}} & sleep 1; exit 3\"]\n"
    );
    let resh = Resh::start(&config);
    let wrapper = replica_pids(&resh)[0];
    let servers = children_of(wrapper)
        .into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.contains("resh-echo")));
    let servers: Vec<u64> = servers.collect();
    assert_eq!(servers.len(), 1, "the wrapper started one server");
    resh.wait_until("the wrapper's exit is noted", WAIT, |r| r.replica("wrapped")["last_exit"].is_string());
    wait_gone(&servers);
}

/// Stream mode: a reload that drops a replica stops it, one that adds a replica starts it, and
/// new sessions use the new set; nothing is counted as a fault.
#[test]
fn a_reload_adds_and_removes_replicas_in_stream_mode() {
    let echo = resh_e2e::binary("resh-echo").display().to_string();
    let config = |names: &[&str]| {
        let mut text = String::from("listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
        for name in names {
            text.push_str(&format!("[[replica]]\nname = \"{name}\"\ncommand = [{echo:?}, \"--port\", \"{{port}}\"]\n"));
        }
        text
    };
    let resh = Resh::start(&config(&["a", "b", "c"]));
    let c_pid = resh.replica("c")["pid"].as_u64().expect("pid");
    // A session open across the reload keeps the replicas it started with.
    let mut open = TcpStream::connect(resh.clients).expect("connect");
    resh.wait_until("the session is open", WAIT, |r| r.status()["sessions"]["active"] == 1);

    resh.rewrite_config(&config(&["a", "b", "d"]));
    resh.signal(libc::SIGHUP);
    resh.wait_until("d is ready and c gone", WAIT, |r| {
        let names: Vec<String> = r.status()["replicas"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter(|x| x["state"] == "ready")
                    .filter_map(|x| x["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        names == ["a", "b", "d"]
    });
    wait_gone(&[c_pid]);
    assert!(resh.log().contains("changed=replica"), "{}", resh.log());
    let data = payload(20_000, 95);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data, "{:?}", got.error);
    resh.wait_until("d served a session", WAIT, |r| r.replica("d")["sessions"] == 1);
    // The session that had c: its answers still agree (a and b are a quorum), and c's removal is
    // no fault.
    open.set_read_timeout(Some(WAIT)).expect("timeout");
    open.write_all(b"still here").expect("send");
    open.shutdown(Shutdown::Write).expect("half-close");
    let mut answer = Vec::new();
    open.read_to_end(&mut answer).expect("answer");
    assert_eq!(answer, b"still here");
    for name in ["a", "b", "d"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
    assert!(resh.status()["recent_faults"].as_array().is_some_and(Vec::is_empty), "{}", resh.status());
}

/// Attacking the reload: a burst of SIGHUPs, a configuration file that is gone, and a stop with
/// no drain time; resh keeps serving through the first two and stops at once on the last.
#[test]
fn reload_bursts_and_a_missing_file_do_not_disturb_serving() {
    let mut resh = Resh::start(&echo_config([&[], &[], &[]], "[session]\ndrain_timeout_ms = 0\n"));
    let pids = replica_pids(&resh);
    for _ in 0..50 {
        resh.signal(libc::SIGHUP);
    }
    let data = payload(10_000, 97);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data, "{:?}", got.error);
    std::fs::remove_file(resh.dir().join("resh.toml")).expect("remove the file");
    resh.signal(libc::SIGHUP);
    resh.wait_until("the missing file is reported", WAIT, |r| r.log().contains("cannot read"));
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data, "{:?}", got.error);
    assert_eq!(replica_pids(&resh), pids, "reloads restarted replicas");
    // drain_timeout_ms = 0: an open session is cut off at once, with a reset.
    let mut open = TcpStream::connect(resh.clients).expect("connect");
    open.write_all(b"half an exchange").expect("send");
    let mut echo = [0u8; 16];
    open.set_read_timeout(Some(WAIT)).expect("timeout");
    open.read_exact(&mut echo).expect("echo");
    let signalled = Instant::now();
    resh.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    let end = open.read_to_end(&mut rest);
    assert!(end.is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset), "cut off without a reset");
    exited_promptly(&mut resh, signalled, &pids);
}

/// Ordered mode: a reload changes the request timeout of the running core; the replicas and
/// the quorum stay.
#[test]
fn ordered_reload_retunes_the_request_timeout() {
    let base = redis_ordered_config("", "");
    let resh = Resh::start(&base);
    let mut client = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(client.call(&["DEBUG", "SLEEP", "0.6"]).expect("DEBUG SLEEP"), b"+OK\r\n");
    resh.rewrite_config(&redis_ordered_config("", "request_timeout_ms = 200"));
    resh.signal(libc::SIGHUP);
    resh.wait_until("the reload is applied", WAIT, |r| r.log().contains("changed=ordered.request_timeout_ms"));
    // The sequencer takes it at its next admission poll (50 ms).
    std::thread::sleep(Duration::from_millis(200));
    let answer = client.call(&["DEBUG", "SLEEP", "0.6"]).expect("DEBUG SLEEP");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("no agreed answer within ordered.request_timeout_ms"), "{text}");
    // Nobody is blamed for a slow command they all ran alike.
    for name in ["r1", "r2", "r3"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}

/// A replica that writes bytes that are not UTF-8 to its standard output, then more than a
/// pipe holds, is still read: resh must never leave a replica blocked on its own output.
#[test]
fn replica_output_that_is_not_utf8_is_still_drained() {
    let echo = resh_e2e::binary("resh-echo").display().to_string();
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[supervisor]\nready_timeout_ms = 5000\n\
         [[replica]]\nname = \"noisy\"\n\
         command = [\"sh\", \"-c\", \"printf '\\\\377\\\\376 not utf-8\\\\n'; head -c 300000 /dev/zero | tr '\\\\0' x; echo; exec '{echo}' --port $0\", \"{{port}}\"]\n"
    );
    let resh = Resh::start(&config);
    assert_eq!(resh.replica("noisy")["state"], "ready", "{}", resh.log());
    let got = exchange(resh.clients, b"still served");
    assert_eq!(got.received, b"still served");
}

/// Stream mode's per-replica timing: a replica that writes each answer 150 ms late shows it in
/// its answer time and its trail behind the vote, and the prompt ones show neither.
#[test]
fn stream_mode_metrics_show_which_replica_answers_late_and_trails() {
    let resh = Resh::start(&echo_config([&[], &[], &["--delay-ms", "150"]], ""));
    for seed in 0..3 {
        let data = payload(500, seed);
        let got = exchange(resh.clients, &data);
        assert!(got.error.is_none() && got.received == data, "{:?}", got.error);
    }
    // The third replica's output is read after the client's session may have ended.
    resh.wait_until("the slow replica's timing is recorded", WAIT, |r| {
        r.metrics().contains("resh_replica_trail_microseconds{replica=\"c\"}")
    });
    let metrics = resh.metrics();
    let gauge = |name: &str, replica: &str| -> u64 {
        let prefix = format!("{name}{{replica=\"{replica}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{prefix}: {metrics}"));
        line[prefix.len()..].parse().expect("a count of microseconds")
    };
    for name in ["resh_replica_answer_microseconds", "resh_replica_trail_microseconds"] {
        let c = gauge(name, "c");
        assert!(c >= 100_000, "{name} of c: {c}");
        for prompt in ["a", "b"] {
            assert!(gauge(name, prompt) < c / 2, "{name} of {prompt}: {metrics}");
        }
    }
    let status = resh.status();
    assert!(status["replicas"][2]["answer_ms"].as_f64().is_some_and(|ms| ms >= 100.0), "{status}");
    assert!(status["replicas"][2]["trail_ms"].as_f64().is_some_and(|ms| ms >= 100.0), "{status}");
}

/// Ordered mode: a reload adds a fourth redis-server while a client keeps its connection; the
/// new one is rebuilt with the data written before, votes, and the quorum grows to three; a
/// second reload removes one, whose process stops, and the quorum is two again. Nobody is
/// blamed, and the client's connection is served throughout.
#[test]
fn a_reload_adds_and_removes_replicas_in_ordered_mode() {
    let three = redis_ordered_config("", "");
    let resh = Resh::start(&three);
    let mut client = RespClient::connect(resh.clients).expect("connect");
    for i in 0..50 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        assert_eq!(client.call(&["SET", &key, &value]).expect("SET"), b"+OK\r\n");
    }
    let r4 = three.split("[[replica]]").nth(1).expect("a replica block").replace("name = \"r1\"", "name = \"r4\"");
    resh.rewrite_config(&format!("{three}[[replica]]{r4}"));
    resh.signal(libc::SIGHUP);
    resh.wait_until("r4 votes and the quorum is three", WAIT, |r| {
        let status = r.status();
        status["quorum"] == 3 && r.replica("r4")["vote"]["state"] == "voting"
    });
    // r4 was rebuilt: it holds what was written before it came.
    let addr: std::net::SocketAddr = resh.replica("r4")["addr"].as_str().expect("addr").parse().expect("an address");
    let mut direct = RespClient::connect(addr).expect("connect to r4");
    assert_eq!(direct.call(&["GET", "k42"]).expect("GET"), b"$3\r\nv42\r\n");
    assert_eq!(client.call(&["INCR", "n"]).expect("INCR"), b":1\r\n");

    let r2_pid = resh.replica("r2")["pid"].as_u64().expect("pid");
    let without_r2: String = format!("{three}[[replica]]{r4}")
        .split("[[replica]]")
        .filter(|block| !block.contains("name = \"r2\""))
        .collect::<Vec<_>>()
        .join("[[replica]]");
    resh.rewrite_config(&without_r2);
    resh.signal(libc::SIGHUP);
    resh.wait_until("r2 is gone and the quorum is two", WAIT, |r| {
        let status = r.status();
        let names: Vec<&str> = status["replicas"]
            .as_array()
            .map(|rs| rs.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        status["quorum"] == 2 && names == ["r1", "r3", "r4"]
    });
    wait_gone(&[r2_pid]);
    assert_eq!(client.call(&["INCR", "n"]).expect("INCR"), b":2\r\n");
    assert_eq!(client.call(&["GET", "k7"]).expect("GET"), b"$2\r\nv7\r\n");
    let status = resh.status();
    for name in ["r1", "r3", "r4"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{status}");
        assert_eq!(resh.replica(name)["vote"]["state"], "voting", "{status}");
    }
    assert!(status["recent_faults"].as_array().is_some_and(Vec::is_empty), "{status}");
    assert!(resh.log().contains("changed=replica"), "{}", resh.log());
}

/// Ordered mode: a reload that replaces two of three replicas at once would leave one voting,
/// fewer than the quorum: it is refused, and the running replicas stay, the same processes. A
/// reload after it that adds one replica goes through (the numbers the refused one gave out
/// stay unused).
#[test]
fn an_ordered_reload_that_would_stop_the_service_is_refused() {
    let three = redis_ordered_config("", "");
    let resh = Resh::start(&three);
    let pids = replica_pids(&resh);
    let mut client = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(client.call(&["SET", "k", "v"]).expect("SET"), b"+OK\r\n");
    // r1 and r2 with another command line: each is removed and added anew.
    let replaced = three.replacen("\"yes\"]", "\"yes\", \"--hz\", \"11\"]", 2);
    assert_ne!(replaced, three);
    resh.rewrite_config(&replaced);
    resh.signal(libc::SIGHUP);
    resh.wait_until("the reload is refused", WAIT, |r| r.log().contains("cannot change the replicas"));
    let log = resh.log();
    assert!(log.contains("only 1 replicas would still vote"), "{log}");
    assert_eq!(replica_pids(&resh), pids, "the running replicas stay");
    assert_eq!(client.call(&["GET", "k"]).expect("GET"), b"$1\r\nv\r\n");
    let r4 = three.split("[[replica]]").nth(1).expect("a replica block").replace("name = \"r1\"", "name = \"r4\"");
    resh.rewrite_config(&format!("{three}[[replica]]{r4}"));
    resh.signal(libc::SIGHUP);
    resh.wait_until("r4 votes", WAIT, |r| {
        r.status()["replicas"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|x| x["name"] == "r4" && x["vote"]["state"] == "voting"))
    });
    assert_eq!(resh.status()["quorum"], 3);
    assert_eq!(client.call(&["GET", "k"]).expect("GET"), b"$1\r\nv\r\n");
    for name in ["r1", "r2", "r3", "r4"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}
