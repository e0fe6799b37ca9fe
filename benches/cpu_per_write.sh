#!/usr/bin/env bash
# Where the CPU goes per replicated write (issue 22): for 4 KiB random writes, protocol C, the
# CPU time and the context switches of each daemon per completed write, for
#   - a pair at QD32 (one fio job, iodepth 32) and at QD1,
#   - a single node at QD32 and QD1: the same resource with the Primary disconnected
#     (`drbdadm disconnect`, StandAlone: writes go on locally and are marked in the bitmap, as
#     pair_fio.sh's "peer killed" row, without the reconnect attempts); the idle Secondary is
#     measured too and should show ~0,
# and the ratio the issue's target is stated in: (pair CPU per write, both daemons) / (single
# node CPU per write), target <= 2.5x.
#
# Per run: writes = fio's total_ios; CPU = utime+stime of the daemon process (all its threads,
# /proc/PID/stat, clock ticks -> µs via CLK_TCK) after minus before the fio run; context
# switches = voluntary + nonvoluntary over /proc/PID/task/*/status, per thread after minus
# before (a thread that exits during the run loses its share; the thread counts are printed so
# churn shows). The fio client's own CPU is not counted.
#
# Method as benches/pair_fio.sh: backing files written in full, a sequential write pass through
# the resource before anything is timed, the runs of a round interleaved (the order rotating from
# round to round), each cell the median over the rounds and the spread the max/min of its
# samples. Between the single-node and the pair runs the pair reconnects and resyncs what the
# single-node runs wrote (not timed).
#
# Knobs: RT=10 (seconds per fio run), ROUNDS=2, PERF_DIR=DIR (afterwards, one more pair QD32
# run with `perf stat` and one with `perf record -g` on the Primary daemon; perf-stat.txt and
# perf-report.txt written to DIR). Uses the release binaries in target/release (no build).
# Prints one line per measurement; `--markdown` prints a table. Talks only to 127.0.0.1 and Unix
# sockets; stops the daemons it started and removes its scratch directory on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$repo/target}/release
md=${1:-}
ROUNDS=${ROUNDS:-2}
RT=${RT:-10}
PERF_DIR=${PERF_DIR:-}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "cpu_per_write.sh: ROUNDS must be a positive integer" >&2; exit 1; }
[[ $RT =~ ^[1-9][0-9]*$ ]] || { echo "cpu_per_write.sh: RT must be a positive integer" >&2; exit 1; }
for t in fio python3 dd getconf timeout; do
    command -v $t >/dev/null || { echo "cpu_per_write.sh: missing $t" >&2; exit 1; }
done
[[ -z $PERF_DIR ]] || command -v perf >/dev/null || { echo "cpu_per_write.sh: PERF_DIR set but no perf" >&2; exit 1; }
[[ -x $bin/udrbd && -x $bin/drbdadm ]] ||
    { echo "cpu_per_write.sh: build first: cargo build --release --workspace" >&2; exit 1; }
HZ=$(getconf CLK_TCK)
log() { echo "[$(date +%T)] $*" >&2; }

w=$(mktemp -d /var/tmp/cpubench.XXXX)
declare -A pid
cleanup() {
    local p
    for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pid[@]}"; do timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$w"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
fill() { dd if=/dev/zero of="$1" bs=1M count="$2" oflag=direct conv=fsync status=none; }
drop_caches() { sync; [[ -w /proc/sys/vm/drop_caches ]] && echo 1 >/proc/sys/vm/drop_caches || true; }

adm() { local conf=$1 n=$2; shift 2; UDRBD_CONFIG=$conf UDRBD_NODE=$n UDRBD_RUN_DIR=$w/run-$n timeout 60 $bin/drbdadm "$@"; }
start_node() { # CONF NODE
    rm -rf "$w/run-$2"; mkdir -p "$w/run-$2"
    adm "$1" "$2" create-md --force r0 >/dev/null 2>&1
    NO_COLOR=1 $bin/udrbd --run-dir "$w/run-$2" 2>"$w/$2.log" &
    pid[$2]=$!
    local i
    for ((i = 0; i < 50; i++)); do [[ -S $w/run-$2/ctl.sock ]] && break; sleep 0.1; done
    [[ -S $w/run-$2/ctl.sock ]] || { echo "cpu_per_write.sh: udrbd $2 did not start (see its log)" >&2; cat "$w/$2.log" >&2; exit 1; }
    adm "$1" "$2" up r0
}

# fio against the NBD export; prints "total_ios iops"
fio_nbd() { # QD
    (cd "$w" && timeout $((RT + 60)) fio --output-format=json --output="$w/out.json" --time_based --runtime="$RT" \
        --norandommap --randrepeat=0 --name=t --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth="$1" \
        >/dev/null 2>&1) || { echo "cpu_per_write.sh: fio failed (QD$1)" >&2; exit 1; }
    python3 -c 'import json,sys
j=json.load(open(sys.argv[1]))["jobs"][0]["write"]
print(j["total_ios"], j["iops"])' "$w/out.json"
}
# Snapshot of a daemon: "cpu_ticks" on the first line, then "tid ctxt_switches" per thread.
snap() { # PID
    awk '{ print $14 + $15 }' "/proc/$1/stat"
    local s
    for s in /proc/"$1"/task/*/status; do
        awk -v t="${s%/status}" '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { sub(".*/", "", t); print t, n }' "$s" 2>/dev/null || true
    done
}
# "cpu_us ctxt_switches threads_before threads_after" between two snapshots
delta() { # BEFORE AFTER
    python3 - "$1" "$2" "$HZ" <<'PY'
import sys
def load(f):
    lines = open(f).read().split("\n")
    ticks = int(lines[0]); cs = {}
    for l in lines[1:]:
        if l.strip():
            t, n = l.split(); cs[t] = int(n)
    return ticks, cs
t0, c0 = load(sys.argv[1]); t1, c1 = load(sys.argv[2])
hz = int(sys.argv[3])
cs = sum(n - c0.get(t, 0) for t, n in c1.items())
print((t1 - t0) * 1e6 / hz, cs, len(c0), len(c1))
PY
}

# One protocol C pair; alice Primary, the NBD export on alice's run dir.
a=C-alice b=C-bob conf=$w/C.conf
log "writing the backing files in full (1 GiB each)"
fill "$w/$a.img" 1024
fill "$w/$b.img" 1024
pa=$(port); pb=$(port)
cat >"$conf" <<CONF
resource r0 { device minor 0; meta-disk internal; net { protocol C; }
  disk { c-plan-ahead 0; resync-rate 4G; c-max-rate 0; c-min-rate 0; }
  on $a { node-id 0; address 127.0.0.1:$pa; disk "$w/$a.img"; }
  on $b { node-id 1; address 127.0.0.1:$pb; disk "$w/$b.img"; } }
CONF
start_node "$conf" "$a"
start_node "$conf" "$b"
adm "$conf" "$a" wait-connect --wfc-timeout 30 r0
adm "$conf" "$a" --clear-bitmap new-current-uuid r0
adm "$conf" "$a" primary r0
uri="nbd+unix:///r0?socket=$w/run-$a/nbd.sock"
log "warm-up: a sequential write pass through the resource"
(cd "$w" && timeout 600 fio --name=warm --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 >/dev/null 2>&1) ||
    { echo "cpu_per_write.sh: warm-up fio failed" >&2; exit 1; }

mode=pair
go_single() { adm "$conf" "$a" disconnect r0 >/dev/null; mode=single; }
go_pair() {
    adm "$conf" "$a" connect r0 >/dev/null
    adm "$conf" "$a" wait-sync --wfc-timeout 120 r0 >/dev/null
    adm "$conf" "$b" wait-sync --wfc-timeout 120 r0 >/dev/null
    mode=pair
}
# One measurement: KEY -> appended to $w/samples as
# "round key writes iops cpu_us_a cpu_us_b cs_a cs_b threads_a threads_b"
measure() { # ROUND KEY
    local r=$1 key=$2 qd want
    want=${key%_*}; qd=${key#*_qd}
    [[ $want == $mode ]] || { [[ $want == single ]] && go_single || go_pair; }
    drop_caches
    snap "${pid[$a]}" >"$w/a0"; snap "${pid[$b]}" >"$w/b0"
    local f
    f=$(fio_nbd "$qd")
    snap "${pid[$a]}" >"$w/a1"; snap "${pid[$b]}" >"$w/b1"
    local da db
    da=($(delta "$w/a0" "$w/a1")); db=($(delta "$w/b0" "$w/b1"))
    local line="$f ${da[0]} ${db[0]} ${da[1]} ${db[1]} ${da[2]}/${da[3]} ${db[2]}/${db[3]}"
    echo "$r $key $line" >>"$w/samples"
    log "round $((r + 1))/$ROUNDS $key: writes iops cpu_us(P S) cs(P S) threads(P S): $line"
}
: >"$w/samples"
for ((r = 0; r < ROUNDS; r++)); do
    # Pair and single blocks alternate which comes first; QD32/QD1 alternate within each.
    if ((r % 2 == 0)); then blocks=(pair single); qds=(32 1); else blocks=(single pair); qds=(1 32); fi
    for bl in "${blocks[@]}"; do
        for q in "${qds[@]}"; do measure "$r" "${bl}_qd$q"; done
    done
done
[[ $mode == pair ]] || go_pair

if [[ -n $PERF_DIR ]]; then
    mkdir -p "$PERF_DIR"
    p=${pid[$a]}
    s=$((RT > 4 ? RT - 3 : 1))
    log "perf stat on the Primary (pid $p) during a pair QD32 run"
    (sleep 1; perf stat -e task-clock,context-switches,cpu-migrations -p "$p" -- sleep "$s") >"$PERF_DIR/perf-stat.txt" 2>&1 &
    ps=$!
    fio_nbd 32 >"$PERF_DIR/perf-stat.fio"
    wait "$ps" || true
    log "perf record -g on the Primary (pid $p) during a pair QD32 run"
    (sleep 1; perf record -g -o "$w/perf.data" -p "$p" -- sleep "$s") >"$w/perf-record.log" 2>&1 &
    ps=$!
    fio_nbd 32 >"$PERF_DIR/perf-record.fio"
    wait "$ps" || true
    pr() { perf report -i "$w/perf.data" --stdio --no-children "$@" 2>/dev/null | sed 's/ *-* *-* *$//' | grep -v '^$' || true; }
    pr --sort symbol | head -200 >"$PERF_DIR/perf-report.txt"
    pr --sort dso,symbol -g none --percent-limit 0.5 | grep -v '^#' | head -60 >"$PERF_DIR/perf-top-symbols.txt"
    pr --sort dso -g none | grep -v '^#' | head -20 >"$PERF_DIR/perf-dso.txt"
fi

python3 - "$w/samples" "$md" <<'PY'
import statistics, sys
from collections import defaultdict
v = defaultdict(lambda: defaultdict(list))
for line in open(sys.argv[1]):
    r, key, writes, iops, ca, cb, sa, sb, ta, tb = line.split()
    n = float(writes)
    v[key]["iops"].append(float(iops))
    v[key]["cpuP"].append(float(ca) / n); v[key]["cpuS"].append(float(cb) / n)
    v[key]["cpuB"].append((float(ca) + float(cb)) / n)
    v[key]["csP"].append(float(sa) / n); v[key]["csS"].append(float(sb) / n)
    v[key]["thr"].append(f"{ta} {tb}")
med = lambda k, m: statistics.median(v[k][m])
def spread(k, m):
    s = v[k][m]
    return max(s) / min(s) if min(s) > 0 else float("nan")
md = sys.argv[2] == "--markdown"
rows = [("pair_qd32", "pair, QD32"), ("pair_qd1", "pair, QD1"), ("single_qd32", "single node, QD32"), ("single_qd1", "single node, QD1")]
if md:
    print("| 4 KiB randwrite, protocol C | IOPS | CPU µs/write Primary | Secondary | both | ctx sw/write Primary | Secondary | spread (CPU both) | threads before→after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for k, label in rows:
    if k not in v: continue
    cells = (f"{med(k,'iops'):,.0f}", f"{med(k,'cpuP'):.1f}", f"{med(k,'cpuS'):.1f}", f"{med(k,'cpuB'):.1f}",
             f"{med(k,'csP'):.2f}", f"{med(k,'csS'):.2f}", f"{spread(k,'cpuB'):.2f}x",
             ", ".join("P {} S {}".format(*t.replace("/", "→").split()) for t in v[k]["thr"]))
    if md:
        print(f"| {label} | " + " | ".join(cells) + " |")
    else:
        print(f"{label}: iops {cells[0]} cpu_us/write P {cells[1]} S {cells[2]} both {cells[3]} "
              f"ctxsw/write P {cells[4]} S {cells[5]} spread {cells[6]} threads(before/after) {cells[7]}")
print()
for q in ("qd32", "qd1"):
    p, s = f"pair_{q}", f"single_{q}"
    if p in v and s in v:
        ratio = med(p, "cpuB") / med(s, "cpuP")
        # spread of the ratio: the worst pairing of the samples
        lo = min(v[p]["cpuB"]) / max(v[s]["cpuP"]); hi = max(v[p]["cpuB"]) / min(v[s]["cpuP"])
        verdict = "PASS" if ratio <= 2.5 else "MISS"
        line = (f"pair CPU/write (both daemons) / single-node CPU/write, {q.upper()}: "
                f"{med(p,'cpuB'):.1f} / {med(s,'cpuP'):.1f} µs = {ratio:.2f}x (samples {lo:.2f}x..{hi:.2f}x), target <= 2.5x: {verdict}")
        print(("- " if md else "") + line)
PY
