#!/usr/bin/env bash
# Supply-chain checks with cargo-deny against deny.toml: licences, bans and
# sources always; RustSec advisories only when a local copy of the advisory
# database is given, because the database lives on GitHub and CI cannot reach
# it. Either way the last line says whether advisories were checked.
#
#   scripts/deny.sh                                          # licences, bans, sources
#   AIVAULT_ADVISORY_DB=$HOME/advisory-db scripts/deny.sh    # and advisories, offline
#
# AIVAULT_ADVISORY_DB is a git clone (not bare) of
# https://github.com/rustsec/advisory-db; see docs/supply-chain.md. If it is
# set but unusable, or older than deny.toml allows, the script fails rather
# than skipping the check.
#
# Installs cargo-deny (pinned below, because deny.toml's format follows its
# version) with `cargo install --locked` when it is missing or another version.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $version" ]; then
  echo "==> installing cargo-deny $version"
  # Outside the workspace, so its .cargo/config.toml and rust-version do not
  # apply to the install.
  (cd / && cargo install --locked cargo-deny --version "$version")
fi

cargo deny --locked check licenses bans sources

if [ -z "${AIVAULT_ADVISORY_DB:-}" ]; then
  echo "==> advisories NOT checked: AIVAULT_ADVISORY_DB is not set, and the RustSec database cannot be fetched here (it is on GitHub)"
  exit 0
fi

db=$AIVAULT_ADVISORY_DB
if [ ! -d "$db/crates" ] || [ ! -e "$db/.git" ]; then
  echo "scripts/deny.sh: AIVAULT_ADVISORY_DB=$db is not a clone of the RustSec advisory database (no crates/ or .git)" >&2
  exit 1
fi
command -v git >/dev/null || { echo "scripts/deny.sh: git is required to check advisories" >&2; exit 1; }
db=$(cd "$db" && pwd -P)

# deny.toml's db-path. cargo-deny looks for the default database
# (https://github.com/rustsec/advisory-db) in a directory under it whose name
# hashes that URL; for the version above it is this one. A wrong name fails
# the check ("failed to find expected `crates` directory"), it cannot pass it.
root=target/advisory-dbs
link=$root/advisory-db-3157b0e258782691
mkdir -p "$root"
rm -rf "$link"
ln -s "$db" "$link"
# An online run of cargo-deny would fetch into the clone through the link.
trap 'rm -f "$link"' EXIT

# --offline: open the database as it is, never fetch it; cargo-deny then
# refuses a database older than advisories.maximum-db-staleness.
cargo deny --locked --offline check advisories
echo "==> advisories checked against $db ($(git -C "$db" log -1 --format='commit %h of %cs'))"
