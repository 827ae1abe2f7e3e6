#!/usr/bin/env bash
# The whole test suite of resh: formatting, lints, unit, property and end-to-end tests.
# Works on a fresh Debian 12 machine with a Rust toolchain; installs what else it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients and a third service version for the ordered-mode tests (Debian's redis).
need_apt=()
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # The package may start a system-wide redis; the tests start their own.
    systemctl stop redis-server 2>/dev/null || service redis-server stop 2>/dev/null || true
  else
    echo "test.sh: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --quiet
