#!/usr/bin/env bash
# Runs every benchmark behind docs/benchmarks.md, in one go, on this machine.
# Release build; as root (the daemon benchmarks start aivaultd and act as
# other users). Figures are printed; copy them into docs/benchmarks.md with
# the date and the machine's load. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/bench.sh: run as root" >&2; exit 1; }
scripts/deps.sh
echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release --locked --workspace --bins --examples
# Each benchmark starts on a settled machine: the previous one's writes
# (thousands of fsynced records and vault files) flushed, its processes gone.
settle() { sync; sleep 3; }
echo "==> foundation (socket round trips, durable writes)"
./target/release/examples/bench_foundation
settle
echo "==> vault storage at 100, 10,000 and 100,000 secrets"
./target/release/examples/bench_store
settle
echo "==> run path"
./target/release/examples/bench_run
settle
echo "==> run path with 1,000 secrets"
./target/release/examples/bench_run_secrets
settle
echo "==> MCP"
./target/release/examples/bench_mcp
settle
echo "==> HTTP broker"
./target/release/examples/bench_broker
settle
echo "==> MCP gateway"
./target/release/examples/bench_gateway
settle
echo "==> D-Bus"
scripts/dbus-deps.sh >/dev/null
./target/release/examples/bench_dbus
settle
echo "==> redaction engine"
cargo bench --locked -p aivault-redact --bench throughput
echo "==> load after: $(cut -d' ' -f1-3 /proc/loadavg)"
