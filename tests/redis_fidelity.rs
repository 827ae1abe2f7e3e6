//! Redis fidelity of ordered mode, end to end: real clients (redis-py from PyPI, redis-cli)
//! through resh in front of three redis-server replicas, each answer compared with one
//! redis-server's directly, every replica's dataset compared afterwards, and no replica blamed.
//! The cases: unordered replies (sets, hashes, the keyspace, the command table), scans,
//! pipelines, a client library's connection handshake, introspection, `TIME`, and the commands
//! ordered mode refuses (with their reasons).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use resh_e2e::{free_port, have, kv_config, redis_ordered_config, workspace, RedisServer, Resh, RespClient};

const WAIT: Duration = Duration::from_secs(60);

/// Ordered mode with three redis-server replicas; `ordered` goes in the `[ordered]` table.
fn redis_config(ordered: &str) -> String {
    redis_ordered_config("", ordered)
}

/// The Python of the virtual environment `scripts/test.sh` makes, with redis-py in it.
fn python() -> PathBuf {
    let python = workspace().join("target/redis-py/bin/python");
    assert!(python.is_file(), "redis-py is not installed: run ./scripts/test.sh, which installs it in target/redis-py");
    python
}

/// Runs the redis-py workload against resh and against a redis-server of its own, directly.
fn redis_py_workload(resh: &Resh, extra: &[&str]) {
    let direct = RedisServer::start(free_port());
    let out = Command::new(python())
        .arg(workspace().join("tests/clients/redis_py_workload.py"))
        .args([resh.clients.port().to_string(), direct.port.to_string()])
        .args(extra)
        .output()
        .expect("run the redis-py workload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the redis-py workload failed:\n{stdout}\n{stderr}\nresh's log:\n{}", resh.log());
    assert!(stdout.contains(" 0 differ"), "{stdout}");
    println!("redis-py workload: {}", stdout.trim());
}

fn replica_addrs(resh: &Resh) -> Vec<(String, SocketAddr)> {
    resh.status()["replicas"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| Some((r["name"].as_str()?.to_string(), r["addr"].as_str()?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Every replica votes, none was blamed, and all hold the same dataset (`DEBUG DIGEST`).
fn assert_identical_and_unblamed(resh: &Resh) {
    resh.wait_until("every replica votes", WAIT, |r| {
        r.status()["replicas"].as_array().is_some_and(|rs| rs.iter().all(|x| x["vote"]["state"] == "voting"))
    });
    let status = resh.status();
    for replica in status["replicas"].as_array().expect("replicas") {
        assert_eq!(resh_e2e::fault_total(replica), 0, "a healthy replica was blamed: {replica}");
    }
    let digests: Vec<(String, Vec<u8>)> = replica_addrs(resh)
        .into_iter()
        .map(|(name, addr)| {
            let mut c = RespClient::connect(addr).expect("connect to a replica directly");
            (name, c.call(&["DEBUG", "DIGEST"]).expect("DEBUG DIGEST"))
        })
        .collect();
    assert_eq!(digests.len(), 3);
    for (name, digest) in &digests[1..] {
        assert_eq!(digest, &digests[0].1, "replica {name} differs from {}", digests[0].0);
    }
}

/// redis-py's own usage (its connection handshake, sets, hashes, the keyspace, scans,
/// pipelines, INFO, TIME, COMMAND) answers through resh as redis-server does directly, and
/// the three replicas end identical with none blamed: each lists a set in its own hash order.
#[test]
fn redis_py_works_through_resh_as_against_redis_server() {
    let resh = Resh::start(&redis_config(""));
    redis_py_workload(&resh, &[]);
    assert_identical_and_unblamed(&resh);
}

/// The same client usage, where the commands exist, against the demo's three diverse versions.
#[test]
fn redis_py_works_through_resh_with_diverse_versions() {
    let resh = Resh::start(&kv_config(&[], ""));
    redis_py_workload(&resh, &["--diverse"]);
    let status = resh.status();
    for replica in status["replicas"].as_array().expect("replicas") {
        assert_eq!(resh_e2e::fault_total(replica), 0, "a healthy version was blamed: {replica}");
    }
}

/// redis-cli's own scan (`--scan`) sees every key once; what acts on every replica at once
/// is refused with the reason, and every replica still runs.
#[test]
fn redis_cli_scans_and_unsafe_commands_are_refused() {
    assert!(have("redis-cli"), "redis-tools is not installed: run ./scripts/test.sh, which installs it");
    let resh = Resh::start(&redis_config(""));
    let port = resh.clients.port().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli").args(["-p", &port]).args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut c = RespClient::connect(resh.clients).expect("connect");
    for i in 0..500 {
        c.call(&["SET", &format!("user:{i}"), "x"]).expect("SET");
    }
    c.call(&["SADD", "other", "a"]).expect("SADD");
    let scanned = cli(&["--scan", "--pattern", "user:*"]);
    let mut keys: Vec<&str> = scanned.lines().collect();
    assert_eq!(keys.len(), 500, "every key once");
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 500, "no key twice");
    assert_eq!(cli(&["SCARD", "other"]), "1");
    for (args, why) in [
        (&["SHUTDOWN"][..], "ordered.allow_unsafe"),
        (&["REPLICAOF", "127.0.0.1", "1"][..], "ordered.allow_unsafe"),
        (&["CONFIG", "SET", "maxmemory", "1"][..], "ordered.allow_unsafe"),
        (&["DEBUG", "SEGFAULT"][..], "ordered.allow_unsafe"),
        (&["MONITOR"][..], "take over the connection"),
    ] {
        let answer = c.call(args).expect("an answer");
        assert!(String::from_utf8_lossy(&answer).contains(why), "{args:?}: {}", String::from_utf8_lossy(&answer));
    }
    // A transaction, pipelined, and one typed answer by answer (as redis-cli does).
    let answers = c
        .pipeline(&[&["MULTI"], &["SET", "tx", "1"], &["DEL", "other"], &["EXEC"], &["EXISTS", "tx", "other"]])
        .expect("answers");
    let answers: Vec<String> = answers.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    assert_eq!(answers, ["+OK\r\n", "+QUEUED\r\n", "+QUEUED\r\n", "*2\r\n+OK\r\n:1\r\n", ":1\r\n"]);
    assert_eq!(c.call(&["MULTI"]).expect("MULTI"), b"+OK\r\n");
    assert_eq!(c.call(&["INCR", "typed"]).expect("INCR"), b"+QUEUED\r\n");
    assert_eq!(cli(&["SET", "typed", "41"]), "OK", "another client, while the transaction is queued");
    assert_eq!(c.call(&["EXEC"]).expect("EXEC"), b"*1\r\n:42\r\n");
    assert_eq!(c.call(&["DBSIZE"]).expect("DBSIZE"), b":502\r\n");
    assert_identical_and_unblamed(&resh);
}

/// Transactions of several sessions at once, while replicas are crashed and rebuilt (with a
/// small log, by checkpoint): each runs whole, with nothing of another session inside it (every
/// EXEC sees its two counters equal), and every replica ends identical.
#[test]
fn transactions_stay_whole_across_sessions_and_rebuilds() {
    let resh = Resh::start(&redis_config("log_max_bytes = 4096"));
    const WRITERS: usize = 3;
    // Bounds: the writers stop when the rebuilds are done, or after this many rounds.
    const MAX_ROUNDS: usize = 20_000;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addr, stop) = (resh.clients, std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut c = RespClient::connect(addr).expect("connect");
                let mut done = 0u64;
                for i in 0..MAX_ROUNDS {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let value = i.to_string();
                    let key = format!("w{w}");
                    let unit: [&[&str]; 5] =
                        [&["MULTI"], &["INCR", "a"], &["SET", &key, &value], &["INCR", "b"], &["EXEC"]];
                    let answers = c.pipeline(&unit).expect("answers");
                    let exec = String::from_utf8_lossy(&answers[4]).into_owned();
                    if exec.starts_with('-') {
                        // resh's own error (no quorum while replicas restart): nothing ran.
                        assert!(exec.contains("resh"), "{exec}");
                        continue;
                    }
                    let parts: Vec<&str> = exec.split("\r\n").collect();
                    assert_eq!(parts[0], "*3", "{exec}");
                    assert_eq!(parts[1], parts[3], "a and b differ inside one EXEC: {exec}");
                    done += 1;
                }
                done
            })
        })
        .collect();
    for victim in ["r2", "r3"] {
        std::thread::sleep(Duration::from_millis(200));
        let pid = resh.replica(victim)["pid"].as_u64().expect("pid");
        resh_e2e::signal_pid(pid, libc::SIGKILL).expect("kill");
        resh.wait_until("the killed replica votes again", WAIT, |r| {
            let x = r.replica(victim);
            x["vote"]["state"] == "voting" && x["vote"]["incarnation"] == 2
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done: u64 = writers.into_iter().map(|w| w.join().expect("a writer")).sum();
    assert!(done > 0);
    let mut c = RespClient::connect(resh.clients).expect("connect");
    let expected = format!("${}\r\n{done}\r\n", done.to_string().len()).into_bytes();
    assert_eq!(c.call(&["GET", "a"]).expect("GET"), expected);
    assert_eq!(c.call(&["GET", "b"]).expect("GET"), expected);
    let digests: Vec<Vec<u8>> = replica_addrs(&resh)
        .into_iter()
        .map(|(_, addr)| {
            RespClient::connect(addr).and_then(|mut c| c.call(&["DEBUG", "DIGEST"])).expect("DEBUG DIGEST")
        })
        .collect();
    assert!(digests.iter().all(|d| d == &digests[0]), "the replicas differ: {digests:?}\n{}", resh.log());
    let log = resh.log();
    println!(
        "{done} transactions; rebuilds: {}; by checkpoint: {}",
        log.matches("replica resynchronised").count(),
        log.matches("copying the state").count()
    );
}

/// Sends `bytes` on a connection of its own, closes the sending side, and reads what comes
/// back until the server closes (or two seconds pass).
fn exchange_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    stream.write_all(bytes).expect("send");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// Protocol edge cases answer through resh byte for byte as redis-server answers them directly:
/// inline quoting and escapes, negative and empty multibulk counts followed by more requests,
/// malformed lengths and types, and the wording of every protocol error.
#[test]
fn protocol_edge_cases_answer_as_redis_server_does() {
    let resh = Resh::start(&redis_config(""));
    let direct = RedisServer::start(free_port());
    let direct_addr: SocketAddr = format!("127.0.0.1:{}", direct.port).parse().expect("address");
    let cases: &[&[u8]] = &[
        b"*-10\r\nPING\r\n",
        b"*0\r\n*-1\r\nECHO x\r\n",
        b"\r\n\r\nPING\r\n",
        b"PING\n",
        b"SET q \"a\\x41\\n\\t\\\\\"\r\nGET q\r\nSTRLEN q\r\n",
        b"SET q 'it\\'s'\r\nGET q\r\n",
        b"SET q \"abc\r\n",
        b"SET q 'a'b\r\n",
        b"SET q \"a\"b\r\n",
        b"ECHO \"\\xZZ\"\r\n",
        b"*1\r\n$0\r\n\r\n",
        b"*2\r\n$4\r\nECHO\r\n:5\r\n",
        b"*1\r\n*1\r\n",
        b"*abc\r\n",
        b"*1\r\n$abc\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$536870913\r\n",
        b"*3000000000\r\n",
        b"$5\r\nworld\r\n",
        b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\nPING\r\n",
        b"  ECHO   spaced   \r\n",
        b"*1\r\n$3\r\nPINGX\r\n",
        b"*1\r\n$4\r\nPING",
        // What resh serves itself answers malformed forms as Redis does.
        b"XREAD BLOCK 1 s 0\r\n",
        b"XREAD BLOCK 1\r\n",
        b"SELECT 99999999999\r\nSELECT -1\r\nSELECT x\r\nSELECT 0 0\r\n",
        b"PTTL\r\nTTL a b\r\nTTL missing\r\n",
        b"PUBSUB\r\nPUBSUB foo\r\nPUBSUB CHANNELS a b\r\nPUBSUB NUMPAT x\r\nPUBSUB HELP\r\nPUBSUB HELP x\r\n",
        b"PUBSUB shardchannels a b\r\npubsub channels\r\n",
        b"PUBSUB CHANNELS\r\nPUBSUB NUMSUB a b\r\nPUBSUB NUMPAT\r\nPUBSUB SHARDCHANNELS\r\nPUBSUB SHARDNUMSUB a\r\n",
    ];
    let long_inline = vec![b'A'; 70_000];
    let long_count = [b"*".as_slice(), &[b'1'; 40_000]].concat();
    let mut differ = Vec::new();
    for case in cases.iter().copied().chain([long_inline.as_slice(), long_count.as_slice()]) {
        let through = exchange_raw(resh.clients, case);
        let directly = exchange_raw(direct_addr, case);
        if through != directly {
            differ.push(format!(
                "{:?}: through resh {:?}, directly {:?}",
                String::from_utf8_lossy(case),
                String::from_utf8_lossy(&through),
                String::from_utf8_lossy(&directly)
            ));
        }
    }
    assert!(differ.is_empty(), "{} of {} cases differ:\n{}", differ.len(), cases.len(), differ.join("\n"));
    assert_identical_and_unblamed(&resh);
}

/// What resh now serves itself, attacked: a subscriber that never reads while a publisher
/// floods it is disconnected (resh's memory stays bounded) and other subscribers still get
/// everything; many clients blocked at once time out and the service answers meanwhile; a
/// transaction larger than a frame is aborted and the session goes on.
#[test]
fn subscribers_blocked_clients_and_transactions_are_bounded() {
    use std::io::{Read, Write};
    let resh = Resh::start(&redis_config("max_session_bytes = 1048576\nmax_frame_bytes = 1048576"));
    // A subscriber that never reads, and one that does.
    let mut stuck = std::net::TcpStream::connect(resh.clients).expect("connect");
    stuck.write_all(&RespClient::encode(&["SUBSCRIBE", "flood"])).expect("subscribe");
    let mut reader = RespClient::connect(resh.clients).expect("connect");
    reader.call(&["SUBSCRIBE", "flood"]).expect("SUBSCRIBE");
    // The reader takes each message before the next is published (it must not be the slow one).
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let counting = std::thread::spawn(move || {
        for _ in 0..300 {
            let message = reader.reply().expect("a message");
            assert!(message.starts_with(b"*3\r\n$7\r\nmessage\r\n"), "{}", String::from_utf8_lossy(&message));
            if got_tx.send(()).is_err() {
                break;
            }
        }
    });
    let mut publisher = RespClient::connect(resh.clients).expect("connect");
    let payload = "p".repeat(64 * 1024);
    let mut receivers = Vec::new();
    for i in 0..300 {
        let answer = publisher.call(&["PUBLISH", "flood", &payload]).expect("PUBLISH");
        receivers.push(String::from_utf8_lossy(&answer).into_owned());
        got_rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("the reading subscriber did not get message {i}"));
    }
    counting.join().expect("the reading subscriber");
    assert_eq!(receivers.first().map(String::as_str), Some(":2\r\n"));
    assert_eq!(receivers.last().map(String::as_str), Some(":1\r\n"), "the stuck subscriber was dropped");
    // Its connection was cut, not left to grow (about 19 MiB were published to it).
    stuck.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut sink = vec![0u8; 1 << 20];
    let mut ended = false;
    for _ in 0..100 {
        match stuck.read(&mut sink) {
            Ok(0) | Err(_) => {
                ended = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(ended, "the subscriber that never read is disconnected");
    let (_, peak) = resh.memory();
    assert!(peak < 200 << 20, "resh's memory peaked at {} MiB", peak >> 20);
    // Many clients blocked at once: they all time out; the service answers meanwhile.
    let blocked: Vec<_> = (0..100)
        .map(|i| {
            let addr = resh.clients;
            std::thread::spawn(move || {
                let mut c = RespClient::connect(addr).expect("connect");
                c.call(&["BLPOP", &format!("none:{i}"), "0.5"]).expect("BLPOP")
            })
        })
        .collect();
    let mut c = RespClient::connect(resh.clients).expect("connect");
    let started = std::time::Instant::now();
    for i in 0..50 {
        assert_eq!(c.call(&["SET", "k", &i.to_string()]).expect("SET"), b"+OK\r\n");
    }
    let busy = started.elapsed();
    for b in blocked {
        assert_eq!(b.join().expect("a blocked client"), b"*-1\r\n");
    }
    assert!(busy < Duration::from_secs(2), "50 SETs took {busy:?} while 100 clients were blocked");
    // A transaction larger than a frame: aborted, and the session goes on.
    assert_eq!(c.call(&["MULTI"]).expect("MULTI"), b"+OK\r\n");
    let big = "b".repeat(400 * 1024);
    let mut aborted = false;
    for _ in 0..4 {
        let answer = c.call(&["SET", "big", &big]).expect("SET");
        aborted |= answer.starts_with(b"-ERR resh: the transaction would be larger");
    }
    assert!(aborted);
    assert!(c.call(&["EXEC"]).expect("EXEC").starts_with(b"-EXECABORT"));
    assert_eq!(c.call(&["EXISTS", "big"]).expect("EXISTS"), b":0\r\n");
    assert_identical_and_unblamed(&resh);
}
