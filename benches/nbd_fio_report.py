#!/usr/bin/env python3
"""Helpers for benches/nbd_fio.sh.

    nbd_fio_report.py extract FIO_JSON DIRECTION
        Print one tab-separated line from a fio --output-format=json file:
        iops  MB/s  lat_p50_us  lat_p99_us  total_ios
        DIRECTION is "read" or "write" (which half of the job's stats to read).

    nbd_fio_report.py report RESULTS_TSV
        Read the per-run samples written by nbd_fio.sh and print the markdown report:
        medians per (workload, server), the tracked ratios, CPU per I/O and the targets.

Only the standard library is used.
"""

import json
import statistics
import sys
from collections import defaultdict

SERVERS = ["udrbd", "qemu-nbd", "nbdkit-file", "nbdkit-mem", "ceiling", "raw"]
NOCACHE_PEERS = ["qemu-nbd", "nbdkit-file"]
FLOORS = ["raw", "nbdkit-mem"]
# Servers whose CPU is sampled (raw is fio's io_uring engine on the file: no server process).
CPU_SERVERS = ["udrbd", "qemu-nbd", "nbdkit-file", "nbdkit-mem", "ceiling"]

# workload name -> (label, primary metric, unit)
WORKLOADS = {
    "randread-4k-qd1": ("4 KiB randread QD1", "iops", "IOPS"),
    "randread-4k-qd32": ("4 KiB randread QD32", "iops", "IOPS"),
    "randwrite-4k-qd1": ("4 KiB randwrite QD1", "iops", "IOPS"),
    "randwrite-4k-qd32": ("4 KiB randwrite QD32", "iops", "IOPS"),
    "read-1m-qd8": ("1 MiB seq read QD8", "mbps", "MB/s"),
    "write-1m-qd8": ("1 MiB seq write QD8", "mbps", "MB/s"),
}


def extract(path, direction):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    # fio may print warnings before the JSON document; start at the first brace.
    start = text.find("{")
    if start < 0:
        sys.exit(f"nbd_fio_report.py: no JSON in {path}")
    doc = json.loads(text[start:])
    job = doc["jobs"][0]
    if job.get("error", 0):
        sys.exit(f"nbd_fio_report.py: fio job failed with error {job['error']} ({path})")
    st = job[direction]
    # Total latency (submission + completion) when fio was run with --lat_percentiles=1, else
    # completion latency. The total matters for the raw io_uring case: there a 4 KiB O_DIRECT
    # request often completes inside io_uring_enter, so its time shows up as slat, not clat.
    pct = st.get("lat_ns", {}).get("percentile") or st.get("clat_ns", {}).get("percentile", {})
    p50 = pct.get("50.000000", 0) / 1000.0
    p99 = pct.get("99.000000", 0) / 1000.0
    print(f"{st['iops']:.1f}\t{st['bw_bytes'] / 1e6:.2f}\t{p50:.1f}\t{p99:.1f}\t{st['total_ios']}")


def fmt(v, digits=None):
    if v is None:
        return "-"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(ok):
    if ok is None:
        return "n/a"
    return "PASS" if ok else "MISS"


def report(tsv):
    # samples[(workload, server)][metric] -> list of per-round values
    samples = defaultdict(lambda: defaultdict(list))
    meta = {}
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("#"):
                k, _, v = line[1:].strip().partition("=")
                meta[k.strip()] = v.strip()
                continue
            cols = line.split("\t")
            if cols[0] == "round":
                continue
            _rnd, wl, srv, iops, mbps, p50, p99, ios, cpu_s = cols[:9]
            s = samples[(wl, srv)]
            s["iops"].append(float(iops))
            s["mbps"].append(float(mbps))
            s["p50"].append(float(p50))
            s["p99"].append(float(p99))
            if cpu_s != "-" and int(ios) > 0:
                s["cpu_us_per_op"].append(float(cpu_s) * 1e6 / int(ios))

    def med(wl, srv, metric):
        vals = samples.get((wl, srv), {}).get(metric)
        return statistics.median(vals) if vals else None

    def spread(wl, srv, metric):
        vals = samples.get((wl, srv), {}).get(metric)
        if not vals or min(vals) == 0:
            return None
        return max(vals) / min(vals)

    servers = [s for s in SERVERS if any(k[1] == s for k in samples)]
    out = []
    p = out.append
    p(f"# udrbd NBD benchmark, {meta.get('date', '?')}")
    p("")
    p(f"- kernel: `{meta.get('kernel', '?')}`, nproc: {meta.get('nproc', '?')}, "
      f"fio: {meta.get('fio', '?')}, udrbd: `{meta.get('udrbd_commit', '?')}`")
    p(f"- rounds: {meta.get('rounds', '?')}, runtime per run: {meta.get('runtime', '?')} s, "
      f"image: {meta.get('size', '?')} per server in `{meta.get('bench_dir', '?')}` "
      f"(fs: {meta.get('fstype', '?')}), page cache dropped before each run: "
      f"{'yes' if meta.get('drop_caches') == '1' else 'no'}")
    if "udrbd_md_writes_after_warmup" in meta:
        p(f"- udrbd metadata writes (activity log, bitmap) after the warm-up: "
          f"{meta['udrbd_md_writes_after_warmup']}; at the end: {meta.get('udrbd_md_writes_at_end', '?')}")
    p("- every cell is the median over the rounds; rounds interleave workloads and servers")
    p("- ratios: *vs peer* = udrbd / max(qemu-nbd, nbdkit-file); *vs floor* = udrbd / min(raw, nbdkit-mem); "
      "*ceiling vs floor* = the same ratio for `ceiling` (benches/ceiling.rs: an O_DIRECT server with no "
      "work of its own, one thread and one io_uring, no replication)")
    p("")

    # Throughput table.
    hdr = ["workload", "unit"] + servers + ["vs peer", "vs floor", "ceiling vs floor", "spread"]
    p("| " + " | ".join(hdr) + " |")
    p("|" + "|".join(["---"] * 2 + ["---:"] * (len(hdr) - 2)) + "|")
    rows = {}
    for wl, (label, metric, unit) in WORKLOADS.items():
        vals = {s: med(wl, s, metric) for s in servers}
        if all(v is None for v in vals.values()):
            continue
        peers = [vals.get(s) for s in NOCACHE_PEERS if vals.get(s) is not None]
        floors = [vals.get(s) for s in FLOORS if vals.get(s) is not None]
        vs_peer = ratio(vals.get("udrbd"), max(peers)) if peers else None
        vs_floor = ratio(vals.get("udrbd"), min(floors)) if floors else None
        ceil_floor = ratio(vals.get("ceiling"), min(floors)) if floors else None
        rows[wl] = (vs_peer, vs_floor, ceil_floor)
        sp = [spread(wl, s, metric) for s in servers]
        sp = [x for x in sp if x is not None]
        cells = [label, unit] + [fmt(vals[s]) for s in servers]
        cells += [fmt(r, 2) + ("x" if r else "") for r in (vs_peer, vs_floor, ceil_floor)]
        cells.append(fmt(max(sp), 2) + "x" if sp else "-")
        p("| " + " | ".join(cells) + " |")
    p("")
    p("*spread* = the worst max/min over rounds of any server in that row (how noisy the row was).")
    p("")

    # Latency table (QD1 random write, and QD1 random read for context).
    p("QD1 latency (µs, median over rounds of fio's total-latency percentiles: submission + completion):")
    p("")
    hdr = ["workload", "pct"] + servers + ["udrbd / best peer"]
    p("| " + " | ".join(hdr) + " |")
    p("|" + "|".join(["---"] * 2 + ["---:"] * (len(hdr) - 2)) + "|")
    lat = {}
    for wl in ("randwrite-4k-qd1", "randread-4k-qd1"):
        for pc in ("p50", "p99"):
            vals = {s: med(wl, s, pc) for s in servers}
            if all(v is None for v in vals.values()):
                continue
            peers = [vals.get(s) for s in NOCACHE_PEERS if vals.get(s) is not None]
            r = ratio(vals.get("udrbd"), min(peers)) if peers else None
            lat[(wl, pc)] = r
            cells = [WORKLOADS[wl][0], pc] + [fmt(vals[s], 1) for s in servers] + [fmt(r, 2) + ("x" if r else "")]
            p("| " + " | ".join(cells) + " |")
    p("")

    # CPU table.
    cpu_servers = [s for s in CPU_SERVERS if s in servers]
    p("Server CPU per I/O (µs of user+system time of the server process per fio I/O; raw has no server):")
    p("")
    hdr = ["workload"] + cpu_servers + ["udrbd < both peers?"]
    p("| " + " | ".join(hdr) + " |")
    p("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
    cpu_ok = {}
    for wl, (label, _m, _u) in WORKLOADS.items():
        vals = {s: med(wl, s, "cpu_us_per_op") for s in cpu_servers}
        if all(v is None for v in vals.values()):
            continue
        u = vals.get("udrbd")
        # The target is against the no-cache peers; nbdkit-mem (no disk) is shown for scale.
        others = [vals[s] for s in NOCACHE_PEERS if vals.get(s) is not None]
        ok = None if u is None or not others else all(u < v for v in others)
        cpu_ok[wl] = ok
        cells = [label] + [fmt(vals[s], 1) for s in cpu_servers] + [verdict(ok)]
        p("| " + " | ".join(cells) + " |")
    p("")

    # Targets.
    p("Targets (reported, never fatal):")
    p("")
    p("| target | measured | verdict |")
    p("|---|---:|---|")
    for wl in ("randwrite-4k-qd32", "randread-4k-qd32"):
        vs_peer, vs_floor, ceil_floor = rows.get(wl, (None, None, None))
        label = WORKLOADS[wl][0]
        p(f"| {label}: udrbd >= 1.2x best no-cache peer | {fmt(vs_peer, 2)}x | "
          f"{verdict(None if vs_peer is None else vs_peer >= 1.2)} |")
        reach = "" if ceil_floor is None else f" (ceiling server: {fmt(ceil_floor, 2)}x)"
        p(f"| {label}: udrbd >= 0.85x min(raw, nbdkit-mem) | {fmt(vs_floor, 2)}x{reach} | "
          f"{verdict(None if vs_floor is None else vs_floor >= 0.85)} |")
    r = lat.get(("randwrite-4k-qd1", "p50"))
    p(f"| 4 KiB randwrite QD1: udrbd p50 <= 1.1x best no-cache peer | {fmt(r, 2)}x | "
      f"{verdict(None if r is None else r <= 1.1)} |")
    known = [v for v in cpu_ok.values() if v is not None]
    n_ok = sum(1 for v in known if v)
    p(f"| less CPU per I/O than qemu-nbd and nbdkit-file (workloads) | {n_ok}/{len(known)} | "
      f"{verdict(None if not known else n_ok == len(known))} |")
    print("\n".join(out))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "extract":
        extract(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
