//! Split brain in the two-node world: every after-sb policy row, with 0, 1 and 2 Primaries at
//! the reconnect and both orders of "who changed more", against an oracle written from DRBD's
//! documentation (drbd.conf(5), `drbd_asb_recover_0p/1p/2p()`); then the manual recovery
//! with `connect --discard-my-data`.
//!
//! Each episode: A Primary, in sync; the link is cut; B is promoted; both write; the roles are
//! set to the row's; heal. The outcome must be either "both StandAlone, data untouched" or "in
//! sync, with exactly the winner's data on both": never a mix, never a silent merge.

use super::pair::{A, B, World};
use super::scenarios::{Scenario, ready_in};
use udrbd::config::{AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, Protocol, RrConflict};
use udrbd::repl::handler::Handler;
use udrbd::repl::handshake::SbPolicy;
use udrbd::repl::{AdminCmd, AdminError, ConnState, Role, StateError};

/// What an episode must end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Both StandAlone, nothing moved.
    Disconnect,
    /// In sync with this node's data.
    Winner(usize),
    /// The policy decides, from facts the oracle does not model (the role bit of the bitmap
    /// UUIDs): either winner, but a winner.
    AnyWinner,
}

/// The row: who is Primary at the reconnect, how much each side changed, and the policies.
#[derive(Clone, Copy, Debug)]
struct Row {
    primary: [bool; 2],
    /// Writes during the split; 0 = no writes but a new generation (`new-current-uuid`), the
    /// only way to split without changed blocks.
    writes: [usize; 2],
    p0: Pol0,
    p1: AfterSb1Pri,
    p2: AfterSb2Pri,
    rr: RrConflict,
}

/// after-sb-0pri, with `discard-node-NAME` naming a node (the config layer turns it into
/// discard-local on that node and discard-remote on the other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pol0 {
    Plain(AfterSb0Pri),
    DiscardNode(usize),
}

impl Row {
    fn policy(&self, i: usize) -> SbPolicy {
        SbPolicy {
            after_sb_0pri: match self.p0 {
                Pol0::Plain(p) => p,
                Pol0::DiscardNode(n) if n == i => AfterSb0Pri::DiscardLocal,
                Pol0::DiscardNode(_) => AfterSb0Pri::DiscardRemote,
            },
            after_sb_1pri: self.p1,
            after_sb_2pri: self.p2,
            always_asbp: false,
            rr_conflict: self.rr,
        }
    }
}

/// after-sb-0pri's answer from the changed-block counts.
fn oracle_0p(p0: Pol0, changed: [u64; 2]) -> Expect {
    let least = || match changed[A].cmp(&changed[B]) {
        std::cmp::Ordering::Less => Expect::Winner(B),
        std::cmp::Ordering::Greater => Expect::Winner(A),
        std::cmp::Ordering::Equal => Expect::AnyWinner,
    };
    match p0 {
        Pol0::Plain(AfterSb0Pri::Disconnect) => Expect::Disconnect,
        Pol0::Plain(AfterSb0Pri::DiscardYoungerPrimary | AfterSb0Pri::DiscardOlderPrimary) => {
            Expect::AnyWinner
        }
        Pol0::Plain(AfterSb0Pri::DiscardZeroChanges) => match (changed[A] == 0, changed[B] == 0) {
            (true, true) => Expect::AnyWinner,
            (true, false) => Expect::Winner(B),
            (false, true) => Expect::Winner(A),
            (false, false) => Expect::Disconnect,
        },
        Pol0::Plain(AfterSb0Pri::DiscardLeastChanges) => least(),
        Pol0::Plain(AfterSb0Pri::DiscardLocal | AfterSb0Pri::DiscardRemote) => {
            unreachable!("rows name the node")
        }
        Pol0::DiscardNode(n) => Expect::Winner(1 - n),
    }
}

/// The documented outcome of a row.
fn oracle(r: &Row, changed: [u64; 2]) -> Expect {
    let p0 = oracle_0p(r.p0, changed);
    // A winner that makes a Primary (that stays Primary) the SyncTarget meets rr-conflict.
    let rr = |e: Expect| match e {
        Expect::Winner(w) if r.primary[1 - w] && r.rr != RrConflict::Violently => {
            Expect::Disconnect
        }
        e => e,
    };
    match r.primary {
        [false, false] => p0,
        [true, true] => match r.p2 {
            AfterSb2Pri::Disconnect => Expect::Disconnect,
            // Both stay Primary: without allow-two-primaries they cannot be connected.
            AfterSb2Pri::ViolentlyAs0p => match p0 {
                Expect::Winner(_) if r.rr == RrConflict::Violently => Expect::Disconnect,
                e => rr(e),
            },
            // The loser gives up the Primary role first.
            AfterSb2Pri::CallPriLostAfterSb => p0,
        },
        _ => {
            let pri = if r.primary[A] { A } else { B };
            match r.p1 {
                AfterSb1Pri::Disconnect => Expect::Disconnect,
                AfterSb1Pri::Consensus => match p0 {
                    Expect::Winner(w) if w == pri => p0,
                    _ => Expect::Disconnect,
                },
                AfterSb1Pri::ViolentlyAs0p => rr(p0),
                AfterSb1Pri::DiscardSecondary => Expect::Winner(pri),
                AfterSb1Pri::CallPriLostAfterSb => p0,
            }
        }
    }
}

/// Runs the split up to the heal; returns the scenario with both data areas frozen.
fn split_brain(
    seed: u64,
    policies: [SbPolicy; 2],
    writes: [usize; 2],
    primary: [bool; 2],
) -> Scenario {
    let mut s = ready_in(World::with_policies(seed, Protocol::C, policies))
        .write_random(20)
        .drain()
        .split()
        .promote(B);
    for i in [A, B] {
        s = if writes[i] == 0 {
            let mut s = s;
            s.admin_ok(
                i,
                AdminCmd::NewCurrentUuid {
                    clear_bitmap: false,
                },
            );
            s
        } else {
            s.write_on(i, writes[i])
        };
    }
    s = s.drain();
    for i in [A, B] {
        if !primary[i] {
            s = s.demote(i);
        }
    }
    s.freeze_data()
}

/// Heals and waits for the end: in sync, or no reconnect attempts left.
fn settle(s: &mut Scenario) -> Option<usize> {
    s.w.heal();
    // As in DRBD, the side that refuses goes StandAlone; the other may sit in Connecting.
    let done = s.w.run_until_or(120_000, |w| {
        w.in_sync() || w.standalone[A] || w.standalone[B]
    });
    if !done {
        s.w.fail("neither in sync nor StandAlone after the heal");
    }
    if !s.w.in_sync() {
        s.w.run_for(5_000);
        for i in [A, B] {
            let conn = s.w.n[i].status_peer().conn;
            if !matches!(conn, ConnState::StandAlone | ConnState::Connecting) {
                s.w.fail(format!("node {i} is {conn:?} after a refused split brain"));
            }
            if s.frozen(i) != Some(&s.w.n[i].visible) {
                s.w.fail(format!(
                    "node {i}'s data changed although the split brain was refused"
                ));
            }
        }
        return None;
    }
    let winner = [A, B]
        .into_iter()
        .find(|&i| s.frozen(i) == Some(&s.w.n[1 - i].visible));
    let Some(w) = winner else {
        s.w.fail("in sync, but with neither side's data (a merge)");
    };
    if s.frozen(w) != Some(&s.w.n[w].visible) {
        s.w.fail(format!("the winner {w}'s own data changed"));
    }
    for i in [A, B] {
        if s.w.n[i].oos_bits() != 0 {
            s.w.fail(format!("node {i} still has out-of-sync bits"));
        }
    }
    if s.w.n[A].uuid() != s.w.n[B].uuid() {
        s.w.fail("in sync with different current UUIDs");
    }
    Some(w)
}

fn run_row(seed: u64, r: Row) {
    let policies = [r.policy(A), r.policy(B)];
    let mut s = split_brain(seed, policies, r.writes, r.primary);
    let changed = [s.w.n[A].oos_bits(), s.w.n[B].oos_bits()];
    let want = oracle(&r, changed);
    let got = settle(&mut s);
    let ok = match (want, got) {
        (Expect::Disconnect, None) => true,
        (Expect::Winner(w), Some(g)) => w == g,
        (Expect::AnyWinner, Some(_)) => true,
        _ => false,
    };
    if !ok {
        s.w.fail(format!(
            "{r:?} with changed blocks {changed:?}: expected {want:?}, got {got:?}\n  A log: {:?}\n  B log: {:?}",
            s.w.n[A].logs.iter().filter(|l| l.contains("peer")).collect::<Vec<_>>(),
            s.w.n[B].logs.iter().filter(|l| l.contains("peer")).collect::<Vec<_>>()
        ));
    }
    // Every split brain runs initial-split-brain on both; an unresolved one split-brain too.
    for i in [A, B] {
        let h = &s.w.n[i].handlers;
        if !h.contains(&Handler::InitialSplitBrain) {
            s.w.fail(format!("node {i} did not call initial-split-brain: {h:?}"));
        }
        let unresolved = s.w.n[i]
            .logs
            .iter()
            .any(|l| l.contains("Split-Brain detected but unresolved"));
        if unresolved != h.contains(&Handler::SplitBrain) {
            s.w.fail(format!(
                "node {i}: split-brain handler {h:?} vs unresolved {unresolved}"
            ));
        }
    }
    if let Some(w) = got {
        // The loser is not Primary unless rr-conflict violently kept it so.
        let loser = 1 - w;
        if s.w.n[loser].engine.role() == Role::Primary && r.rr != RrConflict::Violently {
            s.w.fail(format!("the discarded node {loser} is still Primary"));
        }
        let solved = s.w.n[w]
            .logs
            .iter()
            .any(|l| l.contains("automatically solved. Sync from this node"));
        if !solved {
            s.w.fail(format!(
                "the winner {w} did not log the automatic resolution"
            ));
        }
    }
}

const WRITES: [[usize; 2]; 4] = [[10, 60], [60, 10], [0, 40], [40, 0]];
const P0: [Pol0; 7] = [
    Pol0::Plain(AfterSb0Pri::Disconnect),
    Pol0::Plain(AfterSb0Pri::DiscardYoungerPrimary),
    Pol0::Plain(AfterSb0Pri::DiscardOlderPrimary),
    Pol0::Plain(AfterSb0Pri::DiscardZeroChanges),
    Pol0::Plain(AfterSb0Pri::DiscardLeastChanges),
    Pol0::DiscardNode(A),
    Pol0::DiscardNode(B),
];
/// The 0pri policies the 1pri and 2pri rows build on.
const P0_UNDER: [Pol0; 3] = [
    Pol0::Plain(AfterSb0Pri::Disconnect),
    Pol0::Plain(AfterSb0Pri::DiscardLeastChanges),
    Pol0::DiscardNode(B),
];

fn rows(primary: [bool; 2]) -> Vec<Row> {
    let base = Row {
        primary,
        writes: [0, 0],
        p0: Pol0::Plain(AfterSb0Pri::Disconnect),
        p1: AfterSb1Pri::Disconnect,
        p2: AfterSb2Pri::Disconnect,
        rr: RrConflict::Disconnect,
    };
    let mut out = Vec::new();
    for writes in WRITES {
        match primary {
            [false, false] => {
                for p0 in P0 {
                    out.push(Row { writes, p0, ..base });
                }
            }
            [true, true] => {
                for p2 in [
                    AfterSb2Pri::Disconnect,
                    AfterSb2Pri::ViolentlyAs0p,
                    AfterSb2Pri::CallPriLostAfterSb,
                ] {
                    for p0 in P0_UNDER {
                        out.push(Row {
                            writes,
                            p0,
                            p2,
                            ..base
                        });
                    }
                }
            }
            _ => {
                for p1 in [
                    AfterSb1Pri::Disconnect,
                    AfterSb1Pri::Consensus,
                    AfterSb1Pri::ViolentlyAs0p,
                    AfterSb1Pri::DiscardSecondary,
                    AfterSb1Pri::CallPriLostAfterSb,
                ] {
                    for p0 in P0_UNDER {
                        out.push(Row {
                            writes,
                            p0,
                            p1,
                            ..base
                        });
                        if p1 == AfterSb1Pri::ViolentlyAs0p {
                            let rr = RrConflict::Violently;
                            out.push(Row {
                                writes,
                                p0,
                                p1,
                                rr,
                                ..base
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

fn run_rows(primary: [bool; 2], seed0: u64) {
    for (k, r) in rows(primary).into_iter().enumerate() {
        run_row(seed0 + k as u64, r);
    }
}

#[test]
fn after_sb_0pri_table() {
    run_rows([false, false], 1000);
}

#[test]
fn after_sb_1pri_table_primary_a() {
    run_rows([true, false], 2000);
}

#[test]
fn after_sb_1pri_table_primary_b() {
    run_rows([false, true], 3000);
}

#[test]
fn after_sb_2pri_table() {
    run_rows([true, true], 4000);
}

/// The recovery the how-to quotes: `secondary` + `connect --discard-my-data` on the victim,
/// `connect` on the survivor. B's changes are rolled back, A's reach B; both resync only the
/// blocks either side changed.
#[test]
fn discard_my_data_recovers_a_refused_split_brain() {
    for (k, victim) in [B, A].into_iter().enumerate() {
        let mut s = split_brain(
            5000 + k as u64,
            [SbPolicy::default(); 2],
            [40, 40],
            [true, true],
        );
        let changed = s.w.n[A].oos_bits() + s.w.n[B].oos_bits();
        assert!(settle(&mut s).is_none(), "the default policy refuses");
        let survivor = 1 - victim;
        // A Primary may not discard its data.
        s.w.admin(
            victim,
            AdminCmd::Connect {
                discard_my_data: true,
                tentative: false,
            },
        );
        s.w.run_for(100);
        assert_eq!(
            s.w.last_admin(victim),
            Some(&Err(AdminError::DiscardMyDataPrimary))
        );
        s.w.standalone[victim] = true;
        let mut s = s.demote(victim);
        let before = s.w.resync_bytes[A] + s.w.resync_bytes[B];
        s.w.reconnect(victim, true);
        s.w.reconnect(survivor, false);
        s.w.run_until(120_000, "in sync after the recovery", |w| w.in_sync());
        let moved = s.w.resync_bytes[A] + s.w.resync_bytes[B] - before;
        if s.frozen(survivor) != Some(&s.w.n[victim].visible) {
            s.w.fail("the victim does not hold the survivor's data");
        }
        if s.frozen(survivor) != Some(&s.w.n[survivor].visible) {
            s.w.fail("the survivor's data changed");
        }
        let solved = "Split-Brain detected, manually solved. Sync from peer node";
        if !s.w.n[victim].logs.iter().any(|l| l.contains(solved)) {
            s.w.fail("the victim did not log the manual resolution");
        }
        // The union of both sides' changes, not a full sync.
        let union_max = changed * udrbd::types::BM_BLOCK_SIZE;
        if moved == 0 || moved > union_max {
            s.w.fail(format!(
                "resync moved {moved} bytes; both sides changed {union_max}"
            ));
        }
        // Used once: a later split brain needs a new decision.
        s = s.split().write_on(victim, 5).write_on(survivor, 5).drain();
        let _ = s;
    }
}

/// Both sides asked to discard their data: refused, DRBD's "incompatible discard-my-data
/// settings".
#[test]
fn discard_my_data_on_both_sides_is_refused() {
    let mut s = split_brain(5100, [SbPolicy::default(); 2], [20, 20], [false, false]);
    assert!(settle(&mut s).is_none());
    s.w.reconnect(A, true);
    s.w.reconnect(B, true);
    s.w.run_until(20_000, "both StandAlone", |w| {
        w.standalone[A] && w.standalone[B]
    });
    for i in [A, B] {
        if !s.w.n[i]
            .logs
            .iter()
            .any(|l| l.contains("incompatible discard-my-data settings"))
        {
            s.w.fail(format!("node {i} did not refuse the double discard"));
        }
        if s.frozen(i) != Some(&s.w.n[i].visible) {
            s.w.fail(format!("node {i}'s data changed"));
        }
    }
}

/// Both connected Secondaries are told to promote at the same moment: the cluster-wide state
/// change lets exactly one become Primary, the other is refused with DRBD's
/// `(-1) Multiple primaries not allowed by config`, and the connection stays up (the world
/// checks at every step that both are never Primary while connected).
fn simultaneous_promotion(seed: u64) {
    let mut s = Scenario::with_world(World::new(6000 + seed, Protocol::C))
        .connect()
        .clear_bitmap();
    // A random moment within a few milliseconds of each other: the prepares cross on the wire
    // or not.
    let first = s.w.rng.below(2) as usize;
    let gap = s.w.rng.below(4);
    let before = s.w.admin_results.len();
    s.w.admin(first, AdminCmd::Primary { force: false });
    s.w.run_for(gap);
    s.w.admin(1 - first, AdminCmd::Primary { force: false });
    s.w.run_until(20_000, "both promotions answered", |w| {
        w.admin_results.len() >= before + 2
    });
    let ok: Vec<usize> = s.w.admin_results[before..]
        .iter()
        .filter(|r| r.2.is_ok())
        .map(|r| r.0)
        .collect();
    if ok.len() != 1 {
        s.w.fail(format!(
            "exactly one promotion must succeed: {:?}",
            &s.w.admin_results[before..]
        ));
    }
    let refused = &s.w.admin_results[before..]
        .iter()
        .find(|r| r.2.is_err())
        .expect("one refusal")
        .2;
    if !matches!(refused, Err(AdminError::State(StateError::TwoPrimaries))) {
        s.w.fail(format!("the loser got {refused:?}, not (-1)"));
    }
    let winner = ok[0];
    if s.w.standalone[A] || s.w.standalone[B] {
        s.w.fail("the connection was dropped");
    }
    s.write_on(winner, 40).drain().expect_in_sync();
}

#[test]
fn simultaneous_promotion_makes_exactly_one_primary_and_keeps_the_connection() {
    super::for_each_seed(100, simultaneous_promotion);
}
