#!/usr/bin/env bash
# Installs the real upstream MCP servers the gateway's session tests drive,
# if missing:
#   * the official Python SDK (PyPI `mcp`, 2.x: the fixture uses its
#     `MCPServer`) in a venv of Debian's python3, for the Python fixture
#     server gateway/tests/fixtures/pyserver.py and the client test,
#   * the npm package `@modelcontextprotocol/server-everything` in a local
#     node_modules, run with the machine's node. Pinned: the tests call its
#     tools by name (echo, get-sum, trigger-long-running-operation), and
#     releases rename them.
# Idempotent: does nothing (and needs no network) when all are present.
# Everything goes under $AIVAULT_GATEWAY_DEPS (default: target/gateway-deps
# in the workspace). Prints nothing on stdout but the final "ready" line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${AIVAULT_GATEWAY_DEPS:-$root/target/gateway-deps}"
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

py=/usr/bin/python3
[ -x "$py" ] || py="$(command -v python3)"
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv" >&2
  "$py" -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import mcp.server.mcpserver' 2>/dev/null; then
  echo "==> pip install mcp" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check 'mcp>=2.3,<3' >&2
fi

mkdir -p "$nodedir"
everything_version=2026.8.31
pkg="$nodedir/node_modules/@modelcontextprotocol/server-everything/package.json"
if ! grep -q "\"version\": \"$everything_version\"" "$pkg" 2>/dev/null; then
  echo "==> npm install @modelcontextprotocol/server-everything@$everything_version" >&2
  [ -f "$nodedir/package.json" ] || echo '{"name":"aivault-gateway-test-deps","private":true}' >"$nodedir/package.json"
  (cd "$nodedir" && npm install --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/server-everything@$everything_version" >&2)
fi
ln -sfn "$(command -v node)" "$deps/node-bin"
echo "gateway deps ready in $deps"
