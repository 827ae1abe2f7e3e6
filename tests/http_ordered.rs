//! HTTP in ordered mode (`mode = "ordered"`, `protocol = "http"`): a stateful web service
//! (`tests/clients/stateful_http.py`: counters and a key-value store, every 7th answer closing
//! its connection) behind resh, with concurrent clients on kept-alive connections.
//!
//! - One global order: four clients incrementing one counter get every value from 1 to 100
//!   exactly once, and every replica ends at 100; a replica's closing connection is no fault.
//! - A replica whose answer differs is blamed, restarted, rebuilt from the replay log, and
//!   votes again with the same state as the others.
//! - With fewer replicas in the vote than the quorum, a request is refused (503) and not
//!   executed.
use std::net::TcpStream;
use std::time::Duration;

use resh_e2e::{http_request, workspace, Resh, TempDir};

const WAIT: Duration = Duration::from_secs(30);

fn config(replica_args: [&[&str]; 3], extra: &str) -> String {
    let script = workspace().join("tests/clients/stateful_http.py");
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n[vote]\nmode = \"ordered\"\nprotocol = \"http\"\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    for (name, args) in ["a", "b", "c"].iter().zip(replica_args) {
        let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        let tail = if args.is_empty() { String::new() } else { format!(", {}", args.join(", ")) };
        text.push_str(&format!(
            "[[replica]]\nname = \"{name}\"\ncommand = [\"python3\", {:?}, \"{{port}}\"{tail}]\n",
            script.display().to_string()
        ));
    }
    text
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream
}

/// The counter's value in a POST or GET answer.
fn value(body: &[u8]) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(body).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(body)));
    v["value"].as_u64().expect("a value")
}

/// A replica's own state, asked directly.
fn replica_counter(resh: &Resh, name: &str, counter: &str) -> u64 {
    let addr: std::net::SocketAddr = resh.replica(name)["addr"].as_str().expect("addr").parse().expect("an address");
    let mut stream = connect(addr);
    let (status, body) = http_request(&mut stream, "GET", &format!("/counter/{counter}"), b"");
    assert_eq!(status, 200);
    value(&body)
}

/// Waits until replica `name`'s counter is `want`: a replica may still be executing what the
/// quorum has answered.
fn wait_counter(resh: &Resh, name: &str, counter: &str, want: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = replica_counter(resh, name, counter);
        if got == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "replica {name}: counter {got}, not {want}: {}", resh.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn concurrent_clients_see_one_order_and_every_replica_the_same_state() {
    let resh = Resh::start(&config([&[], &[], &[]], ""));
    let addr = resh.clients;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                (0..25)
                    .map(|_| {
                        let (status, body) = http_request(&mut stream, "POST", "/counter/c", b"");
                        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                        value(&body)
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seen: Vec<u64> = clients.into_iter().flat_map(|c| c.join().expect("a client")).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=100).collect::<Vec<u64>>(), "every value once: one order for all clients");
    for name in ["a", "b", "c"] {
        wait_counter(&resh, name, "c", 100);
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "no fault: {}", resh.status());
    }
    // A key-value round trip, and a 404 every replica gives.
    let mut stream = connect(addr);
    assert_eq!(http_request(&mut stream, "PUT", "/kv/k", b"v1"), (200, br#"{"stored": true}"#.to_vec()));
    assert_eq!(http_request(&mut stream, "GET", "/kv/k", b""), (200, b"v1".to_vec()));
    assert_eq!(http_request(&mut stream, "GET", "/kv/none", b"").0, 404);
    assert_eq!(http_request(&mut stream, "DELETE", "/kv/k", b"").0, 200);
    assert_eq!(http_request(&mut stream, "GET", "/kv/k", b"").0, 404);
    for name in ["a", "b", "c"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "no fault: {}", resh.status());
    }
}

#[test]
fn a_replica_that_differs_is_blamed_rebuilt_from_the_log_and_votes_again() {
    let dir = TempDir::new("http-ordered-bug");
    let once = dir.path().join("fired").display().to_string();
    let resh = Resh::start(&config([&[], &[], &["--wrong-after", "10", "--once", &once]], ""));
    let mut stream = connect(resh.clients);
    for want in 1..=30 {
        let (status, body) = http_request(&mut stream, "POST", "/counter/c", b"");
        assert_eq!((status, value(&body)), (200, want), "the majority's answer");
    }
    resh.wait_until("c is blamed", WAIT, |r| r.faults("c", "diverged") == 1);
    resh.wait_until("c is rebuilt and votes again", WAIT, |r| {
        r.log().matches("replica joins the vote replica=c from_request=").count() >= 2
    });
    for want in 31..=40 {
        let (status, body) = http_request(&mut stream, "POST", "/counter/c", b"");
        assert_eq!((status, value(&body)), (200, want));
    }
    // The rebuilt replica holds what the others hold: the log was replayed to it.
    for name in ["a", "b", "c"] {
        wait_counter(&resh, name, "c", 40);
    }
    assert_eq!(resh.faults("c", "diverged"), 1, "{}", resh.status());
    for name in ["a", "b"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}

#[test]
fn with_fewer_replicas_than_the_quorum_a_request_is_refused_and_not_executed() {
    // Replicas that die stay down (a long restart backoff), so two of three are gone.
    let resh = Resh::start(&config(
        [&[], &[], &[]],
        "[supervisor]\nrestart_backoff_ms = 60000\nrestart_backoff_max_ms = 60000",
    ));
    let mut stream = connect(resh.clients);
    assert_eq!(value(&http_request(&mut stream, "POST", "/counter/c", b"").1), 1);
    for name in ["b", "c"] {
        let pid = resh.replica(name)["pid"].as_u64().expect("pid");
        resh_e2e::signal_pid(pid, libc::SIGKILL).expect("SIGKILL");
    }
    resh.wait_until("b and c are down", WAIT, |r| ["b", "c"].iter().all(|n| r.replica(n)["state"] != "ready"));
    // The sequencer sees it within its poll (100 ms).
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = http_request(&mut stream, "POST", "/counter/c", b"");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not executed"), "{}", String::from_utf8_lossy(&body));
    assert_eq!(replica_counter(&resh, "a", "c"), 1, "the refused request never reached a replica");
}

/// A replica that stops answering (SIGSTOP) is reported late once the others answered, the
/// clients are served meanwhile, and the restarted replica is rebuilt and votes again.
#[test]
fn a_replica_that_hangs_is_reported_late_and_rebuilt() {
    let resh = Resh::start(&config([&[], &[], &[]], "lag_timeout_ms = 500"));
    let mut stream = connect(resh.clients);
    for want in 1..=5 {
        assert_eq!(value(&http_request(&mut stream, "POST", "/counter/c", b"").1), want);
    }
    let pid = resh.replica("c")["pid"].as_u64().expect("pid");
    resh_e2e::signal_pid(pid, libc::SIGSTOP).expect("SIGSTOP");
    let started = std::time::Instant::now();
    for want in 6..=10 {
        assert_eq!(value(&http_request(&mut stream, "POST", "/counter/c", b"").1), want);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "served while c hung: {:?}", started.elapsed());
    resh.wait_until("c is late", WAIT, |r| r.faults("c", "late") == 1);
    resh.wait_until("c is rebuilt", WAIT, |r| {
        r.log().matches("replica joins the vote replica=c from_request=").count() >= 2
    });
    for want in 11..=15 {
        assert_eq!(value(&http_request(&mut stream, "POST", "/counter/c", b"").1), want);
    }
    for name in ["a", "b", "c"] {
        wait_counter(&resh, name, "c", 15);
    }
    let _ = resh_e2e::signal_pid(pid, libc::SIGCONT);
}

/// curl's own usage: a 2 MB PUT with `Expect: 100-continue` (resh answers the interim 100 and
/// the replicas' final answer is voted), read back whole.
#[test]
fn curl_puts_a_large_body_with_expect_continue_and_reads_it_back() {
    let dir = TempDir::new("http-ordered-curl");
    let resh = Resh::start(&config([&[], &[], &[]], ""));
    let data = resh_e2e::payload(2_000_000, 5);
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &data).expect("write");
    let url = format!("http://{}/kv/big", resh.clients);
    let put = std::process::Command::new("curl")
        .args(["-s", "--noproxy", "*", "-w", "%{http_code}", "-H", "Expect: 100-continue", "-T"])
        .arg(&file)
        .arg(&url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&put.stdout);
    assert!(text.ends_with("200"), "{text}");
    let out = dir.path().join("out.bin");
    let get = std::process::Command::new("curl")
        .args(["-s", "--noproxy", "*", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code}", &url])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&get.stdout), "200");
    assert!(std::fs::read(&out).is_ok_and(|b| b == data), "the body read back differs");
    for name in ["a", "b", "c"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}

/// A request every replica leaves unanswered (a response that never ends) is voted as timed
/// out alike: a 504 after http.request_timeout_ms, nobody blamed, and the order goes on.
#[test]
fn a_request_no_replica_answers_times_out_and_the_order_goes_on() {
    let resh = Resh::start(&config([&[], &[], &[]], "[http]\nrequest_timeout_ms = 1000"));
    let mut stream = connect(resh.clients);
    assert_eq!(value(&http_request(&mut stream, "POST", "/counter/c", b"").1), 1);
    let started = std::time::Instant::now();
    let (status, body) = http_request(&mut stream, "GET", "/hang", b"");
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The order is not stuck behind it, on this connection or another.
    let mut other = connect(resh.clients);
    let (status, body) = http_request(&mut other, "POST", "/counter/c", b"");
    assert_eq!((status, value(&body)), (200, 2));
    assert_eq!(value(&http_request(&mut stream, "GET", "/counter/c", b"").1), 2);
    for name in ["a", "b", "c"] {
        assert_eq!(resh_e2e::fault_total(&resh.replica(name)), 0, "{}", resh.status());
    }
}
