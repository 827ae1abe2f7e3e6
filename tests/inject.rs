//! Fault-injection primitives against real processes, the admin API's `POST /inject` with its
//! bearer token, and `resh inject`.
//!
//! Process faults (memflip, crash, hang) are tested on `resh-memtarget`, a helper whose heap
//! buffer of known content can be read back both through /proc/PID/mem and by the process
//! itself. Data-path faults (outflip, inflip, delay) are tested through a real `resh run` with
//! three `resh-echo` replicas, where the voter must catch and name them.
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use replicas::inject::{self, Effect, InjectError, MemFlipSpec, MemRegion, Rng};
use resh_e2e::{binary, echo_config, exchange, http, payload, Resh};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "test-token-0123456789abcdef";

/// A running `resh-memtarget`.
struct Target {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    addr: u64,
    len: u64,
}

impl Target {
    fn start() -> Target {
        let mut child = Command::new(binary("resh-memtarget"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start resh-memtarget");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("hello line");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        let pid = field("pid=").parse().expect("pid");
        let addr = u64::from_str_radix(field("addr=").trim_start_matches("0x"), 16).expect("addr");
        let len = field("len=").parse().expect("len");
        Target { child, stdin, stdout, pid, addr, len }
    }

    /// The bytes that changed, as the process itself reads its buffer: (offset, old, new).
    fn check(&mut self) -> Vec<(u64, u8, u8)> {
        writeln!(self.stdin, "check").expect("send check");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("diff line");
        let n: usize = line.trim().strip_prefix("diff ").expect("diff N").parse().expect("N");
        (0..n.min(16))
            .map(|_| {
                let mut l = String::new();
                self.stdout.read_line(&mut l).expect("diff entry");
                let v: Vec<u64> = l.split_whitespace().map(|x| x.parse().expect("number")).collect();
                (v[0], v[1] as u8, v[2] as u8)
            })
            .collect()
    }

    fn state(&self) -> char {
        inject::proc_stat(self.pid).expect("stat").state
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One byte of another process's memory, read the way a debugger would.
fn peek(pid: u32, address: u64) -> u8 {
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    mem.seek(SeekFrom::Start(address)).expect("seek");
    let mut b = [0u8];
    mem.read_exact(&mut b).expect("read");
    b[0]
}

#[test]
fn memflip_at_an_address_changes_exactly_that_bit_as_the_process_sees_it() {
    let mut t = Target::start();
    assert!(t.check().is_empty(), "the buffer starts intact");
    let at = t.addr + 1234;
    let spec = MemFlipSpec { bits: 1, region: MemRegion::Any, address: Some(at) };
    let flips = inject::memflip(t.pid, &spec, &mut Rng::new(5)).expect("memflip");
    assert_eq!(flips.len(), 1);
    let f = &flips[0];
    assert_eq!(f.address, at);
    assert_eq!(f.region, "[heap]", "{f:?}");
    assert_eq!(f.old ^ f.new, 1 << f.bit);
    assert_eq!(f.offset_in_region, at - f.region_start);
    assert_eq!(peek(t.pid, at), f.new);
    assert_eq!(t.check(), vec![(1234, f.old, f.new)], "the process reads the flipped byte");
}

#[test]
fn memflip_in_a_random_heap_byte_is_recorded_truthfully() {
    let t = Target::start();
    let maps = inject::read_maps(t.pid).expect("maps");
    let spec = MemFlipSpec { bits: 3, region: MemRegion::Heap, address: None };
    let flips = inject::memflip(t.pid, &spec, &mut Rng::new(77)).expect("memflip");
    assert_eq!(flips.len(), 3);
    for f in &flips {
        let m = maps.iter().find(|m| m.start <= f.address && f.address < m.end).expect("a mapping holds the address");
        assert_eq!(m.path, "[heap]");
        assert!(m.writable_private());
        assert_eq!(f.old ^ f.new, 1 << f.bit);
    }
    // Read back what is there now (two flips could share a byte: the last one shows).
    for (i, f) in flips.iter().enumerate() {
        if flips[i + 1..].iter().all(|g| g.address != f.address) {
            assert_eq!(peek(t.pid, f.address), f.new, "{f:?}");
        }
    }
    // Flips that landed in the helper's buffer are what the process itself reads there.
    let mut t = t;
    let seen = t.check();
    for f in flips.iter().filter(|f| (t.addr..t.addr + t.len).contains(&f.address)) {
        let offset = f.address - t.addr;
        assert!(seen.iter().any(|(o, _, _)| *o == offset), "{f:?} not seen by the process: {seen:?}");
    }
}

#[test]
fn the_same_seed_picks_the_same_places() {
    let (a, b) = (Target::start(), Target::start());
    let spec = MemFlipSpec { bits: 2, region: MemRegion::Stack, address: None };
    let fa = inject::memflip(a.pid, &spec, &mut Rng::new(11)).expect("memflip a");
    let fb = inject::memflip(b.pid, &spec, &mut Rng::new(11)).expect("memflip b");
    // Address-space randomisation moves the stack; the offset in it and the bit are the seed's.
    let place =
        |f: &Vec<inject::MemFlip>| f.iter().map(|x| (x.region.clone(), x.offset_in_region, x.bit)).collect::<Vec<_>>();
    assert_eq!(place(&fa), place(&fb));
}

#[test]
fn crash_kills_the_process_with_sigkill() {
    let mut t = Target::start();
    assert_eq!(inject::crash(t.pid).expect("crash"), Effect::Killed { signal: "SIGKILL".into() });
    let status = t.child.wait().expect("wait");
    assert_eq!(status.signal(), Some(9), "{status}");
}

#[test]
fn hang_stops_the_process_and_continues_it_after_the_duration() {
    let mut t = Target::start();
    let began = Instant::now();
    inject::hang(t.pid, Duration::from_millis(400)).expect("hang");
    // A signal takes effect when the process is next scheduled: give it a moment.
    while t.state() != 'T' && began.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(t.state(), 'T', "stopped");
    let mut stopped_for = Duration::ZERO;
    while t.state() == 'T' && began.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        stopped_for = began.elapsed();
    }
    assert!(stopped_for >= Duration::from_millis(350), "continued too early: {stopped_for:?}");
    assert_ne!(t.state(), 'T', "still stopped after 5 s");
    assert!(t.check().is_empty(), "it answers again");
}

#[test]
fn injections_into_a_process_that_is_gone_are_refused() {
    let mut t = Target::start();
    let pid = t.pid;
    t.child.kill().expect("kill");
    // Before it is reaped it is a zombie: no memory, nothing to stop.
    std::thread::sleep(Duration::from_millis(100));
    let spec = MemFlipSpec { bits: 1, region: MemRegion::Any, address: None };
    assert!(matches!(inject::memflip(pid, &spec, &mut Rng::new(1)), Err(InjectError::ProcessGone { .. })));
    t.child.wait().expect("reap");
    for result in [
        inject::memflip(pid, &spec, &mut Rng::new(1)).map(|_| ()),
        inject::crash(pid).map(|_| ()),
        inject::hang(pid, Duration::from_millis(10)).map(|_| ()),
    ] {
        let e = result.expect_err("the process is gone");
        assert!(matches!(e, InjectError::ProcessGone { pid: p } if p == pid), "{e:?}");
        assert!(e.to_string().contains("is gone"), "{e}");
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn resh_with_token(extra: &str) -> Resh {
    Resh::start(&echo_config([&[], &[], &[]], &format!("token = \"{TOKEN}\"\n{extra}")))
}

#[test]
fn post_inject_needs_the_bearer_token() {
    let resh = resh_with_token("");
    let body = r#"{"replica":"c","kind":"outflip"}"#;
    let (status, text) = http(resh.admin, "POST", "/inject", None, body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("missing bearer token"));
    let (status, _) = http(resh.admin, "POST", "/inject", Some("test-token-wrong-wrong-wrong"), body);
    assert_eq!(status, 401);
    let (status, text) = http(resh.admin, "POST", "/inject", Some(TOKEN), body);
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["status"], "armed");
    resh.wait_until("both refusals are logged", WAIT, |r| r.log().matches("unauthorized request").count() == 2);
    // Mistakes are named, not guessed at.
    let (status, text) = http(resh.admin, "POST", "/inject", Some(TOKEN), r#"{"replica":"zz","kind":"crash"}"#);
    assert_eq!((status, text.contains("no replica is named `zz`")), (404, true), "{text}");
    let (status, text) = http(resh.admin, "POST", "/inject", Some(TOKEN), r#"{"replica":"a","kind":"crash","bits":3}"#);
    assert_eq!((status, text.contains("bits: only applies to")), (400, true), "{text}");
    let (status, _) = http(resh.admin, "POST", "/inject", Some(TOKEN), "not json");
    assert_eq!(status, 400);
    let (status, _) = http(resh.admin, "GET", "/inject", Some(TOKEN), "");
    assert_eq!(status, 405);
    // The read-only log needs no token.
    let (status, text) = http(resh.admin, "GET", "/injections", None, "");
    assert_eq!(status, 200);
    assert_eq!(json(&text).as_array().map(Vec::len), Some(1));
}

#[test]
fn post_inject_is_disabled_without_a_configured_token() {
    let resh = Resh::start(&echo_config([&[], &[], &[]], ""));
    let (status, text) = http(resh.admin, "POST", "/inject", Some(TOKEN), r#"{"replica":"a","kind":"crash"}"#);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("set admin.token or admin.token_file"), "{text}");
    assert_eq!(resh.replica("a")["restarts"], 0, "nothing was injected");
}

#[test]
fn outflip_is_masked_and_the_fired_record_names_the_offset() {
    let resh = resh_with_token("");
    // With wait_ms the request answers once a session carried the flip.
    let admin = resh.admin;
    let request = std::thread::spawn(move || {
        let body = r#"{"replica":"c","kind":"outflip","bits":3,"span_bytes":4,"seed":9,"wait_ms":15000}"#;
        http(admin, "POST", "/inject", Some(TOKEN), body)
    });
    let armed = |r: &Resh| http(r.admin, "GET", "/injections", None, "").1.contains("\"armed\"");
    resh.wait_until("the outflip is armed", WAIT, |r| armed(r));
    let data = payload(20_000, 21);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data, "the client got wrong bytes: {:?}", got.error);
    resh.wait_until("c is counted diverged", WAIT, |r| r.faults("c", "diverged") == 1);
    let (status, text) = request.join().expect("request thread");
    assert_eq!(status, 200, "{text}");
    let fired = json(&text);
    assert_eq!(fired["status"], "fired", "{fired}");
    assert_eq!(fired["effect"]["direction"], "output");
    let flips = fired["effect"]["flips"].as_array().expect("flips").clone();
    assert_eq!(flips.len(), 3);
    let first = flips.iter().filter_map(|f| f["offset"].as_u64()).min().expect("offset");
    assert_eq!(resh.status()["recent_faults"][0]["offset"], first, "the voter found the first flipped byte");
    assert_eq!(resh.faults("a", "diverged") + resh.faults("b", "diverged"), 0);
}

#[test]
fn inflip_corrupts_one_replicas_input_and_is_masked() {
    let resh = resh_with_token("");
    let (status, text) =
        http(resh.admin, "POST", "/inject", Some(TOKEN), r#"{"replica":"b","kind":"inflip","seed":3}"#);
    assert_eq!(status, 200, "{text}");
    let data = payload(10_000, 22);
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data, "{:?}", got.error);
    resh.wait_until("b is counted diverged", WAIT, |r| r.faults("b", "diverged") == 1);
    let (_, log) = http(resh.admin, "GET", "/injections", None, "");
    let records = json(&log);
    let fired = records.as_array().and_then(|r| r.iter().find(|x| x["status"] == "fired")).expect("fired record");
    assert_eq!(fired["effect"]["direction"], "input");
    assert_eq!(fired["effect"]["flips"][0]["offset"], 0, "the very next input byte");
}

#[test]
fn a_long_delay_makes_the_replica_late_and_is_masked() {
    let resh = resh_with_token("[vote]\nlag_timeout_ms = 300\n");
    let (status, text) =
        http(resh.admin, "POST", "/inject", Some(TOKEN), r#"{"replica":"a","kind":"delay","delay_ms":2000}"#);
    assert_eq!(status, 200, "{text}");
    let data = payload(5_000, 23);
    let began = Instant::now();
    let got = exchange(resh.clients, &data);
    assert!(got.error.is_none() && got.received == data, "{:?}", got.error);
    assert!(began.elapsed() < Duration::from_millis(1500), "the quorum answered without waiting for a");
    resh.wait_until("a is counted late", WAIT, |r| r.faults("a", "late") >= 1);
}

#[test]
fn resh_inject_crashes_a_replica_which_is_then_restarted() {
    let resh = resh_with_token("");
    let pid = resh.replica("b")["pid"].as_u64().expect("pid");
    let out = Command::new(binary("resh"))
        .args(["inject", "--admin", &format!("http://{}", resh.admin), "--replica", "b", "--kind", "crash"])
        .env("RESH_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run resh inject");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(record["pid"], pid);
    assert_eq!(record["effect"]["signal"], "SIGKILL");
    resh.wait_until("b is restarted with a new process", WAIT, |r| {
        let b = r.replica("b");
        b["state"] == "ready" && b["pid"].as_u64().is_some_and(|p| p != pid)
    });
    assert!(resh.replica("b")["last_exit"].as_str().is_some_and(|e| e.contains("9")), "{}", resh.replica("b"));
    // A wrong token is refused, with the server's reason.
    let out = Command::new(binary("resh"))
        .args(["inject", "--admin", &format!("http://{}", resh.admin), "--replica", "b", "--kind", "hang"])
        .env("RESH_ADMIN_TOKEN", "not-the-token-at-all-no")
        .output()
        .expect("run resh inject");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn resh_inject_memflip_reports_what_it_flipped() {
    let resh = resh_with_token("");
    let dir = resh.dir().to_path_buf();
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token file");
    let out = Command::new(binary("resh"))
        .args(["inject", "--admin", &format!("http://{}", resh.admin), "--replica", "a"])
        .args(["--kind", "memflip", "--region", "heap", "--bits", "2", "--seed", "5", "--token-file"])
        .arg(&token_file)
        .env_remove("RESH_ADMIN_TOKEN")
        .output()
        .expect("run resh inject");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(record["seed"], 5);
    let flips = record["effect"]["flips"].as_array().expect("flips");
    assert_eq!(flips.len(), 2);
    for f in flips {
        assert_eq!(f["region"], "[heap]");
        let (old, new, bit) = (f["old"].as_u64(), f["new"].as_u64(), f["bit"].as_u64());
        assert_eq!(old.zip(new).map(|(o, n)| o ^ n), bit.map(|b| 1 << b), "{f}");
    }
    // An option that does not apply is refused before anything is sent.
    let out = Command::new(binary("resh"))
        .args(["inject", "--replica", "a", "--kind", "crash", "--delay-ms", "5"])
        .output()
        .expect("run resh inject");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--delay-ms: only applies to delay"));
}

#[test]
fn resh_inject_wait_ms_fails_when_nothing_fired() {
    let resh = resh_with_token("");
    let out = Command::new(binary("resh"))
        .args(["inject", "--admin", &format!("http://{}", resh.admin), "--replica", "a", "--kind", "outflip"])
        .args(["--wait-ms", "200"])
        .env("RESH_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run resh inject");
    assert_eq!(out.status.code(), Some(1), "no session ran: nothing can have fired");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing fired within --wait-ms 200"), "{stderr}");
    assert_eq!(json(&String::from_utf8_lossy(&out.stdout))["status"], "armed");
}
