#!/usr/bin/env bash
# Builds the aivault Debian package: release binaries, generated man pages
# and completions, and a staged tree that mirrors the install paths, packed
# with `dpkg-deb --build --root-owner-group`. No tool beyond cargo and
# dpkg-dev's usual companions (dpkg-deb, gzip; dpkg-shlibdeps if present).
#
#   packaging/build-deb.sh            # prints the path of the .deb last
#
# Environment:
#   AIVAULT_DEB_VERSION  package version (default: <workspace version>-1)
#   AIVAULT_DEB_OUT      output directory (default: $CARGO_TARGET_DIR/debian)
#   CARGO_TARGET_DIR     cargo's target directory (default: ./target)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

target=${CARGO_TARGET_DIR:-$repo/target}
crate_version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
version=${AIVAULT_DEB_VERSION:-$crate_version-1}
arch=$(dpkg --print-architecture)
out=${AIVAULT_DEB_OUT:-$target/debian}
stage=$out/stage-$version
deb=$out/aivault_${version}_${arch}.deb

echo "==> cargo build --release (aivaultd, aivault-jail, vaultctl, aivault-runner, aivault-gen)" >&2
cargo build --release --locked -q -p aivaultd -p aivault-client -p aivault-runner -p aivault-gen >&2
bin=$target/release

rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
umask 022

# install MODE SRC DEST (DEST relative to the staged root)
put() { install -D -m "$1" "$2" "$stage/$3"; }
gz() { gzip -9n <"$1" >"$stage/$2"; chmod 0644 "$stage/$2"; }

echo "==> staging $stage" >&2
put 0755 "$bin/aivaultd" usr/sbin/aivaultd
put 0755 "$bin/vaultctl" usr/bin/vaultctl
put 0755 "$bin/aivault-runner" usr/libexec/aivault/aivault-runner
put 0755 "$bin/aivault-jail" usr/libexec/aivault/aivault-jail
strip --strip-unneeded "$stage/usr/sbin/aivaultd" "$stage/usr/bin/vaultctl" \
    "$stage/usr/libexec/aivault/aivault-runner" "$stage/usr/libexec/aivault/aivault-jail" 2>/dev/null || true

put 0644 systemd/system/aivaultd.service usr/lib/systemd/system/aivaultd.service
put 0644 systemd/system/aivaultd.socket usr/lib/systemd/system/aivaultd.socket
put 0644 systemd/sysusers.d/aivault.conf usr/lib/sysusers.d/aivault.conf
put 0644 systemd/tmpfiles.d/aivault.conf usr/lib/tmpfiles.d/aivault.conf

# D-Bus: who may own and call org.aivault.Vault1, and its introspection data.
put 0644 packaging/dbus/org.aivault.Vault1.conf usr/share/dbus-1/system.d/org.aivault.Vault1.conf
put 0644 packaging/dbus/org.aivault.Vault1.xml usr/share/dbus-1/interfaces/org.aivault.Vault1.xml
# polkit: the action an approval through polkit needs (auth_self).
put 0644 packaging/polkit/org.aivault.approve.policy usr/share/polkit-1/actions/org.aivault.approve.policy

put 0644 packaging/etc/policy.toml etc/aivault/policy.toml
put 0644 packaging/etc/aivaultd.toml etc/aivault/aivaultd.toml
install -d -m 0755 "$stage/etc/aivault/policy.d"

doc=usr/share/doc/aivault
put 0644 packaging/debian/copyright "$doc/copyright"
put 0644 packaging/policy.example.toml "$doc/examples/policy.toml"
put 0644 packaging/examples/aivaultd-network.conf "$doc/examples/aivaultd-network.conf"
put 0644 packaging/examples/aivaultd-workdir.conf "$doc/examples/aivaultd-workdir.conf"
for f in README.md docs/policy.md docs/packaging.md docs/dbus.md; do
    [ -f "$f" ] && gz "$f" "$doc/$(basename "$f").gz"
done
printf 'aivault (%s) unstable; urgency=medium\n\n  * Built from the aivault repository.\n\n -- aivault maintainers <aivault@example.invalid>  %s\n' \
    "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
    >"$out/changelog.Debian"
gz "$out/changelog.Debian" "$doc/changelog.Debian.gz"

# Man pages and completions, generated from the clap definitions.
gen=$out/gen-$version
rm -rf "$gen"
"$bin/aivault-gen" "$gen" >/dev/null
for page in "$gen"/usr/share/man/man*/*.[18]; do
    rel=${page#"$gen"/}
    install -d -m 0755 "$stage/$(dirname "$rel")"
    gz "$page" "$rel.gz"
done
(cd "$gen" && find usr/share/bash-completion usr/share/zsh usr/share/fish -type f) |
    while read -r rel; do put 0644 "$gen/$rel" "$rel"; done
rm -rf "$gen"

# Maintainer scripts and metadata.
for s in postinst prerm postrm; do put 0755 "packaging/debian/$s" "DEBIAN/$s"; done
printf '%s\n' /etc/aivault/aivaultd.toml /etc/aivault/policy.toml >"$stage/DEBIAN/conffiles"
chmod 0644 "$stage/DEBIAN/conffiles"

shlibs=""
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    mkdir -p "$tmp/debian"
    printf 'Source: aivault\n\nPackage: aivault\nArchitecture: any\n' >"$tmp/debian/control"
    shlibs=$(cd "$tmp" && dpkg-shlibdeps -O "$stage/usr/sbin/aivaultd" "$stage/usr/bin/vaultctl" \
        "$stage/usr/libexec/aivault/aivault-runner" "$stage/usr/libexec/aivault/aivault-jail" 2>/dev/null | sed -n 's/^shlibs:Depends=//p') || true
    rm -rf "$tmp"
fi
if [ -z "$shlibs" ]; then
    glibc=$(objdump -T "$bin/aivaultd" "$bin/aivault-jail" "$bin/vaultctl" "$bin/aivault-runner" |
        grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
    shlibs="libc6 (>= $glibc), libgcc-s1 (>= 4.2)"
fi
# A RUSTC_WRAPPER in the environment (sccache, say) overrides the one that
# links these two statically: refuse to package dynamic ones by mistake.
for b in "$bin/vaultctl" "$bin/aivault-runner"; do
    if readelf -l "$b" | grep -q INTERP; then
        echo "build-deb.sh: $b is dynamically linked (is RUSTC_WRAPPER set?)" >&2
        exit 1
    fi
done
# vaultctl and aivault-runner are linked statically with glibc
# (scripts/rustc-wrapper): name the glibc they carry, as Debian policy asks,
# so a glibc security update can be traced to this package's rebuild.
built_using=""
glibc_source=$(dpkg-query -W -f='${source:Version}' libc6-dev 2>/dev/null) || true
if [ -n "$glibc_source" ]; then
    built_using="Built-Using: glibc (= $glibc_source)"
fi
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@SHLIBS@/$shlibs/" packaging/debian/control.in |
    awk -v bu="$built_using" '{ print } /^Depends:/ && bu != "" { print bu }' >"$stage/DEBIAN/control"
chmod 0644 "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

dpkg-deb --build --root-owner-group -Zxz "$stage" "$deb" >&2
rm -rf "$stage" "$out/changelog.Debian"
echo "$deb"
