#!/usr/bin/env bash
# The two-node benchmark (issue 4): fio's libnbd engine against a protocol C and a protocol A
# pair of real daemons on loopback, and, interleaved with them in the same run, the baselines
# the targets are stated against:
#   - 4 KiB random write QD32: fio writing two files on the same disk at once (2 jobs x QD16),
#     since both replicas share the one disk here; the floor is one job's rate (each replica
#     writes every block once, so a pair's client IOPS is at best one job's);
#   - 4 KiB random write QD1 p50: a single udrbd node (no peer);
#   - 1 MiB sequential write QD8: the raw file (fio io_uring, O_DIRECT);
#   - and, for reference, the loopback round trip between two processes (`ceiling rtt`, what a
#     protocol C write pays on top of the local write before the peer's disk write);
# then, once: the same QD32 with the peer killed, the initial full sync of a fully written
# 4 GiB device (`c-plan-ahead 0`, resync-rate 4G) against raw sequential write bandwidth, and
# the RSS of a daemon with a 1 TiB sparse resource up (target: 64 MiB plus the bitmap).
#
# Method (as benches/nbd_fio.sh): every backing file and baseline file is written in full
# first (a partition has no holes; O_DIRECT writes into holes of a sparse file allocate extents
# and are punted to io_uring's worker threads), every resource gets a sequential write pass
# before anything is timed (hot activity log), runs are interleaved (for each round, every
# measurement, the order rotating from round to round) and each cell is the median over the
# rounds, with the worst max/min of its samples as the spread.
#
# Knobs: ROUNDS=3, RT=5 (seconds per fio run), BUILD=1 (cargo build --release first).
# Prints one line per measurement; `--markdown` prints the README table instead. Talks only to
# 127.0.0.1 and Unix sockets; removes everything it started and wrote on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$repo/target}/release
md=${1:-}
ROUNDS=${ROUNDS:-3}
RT=${RT:-5}
BUILD=${BUILD:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "pair_fio.sh: ROUNDS must be a positive integer" >&2; exit 1; }
[[ $RT =~ ^[1-9][0-9]*$ ]] || { echo "pair_fio.sh: RT must be a positive integer" >&2; exit 1; }
for t in fio python3 dd; do
    command -v $t >/dev/null || { echo "pair_fio.sh: missing $t (apt-get install -y fio python3)" >&2; exit 1; }
done
if [[ $BUILD == 1 ]]; then
    (cd "$repo" && cargo build --release --quiet --workspace && cargo build --release --quiet --example ceiling) ||
        { echo "pair_fio.sh: cargo build --release failed" >&2; exit 1; }
fi
[[ -x $bin/udrbd && -x $bin/drbdadm && -x $bin/examples/ceiling ]] ||
    { echo "pair_fio.sh: build first: cargo build --release --workspace && cargo build --release --example ceiling" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

w=$(mktemp -d /var/tmp/pairbench.XXXX)
trap 'pkill -f "udrbd --run-dir $w" || true; rm -rf $w' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
fill() { dd if=/dev/zero of="$1" bs=1M count="$2" oflag=direct conv=fsync status=none; }
# fio JSON -> "iops p50_us MBps" (p50 of the total latency: submission + completion)
fio_json() {
    python3 -c 'import json,sys
j=json.load(open(sys.argv[1]))["jobs"][0]["write"]
p=j.get("lat_ns",{}).get("percentile") or j["clat_ns"]["percentile"]
print(j["iops"], p["50.000000"]/1000, j["bw_bytes"]/1e6)' "$w/out.json"
}
fio_run() { # fio arguments...; prints fio_json's line
    (cd "$w" && fio --output-format=json --output="$w/out.json" --time_based --runtime="$RT" \
        --norandommap --randrepeat=0 --lat_percentiles=1 "$@" >/dev/null 2>&1) || { echo "pair_fio.sh: fio failed: $*" >&2; exit 1; }
    fio_json
}
fio_nbd() { fio_run --name=t --ioengine=nbd --uri="$1" --rw="$4" --bs="$2" --iodepth="$3"; }
drop_caches() { sync; [[ -w /proc/sys/vm/drop_caches ]] && echo 1 >/proc/sys/vm/drop_caches || true; }

# A resource on one or two nodes. setup NAME PROTO SIZE_MIB [single|tls]: config $w/NAME.conf,
# nodes NAME-alice (and NAME-bob), backing files written in full, daemons up, connected and in
# sync without a resync (--clear-bitmap), alice Primary, NBD socket in $w/run-NAME-alice.
adm() { local conf=$1 n=$2; shift 2; UDRBD_CONFIG=$conf UDRBD_NODE=$n UDRBD_RUN_DIR=$w/run-$n $bin/drbdadm "$@"; }
start_node() { # CONF NODE
    rm -rf "$w/run-$2"; mkdir -p "$w/run-$2"
    adm "$1" "$2" create-md --force r0 >/dev/null 2>&1
    NO_COLOR=1 $bin/udrbd --run-dir "$w/run-$2" 2>"$w/$2.log" &
    local i
    for ((i = 0; i < 50; i++)); do [[ -S $w/run-$2/ctl.sock ]] && break; sleep 0.1; done
    adm "$1" "$2" up r0
}
setup() {
    local name=$1 proto=$2 size=$3 single=${4:-} conf=$w/$1.conf a=$1-alice b=$1-bob
    fill "$w/$a.img" "$size"
    if [[ $single == single ]]; then
        printf 'resource r0 { device minor 0; meta-disk internal;\n  on %s { node-id 0; address 127.0.0.1:%s; disk "%s"; } }\n' \
            "$a" "$(port)" "$w/$a.img" >"$conf"
        start_node "$conf" "$a"
        adm "$conf" "$a" primary --force r0 >/dev/null
    else
        fill "$w/$b.img" "$size"
        local pa pb n tls
        pa=$(port); pb=$(port)
        # Each node's own copy: with `tls`, each names its own certificate (tls_pki).
        for n in "$a" "$b"; do
            tls=""
            [[ $single == tls ]] && tls="tls yes; tls-ca-file \"$w/ca.pem\"; tls-certificate-file \"$w/$n.crt\"; tls-privkey-file \"$w/$n.key\";"
            cat >"$w/$n.conf" <<CONF
resource r0 { device minor 0; meta-disk internal; net { protocol $proto; $tls }
  disk { c-plan-ahead 0; resync-rate 4G; c-max-rate 0; c-min-rate 0; }
  on $a { node-id 0; address 127.0.0.1:$pa; disk "$w/$a.img"; }
  on $b { node-id 1; address 127.0.0.1:$pb; disk "$w/$b.img"; } }
CONF
        done
        cp "$w/$a.conf" "$conf"
        start_node "$conf" "$a"
        start_node "$w/$b.conf" "$b"
        adm "$conf" "$a" wait-connect r0
        adm "$conf" "$a" --clear-bitmap new-current-uuid r0
        adm "$conf" "$a" primary r0
    fi
    uri[$name]="nbd+unix:///r0?socket=$w/run-$a/nbd.sock"
    # Warm-up: every activity-log extent hot, every block written once through the resource.
    fio_nbd "${uri[$name]}" 1M 8 write >/dev/null
}
declare -A uri

log "writing the baseline files and the backing files in full (1 GiB each)"
fill "$w/f1" 1024
fill "$w/f2" 1024
# TLS identities for the T pair (protocol C over TLS): a CA and a certificate per node, named
# after it (the peer link checks the name).
tls_pki() {
    local n
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$w/ca.key" \
        -out "$w/ca.pem" -subj /CN=bench-ca -days 2 2>/dev/null
    for n in T-alice T-bob; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$w/$n.key" \
            -out "$w/$n.csr" -subj "/CN=$n" 2>/dev/null
        openssl x509 -req -in "$w/$n.csr" -CA "$w/ca.pem" -CAkey "$w/ca.key" -CAcreateserial \
            -out "$w/$n.crt" -days 2 -extfile <(printf 'subjectAltName=DNS:%s' "$n") 2>/dev/null
    done
}
tls_pki
setup C C 1024
setup A A 1024
setup T C 1024 tls
setup S C 1024 single

# One measurement: KEY -> "iops p50 MBps" (appended to $w/samples as "round key line").
measure() {
    local key=$1
    drop_caches
    case $key in
        floor4k)
            # Two jobs, one file each; group_reporting sums them: one job's rate is half.
            local line
            line=$(fio_run --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k --iodepth=16 --size=1G \
                --name=a --filename="$w/f1" --name=b --filename="$w/f2" --group_reporting)
            set -- $line
            echo "$(python3 -c "print($1/2)") $2 $(python3 -c "print($3/2)")"
            ;;
        raw1m) fio_run --name=r --ioengine=io_uring --direct=1 --rw=write --bs=1M --iodepth=8 --size=1G --filename="$w/f1" ;;
        C_qd32) fio_nbd "${uri[C]}" 4k 32 randwrite ;;
        A_qd32) fio_nbd "${uri[A]}" 4k 32 randwrite ;;
        C_qd1) fio_nbd "${uri[C]}" 4k 1 randwrite ;;
        A_qd1) fio_nbd "${uri[A]}" 4k 1 randwrite ;;
        single_qd1) fio_nbd "${uri[S]}" 4k 1 randwrite ;;
        C_1m) fio_nbd "${uri[C]}" 1M 8 write ;;
        T_qd32) fio_nbd "${uri[T]}" 4k 32 randwrite ;;
        T_1m) fio_nbd "${uri[T]}" 1M 8 write ;;
        rtt) set -- $($bin/examples/ceiling rtt 20000); echo "0 $3 0" ;;
    esac
}
keys=(floor4k C_qd32 A_qd32 single_qd1 C_qd1 A_qd1 rtt raw1m C_1m T_qd32 T_1m)
: >"$w/samples"
for ((r = 0; r < ROUNDS; r++)); do
    n=${#keys[@]}
    for ((i = 0; i < n; i++)); do
        k=${keys[$(((i + r) % n))]}
        line=$(measure "$k")
        echo "$r $k $line" >>"$w/samples"
        log "round $((r + 1))/$ROUNDS $k: $line"
    done
done

# Degraded: the C pair's Secondary killed; the Primary writes alone.
pkill -f "udrbd --run-dir $w/run-C-bob"; sleep 1
drop_caches
echo "0 C_degraded $(fio_nbd "${uri[C]}" 4k 32 randwrite)" >>"$w/samples"
pkill -f "udrbd --run-dir $w" || true; sleep 0.5
rm -f "$w"/*.img "$w/f1" "$w/f2"

# Initial full sync of a fully written 4 GiB device (fresh metadata on both, so a full sync).
log "initial full sync of a written 4 GiB device"
conf=$w/sync.conf
cat >"$conf" <<CONF
resource r0 { device minor 0; meta-disk internal;
  disk { c-plan-ahead 0; resync-rate 4G; c-max-rate 0; c-min-rate 0; }
  on sync-alice { node-id 0; address 127.0.0.1:$(port); disk "$w/sync-alice.img"; }
  on sync-bob { node-id 1; address 127.0.0.1:$(port); disk "$w/sync-bob.img"; } }
CONF
# Both devices written in full first, as partitions are (see the method above); the source's
# second pass is the baseline: sequential writes to this disk, no allocation.
fill "$w/sync-bob.img" 4096
for pass in fill measure; do
    drop_caches
    (cd "$w" && fio --ioengine=io_uring --direct=1 --rw=write --bs=1M --iodepth=8 --size=4096M --name=$pass \
        --filename="$w/sync-alice.img" --output-format=json --output="$w/out.json" >/dev/null 2>&1)
done
raw4g=$(fio_json | cut -d' ' -f3)
start_node "$conf" sync-alice
start_node "$conf" sync-bob
adm "$conf" sync-alice wait-connect r0
t0=$(date +%s.%N)
adm "$conf" sync-alice primary --force r0
adm "$conf" sync-alice wait-sync --wfc-timeout 600 r0
t1=$(date +%s.%N)
sync4g=$(python3 -c "print(4096*1.048576/($t1-$t0))")
echo "0 sync4g 0 0 $sync4g" >>"$w/samples"
echo "0 raw4g 0 0 $raw4g" >>"$w/samples"
pkill -f "udrbd --run-dir $w" || true; sleep 0.5
rm -f "$w"/sync-*.img

# RSS with a 1 TiB sparse resource (its peer never comes).
conf=$w/big.conf
truncate -s 1T "$w/big.img"
printf 'resource r0 { device minor 0; meta-disk internal;\n  on big-alice { node-id 0; address 127.0.0.1:%s; disk "%s"; }\n  on big-bob { node-id 1; address 127.0.0.1:%s; disk "%s"; } }\n' \
    "$(port)" "$w/big.img" "$(port)" /nonexistent >"$conf"
start_node "$conf" big-alice
sleep 1
pid=$(pgrep -f "udrbd --run-dir $w/run-big-alice")
echo "0 rss_mib 0 0 $(awk '/VmRSS/ {print $2/1024}' "/proc/$pid/status")" >>"$w/samples"

python3 - "$w/samples" "$md" <<'PY'
import statistics, sys
from collections import defaultdict
vals = defaultdict(lambda: defaultdict(list))
for line in open(sys.argv[1]):
    r, key, iops, p50, mbps = line.split()
    vals[key]["iops"].append(float(iops)); vals[key]["p50"].append(float(p50)); vals[key]["mbps"].append(float(mbps))
def med(k, m): return statistics.median(vals[k][m])
def spread(keys, m):
    s = [max(vals[k][m]) / min(vals[k][m]) for k in keys if vals[k][m] and min(vals[k][m]) > 0]
    return f"{max(s):.2f}x" if s else "-"
rows = [
    ("4 KiB randwrite QD32, protocol C pair (IOPS)", "C_qd32", "iops", "floor4k", "iops", "1 of 2 files", ">= 0.8x", lambda r: r >= 0.8),
    ("4 KiB randwrite QD32, protocol A pair (IOPS)", "A_qd32", "iops", "floor4k", "iops", "1 of 2 files", "", None),
    ("4 KiB randwrite QD32, peer killed (IOPS)", "C_degraded", "iops", "floor4k", "iops", "1 of 2 files", "", None),
    ("4 KiB randwrite QD1 p50, protocol C (µs)", "C_qd1", "p50", "single_qd1", "p50", "single node", "<= 1.3x", lambda r: r <= 1.3),
    ("4 KiB randwrite QD1 p50, protocol A (µs)", "A_qd1", "p50", "single_qd1", "p50", "single node", "", None),
    ("loopback TCP round trip p50, two processes (µs)", "rtt", "p50", "single_qd1", "p50", "single node", "", None),
    ("1 MiB seq write QD8, protocol C (MB/s)", "C_1m", "mbps", "raw1m", "mbps", "raw file", ">= 0.45x", lambda r: r >= 0.45),
    ("4 KiB randwrite QD32, protocol C over TLS (IOPS)", "T_qd32", "iops", "C_qd32", "iops", "plain C pair", "", None),
    ("1 MiB seq write QD8, protocol C over TLS (MB/s)", "T_1m", "mbps", "C_1m", "mbps", "plain C pair", "", None),
    ("initial full sync, 4 GiB written (MB/s)", "sync4g", "mbps", "raw4g", "mbps", "raw seq write", ">= 0.45x", lambda r: r >= 0.45),
    ("RSS, 1 TiB sparse resource (MiB)", "rss_mib", "mbps", None, None, "64 + 32 bitmap", "<= 1.00x", lambda r: r <= 1.0),
]
md = sys.argv[2] == "--markdown"
if md:
    print("| measurement | udrbd | baseline | ratio | target | verdict | spread |")
    print("|---|---:|---:|---:|---|---|---:|")
for label, k, m, bk, bm, bname, target, ok in rows:
    v = med(k, m)
    b = med(bk, bm) if bk else 96.0
    r = v / b
    verdict = "" if ok is None else ("PASS" if ok(r) else "MISS")
    sp = spread([k] + ([bk] if bk else []), m)
    fmtv = lambda x: f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
    if md:
        print(f"| {label} | {fmtv(v)} | {fmtv(b)} ({bname}) | {r:.2f}x | {target} | {verdict} | {sp} |")
    else:
        print(f"{label}: {fmtv(v)} vs {fmtv(b)} ({bname}) = {r:.2f}x {target} {verdict} spread {sp}")
PY
