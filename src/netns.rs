//! Several hosts on one machine, for the D-RESH tests: one network namespace per host, joined
//! by a bridge in a namespace of its own, and one Corosync daemon per host. Everything is
//! created by [`Hosts::new`] and removed when the value is dropped, also when a test fails:
//! the processes started in the namespaces, the namespaces, and the `/dev/shm` files a
//! killed Corosync leaves behind. Needs root (and `ip`, `unshare`, `corosync`).
//!
//! Host `i` (from 1) has address `10.79.0.i/24` on its `eth0`; the host side of its veth is
//! `vh…` in the bridge's namespace, which [`Hosts::set_link`] takes down to cut the host off.
//! Names carry this process's id, so concurrent or leftover runs never collide.
use std::collections::HashSet;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::TempDir;

/// Runs `ip` with `args`; panics with its error output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn shm_files() -> HashSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// The CPG probe (`group/examples/cpg_probe.rs`), built (once per call, quickly when fresh)
/// with the `corosync` feature in the profile the caller runs in.
pub fn cpg_probe() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let profile =
        if dir.ends_with("deps") { dir.parent().map(std::path::Path::to_path_buf).unwrap_or(dir) } else { dir };
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(crate::workspace()).args([
        "build",
        "--quiet",
        "-p",
        "group",
        "--features",
        "corosync",
        "--example",
        "cpg_probe",
    ]);
    if profile.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    assert!(cargo.status().expect("cargo").success(), "cannot build cpg_probe");
    profile.join("examples/cpg_probe")
}

/// Runs `f` on a thread of its own that entered network namespace `ns` (`/run/netns/ns`):
/// sockets it opens live in that namespace, as a client on that host would. The namespace of
/// a thread is its own (`setns` moves only the calling thread), so the test's other threads
/// are untouched.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a descriptor we own; it changes only this thread's namespace.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Hosts in network namespaces, each with its Corosync.
pub struct Hosts {
    tag: String,
    count: usize,
    dir: TempDir,
    corosync: Vec<Option<Child>>,
    /// Processes a test started in the namespaces, killed at the end.
    others: Vec<Child>,
    shm_before: HashSet<String>,
    /// Corosync at its default realtime priority.
    realtime: bool,
}

impl Hosts {
    /// `count` hosts on one bridge; no Corosync runs yet.
    pub fn new(count: usize) -> Hosts {
        Hosts::with_priority(count, true)
    }

    /// Like [`new`](Self::new); `realtime: false` runs Corosync at a normal priority
    /// (`system { sched_rr: no }`): for measurements, where three Corosyncs at a realtime
    /// priority on one machine would take the CPUs from the hosts' replicas and resh, which on
    /// real hosts have CPUs of their own.
    pub fn with_priority(count: usize, realtime: bool) -> Hosts {
        assert!(is_root(), "the multi-host tests create network namespaces and need root (CI runs them as root)");
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let hosts = Hosts {
            dir: TempDir::new("hosts"),
            corosync: (0..count).map(|_| None).collect(),
            others: Vec::new(),
            shm_before: shm_files(),
            tag,
            count,
            realtime,
        };
        let bridge = hosts.bridge_ns();
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        for i in 1..=count {
            let ns = hosts.ns(i);
            let veth = hosts.veth(i);
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &veth, "netns", &bridge, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip(&["-n", &bridge, "link", "set", &veth, "master", "br0"]);
            ip(&["-n", &bridge, "link", "set", &veth, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", Hosts::addr(i)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        // The clients' namespace: on the bridge, without Corosync.
        let ns = hosts.client_ns();
        let veth = format!("rv{}c", hosts.tag);
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &veth, "netns", &bridge, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        ip(&["-n", &bridge, "link", "set", &veth, "master", "br0"]);
        ip(&["-n", &bridge, "link", "set", &veth, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{}/24", Hosts::client_addr()), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        hosts.write_corosync_configs();
        hosts
    }

    /// The clients' network namespace.
    pub fn client_ns(&self) -> String {
        format!("resh{}-c", self.tag)
    }

    /// The clients' address.
    pub fn client_addr() -> Ipv4Addr {
        Ipv4Addr::new(10, 79, 0, 100)
    }

    /// Kills every process in host `i`'s namespace with SIGKILL (resh, its replicas, Corosync):
    /// the host's crash.
    pub fn kill_host(&mut self, i: usize) {
        self.kill_corosync(i);
        kill_all_in(&self.ns(i));
    }

    fn bridge_ns(&self) -> String {
        format!("resh{}-br", self.tag)
    }

    /// Host `i`'s network namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("resh{}-h{i}", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("rv{}h{i}", self.tag)
    }

    /// Host `i`'s address.
    pub fn addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 79, 0, i as u8)
    }

    fn host_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("h{i}"))
    }

    /// A configuration as the README recommends: knet, authenticated and encrypted, failures
    /// detected in well under a second.
    fn write_corosync_configs(&self) {
        let mut key = vec![0u8; 256];
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)).expect("random key");
        let keyfile = self.dir.path().join("authkey");
        std::fs::write(&keyfile, &key).expect("write authkey");
        let nodes: String = (1..=self.count)
            .map(|i| format!("  node {{\n    name: h{i}\n    nodeid: {i}\n    ring0_addr: {}\n  }}\n", Hosts::addr(i)))
            .collect();
        for i in 1..=self.count {
            let dir = self.host_dir(i);
            for sub in ["state", "run"] {
                std::fs::create_dir_all(dir.join(sub)).expect("create host dir");
            }
            let conf = format!(
                "totem {{\n  version: 2\n  cluster_name: resh-test\n  transport: knet\n  crypto_cipher: aes256\n  crypto_hash: sha256\n  keyfile: {key}\n  token: 300\n  token_coefficient: 0\n  interface {{\n    linknumber: 0\n    knet_ping_timeout: 1000\n  }}\n}}\nlogging {{\n  to_stderr: yes\n  to_logfile: no\n  to_syslog: no\n  timestamp: hires\n}}\nquorum {{\n  provider: corosync_votequorum\n}}\nsystem {{\n  state_dir: {state}\n{sched}}}\nnodelist {{\n{nodes}}}\n",
                key = keyfile.display(),
                state = dir.join("state").display(),
                // Corosync runs at a realtime priority by default, as it should on a host of
                // its own; three of them on one small machine starve everything else.
                sched = if self.realtime { "" } else { "  sched_rr: no\n" },
            );
            std::fs::write(dir.join("corosync.conf"), conf).expect("write corosync.conf");
        }
    }

    /// Starts host `i`'s Corosync (in a mount namespace of its own, so that its fixed
    /// `/run/corosync.pid` is private to it).
    pub fn start_corosync(&mut self, i: usize) {
        let dir = self.host_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("corosync.log"))
            .expect("open corosync log");
        let script = format!(
            "mount --bind {run} /run && exec corosync -f -c {conf}",
            run = dir.join("run").display(),
            conf = dir.join("corosync.conf").display()
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "unshare", "-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start corosync");
        self.corosync[i - 1] = Some(child);
    }

    /// Kills host `i`'s Corosync with SIGKILL (the host's crash, as far as the group goes).
    pub fn kill_corosync(&mut self, i: usize) {
        if let Some(mut child) = self.corosync[i - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Host `i`'s Corosync log so far.
    pub fn corosync_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.host_dir(i).join("corosync.log")).unwrap_or_default()
    }

    /// Connects (`up`) or cuts off host `i`.
    pub fn set_link(&self, i: usize, up: bool) {
        ip(&["-n", &self.bridge_ns(), "link", "set", &self.veth(i), if up { "up" } else { "down" }]);
    }

    /// A command that runs `program` in host `i`'s namespace.
    pub fn command(&self, i: usize, program: &str) -> Command {
        self.command_in(&self.ns(i), program)
    }

    /// A command that runs `program` in network namespace `ns` (a host's, or the clients').
    pub fn command_in(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Keeps `child` to be killed when the hosts are removed.
    pub fn adopt(&mut self, child: Child) {
        self.others.push(child);
    }
}

/// Kills every process in network namespace `ns` (as `ip netns pids` lists them).
fn kill_all_in(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            // A process may have ended meanwhile: nothing to say about it.
            let _ = Command::new("kill").args(["-9", pid]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for mut child in self.others.drain(..).chain(self.corosync.iter_mut().filter_map(Option::take)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in 1..=self.count {
            // What the test started there and did not stop: resh's replicas after a SIGKILL.
            kill_all_in(&self.ns(i));
            let _ = Command::new("ip").args(["netns", "del", &self.ns(i)]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.client_ns()]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.bridge_ns()]).status();
        // A killed Corosync leaves its libqb ring buffers behind.
        for name in shm_files().difference(&self.shm_before) {
            if name.starts_with("qb-") {
                // Ring buffer files, or a directory of them per client connection.
                let path = PathBuf::from("/dev/shm").join(name);
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
    }
}

/// Whether this process runs as root (read from /proc, without a libc call).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
}
