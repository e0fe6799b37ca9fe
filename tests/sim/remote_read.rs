//! A Primary whose disk is not UpToDate, served by its peer: promoted while it is the
//! SyncTarget (DRBD 9 allows it while the peer has UpToDate data), it reads what its disk
//! lacks from the peer and writes to both, while the resync runs. Every read returns what the
//! application model allows (a write acknowledged before it, or one in flight), the resync
//! never writes older data over a newer write, and both nodes end identical.

use super::pair::{A, B, World};
use super::scenarios::{Scenario, ready};
use udrbd::config::{AfterSb0Pri, AfterSb2Pri, Protocol, RrConflict};
use udrbd::repl::handshake::SbPolicy;
use udrbd::repl::{AdminCmd, DiskState, ReplState, Role};

/// Until the resync with node `i` as target is over: random reads and writes on `i`, up to
/// 16 outstanding. Returns the requests submitted while `i` was SyncTarget.
fn io_during_resync(s: &mut Scenario, i: usize) -> u64 {
    let end = s.w.now + 600_000;
    let mut during = 0;
    while !s.w.in_sync() {
        if s.w.now > end {
            s.w.fail("the resync made no progress under I/O");
        }
        let target = s.w.n[i].status_peer().repl == ReplState::SyncTarget;
        if target && s.w.outstanding() < 16 && s.w.rng.chance(200) {
            if s.w.rng.chance(500) {
                s.w.app_read(i);
            } else {
                s.w.app_write(i);
            }
            during += 1;
        }
        s.w.step();
    }
    during
}

/// A Secondary that missed writes is promoted as soon as it is the SyncTarget, and serves
/// reads and writes through the resync.
fn promoted_sync_target_run(seed: u64) -> (u64, u64, u64) {
    let mut s = ready(9000 + seed)
        .write_random(30)
        .drain()
        .split()
        .write_random(150)
        .drain()
        .demote(A);
    s.w.heal();
    s.w.run_until(20_000, "B to become SyncTarget", |w| {
        w.n[B].status_peer().repl == ReplState::SyncTarget
    });
    s.admin_ok(B, AdminCmd::Primary { force: false });
    if s.w.n[B].engine.role() != Role::Primary
        || s.w.n[B].engine.disk_state() != DiskState::Inconsistent
    {
        s.w.fail("B is not an Inconsistent Primary");
    }
    let failed_before = s.w.failed_writes;
    let during = io_during_resync(&mut s, B);
    if s.w.failed_writes != failed_before {
        s.w.fail(format!(
            "{} requests failed on the Primary SyncTarget",
            s.w.failed_writes - failed_before
        ));
    }
    let s = s.drain().expect_in_sync();
    for i in [A, B] {
        s.w.check_data_model(i);
    }
    (during, s.w.reads_ok, s.w.remote_reads[B])
}

#[test]
fn a_primary_sync_target_reads_through_its_peer() {
    let (mut during, mut reads, mut remote) = (0, 0, 0);
    super::for_each_seed(40, |seed| {
        let (d, r, m) = promoted_sync_target_run(seed);
        during += d;
        reads += r;
        remote += m;
    });
    if std::env::var("UDRBD_SIM_SEED").is_err() {
        assert!(during > 1_000, "requests during the resync: {during}");
        assert!(reads > 200, "reads checked: {reads}");
        assert!(remote > 100, "reads served by the peer: {remote}");
    }
}

/// A split brain with two Primaries under `after-sb-2pri violently-as0p` and `rr-conflict
/// violently`: the side with fewer changes becomes SyncTarget and stays Primary; its
/// application keeps reading (the winner's data, where the resync has not reached yet) and
/// writing through the resync, and both end identical.
fn violently_run(seed: u64) -> u64 {
    let policy = SbPolicy {
        after_sb_0pri: AfterSb0Pri::DiscardLeastChanges,
        after_sb_2pri: AfterSb2Pri::ViolentlyAs0p,
        rr_conflict: RrConflict::Violently,
        ..SbPolicy::default()
    };
    let w = World::with_peers(9500 + seed, Protocol::C, |_, p| {
        p.two_primaries = true;
        p.sb_policy = policy;
    });
    let mut s = Scenario::with_world(w)
        .connect()
        .clear_bitmap()
        .promote(A)
        .write_random(20)
        .drain()
        .split()
        .promote(B);
    // B changes less, so it is the victim (discard-least-changes): what it writes during
    // the split is not part of the application model.
    s = s.write_on(A, 120);
    s.w.discarded_writer = Some(B);
    s = s.write_on(B, 10).drain();
    s.w.heal();
    s.w.run_until(20_000, "B to become SyncTarget", |w| {
        w.n[B].status_peer().repl == ReplState::SyncTarget
    });
    // From here B's writes count again: only B writes, and its reads must see A's data
    // wherever the resync has not reached yet.
    s.w.discarded_writer = None;
    for i in [A, B] {
        if s.w.n[i].engine.role() != Role::Primary {
            s.w.fail(format!("node {i} lost its Primary role"));
        }
    }
    let failed_before = s.w.failed_writes;
    let during = io_during_resync(&mut s, B);
    if s.w.failed_writes != failed_before {
        s.w.fail("requests failed on the Primary SyncTarget");
    }
    let s = s.drain().expect_in_sync();
    for i in [A, B] {
        s.w.check_data_model(i);
    }
    during
}

#[test]
fn violently_as0p_keeps_the_losing_primary_serving() {
    let mut during = 0;
    super::for_each_seed(20, |seed| during += violently_run(seed));
    if std::env::var("UDRBD_SIM_SEED").is_err() {
        assert!(during > 200, "requests during the resync: {during}");
    }
}
