#!/usr/bin/env bash
# Unpacks qemu-system-x86_64 (and the libraries and firmware it needs that this host lacks)
# into DIR without installing it: Debian's qemu-system-x86 package would replace the host's
# qemu-utils. tests/live_migration.rs runs it from there (UDRBD_QEMU_ROOT=DIR).
# Usage: .ci/qemu-system.sh DIR    (idempotent; needs apt-get and dpkg-deb)
set -euo pipefail
root=${1:?usage: .ci/qemu-system.sh DIR}
if [[ -x $root/usr/bin/qemu-system-x86_64 ]]; then
    exit 0
fi
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
# The emulator and its firmware always; libraries only where the host lacks them.
pkgs=$( (echo qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu
         apt-get install -s --no-install-recommends qemu-system-x86 2>/dev/null |
             awk '/^Inst/ {print $2}') | tr ' ' '\n' | sort -u)
# shellcheck disable=SC2086
(cd "$debs" && apt-get download $pkgs >/dev/null)
rm -rf "$root.tmp"
mkdir -p "$root.tmp"
for p in $pkgs; do
    dpkg-deb -x "$(ls "$debs"/"${p}"_*.deb | head -1)" "$root.tmp"
done
rm -rf "$root"
mv "$root.tmp" "$root"
"$root/usr/bin/qemu-system-x86_64" --version >/dev/null 2>&1 ||
    LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu "$root/usr/bin/qemu-system-x86_64" --version
