#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (or the ones named) for SECONDS each, one after another,
# on this machine's stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its sanitizer
# flags), and prints one Markdown table row per target: executions, coverage, corpus size and
# whether it crashed. Inputs it finds go to a working corpus ($FUZZ_WORK, default
# /var/tmp/udrbd-fuzz/TARGET) seeded from fuzz/corpus/TARGET, so the committed seeds stay small;
# a crash's input lands in fuzz/artifacts/TARGET/ and the script exits 1.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      default 60 s per target, every target
#   RUNS=N scripts/fuzz.sh 0 config            stop after N executions instead of a time
#   SANITIZER=none scripts/fuzz.sh 600         no AddressSanitizer (about twice the rate; the
#                                              code under test has no unsafe)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Record campaigns in fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
work=${FUZZ_WORK:-/var/tmp/udrbd-fuzz}
sanitizer=${SANITIZER:-address}
command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 2; }

export RUSTC_BOOTSTRAP=1
cargo fuzz build -O -s "$sanitizer" >&2

echo "| target | seconds | executions | exec/s | cov | ft | corpus | result |"
echo "|---|---|---|---|---|---|---|---|"
failed=0
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    log=$(mktemp)
    limit=(-max_total_time="$seconds")
    if [ -n "${RUNS:-}" ]; then limit=(-runs="$RUNS"); fi
    start=$(date +%s)
    set +e
    cargo fuzz run -O -s "$sanitizer" "$t" "$work/$t" "corpus/$t" -- \
        "${limit[@]}" -print_final_stats=1 -close_fd_mask=3 >"$log" 2>&1
    rc=$?
    set -e
    took=$(( $(date +%s) - start ))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$( { grep -o 'cov: [0-9]*' "$log" || true; } | tail -1 | cut -d' ' -f2)
    ft=$( { grep -o 'ft: [0-9]*' "$log" || true; } | tail -1 | cut -d' ' -f2)
    corp=$(find "$work/$t" -type f | wc -l)
    result=ok
    if [ "$rc" -ne 0 ]; then
        result="CRASH (exit $rc, see fuzz/artifacts/$t/)"
        failed=1
        tail -40 "$log" >&2
    fi
    echo "| $t | $took | ${runs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $corp | $result |"
    rm -f "$log"
done
exit "$failed"
