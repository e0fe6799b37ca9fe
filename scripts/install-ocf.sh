#!/bin/sh
# Installs udrbd's Pacemaker pieces:
#   the OCF resource agent  ocf/udrbd            -> $DESTDIR/usr/lib/ocf/resource.d/udrbd/udrbd
#                                                   (provider "udrbd": ocf:udrbd:udrbd)
#   the fence handlers      ocf/fence-peer.sh     -> $DESTDIR/usr/lib/udrbd/fence-peer.sh
#                           ocf/unfence-peer.sh   -> $DESTDIR/usr/lib/udrbd/unfence-peer.sh
# Usage: scripts/install-ocf.sh [DESTDIR]   (or DESTDIR=... in the environment; default /)
# OCF_ROOT (default /usr/lib/ocf) and UDRBD_LIBDIR (default /usr/lib/udrbd) move the targets.
#
# SPDX-License-Identifier: Apache-2.0
set -eu
src=$(cd "$(dirname "$0")/../ocf" && pwd)
destdir=${1:-${DESTDIR:-}}
ocf_root=${OCF_ROOT:-/usr/lib/ocf}
libdir=${UDRBD_LIBDIR:-/usr/lib/udrbd}

install -d -m 0755 "$destdir$ocf_root/resource.d/udrbd" "$destdir$libdir"
install -m 0755 "$src/udrbd" "$destdir$ocf_root/resource.d/udrbd/udrbd"
install -m 0755 "$src/fence-peer.sh" "$src/unfence-peer.sh" "$destdir$libdir/"
echo "installed $destdir$ocf_root/resource.d/udrbd/udrbd (ocf:udrbd:udrbd)"
echo "installed $destdir$libdir/fence-peer.sh and $destdir$libdir/unfence-peer.sh"
