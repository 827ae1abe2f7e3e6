//! The harness of resh's end-to-end tests (`tests/`): it builds the real binaries, starts a
//! real `resh run` with real replica processes on loopback, and talks to it the way a client
//! and an operator would (TCP, and HTTP to the admin API).
//!
//! Nothing here is mocked; the tests only choose how the replicas misbehave (`resh-echo`'s
//! switches) and check what the client got and what resh reported.
pub mod netns;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a binary of the workspace, built (once per test process) in the profile the tests
/// run in, so the tests never run a stale binary.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // A test runs from target/<profile>/deps, a binary of this package (dresh-bench) from
        // target/<profile>.
        let profile_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .map(|dir| if dir.ends_with("deps") { dir.parent().map_or(dir.clone(), Path::to_path_buf) } else { dir })
            .unwrap_or_else(|| workspace().join("target/debug"));
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // With D-RESH over Corosync (scripts/test.sh installs its client libraries).
        cargo.current_dir(workspace()).args([
            "build",
            "--quiet",
            "-p",
            "resh",
            "-p",
            "demo",
            "--bins",
            "--features",
            "resh/corosync",
        ]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the resh binaries failed");
        profile_dir
    });
    dir.join(name)
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("resh-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `resh run`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Resh {
    child: Child,
    /// Where clients connect.
    pub clients: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
    dir: TempDir,
    /// The network namespace it runs in, if not this process's.
    ns: Option<String>,
}

impl Resh {
    /// Writes `config` to a file and starts `resh run` on it; returns once resh printed its
    /// addresses (its replicas are then ready).
    pub fn start(config: &str) -> Resh {
        Resh::start_with_limit(config, None)
    }

    /// Like [`start`](Self::start), with the limit on open files set by the shell first, as an
    /// operator's limits would be: `ulimit` is given `limit`, e.g. `-n 80` (soft and hard) or
    /// `-Sn 256` (soft only).
    pub fn start_with_limit(config: &str, limit: Option<&str>) -> Resh {
        Resh::launch(config, limit, None, &["--log", "info,replicas=debug"])
    }

    /// Like [`start`](Self::start), with `log_args` in place of the tests' `--log` filter (e.g.
    /// `--log-format json`, or nothing: the configuration's `log` applies). RUST_LOG is removed.
    pub fn start_logging(config: &str, log_args: &[&str]) -> Resh {
        Resh::launch(config, None, None, log_args)
    }

    /// Like [`start`](Self::start), in network namespace `ns` (a D-RESH host of
    /// [`netns::Hosts`]); its addresses are those of that namespace.
    pub fn start_in(ns: &str, config: &str) -> Resh {
        Resh::launch(config, None, Some(ns), &["--log", "info,replicas=debug"])
    }

    fn launch(config: &str, limit: Option<&str>, ns: Option<&str>, log_args: &[&str]) -> Resh {
        let dir = TempDir::new("resh");
        let config_path = dir.path().join("resh.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("resh.log")).expect("create log");
        let mut command = match (limit, ns) {
            // `ip netns exec` execs resh: the child is resh itself.
            (_, Some(ns)) => {
                let mut ip = Command::new("ip");
                ip.args(["netns", "exec", ns]).arg(binary("resh"));
                ip
            }
            (None, None) => Command::new(binary("resh")),
            (Some(limit), None) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit {limit} && exec \"$0\" \"$@\"")]).arg(binary("resh"));
                sh
            }
        };
        let mut child = command
            .args(log_args)
            .args(["run", "-c"])
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start resh");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut clients, mut admin) = (None, None);
        while clients.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("resh: clients on ") {
                        clients = a.trim().parse().ok();
                    } else if let Some(a) = line.strip_prefix("resh: admin on http://") {
                        admin = a.trim().parse().ok();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(dir.path().join("resh.log")).unwrap_or_default();
                    panic!("resh did not start; its log:\n{log}");
                }
            }
        }
        Resh { child, clients: clients.expect("clients"), admin: admin.expect("admin"), dir, ns: ns.map(String::from) }
    }

    /// The process id of `resh run`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident memory of `resh run` in bytes (VmRSS), and its peak (VmHWM).
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next().and_then(|kb| kb.parse::<u64>().ok()))
                .map_or(0, |kb| kb * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The configuration's directory (for `--once` marker files and the like).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the configuration file it was started with (for a reload).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(self.dir.path().join("resh.toml"), config).expect("rewrite config");
    }

    /// resh's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("resh.log")).unwrap_or_default()
    }

    /// `GET /status`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let body = self.get("/status").expect("GET /status");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        self.get("/metrics").expect("GET /metrics")
    }

    /// `GET path` of the admin API, from resh's network namespace.
    pub fn get(&self, path: &str) -> io::Result<String> {
        let admin = self.admin;
        match &self.ns {
            Some(ns) => {
                let path = path.to_string();
                netns::in_ns(ns, move || http_get(admin, &path))
            }
            None => http_get(admin, path),
        }
    }

    /// Whether the process ended (it is reaped if it did).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends it `signal` (`libc::SIGTERM`, `libc::SIGHUP`, ...).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) takes integers only.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "cannot signal resh: {}", io::Error::last_os_error());
    }

    /// Waits (at most `timeout`) until it exits; its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills it with SIGKILL (its replicas are left running: see [`netns::Hosts::kill_host`]).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The `/status` entry of one replica.
    pub fn replica(&self, name: &str) -> serde_json::Value {
        let status = self.status();
        status["replicas"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no replica {name} in {status}"))
    }

    /// How many faults of `kind` `/status` counts for replica `name`.
    pub fn faults(&self, name: &str, kind: &str) -> u64 {
        let r = self.replica(name);
        r["faults"][kind].as_u64().unwrap_or(0)
    }

    /// Polls `/status` until `check` holds, or panics with `what` and resh's log after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, check: impl Fn(&Resh) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting until {what}; status: {}\nlog:\n{}", self.status(), self.log());
    }
}

impl Drop for Resh {
    fn drop(&mut self) {
        resh::bench::procs::stop(&mut self.child);
    }
}

/// Sends `signal` to process `pid` (no shell `kill`, which prints to the test output when the
/// process is gone).
pub fn signal_pid(pid: u64, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pid <= 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes integers only.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The faults `/status` counts for one replica entry, all kinds together.
pub fn fault_total(replica: &serde_json::Value) -> u64 {
    replica["faults"].as_object().map_or(0, |kinds| kinds.values().filter_map(serde_json::Value::as_u64).sum())
}

/// A configuration with three `resh-echo` replicas `a`, `b`, `c`, each with its own extra
/// arguments, and `extra` TOML appended (e.g. a `[vote]` table).
pub fn echo_config(args: [&[&str]; 3], extra: &str) -> String {
    let echo = binary("resh-echo");
    let mut text = String::from("listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    text.push_str(extra);
    text.push('\n');
    for (name, args) in ["a", "b", "c"].iter().zip(args) {
        let mut argv = vec![format!("{:?}", echo.display().to_string()), "\"--port\"".into(), "\"{port}\"".into()];
        argv.extend(args.iter().map(|a| format!("{a:?}")));
        text.push_str(&format!("[[replica]]\nname = \"{name}\"\ncommand = [{}]\n", argv.join(", ")));
    }
    text
}

/// One HTTP/1.1 request on a kept-alive connection, its response read to the end of its
/// Content-Length: (status, body). Panics if the connection closes first.
pub fn http_request(stream: &mut TcpStream, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let length =
        if body.is_empty() && method == "GET" { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{length}\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(body).expect("send the body");
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed before a response to {method} {path}");
        data.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&data[..head_end]).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize = text
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed inside a body");
        data.extend_from_slice(&buf[..n]);
    }
    (status, data[head_end..head_end + length].to_vec())
}

/// `len` bytes of deterministic pseudo-random data.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data`, half-closes, and reads until the server closes. A reset is an error; what
/// arrived before it is in [`Exchange::received`].
pub fn exchange(addr: SocketAddr, data: &[u8]) -> Exchange {
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return Exchange { received: Vec::new(), error: Some(e) },
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone socket");
    let data = data.to_vec();
    let sender = std::thread::spawn(move || -> io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let error = loop {
        match stream.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e),
        }
    };
    let send_error = sender.join().unwrap_or_else(|_| Err(io::Error::other("sender panicked"))).err();
    Exchange { received, error: error.or(send_error) }
}

/// What a client got.
#[derive(Debug)]
pub struct Exchange {
    /// Bytes received.
    pub received: Vec<u8>,
    /// Why the exchange ended early, if it did (a reset shows as `ConnectionReset`).
    pub error: Option<io::Error>,
}

/// A configuration in ordered mode (RESP) with the three demo versions: `rust` (resh-kv, with
/// `rust_args` appended), `python` (demo/kv.py) and `redis` (redis-server if it is installed,
/// otherwise `threads`, resh-kv-threads); `extra` TOML is appended to the `[vote]` table.
pub fn kv_config(rust_args: &[&str], extra_vote: &str) -> String {
    let kv = binary("resh-kv");
    let mut rust = vec![format!("{:?}", kv.display().to_string()), "\"--port\"".into(), "\"{port}\"".into()];
    rust.extend(rust_args.iter().map(|a| format!("{a:?}")));
    let python = workspace().join("demo/kv.py");
    let third = if have("redis-server") {
        "name = \"redis\"\ncommand = [\"redis-server\", \"--port\", \"{port}\", \"--bind\", \"127.0.0.1\", \"--save\", \"\", \"--appendonly\", \"no\"]\n".to_string()
    } else {
        format!(
            "name = \"threads\"\ncommand = [{:?}, \"--port\", \"{{port}}\"]\n",
            binary("resh-kv-threads").display().to_string()
        )
    };
    format!(
        "listen = \"127.0.0.1:0\"\n[vote]\nmode = \"ordered\"\nprotocol = \"resp\"\n{extra_vote}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[replica]]\nname = \"rust\"\ncommand = [{}]\n\
         [[replica]]\nname = \"python\"\ncommand = [\"python3\", {:?}, \"--port\", \"{{port}}\"]\n\
         [[replica]]\n{third}",
        rust.join(", "),
        python.display().to_string(),
    )
}

/// Ordered mode (RESP) with three redis-server replicas `r1`..`r3` that resh starts (no
/// persistence, DEBUG enabled on the servers); `vote` and `ordered` are appended to those tables.
pub fn redis_ordered_config(vote: &str, ordered: &str) -> String {
    assert!(have("redis-server"), "redis-server is not installed: run ./scripts/test.sh, which installs it");
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n[vote]\nmode = \"ordered\"\nprotocol = \"resp\"\n{vote}\n[ordered]\n{ordered}\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    for name in ["r1", "r2", "r3"] {
        text.push_str(&format!(
            "[[replica]]\nname = \"{name}\"\ncommand = [\"redis-server\", \"--port\", \"{{port}}\", \"--bind\", \"127.0.0.1\", \"--save\", \"\", \"--appendonly\", \"no\", \"--enable-debug-command\", \"yes\"]\n"
        ));
    }
    text
}

/// Whether a program is on the PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A RESP client connection.
pub struct RespClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RespClient {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> io::Result<RespClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(RespClient { stream, buf: Vec::new() })
    }

    /// The connection itself.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends one command and returns its raw reply.
    pub fn call(&mut self, args: &[&str]) -> io::Result<Vec<u8>> {
        self.send(&Self::encode(args))?;
        self.reply()
    }

    /// Sends the commands in one write (pipelined) and returns their raw replies.
    pub fn pipeline(&mut self, commands: &[&[&str]]) -> io::Result<Vec<Vec<u8>>> {
        let request: Vec<u8> = commands.iter().flat_map(|args| Self::encode(args)).collect();
        self.stream.write_all(&request)?;
        commands.iter().map(|_| self.reply()).collect()
    }

    /// One command in RESP.
    pub fn encode(args: &[&str]) -> Vec<u8> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Self::encode_bytes(&args)
    }

    /// One command of binary-safe arguments in RESP.
    pub fn encode_bytes(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Sends one command of binary-safe arguments and returns its raw reply.
    pub fn call_bytes(&mut self, args: &[&[u8]]) -> io::Result<Vec<u8>> {
        self.send(&Self::encode_bytes(args))?;
        self.reply()
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Everything the server sends until it closes the connection or is quiet for `quiet`.
    pub fn drain(&mut self, quiet: Duration) -> Vec<u8> {
        let _ = self.stream.set_read_timeout(Some(quiet));
        let mut all = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = self.stream.read(&mut chunk) {
            all.extend_from_slice(&chunk[..n]);
        }
        all
    }

    /// Reads one complete reply.
    pub fn reply(&mut self) -> io::Result<Vec<u8>> {
        use netdomain::codec::Codec;
        let codec = netdomain::codec::resp::Resp::new(1 << 26, None);
        loop {
            match codec.response_len(&self.buf) {
                Ok(Some(len)) => return Ok(self.buf.drain(..len).collect()),
                Ok(None) => {}
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A plain HTTP/1.1 request; returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect admin");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: resh\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, body.to_string())
}

/// A plain HTTP/1.1 GET; returns the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: resh\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| io::Error::other("no HTTP header end"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("GET {path}: {head}")));
    }
    Ok(body.to_string())
}

/// A redis-server a test starts itself (an address replica, or a reference to compare with).
pub struct RedisServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts redis-server on `port` (no persistence, DEBUG enabled); returns once it accepts.
    pub fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port }
    }

    /// Kills it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
