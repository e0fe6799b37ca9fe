//! Torture trials with real daemons in two network namespaces: a writer (libnbd, protocol C)
//! puts a counter and a checksum in every 4 KiB block it writes and records each write once it
//! is acknowledged; meanwhile a trial kills the Primary (kill -9) and fails over, kills the
//! Secondary and restarts it, detaches and attaches the Secondary's disk, makes it fail
//! (`UDRBD_FAULT_FILE`: on-io-error detach, then mended and attached), cuts the link for
//! a while, or cuts it and kills the Secondary while it catches up (within 100 ms of the
//! resync's start; a resync that ends sooner is killed after it, and the line says which). After each trial every acknowledged write reads back from the Primary (its block
//! holds that write or a later one), and once the resync is done the replicas are identical;
//! at the end online verify finds nothing. `UDRBD_TORTURE_TRIALS=N` runs N trials (default 6,
//! one of each kind); `UDRBD_TORTURE_SEED` picks the sequence. Each trial prints one line.
//! A second test keeps the activity log evicting extents while nodes are killed
//! (`UDRBD_TORTURE_AL_TRIALS=N`, default 2).

mod common;

use common::netns::NetnsPair;
use common::pair::{Pair, RES, Setup, pair_setup, status};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The writer: random 4 KiB blocks among the first `blocks` (default 4096: 16 MiB), each
/// `(block, counter, crc32)`;
/// `counter` grows from `base`; an acknowledged write is appended to the log as `block
/// counter`; a FLUSH every 50 writes; stops at the first error (the daemon died) or after
/// `seconds`.
const WRITER: &str = r#"
import nbd, random, struct, sys, time, zlib
uri, log_path, seconds, base = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
blocks = int(sys.argv[5]) if len(sys.argv) > 5 else 4096
h = nbd.NBD()
h.connect_uri(uri)
rnd = random.Random(base)
log = open(log_path, "a", buffering=1)
counter, end = base, time.time() + seconds
while time.time() < end:
    b = rnd.randrange(blocks)
    counter += 1
    head = struct.pack("<QQ", b, counter) + bytes(4096 - 20)
    block = head + struct.pack("<I", zlib.crc32(head))
    try:
        h.pwrite(block, b * 4096)
        if counter % 50 == 0:
            h.flush()
    except nbd.Error:
        break
    log.write(f"{b} {counter}\n")
"#;

/// The checker: every block in the log holds its last acknowledged counter or a later one,
/// with a valid checksum. Prints how many blocks it checked.
const CHECKER: &str = r#"
import nbd, struct, sys, zlib
uri, log_path = sys.argv[1], sys.argv[2]
last = {}
for line in open(log_path):
    b, c = map(int, line.split())
    last[b] = max(last.get(b, 0), c)
h = nbd.NBD()
h.connect_uri(uri)
bad = []
for b, c in sorted(last.items()):
    data = h.pread(4096, b * 4096)
    blk, got = struct.unpack("<QQ", data[:16])
    (crc,) = struct.unpack("<I", data[4092:])
    if crc != zlib.crc32(data[:4092]) or blk != b or got < c:
        bad.append((b, c, blk, got))
if bad:
    sys.exit(f"{len(bad)} acknowledged writes lost, first: {bad[:5]}")
print(len(last))
"#;

fn python(script: &str, args: &[&str]) -> Command {
    let mut c = Command::new("/usr/bin/python3");
    c.arg("-c").arg(script).args(args);
    c
}

fn writer(uri: &str, log: &std::path::Path, seconds: f64, base: u64) -> Child {
    writer_over(uri, log, seconds, base, 4096)
}

/// [`writer`] over the first `blocks` blocks.
fn writer_over(uri: &str, log: &std::path::Path, seconds: f64, base: u64, blocks: u64) -> Child {
    python(
        WRITER,
        &[
            uri,
            &log.display().to_string(),
            &seconds.to_string(),
            &base.to_string(),
            &blocks.to_string(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("python3-libnbd (.ci/apt-packages)")
}

fn check(p: &Pair, primary: usize, log: &std::path::Path, what: &str) -> u64 {
    let uri = node(p, primary).nbd_uri(RES);
    let o = python(CHECKER, &[&uri, &log.display().to_string()])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "{what}: {}\n{}\nlogs:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        p.logs()
    );
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn node(p: &Pair, i: usize) -> &common::Node {
    if i == 0 { &p.a } else { &p.b }
}

fn node_mut(p: &mut Pair, i: usize) -> &mut common::Node {
    if i == 0 { &mut p.a } else { &mut p.b }
}

fn in_sync(p: &Pair) -> bool {
    [&p.a, &p.b].iter().all(|n| {
        let s = status(n);
        s.contains("  disk:UpToDate open:no\n")
            && s.contains("peer-disk:UpToDate")
            && !s.contains("replication:")
    })
}

/// Trial kinds: Primary killed, Secondary killed, Secondary detached, Secondary's disk
/// failing, link cut.
const KINDS: u64 = 6;

/// A tiny deterministic generator (the sequence of trials and writer seeds).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn acknowledged_writes_survive_crashes_failover_and_detach() {
    let trials: u64 = std::env::var("UDRBD_TORTURE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KINDS);
    let seed: u64 = std::env::var("UDRBD_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng(seed | 1);
    let Some(net) = NetnsPair::new() else { return };
    // Fencing resource-only without a handler (the how-to's shape): the survivor of a crashed
    // Primary is promoted with --force, as an operator (or Pacemaker's agent) would. A cut is
    // noticed within about 1.5 s (ko-count x timeout).
    let mut p = pair_setup(&Setup {
        extra: "net { connect-int 1; verify-alg crc32c; ping-int 1; ping-timeout 5; timeout 5; \
                ko-count 2; }",
        addresses: Some([net.address(0, 7789), net.address(1, 7789)]),
        ..Setup::default()
    });
    net.host(&mut p.a, 0);
    net.host(&mut p.b, 1);
    // Each node's disk fails where its fault file says (`UDRBD_FAULT_FILE`; empty: never).
    let faults = [0, 1].map(|i| p.a.run_dir.with_file_name(format!("faults-{i}")));
    for (i, f) in faults.iter().enumerate() {
        std::fs::write(f, "").expect("fault file");
        node_mut(&mut p, i)
            .daemon_env
            .push(("UDRBD_FAULT_FILE".into(), f.display().to_string()));
    }
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "in sync", || in_sync(&p));
    let log = p.a.run_dir.with_file_name("acked.log");
    let mut primary = 0;
    let mut checked = 0;
    for trial in 0..trials {
        let kind = if trials <= KINDS {
            trial % KINDS
        } else {
            rng.next() % KINDS
        };
        let base = (trial + 1) * 1_000_000_000;
        let uri = node(&p, primary).nbd_uri(RES);
        let secondary = 1 - primary;
        let mut w = writer(&uri, &log, 2.0, base);
        std::thread::sleep(Duration::from_millis(400 + rng.next() % 800));
        let what = match kind {
            0 => {
                // kill -9 the Primary, fail over to the Secondary, bring the old one back.
                node_mut(&mut p, primary).crash();
                let _ = w.wait();
                node(&p, secondary).adm(&["primary", "--force", RES]).ok();
                checked = check(&p, secondary, &log, "after the Primary's crash");
                // The application goes on on the new Primary before the old one returns (a new
                // data generation; without one the returning crashed Primary would be the
                // sync source, and DRBD refuses to make a Primary the SyncTarget).
                let new_uri = node(&p, secondary).nbd_uri(RES);
                let mut w2 = writer(&new_uri, &log, 0.5, base + 500_000_000);
                let _ = w2.wait();
                let old = node_mut(&mut p, primary);
                old.start();
                old.adm(&["up", RES]).ok();
                primary = secondary;
                "Primary killed, failover"
            }
            1 => {
                node_mut(&mut p, secondary).crash();
                std::thread::sleep(Duration::from_millis(300));
                let s = node_mut(&mut p, secondary);
                s.start();
                s.adm(&["up", RES]).ok();
                let _ = w.wait();
                "Secondary killed and restarted"
            }
            3 => {
                // The Secondary's disk fails under the writes (on-io-error detach): it goes
                // Diskless, is mended, attached, and resynced.
                let rule = "write 0 16777216\n";
                std::fs::write(&faults[secondary], rule).expect("fault file");
                // The fault needs writes: on a loaded machine the writer may end before the
                // daemon reads the fault file again, so one more (logged) writer follows.
                let mut more = 0;
                p.eventually(20, "the failing Secondary Diskless", || {
                    if matches!(w.try_wait(), Ok(Some(_))) {
                        more += 1;
                        w = writer(&uri, &log, 2.0, base + 600_000_000 + more * 10_000_000);
                    }
                    status(node(&p, secondary)).contains("  disk:Diskless client:no open:no\n")
                });
                // The fault file is read again at most once a second.
                std::thread::sleep(Duration::from_millis(1100));
                std::fs::write(&faults[secondary], "").expect("fault file");
                node(&p, secondary).adm(&["attach", RES]).ok();
                let _ = w.wait();
                "Secondary's disk failed, mended and attached"
            }
            2 => {
                node(&p, secondary).adm(&["detach", RES]).ok();
                std::thread::sleep(Duration::from_millis(300));
                node(&p, secondary).adm(&["attach", RES]).ok();
                let _ = w.wait();
                "Secondary detached and attached"
            }
            5 => {
                // The Secondary misses the writes, then dies while it catches up.
                net.cut();
                let _ = w.wait();
                net.heal();
                // Wait for the resync to start (the reconnect takes up to connect-int), then
                // kill at a random moment within its first 100 ms.
                let mut during = false;
                let until = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < until && !during {
                    during = status(node(&p, primary)).contains("replication:SyncSource");
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(rng.next() % 100));
                node_mut(&mut p, secondary).crash();
                let s = node_mut(&mut p, secondary);
                s.start();
                s.adm(&["up", RES]).ok();
                if during {
                    "Secondary killed during its resync"
                } else {
                    "Secondary killed after a cut (its resync was not seen running)"
                }
            }
            _ => {
                // The cable: the Primary goes on alone (resource-only fencing without a
                // handler does not freeze), then the Secondary catches up.
                net.cut();
                std::thread::sleep(Duration::from_millis(2500));
                net.heal();
                let _ = w.wait();
                "link cut and healed"
            }
        };
        p.eventually(60, &format!("trial {trial} ({what}): in sync"), || {
            in_sync(&p)
        });
        checked = checked.max(check(&p, primary, &log, what));
        // The other replica holds the same bytes.
        p.assert_identical();
        eprintln!(
            "torture trial {}/{trials}: {what}: ok ({checked} writes checked)",
            trial + 1
        );
    }
    assert!(checked > 0, "the writer acknowledged nothing");
    p.assert_verify_clean();
}

/// The activity log under eviction: a 512 MiB device, `al-extents 67` (DRBD's minimum: 268 MiB
/// hot), and writes spread over all 128 extents, so about every other write evicts an extent from
/// the log. The Primary is killed with such writes in flight and fails over, and the Secondary is
/// killed and restarted; after each, every acknowledged write reads back, the replicas are
/// identical over the whole device (a block written under an evicted extent but not marked in
/// the bitmap would differ), and verify finds 0 at the end.
#[test]
fn activity_log_eviction_under_crashes_loses_nothing() {
    const SIZE: u64 = 512 << 20;
    let trials: u64 = std::env::var("UDRBD_TORTURE_AL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut p = pair_setup(&Setup {
        extra: "net { connect-int 1; verify-alg crc32c; ping-int 1; ping-timeout 5; timeout 5; \
                ko-count 2; } disk { al-extents 67; }",
        ..Setup::default()
    });
    common::backing_file(&p.disk_a, SIZE);
    common::backing_file(&p.disk_b, SIZE);
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "in sync", || in_sync(&p));
    let log = p.a.run_dir.with_file_name("acked-al.log");
    // The data area: the whole device but the internal metadata at its end.
    let data_blocks = (SIZE - (4 << 20)) / 4096;
    let mut primary = 0;
    for trial in 0..trials {
        let base = (trial + 1) * 1_000_000_000;
        let secondary = 1 - primary;
        let mut w = writer_over(
            &node(&p, primary).nbd_uri(RES),
            &log,
            2.0,
            base,
            data_blocks,
        );
        std::thread::sleep(Duration::from_millis(1500));
        let what = if trial % 2 == 0 {
            node_mut(&mut p, primary).crash();
            let _ = w.wait();
            node(&p, secondary).adm(&["primary", "--force", RES]).ok();
            check(&p, secondary, &log, "after the Primary's crash");
            let mut w2 = writer_over(
                &node(&p, secondary).nbd_uri(RES),
                &log,
                0.5,
                base + 500_000_000,
                data_blocks,
            );
            let _ = w2.wait();
            let old = node_mut(&mut p, primary);
            old.start();
            old.adm(&["up", RES]).ok();
            primary = secondary;
            "Primary killed under AL eviction, failover"
        } else {
            node_mut(&mut p, secondary).crash();
            let _ = w.wait();
            let s = node_mut(&mut p, secondary);
            s.start();
            s.adm(&["up", RES]).ok();
            "Secondary killed under AL eviction"
        };
        p.eventually(120, &format!("AL trial {trial} ({what}): in sync"), || {
            in_sync(&p)
        });
        let checked = check(&p, primary, &log, what);
        assert_identical_up_to(&p, data_blocks * 4096);
        eprintln!(
            "AL trial {}: {what}: ok ({checked} blocks checked)",
            trial + 1
        );
    }
    // Only 67 extents fit in the log: writes to more extents than that cannot all have been
    // in it at once, so extents were evicted.
    let extents: std::collections::BTreeSet<u64> = std::fs::read_to_string(&log)
        .expect("acked log")
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .map(|block| block / 1024)
        .collect();
    assert!(extents.len() > 67, "only {} extents written", extents.len());
    p.assert_verify_clean();
}

/// The two backing files hold the same bytes in `[0, len)`, compared 1 MiB at a time.
fn assert_identical_up_to(p: &Pair, len: u64) {
    use std::io::Read;
    let mut a = std::fs::File::open(&p.disk_a).expect("disk a");
    let mut b = std::fs::File::open(&p.disk_b).expect("disk b");
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(1 << 20) as usize;
        a.read_exact(&mut ba[..n]).expect("read a");
        b.read_exact(&mut bb[..n]).expect("read b");
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            let byte = at + i as u64;
            panic!(
                "the replicas differ first at byte {byte} (block {}); logs:\n{}",
                byte / 4096,
                p.logs()
            );
        }
        at += n as u64;
    }
}
