#!/usr/bin/env bash
# End-to-end benchmark of udrbd's NBD export against baselines, measured in the same run.
#
# Servers: udrbd (this repo), qemu-nbd --cache=none, nbdkit file cache=none, nbdkit memory (the
# protocol ceiling, no disk) and the raw backing file through fio's io_uring engine with O_DIRECT
# (the disk's floor, no server). Each gets its own pre-written image on a real disk, and every
# device is warmed with one full sequential write pass before anything is measured (udrbd's
# activity log makes the first write into each 4 MiB extent wait for a metadata write).
#
# Runs are interleaved (for each round, for each workload, for each server; the server order
# rotates from round to round) because these VMs are noisy; the report gives medians over rounds.
# Everything goes over Unix sockets. Every process and file is cleaned up on exit.
#
# Knobs (environment):
#   RUNTIME=5          seconds per fio run           ROUNDS=3        interleaved rounds
#   BENCH_DIR=/var/tmp/udrbd-bench  scratch (not tmpfs)  SIZE_MIB=1024  image size per server
#   SERVERS="udrbd qemu-nbd nbdkit-file nbdkit-mem ceiling raw"  subset/order of servers
#   WORKLOADS="randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32 read-1m-qd8 write-1m-qd8"
#   BUILD=1            cargo build --release first (0: use existing binaries)
#   CARGO_TARGET_DIR   where the udrbd binaries are (default: REPO/target)
#   OUT=benches/results/YYYY-MM-DD.md   report file (the raw samples go next to it as .tsv)
#   KEEP=0             1: keep the scratch directory (images, logs, fio JSON) for inspection
#   VERIFY=1           0: skip the fio --verify integrity check of every server before timing
#   DROP_CACHES=auto   sync and drop the page cache before every timed run (auto: when root);
#                      nbdkit's cache=none only evicts what it touched, so left-over pages from
#                      earlier write runs would otherwise turn its random reads into cache hits
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

RUNTIME=${RUNTIME:-5}
ROUNDS=${ROUNDS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/udrbd-bench}
SIZE_MIB=${SIZE_MIB:-1024}
SERVERS=${SERVERS:-"udrbd qemu-nbd nbdkit-file nbdkit-mem ceiling raw"}
WORKLOADS=${WORKLOADS:-"randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32 read-1m-qd8 write-1m-qd8"}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
DROP_CACHES=${DROP_CACHES:-auto}
VERIFY=${VERIFY:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
OUT=${OUT:-$here/results/$(date +%F).md}
report_py=$here/nbd_fio_report.py

die() { echo "nbd_fio.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

read -r -a servers <<<"$SERVERS"
read -r -a workloads <<<"$WORKLOADS"
[[ ${#servers[@]} -gt 0 ]] || die "SERVERS is empty"
[[ ${#workloads[@]} -gt 0 ]] || die "WORKLOADS is empty"
[[ $RUNTIME =~ ^[0-9]+$ && $RUNTIME -gt 0 ]] || die "RUNTIME must be a positive integer (seconds)"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || die "ROUNDS must be a positive integer"
[[ $SIZE_MIB =~ ^[0-9]+$ && $SIZE_MIB -ge 64 ]] || die "SIZE_MIB must be an integer >= 64"

has() { local x; for x in "${servers[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

for s in "${servers[@]}"; do
    case $s in udrbd | qemu-nbd | nbdkit-file | nbdkit-mem | ceiling | raw) ;;
        *) die "unknown server '$s' (known: udrbd qemu-nbd nbdkit-file nbdkit-mem ceiling raw)" ;;
    esac
done

# --- workloads: name -> fio arguments and the direction whose stats we read -------------------
workload_args() {
    case $1 in
        randread-4k-qd1) echo "--rw=randread --bs=4k --iodepth=1" ;;
        randread-4k-qd32) echo "--rw=randread --bs=4k --iodepth=32" ;;
        randwrite-4k-qd1) echo "--rw=randwrite --bs=4k --iodepth=1" ;;
        randwrite-4k-qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
        read-1m-qd8) echo "--rw=read --bs=1m --iodepth=8" ;;
        write-1m-qd8) echo "--rw=write --bs=1m --iodepth=8" ;;
        *) return 1 ;;
    esac
}
workload_dir() { case $1 in *read*) echo read ;; *) echo write ;; esac; }
for w in "${workloads[@]}"; do workload_args "$w" >/dev/null || die "unknown workload '$w'"; done

# --- tools, checked up front --------------------------------------------------------------------
need() {
    command -v "$1" >/dev/null 2>&1 ||
        die "missing tool '$1' (install with: apt-get install -y ${2:-$1})"
}
need fio fio
need nbdinfo libnbd-bin
need python3 python3
need dd coreutils
need getconf libc-bin
need stat coreutils
has qemu-nbd && need qemu-nbd qemu-utils
if has nbdkit-file || has nbdkit-mem; then need nbdkit nbdkit; fi
{ has udrbd || has ceiling; } && [[ $BUILD == 1 ]] && need cargo cargo
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine (Debian's fio has it: apt-get install -y fio)"
has raw && { fio --enghelp=io_uring >/dev/null 2>&1 || die "this fio has no io_uring engine"; }
if has nbdkit-file; then
    nbdkit file --help 2>&1 | grep -q 'cache=' || die "nbdkit's file plugin has no cache= parameter (need nbdkit >= 1.22)"
fi
if has nbdkit-mem; then
    nbdkit memory --help >/dev/null 2>&1 || die "nbdkit has no memory plugin (apt-get install -y nbdkit)"
fi
[[ -f $report_py ]] || die "missing $report_py"
clk_tck=$(getconf CLK_TCK)
if [[ $DROP_CACHES == auto ]]; then
    if [[ -w /proc/sys/vm/drop_caches ]]; then DROP_CACHES=1; else DROP_CACHES=0; fi
fi
[[ $DROP_CACHES == 0 || -w /proc/sys/vm/drop_caches ]] || die "DROP_CACHES=1 needs root (/proc/sys/vm/drop_caches)"

# --- udrbd binaries -----------------------------------------------------------------------------
if has udrbd; then
    if [[ $BUILD == 1 ]]; then
        log "building udrbd (cargo build --release, target dir $TARGET_DIR)"
        (cd "$repo" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet) || die "cargo build --release failed"
    fi
    udrbd_bin=$TARGET_DIR/release/udrbd
    drbdadm_bin=$TARGET_DIR/release/drbdadm
    [[ -x $udrbd_bin && -x $drbdadm_bin ]] || die "no $udrbd_bin / $drbdadm_bin (build with cargo build --release)"
fi
if has ceiling; then
    if [[ $BUILD == 1 ]]; then
        log "building the ceiling server (cargo build --release --example ceiling)"
        (cd "$repo" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet --example ceiling) ||
            die "cargo build --release --example ceiling failed"
    fi
    ceiling_bin=$TARGET_DIR/release/examples/ceiling
    [[ -x $ceiling_bin ]] || die "no $ceiling_bin (build with cargo build --release --example ceiling)"
fi

# --- scratch directory, cleanup -----------------------------------------------------------------
mkdir -p "$BENCH_DIR"
fstype=$(stat -f -c %T "$BENCH_DIR")
case $fstype in tmpfs | ramfs) die "BENCH_DIR=$BENCH_DIR is on $fstype: put it on a real disk" ;; esac
work=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
declare -A pid_of=() uri_of=()
udrbd_adm=false
all_pids=()

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    local st=0
    wait "$pid" 2>/dev/null || st=$?
    if [[ -n ${pid_of[udrbd]:-} && $pid == "${pid_of[udrbd]}" && $st != 0 ]]; then
        log "udrbd exited with status $st on SIGTERM (expected 0: clean shutdown); its log: $work/udrbd/udrbd.log"
        tail -n 20 "$work/udrbd/udrbd.log" >&2 || true
    fi
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${all_pids[@]}"; do stop_pid "$pid"; done
    if [[ $KEEP == 1 ]]; then
        log "kept $work"
    else
        rm -rf "$work"
        rmdir "$BENCH_DIR" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers ------------------------------------------------------------------------------------
cpu_ticks() { # utime+stime (fields 14, 15) of a process, in clock ticks
    local stat rest
    local -a f
    stat=$(<"/proc/$1/stat") || die "server pid $1 is gone"
    rest=${stat##*) } # drop "pid (comm) ": comm may contain spaces and parentheses
    read -r -a f <<<"$rest"
    # $rest starts at field 3 (state), so field N is f[N-3].
    echo $((f[11] + f[12]))
}

make_image() { # a fully written image: no holes, so every server reads real blocks
    dd if=/dev/zero of="$1" bs=1M count="$SIZE_MIB" oflag=direct status=none conv=fsync ||
        die "cannot write $1"
}

wait_export() { # URI PID LOG
    local i
    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "$2" 2>/dev/null; then
            tail -n 20 "$3" >&2 || true
            die "server for $1 exited during startup (log above: $3)"
        fi
        nbdinfo --size "$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    tail -n 20 "$3" >&2 || true
    die "no NBD export at $1 after 30 s"
}

start_udrbd() {
    local d=$work/udrbd run=$work/udrbd/run conf=$work/udrbd/drbd.conf i
    mkdir -p "$run"
    make_image "$d/udrbd.img"
    cat >"$conf" <<CONF
resource r0 {
    device minor 0;
    meta-disk internal;
    on bench { node-id 0; address 127.0.0.1:17700; disk "$d/udrbd.img"; }
    on ghost { node-id 1; address 127.0.0.1:17701; disk "$d/ghost.img"; }
}
CONF
    udrbd_run=$run udrbd_conf=$conf
    adm() { UDRBD_RUN_DIR=$udrbd_run "$drbdadm_bin" -c "$udrbd_conf" --node bench "$@"; }
    udrbd_adm=adm
    adm create-md --force r0 >"$d/create-md.log" 2>&1 || { cat "$d/create-md.log" >&2; die "drbdadm create-md failed"; }
    NO_COLOR=1 UDRBD_RUN_DIR=$run "$udrbd_bin" --run-dir "$run" >"$d/udrbd.log" 2>&1 &
    pid_of[udrbd]=$!
    all_pids+=("$!")
    for ((i = 0; i < 100; i++)); do
        [[ -S $run/ctl.sock ]] && break
        kill -0 "${pid_of[udrbd]}" 2>/dev/null || { cat "$d/udrbd.log" >&2; die "udrbd exited during startup"; }
        sleep 0.1
    done
    [[ -S $run/ctl.sock ]] || die "udrbd did not create $run/ctl.sock"
    adm up r0 >>"$d/drbdadm.log" 2>&1 || { cat "$d/drbdadm.log" >&2; die "drbdadm up r0 failed"; }
    adm primary --force r0 >>"$d/drbdadm.log" 2>&1 || { cat "$d/drbdadm.log" >&2; die "drbdadm primary --force r0 failed"; }
    uri_of[udrbd]="nbd+unix:///r0?socket=$run/nbd.sock"
    [[ -S $run/nbd.sock ]] || log "udrbd has no $run/nbd.sock yet; waiting (is its NBD server in this build?)"
    wait_export "${uri_of[udrbd]}" "${pid_of[udrbd]}" "$d/udrbd.log"
}

start_server() { # NAME
    local s=$1 d=$work/$1
    mkdir -p "$d"
    case $s in
        udrbd) start_udrbd; return ;;
        raw)
            make_image "$d/raw.img"
            return
            ;;
        qemu-nbd)
            make_image "$d/qemu.img"
            qemu-nbd --cache=none --aio=io_uring -f raw -x r0 --socket="$d/nbd.sock" -t "$d/qemu.img" \
                >"$d/server.log" 2>&1 &
            ;;
        nbdkit-file)
            make_image "$d/nbdkit.img"
            nbdkit -f --exit-with-parent -U "$d/nbd.sock" -e r0 file file="$d/nbdkit.img" cache=none \
                >"$d/server.log" 2>&1 &
            ;;
        nbdkit-mem)
            nbdkit -f --exit-with-parent -U "$d/nbd.sock" -e r0 memory "${SIZE_MIB}M" \
                >"$d/server.log" 2>&1 &
            ;;
        ceiling)
            make_image "$d/ceiling.img"
            "$ceiling_bin" nbd "$d/nbd.sock" "$d/ceiling.img" >"$d/server.log" 2>&1 &
            ;;
    esac
    pid_of[$s]=$!
    all_pids+=("$!")
    uri_of[$s]="nbd+unix:///r0?socket=$d/nbd.sock"
    wait_export "${uri_of[$s]}" "${pid_of[$s]}" "$d/server.log"
}

target_args() { # fio arguments that select the device of a server
    if [[ $1 == raw ]]; then
        echo "--ioengine=io_uring --direct=1 --filename=$work/raw/raw.img --size=${SIZE_MIB}M"
    else
        echo "--ioengine=nbd --uri=${uri_of[$1]}"
    fi
}

run_fio() { # SERVER JSON_OUT FIO_ARGS...
    local s=$1 json=$2
    local -a t
    shift 2
    read -r -a t <<<"$(target_args "$s")"
    # From the scratch directory: fio drops state files (e.g. verify state) in its cwd.
    (cd "$work" && fio --name=bench --numjobs=1 --output-format=json --output="$json" "${t[@]}" "$@" \
        >"$json.stderr" 2>&1) || { cat "$json.stderr" >&2; die "fio failed on $s ($*)"; }
}

# --- setup --------------------------------------------------------------------------------------
log "scratch directory $work ($fstype); ${SIZE_MIB} MiB image per server"
for s in "${servers[@]}"; do
    log "starting $s"
    start_server "$s"
done

# Warm-up: one full sequential write pass per device. It allocates nbdkit-memory's pages and
# makes udrbd's activity log and every filesystem extent hot before anything is timed.
for s in "${servers[@]}"; do
    log "warm-up: sequential write pass over $s"
    run_fio "$s" "$work/warmup-$s.json" --rw=write --bs=1m --iodepth=8
done

# Integrity check: random 4 KiB writes at QD32 over the first 64 MiB, then fio reads back and
# checks every block. A server that loses or misplaces writes under load stops the run here.
if [[ $VERIFY == 1 ]]; then
    for s in "${servers[@]}"; do
        log "integrity check: 64 MiB of verified random writes through $s"
        run_fio "$s" "$work/verify-$s.json" --rw=randwrite --bs=4k --iodepth=32 --size=64M \
            --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0
    done
fi

# udrbd's metadata-write counters: after the warm-up, random writes should cause none.
udrbd_md_writes() {
    $udrbd_adm status --json r0 2>/dev/null | python3 -c '
import json, sys
devs = json.load(sys.stdin)[0]["devices"][0]
print(devs["al-writes"], devs["bm-writes"])' 2>/dev/null || echo "? ?"
}
md_start="- -"
has udrbd && md_start=$(udrbd_md_writes)

tsv=${OUT%.md}.tsv
mkdir -p "$(dirname "$OUT")"
samples=$work/samples.tsv
{
    echo "# date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# kernel=$(uname -srm)"
    echo "# nproc=$(nproc)"
    echo "# fio=$(fio --version)"
    echo "# udrbd_commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "# rounds=$ROUNDS"
    echo "# runtime=$RUNTIME"
    echo "# size=${SIZE_MIB} MiB"
    echo "# bench_dir=$BENCH_DIR"
    echo "# fstype=$fstype"
    echo "# drop_caches=$DROP_CACHES"
    echo "# udrbd_md_writes_after_warmup=$md_start"
    printf 'round\tworkload\tserver\tiops\tmbps\tlat_p50_us\tlat_p99_us\ttotal_ios\tcpu_s\n'
} >"$samples"

# --- measurement: for each round, for each workload, for each server ---------------------------
n=${#servers[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for w in "${workloads[@]}"; do
        read -r -a wargs <<<"$(workload_args "$w")"
        for ((i = 0; i < n; i++)); do
            s=${servers[$(((i + r - 1) % n))]} # rotate the order so no server always goes first
            json=$work/r$r-$w-$s.json
            if [[ $DROP_CACHES == 1 ]]; then sync && echo 1 >/proc/sys/vm/drop_caches; fi
            before=-
            [[ $s != raw ]] && before=$(cpu_ticks "${pid_of[$s]}")
            run_fio "$s" "$json" "${wargs[@]}" --time_based --runtime="$RUNTIME" \
                --norandommap --randrepeat=0 --lat_percentiles=1
            cpu_s=-
            if [[ $s != raw ]]; then
                after=$(cpu_ticks "${pid_of[$s]}")
                cpu_s=$(python3 -c "print(($after - $before) / $clk_tck)")
            fi
            line=$(python3 "$report_py" extract "$json" "$(workload_dir "$w")")
            read -r iops mbps p50 p99 ios <<<"$line"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$w" "$s" "$iops" "$mbps" "$p50" "$p99" "$ios" "$cpu_s" \
                >>"$samples"
            log "round $r/$ROUNDS $w $s: ${iops} IOPS, ${mbps} MB/s, p50 ${p50} us, cpu ${cpu_s} s"
        done
    done
done

if has udrbd; then echo "# udrbd_md_writes_at_end=$(udrbd_md_writes)" >>"$samples"; fi
cp "$samples" "$tsv"
python3 "$report_py" report "$samples" | tee "$OUT"
log "report: $OUT (samples: $tsv)"
