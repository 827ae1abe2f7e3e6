#!/usr/bin/env bash
# The resh demo: three diverse versions of a key-value service (async Rust, Python asyncio,
# and redis-server or a threaded Rust version) behind resh in ordered mode. A workload checks
# every answer; half-way, a bug is planted in one version. Clients see only correct answers,
# resh names the faulty version, restarts it and replays the history to it. Exits 0 when all
# of that held.
#
# Usage: ./scripts/demo.sh [--keep] [--seconds N] [--clients N]   (see `resh demo --help`)
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server is the third version when it is there; the demo works without it.
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing redis-server (the third version)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
    && { systemctl stop redis-server 2>/dev/null || service redis-server stop 2>/dev/null || true; }) \
    || echo "   (could not install it; the threaded Rust version stands in)"
fi
echo "== building resh and the demo services (cargo build --release)"
cargo build --release -p resh -p demo   # the first build takes a few minutes
exec target/release/resh demo "$@"
