#!/usr/bin/env bash
# A two-node udrbd resource on this machine: two daemons replicating over loopback with protocol
# C, driven by drbdadm exactly as a DRBD how-to does it (create-md, up, wait-connect,
# --clear-bitmap new-current-uuid, primary), alice serving the device over NBD, then bob stopped
# and restarted while alice writes, and the bitmap resync that follows.
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
    net { protocol C; cram-hmac-alg sha256; shared-secret "demo-secret"; connect-int 1; }
    disk { c-plan-ahead 0; resync-rate 400M; c-min-rate 0; }
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
for node in alice bob; do as "$node" create-md r0; done
start_daemon() {
    local node=$1
    mkdir -p "$work/run-$node"
    rm -f "$work/run-$node/ctl.sock"   # a killed daemon leaves its socket behind
    "$bin/udrbd" --run-dir "$work/run-$node" 2>>"$work/udrbd-$node.log" &
    pids+=($!)
    eval "pid_$node=$!"
    for _ in $(seq 100); do [ -S "$work/run-$node/ctl.sock" ] && break; sleep 0.05; done
}
for node in alice bob; do start_daemon "$node"; as "$node" up r0; done
as alice wait-connect r0
as alice status r0
as alice --clear-bitmap new-current-uuid r0
as alice primary --force r0
as alice status r0
nbd="nbd+unix:///r0?socket=$work/run-alice/nbd.sock"
if command -v qemu-io >/dev/null; then
    run qemu-io -f raw -c 'write -P 0x5a 0 4M' "$nbd"
    echo; echo "# bob goes away (kill -9) while alice keeps writing"
    kill -9 "$pid_bob"; wait "$pid_bob" 2>/dev/null || true
    run qemu-io -f raw -c 'write -P 0xa5 8M 2M' -c 'write -P 0x33 64M 1M' "$nbd"
    as alice status r0
    start_daemon bob
    as bob up r0
    as alice wait-connect r0
    as alice wait-sync r0
    as alice status --statistics r0
    echo; echo "# both replicas hold the same bytes:"
    run cmp -n $((200 * 1024 * 1024)) "$work/alice.img" "$work/bob.img"
fi
as bob status r0
for node in alice bob; do as "$node" down r0; done
as alice show-gi r0
echo
echo "alice's log:"; cat "$work/udrbd-alice.log"
