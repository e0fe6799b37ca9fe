#!/usr/bin/env bash
# The two-node benchmark (issue 4): fio's libnbd engine against a protocol C and a protocol A
# pair of real daemons on loopback, each also degraded (peer killed), and in the same run the
# floors the targets are stated against:
#   - 4 KiB random write QD32: fio writing two files on the same disk at once (2 jobs x QD16),
#     since both replicas share the one disk here; the floor is one job's rate (each replica
#     writes every block once, so a pair's client IOPS is at best one job's);
#   - 4 KiB random write QD1 p50: udrbd with no peer configured (a single node);
#   - 1 MiB sequential write QD8: the raw file (fio io_uring, O_DIRECT);
#   - initial full sync of a fully written 4 GiB device (`c-plan-ahead 0`, resync-rate 4G):
#     raw sequential write bandwidth;
#   - RSS of a daemon with a 1 TiB sparse resource up (target: 64 MiB plus the bitmap).
# Prints one line per measurement; `--markdown` prints the README table instead. Needs
# `cargo build --release --workspace` and fio with the nbd engine. Numbers are for one run on a
# noisy 2-core VM: read the ratios.
set -euo pipefail
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release
md=${1:-}
w=$(mktemp -d /var/tmp/pairbench.XXXX)
trap 'pkill -f "udrbd --run-dir $w" || true; rm -rf $w' EXIT
RT=${RT:-10}
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# fio JSON -> "iops p50us bw_MBps"
fio_json() { python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["write"]; print(int(j["iops"]), round(j["clat_ns"]["percentile"]["50.000000"]/1000,1), round(j["bw_bytes"]/1e6))' < $w/out.json; }
fio_nbd() { # uri bs qd rw
  fio --name=t --ioengine=nbd --uri="$1" --rw=$4 --bs=$2 --iodepth=$3 --time_based --runtime=$RT --size=1G --output-format=json --output=$w/out.json >/dev/null 2>&1; fio_json; }
adm() { local n=$1; shift; UDRBD_CONFIG=$w/drbd.conf UDRBD_NODE=$n UDRBD_RUN_DIR=$w/run-$n $bin/drbdadm "$@"; }
# up_node NAME: fresh metadata, a daemon of its own, the resource up (config in $w/drbd.conf)
up_node() {
  local n=$1
  rm -rf $w/run-$n; mkdir -p $w/run-$n
  adm $n create-md --force r0 >/dev/null 2>&1
  $bin/udrbd --run-dir $w/run-$n 2>$w/$n.log & sleep 0.3
  adm $n up r0
}
# conf PROTO SIZE [single]: a pair (or alice alone) on fresh sparse files
start() {
  local proto=$1 size=$2 single=${3:-}
  pkill -f "udrbd --run-dir $w" || true; sleep 0.5
  rm -rf $w/run-* $w/alice.img $w/bob.img
  truncate -s $size $w/alice.img $w/bob.img
  local pa pb; pa=$(port); pb=$(port)
  if [ -n "$single" ]; then
    printf 'resource r0 { device minor 0; meta-disk internal;\n  on alice { node-id 0; address 127.0.0.1:%s; disk "%s"; } }\n' $pa $w/alice.img > $w/drbd.conf
  else
    cat > $w/drbd.conf <<CONF
resource r0 { device minor 0; meta-disk internal; net { protocol $proto; }
  disk { c-plan-ahead 0; resync-rate 4G; c-max-rate 0; c-min-rate 0; }
  on alice { node-id 0; address 127.0.0.1:$pa; disk "$w/alice.img"; }
  on bob { node-id 1; address 127.0.0.1:$pb; disk "$w/bob.img"; } }
CONF
  fi
  local nodes="alice bob"
  [ -n "$single" ] && nodes=alice
  for n in $nodes; do up_node $n; done
}
uri="nbd+unix:///r0?socket=$w/run-alice/nbd.sock"
declare -A R

# Floors.
truncate -s 1G $w/f1 $w/f2
fio --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k --iodepth=16 --time_based --runtime=$RT --size=1G --name=a --filename=$w/f1 --name=b --filename=$w/f2 --group_reporting --output-format=json --output=$w/out.json >/dev/null 2>&1
# Each job plays one replica writing while the other does: one job's rate is what a pair can
# reach at best (group_reporting sums the two jobs).
R[floor4k]=$(( $(fio_json | cut -d' ' -f1) / 2 ))
fio --ioengine=io_uring --direct=1 --rw=write --bs=1M --iodepth=8 --time_based --runtime=$RT --size=1G --name=a --filename=$w/f1 --output-format=json --output=$w/out.json >/dev/null 2>&1
R[raw1m]=$(fio_json | cut -d' ' -f3)
rm -f $w/f1 $w/f2

start C 1G single
adm alice primary --force r0 >/dev/null
R[single_qd1]=$(fio_nbd "$uri" 4k 1 randwrite | cut -d' ' -f2)

for proto in C A; do
  start $proto 1G
  adm alice wait-connect r0; adm alice --clear-bitmap new-current-uuid r0; adm alice primary r0
  R[${proto}_qd32]=$(fio_nbd "$uri" 4k 32 randwrite)
  R[${proto}_qd1]=$(fio_nbd "$uri" 4k 1 randwrite | cut -d' ' -f2)
  R[${proto}_1m]=$(fio_nbd "$uri" 1M 8 write | cut -d' ' -f3)
  pkill -f "udrbd --run-dir $w/run-bob"; sleep 1
  R[${proto}_degraded]=$(fio_nbd "$uri" 4k 32 randwrite)
done

# Initial full sync of a fully written 4 GiB device.
start C 4G
fio --ioengine=io_uring --direct=1 --rw=write --bs=1M --iodepth=8 --size=4000M --name=fill --filename=$w/alice.img --output-format=json --output=$w/out.json >/dev/null 2>&1
R[raw4g]=$(fio_json | cut -d' ' -f3)
adm alice wait-connect r0
t0=$(date +%s.%N)
adm alice primary --force r0
adm alice wait-sync --wfc-timeout 600 r0
t1=$(date +%s.%N)
R[sync4g]=$(python3 -c "print(round(4096*1.048576/($t1-$t0)))")

# RSS with a 1 TiB sparse resource.
pkill -f "udrbd --run-dir $w" || true; sleep 0.5
rm -f $w/alice.img $w/bob.img; truncate -s 1T $w/big.img
pb=$(port)
printf 'resource r0 { device minor 0; meta-disk internal;\n  on alice { node-id 0; address 127.0.0.1:%s; disk "%s"; }\n  on bob { node-id 1; address 127.0.0.1:%s; disk "%s"; } }\n' $(port) $w/big.img $pb /nonexistent > $w/drbd.conf
up_node alice
sleep 1
pid=$(pgrep -f "udrbd --run-dir $w/run-alice")
R[rss_mib]=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$pid/status)

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
set -- ${R[C_qd32]}; cq=$1; cp=$2
set -- ${R[A_qd32]}; aq=$1
set -- ${R[C_degraded]}; dq=$1
if [ "$md" = --markdown ]; then
  echo "| measurement | udrbd | baseline | ratio | target |"
  echo "|---|---:|---:|---:|---|"
  echo "| 4 KiB randwrite QD32, protocol C pair (IOPS) | $cq | ${R[floor4k]} (1 of 2 files) | $(ratio $cq ${R[floor4k]}) | >= 0.8x |"
  echo "| 4 KiB randwrite QD32, protocol A pair (IOPS) | $aq | ${R[floor4k]} | $(ratio $aq ${R[floor4k]}) | |"
  echo "| 4 KiB randwrite QD32, peer killed (IOPS) | $dq | ${R[floor4k]} | $(ratio $dq ${R[floor4k]}) | |"
  echo "| 4 KiB randwrite QD1 p50, protocol C (µs) | ${R[C_qd1]} | ${R[single_qd1]} (single node) | $(ratio ${R[C_qd1]} ${R[single_qd1]}) | <= 1.3x |"
  echo "| 4 KiB randwrite QD1 p50, protocol A (µs) | ${R[A_qd1]} | ${R[single_qd1]} (single node) | $(ratio ${R[A_qd1]} ${R[single_qd1]}) | |"
  echo "| 1 MiB seq write QD8, protocol C (MB/s) | ${R[C_1m]} | ${R[raw1m]} (raw file) | $(ratio ${R[C_1m]} ${R[raw1m]}) | >= 0.45x |"
  echo "| initial full sync, 4 GiB written (MB/s) | ${R[sync4g]} | ${R[raw4g]} (raw seq write) | $(ratio ${R[sync4g]} ${R[raw4g]}) | >= 0.45x |"
  echo "| RSS, 1 TiB sparse resource (MiB) | ${R[rss_mib]} | 96 (64 + 32 bitmap) | $(ratio ${R[rss_mib]} 96) | <= 1.00x |"
else
  for k in "${!R[@]}"; do echo "$k: ${R[$k]}"; done | sort
fi
