//! The three demo key-value versions (`resh-kv`, `resh-kv-threads`, `demo/kv.py`) on their
//! own, without resh: the exact reply bytes of the commands resh's checkpoint needs (KEYS,
//! TYPE, PTTL, PEXPIRETIME, RPUSH, FLUSHALL, DBSIZE), and, when `redis-server` is installed, the same
//! command sequences answered by redis-server byte for byte (KEYS's order aside: Redis's is
//! unspecified, the versions sort, so KEYS replies are compared sorted).
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use resh_e2e::{binary, have, payload, workspace, RespClient};

/// One service process, stopped when dropped.
struct Service {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Service {
    fn start(name: &'static str) -> Service {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let port_arg = port.to_string();
        let mut command = match name {
            "rust" => Command::new(binary("resh-kv")),
            "threads" => Command::new(binary("resh-kv-threads")),
            "python" => {
                let mut c = Command::new("python3");
                c.arg(workspace().join("demo/kv.py"));
                c
            }
            "redis" => {
                let mut c = Command::new("redis-server");
                c.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
                c
            }
            other => panic!("no service {other}"),
        };
        let child = command
            .args(["--port", &port_arg])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{name} does not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Service { name, child, addr }
    }

    fn connect(&self) -> Conn {
        Conn::connect(self.addr).unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The three demo versions (kv.py only if python3 is installed).
fn versions() -> Vec<Service> {
    let mut names = vec!["rust", "threads"];
    if have("python3") {
        names.push("python");
    } else {
        eprintln!("python3 is not installed: kv.py is not tested");
    }
    names.into_iter().map(Service::start).collect()
}

/// redis-server, if it is installed.
fn redis() -> Option<Service> {
    if have("redis-server") {
        Some(Service::start("redis"))
    } else {
        eprintln!("redis-server is not installed: no comparison with Redis");
        None
    }
}

/// A RESP connection that sends raw bytes and reads whole replies; panics on I/O errors.
struct Conn(RespClient);

impl Conn {
    fn connect(addr: SocketAddr) -> io::Result<Conn> {
        RespClient::connect(addr).map(Conn)
    }

    /// One command of binary-safe arguments; its raw reply.
    fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.0.call_bytes(args).expect("a reply")
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.send(bytes).expect("send");
    }

    fn drain(&mut self, quiet: Duration) -> Vec<u8> {
        self.0.drain(quiet)
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    RespClient::encode_bytes(args)
}

/// A command written the way `redis-cli` takes it: words separated by spaces.
fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ').map(str::as_bytes).collect()
}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// A KEYS reply with its elements in the keys' byte order (the array header first).
fn sorted_keys(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut elements: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut rest = reply;
    let header_end = rest.windows(2).position(|w| w == b"\r\n").expect("an array header");
    let header = rest[..header_end + 2].to_vec();
    rest = &rest[header_end + 2..];
    while !rest.is_empty() {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("a bulk header");
        let len: usize =
            std::str::from_utf8(&rest[1..line_end]).ok().and_then(|l| l.parse().ok()).expect("a bulk length");
        let end = line_end + 2 + len + 2;
        elements.push((rest[line_end + 2..end - 2].to_vec(), rest[..end].to_vec()));
        rest = &rest[end..];
    }
    elements.sort();
    std::iter::once(header).chain(elements.into_iter().map(|(_, encoded)| encoded)).collect()
}

#[test]
fn the_checkpoint_commands_answer_redis_bytes() {
    let wrongtype: &[u8] = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    let script: &[(&str, &[u8])] = &[
        // An empty store.
        ("DBSIZE", b":0\r\n"),
        ("KEYS *", b"*0\r\n"),
        ("KEYS a*", b"*0\r\n"),
        ("TYPE missing", b"+none\r\n"),
        ("PTTL missing", b":-2\r\n"),
        ("PEXPIRETIME missing", b":-2\r\n"),
        // RPUSH, and RPUSH to a string key.
        ("SET s v", b"+OK\r\n"),
        ("RPUSH s x", wrongtype),
        ("GET s", b"$1\r\nv\r\n"),
        ("RPUSH l a b", b":2\r\n"),
        ("rpush l c", b":3\r\n"),
        ("LPUSH l z", b":4\r\n"),
        ("LRANGE l 0 -1", b"*4\r\n$1\r\nz\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ("TYPE s", b"+string\r\n"),
        ("type l", b"+list\r\n"),
        ("PTTL s", b":-1\r\n"),
        ("PTTL l", b":-1\r\n"),
        ("PEXPIRETIME s", b":-1\r\n"),
        ("DBSIZE", b":2\r\n"),
        // Wrong arity, worded as Redis 7 does.
        ("RPUSH l", b"-ERR wrong number of arguments for 'rpush' command\r\n"),
        ("RPUSH", b"-ERR wrong number of arguments for 'rpush' command\r\n"),
        ("KEYS", b"-ERR wrong number of arguments for 'keys' command\r\n"),
        ("KEYS a b", b"-ERR wrong number of arguments for 'keys' command\r\n"),
        ("TYPE", b"-ERR wrong number of arguments for 'type' command\r\n"),
        ("TYPE a b", b"-ERR wrong number of arguments for 'type' command\r\n"),
        ("PTTL", b"-ERR wrong number of arguments for 'pttl' command\r\n"),
        ("PEXPIRETIME a b", b"-ERR wrong number of arguments for 'pexpiretime' command\r\n"),
        ("DBSIZE x", b"-ERR wrong number of arguments for 'dbsize' command\r\n"),
        ("FLUSHALL a b", b"-ERR syntax error\r\n"),
        ("FLUSHALL later", b"-ERR syntax error\r\n"),
        // KEYS: sorted; glob patterns.
        ("MSET b 1 a 2 ab 3 a[b 4", b"+OK\r\n"),
        ("KEYS *", b"*6\r\n$1\r\na\r\n$3\r\na[b\r\n$2\r\nab\r\n$1\r\nb\r\n$1\r\nl\r\n$1\r\ns\r\n"),
        ("KEYS a*", b"*3\r\n$1\r\na\r\n$3\r\na[b\r\n$2\r\nab\r\n"),
        ("KEYS ?", b"*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nl\r\n$1\r\ns\r\n"),
        ("KEYS [a-c]", b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
        ("KEYS [^a-c]", b"*2\r\n$1\r\nl\r\n$1\r\ns\r\n"),
        ("KEYS a\\[b", b"*1\r\n$3\r\na[b\r\n"),
        ("KEYS a[\\[]b", b"*1\r\n$3\r\na[b\r\n"),
        ("KEYS nothing*", b"*0\r\n"),
        ("DBSIZE", b":6\r\n"),
        // FLUSHALL then DBSIZE, in each form.
        ("FLUSHALL", b"+OK\r\n"),
        ("DBSIZE", b":0\r\n"),
        ("KEYS *", b"*0\r\n"),
        ("TYPE l", b"+none\r\n"),
        ("PTTL s", b":-2\r\n"),
        ("SET k 1", b"+OK\r\n"),
        ("FLUSHALL ASYNC", b"+OK\r\n"),
        ("DBSIZE", b":0\r\n"),
        ("SET k 1", b"+OK\r\n"),
        ("flushall sync", b"+OK\r\n"),
        ("DBSIZE", b":0\r\n"),
    ];
    let mut services = versions();
    services.extend(redis());
    for service in &services {
        let mut conn = service.connect();
        for (command, expected) in script {
            let reply = conn.call(&words(command));
            let reply = if command.starts_with("KEYS") && service.name == "redis" {
                // Redis's own order is unspecified; the versions sort.
                sorted_keys(&reply).concat()
            } else {
                reply
            };
            assert_eq!(show(&reply), show(expected), "{}: {command}", service.name);
        }
    }
}

/// Commands whose replies must be identical in every version and in redis-server: the new
/// commands, and the old ones at the edges where the versions used to differ.
const SEQUENCE: &[&str] = &[
    "PING",
    "PING hello",
    "PING a b",
    "ECHO",
    "FOO",
    "FOO a b",
    "foo a  c",
    "SET k v",
    "SET k",
    "GET k",
    "INCR k",
    "SET n 007",
    "INCR n",
    "SET n +1",
    "DECR n",
    "SET n -0",
    "INCR n",
    "SET n 1_0",
    "INCR n",
    "SET n 9223372036854775807",
    "INCR n",
    "SET n -9223372036854775808",
    "DECR n",
    "SET n 41",
    "INCR n",
    "DEL n n",
    "DECR n",
    "LPUSH l a b c",
    "RPUSH l d e",
    "LRANGE l 0 -1",
    "LRANGE l +0 -1",
    "LRANGE l 01 -1",
    "LRANGE l -100 100",
    "LRANGE l 5 10",
    "LRANGE l x 1",
    "LPOP l 0",
    "LPOP missing 0",
    "LPOP missing",
    "LPOP l -1",
    "LPOP l 01",
    "LPOP l 2",
    "LPOP l",
    "LLEN l",
    "LLEN k",
    "LPUSH k x",
    "RPUSH k x",
    "GET l",
    "INCR l",
    "MSET a 1 b",
    "MSET a 1 b 2",
    "MGET a b l k zz",
    "EXISTS a a zz",
    "TYPE a",
    "TYPE l",
    "TYPE zz",
    "PTTL a",
    "PTTL zz",
    "PEXPIRETIME a",
    "PEXPIRETIME zz",
    "DBSIZE",
    "KEYS *",
    "KEYS ?",
    "KEYS [ab]",
    "KEYS [^ab]",
    "DEL a a b",
    "CONFIG",
    "CONFIG GET",
    "CONFIG get",
    "CONFIG FOO",
    "config Foo bar",
    "CONFIG GET save",
    "CONFIG GET SAVE",
    "CONFIG GET appendonly",
    "CONFIG GET save SAVE",
    "CONFIG GET nosuch",
    "CONFIG GET sav*",
    "CONFIG GET APPEND?NLY",
    "CONFIG SET",
    "CONFIG SET save",
    "CONFIG RESETSTAT",
    "CONFIG RESETSTAT x",
    "CONFIG REWRITE",
    "CONFIG HELP",
    "CONFIG HELP x",
    "FLUSHALL x y",
    "FLUSHALL ASYNC",
    "DBSIZE",
    "KEYS *",
];

/// Sends the same commands to every service; panics at the first reply that differs from
/// the first service's (redis-server's, when it is there).
fn assert_same_replies(services: &[Service], commands: &[Vec<Vec<u8>>]) {
    let mut conns: Vec<Conn> = services.iter().map(Service::connect).collect();
    for command in commands {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        let keys = command.first().is_some_and(|c| c.eq_ignore_ascii_case(b"keys"));
        let replies: Vec<Vec<u8>> = conns
            .iter_mut()
            .map(|c| {
                let reply = c.call(&args);
                if keys && reply.starts_with(b"*") {
                    sorted_keys(&reply).concat()
                } else {
                    reply
                }
            })
            .collect();
        for (service, reply) in services.iter().zip(&replies).skip(1) {
            assert_eq!(
                show(reply),
                show(&replies[0]),
                "{} and {} differ on {}",
                service.name,
                services[0].name,
                show(&encode(&args))
            );
        }
    }
}

#[test]
fn the_versions_answer_as_redis_server_does() {
    let mut services: Vec<Service> = redis().into_iter().collect();
    services.extend(versions());
    let mut commands: Vec<Vec<Vec<u8>>> =
        SEQUENCE.iter().map(|line| words(line).into_iter().map(<[u8]>::to_vec).collect()).collect();
    // Binary-safe arguments: non-UTF-8 bytes, NUL, CR and LF, long names in error texts.
    let raw: &[&[&[u8]]] = &[
        &[b"f\xc3o", b"a\xff"],
        &[b"f\no", b"a\r\nb", b"c"],
        &[b"f\x00o", b"a\x00b"],
        &[b""],
        &[b"\xc5\xbfet", b"k", b"v"],
        &[b"FOO", &[b'x'; 100], &[b'y'; 50], &[b'z'; 10]],
        &[b"FOO", &[b'w'; 200]],
        &[&[b'Q'; 200]],
        &[b"FOO", b"a", b"", b"b"],
        &[b"CONFIG", b"G\nET"],
        // Not `CONFIG GET save\0`: redis-server hashes the whole name but compares up to the
        // NUL, so whether it finds `save` depends on its per-process hash seed (CI saw both).
        &[b"FLUSHALL", b"sync\x00x"],
        &[b"SET", b"\xc3x", b"1"],
        &[b"SET", b"", b"empty"],
        &[b"KEYS", b"*"],
        &[b"KEYS", b"[\xff-a]*"],
        &[b"TYPE", b""],
        &[b"PTTL", b"\xc3x"],
        &[b"DBSIZE"],
    ];
    commands.extend(raw.iter().map(|c| c.iter().map(|a| a.to_vec()).collect()));
    assert_same_replies(&services, &commands);
}

#[test]
fn glob_patterns_match_as_in_redis_server() {
    let mut services: Vec<Service> = redis().into_iter().collect();
    services.extend(versions());
    // Keys and patterns over a small alphabet heavy in the characters globs treat specially,
    // and bytes above 0x7f (Redis compares range bounds as signed chars).
    let alphabet: &[u8] = b"ab-^!*?[]\\\xc3\xff";
    let pick = |seed: u64, max_len: usize| -> Vec<u8> {
        let noise = payload(max_len + 1, seed);
        let len = usize::from(noise[0]) % (max_len + 1);
        noise[1..=len].iter().map(|b| alphabet[usize::from(*b) % alphabet.len()]).collect()
    };
    let mut commands: Vec<Vec<Vec<u8>>> = vec![vec![b"FLUSHALL".to_vec()]];
    for i in 0..120 {
        commands.push(vec![b"SET".to_vec(), pick(i, 5), b"v".to_vec()]);
    }
    commands.push(vec![b"SET".to_vec(), b"".to_vec(), b"v".to_vec()]);
    commands.push(vec![b"DBSIZE".to_vec()]);
    for i in 0..400 {
        commands.push(vec![b"KEYS".to_vec(), pick(1000 + i, 6)]);
    }
    for pattern in [&b"**"[..], b"*", b"[", b"[]", b"[^]", b"\\", b"a\\", b"[a-", b"[\\", b"[a-\\]", b"[]-a]", b"*a*b*"]
    {
        commands.push(vec![b"KEYS".to_vec(), pattern.to_vec()]);
    }
    assert_same_replies(&services, &commands);
}

#[test]
fn requests_are_framed_as_redis_server_frames_them() {
    let mut services: Vec<Service> = redis().into_iter().collect();
    services.extend(versions());
    // Each on a fresh connection: a protocol error closes it.
    let cases: &[&[u8]] = &[
        b"PING\r\n",
        b"  ECHO   \"a b\\x41\\n\"  \r\n",
        b"ECHO 'it\\'s'\r\n",
        b"ECHO \"a\"b\r\n",
        b"ECHO 'ab\r\n",
        b"ECHO a\x0bb\r\n",
        b"\x0bECHO x\n",
        b"ECHO \"\\q\\t\"\r\n",
        b"\r\nPING\r\n",
        b"*2\r\n$4\r\nECHO\r\n$+1\r\nx\r\n",
        b"*+1\r\n$4\r\nPING\r\n",
        b"*01\r\n$4\r\nPING\r\n",
        b"*-1\r\n*1\r\n$4\r\nPING\r\n",
        b"*0\r\n*1\r\n$4\r\nPING\r\n",
        b"*1\r\nx4\r\nPING\r\n",
        b"*1\r\n\xff4\r\nPING\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$536870913\r\n",
        b"*2147483648\r\n",
        b"*99999999999999999\r\n",
        b"*x\r\n",
        b"*2147483647\r\n$4\r\nPING\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\nGET k\r\n",
    ];
    for case in cases {
        let replies: Vec<Vec<u8>> = services
            .iter()
            .map(|s| {
                let mut conn = s.connect();
                conn.send(case);
                conn.drain(Duration::from_millis(300))
            })
            .collect();
        for (service, reply) in services.iter().zip(&replies).skip(1) {
            assert_eq!(
                show(reply),
                show(&replies[0]),
                "{} and {} differ on {}",
                service.name,
                services[0].name,
                show(case)
            );
        }
    }
}

/// resh in ordered mode in front of the three versions (no redis-server), with a replay log
/// too small to replay from: each version in turn is killed and rebuilt by a checkpoint copied
/// from the other two (KEYS, TYPE, PTTL, GET, LRANGE on them; FLUSHALL, SET, RPUSH on it),
/// and all three end with the same keys and values.
#[test]
fn each_version_is_rebuilt_from_the_others_by_a_checkpoint() {
    if !have("python3") {
        eprintln!("python3 is not installed: no checkpoint across the three versions");
        return;
    }
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[vote]\nmode = \"ordered\"\nprotocol = \"resp\"\n[ordered]\nlog_max_bytes = 4096\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[replica]]\nname = \"rust\"\ncommand = [{:?}, \"--port\", \"{{port}}\"]\n\
         [[replica]]\nname = \"threads\"\ncommand = [{:?}, \"--port\", \"{{port}}\"]\n\
         [[replica]]\nname = \"python\"\ncommand = [\"python3\", {:?}, \"--port\", \"{{port}}\"]\n",
        binary("resh-kv").display().to_string(),
        binary("resh-kv-threads").display().to_string(),
        workspace().join("demo/kv.py").display().to_string(),
    );
    let resh = resh_e2e::Resh::start(&config);
    let mut client = Conn::connect(resh.clients).expect("connect to resh");
    for i in 0..200 {
        assert_eq!(client.call(&[b"SET", format!("k:{i}").as_bytes(), format!("value {i}").as_bytes()]), b"+OK\r\n");
    }
    for i in 0..60 {
        let reply = client.call(&[b"RPUSH", format!("list:{}", i % 4).as_bytes(), format!("item {i}").as_bytes()]);
        assert!(reply.starts_with(b":"), "{}", show(&reply));
    }
    assert_eq!(client.call(&[b"SET", b"\xc3\x00binary key", b"\r\n\xff"]), b"+OK\r\n");
    for (round, victim) in ["threads", "python", "rust"].into_iter().enumerate() {
        let pid = resh.replica(victim)["pid"].as_u64().expect("pid");
        resh_e2e::signal_pid(pid as u64, libc::SIGKILL).expect("kill");
        for i in 0..20 {
            let key = format!("during:{round}:{}", i % 3);
            assert!(client.call(&[b"INCR", key.as_bytes()]).starts_with(b":"));
            assert!(client.call(&[b"LPUSH", b"list:0", key.as_bytes()]).starts_with(b":"));
        }
        resh.wait_until(&format!("{victim} is rebuilt and votes"), Duration::from_secs(60), |r| {
            r.replica(victim)["vote"]["state"] == "voting" && r.replica(victim)["vote"]["incarnation"] == 2
        });
    }
    let log = resh.log();
    for victim in ["threads", "python", "rust"] {
        let copied = log.lines().any(|l| l.contains("copying the state of") && l.contains(&format!(" to {victim} ")));
        assert!(copied, "{victim} was not rebuilt by a checkpoint:\n{log}");
    }
    // The same keys, types and values in all three, read from each directly.
    let state = |name: &str| -> Vec<Vec<u8>> {
        let addr: SocketAddr = resh.replica(name)["addr"].as_str().and_then(|a| a.parse().ok()).expect("addr");
        let mut direct = Conn::connect(addr).expect("connect to a replica");
        let keys = direct.call(&[b"KEYS", b"*"]);
        let mut state = vec![keys.clone(), direct.call(&[b"DBSIZE"])];
        for key in sorted_keys(&keys).iter().skip(1) {
            // The element is "$len\r\nkey\r\n".
            let start = key.windows(2).position(|w| w == b"\r\n").expect("bulk") + 2;
            let key = &key[start..key.len() - 2];
            let kind = direct.call(&[b"TYPE", key]);
            let value = match &kind[..] {
                b"+list\r\n" => direct.call(&[b"LRANGE", key, b"0", b"-1"]),
                _ => direct.call(&[b"GET", key]),
            };
            state.extend([kind, direct.call(&[b"PTTL", key]), value]);
        }
        state
    };
    let rust = state("rust");
    assert_eq!(show(&rust[1]), show(b":214\r\n"), "200 strings, 4 lists, 1 binary key, 3 rounds of 3 counters");
    for other in ["threads", "python"] {
        assert_eq!(
            state(other).iter().map(|r| show(r)).collect::<Vec<_>>(),
            rust.iter().map(|r| show(r)).collect::<Vec<_>>(),
            "{other} differs from rust"
        );
    }
}
