#!/bin/bash
# compare-blockdev.sh [BIN_DIR]: kernel DRBD 8.4 against udrbd's /dev/drbd0, fio 4k randwrite
# (direct=1, libaio, protocol C) at QD1 and QD32, in one invocation:
#   1. $GUESTLAB/drbd-pair.sh          (kernel DRBD 8.4 pair, prints RESULT-FIO lines)
#   2. tests/guest/blockdev-pair.sh    (udrbd pair, fio through /dev/drbd0 = the kernel NBD device)
# then a markdown table: IOPS and p50 completion latency per queue depth, with udrbd/DRBD ratios
# (and each run's raw virtual disk, the same job, as the noise reference).
#
#   tests/guest/compare-blockdev.sh                      # BIN_DIR defaults to <repo>/target/release
#   tests/guest/compare-blockdev.sh --table DRBD_OUT BLOCKDEV_OUT   # re-print from saved outputs
#
# Both runs get the same FIO_RUNTIME (20), FIO_SIZE (128M), DISK_SIZE (256M), DRBD_PROTOCOL (C),
# LAB_SMP, LAB_MEM.  SPLITBRAIN defaults to 0 here (drbd-pair.sh's split-brain part does not
# bear on the table and costs a minute; SPLITBRAIN=1 runs it).  FIO_DEPTHS is not passed on:
# drbd-pair.sh only honours its default "1 32".
# Outputs: $LAB/runs/compare-blockdev-TS/{drbd.out,blockdev.out,table.md}.
# Exit 0 only if both runs passed.  Under TCG the run-to-run noise is +-30-50 %: compare the
# ratio with the raw rows' ratio (same disk, same job) before reading anything into it.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
GUESTLAB=${GUESTLAB:-$REPO/../shared/guestlab}

# fio_rows FILE: "LABEL QD IOPS P50" for every RESULT-FIO line (live '[a] ' prefix or not)
fio_rows() {
  sed -n 's/^\(\[a\] \)\{0,1\}RESULT-FIO //p' "$1" | awk '{
    label = $1; qd = iops = p50 = ""
    for (i = 2; i <= NF; i++) {
      if ($i ~ /^qd=/) { qd = substr($i, 4); if (qd == "") qd = $(i + 1) }
      if ($i ~ /^iops=/) { iops = substr($i, 6); if (iops == "") iops = $(i + 1) }
      if ($i ~ /^clat_p50=/) { p50 = substr($i, 10); if (p50 == "") p50 = $(i + 1) }
    }
    sub(/us$/, "", p50); print label, qd, iops, p50 }'
}

table() { # DRBD_OUT BLOCKDEV_OUT
  local d=$1 u=$2
  [[ -r $d && -r $u ]] || { echo "table: cannot read $d or $u" >&2; return 2; }
  awk -v D=<(fio_rows "$d") -v U=<(fio_rows "$u") '
    function load(f, tag,   l, a) {
      while ((getline l < f) > 0) {
        split(l, a, " ")
        if (a[1] ~ /^raw-/) k = "raw"
        else if (tag == "d" && a[1] ~ /^drbd0-proto/) k = "dev"
        else if (tag == "u" && a[1] ~ /^udrbd-proto/) k = "dev"
        else continue
        IOPS[tag, k, a[2]] = a[3]; P50[tag, k, a[2]] = a[4]
      }
      close(f)
    }
    function cell(v) { return v == "" ? "-" : v }
    function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
    function row(name, k, qd, what,   x, y) {
      if (what == "iops") { x = IOPS["d", k, qd]; y = IOPS["u", k, qd]; unit = "IOPS" }
      else { x = P50["d", k, qd]; y = P50["u", k, qd]; unit = "p50 latency (us)" }
      if (what == "iops") { xs = x == "" ? "" : sprintf("%.0f", x); ys = y == "" ? "" : sprintf("%.0f", y) }
      else { xs = x == "" ? "" : sprintf("%.1f", x); ys = y == "" ? "" : sprintf("%.1f", y) }
      printf "| %s QD%s %s | %s | %s | %s |\n", name, qd, unit, cell(xs), cell(ys), ratio(y, x)
    }
    BEGIN {
      load(D, "d"); load(U, "u")
      print "| 4k randwrite, direct, libaio, protocol C | kernel DRBD 8.4 | udrbd /dev/drbd0 | ratio udrbd/DRBD |"
      print "|---|---:|---:|---:|"
      n = split("1 32", Q, " ")
      for (i = 1; i <= n; i++) { row("", "dev", Q[i], "iops"); row("", "dev", Q[i], "p50") }
      print ""
      print "| raw virtual disk (noise reference, same job) | DRBD run | udrbd run | ratio |"
      print "|---|---:|---:|---:|"
      for (i = 1; i <= n; i++) { row("raw", "raw", Q[i], "iops"); row("raw", "raw", Q[i], "p50") }
    }' | sed 's/|  QD/| QD/'
}

if [[ ${1:-} == --table ]]; then
  [[ $# == 3 ]] || { echo "usage: $0 --table DRBD_OUT BLOCKDEV_OUT" >&2; exit 2; }
  table "$2" "$3"; exit $?
fi
BIN=${UDRBD_BIN_DIR:-${1:-$REPO/target/release}}
[[ -x $GUESTLAB/drbd-pair.sh ]] || { echo "no $GUESTLAB/drbd-pair.sh (GUESTLAB=$GUESTLAB)" >&2; exit 2; }
. "$GUESTLAB/lib.sh"
export FIO_RUNTIME=${FIO_RUNTIME:-20} FIO_SIZE=${FIO_SIZE:-128M} DISK_SIZE=${DISK_SIZE:-256M}
export DRBD_PROTOCOL=${DRBD_PROTOCOL:-C} SPLITBRAIN=${SPLITBRAIN:-0}
export LAB_SMP=${LAB_SMP:-1} LAB_MEM=${LAB_MEM:-768}
unset FIO_DEPTHS
TS=$(date +%Y%m%d-%H%M%S)-$$
OUT=$LAB/runs/compare-blockdev-$TS; mkdir -p "$OUT"
echo "=== compare-blockdev: FIO_RUNTIME=$FIO_RUNTIME FIO_SIZE=$FIO_SIZE DISK_SIZE=$DISK_SIZE DRBD_PROTOCOL=$DRBD_PROTOCOL SPLITBRAIN=$SPLITBRAIN LAB_SMP=$LAB_SMP out=$OUT"
t0=$(date +%s)
echo "=== 1/2 kernel DRBD 8.4: $GUESTLAB/drbd-pair.sh"
"$GUESTLAB/drbd-pair.sh" 2>&1 | tee "$OUT/drbd.out"; RCD=${PIPESTATUS[0]}
echo "=== 2/2 udrbd /dev/drbd0: $HERE/blockdev-pair.sh $BIN"
GUESTLAB=$GUESTLAB "$HERE/blockdev-pair.sh" "$BIN" 2>&1 | tee "$OUT/blockdev.out"; RCU=${PIPESTATUS[0]}
echo
table "$OUT/drbd.out" "$OUT/blockdev.out" | tee "$OUT/table.md"
echo
echo "SUMMARY compare-blockdev: drbd-pair rc=$RCD, blockdev-pair rc=$RCU ($( ((RCD == 0 && RCU == 0)) && echo PASS || echo FAIL)), wall $(( $(date +%s) - t0 )) s; table in $OUT/table.md"
exit $(( RCD == 0 && RCU == 0 ? 0 : 1 ))
