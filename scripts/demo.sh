#!/usr/bin/env bash
# A two-node udrbd resource on this machine, as far as udrbd goes today: both nodes' daemons and
# metadata, alice Primary serving the device over NBD, through drbdadm exactly as on a DRBD
# cluster. (Replication between the two is the next step: bob shows alice as StandAlone.)
# Everything lives in a scratch directory; nothing is sent anywhere but loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin=$PWD/target/release
work=$(mktemp -d /var/tmp/udrbd-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

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

export UDRBD_CONFIG=$work/drbd.conf
run() { echo; echo "\$ $*"; "$@"; }
as() { local node=$1; shift; echo; echo "[$node]\$ drbdadm $*"; UDRBD_NODE=$node UDRBD_RUN_DIR=$work/run-$node "$bin/drbdadm" "$@"; }

run "$bin/drbdadm" dump all
for node in alice bob; do
    as "$node" create-md r0
    mkdir -p "$work/run-$node"
    "$bin/udrbd" --run-dir "$work/run-$node" 2>"$work/udrbd-$node.log" &
    pids+=($!)
done
for node in alice bob; do
    for _ in $(seq 100); do [ -S "$work/run-$node/ctl.sock" ] && break; sleep 0.05; done
    as "$node" up r0
done
as alice status r0
as alice primary --force r0
as alice status r0
if command -v qemu-io >/dev/null; then
    run qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'read -P 0x5a 0 1M' "nbd+unix:///r0?socket=$work/run-alice/nbd.sock"
fi
if command -v nbdinfo >/dev/null; then
    run nbdinfo "nbd+unix:///r0?socket=$work/run-alice/nbd.sock"
fi
as alice status --statistics r0
as bob status r0
as alice secondary r0
for node in alice bob; do as "$node" down r0; done
as alice show-gi r0
echo
echo "alice's log:"; cat "$work/udrbd-alice.log"
