//! End-to-end tests of ordered mode under requests, clients and replicas that used to take the
//! whole service down: real resh, real redis-server replicas, real sockets. Each test is one
//! case of "what every replica does alike is the service's behaviour, not a fault", or of a
//! bound that must hold.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use resh_e2e::{free_port, have, redis_ordered_config, RedisServer, Resh, RespClient};

const WAIT: Duration = Duration::from_secs(60);

/// Ordered mode with three redis-server replicas (DEBUG passed: the tests crash replicas with
/// it); `vote` and `ordered` are appended to those tables.
fn redis_config(vote: &str, ordered: &str) -> String {
    redis_ordered_config(vote, &format!("allow_unsafe = [\"DEBUG\"]\n{ordered}"))
}

fn addr_of(resh: &Resh, name: &str) -> SocketAddr {
    resh.replica(name)["addr"].as_str().and_then(|a| a.parse().ok()).expect("replica address")
}

/// `DEBUG DIGEST` of one replica, asked directly: equal digests mean equal datasets.
fn digest(addr: SocketAddr) -> Vec<u8> {
    let mut c = RespClient::connect(addr).expect("connect to a replica directly");
    c.call(&["DEBUG", "DIGEST"]).expect("DEBUG DIGEST")
}

fn names(resh: &Resh) -> Vec<String> {
    let status = resh.status();
    status["replicas"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["name"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn all_vote(resh: &Resh) -> bool {
    let status = resh.status();
    status["replicas"].as_array().is_some_and(|rs| rs.iter().all(|r| r["vote"]["state"] == "voting"))
}

/// Every replica votes and holds the same dataset.
fn assert_identical(resh: &Resh) {
    resh.wait_until("every replica votes", WAIT, all_vote);
    let digests: Vec<(String, Vec<u8>)> =
        names(resh).into_iter().map(|n| (n.clone(), digest(addr_of(resh, &n)))).collect();
    for (name, d) in &digests[1..] {
        assert_eq!(d, &digests[0].1, "replica {name} differs from {}", digests[0].0);
    }
}

fn total_faults(resh: &Resh) -> u64 {
    let status = resh.status();
    status["replicas"].as_array().map(|rs| rs.iter().map(resh_e2e::fault_total).sum()).unwrap_or(0)
}

/// Sends raw bytes and reads until the server closes (or 10 s pass).
/// What a failed assertion prints: the status and the end of resh's log.
fn report(resh: &Resh) -> String {
    let log = resh.log();
    let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    format!("{}\n--- resh.log, last lines:\n{tail}", resh.status())
}

fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(bytes).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// Requests Redis itself refuses (a sign or a leading zero in a length) used to be forwarded,
/// refused by every redis-server, and close the one connection all sessions share: all three
/// replicas dropped at once. resh refuses them itself, with Redis's own words.
#[test]
fn requests_redis_refuses_are_refused_before_any_replica_sees_them() {
    let resh = Resh::start(&redis_config("", ""));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(c.call(&["SET", "k", "v"]).expect("SET"), b"+OK\r\n");
    let direct = addr_of(&resh, "r1");
    for poison in
        [&b"*+1\r\n$4\r\nPING\r\n"[..], b"*1\r\n$04\r\nPING\r\n", b"*01\r\n$4\r\nPING\r\n", b"*1\r\n$+4\r\nPING\r\n"]
    {
        let through = raw_exchange(resh.clients, poison);
        // The same words as redis-server's own answer (asked directly, on a connection of its own).
        let from_redis = raw_exchange(direct, poison);
        assert!(through.starts_with(b"-ERR Protocol error: "), "{}", String::from_utf8_lossy(&through));
        assert_eq!(through, from_redis, "resh's refusal differs from redis-server's");
        assert_eq!(c.call(&["GET", "k"]).expect("GET"), b"$1\r\nv\r\n", "the service goes on");
    }
    assert_eq!(total_faults(&resh), 0, "{}", resh.status());
    for name in names(&resh) {
        assert_eq!(resh.replica(&name)["incarnation"], 1, "{name} was restarted");
    }
    assert_identical(&resh);
}

/// A request that kills every replica (a query of death) is the service's behaviour: its
/// client gets an error, no replica is blamed, it is not replayed, and the replicas, restarted
/// by the supervisor, are rebuilt from the log and serve the state from before it.
#[test]
fn a_request_that_kills_every_replica_is_refused_and_the_service_recovers() {
    let resh = Resh::start(&redis_config("", ""));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(c.call(&["SET", "before", "1"]).expect("SET"), b"+OK\r\n");
    c.call(&["RPUSH", "list", "a", "b"]).expect("RPUSH");
    let answer = c.call(&["DEBUG", "SEGFAULT"]).expect("an answer, not a hang or a reset");
    assert!(answer.starts_with(b"-ERR resh: every replica closed"), "{}", String::from_utf8_lossy(&answer));
    resh.wait_until("every replica is back and votes", WAIT, |r| {
        all_vote(r) && names(r).iter().all(|n| r.replica(n)["vote"]["incarnation"] == 2)
    });
    let mut c = RespClient::connect(resh.clients).expect("connect again");
    assert_eq!(c.call(&["GET", "before"]).expect("GET"), b"$1\r\n1\r\n");
    assert_eq!(c.call(&["LRANGE", "list", "0", "-1"]).expect("LRANGE"), b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_eq!(total_faults(&resh), 0, "{}", resh.status());
    assert!(resh.log().contains("it is refused (not replayed), no replica is blamed"), "{}", resh.log());
    assert_identical(&resh);
}

/// A query of death in the middle of a pipelined batch: redis-server runs the batch before it
/// writes the answers, so every replica dies having lost the answers to the requests before it.
/// Nothing tells those from the one that killed them: the batch is lost as with one crashed
/// redis-server (the client gets errors, in order, and its connection ends), nobody is blamed, the replicas are
/// rebuilt once (the rebuild replays what nobody answered one request at a time, so the query
/// of death is found and refused instead of killing every rebuild), and the service goes on
/// with the state from before the batch.
#[test]
fn a_query_of_death_in_a_pipelined_batch_costs_the_batch_and_the_service_recovers() {
    let resh = Resh::start(&redis_config("", ""));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    assert_eq!(c.call(&["SET", "before", "1"]).expect("SET"), b"+OK\r\n");
    let batch: &[&[&str]] =
        &[&["SET", "a", "1"], &["INCR", "n"], &["DEBUG", "SEGFAULT"], &["SET", "c", "3"], &["GET", "before"]];
    let request: Vec<u8> = batch.iter().flat_map(|args| RespClient::encode(args)).collect();
    // The first request is refused; the next one no quorum answers, which ends the session (as
    // redis-server's crash would have ended the connection): errors only, then the close.
    let answers = raw_exchange(resh.clients, &request);
    let text = String::from_utf8_lossy(&answers);
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert!(lines.first().is_some_and(|l| l.starts_with("-ERR resh: every replica closed")), "{text}");
    assert!(lines.iter().all(|l| l.starts_with("-ERR resh: ")), "{text}");
    assert!(lines.last().is_some_and(|l| l.contains("the session is aborted")), "{text}");
    resh.wait_until("every replica is back and votes", WAIT, |r| {
        all_vote(r) && names(r).iter().all(|n| r.replica(n)["vote"]["incarnation"].as_u64() >= Some(2))
    });
    // A rebuilt replica that joins the vote before the query of death is found may be sent it
    // as a live request, once, and die on it again (the close then points at that one request,
    // one at a time): until then a read may find too few replicas to agree. The service must
    // answer right within the wait; how often each was restarted is checked below.
    let deadline = Instant::now() + WAIT;
    let mut c = loop {
        let mut c = RespClient::connect(resh.clients).expect("connect again");
        let before = c.call(&["GET", "before"]).expect("GET");
        if before == b"$1\r\n1\r\n" {
            break c;
        }
        assert!(before.starts_with(b"-"), "a wrong answer: {}", String::from_utf8_lossy(&before));
        assert!(Instant::now() < deadline, "no agreed answer within {WAIT:?}: {}\n{}", resh.status(), resh.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(c.call(&["SET", "after", "2"]).expect("SET"), b"+OK\r\n");
    // The rebuilt replicas do not die again (the query of death left the log).
    std::thread::sleep(Duration::from_millis(1500));
    for name in names(&resh) {
        let incarnation = resh.replica(&name)["incarnation"].as_u64().unwrap_or(0);
        assert!(incarnation <= 3, "{name} keeps being restarted: incarnation {incarnation}\n{}", resh.log());
    }
    assert!(all_vote(&resh), "{}", resh.status());
    assert_eq!(total_faults(&resh), 0, "{}", resh.status());
    assert_identical(&resh);
}

/// A command every replica is slow on (longer than the vote and lag timeouts) is the
/// service's behaviour: its client gets the agreed answer, nobody is blamed; past the
/// per-request limit, the client gets a clear error and still nobody is blamed.
#[test]
fn a_slow_command_every_replica_runs_blames_nobody() {
    let resh = Resh::start(&redis_config("vote_timeout_ms = 1000", "request_timeout_ms = 4000"));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    let started = Instant::now();
    assert_eq!(c.call(&["DEBUG", "SLEEP", "2.5"]).expect("DEBUG SLEEP"), b"+OK\r\n");
    assert!(started.elapsed() >= Duration::from_millis(2400), "it did sleep");
    assert_eq!(c.call(&["SET", "after", "1"]).expect("SET"), b"+OK\r\n");
    // Longer than the per-request limit: an error that says so, then the service goes on.
    let answer = c.call(&["DEBUG", "SLEEP", "5"]).expect("an answer");
    assert!(
        answer.starts_with(b"-ERR resh: no agreed answer within ordered.request_timeout_ms"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(c.call(&["GET", "after"]).expect("GET"), b"$1\r\n1\r\n");
    assert_eq!(total_faults(&resh), 0, "{}", resh.status());
    assert!(all_vote(&resh), "{}", resh.status());
    let metrics = resh.metrics();
    assert!(metrics.contains("resh_requests_total{outcome=\"timed_out\"} 1"), "{metrics}");
}

/// More requests in flight than the window (20 clients pipelining 200 each, a window of
/// 2000): sessions wait, nobody is late, nothing is undecidable.
#[test]
fn a_burst_beyond_the_window_waits_and_excludes_nobody() {
    assert!(have("redis-benchmark"), "redis-tools is not installed: run ./scripts/test.sh");
    let resh = Resh::start(&redis_config("lag_timeout_ms = 1000", "max_outstanding = 2000"));
    // Alongside, a burst in database 3: each of its requests ordered between SELECT 3 and
    // SELECT 0, interleaved with the others'.
    let other_db = Command::new("redis-benchmark")
        .args(["-p", &resh.clients.port().to_string(), "--dbnum", "3", "-t", "set,get,incr,lpush"])
        .args(["-n", "20000", "-c", "5", "-P", "50", "-q"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run redis-benchmark --dbnum 3");
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &resh.clients.port().to_string(),
            "-t",
            "set,get,incr,lpush",
            "-n",
            "60000",
            "-c",
            "20",
            "-P",
            "200",
            "-q",
        ])
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.to_lowercase().contains("error"), "{text}");
    let other_db = other_db.wait_with_output().expect("redis-benchmark --dbnum 3");
    let text = String::from_utf8_lossy(&other_db.stdout).to_string() + &String::from_utf8_lossy(&other_db.stderr);
    assert!(other_db.status.success() && !text.to_lowercase().contains("error"), "{text}");
    let status = resh.status();
    assert_eq!(status["requests"]["undecidable"], 0, "{status}");
    assert_eq!(total_faults(&resh), 0, "{status}");
    assert_identical(&resh);
}

/// A replica rebuilt from a replay log of more than 20 MiB catches up at its own pace while
/// writes go on: the service is not throttled meanwhile, the replica is not killed at the lag
/// timeout and replayed again and again (it used to be, whenever the replay took longer than
/// the lag timeout: here it holds a script that ran about a second the first time too), and it
/// votes again with the same dataset.
#[test]
fn a_replica_rebuilt_from_a_large_log_catches_up_without_stalling_the_service() {
    let resh = Resh::start(&redis_config("lag_timeout_ms = 300", "log_max_bytes = 134217728"));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    let value = "v".repeat(100 * 1024);
    for i in 0..400 {
        assert_eq!(c.call(&["SET", &format!("big:{i}"), &value]).expect("SET"), b"+OK\r\n");
    }
    // A script every replica runs for about a second: the service's own slowness, and part of
    // the history a rebuilt replica replays.
    let busy = "local i = 0 while i < 40000000 do i = i + 1 end return redis.call('SET', 'busy', i)";
    assert_eq!(c.call(&["EVAL", busy, "0"]).expect("EVAL"), b"+OK\r\n");
    assert_eq!(total_faults(&resh), 0, "a script every replica runs alike blames nobody: {}", resh.status());
    let pid = resh.replica("r2")["pid"].as_u64().expect("pid");
    resh_e2e::signal_pid(pid, libc::SIGKILL).expect("kill");
    // While r2 replays 40 MiB, the others serve, and take more large writes: no request waits
    // for r2.
    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + WAIT;
    let mut i = 0u64;
    while !(resh.replica("r2")["vote"]["state"] == "voting" && resh.replica("r2")["vote"]["incarnation"] == 2) {
        assert!(Instant::now() < deadline, "r2 did not vote again: {}", resh.status());
        let started = Instant::now();
        let set = c.call(&["SET", &format!("during:{}", i % 20), &value]).expect("SET");
        assert_eq!(String::from_utf8_lossy(&set), "+OK\r\n", "{}", report(&resh));
        let incr = c.call(&["INCR", "during"]).expect("INCR");
        assert_eq!(String::from_utf8_lossy(&incr), format!(":{}\r\n", i + 1), "{}", report(&resh));
        slowest = slowest.max(started.elapsed());
        i += 1;
    }
    println!("requests served while r2 was rebuilt: {}; the slowest pair took {slowest:?}", 2 * i);
    assert!(slowest < Duration::from_millis(1000), "the service stalled for {slowest:?} during the rebuild");
    std::thread::sleep(Duration::from_millis(500));
    assert!(resh.replica("r2")["vote"]["state"] == "voting", "r2 left the vote again: {}", resh.status());
    assert_eq!(resh.replica("r2")["restarts"], 1, "rebuilt more than once: {}", resh.status());
    assert_eq!(total_faults(&resh), 1, "only the kill is a fault: {}", resh.status());
    assert!(resh.log().contains("replica resynchronised"));
    assert_identical(&resh);
}

/// An address replica (resh cannot restart it) that is killed and comes back empty used to
/// stay out for good. It is now rebuilt by a checkpoint, voted among the other replicas, and
/// votes again with the same dataset, every type and time to live included.
#[test]
fn a_killed_address_replica_is_rebuilt_by_a_checkpoint_and_votes_again() {
    let mut servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start(free_port())).collect();
    let mut config = "listen = \"127.0.0.1:0\"\n[vote]\nmode = \"ordered\"\nprotocol = \"resp\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[supervisor]\nquarantine_ms = 200\n".to_string();
    for (i, s) in servers.iter().enumerate() {
        config.push_str(&format!("[[replica]]\nname = \"a{i}\"\naddress = \"127.0.0.1:{}\"\n", s.port));
    }
    let resh = Resh::start(&config);
    let mut c = RespClient::connect(resh.clients).expect("connect");
    for i in 0..200 {
        c.call(&["SET", &format!("s:{i}"), &format!("value {i}")]).expect("SET");
    }
    c.call(&["RPUSH", "list", "a", "b", "c"]).expect("RPUSH");
    c.call(&["HSET", "hash", "f1", "v1", "f2", "v2"]).expect("HSET");
    c.call(&["SADD", "set", "x", "y"]).expect("SADD");
    c.call(&["ZADD", "zset", "1.5", "m1", "-2", "m2"]).expect("ZADD");
    c.call(&["SET", "ttl", "soon", "EX", "1000"]).expect("SET EX");
    // Other databases are copied too, each into its own.
    for db in ["3", "7"] {
        assert_eq!(c.call(&["SELECT", db]).expect("SELECT"), b"+OK\r\n");
        c.call(&["SET", "s:1", &format!("in {db}")]).expect("SET");
        c.call(&["HSET", "hash", "f", db]).expect("HSET");
        c.call(&["SET", "ttl", db, "PX", "900000"]).expect("SET PX");
    }
    assert_eq!(c.call(&["SELECT", "0"]).expect("SELECT"), b"+OK\r\n");
    // a1 dies and comes back empty on the same port.
    let port = servers[1].port;
    servers[1].kill();
    servers[1] = RedisServer::start(port);
    assert_eq!(
        digest(SocketAddr::from(([127, 0, 0, 1], port))),
        b"+0000000000000000000000000000000000000000\r\n",
        "an empty dataset"
    );
    // Writes go on meanwhile.
    for i in 0..50 {
        c.call(&["INCR", &format!("during:{}", i % 5)]).expect("INCR");
    }
    resh.wait_until("a1 is rebuilt and votes", WAIT, |r| {
        r.replica("a1")["vote"]["state"] == "voting" && r.replica("a1")["vote"]["incarnation"].as_u64() > Some(1)
    });
    assert!(resh.log().contains("copying the state of"), "{}", resh.log());
    for i in 0..50 {
        c.call(&["INCR", &format!("after:{}", i % 5)]).expect("INCR");
    }
    // Reads of the copied databases are voted with a1 among the voters.
    assert_eq!(c.call(&["SELECT", "7"]).expect("SELECT"), b"+OK\r\n");
    assert_eq!(c.call(&["GET", "s:1"]).expect("GET"), b"$4\r\nin 7\r\n");
    let left = c.call(&["PTTL", "ttl"]).expect("PTTL");
    assert!(left.starts_with(b":") && left.len() > 4, "{}", String::from_utf8_lossy(&left));
    assert_eq!(total_faults(&resh), 1, "only the kill: {}", resh.status());
    assert_identical(&resh);
}

/// After the replay log overflowed, a restarted replica cannot be replayed from the start:
/// it is rebuilt by a checkpoint instead of staying out for good.
#[test]
fn after_the_log_overflowed_a_restarted_replica_is_rebuilt_by_a_checkpoint() {
    let resh = Resh::start(&redis_config("", "log_max_bytes = 4096"));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    for i in 0..300 {
        c.call(&["SET", &format!("k:{i}"), &format!("value number {i}")]).expect("SET");
    }
    let pid = resh.replica("r3")["pid"].as_u64().expect("pid");
    resh_e2e::signal_pid(pid, libc::SIGKILL).expect("kill");
    for i in 0..20 {
        c.call(&["INCR", &format!("during:{}", i % 3)]).expect("INCR");
    }
    resh.wait_until("r3 is rebuilt and votes", WAIT, |r| {
        r.replica("r3")["vote"]["state"] == "voting" && r.replica("r3")["vote"]["incarnation"] == 2
    });
    assert!(resh.log().contains("copying the state of"), "{}", resh.log());
    assert_identical(&resh);
}

/// Three clients pipeline 1000 reads of a 256 KiB value each and never read an answer. They
/// are no longer read once they hold their share, and cut off past it; resh's memory stays
/// bounded (it used to hold every answer: about 1.8 GB for such clients) and the service goes
/// on for everyone else. The vote timeout is long so that nothing else intervenes while the
/// replicas produce three quarters of a gigabyte of answers.
#[test]
fn clients_that_pipeline_and_never_read_hold_bounded_memory() {
    let resh = Resh::start(&redis_config("vote_timeout_ms = 60000", "max_session_bytes = 8388608"));
    let mut c = RespClient::connect(resh.clients).expect("connect");
    let value = "x".repeat(256 << 10);
    assert_eq!(c.call(&["SET", "big", &value]).expect("SET"), b"+OK\r\n");
    let (before, _) = resh.memory();
    let request: Vec<u8> = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(1000);
    let hogs: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(resh.clients).expect("connect");
            s.set_write_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let _ = s.write_all(&request);
            s
        })
        .collect();
    // Until the replicas answered all 3000 reads (resh takes them all in: they arrive at once
    // and the clients hold no answers yet). Each redis-server builds all of its answers before
    // it sends the first.
    let started = Instant::now();
    let released = |r: &Resh| r.status()["requests"]["released"].as_u64().unwrap_or(0);
    while released(&resh) < 3001 {
        assert!(started.elapsed() < WAIT, "the replicas never finished: {}", resh.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.call(&["GET", "missing"]).expect("GET"), b"$-1\r\n", "the service goes on");
    let (now, peak) = resh.memory();
    println!(
        "resh RSS before {} MiB, after 3000 answers of 256 KiB for clients that never read {} MiB, peak {} MiB ({:?})",
        before >> 20,
        now >> 20,
        peak >> 20,
        started.elapsed()
    );
    assert!(peak < 300 << 20, "resh's memory was not bounded: peak {} MiB", peak >> 20);
    drop(hogs);
    assert_eq!(total_faults(&resh), 0, "{}", resh.status());
    assert!(resh.log().contains("client does not read its answers"), "{}", resh.log());
}

/// Out of file descriptors is resh's own limit: clients wait or are refused, and no replica
/// is blamed or restarted (it used to restart healthy replicas and reset every session).
#[test]
fn running_out_of_file_descriptors_blames_no_replica() {
    let echo = resh_e2e::binary("resh-echo");
    let mut config =
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[session]\nconnect_timeout_ms = 3000\n"
            .to_string();
    for name in ["a", "b", "c"] {
        config.push_str(&format!(
            "[[replica]]\nname = \"{name}\"\ncommand = [{:?}, \"--port\", \"{{port}}\"]\n",
            echo.display().to_string()
        ));
    }
    // Each stream session costs resh four descriptors (the client, three replicas).
    let resh = Resh::start_with_limit(&config, Some("-n 80"));
    let clients: Vec<TcpStream> = (0..60).filter_map(|_| TcpStream::connect(resh.clients).ok()).collect();
    for mut c in clients.iter() {
        let _ = c.write_all(b"hello\n");
    }
    std::thread::sleep(Duration::from_secs(2));
    let status = resh.status();
    assert_eq!(total_faults(&resh), 0, "{status}");
    for name in ["a", "b", "c"] {
        assert_eq!(resh.replica(name)["incarnation"], 1, "{name} was restarted: {status}");
    }
    assert!(
        resh.log().contains("out of file descriptors"),
        "resh says why: {}",
        resh.log().lines().filter(|l| l.contains("WARN")).take(5).collect::<Vec<_>>().join("\n")
    );
    drop(clients);
    std::thread::sleep(Duration::from_millis(500));
    let got = resh_e2e::exchange(resh.clients, b"after the storm\n");
    assert_eq!(got.received, b"after the storm\n", "{:?}", got.error);
}

/// resh raises its soft limit on open files to the hard limit at start.
#[test]
fn the_soft_limit_on_open_files_is_raised_to_the_hard_limit() {
    let echo = resh_e2e::binary("resh-echo");
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[replica]]\nname = \"a\"\ncommand = [{:?}, \"--port\", \"{{port}}\"]\n",
        echo.display().to_string()
    );
    let resh = Resh::start_with_limit(&config, Some("-Sn 256"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", resh.pid())).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a line for open files");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft limit not raised: {line}");
}
