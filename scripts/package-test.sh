#!/usr/bin/env bash
# End-to-end test of the Debian package, on the real system (run as root on
# a throwaway machine; tests/tests/packaging.rs runs it under `cargo test`):
#
#  1. builds two versions of the .deb (packaging/build-deb.sh);
#  2. installs v1 with dpkg -i; checks every installed path, owner and mode,
#     the sealed credential and the vault postinst created;
#  3. systemd-analyze verify on every unit, and an exposure threshold;
#  4. man pages render, bash completion loads and completes;
#  5. runs the installed daemon the way systemd would — NOTIFY_SOCKET bound
#     here, WATCHDOG_USEC, CREDENTIALS_DIRECTORY with the decrypted
#     credential, the unit's CapabilityBoundingSet and NoNewPrivileges — and
#     observes READY=1, STATUS=, periodic WATCHDOG=1, SIGHUP → RELOADING=1 →
#     READY=1, STOPPING=1; meanwhile an unprivileged user stores, lists and
#     masks a secret and runs two allowed commands;
#  6. upgrades to v2 over it: the key, the vault and every secret survive;
#  7. dpkg -r keeps the state; dpkg --purge leaves nothing behind.
#
# Whatever happens, the package is purged and the test user removed at exit.
# Refuses to run if aivault state already exists on this machine (it would
# be deleted), unless AIVAULT_PKG_TEST_FORCE=1.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [ "$(id -u)" != 0 ]; then
    echo "package-test: must run as root (it installs a package into this system)" >&2
    exit 1
fi

passed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
fail() {
    echo "FAIL - $*" >&2
    echo "package-test: $passed passed, 1 failed" >&2
    exit 1
}
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

# ---------------------------------------------------------------- setup
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in man-db bash-completion python3 util-linux passwd dbus-daemon; do
    have "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi
py=/usr/bin/python3

user=aivault-pkgtest
tmp=$(mktemp -d /tmp/pkgtest.XXXXXX)
chmod 0755 "$tmp"
creds=""
daemon_pid=""
listener_pid=""
bus_pid=""

# Everything of ours that may exist outside the repository and target dir.
# /var/cache/man is man-db's cache of formatted pages, which man-db expires
# itself (the checks below render at a width it does not cache).
leftovers() {
    find /etc /usr /var /run \( -path /var/cache/man -o -path "$tmp" \) -prune -o \
        \( -name '*aivault*' -o -name 'vaultctl*' -o -name '_vaultctl' \) -print 2>/dev/null |
        grep -v -e "^$repo" -e "^${CARGO_TARGET_DIR:-$repo/target}" || true
}

stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
        daemon_pid=""
    fi
    if [ -n "$listener_pid" ]; then
        kill "$listener_pid" 2>/dev/null || true
        wait "$listener_pid" 2>/dev/null || true
        listener_pid=""
    fi
    if [ -n "$creds" ]; then rm -rf "$creds"; creds=""; fi
}

cleanup() {
    local rc=$?
    stop_daemon
    if [ -n "$bus_pid" ]; then kill "$bus_pid" 2>/dev/null || true; wait "$bus_pid" 2>/dev/null || true; fi
    if dpkg-query -W aivault >/dev/null 2>&1; then
        dpkg --purge aivault >/dev/null 2>&1 || true
    fi
    userdel "$user" >/dev/null 2>&1 || true
    # Formatted pages man-db may have cached while the checks rendered ours.
    rm -f /var/cache/man/cat[18]/aivaultd*.gz /var/cache/man/cat[18]/vaultctl*.gz
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

if dpkg-query -W -f='${Status}' aivault 2>/dev/null | grep -q "ok installed" ||
    [ -n "$(leftovers)" ]; then
    if [ "${AIVAULT_PKG_TEST_FORCE:-}" = 1 ]; then
        dpkg --purge aivault >/dev/null 2>&1 || true
        rm -rf /var/lib/aivault /var/log/aivault /etc/aivault /run/aivault
    else
        echo "package-test: aivault is installed or has state on this machine:" >&2
        leftovers >&2
        echo "package-test: refusing to delete it; set AIVAULT_PKG_TEST_FORCE=1 to do so" >&2
        exit 1
    fi
fi
id "$user" >/dev/null 2>&1 || useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$user"
as_user() { setpriv --reuid "$user" --regid "$user" --init-groups -- "$@"; }

# ---------------------------------------------------------------- 1. build
echo "==> building the packages"
deb1=$(AIVAULT_DEB_VERSION=0.0.1~pkgtest1 AIVAULT_DEB_OUT=$tmp/v1 packaging/build-deb.sh | tail -1)
deb2=$(AIVAULT_DEB_VERSION=0.0.1~pkgtest2 AIVAULT_DEB_OUT=$tmp/v2 packaging/build-deb.sh | tail -1)
check "built $deb1 and $deb2" test -f "$deb1" -a -f "$deb2"
check "dpkg-deb reads the control file and conffiles" \
    bash -c "dpkg-deb -f '$deb1' Depends | grep -q 'libc6' && dpkg-deb --ctrl-tarfile '$deb1' | tar -t | grep -qx './conffiles'"

# ---------------------------------------------------------------- 2. install
echo "==> dpkg -i v1"
dpkg -i "$deb1" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "dpkg -i $deb1"; }
check "postinst sealed a key and created a vault" \
    grep -q "sealed a new key-encryption key" "$tmp/install.log"
check "dpkg reports the package installed" \
    bash -c "dpkg-query -W -f='\${Status} \${Version}' aivault | grep -qx 'install ok installed 0.0.1~pkgtest1'"

# path  type  owner:group  mode
expected=(
    "/usr/sbin/aivaultd f root:root 755"
    "/usr/bin/vaultctl f root:root 755"
    "/usr/libexec/aivault d root:root 755"
    "/usr/libexec/aivault/aivault-runner f root:root 755"
    "/usr/libexec/aivault/aivault-jail f root:root 755"
    "/usr/lib/systemd/system/aivaultd.service f root:root 644"
    "/usr/lib/systemd/system/aivaultd.socket f root:root 644"
    "/usr/lib/sysusers.d/aivault.conf f root:root 644"
    "/usr/lib/tmpfiles.d/aivault.conf f root:root 644"
    "/etc/aivault d root:root 755"
    "/etc/aivault/policy.toml f root:root 644"
    "/etc/aivault/aivaultd.toml f root:root 644"
    "/etc/aivault/policy.d d root:root 755"
    "/etc/aivault/credentials d root:root 700"
    "/etc/aivault/credentials/aivault.kek f root:root 600"
    "/var/lib/aivault d root:root 700"
    "/var/lib/aivault/vault.redb f root:root 600"
    "/var/log/aivault d root:root 700"
    "/usr/share/doc/aivault/copyright f root:root 644"
    "/usr/share/doc/aivault/changelog.Debian.gz f root:root 644"
    "/usr/share/doc/aivault/examples/policy.toml f root:root 644"
    "/usr/share/doc/aivault/examples/aivaultd-network.conf f root:root 644"
    "/usr/share/man/man8/aivaultd.8.gz f root:root 644"
    "/usr/share/man/man1/vaultctl.1.gz f root:root 644"
    "/usr/share/man/man1/vaultctl-secrets-set.1.gz f root:root 644"
    "/usr/share/bash-completion/completions/vaultctl f root:root 644"
    "/usr/share/bash-completion/completions/aivaultd f root:root 644"
    "/usr/share/zsh/vendor-completions/_vaultctl f root:root 644"
    "/usr/share/zsh/vendor-completions/_aivaultd f root:root 644"
    "/usr/share/fish/vendor_completions.d/vaultctl.fish f root:root 644"
    "/usr/share/fish/vendor_completions.d/aivaultd.fish f root:root 644"
    "/usr/share/polkit-1/actions/org.aivault.approve.policy f root:root 644"
)
for line in "${expected[@]}"; do
    read -r path type owner mode <<<"$line"
    if [ "$type" = d ]; then test -d "$path" || fail "$path is not a directory"; else
        test -f "$path" || fail "$path is not a regular file"; fi
    got=$(stat -c '%U:%G %a' "$path")
    [ "$got" = "$owner $mode" ] || fail "$path is $got, expected $owner $mode"
done
ok "${#expected[@]} installed paths have the expected type, owner and mode"
bad=$(dpkg -L aivault | xargs -d '\n' -I{} find {} -maxdepth 0 \( ! -user root -o ! -group root -o -perm /022 \) -print)
check "every packaged path is root:root and not group/world-writable${bad:+: $bad}" test -z "$bad"
check "dpkg --verify finds no modified packaged file" bash -c "[ -z \"\$(dpkg --verify aivault)\" ]"
check "the installed policy allows nothing (comments only)" \
    bash -c "! grep -qv -e '^#' -e '^\$' /etc/aivault/policy.toml"
check "conffiles are the policy and the daemon settings" \
    bash -c "[ \"\$(dpkg-query -W -f='\${Conffiles}' aivault | awk 'NF {print \$1}' | sort | tr '\n' ' ')\" = '/etc/aivault/aivaultd.toml /etc/aivault/policy.toml ' ]"
check "the credential is sealed (not the raw 32-byte key) and decrypts to 32 bytes" \
    bash -c "[ \$(stat -c %s /etc/aivault/credentials/aivault.kek) -gt 64 ] && [ \$(systemd-creds decrypt --name=aivault.kek /etc/aivault/credentials/aivault.kek - | wc -c) = 32 ]"
check "aivaultd --check-config accepts the installed configuration" \
    bash -c "/usr/sbin/aivaultd --check-config | grep -q 'every run is refused'"
check "the service is enabled (multi-user.target.wants), the socket is not" \
    bash -c "[ -L /etc/systemd/system/multi-user.target.wants/aivaultd.service ] && [ ! -e /etc/systemd/system/sockets.target.wants/aivaultd.socket ]"

# ---------------------------------------------------------------- 3. units
verify_out=$(systemd-analyze verify /usr/lib/systemd/system/aivaultd.service \
    /usr/lib/systemd/system/aivaultd.socket 2>&1) || fail "systemd-analyze verify: $verify_out"
[ -z "$verify_out" ] || fail "systemd-analyze verify warns: $verify_out"
ok "systemd-analyze verify passes on aivaultd.service and aivaultd.socket, without warnings"
check "systemd-analyze security rates the service's exposure at most 2.5" \
    bash -c "systemd-analyze security --offline=yes --threshold=25 /usr/lib/systemd/system/aivaultd.service >'$tmp/security.log' 2>&1"
check "systemd-tmpfiles and systemd-sysusers accept the packaged entries" \
    bash -c "systemd-tmpfiles --create /usr/lib/tmpfiles.d/aivault.conf && systemd-sysusers /usr/lib/sysusers.d/aivault.conf"

# ---------------------------------------------------------------- 4. docs
check "man aivaultd renders and documents --key-provider" \
    bash -c "MANWIDTH=100 MANPAGER=cat man aivaultd 2>/dev/null | grep -q -- '--key-provider'"
check "man vaultctl renders and lists its subcommands" \
    bash -c "MANWIDTH=100 MANPAGER=cat man vaultctl 2>/dev/null | grep -q 'vaultctl-secrets(1)'"
check "man vaultctl-secrets-set renders" \
    bash -c "MANWIDTH=100 MANPAGER=cat man vaultctl-secrets-set 2>/dev/null | grep -q 'never taken from the command line'"
check "man -l renders the installed aivaultd.8.gz" \
    bash -c "MANWIDTH=100 man -l /usr/share/man/man8/aivaultd.8.gz 2>/dev/null | grep -q 'AIVAULTD\\|aivaultd'"
check "bash completion loads: complete -p vaultctl" \
    bash -c "source /usr/share/bash-completion/completions/vaultctl && complete -p vaultctl | grep -q 'vaultctl'"
check "bash completion completes 'vaultctl sec' to secrets" \
    bash -c "source /usr/share/bash-completion/completions/vaultctl
             COMP_WORDS=(vaultctl sec); COMP_CWORD=1; COMP_LINE='vaultctl sec'; COMP_POINT=12
             _vaultctl vaultctl sec vaultctl; printf '%s\n' \"\${COMPREPLY[@]}\" | grep -qx secrets"

# ---------------------------------------------------------------- 5. serve
unit=/usr/lib/systemd/system/aivaultd.service
bounding=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit" | tr 'A-Z' 'a-z' | sed -e 's/cap_/+/g' -e 's/ /,/g')
[ -n "$bounding" ] || fail "no CapabilityBoundingSet= in $unit"
grep -qx 'NoNewPrivileges=yes' "$unit" || fail "the unit no longer sets NoNewPrivileges=yes"
grep -qx 'UMask=0077' "$unit" || fail "the unit no longer sets UMask=0077"

# start_daemon: as systemd would start aivaultd.service (without the mount
# and seccomp sandbox, which need systemd as PID 1).
start_daemon() {
    : >"$tmp/notify.log"
    rm -f "$tmp/notify.sock"
    "$py" -u -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as log:
    while True:
        msg = s.recv(4096).decode(errors="replace")
        for line in msg.splitlines():
            log.write("%.3f %s\n" % (time.monotonic(), line))
        log.flush()
' "$tmp/notify.sock" "$tmp/notify.log" &
    listener_pid=$!
    for _ in $(seq 100); do [ -S "$tmp/notify.sock" ] && break; sleep 0.05; done
    # RuntimeDirectory=aivault (0755) and LoadCredentialEncrypted=: systemd
    # decrypts into a private, root-only directory.
    install -d -m 0755 /run/aivault
    creds=$(mktemp -d /run/pkgtest-creds.XXXXXX)
    systemd-creds decrypt --name=aivault.kek /etc/aivault/credentials/aivault.kek "$creds/aivault.kek"
    chmod 0400 "$creds/aivault.kek"
    # exec keeps the subshell's pid, which systemd would pass as WATCHDOG_PID.
    (
        umask 0077
        exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            NOTIFY_SOCKET="$tmp/notify.sock" WATCHDOG_USEC=1000000 WATCHDOG_PID="$BASHPID" \
            CREDENTIALS_DIRECTORY="$creds" DBUS_SYSTEM_BUS_ADDRESS="$bus_address" \
            setpriv --bounding-set "-all,$bounding" --inh-caps=-all --no-new-privs \
            /usr/sbin/aivaultd
    ) 2>>"$tmp/daemon.log" &
    daemon_pid=$!
    wait_for "READY=1" 1 || { cat "$tmp/daemon.log" >&2; fail "no READY=1 within 15 s"; }
}

# wait_for MESSAGE N: until the notify log holds MESSAGE at least N times.
wait_for() {
    for _ in $(seq 300); do
        [ "$(grep -c -x "[0-9.]* $1" "$tmp/notify.log" || true)" -ge "$2" ] && return 0
        sleep 0.05
    done
    return 1
}

# A private bus set up like the system bus (default deny), loading the bus
# policy file exactly where the package installed it.
sed -e "s|@SOCKET@|$tmp/system_bus_socket|" \
    -e "s|@POLICY@|/usr/share/dbus-1/system.d/org.aivault.Vault1.conf|" \
    tests/dbus/system-like.conf.in >"$tmp/bus.conf"
dbus-daemon --config-file="$tmp/bus.conf" --nofork --print-address >"$tmp/bus.address" 2>"$tmp/bus.log" &
bus_pid=$!
for _ in $(seq 100); do [ -s "$tmp/bus.address" ] && break; sleep 0.05; done
bus_address=$(head -1 "$tmp/bus.address")
check "a private system-like bus accepts the installed bus policy file" test -n "$bus_address"
as_bus() { as_user env DBUS_SYSTEM_BUS_ADDRESS="$bus_address" busctl --system "$@"; }

echo "==> running the installed daemon as systemd would"
start_daemon
ok "READY=1 from the installed daemon (bounding set: $bounding, no_new_privs)"
check "STATUS= says it is ready" grep -q '^[0-9.]* STATUS=ready' "$tmp/notify.log"
check "periodic WATCHDOG=1 (three within 4 s at WATCHDOG_USEC=1s)" wait_for "WATCHDOG=1" 3

secret='pkgtest-value-0123456789WXYZ'
printf '%s' "$secret" | as_user vaultctl secrets set PKG_TOKEN --description "package test" ||
    fail "vaultctl secrets set as $user"
printf '%s' 'second-secret-value-ABCD' | as_user vaultctl secrets set OTHER_TOKEN ||
    fail "vaultctl secrets set OTHER_TOKEN as $user"
as_user vaultctl secrets list >"$tmp/list1" || fail "vaultctl secrets list"
check "vaultctl secrets list shows both names, not the values" \
    bash -c "grep -q PKG_TOKEN '$tmp/list1' && grep -q OTHER_TOKEN '$tmp/list1' && ! grep -q '$secret' '$tmp/list1'"
masked1=$(as_user vaultctl secrets masked PKG_TOKEN) || fail "vaultctl secrets masked"
check "vaultctl secrets masked shows at most the last 4 characters ($masked1)" \
    bash -c "[[ '$masked1' == *WXYZ ]] && [[ '$masked1' != *9WXYZ* ]]"
check "vaultctl status identifies the caller by its kernel uid" \
    bash -c "setpriv --reuid $user --regid $user --init-groups -- vaultctl status | grep -q \"\$(id -u $user)\""

echo "==> policy drop-in, then SIGHUP"
cat >/etc/aivault/policy.d/50-pkgtest.toml <<EOF
[[rule]]
name = "pkgtest-id"
command = "/usr/bin/id"
args = [{ exact = ["-u"] }]
users = ["$user"]

[[rule]]
name = "pkgtest-printenv"
command = "/usr/bin/printenv"
allow_interpreter = true
args = [{ exact = ["PKG_TOKEN"] }]
users = ["$user"]
secrets = [{ name = "PKG_TOKEN", scope = "user", env = "PKG_TOKEN" }]

[rule.sandbox]
timeout = "20s"
EOF
chmod 0644 /etc/aivault/policy.d/50-pkgtest.toml
kill -HUP "$daemon_pid"
wait_for "RELOADING=1" 1 || fail "no RELOADING=1 after SIGHUP"
wait_for "READY=1" 2 || fail "no READY=1 after RELOADING=1"
check "SIGHUP: RELOADING=1, then READY=1" \
    bash -c "grep -x -e '[0-9.]* RELOADING=1' -e '[0-9.]* READY=1' '$tmp/notify.log' | sed 's/^[0-9.]* //' | tr '\n' ' ' | grep -q 'READY=1 RELOADING=1 READY=1'"

run_uid=$(as_user vaultctl run -- id -u 2>"$tmp/run.err") || { cat "$tmp/run.err" "$tmp/daemon.log" >&2; fail "vaultctl run id -u"; }
check "vaultctl run: the command ran under a per-run uid (${run_uid}), not the caller's" \
    bash -c "[ '$run_uid' -ge 1879048192 ] && [ '$run_uid' != \"\$(id -u $user)\" ]"
run_out=$(as_user vaultctl run -- printenv PKG_TOKEN 2>"$tmp/run.err") || { cat "$tmp/run.err" "$tmp/daemon.log" >&2; fail "vaultctl run printenv"; }
check "vaultctl run: the secret reached the command and came back redacted ($run_out)" \
    bash -c "[ '$run_out' = '[REDACTED:PKG_TOKEN]' ]"
check "the policy refuses a command no rule allows" \
    bash -c "! setpriv --reuid $user --regid $user --init-groups -- vaultctl run -- /usr/bin/whoami >/dev/null 2>&1"
owned=false
for _ in $(seq 100); do
    [ "$(busctl --address="$bus_address" call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s org.aivault.Vault1 2>/dev/null)" = "b true" ] && { owned=true; break; }
    sleep 0.1
done
check "the installed daemon owns org.aivault.Vault1 on the bus" $owned
bus_out=$(as_bus call org.aivault.Vault1 /org/aivault/Vault1 org.aivault.Vault1 Run 'asa{sv}' 2 printenv PKG_TOKEN 0 2>&1) ||
    { cat "$tmp/daemon.log" >&2; fail "busctl Run as $user: $bus_out"; }
check "D-Bus: busctl as $user runs printenv and gets redacted output ($bus_out)" \
    test "$bus_out" = 'isssb 0 "exited" "[REDACTED:PKG_TOKEN]\n" "" false'
bus_err=$(as_bus call org.aivault.Vault1 /org/aivault/Vault1 org.aivault.Vault1 Run 'asa{sv}' 1 /usr/bin/whoami 0 2>&1) || true
check "D-Bus: a command no rule allows is refused ($bus_err)" \
    bash -c "[[ '$bus_err' == *'no rule allows /usr/bin/whoami'* ]]"
# Left after the runs: only the warm runners' directories (root's status
# names their uids), each one owned by its uid.
runs_left() {
    local want have
    want=$(vaultctl status --json | python3 -c 'import json,sys; print(" ".join(sorted(str(u) for u in json.load(sys.stdin)["warm_runner_uids"])))')
    have=$(ls -A /run/aivault/runs 2>/dev/null | sort | xargs)
    [ -n "$want" ] && [ "$want" = "$have" ] || return 1
    for uid in $want; do [ "$(stat -c %u /run/aivault/runs/$uid)" = "$uid" ] || return 1; done
}
settled=false
for _ in $(seq 50); do runs_left && { settled=true; break; }; sleep 0.1; done
check "after the runs only the warm runners' directories are left (teardown works with the unit's capabilities)" $settled

kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=""
check "SIGTERM: STOPPING=1, and aivaultd exits 0 (rc $rc)" \
    bash -c "[ $rc = 0 ] && grep -q '^[0-9.]* STOPPING=1' '$tmp/notify.log'"
check "SIGTERM ends the warm runners: no run directory is left" \
    bash -c "[ -z \"\$(ls -A /run/aivault/runs 2>/dev/null)\" ]"
stop_daemon

# ---------------------------------------------------------------- 6. upgrade
echo "==> dpkg -i v2 over v1"
cred_sum=$(sha256sum /etc/aivault/credentials/aivault.kek)
vault_sum=$(sha256sum /var/lib/aivault/vault.redb)
dpkg -i "$deb2" >"$tmp/upgrade.log" 2>&1 || { cat "$tmp/upgrade.log"; fail "dpkg -i $deb2"; }
check "the upgrade installed v2" \
    bash -c "[ \"\$(dpkg-query -W -f='\${Version}' aivault)\" = 0.0.1~pkgtest2 ]"
check "the upgrade sealed no new key and created no vault" \
    bash -c "! grep -q -e 'sealed a new' -e 'created an empty vault' '$tmp/upgrade.log'"
check "the upgrade left the sealed key and the vault byte for byte" \
    bash -c "[ '$cred_sum' = \"\$(sha256sum /etc/aivault/credentials/aivault.kek)\" ] && [ '$vault_sum' = \"\$(sha256sum /var/lib/aivault/vault.redb)\" ]"
start_daemon
as_user vaultctl secrets list >"$tmp/list2" || fail "vaultctl secrets list after the upgrade"
check "after the upgrade every secret is still listed" diff "$tmp/list1" "$tmp/list2"
masked2=$(as_user vaultctl secrets masked PKG_TOKEN) || fail "vaultctl secrets masked after the upgrade"
check "after the upgrade the masked value is unchanged ($masked2)" test "$masked1" = "$masked2"
run_out=$(as_user vaultctl run -- printenv PKG_TOKEN 2>/dev/null) || fail "vaultctl run after the upgrade"
check "after the upgrade the secret still decrypts and reaches a run" test "$run_out" = '[REDACTED:PKG_TOKEN]'
stop_daemon

# ---------------------------------------------------------------- 7. remove, purge
echo "==> dpkg -r, then dpkg --purge"
dpkg -r aivault >"$tmp/remove.log" 2>&1 || { cat "$tmp/remove.log"; fail "dpkg -r"; }
check "remove: the binaries are gone" bash -c "[ ! -e /usr/sbin/aivaultd ] && [ ! -e /usr/bin/vaultctl ]"
check "remove: the vault, the sealed key, the audit log and the policy stay" \
    bash -c "[ -f /var/lib/aivault/vault.redb ] && [ -f /etc/aivault/credentials/aivault.kek ] && [ -f /var/log/aivault/audit.jsonl ] && [ -f /etc/aivault/policy.toml ]"
dpkg --purge aivault >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log"; fail "dpkg --purge"; }
check "purge says what it deletes" grep -q "purging: deleting the vault" "$tmp/purge.log"
left=$(leftovers)
check "purge leaves nothing behind${left:+: $left}" test -z "$left"
check "dpkg no longer knows the package" bash -c "! dpkg-query -W -f='\${Status}' aivault 2>/dev/null | grep -q 'ok installed'"

echo "package-test: $passed passed, 0 failed"
