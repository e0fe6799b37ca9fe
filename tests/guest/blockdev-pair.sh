#!/bin/bash
# blockdev-pair.sh [BIN_DIR]: udrbd's kernel block device (/dev/drbd0 = a kernel NBD device the
# daemon connects to its own export) in two guests, with the Proxmox-style stack on top
# (fdisk -> kpartx -> LVM -> ext4), the "held open" refusals, EIO on a Secondary, the Pacemaker
# agents (ocf/udrbd + ocf:heartbeat:Filesystem, run as Pacemaker would, without Pacemaker), fio
# through /dev/drbd0 and a daemon restart.  The guest side is tests/guest/blockdev-pair.guest.sh.
#
#   tests/guest/blockdev-pair.sh                   # BIN_DIR defaults to <repo>/target/release
#   FIO_RUNTIME=5 tests/guest/blockdev-pair.sh ~/udrbd/target/release
#
# Needs the guest lab ($GUESTLAB, default <repo>/../shared/guestlab, built with its build.sh;
# artifacts in /var/tmp/kvmlab).  The two guests (drbda, drbdb) are wired as in the lab's
# udrbd-pair.sh, on their own UDP port pair so the scripts never clash:
#   guest drbda  eth0 192.168.77.1  <- qemu -netdev socket,udp 127.0.0.1:$PA/$PB ->  eth0 192.168.77.2  guest drbdb
#   drbda: /dev/vdb = udrbd backing disk, /dev/vdc = raw baseline disk, /dev/vdd = binaries (ro)
#   drbdb: /dev/vdb = udrbd backing disk,                                /dev/vdc = binaries (ro)
# The binaries disk (stage-bins.sh) holds udrbd, drbdadm, drbdsetup and ocf/, an OCF_ROOT with
# ocf/udrbd and the host's resource-agents (ocf-shellfuncs & co, Filesystem): BIN_DIR must hold
# drbdsetup too, the host needs resource-agents (HOST_OCF_ROOT, default /usr/lib/ocf).
#
# Env: FIO_RUNTIME=20  FIO_DEPTHS="1 32"  FIO_SIZE=128M  DISK_SIZE=256M  DRBD_PROTOCOL=C
#      RESYNC_RATE=400M  LAB_ACCEL=tcg  LAB_SMP=1  LAB_MEM=768  PAIR_TIMEOUT=1500
#      DISK_OPTS=cache=none,aio=threads  PA/PB=17721/17722 (UDP ports)  PEER_GRACE=120
#      UDRBD_BIN_DIR (instead of $1)  UDRBD_CONF=F (use F verbatim in both guests)
#      RAW_BASELINE=1 (0: no raw disk, no raw fio)  ADM_TIMEOUT=120  DLOG_LINES=400  KEEP_BIN_IMG=0
#      KEEP_DISKS=0 (1: keep the guests' disk images under $LAB/blockdev)
#      LVM_FILTER=default|backing|none (see blockdev-pair.guest.sh: default also rejects kernel
#      partitions of nbd devices, which the guest's 6.1 kernel makes even with max_part=0)
# Output: PASS/FAIL/INFO/RESULT lines of both guests live ([a]/[b]), the fio table, a SUMMARY;
# exit 0 only if both guests passed.  Consoles: $LAB/runs/blockdev-TS-{a,b}.log
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
GUESTLAB=${GUESTLAB:-$REPO/../shared/guestlab}
[[ -r $GUESTLAB/lib.sh ]] || { echo "no guest lab at GUESTLAB=$GUESTLAB" >&2; exit 2; }
. "$GUESTLAB/lib.sh"
. "$HERE/stage-bins.sh"
lab_check_built || exit 2
SCEN=$HERE/blockdev-pair.guest.sh
BIN=${UDRBD_BIN_DIR:-${1:-$REPO/target/release}}
BIN=$(cd "$BIN" 2>/dev/null && pwd) || { echo "no such directory: ${UDRBD_BIN_DIR:-${1:-$REPO/target/release}}" >&2; exit 2; }
if [[ -n ${UDRBD_CONF:-} && ! -r $UDRBD_CONF ]]; then echo "UDRBD_CONF=$UDRBD_CONF not readable" >&2; exit 2; fi
export LAB_SMP=${LAB_SMP:-1} LAB_MEM=${LAB_MEM:-768}
DISK_SIZE=${DISK_SIZE:-256M}
DISK_OPTS=${DISK_OPTS:-cache=none,aio=threads}
PAIR_TIMEOUT=${PAIR_TIMEOUT:-1500}
PA=${PA:-17721} PB=${PB:-17722}          # UDP ports on 127.0.0.1 carrying the guest link
RAW_BASELINE=${RAW_BASELINE:-1}
D=$LAB/blockdev; RUNS=$LAB/runs; mkdir -p "$D" "$RUNS"
TS=$(date +%Y%m%d-%H%M%S)-$$

# The fio job must be the one the lab's drbd-pair.sh runs, or compare-blockdev.sh compares
# different jobs.
if ! diff -q <(sed -n '/^run_fio() {/,/^}/p' "$GUESTLAB/guest/drbd-pair.sh") \
             <(sed -n '/^run_fio() {/,/^}/p' "$SCEN") > /dev/null; then
  echo "WARNING: run_fio() in $SCEN differs from $GUESTLAB/guest/drbd-pair.sh: fio numbers are not comparable"
fi

PIDA= PIDB= TA= TB=
cleanup() {
  local p
  for p in $PIDA $PIDB; do pkill -TERM -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  for p in $TA $TB; do kill "$p" 2>/dev/null; done
  stage_bins_cleanup
  [[ ${KEEP_DISKS:-0} == 1 ]] || rm -f "$D/$TS-"*.img
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

stage_bins "$BIN" "$D" "$TS" || { echo "SUMMARY blockdev-pair: binaries cannot run in the guest (see ERROR lines)"; exit 2; }

# fresh, zeroed, allocated disks every run
DISKS="a-udrbd b-udrbd"; [[ $RAW_BASELINE == 1 ]] && DISKS+=" a-raw"
for f in $DISKS; do fallocate -l "$DISK_SIZE" "$D/$TS-$f.img" || { echo "fallocate $D/$TS-$f.img failed"; exit 2; }; done

mkenv() { # ROLE MY_IP PEER_IP
  local f=$RUNS/blockdev-$TS-$1.env v name
  {   # values quoted (%q): the guest sources this file with bash
    printf 'ROLE=%q\nMY_IP=%q\nPEER_IP=%q\n' "$1" "$2" "$3"
    for v in FIO_RUNTIME:20 "FIO_DEPTHS:1 32" FIO_SIZE:128M DRBD_PROTOCOL:C RESYNC_RATE:400M \
             ADM_TIMEOUT:120 DLOG_LINES:400 LVM_FILTER:default; do
      name=${v%%:*}
      printf '%s=%q\n' "$name" "${!name:-${v#*:}}"
    done
  } > "$f"
  echo "$f"
}
disk() { echo "-drive file=$D/$TS-$1.img,format=raw,if=none,id=$1,$DISK_OPTS -device virtio-blk-pci,drive=$1"; }
bindisk="-drive file=$BIN_IMG,format=raw,if=none,id=ubin,readonly=on -device virtio-blk-pci,drive=ubin"
rawdisk=; [[ $RAW_BASELINE == 1 ]] && rawdisk=$(disk a-raw)

LOGA=$RUNS/blockdev-$TS-a.log LOGB=$RUNS/blockdev-$TS-b.log
# (the header keeps the '=== udrbd pair: ... logs: A B' shape, so the lab's
#  'compare-pair.sh --table DRBD_OUT THIS_OUT' can read this output too)
echo "=== udrbd pair: [blockdev /dev/drbd0] accel=${LAB_ACCEL:-tcg} smp=$LAB_SMP mem=$LAB_MEM disk=$DISK_SIZE ($DISK_OPTS) bin=$BIN logs: $LOGA $LOGB"
t0=$(date +%s)
lab_boot drbda "$SCEN" "$PAIR_TIMEOUT" "$(mkenv a 192.168.77.1 192.168.77.2)" \
  $(disk a-udrbd) $rawdisk $bindisk \
  -netdev socket,id=l0,udp=127.0.0.1:$PB,localaddr=127.0.0.1:$PA \
  -device virtio-net-pci,netdev=l0,mac=52:54:00:77:00:01,romfile= \
  > "$LOGA" 2>&1 &
PIDA=$!
lab_boot drbdb "$SCEN" "$PAIR_TIMEOUT" "$(mkenv b 192.168.77.2 192.168.77.1)" \
  $(disk b-udrbd) $bindisk \
  -netdev socket,id=l0,udp=127.0.0.1:$PA,localaddr=127.0.0.1:$PB \
  -device virtio-net-pci,netdev=l0,mac=52:54:00:77:00:02,romfile= \
  > "$LOGB" 2>&1 &
PIDB=$!
# live progress
tail -q -n +1 -F "$LOGA" 2>/dev/null | sed -u -n 's/^\(PASS\|FAIL\|INFO\|RESULT\|LAB-\)/[a] \1/p' &
TA=$!
tail -q -n +1 -F "$LOGB" 2>/dev/null | sed -u -n 's/^\(PASS\|FAIL\|INFO\|RESULT\|LAB-\)/[b] \1/p' &
TB=$!
# Both guests normally finish within seconds of each other (they pass 'barrier down' last).
# If one stops early, its peer would sit in a barrier until msg_recv's timeout: give it
# PEER_GRACE seconds, then stop it.
wait -n -p DONE $PIDA $PIDB; RC1=$?
if [[ $DONE == "$PIDA" ]]; then RCA=$RC1 OTHER=$PIDB; else RCB=$RC1 OTHER=$PIDA; fi
end=$(( SECONDS + ${PEER_GRACE:-120} ))
while kill -0 "$OTHER" 2>/dev/null && (( SECONDS < end )); do sleep 1; done
if kill -0 "$OTHER" 2>/dev/null; then
  echo "=== guest $([[ $OTHER == "$PIDA" ]] && echo drbda || echo drbdb) still running ${PEER_GRACE:-120} s after its peer finished: stopping it"
  pkill -TERM -P "$OTHER" 2>/dev/null
  wait "$OTHER"; RC2=143
else
  wait "$OTHER"; RC2=$?
fi
if [[ $OTHER == "$PIDA" ]]; then RCA=$RC2; else RCB=$RC2; fi
PIDA= PIDB=
sleep 0.5; kill $TA $TB 2>/dev/null; wait $TA $TB 2>/dev/null; TA= TB=
echo "=== qemu rc a=$RCA b=$RCB, wall $(( $(date +%s) - t0 )) s"
echo "=== fio results (4k randwrite, direct=1, libaio, ${FIO_RUNTIME:-20}s each):"
grep -h '^RESULT-FIO' "$LOGA" "$LOGB" | sed 's/^RESULT-FIO /  /'
NP=$(cat "$LOGA" "$LOGB" | grep -c '^PASS'); NF=$(cat "$LOGA" "$LOGB" | grep -c '^FAIL')
grep -q '^LAB-DONE' "$LOGA" || { echo "  drbda did not finish its scenario (no LAB-DONE)"; NF=$((NF+1)); }
grep -q '^LAB-DONE' "$LOGB" || { echo "  drbdb did not finish its scenario (no LAB-DONE)"; NF=$((NF+1)); }
grep -H '^FAIL' "$LOGA" "$LOGB" | sed -e "s|^$LOGA:|  [a] |" -e "s|^$LOGB:|  [b] |"
OK=0
grep -q '^RESULT PASS' "$LOGA" && grep -q '^RESULT PASS' "$LOGB" && OK=1
echo "SUMMARY blockdev-pair: $NP passed, $NF failed ($( ((OK)) && echo PASS || echo FAIL))"
exit $(( OK ? 0 : 1 ))
