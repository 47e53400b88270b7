#!/usr/bin/env bash
# Installs what the `dbus` integration tests drive, if missing:
#   * Debian's dbus-daemon (the tests start a private, system-bus-like bus),
#     busctl (systemd) and gdbus (libglib2.0-bin),
#   * the third-party Python library dbus-next, in a venv of Debian's python3.
# Idempotent: does nothing (and needs no network) when all are present.
# Everything goes under $AIVAULT_DBUS_DEPS (default: target/dbus-deps in the
# workspace). Prints nothing on stdout but the final "ready" line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${AIVAULT_DBUS_DEPS:-$root/target/dbus-deps}"
venv="$deps/venv"
mkdir -p "$deps"

have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need=()
for pkg in dbus-daemon libglib2.0-bin systemd python3 python3-venv; do
  have_deb "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

# Debian's interpreter, not a per-user one: the tests run the client as
# unprivileged users, who cannot read an interpreter under /root.
py=/usr/bin/python3
[ -x "$py" ] || py="$(command -v python3)"
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv" >&2
  "$py" -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import dbus_next' 2>/dev/null; then
  echo "==> pip install dbus-next" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check dbus-next >&2
fi
echo "dbus deps ready in $deps"
