#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests against the real
# daemon as root with real unprivileged users, and a bounded fuzz run.
# Installs what it needs first. Must run as root (the integration tests start
# aivaultd and switch to other uids); it fails, not skips, otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the test suite must run as root (it starts aivaultd and acts as other users)" >&2
  exit 1
fi

scripts/deps.sh

echo "==> building every binary (integration tests run the real aivaultd and vaultctl)"
cargo build --workspace --bins --locked

echo "==> cargo test (unit and integration)"
cargo test --workspace --locked -- --test-threads="${AIVAULT_TEST_THREADS:-4}"

echo "==> bounded fuzz run of the redactor"
redact/fuzz/run.sh "${AIVAULT_FUZZ_SECONDS:-30}"
