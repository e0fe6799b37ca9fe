#!/bin/sh
# unfence-peer / after-resync-target handler for udrbd under Pacemaker: removes the constraint
# fence-peer.sh placed (see there). Exit 0, also when there was none; 1 if the CIB cannot be
# read or written.
#
# SPDX-License-Identifier: Apache-2.0

# fence-peer.sh unfences when the name it runs under ($0) contains "unfence".
# shellcheck source=/dev/null
dir=$(dirname "$0")
. "$dir/fence-peer.sh"
