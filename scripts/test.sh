#!/usr/bin/env bash
# The whole test suite of resh: formatting, lints, unit, property and end-to-end tests.
# Works on a fresh Debian 12 machine with a Rust toolchain; installs what else it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients and a third service version for the ordered-mode tests (Debian's redis).
need_apt=()
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The group crate's Corosync engine (the CPG client libraries, linked at build time) and the
# daemons of the multi-host tests, which run in network namespaces (iproute2, util-linux).
command -v corosync >/dev/null || need_apt+=(corosync)
for lib in cpg corosync_common quorum votequorum cfg cmap; do
  [ -e "/usr/lib/$(uname -m)-linux-gnu/lib$lib.so" ] || need_apt+=("lib${lib//_/-}-dev")
done
command -v ip >/dev/null || need_apt+=(iproute2)
# HTTP mode's tests: two of the three web servers, and real clients (curl, wrk).
[ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
[ -x /usr/sbin/lighttpd ] || need_apt+=(lighttpd)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
# Python for the demo's diverse version and for redis-py (a real client library, from PyPI) in
# a virtual environment of its own.
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # The packages may start system-wide servers; the tests start their own.
    for service in redis-server corosync nginx lighttpd; do
      systemctl stop "$service" 2>/dev/null || service "$service" stop 2>/dev/null || true
    done
  else
    echo "test.sh: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi
# redis-py, pinned, for the Redis-fidelity tests (tests/redis_fidelity.rs).
if ! target/redis-py/bin/python -c 'import redis' 2>/dev/null; then
  rm -rf target/redis-py
  python3 -m venv target/redis-py
  target/redis-py/bin/pip install -q --disable-pip-version-check redis==5.2.1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# D-RESH over Corosync is a feature (it links the Corosync libraries): linted and unit-tested
# with it too; the end-to-end tests build the resh binary with it.
cargo clippy -p group -p netdomain -p resh --features group/corosync,netdomain/corosync,resh/corosync --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --quiet
cargo test -p netdomain --features corosync --lib --quiet
