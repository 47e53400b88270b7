#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests against the real
# daemon as root with real unprivileged users, and bounded fuzz runs.
# Installs what it needs first. Must run as root (the integration tests start
# aivaultd and switch to other uids); it fails, not skips, otherwise.
#
# Every test binary runs even when an earlier one fails (--no-fail-fast); the
# last line is one summary over all of them, `N passed, M failed`, and the
# exit status is non-zero if any test or fuzz run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the test suite must run as root (it starts aivaultd and acts as other users)" >&2
  exit 1
fi

scripts/deps.sh

echo "==> building every binary (integration tests run the real aivaultd and vaultctl)"
cargo build --workspace --bins --locked

log="$(mktemp)"
AIVAULT_NOT_TESTED_LOG="$(mktemp)"
export AIVAULT_NOT_TESTED_LOG
trap 'rm -f "$log" "$AIVAULT_NOT_TESTED_LOG"' EXIT
status=0
echo "==> cargo test (unit and integration)"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${AIVAULT_TEST_THREADS:-4}" 2>&1 |
  tee "$log" || status=1

fuzz_failed=0
echo "==> bounded fuzz run of the redactor"
redact/fuzz/run.sh "${AIVAULT_FUZZ_SECONDS:-30}" || fuzz_failed=$((fuzz_failed + 1))
echo "==> bounded fuzz run of the protocol decoders"
proto/fuzz/run.sh "${AIVAULT_FUZZ_SECONDS:-30}" || fuzz_failed=$((fuzz_failed + 1))

# "test result: ok. 12 passed; 0 failed; ..." — one line per test binary
# and doc-test set. A binary that crashed prints no result line: cargo then
# reports it, and its failure shows in the exit status.
read -r passed failed binaries < <(awk '
  /^test result: / {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p += $(i - 1)
      if ($(i) ~ /^failed;?$/) f += $(i - 1)
    }
    n++
  }
  END { printf "%d %d %d\n", p, f, n }' "$log")
# Checks a test could not make on this kernel, said by the test itself.
if [ -s "$AIVAULT_NOT_TESTED_LOG" ]; then
  echo "==> not tested on this machine:"
  sort -u "$AIVAULT_NOT_TESTED_LOG"
fi
# The failing tests by name, so the end of the output says which ones.
if grep -q -E '^test .* FAILED$' "$log"; then
  echo "==> failed tests:"
  grep -E '^test .* FAILED$' "$log" | sed -e 's/^test /  /' -e 's/ \.\.\. FAILED$//'
  echo "==> why (first lines of each panic):"
  grep -A4 -E "panicked at" "$log" | cut -c1-400 | head -n 80
fi
if [ "$fuzz_failed" -gt 0 ]; then
  echo "==> $fuzz_failed fuzz run(s) failed"
  status=1
fi
if [ "$failed" -gt 0 ] || [ "$binaries" -eq 0 ]; then
  status=1
fi
echo "$passed passed, $((failed + fuzz_failed)) failed"
exit "$status"
