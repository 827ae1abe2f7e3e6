//! End-to-end tests of the edges of stream mode: half-close, large pipelined transfers, slow
//! and non-reading clients, idle sessions, a replica that stops taking input, many short
//! sessions, and clients that reset. They pin the *observable* behaviour of the stream session
//! (what a client gets, when its connection ends, and what resh reports), so that a rewrite of
//! the session can be checked against them.
//!
//! Every wait is bounded: sockets have read (and write) timeouts, and loops have deadlines.
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use resh_e2e::{binary, echo_config, exchange, payload, Resh};

const WAIT: Duration = Duration::from_secs(20);
/// The read timeout of the clients' sockets: a read that waits longer fails the test.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration with one `resh-echo` replica `only` (N=1: no voting), `extra` TOML (which
/// must start with a table header) placed before the replica.
fn one_config(args: &[&str], extra: &str) -> String {
    let echo = binary("resh-echo").display().to_string();
    let mut argv = vec![format!("{echo:?}"), "\"--port\"".to_string(), "\"{port}\"".to_string()];
    argv.extend(args.iter().map(|a| format!("{a:?}")));
    format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}\n[[replica]]\nname = \"only\"\ncommand = [{}]\n",
        argv.join(", ")
    )
}

/// Three honest replicas, with `extra` TOML.
fn three_config(extra: &str) -> String {
    echo_config([&[], &[], &[]], extra)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to resh");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
    stream
}

/// Reads exactly `len` bytes; a timeout, an error or an early end fails with what arrived.
fn read_exact_bounded(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    let mut at = 0;
    while at < len {
        match stream.read(&mut got[at..]) {
            Ok(0) => panic!("connection ended after {at} of {len} bytes"),
            Ok(n) => at += n,
            Err(e) => panic!("read failed after {at} of {len} bytes: {e}"),
        }
    }
    got
}

/// Reads until the peer ends the stream; returns the bytes and how it ended (`Ok` for a normal
/// end of stream, the error for a reset or a timeout).
fn read_to_end_bounded(stream: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// Whether `e` is what a closed or reset connection gives (as opposed to a timeout).
fn is_closed(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted)
}

/// How many faults of any kind `/status` counts for replica `name`.
fn all_faults(resh: &Resh, name: &str) -> u64 {
    resh_e2e::fault_total(&resh.replica(name))
}

fn active_sessions(resh: &Resh) -> u64 {
    resh.status()["sessions"]["active"].as_u64().expect("sessions.active")
}

/// Asserts that every replica is ready and none was ever reported with a fault.
fn assert_no_faults(resh: &Resh, names: &[&str]) {
    for name in names {
        let r = resh.replica(name);
        assert_eq!(r["state"], "ready", "replica {name}: {r}");
        assert_eq!(all_faults(resh, name), 0, "replica {name} has faults: {}\nlog:\n{}", resh.status(), resh.log());
    }
}

/// Waits until the one session of the test ended, and asserts that it was `agreed` and that no
/// replica was ever reported with a fault (`why`: what a failure would mean).
fn assert_one_session_agreed(resh: &Resh, why: &str) {
    resh.wait_until("the session ended", WAIT, |r| active_sessions(r) == 0);
    let status = resh.status();
    assert_eq!(status["verdicts"]["agreed"], 1, "{why}: {status}\nlog:\n{}", resh.log());
    assert_no_faults(resh, &["a", "b", "c"]);
}

/// A client that sends `data`, half-closes, and only then reads: it must get every byte back
/// followed by a normal end of stream (not a reset), and the session ends `agreed`.
fn half_close_then_read(resh: &Resh, data: &[u8], replicas: &[&str]) {
    let mut client = connect(resh.clients);
    client.write_all(data).expect("send");
    client.shutdown(Shutdown::Write).expect("half-close");
    let (got, end) = read_to_end_bounded(&mut client);
    assert!(end.is_ok(), "the answer must end with a FIN, got {end:?} after {} bytes", got.len());
    assert_eq!(got.len(), data.len(), "length of the answer");
    assert!(got == data, "the client got wrong bytes");
    // The end is final: reading again still gives end of stream.
    let mut byte = [0u8; 1];
    assert_eq!(client.read(&mut byte).expect("read after the end"), 0);
    resh.wait_until("the session ended", WAIT, |r| active_sessions(r) == 0);
    assert_no_faults(resh, replicas);
}

#[test]
fn half_close_gets_every_byte_then_eof_with_three_replicas() {
    let resh = Resh::start(&three_config(""));
    half_close_then_read(&resh, &payload(100_000, 11), &["a", "b", "c"]);
    half_close_then_read(&resh, b"x", &["a", "b", "c"]);
    // An empty session: half-close at once, the answer is empty and ends normally.
    half_close_then_read(&resh, b"", &["a", "b", "c"]);
    let status = resh.status();
    assert_eq!(status["verdicts"]["agreed"], 3, "{status}");
    assert_eq!(status["sessions"]["total"], 3, "{status}");
}

#[test]
fn half_close_gets_every_byte_then_eof_with_one_replica() {
    let resh = Resh::start(&one_config(&[], ""));
    half_close_then_read(&resh, &payload(100_000, 12), &["only"]);
    half_close_then_read(&resh, b"x", &["only"]);
    half_close_then_read(&resh, b"", &["only"]);
    let status = resh.status();
    assert_eq!(status["verdicts"]["agreed"], 3, "{status}");
}

/// A writer thread sends `total` bytes in chunks of varying size while the reader reads them
/// concurrently; the whole answer must arrive *before* the client half-closes (resh streams,
/// it does not wait for the end of the input), and then the end of stream.
fn pipelined(resh: &Resh, total: usize, seed: u64) {
    let data = payload(total, seed);
    let mut reader = connect(resh.clients);
    let mut writer = reader.try_clone().expect("clone");
    let sent = data.clone();
    let started = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let sender = thread::spawn(move || -> io::Result<()> {
        let mut at = 0;
        let mut step = seed as usize;
        while at < sent.len() {
            step = step.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let len = (1 + (step >> 33) % 100_000).min(sent.len() - at);
            writer.write_all(&sent[at..at + len])?;
            at += len;
        }
        // Half-close only once the reader has the whole answer.
        let _ = done_rx.recv_timeout(IO_TIMEOUT);
        writer.shutdown(Shutdown::Write)
    });
    let got = read_exact_bounded(&mut reader, total);
    let _ = done_tx.send(());
    assert!(got == data, "the client got wrong bytes");
    let (rest, end) = read_to_end_bounded(&mut reader);
    assert!(end.is_ok() && rest.is_empty(), "after the half-close: {} more bytes, {end:?}", rest.len());
    sender.join().expect("sender thread").expect("send");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[test]
fn four_mib_pipelined_both_ways_with_three_replicas() {
    let resh = Resh::start(&three_config(""));
    pipelined(&resh, 4 << 20, 21);
    assert_one_session_agreed(&resh, "a replica was blamed");
    let status = resh.status();
    assert_eq!(status["bytes"]["from_clients"], 4 << 20, "{status}");
    assert_eq!(status["bytes"]["to_clients"], 4 << 20, "{status}");
}

/// The same with 16 MiB, several times what the sockets between resh and the replicas buffer:
/// the replicas drift apart by scheduling alone, and one that is merely behind must not be
/// reported late (`max_lag_bytes`, 1 MiB by default, is a flow-control window: resh reads the
/// others no further ahead). Before that window, an honest replica was reported late within
/// milliseconds in every run.
#[test]
fn sixteen_mib_pipelined_with_default_limits_blames_no_replica() {
    let resh = Resh::start(&three_config(""));
    pipelined(&resh, 16 << 20, 23);
    assert_one_session_agreed(&resh, "an honest replica was blamed");
}

#[test]
fn four_mib_pipelined_both_ways_with_one_replica() {
    let resh = Resh::start(&one_config(&[], ""));
    pipelined(&resh, 4 << 20, 22);
    resh.wait_until("the session is counted as agreed", WAIT, |r| r.status()["verdicts"]["agreed"] == 1);
    assert_no_faults(&resh, &["only"]);
}

/// Timeouts short enough that a vote clock running while the client does not read would make
/// the replicas look late (or the vote undecidable) during the client's 1.5 s pause.
const SHORT_VOTE: &str = "[vote]\nvote_timeout_ms = 500\nlag_timeout_ms = 500\nmax_lag_bytes = 268435456\n";

/// Sends `size` bytes (from a thread: a large input may not fit into the sockets' buffers while
/// the client reads nothing), sleeps 1.5 s without reading, then reads: every byte must arrive,
/// the session must end normally, and no replica may be blamed for the client's slowness.
fn slow_client(size: usize, seed: u64) {
    let resh = Resh::start(&three_config(SHORT_VOTE));
    let data = payload(size, seed);
    let mut client = connect(resh.clients);
    let mut writer = client.try_clone().expect("clone");
    let sent = data.clone();
    let sender = thread::spawn(move || writer.write_all(&sent));
    thread::sleep(Duration::from_millis(1500));
    let got = read_exact_bounded(&mut client, data.len());
    assert!(got == data, "the client got wrong bytes");
    sender.join().expect("sender thread").expect("send");
    client.shutdown(Shutdown::Write).expect("half-close");
    let (rest, end) = read_to_end_bounded(&mut client);
    assert!(end.is_ok() && rest.is_empty(), "after the half-close: {} more bytes, {end:?}", rest.len());
    assert_one_session_agreed(&resh, "a slow client made resh blame a replica");
}

/// 1 MiB: on Linux with default socket buffer autotuning (about 4 MiB between resh and a
/// loopback client), all of the answer fits into the kernel's buffers, so resh hardly has to
/// wait for the client; still, nothing may be lost or blamed.
#[test]
fn a_slow_client_does_not_make_replicas_late() {
    slow_client(1 << 20, 31);
}

/// 8 MiB: more than the buffers toward the client hold, so the session really waits on the
/// client for most of the 1.5 s pause, with replicas behind the released output and output
/// waiting for its quorum; the vote clock must stand still meanwhile. (Checked: with the pause
/// not subtracted from the voter's clock, this fails with `late` replicas or a reset.) Still
/// little enough that the replicas' input does not back up for long (see the next test).
#[test]
fn a_slow_client_with_output_backed_up_keeps_the_vote_clock_still() {
    slow_client(8 << 20, 33);
}

/// 32 MiB: the pause backs up output *and* input: the replicas stop taking input because resh
/// does not read their output. That is the client's doing, not theirs, so the input-stall timer
/// (`lag_timeout_ms`) must not run meanwhile. (When it did, two replicas were reported `late`,
/// "0 bytes behind", and the session was reset as undecidable.)
#[test]
fn a_slow_client_with_much_in_flight_does_not_make_replicas_late() {
    slow_client(32 << 20, 32);
}

#[test]
fn a_client_that_never_reads_is_closed_after_the_idle_timeout() {
    // The lag timeout is well above the idle timeout, so that the client is cut off by the idle
    // timeout before the replicas' stalled input could be blamed on them.
    let resh = Resh::start(&three_config(
        "[vote]\nlag_timeout_ms = 5000\nmax_lag_bytes = 268435456\n[session]\nidle_timeout_ms = 1000\n",
    ));
    let client = connect(resh.clients);
    let mut writer = client.try_clone().expect("clone");
    writer.set_write_timeout(Some(Duration::from_secs(15))).expect("write timeout");
    let started = Instant::now();
    // The client writes as much as it can and never reads: resh's output to it piles up.
    let sender = thread::spawn(move || -> (u64, io::Error) {
        let chunk = payload(64 * 1024, 41);
        let mut sent = 0u64;
        loop {
            match writer.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(e) => return (sent, e),
            }
        }
    });
    resh.wait_until("the session is closed", Duration::from_secs(8), |r| {
        r.status()["sessions"]["total"] == 1 && active_sessions(r) == 0
    });
    let closed_after = started.elapsed();
    let (sent, error) = sender.join().expect("sender thread");
    let failed_after = started.elapsed();
    assert!(is_closed(&error), "the client's writes must fail with a closed connection, not {error:?}");
    assert!(sent > 1 << 20, "the client only got {sent} bytes in: the test did not fill resh's buffers");
    // The idle timeout counts from when resh could no longer write to the client, which is after
    // the client connected: not before 1 s, and not long after.
    assert!(closed_after >= Duration::from_millis(1000), "closed after {closed_after:?}, before the idle timeout");
    assert!(failed_after < Duration::from_secs(6), "the client noticed the close only after {failed_after:?}");
    drop(client);
    // The client's behaviour is no replica's fault, and resh serves the next client.
    assert_no_faults(&resh, &["a", "b", "c"]);
    assert_eq!(resh.status()["verdicts"]["undecidable"], 0, "{}", resh.status());
    let data = payload(50_000, 42);
    let next = exchange(resh.clients, &data);
    assert!(next.error.is_none() && next.received == data, "the next client: {:?}", next.error);
}

/// Waits for the end of `client`'s stream: returns how long after `from` it ended, and how.
fn time_to_close(client: &mut TcpStream, from: Instant) -> (Duration, io::Result<Vec<u8>>) {
    let (got, end) = read_to_end_bounded(client);
    (from.elapsed(), end.map(|()| got))
}

#[test]
fn a_silent_client_is_closed_after_the_idle_timeout() {
    let resh = Resh::start(&three_config("[session]\nidle_timeout_ms = 1000\n"));
    let started = Instant::now();
    let mut client = connect(resh.clients);
    let (after, end) = time_to_close(&mut client, started);
    let got = end.unwrap_or_else(|e| panic!("an idle session must end with a FIN, got {e} after {after:?}"));
    assert!(got.is_empty(), "an idle client got {} bytes", got.len());
    assert!(after >= Duration::from_millis(950), "closed after {after:?}, before the idle timeout");
    assert!(after < Duration::from_millis(4000), "closed only after {after:?}");
    resh.wait_until("the session ended", WAIT, |r| active_sessions(r) == 0);
    assert_no_faults(&resh, &["a", "b", "c"]);
    assert_eq!(resh.status()["verdicts"]["undecidable"], 0);
    // resh goes on serving.
    let next = exchange(resh.clients, b"after the idle one");
    assert!(next.error.is_none() && next.received == b"after the idle one", "{:?}", next.error);
}

#[test]
fn traffic_keeps_a_session_from_the_idle_timeout() {
    let resh = Resh::start(&three_config("[session]\nidle_timeout_ms = 1000\n"));
    let mut client = connect(resh.clients);
    client.set_nodelay(true).expect("nodelay");
    // 2.4 s of a small request every 300 ms: well past the idle timeout, but never idle.
    for i in 0..8u64 {
        let request = payload(100, 50 + i);
        client.write_all(&request).expect("send while active");
        let got = read_exact_bounded(&mut client, request.len());
        assert!(got == request, "wrong answer to request {i}");
        thread::sleep(Duration::from_millis(300));
    }
    // Then silence: the session is closed about a second after the last traffic.
    let quiet = Instant::now();
    let (after, end) = time_to_close(&mut client, quiet);
    let got = end.unwrap_or_else(|e| panic!("an idle session must end with a FIN, got {e} after {after:?}"));
    assert!(got.is_empty());
    // 300 ms of the timeout already ran during the last sleep.
    assert!(after >= Duration::from_millis(600), "closed {after:?} after the last traffic");
    assert!(after < Duration::from_millis(4000), "closed only {after:?} after the last traffic");
    resh.wait_until("the session ended", WAIT, |r| active_sessions(r) == 0);
    assert_no_faults(&resh, &["a", "b", "c"]);
}

/// `--stall-at 1000`: after 1000 bytes of output, `a` neither reads nor writes but keeps its
/// connection open, while the client streams `total` bytes. The client must get all of them
/// from `b` and `c`, and only `a` is reported, `late`.
fn stalled_replica(extra: &str, total: usize, seed: u64) {
    let resh = Resh::start(&echo_config([&["--stall-at", "1000"], &[], &[]], extra));
    let started = Instant::now();
    pipelined(&resh, total, seed);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    resh.wait_until("the session ended", WAIT, |r| active_sessions(r) == 0);
    let status = resh.status();
    assert_eq!(status["verdicts"]["masked"], 1, "{status}");
    assert_eq!(resh.faults("a", "late"), 1, "{status}");
    assert_eq!(all_faults(&resh, "a"), 1, "{status}");
    for name in ["b", "c"] {
        assert_eq!(all_faults(&resh, name), 0, "replica {name}: {status}");
    }
    let fault = &status["recent_faults"][0];
    assert_eq!(fault["replica"], "a", "{status}");
    assert_eq!(fault["kind"], "late", "{status}");
    assert_eq!(fault["offset"], 1000, "{status}");
}

/// With the default `max_lag_bytes`, `a` is late as soon as it is 1 MiB behind.
#[test]
fn a_replica_that_stops_taking_input_is_late_and_the_client_gets_everything() {
    stalled_replica("[vote]\nlag_timeout_ms = 300\n", 4 << 20, 61);
}

/// Without the byte limit, only the timers can find `a`: it is behind the released output, and
/// (16 MiB is more than its sockets hold) it stops taking input; either way `late`, once.
#[test]
fn a_replica_that_stops_taking_input_is_found_by_the_lag_timeout() {
    stalled_replica("[vote]\nlag_timeout_ms = 300\nmax_lag_bytes = 268435456\n", 16 << 20, 62);
}

#[test]
fn three_hundred_short_sessions_in_a_row_with_one_replica() {
    let resh = Resh::start(&one_config(&[], ""));
    let resh_pid = resh_pid(&resh);
    // A first session, so that whatever resh sets up once is set up before counting.
    let warm = exchange(resh.clients, b"warm up");
    assert!(warm.error.is_none() && warm.received == b"warm up");
    resh.wait_until("the first session ended", WAIT, |r| active_sessions(r) == 0);
    let fds_before = open_fds(resh_pid);
    let echo_pid = resh.replica("only")["pid"].as_u64().expect("pid") as u32;
    let echo_fds_before = open_fds(echo_pid);
    let started = Instant::now();
    for i in 0..300u64 {
        let request = payload(64, 1000 + i);
        let mut client = connect(resh.clients);
        client.write_all(&request).expect("send");
        let got = read_exact_bounded(&mut client, request.len());
        assert!(got == request, "session {i}: wrong bytes");
        if i % 2 == 0 {
            // Half of them end properly: half-close, and wait for the end of the answer.
            client.shutdown(Shutdown::Write).expect("half-close");
            let (rest, end) = read_to_end_bounded(&mut client);
            assert!(end.is_ok() && rest.is_empty(), "session {i}: {} more bytes, {end:?}", rest.len());
        }
        // The others just close.
    }
    let elapsed = started.elapsed();
    resh.wait_until("every session ended", WAIT, |r| {
        let s = r.status();
        s["sessions"]["total"] == 301 && s["sessions"]["active"] == 0
    });
    let status = resh.status();
    assert_eq!(status["verdicts"]["agreed"], 301, "{status}");
    assert_eq!(status["bytes"]["from_clients"], 300 * 64 + 7, "{status}");
    assert_eq!(status["bytes"]["to_clients"], 300 * 64 + 7, "{status}");
    assert_eq!(resh.replica("only")["sessions"], 301);
    assert_no_faults(&resh, &["only"]);
    // No connection outlives its session, in resh or in the replica.
    let fds_after = wait_for_fds(resh_pid, fds_before);
    assert!(fds_after <= fds_before, "resh had {fds_before} open files before, {fds_after} after");
    let echo_fds = wait_for_fds(echo_pid, echo_fds_before);
    assert!(echo_fds <= echo_fds_before, "the replica had {echo_fds_before} open files before, {echo_fds} after");
    eprintln!("300 sessions took {elapsed:?}");
}

/// resh's process id: the parent of the replicas it started.
fn resh_pid(resh: &Resh) -> u32 {
    let child = resh.replica(resh.status()["replicas"][0]["name"].as_str().expect("name"))["pid"]
        .as_u64()
        .expect("replica pid");
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).expect("replica's /proc stat");
    // `pid (comm) state ppid ...`; comm may hold spaces, so split after its closing paren.
    let after = &stat[stat.rfind(')').expect("comm") + 1..];
    let ppid: u32 = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("ppid");
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).expect("resh's comm");
    assert_eq!(comm.trim(), "resh", "the replica's parent is not resh");
    ppid
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("list open files").count()
}

/// Waits (at most 5 s) until `pid` has at most `limit` open files; returns how many it has.
fn wait_for_fds(pid: u32, limit: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = open_fds(pid);
        if n <= limit || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Closes `stream` with a reset (SO_LINGER 0), as a client that crashes or aborts does.
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        onoff: i32,
        linger: i32,
    }
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1; // Linux
    const SO_LINGER: i32 = 13; // Linux
    let linger = Linger { onoff: 1, linger: 0 };
    // SAFETY: a valid socket descriptor and a pointer to a live `struct linger` of that size.
    let rc = unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            (&linger as *const Linger).cast(),
            std::mem::size_of::<Linger>() as u32,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER): {}", io::Error::last_os_error());
    drop(stream);
}

#[test]
fn a_client_that_resets_mid_stream_harms_no_one() {
    let resh = Resh::start(&three_config(""));
    // Another client is in the middle of its session the whole time.
    let mut other = connect(resh.clients);
    let first = payload(10_000, 71);
    other.write_all(&first).expect("send");
    assert!(read_exact_bounded(&mut other, first.len()) == first);

    // The aborting client sends 1 MiB (it fits into the sockets' buffers), reads a little of
    // the answer, and resets while resh still has most of it to send.
    let mut aborting = connect(resh.clients);
    let big = payload(1 << 20, 72);
    aborting.write_all(&big).expect("send");
    let got = read_exact_bounded(&mut aborting, 100_000);
    assert!(got == big[..100_000], "wrong bytes before the reset");
    reset(aborting);

    resh.wait_until("the reset session ended", WAIT, |r| active_sessions(r) == 1);
    // The other session goes on undisturbed, and ends normally.
    let second = payload(10_000, 73);
    other.write_all(&second).expect("send after the reset");
    assert!(read_exact_bounded(&mut other, second.len()) == second, "the other client got wrong bytes");
    other.shutdown(Shutdown::Write).expect("half-close");
    let (rest, end) = read_to_end_bounded(&mut other);
    assert!(end.is_ok() && rest.is_empty(), "the other client: {} more bytes, {end:?}", rest.len());
    // A new client is served, and no replica was blamed for the client's reset.
    let data = payload(200_000, 74);
    let next = exchange(resh.clients, &data);
    assert!(next.error.is_none() && next.received == data, "the next client: {:?}", next.error);
    resh.wait_until("every session ended", WAIT, |r| active_sessions(r) == 0);
    assert_no_faults(&resh, &["a", "b", "c"]);
    let status = resh.status();
    assert_eq!(status["verdicts"]["undecidable"], 0, "{status}");
    assert_eq!(status["sessions"]["total"], 3, "{status}");
}

/// Replicas that answer and then close (all at the same offset, `a` at once, `b` and `c` later)
/// while the client still sends: writes to `a` fail and `b`, `c` close with input unread, so
/// their connections end with a reset. None of that is a fault: the client gets the agreed
/// answer and a normal end, and no replica is blamed. (Each replica used to be reported
/// `crashed`, and the session reset as undecidable.)
#[test]
fn replicas_that_answer_and_close_while_the_client_still_sends_are_not_blamed() {
    let close = ["--close-at", "100"];
    let slow = ["--close-at", "100", "--delay-ms", "300"];
    let resh = Resh::start(&echo_config([&close, &slow, &slow], ""));
    let data = payload(100, 41);
    let mut client = connect(resh.clients);
    client.write_all(&data[..50]).expect("send");
    thread::sleep(Duration::from_millis(50));
    client.write_all(&data[50..]).expect("send");
    for _ in 0..20 {
        // More input after the answer: some of it may meet a closed connection, that is fine.
        if client.write_all(b"x\n").is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    client.shutdown(Shutdown::Write).expect("half-close");
    let (got, end) = read_to_end_bounded(&mut client);
    assert!(end.is_ok(), "the answer must end with a FIN, got {end:?} after {} bytes", got.len());
    assert!(got == data, "the client got {} bytes, not its 100", got.len());
    assert_one_session_agreed(&resh, "a replica was blamed");
}

/// A replica that is slower than the others (it sleeps 10 ms before each write) in a transfer
/// that lasts longer than the lag timeout (2 s by default): it trails the quorum all the way,
/// but never by more than the lag timeout (the others are read at most `max_lag_bytes` ahead
/// of it), so it is slower, not late. (It used to be reported late after 2 s: trailing at all
/// for the lag timeout counted, however closely it followed.)
#[test]
fn a_slower_replica_that_keeps_up_is_not_late() {
    let resh = Resh::start(&echo_config([&[], &[], &["--delay-ms", "10"]], ""));
    let started = Instant::now();
    pipelined(&resh, 4 << 20, 42);
    let took = started.elapsed();
    assert_one_session_agreed(&resh, "a replica was blamed");
    // Otherwise the test shows nothing: the transfer must outlast the lag timeout.
    assert!(took > Duration::from_secs(2), "the transfer took only {took:?}");
}
