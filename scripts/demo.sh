#!/usr/bin/env bash
# The resh demo: three diverse versions of a key-value service (async Rust, Python asyncio,
# and redis-server or a threaded Rust version) behind resh in ordered mode. A workload checks
# every answer; half-way, a bug is planted in one version. Clients see only correct answers,
# resh names the faulty version, restarts it and replays the history to it. Exits 0 when all
# of that held.
#
# With --web, the web demo instead: nginx, lighttpd and our resh-web serving one site and JSON
# API behind resh in HTTP mode, a bug planted in resh-web's API half-way.
#
# Usage: ./scripts/demo.sh [--web] [--keep] [--seconds N] [--clients N]   (see `resh demo --help`)
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server is the third version when it is there; the demo works without it.
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing redis-server (the third version)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
    && { systemctl stop redis-server 2>/dev/null || service redis-server stop 2>/dev/null || true; }) \
    || echo "   (could not install it; the threaded Rust version stands in)"
fi
# The web demo's other two versions.
# (Debian keeps both in /usr/sbin, which a user's PATH may lack; resh looks there too.)
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
if [[ " $* " == *" --web "* ]] && ! { have nginx && have lighttpd; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing nginx and lighttpd (two of the web demo's three versions)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light lighttpd >/dev/null
    # The packages start system-wide servers; the demo starts its own.
    for service in nginx lighttpd; do
      systemctl stop "$service" 2>/dev/null || service "$service" stop 2>/dev/null || true
    done
  else
    echo "demo.sh: --web needs nginx and lighttpd: apt-get install nginx-light lighttpd" >&2
    exit 1
  fi
fi
echo "== building resh and the demo services (cargo build --release)"
cargo build --release -p resh -p demo   # the first build takes a few minutes
exec target/release/resh demo "$@"
