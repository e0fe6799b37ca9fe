#!/usr/bin/env bash
# Memory under pressure (issue 16): the Primary's peak RSS while
#   1. its Secondary is frozen (SIGSTOP) and fio writes 1 MiB blocks at QD32 through the
#      Primary's NBD export until ko-count drops the peer (and for a few seconds after), and
#   2. 500 NBD clients sit connected and idle (each finished the handshake).
# Targets: (1) under 64 MiB plus the bitmap, (2) under 128 MiB. The bitmap of the 1 GiB
# resource used here is 32 KiB, so (1) is 64 MiB.
#
# Peak RSS is the kernel's VmHWM of the Primary's process, reset before each phase through
# /proc/PID/clear_refs (so each phase is measured alone), sampled at the end of the phase; the
# baseline row is the same daemon's VmRSS once up and idle, measured in the same run.
#
# Knobs: BUILD=1 (cargo build --release first), KO_TIMEOUT=10 (net `timeout`, tenths of a
# second) and KO_COUNT=5: the peer is dropped after about KO_TIMEOUT/10 x KO_COUNT seconds.
# Prints a markdown table. Talks only to 127.0.0.1 and Unix sockets; removes everything it
# started and wrote on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$repo/target}/release
BUILD=${BUILD:-1}
KO_TIMEOUT=${KO_TIMEOUT:-10}
KO_COUNT=${KO_COUNT:-5}
for t in fio python3 dd; do
    command -v $t >/dev/null || { echo "rss_pressure.sh: missing $t (apt-get install -y fio python3)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import nbd' 2>/dev/null ||
    { echo "rss_pressure.sh: missing python3-libnbd (apt-get install -y python3-libnbd)" >&2; exit 1; }
if [[ $BUILD == 1 ]]; then
    (cd "$repo" && cargo build --release --quiet --workspace) ||
        { echo "rss_pressure.sh: cargo build --release failed" >&2; exit 1; }
fi
[[ -x $bin/udrbd && -x $bin/drbdadm ]] ||
    { echo "rss_pressure.sh: build first: cargo build --release --workspace" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

w=$(mktemp -d /var/tmp/rssbench.XXXX)
cleanup() {
    pkill -CONT -f "udrbd --run-dir $w" 2>/dev/null || true
    pkill -f "udrbd --run-dir $w" 2>/dev/null || true
    [[ -n ${clients:-} ]] && kill "$clients" 2>/dev/null || true
    rm -rf "$w"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
fill() { dd if=/dev/zero of="$1" bs=1M count="$2" oflag=direct conv=fsync status=none; }
adm() { local n=$1; shift; UDRBD_CONFIG=$w/r0.conf UDRBD_NODE=$n UDRBD_RUN_DIR=$w/run-$n $bin/drbdadm "$@"; }
declare -A pid
start_node() { # NODE
    mkdir -p "$w/run-$1"
    adm "$1" create-md --force r0 >/dev/null 2>&1
    NO_COLOR=1 $bin/udrbd --run-dir "$w/run-$1" 2>"$w/$1.log" &
    pid[$1]=$!
    local i
    for ((i = 0; i < 50; i++)); do [[ -S $w/run-$1/ctl.sock ]] && break; sleep 0.1; done
    adm "$1" up r0
}
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status"; }
reset_peak() { echo 5 >"/proc/$1/clear_refs"; }

fill "$w/alice.img" 1024
fill "$w/bob.img" 1024
cat >"$w/r0.conf" <<CONF
resource r0 { device minor 0; meta-disk internal;
  net { protocol C; timeout $KO_TIMEOUT; ko-count $KO_COUNT; }
  on alice { node-id 0; address 127.0.0.1:$(port); disk "$w/alice.img"; }
  on bob { node-id 1; address 127.0.0.1:$(port); disk "$w/bob.img"; } }
CONF
start_node alice
start_node bob
adm alice wait-connect r0
adm alice --clear-bitmap new-current-uuid r0
adm alice primary r0
uri="nbd+unix:///r0?socket=$w/run-alice/nbd.sock"
a=${pid[alice]}
# Warm-up: every activity-log extent hot (1 GiB is well inside al-extents' default).
fio --name=warm --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 >/dev/null
sleep 1
base=$(kib VmRSS "$a")
log "baseline RSS ${base} KiB"

# 1. The Secondary stops reading; the Primary keeps accepting writes until ko-count drops it.
log "phase 1: bob SIGSTOPped, fio 1M QD32 until ko-count drops it"
reset_peak "$a"
kill -STOP "${pid[bob]}"
ko_s=$(((KO_TIMEOUT * KO_COUNT + 9) / 10))
fio --name=flood --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=32 --time_based \
    --runtime=$((ko_s + 10)) --output-format=json --output="$w/flood.json" >/dev/null 2>&1 ||
    { echo "rss_pressure.sh: fio failed (see $w/alice.log)" >&2; exit 1; }
peak1=$(kib VmHWM "$a")
dropped=$(adm alice cstate r0 2>/dev/null || true)
mbps=$(python3 -c 'import json,sys;print(round(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw_bytes"]/1e6))' "$w/flood.json")
kill -CONT "${pid[bob]}"
[[ $dropped != Connected ]] || { echo "rss_pressure.sh: ko-count did not drop the frozen peer" >&2; exit 1; }
log "peak ${peak1} KiB; connection ${dropped}; ${mbps} MB/s"

# 2. 500 idle NBD clients.
log "phase 2: 500 idle NBD connections"
timeout 60 env UDRBD_CONFIG=$w/r0.conf UDRBD_NODE=alice UDRBD_RUN_DIR=$w/run-alice $bin/drbdadm wait-connect r0 || true
reset_peak "$a"
: >"$w/ready"
/usr/bin/python3 - "$w/run-alice/nbd.sock" "$w/ready" <<'PY' &
import nbd, sys, time
hs = []
for i in range(500):
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///r0?socket={sys.argv[1]}")
    hs.append(h)
open(sys.argv[2], "w").write(str(len(hs)))
time.sleep(3600)
PY
clients=$!
for ((i = 0; i < 600; i++)); do [[ -s $w/ready ]] && break; sleep 0.1; done
[[ $(cat "$w/ready") == 500 ]] || { echo "rss_pressure.sh: the 500 clients did not connect" >&2; exit 1; }
sleep 1
peak2=$(kib VmHWM "$a")
kill "$clients"
clients=
log "peak ${peak2} KiB"

mib() { python3 -c "print(f'{$1/1024:.1f}')"; }
ratio() { python3 -c "print(f'{$1/1024/$2:.2f}x')"; }
echo "| memory (Primary, VmHWM) | udrbd MiB | target MiB | ratio | result |"
echo "|---|---|---|---|---|"
echo "| idle, connected, 1 GiB resource (VmRSS) | $(mib "$base") | - | - | - |"
p1=$(python3 -c "print('PASS' if $peak1/1024 < 64 else 'MISS')")
p2=$(python3 -c "print('PASS' if $peak2/1024 < 128 else 'MISS')")
echo "| Secondary SIGSTOPped, fio 1M QD32 until ko-count drops it ($mbps MB/s) | $(mib "$peak1") | 64 + 0.03 bitmap | $(ratio "$peak1" 64) | $p1 |"
echo "| 500 idle NBD connections | $(mib "$peak2") | 128 | $(ratio "$peak2" 128) | $p2 |"
