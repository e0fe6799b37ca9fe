#!/usr/bin/env bash
# A two-node udrbd resource on this machine, as far as udrbd goes today: both nodes' configuration,
# metadata and generation identifiers, through drbdadm exactly as on a DRBD cluster.
# Everything lives in a scratch directory; nothing is sent over the network.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
adm=$PWD/target/release/drbdadm
work=$(mktemp -d /tmp/udrbd-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

truncate -s 256M "$work/alice.img" "$work/bob.img"
cat > "$work/drbd.conf" <<CONF
global { usage-count no; }
common {
    net { protocol C; cram-hmac-alg sha256; shared-secret "demo-secret"; }
}
resource r0 {
    device minor 0;
    meta-disk internal;
    on alice { node-id 0; address 127.0.0.1:7788; disk "$work/alice.img"; nbd-listen 127.0.0.1:10809; }
    on bob   { node-id 1; address 127.0.0.1:7789; disk "$work/bob.img";   nbd-listen 127.0.0.1:10810; }
}
CONF

run() { echo; echo "\$ $*"; "$@"; }
run "$adm" -c "$work/drbd.conf" dump all
for node in alice bob; do
    run "$adm" -c "$work/drbd.conf" --node "$node" create-md r0
done
run "$adm" -c "$work/drbd.conf" --node alice show-gi r0
run "$adm" -c "$work/drbd.conf" --node bob dump-md r0
echo
echo "Both nodes have fresh metadata (current UUID 0x4: just created, Inconsistent)."
