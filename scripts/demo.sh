#!/usr/bin/env bash
# Builds aivault, starts aivaultd on an embedded default configuration in a
# scratch directory with a generated key file, and shows it working end to
# end as an unprivileged user. Run as root on Debian 12. Leaves nothing
# running and nothing behind: the scratch directory goes, and so does the
# demo user if this run created it.
#
# AIVAULT_DEMO_USER names the demo user (default aivault-demo); the
# automated test of this script (tests/tests/demo.rs) gives a fresh one.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh: run as root (aivaultd is a root daemon)" >&2; exit 1; }
scripts/deps.sh
echo "==> building aivault (cargo build --workspace --bins; the first build takes a few minutes)"
cargo build --workspace --bins --locked
bin=$PWD/target/debug

scratch=$(mktemp -d /tmp/aivault-demo.XXXXXX)
chmod 0755 "$scratch"
sock=$scratch/run/aivaultd.sock
args=(--state-dir "$scratch/state" --socket "$sock" --policy-dir "$scratch/policy"
      --audit-log "$scratch/log/audit.jsonl" --key-provider "file:$scratch/kek")
demo_user=${AIVAULT_DEMO_USER:-aivault-demo}
created_user=
if ! id "$demo_user" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$demo_user"
  created_user=1
fi

cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$scratch"
  if [ -n "$created_user" ]; then
    userdel "$demo_user" 2>/dev/null || echo "scripts/demo.sh: could not remove user $demo_user" >&2
  fi
}
trap cleanup EXIT

mkdir -p "$scratch/policy"
script='echo "the command sees: $GH_TOKEN"; printf %s "user:$GH_TOKEN" | base64; id -u'
cat > "$scratch/policy/policy.toml" <<POLICY
# Demo policy: one rule. The shell is an interpreter, so the rule must say
# knowingly that it is allowed, and it pins the exact script.
[[rule]]
name = "demo"
command = "/usr/bin/sh"
allow_interpreter = true
args = [{ exact = ["-c", '$script'] }]
users = ["$demo_user"]
secrets = [{ name = "GITHUB_TOKEN", scope = "user", env = "GH_TOKEN" }]
POLICY
chmod 0644 "$scratch/policy/policy.toml"

echo "==> aivaultd init (scratch directory $scratch, generated key file)"
"$bin/aivaultd" "${args[@]}" init
"$bin/aivaultd" "${args[@]}" 2>"$scratch/daemon.log" &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

as_user() { setpriv --reuid "$demo_user" --regid "$demo_user" --clear-groups -- env AIVAULT_SOCKET="$sock" "$bin/vaultctl" "$@"; }
echo "==> as $demo_user: store a secret (value on stdin, never in argv)"
printf 'ghp_demo_0123456789abcdefDEMO' | as_user secrets set GITHUB_TOKEN --description "demo token" --tag demo
echo "==> as $demo_user: vaultctl secrets list"
as_user secrets list
echo "==> as $demo_user: vaultctl secrets masked GITHUB_TOKEN"
as_user secrets masked GITHUB_TOKEN
echo "==> as $demo_user: vaultctl policy show"
as_user policy show
echo "==> as $demo_user: vaultctl run -- sh -c '<the pinned script>'   (runs under a fresh uid, sandboxed; output redacted)"
as_user run -- sh -c "$script"
echo "==> as $demo_user: vaultctl status"
as_user status
echo "==> as $demo_user: vaultctl audit list"
as_user audit list
echo "==> as root: vaultctl audit verify"
AIVAULT_SOCKET=$sock "$bin/vaultctl" audit verify
echo "==> the value is nowhere on disk in plaintext:"
if grep -rq "ghp_demo_0123456789abcdefDEMO" "$scratch"; then echo "LEAK" >&2; exit 1; else echo "   not found under $scratch"; fi
