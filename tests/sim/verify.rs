//! Online verify in the two-node world: nothing found on replicas that agree (also while the
//! application writes, which must not produce false reports), exactly the corrupted blocks
//! found, logged and marked on both nodes, and `invalidate --reset-bitmap=no` resyncing just
//! those.

use super::pair::{A, B, World};
use super::scenarios::{Scenario, ready, ready_in};
use udrbd::config::Protocol;
use udrbd::repl::{AdminCmd, ReplState};
use udrbd::types::{BM_BLOCK_SIZE, Sector};

fn verifying(w: &World) -> bool {
    [A, B].iter().any(|&i| {
        matches!(
            w.n[i].status_peer().repl,
            ReplState::VerifyS | ReplState::VerifyT
        )
    })
}

/// Runs `verify` on `i` to the end; returns how many blocks each side reported.
fn verify(s: &mut Scenario, i: usize, start: u64, stop: Option<u64>) -> [u64; 2] {
    s.admin_ok(
        i,
        AdminCmd::Verify {
            start: Sector(start),
            stop: stop.map(Sector),
        },
    );
    s.w.run_until(600_000, "the verify to finish", |w| !verifying(w));
    [A, B].map(|n| found(&s.w.n[n].logs))
}

/// The count from the last `Online verify found N 4k block out of sync!` line.
fn found(logs: &[String]) -> u64 {
    logs.iter()
        .rev()
        .find_map(|l| {
            let rest = l.split("Online verify found ").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .unwrap_or(u64::MAX)
}

/// Flips a byte of block `b` on node `i`, behind the engine's back (a silent disk error).
fn corrupt(s: &mut Scenario, i: usize, b: u64) {
    let at = (b * BM_BLOCK_SIZE + 100) as usize;
    s.w.n[i].visible[at] ^= 0x5a;
    s.w.n[i].durable[at] ^= 0x5a;
}

#[test]
fn verify_of_replicas_that_agree_finds_nothing() {
    let mut s = ready(7001).write_random(200).drain();
    assert_eq!(verify(&mut s, A, 0, None), [0, 0]);
    assert_eq!(s.w.n[A].oos_bits() + s.w.n[B].oos_bits(), 0);
    // From the Secondary too.
    assert_eq!(verify(&mut s, B, 0, None), [0, 0]);
}

#[test]
fn verify_during_writes_reports_no_false_differences() {
    // The first 4 MiB (verify runs at c-min-rate while the application writes).
    for seed in 0..8 {
        let mut w = World::new(7100 + seed, Protocol::C);
        w.faults.net_delay_max = 5;
        w.faults.disk_lat_max = 5;
        let mut s = ready_in(w).write_random(50);
        s.admin_ok(
            A,
            AdminCmd::Verify {
                start: Sector(0),
                stop: Some(Sector(8192)),
            },
        );
        let mut n = 0;
        while verifying(&s.w) {
            s = s.write_random(5);
            n += 1;
            assert!(n < 10_000, "verify never finished");
        }
        s = s.drain();
        assert_eq!(
            [found(&s.w.n[A].logs), found(&s.w.n[B].logs)],
            [0, 0],
            "seed {seed}: a write racing the verify was reported"
        );
        s.expect_in_sync();
    }
}

#[test]
fn verify_finds_exactly_the_corrupted_blocks_and_invalidate_repairs_them() {
    let mut s = ready(7002).write_random(100).drain();
    let bad = [3u64, 4, 900, 2047];
    for b in bad {
        corrupt(&mut s, B, b);
    }
    assert_eq!(verify(&mut s, A, 0, None), [4, 4]);
    for i in [A, B] {
        let logs = &s.w.n[i].logs;
        // Adjacent blocks form one run.
        for want in [
            "Out of sync: start=24, size=16 (sectors)",
            "Out of sync: start=7200, size=8 (sectors)",
            "Out of sync: start=16376, size=8 (sectors)",
        ] {
            assert!(
                logs.iter().any(|l| l.ends_with(want)),
                "node {i} did not log {want:?}: {:?}",
                logs.iter()
                    .filter(|l| l.contains("Out of sync"))
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(s.w.n[i].oos_bits(), 4, "node {i}'s bitmap");
    }
    // A range: only what lies in it.
    assert_eq!(verify(&mut s, A, 7200, Some(7208)), [1, 1]);
    // As in DRBD 9 nothing is resynced until the bad node is invalidated, bitmap only.
    let before = s.w.resync_bytes[A] + s.w.resync_bytes[B];
    s.admin_ok(
        B,
        AdminCmd::Invalidate {
            reset_bitmap: false,
        },
    );
    s.w.run_until(60_000, "the resync of the marked blocks", |w| w.in_sync());
    let moved = s.w.resync_bytes[A] + s.w.resync_bytes[B] - before;
    assert_eq!(moved, 4 * BM_BLOCK_SIZE);
    s.w.check_converged();
    assert_eq!(verify(&mut s, B, 0, None), [0, 0]);
}

#[test]
fn invalidate_remote_without_reset_resyncs_the_marks_to_the_peer() {
    let mut s = ready(7003).write_random(100).drain();
    corrupt(&mut s, B, 77);
    assert_eq!(verify(&mut s, B, 0, None), [1, 1]);
    let before = s.w.resync_bytes[A] + s.w.resync_bytes[B];
    s.admin_ok(
        A,
        AdminCmd::InvalidateRemote {
            reset_bitmap: false,
        },
    );
    s.w.run_until(60_000, "the resync of the marked block", |w| w.in_sync());
    assert_eq!(
        s.w.resync_bytes[A] + s.w.resync_bytes[B] - before,
        BM_BLOCK_SIZE
    );
    s.w.check_converged();
}

/// With csums-alg, a full resync of identical data moves (almost) no data: the target sends
/// digests and the source answers "in sync"; only blocks that really differ come as data.
#[test]
fn csums_resync_of_identical_data_moves_only_what_differs() {
    let w = World::with_peers(7004, Protocol::C, |_, p| {
        p.csums_alg = Some(udrbd::repl::digest::DigestAlg::Sha256);
    });
    let mut s = ready_in(w).write_random(100).drain();
    corrupt(&mut s, B, 10);
    corrupt(&mut s, B, 3000);
    let before = s.w.resync_bytes[A] + s.w.resync_bytes[B];
    s.admin_ok(B, AdminCmd::Invalidate { reset_bitmap: true });
    s.w.run_until(120_000, "the full resync", |w| w.in_sync());
    let moved = s.w.resync_bytes[A] + s.w.resync_bytes[B] - before;
    // Requests are up to 256 KiB: each corrupted block costs at most its request.
    assert!(
        moved > 0 && moved <= 2 * 256 * 1024,
        "a full resync of identical data moved {moved} bytes"
    );
    s.w.check_converged();
    assert!(
        s.w.n[B]
            .logs
            .iter()
            .any(|l| l.contains("had equal checksums, eliminated:")),
        "no csums summary"
    );
}

/// `on-io-error detach` (the default) on the Secondary: a bad spot fails its writes; it
/// detaches, the Primary's writes still complete (they are on its disk) and are marked; the
/// disk is attached again once fixed and exactly what it missed is resynced.
#[test]
fn a_failing_secondary_disk_detaches_and_attach_resyncs_it() {
    let mut s = ready(7005).write_random(50).drain();
    let failed_before = s.w.failed_writes;
    s.w.faults.bad_range[B] = Some((1 << 20, 4 << 20));
    s = s.write_random(300).drain();
    assert_eq!(
        s.w.failed_writes, failed_before,
        "the Primary's writes failed although its own disk is fine"
    );
    assert_eq!(
        s.w.n[B].engine.disk_state(),
        udrbd::repl::DiskState::Diskless
    );
    assert!(
        s.w.n[B]
            .logs
            .iter()
            .any(|l| l.contains("Local IO failed in WRITE") && l.contains("Detaching...")),
        "no detach logged"
    );
    assert!(
        s.w.n[A].oos_bits() > 0,
        "the Primary marked nothing for the failed node"
    );
    // Fixed; `drbdadm attach`: comes back Inconsistent and resyncs from the bitmap only.
    s.w.faults.bad_range[B] = None;
    let before = s.w.resync_bytes[A] + s.w.resync_bytes[B];
    s.w.attach(B);
    s.w.run_until(120_000, "in sync after attach", |w| w.in_sync());
    let moved = s.w.resync_bytes[A] + s.w.resync_bytes[B] - before;
    assert!(
        moved > 0 && moved < 8 << 20,
        "attach resynced {moved} bytes"
    );
    s.w.check_converged();
}

/// `data-integrity-alg`: a write corrupted on the wire is caught by its digest, never written;
/// the link is reset and the write, unconfirmed, is resynced. Without it the corruption would
/// land on the Secondary silently (only `verify` would find it).
#[test]
fn data_integrity_alg_catches_a_corrupted_write_on_the_wire() {
    for seed in 0..5 {
        let w = World::with_peers(7200 + seed, Protocol::C, |_, p| {
            p.integrity_alg = Some(udrbd::repl::digest::DigestAlg::Crc32c);
        });
        let mut s = ready_in(w).write_random(30).drain();
        s.w.faults.corrupt_next_data[A] = true;
        s = s.write_random(60).drain();
        assert!(
            s.w.n[B]
                .logs
                .iter()
                .any(|l| l.contains("Digest integrity check FAILED")),
            "seed {seed}: the corruption was not caught"
        );
        s.expect_in_sync();
    }
}
