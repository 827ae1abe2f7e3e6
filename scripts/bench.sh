#!/usr/bin/env bash
# resh's benchmarks: `resh bench` (resh against the service alone and HAProxy) on a release
# build. Installs Debian's haproxy when it can; without it the HAProxy target is skipped.
# Arguments go to `resh bench` (e.g. --rounds 1 --seconds 2, --json, --only direct,resh1).
#
# `scripts/bench.sh --dresh [--seconds N --rounds N --connections N]` runs the D-RESH benchmark
# instead: three hosts against one, in network namespaces (root; the packages scripts/test.sh
# installs: corosync, its client libraries, redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--dresh" ]; then
  shift
  cargo build --release --quiet -p resh -p demo --bins --features resh/corosync
  cargo build --release --quiet -p resh-e2e --bin dresh-bench
  exec target/release/dresh-bench "$@"
fi

if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
    # The package may start a system-wide haproxy; the bench starts its own.
    systemctl stop haproxy 2>/dev/null || service haproxy stop 2>/dev/null || true
  else
    echo "bench.sh: haproxy is not installed (apt-get install haproxy); its target is skipped" >&2
  fi
fi
cargo build --release --quiet -p resh -p demo --bins
exec target/release/resh bench "$@"
