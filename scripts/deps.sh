#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, if any is missing.
# Idempotent; does nothing (and needs no network) when all are present.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# The interpreter-guard test (tests/tests/interp.rs) tries a rule for each
# launcher, interpreter and compiler it finds; these small packages provide
# the common ones (none starts a service).
guard=(jq sqlite3 gawk mawk busybox sed vim-tiny ed less make gdb tcl lua5.4
  gcc libcap2-bin e2fsprogs sudo findutils git tar curl openssh-client)
# The broker tests (tests/tests/broker.rs) drive the local endpoint with curl
# (in the list above), over its Unix socket and loopback TCP.
# The approval tests (tests/tests/approval.rs) run a real polkitd and its
# text agent pkttyagent (both in Debian's polkitd package).
approval=(polkitd)
for pkg in passwd util-linux python3 ca-certificates "${guard[@]}" "${approval[@]}"; do
  have "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "scripts/deps.sh: cargo (the Rust toolchain) is required" >&2; exit 1; }
