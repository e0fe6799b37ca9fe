#!/usr/bin/env bash
# A first two-node benchmark (issue 4): 4 KiB random writes at QD32 through NBD with fio, for a
# protocol C and a protocol A pair on loopback and each degraded (peer killed), against the floor
# of fio writing two files on the same disk at once (2 jobs x QD16). Both replicas share one disk
# here. Prints IOPS (and p50 latency in us). Needs `cargo build --release`, fio with the nbd
# engine. Not yet folded into nbd_fio.sh and its report.
set -euo pipefail
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release
w=$(mktemp -d /var/tmp/pairbench.XXXX)
trap 'pkill -f "udrbd --run-dir $w" || true; rm -rf $w' EXIT
fio_nbd() { fio --name=t --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --iodepth=32 --time_based --runtime=10 --size=1G --output-format=json --output=$w/out.json >/dev/null 2>&1; python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["write"]; print(int(j["iops"]), int(j["clat_ns"]["percentile"]["50.000000"]/1000))' < $w/out.json; }
truncate -s 1G $w/f1 $w/f2
echo -n "floor (2 files, 2x QD16, io_uring O_DIRECT): "
fio --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k --iodepth=16 --time_based --runtime=10 --size=1G --name=a --filename=$w/f1 --name=b --filename=$w/f2 --group_reporting --output-format=json --output=$w/out.json >/dev/null 2>&1; python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["write"]; print(int(j["iops"]))' < $w/out.json
for proto in C A; do
  rm -rf $w/run-* $w/*.img; truncate -s 1G $w/alice.img $w/bob.img
  pa=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  pb=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  cat > $w/drbd.conf <<CONF
resource r0 { device minor 0; meta-disk internal; net { protocol $proto; }
  on alice { node-id 0; address 127.0.0.1:$pa; disk "$w/alice.img"; }
  on bob { node-id 1; address 127.0.0.1:$pb; disk "$w/bob.img"; } }
CONF
  for n in alice bob; do
    mkdir -p $w/run-$n
    UDRBD_CONFIG=$w/drbd.conf UDRBD_NODE=$n UDRBD_RUN_DIR=$w/run-$n $bin/drbdadm create-md r0 >/dev/null 2>&1
    $bin/udrbd --run-dir $w/run-$n 2>$w/$n.log & sleep 0.3
    UDRBD_CONFIG=$w/drbd.conf UDRBD_NODE=$n UDRBD_RUN_DIR=$w/run-$n $bin/drbdadm up r0
  done
  a() { UDRBD_CONFIG=$w/drbd.conf UDRBD_NODE=alice UDRBD_RUN_DIR=$w/run-alice $bin/drbdadm "$@"; }
  a wait-connect r0; a --clear-bitmap new-current-uuid r0; a primary r0
  echo -n "protocol $proto pair (iops p50us): "; fio_nbd "nbd+unix:///r0?socket=$w/run-alice/nbd.sock"
  pkill -f "udrbd --run-dir $w/run-bob"; sleep 1
  echo -n "protocol $proto degraded (peer down): "; fio_nbd "nbd+unix:///r0?socket=$w/run-alice/nbd.sock"
  pkill -f "udrbd --run-dir $w" || true; sleep 1
done
