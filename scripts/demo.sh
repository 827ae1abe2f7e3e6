#!/usr/bin/env bash
# The resh demo: three replicas of an echo service behind resh, one of which corrupts a byte
# of every answer. A client sends traffic through resh; it gets only correct bytes, and resh
# names the faulty replica, repairs it and readmits it. Exits 0 when all of that held.
#
# Usage: ./scripts/demo.sh [--keep]   (--keep: leave resh running and print its addresses)
set -euo pipefail
cd "$(dirname "$0")/.."
keep=${1:-}

echo "== building resh (cargo build --release)"
cargo build --release --quiet -p netdomain -p demo
bin=$PWD/target/release
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/resh.toml" <<TOML
listen = "127.0.0.1:0"
[vote]
quorum = 2
[admin]
listen = "127.0.0.1:0"
[[replica]]
name = "a"
command = ["$bin/resh-echo", "--port", "{port}"]
[[replica]]
name = "b"
command = ["$bin/resh-echo", "--port", "{port}"]
[[replica]]
name = "c"
# The faulty one: flips a bit of byte 100 of every answer, like a bad memory cell would.
command = ["$bin/resh-echo", "--port", "{port}", "--corrupt-at", "100"]
TOML

echo "== starting resh with three echo replicas (c is faulty)"
"$bin/resh" run -c "$work/resh.toml" > "$work/out" 2> "$work/log" &
echo $! > "$work/pid"
for _ in $(seq 100); do grep -q "admin on" "$work/out" 2>/dev/null && break; sleep 0.1; done
clients=$(sed -n 's/^resh: clients on //p' "$work/out")
admin=$(sed -n 's/^resh: admin on //p' "$work/out")
[ -n "$clients" ] && [ -n "$admin" ] || { cat "$work/log"; echo "resh did not start"; exit 1; }
echo "   clients: $clients   admin: $admin"

echo "== 20 clients send 64 KiB each through resh"
python3 - "$clients" "$admin" <<'PY'
import json, os, socket, sys, time, urllib.request
host, port = sys.argv[1].rsplit(":", 1)
admin = sys.argv[2]
ok = 0
for i in range(20):
    data = os.urandom(64 * 1024)
    s = socket.create_connection((host, int(port)))
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    ok += got == data
    print(f"\r   client {i + 1:2}/20: {'correct' if got == data else 'WRONG'}", end="", flush=True)
    time.sleep(0.15)
print()
status = json.load(urllib.request.urlopen(admin + "/status"))
print(f"== {ok}/20 clients got exactly what they sent")
print(f"   verdicts: {status['verdicts']}")
for r in status["replicas"]:
    faults = {k: n for k, n in r["faults"] if n}
    print(f"   replica {r['name']}: state={r['state']} sessions={r['sessions']} restarts={r['restarts']} faults={faults or 'none'}")
for f in status["recent_faults"][:3]:
    print(f"   fault: session {f['session']}: {f['detail']}")
c = next(r for r in status["replicas"] if r["name"] == "c")
caught = dict(c["faults"])["diverged"] > 0
sys.exit(0 if ok == 20 and caught else 1)
PY
echo "== the faulty replica was outvoted, named and restarted; no client saw a wrong byte"
if [ "$keep" = "--keep" ]; then
  echo "resh keeps running: clients on $clients, admin on $admin (Ctrl-C to stop)"
  wait "$(cat "$work/pid")"
fi
