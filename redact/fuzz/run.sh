#!/usr/bin/env bash
# Fuzzes the redactor for a bounded time; exits non-zero on any finding.
#
#   redact/fuzz/run.sh [SECONDS]     (default 60)
#
# Only a stable toolchain is needed: cargo-fuzz is installed if missing and
# RUSTC_BOOTSTRAP=1 lets it pass its -Z flags. No sanitizer (`-s none`): the
# crate forbids unsafe code, the target checks logic (no secret survives, output
# independent of write sizes). Build time is not counted in SECONDS.
set -euo pipefail

secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
# Inside the checkout (ignored by git), never a fixed path under /tmp that
# another user could have prepared.
export CARGO_TARGET_DIR="${AIVAULT_FUZZ_TARGET_DIR:-$here/target}"

corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cp seeds/* "$corpus"/

cargo fuzz build -s none --release stream
cargo fuzz run -s none --release stream "$corpus" -- \
    -max_total_time="$secs" -max_len=2048 -timeout=10 -print_final_stats=1
