#!/usr/bin/env bash
# Fuzzes the protocol decoders for a bounded time; exits non-zero on any
# finding.
#
#   proto/fuzz/run.sh [SECONDS]     (default 60)
#
# Like redact/fuzz/run.sh: a stable toolchain, cargo-fuzz installed if
# missing, RUSTC_BOOTSTRAP=1 for its -Z flags, no sanitizer (the crate
# forbids unsafe code; the target checks that decoding never panics and is
# a fixpoint). Build time is not counted in SECONDS. The seeds are valid
# encodings of each message kind, written by the proto crate's own encoder
# (`cargo run -p aivault-proto --example fuzz-seeds DIR`).
set -euo pipefail

secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
(cd .. && cargo run -q --locked -p aivault-proto --example fuzz-seeds "$corpus")

export RUSTC_BOOTSTRAP=1
# Inside the checkout (ignored by git), never a fixed path under /tmp that
# another user could have prepared.
export CARGO_TARGET_DIR="${AIVAULT_FUZZ_TARGET_DIR:-$here/target}"
cargo fuzz build -s none --release decode
cargo fuzz run -s none --release decode "$corpus" -- \
    -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1
