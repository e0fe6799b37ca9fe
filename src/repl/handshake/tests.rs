//! Golden tests: one per rule of the decision table (named after DRBD's rule and, where it has
//! one, DRBD 8.4's rule number), one per after-sb policy, and properties: the two sides of a
//! connection always reach mirrored decisions.

use super::resolve::SbPolicy;
use super::*;
use crate::config::{AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, RrConflict};
use crate::types::Sector;
use proptest::prelude::*;

const X: u64 = 0xA0;
const Y: u64 = 0xB0;
const Z: u64 = 0xC0;
const W: u64 = 0xD0;

/// Node 1 (resolves conflicts against node 0).
fn me(cur: u64) -> UuidSet {
    UuidSet::new(NodeId(1), GenUuid(cur))
}
/// Node 0.
fn peer(cur: u64) -> UuidSet {
    UuidSet::new(NodeId(0), GenUuid(cur))
}
fn hist(v: &[u64]) -> Vec<GenUuid> {
    v.iter().map(|&u| GenUuid(u)).collect()
}
fn bm(mut s: UuidSet, b: u64) -> UuidSet {
    s.bitmap = GenUuid(b);
    s
}
fn with_hist(mut s: UuidSet, h: &[u64]) -> UuidSet {
    s.history = hist(h);
    s
}

#[track_caller]
fn decides(a: &UuidSet, b: &UuidSet, strategy: SyncStrategy, rule: Rule) {
    let d = uuid_compare(a, b);
    assert_eq!((d.strategy, d.rule), (strategy, rule), "{d}");
    // And the other side mirrors it.
    let back = uuid_compare(b, a);
    let want = if strategy.is_split_brain() || strategy == SyncStrategy::UnrelatedData {
        strategy
    } else {
        strategy.reverse()
    };
    assert_eq!(back.strategy, want, "mirror: {back}");
}

use SyncStrategy as S;

// ---- the table ----

#[test]
fn every_rule_has_a_row_and_the_table_is_total() {
    let all = [
        Rule::JustCreatedBoth,
        Rule::JustCreatedSelf,
        Rule::JustCreatedPeer,
        Rule::SyncSourceMissedFinish,
        Rule::SyncSourcePeerMissedFinish,
        Rule::SyncTargetMissedFinish,
        Rule::SyncTargetPeerMissedFinish,
        Rule::Reconnected,
        Rule::CrashedPrimary,
        Rule::LostQuorum,
        Rule::BothOff,
        Rule::BitmapPeer,
        Rule::BitmapSelf,
        Rule::HistoryPeer,
        Rule::HistorySelf,
        Rule::BitmapBoth,
        Rule::HistoryBoth,
    ];
    for r in all {
        assert!(RULES.iter().any(|row| row.rule == r), "{r} has no row");
    }
    let last = RULES.last().expect("rows");
    assert_eq!(last.strategy, S::UnrelatedData);
    assert!((last.when)(&Facts::of(&me(X), &peer(Y))));
}

#[test]
fn names_are_drbds() {
    assert_eq!(S::TargetUseBitmap.to_string(), "target-use-bitmap");
    assert_eq!(
        S::SplitBrainAutoRecover.to_string(),
        "split-brain-auto-recover"
    );
    assert_eq!(S::SourceIfBothFailed.to_string(), "source-if-both-failed");
    assert_eq!(
        Rule::SyncTargetMissedFinish.to_string(),
        "sync-target-missed-finish"
    );
    let d = Decision {
        strategy: S::TargetUseBitmap,
        rule: Rule::BitmapPeer,
        fixup: None,
    };
    assert_eq!(
        d.to_string(),
        "uuid_compare()=target-use-bitmap by rule=bitmap-peer"
    );
}

// ---- one test per rule ----

/// RULE_JUST_CREATED_BOTH (8.4 rule 10); 0 counts as just created.
#[test]
fn just_created_both() {
    decides(&me(4), &peer(4), S::NoSync, Rule::JustCreatedBoth);
    decides(&me(0), &peer(4 | 1), S::NoSync, Rule::JustCreatedBoth);
}

/// RULE_JUST_CREATED_SELF (8.4 rule 20): a fresh node takes a full sync.
#[test]
fn just_created_self() {
    decides(&me(4), &peer(X), S::TargetSetBitmap, Rule::JustCreatedSelf);
}

/// RULE_JUST_CREATED_PEER (8.4 rule 30).
#[test]
fn just_created_peer() {
    decides(
        &me(X | 1),
        &peer(4),
        S::SourceSetBitmap,
        Rule::JustCreatedPeer,
    );
}

/// RULE_SYNC_SOURCE_MISSED_FINISH (8.4 rule 34): I was SyncSource and still hold the bitmap UUID
/// the peer already moved to its history.
#[test]
fn sync_source_missed_finish() {
    let a = with_hist(bm(me(X), Y), &[Y]);
    let b = with_hist(peer(X), &[Y]);
    decides(&a, &b, S::SourceUseBitmap, Rule::SyncSourceMissedFinish);
    assert_eq!(
        uuid_compare(&a, &b).fixup,
        Some(Fixup::PushOwnBitmapToHistory)
    );
}

/// RULE_SYNC_SOURCE_PEER_MISSED_FINISH (8.4 rule 35).
#[test]
fn sync_source_peer_missed_finish() {
    let a = with_hist(bm(me(X), Y), &[Z]);
    let b = with_hist(peer(X), &[W]);
    decides(&a, &b, S::SourceUseBitmap, Rule::SyncSourcePeerMissedFinish);
}

/// RULE_SYNC_TARGET_PEER_MISSED_FINISH (8.4 rule 36): the peer still holds a bitmap UUID that is
/// my newest history UUID.
#[test]
fn sync_target_peer_missed_finish() {
    let a = with_hist(me(X), &[Y, Z]);
    let b = with_hist(bm(peer(X), Y), &[Z]);
    decides(&a, &b, S::TargetUseBitmap, Rule::SyncTargetPeerMissedFinish);
    assert_eq!(uuid_compare(&a, &b).fixup, Some(Fixup::PeerBitmapToHistory));
}

/// RULE_SYNC_TARGET_MISSED_FINISH (8.4 rule 37).
#[test]
fn sync_target_missed_finish() {
    let a = me(X);
    let b = bm(peer(X), Y);
    decides(&a, &b, S::TargetUseBitmap, Rule::SyncTargetMissedFinish);
}

/// RULE_RECONNECTED: both sides were connected when the link broke.
#[test]
fn reconnected_both() {
    let mut a = me(X);
    let mut b = peer(X | 1);
    a.reconnect = true;
    b.reconnect = true;
    decides(&a, &b, S::NoSync, Rule::Reconnected);
    // Even with a crashed-primary flag on one side.
    a.crashed_primary = true;
    decides(&a, &b, S::NoSync, Rule::Reconnected);
}

/// RULE_RECONNECTED, survivor: the peer crashed as Primary while I stayed up.
#[test]
fn reconnected_survivor_is_source() {
    let mut a = me(X);
    let mut b = peer(X);
    a.reconnect = true;
    b.crashed_primary = true;
    decides(&a, &b, S::SourceIfBothFailed, Rule::Reconnected);
    decides(&b, &a, S::TargetIfBothFailed, Rule::Reconnected);
}

/// RULE_RECONNECTED: one side reconnected, nobody crashed: not a common power failure.
#[test]
fn reconnected_one_side() {
    let mut a = me(X);
    a.reconnect = true;
    decides(&a, &peer(X), S::NoSync, Rule::Reconnected);
}

/// RULE_CRASHED_PRIMARY: protocol A/B, the crashed Primary may have completed writes the peer
/// never got, so it is the source.
#[test]
fn crashed_primary_async_protocol() {
    let mut a = me(X);
    a.crashed_primary = true;
    a.protocol = Protocol::A;
    let mut b = peer(X);
    b.protocol = Protocol::A;
    decides(&a, &b, S::SourceUseBitmap, Rule::CrashedPrimary);
    decides(&b, &a, S::TargetUseBitmap, Rule::CrashedPrimary);
    // Protocol C: not this rule; a common power failure (both-off) instead.
    a.protocol = Protocol::C;
    b.protocol = Protocol::C;
    decides(&a, &b, S::SourceIfBothFailed, Rule::BothOff);
}

/// RULE_LOST_QUORUM: the Primary that lost quorum is the target.
#[test]
fn lost_quorum() {
    let mut a = me(X);
    let mut b = peer(X);
    b.primary_lost_quorum = true;
    decides(&a, &b, S::TargetIfBothFailed, Rule::LostQuorum);
    decides(&b, &a, S::SourceIfBothFailed, Rule::LostQuorum);
    // Both: RESOLVE_CONFLICTS (me, node 1) becomes the source.
    a.primary_lost_quorum = true;
    decides(&a, &b, S::SourceIfBothFailed, Rule::LostQuorum);
}

/// RULE_BOTH_OFF (8.4 rule 40): common power failure; the crashed primary is the source.
#[test]
fn both_off() {
    decides(&me(X), &peer(X), S::NoSync, Rule::BothOff);
    let mut a = me(X);
    let mut b = peer(X);
    b.crashed_primary = true;
    decides(&a, &b, S::TargetIfBothFailed, Rule::BothOff);
    // Both crashed: RESOLVE_CONFLICTS (me) becomes the target.
    a.crashed_primary = true;
    decides(&a, &b, S::TargetIfBothFailed, Rule::BothOff);
}

/// RULE_BITMAP_PEER (8.4 rule 50): the peer's bitmap is based on my current generation.
#[test]
fn bitmap_peer() {
    let b = with_hist(bm(peer(Y | 1), X | 1), &[W]);
    decides(&me(X), &b, S::TargetUseBitmap, Rule::BitmapPeer);
}

/// RULE_BITMAP_SELF (8.4 rule 70).
#[test]
fn bitmap_self() {
    let a = bm(me(X | 1), Y);
    decides(&a, &peer(Y), S::SourceUseBitmap, Rule::BitmapSelf);
}

/// RULE_HISTORY_PEER (8.4 rule 60): my generation is an ancestor of the peer's, but no bitmap
/// covers the way: full sync.
#[test]
fn history_peer() {
    let b = with_hist(peer(Y), &[Z, X]);
    decides(&me(X), &b, S::TargetSetBitmap, Rule::HistoryPeer);
}

/// RULE_HISTORY_SELF (8.4 rule 80).
#[test]
fn history_self() {
    let a = with_hist(me(X), &[Y | 1]);
    decides(&a, &peer(Y), S::SourceSetBitmap, Rule::HistorySelf);
}

/// RULE_BITMAP_BOTH (8.4 rule 90): both moved on from the same generation: split brain that
/// the after-sb policies may resolve.
#[test]
fn bitmap_both() {
    let a = bm(me(X), Z | 1);
    let b = bm(peer(Y), Z);
    decides(&a, &b, S::SplitBrainAutoRecover, Rule::BitmapBoth);
    assert_eq!(
        uuid_compare(&a, &b).to_string(),
        "uuid_compare()=split-brain-auto-recover by rule=bitmap-both"
    );
}

/// RULE_HISTORY_BOTH (8.4 rule 100): only an older common ancestor: split brain, disconnect.
#[test]
fn history_both() {
    let a = with_hist(me(X), &[Z, W]);
    let b = with_hist(peer(Y), &[W]);
    decides(&a, &b, S::SplitBrainDisconnect, Rule::HistoryBoth);
}

/// No common generation at all (8.4 -1000): DRBD reports it by rule history-both.
#[test]
fn unrelated_data() {
    let a = with_hist(me(X), &[Z]);
    let b = with_hist(peer(Y), &[W, 0]);
    decides(&a, &b, S::UnrelatedData, Rule::HistoryBoth);
    assert_eq!(
        uuid_compare(&a, &b).to_string(),
        "uuid_compare()=unrelated-data by rule=history-both"
    );
    // Unused (zero) history slots are not a common ancestor.
    let a = with_hist(me(X), &[0, 0]);
    let b = with_hist(peer(Y), &[0]);
    decides(&a, &b, S::UnrelatedData, Rule::HistoryBoth);
}

/// Both currents in each other's history points nowhere; the bitmaps decide, as in DRBD.
#[test]
fn history_in_both_directions_is_no_direction() {
    let a = with_hist(bm(me(X), Z), &[Y]);
    let b = with_hist(bm(peer(Y), Z), &[X]);
    decides(&a, &b, S::SplitBrainAutoRecover, Rule::BitmapBoth);
}

// ---- resolution ----

fn ctx<'a>(a: &'a UuidSet, b: &'a UuidSet, policy: SbPolicy) -> SbContext<'a> {
    SbContext {
        me: a,
        peer: b,
        policy,
    }
}

fn p0(p: AfterSb0Pri) -> SbPolicy {
    SbPolicy {
        after_sb_0pri: p,
        ..SbPolicy::default()
    }
}

fn resolve(a: &UuidSet, b: &UuidSet, policy: SbPolicy) -> SbOutcome {
    resolve_split_brain(uuid_compare(a, b), &ctx(a, b, policy))
}

fn texts(o: &SbOutcome) -> Vec<&str> {
    o.log.iter().map(|l| l.text.as_str()).collect()
}

/// A bitmap-both split brain; `a` (node 1, resolves conflicts) and `b` (node 0).
fn sb_pair(a_dirty: u64, b_dirty: u64) -> (UuidSet, UuidSet) {
    let mut a = bm(me(X), Z);
    let mut b = bm(peer(Y), Z);
    a.dirty_bits = a_dirty;
    b.dirty_bits = b_dirty;
    (a, b)
}

#[track_caller]
fn auto_solved(o: &SbOutcome, primaries: u32, strategy: SyncStrategy) {
    assert_eq!(o.strategy, strategy, "{:?}", o.log);
    assert!(!o.disconnects());
    let from = if strategy.is_sync_target() {
        "peer"
    } else {
        "this"
    };
    let line = format!(
        "Split-Brain detected, {primaries} primaries, automatically solved. Sync from {from} node"
    );
    assert!(texts(o).contains(&line.as_str()), "{:?}", o.log);
    assert_eq!(o.handlers, vec![Handler::InitialSplitBrain]);
}

#[track_caller]
fn unresolved(o: &SbOutcome) {
    assert_eq!(o.strategy, S::SplitBrainDisconnect);
    assert!(o.disconnects());
    assert_eq!(
        texts(o).last(),
        Some(&"Split-Brain detected but unresolved, dropping connection!")
    );
    assert_eq!(
        o.handlers,
        vec![Handler::InitialSplitBrain, Handler::SplitBrain]
    );
}

#[test]
fn asb_0pri_disconnect() {
    let (a, b) = sb_pair(1, 2);
    unresolved(&resolve(&a, &b, p0(AfterSb0Pri::Disconnect)));
}

#[test]
fn asb_0pri_discard_younger_primary() {
    // My bitmap UUID carries the role bit: I was Primary when we split, the peer is younger.
    let (mut a, b) = sb_pair(1, 2);
    a.bitmap = GenUuid(Z | 1);
    auto_solved(
        &resolve(&a, &b, p0(AfterSb0Pri::DiscardYoungerPrimary)),
        0,
        S::SourceUseBitmap,
    );
    auto_solved(
        &resolve(&b, &a, p0(AfterSb0Pri::DiscardYoungerPrimary)),
        0,
        S::TargetUseBitmap,
    );
}

#[test]
fn asb_0pri_discard_older_primary() {
    let (mut a, b) = sb_pair(1, 2);
    a.bitmap = GenUuid(Z | 1);
    auto_solved(
        &resolve(&a, &b, p0(AfterSb0Pri::DiscardOlderPrimary)),
        0,
        S::TargetUseBitmap,
    );
}

#[test]
fn asb_0pri_younger_older_undecided_falls_back_to_changes() {
    let (a, b) = sb_pair(5, 2);
    let o = resolve(&a, &b, p0(AfterSb0Pri::DiscardYoungerPrimary));
    auto_solved(&o, 0, S::SourceUseBitmap);
    assert_eq!(o.log[0].text, msg::YOUNGER_OLDER_UNDECIDED);
}

#[test]
fn asb_0pri_discard_zero_changes() {
    let (a, b) = sb_pair(0, 7);
    auto_solved(
        &resolve(&a, &b, p0(AfterSb0Pri::DiscardZeroChanges)),
        0,
        S::TargetUseBitmap,
    );
    auto_solved(
        &resolve(&b, &a, p0(AfterSb0Pri::DiscardZeroChanges)),
        0,
        S::SourceUseBitmap,
    );
    // Both changed: no decision.
    let (a, b) = sb_pair(3, 7);
    unresolved(&resolve(&a, &b, p0(AfterSb0Pri::DiscardZeroChanges)));
    // Neither changed: RESOLVE_CONFLICTS (a) becomes target.
    let (a, b) = sb_pair(0, 0);
    auto_solved(
        &resolve(&a, &b, p0(AfterSb0Pri::DiscardZeroChanges)),
        0,
        S::TargetUseBitmap,
    );
    auto_solved(
        &resolve(&b, &a, p0(AfterSb0Pri::DiscardZeroChanges)),
        0,
        S::SourceUseBitmap,
    );
}

#[test]
fn asb_0pri_discard_least_changes() {
    let (a, b) = sb_pair(3, 7);
    auto_solved(
        &resolve(&a, &b, p0(AfterSb0Pri::DiscardLeastChanges)),
        0,
        S::TargetUseBitmap,
    );
    auto_solved(
        &resolve(&b, &a, p0(AfterSb0Pri::DiscardLeastChanges)),
        0,
        S::SourceUseBitmap,
    );
    let (a, b) = sb_pair(4, 4);
    auto_solved(
        &resolve(&a, &b, p0(AfterSb0Pri::DiscardLeastChanges)),
        0,
        S::TargetUseBitmap,
    );
}

#[test]
fn asb_0pri_discard_local_and_remote() {
    let (a, b) = sb_pair(3, 7);
    auto_solved(
        &resolve(&a, &b, p0(AfterSb0Pri::DiscardLocal)),
        0,
        S::TargetUseBitmap,
    );
    // The peer's config names the same node, so it sees discard-remote.
    auto_solved(
        &resolve(&b, &a, p0(AfterSb0Pri::DiscardRemote)),
        0,
        S::SourceUseBitmap,
    );
}

fn p1(p: AfterSb1Pri, zero: AfterSb0Pri) -> SbPolicy {
    SbPolicy {
        after_sb_0pri: zero,
        after_sb_1pri: p,
        ..SbPolicy::default()
    }
}

/// A split brain with one primary: `a` is Primary with `a_dirty` changes.
fn sb_1pri(a_dirty: u64, b_dirty: u64) -> (UuidSet, UuidSet) {
    let (mut a, b) = sb_pair(a_dirty, b_dirty);
    a.role = Role::Primary;
    (a, b)
}

#[test]
fn asb_1pri_disconnect() {
    let (a, b) = sb_1pri(1, 2);
    unresolved(&resolve(
        &a,
        &b,
        p1(AfterSb1Pri::Disconnect, AfterSb0Pri::DiscardLocal),
    ));
}

#[test]
fn asb_1pri_consensus() {
    // 0pri discards the secondary (b has fewer changes): accepted on both sides.
    let (a, b) = sb_1pri(9, 2);
    let pol = p1(AfterSb1Pri::Consensus, AfterSb0Pri::DiscardLeastChanges);
    auto_solved(&resolve(&a, &b, pol), 1, S::SourceUseBitmap);
    auto_solved(&resolve(&b, &a, pol), 1, S::TargetUseBitmap);
    // 0pri would discard the primary: no consensus.
    let (a, b) = sb_1pri(2, 9);
    unresolved(&resolve(&a, &b, pol));
    unresolved(&resolve(&b, &a, pol));
}

#[test]
fn asb_1pri_discard_secondary() {
    let (a, b) = sb_1pri(9, 2);
    let pol = p1(AfterSb1Pri::DiscardSecondary, AfterSb0Pri::Disconnect);
    auto_solved(&resolve(&a, &b, pol), 1, S::SourceUseBitmap);
    auto_solved(&resolve(&b, &a, pol), 1, S::TargetUseBitmap);
}

#[test]
fn asb_1pri_violently_as0p() {
    // 0pri discards the primary (a); rr-conflict violently lets it become target.
    let (a, b) = sb_1pri(2, 9);
    let pol = SbPolicy {
        rr_conflict: RrConflict::Violently,
        ..p1(AfterSb1Pri::ViolentlyAs0p, AfterSb0Pri::DiscardLeastChanges)
    };
    let o = resolve(&a, &b, pol);
    auto_solved(&o, 1, S::TargetUseBitmap);
    assert!(o.rr_conflict);
    assert!(texts(&o).contains(&msg::RR_VIOLENTLY));
    // With the default rr-conflict the Primary refuses to become target.
    let o = resolve(
        &a,
        &b,
        p1(AfterSb1Pri::ViolentlyAs0p, AfterSb0Pri::DiscardLeastChanges),
    );
    assert_eq!(o.strategy, S::SyncTargetPrimaryDisconnect);
    assert!(o.disconnects());
}

#[test]
fn asb_1pri_call_pri_lost_after_sb() {
    let (a, b) = sb_1pri(2, 9);
    let pol = p1(
        AfterSb1Pri::CallPriLostAfterSb,
        AfterSb0Pri::DiscardLeastChanges,
    );
    let o = resolve(&a, &b, pol);
    // The Primary loses: demote it (or run pri-lost-after-sb and drop), no rr-conflict.
    auto_solved(&o, 1, S::TargetUseBitmap);
    assert!(o.demote_first);
    assert!(!o.rr_conflict);
    // The secondary's side just syncs.
    let o = resolve(&b, &a, pol);
    auto_solved(&o, 1, S::SourceUseBitmap);
    assert!(!o.demote_first);
}

fn p2(p: AfterSb2Pri, zero: AfterSb0Pri) -> SbPolicy {
    SbPolicy {
        after_sb_0pri: zero,
        after_sb_2pri: p,
        rr_conflict: RrConflict::Violently,
        ..SbPolicy::default()
    }
}

fn sb_2pri(a_dirty: u64, b_dirty: u64) -> (UuidSet, UuidSet) {
    let (mut a, mut b) = sb_pair(a_dirty, b_dirty);
    a.role = Role::Primary;
    b.role = Role::Primary;
    (a, b)
}

#[test]
fn asb_2pri_disconnect() {
    let (a, b) = sb_2pri(1, 2);
    unresolved(&resolve(
        &a,
        &b,
        p2(AfterSb2Pri::Disconnect, AfterSb0Pri::DiscardLocal),
    ));
}

#[test]
fn asb_2pri_violently_as0p() {
    let (a, b) = sb_2pri(1, 2);
    let pol = p2(AfterSb2Pri::ViolentlyAs0p, AfterSb0Pri::DiscardLeastChanges);
    auto_solved(&resolve(&a, &b, pol), 2, S::TargetUseBitmap);
    auto_solved(&resolve(&b, &a, pol), 2, S::SourceUseBitmap);
}

#[test]
fn asb_2pri_call_pri_lost_after_sb() {
    let (a, b) = sb_2pri(1, 2);
    let pol = p2(
        AfterSb2Pri::CallPriLostAfterSb,
        AfterSb0Pri::DiscardLeastChanges,
    );
    let o = resolve(&a, &b, pol);
    auto_solved(&o, 2, S::TargetUseBitmap);
    assert!(o.demote_first);
    let o = resolve(&b, &a, pol);
    auto_solved(&o, 2, S::SourceUseBitmap);
    assert!(!o.demote_first);
}

#[test]
fn always_asbp_resolves_history_both_with_a_full_sync() {
    let a = with_hist(me(X), &[Z, W]);
    let b = with_hist(peer(Y), &[W]);
    let pol = SbPolicy {
        always_asbp: true,
        ..p0(AfterSb0Pri::DiscardLocal)
    };
    let o = resolve(&a, &b, pol);
    assert_eq!(o.strategy, S::TargetSetBitmap);
    assert_eq!(
        texts(&o),
        vec![
            "Split-Brain detected, 0 primaries, automatically solved. Sync from peer node",
            msg::FULL_SYNC_AMBIGUOUS
        ]
    );
    // Without always-asbp the same UUIDs stay unresolved.
    unresolved(&resolve(&a, &b, p0(AfterSb0Pri::DiscardLocal)));
}

#[test]
fn discard_my_data_solves_split_brain_manually() {
    let (mut a, b) = sb_pair(3, 7);
    a.discard_my_data = true;
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::TargetUseBitmap);
    assert_eq!(
        texts(&o),
        vec!["Split-Brain detected, manually solved. Sync from peer node"]
    );
    let o = resolve(&b, &a, SbPolicy::default());
    assert_eq!(o.strategy, S::SourceUseBitmap);
    assert_eq!(
        texts(&o),
        vec!["Split-Brain detected, manually solved. Sync from this node"]
    );
    // Only history in common: the bitmaps are useless, full sync.
    let mut a = with_hist(me(X), &[Z, W]);
    let b = with_hist(peer(Y), &[W]);
    a.discard_my_data = true;
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::TargetSetBitmap);
    assert_eq!(
        texts(&o),
        vec!["Split-Brain detected, manually solved. Full sync from peer node"]
    );
}

#[test]
fn discard_my_data_on_both_sides_is_refused() {
    let (mut a, mut b) = sb_pair(3, 7);
    a.discard_my_data = true;
    b.discard_my_data = true;
    let o = resolve(&a, &b, p0(AfterSb0Pri::DiscardLocal));
    assert!(o.refused && o.disconnects());
    assert_eq!(texts(&o), vec![msg::INCOMPATIBLE_DISCARD]);
}

#[test]
fn discard_my_data_reverses_a_resync() {
    // I would be the source (bitmap-self), but I asked to discard my data.
    let mut a = bm(me(X), Y);
    a.discard_my_data = true;
    let b = peer(Y);
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::TargetUseBitmap);
    assert_eq!(texts(&o), vec![msg::DISCARD_REVERSED]);
    // Not if the would-be source has no usable data.
    let mut b = peer(Y);
    b.disk = DiskState::Inconsistent;
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::SourceUseBitmap);
    assert_eq!(texts(&o), vec![msg::DISCARD_IGNORED]);
}

#[test]
fn unrelated_data_aborts() {
    let o = resolve(&me(X), &peer(Y), SbPolicy::default());
    assert_eq!(o.strategy, S::UnrelatedData);
    assert!(o.disconnects());
    assert_eq!(texts(&o), vec!["Unrelated data, aborting!"]);
}

#[test]
fn disk_states_decide_between_equal_generations() {
    let a = me(X);
    let mut b = peer(X);
    b.disk = DiskState::Inconsistent;
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::SourceUseBitmap);
    assert_eq!(
        texts(&o),
        vec!["strategy = source-use-bitmap due to disk states. (UpToDate/Inconsistent)"]
    );
    assert_eq!(
        resolve(&b, &a, SbPolicy::default()).strategy,
        S::TargetUseBitmap
    );
    // *-if-both-failed with differing (usable) disk states: the better disk wins.
    let mut a = me(X);
    a.crashed_primary = true;
    a.disk = DiskState::Consistent;
    let b = peer(X);
    assert_eq!(uuid_compare(&a, &b).strategy, S::SourceIfBothFailed);
    assert_eq!(
        resolve(&a, &b, SbPolicy::default()).strategy,
        S::TargetUseBitmap
    );
}

/// A Primary with data that the UUIDs make SyncTarget (bitmap-peer).
fn rr_pair() -> (UuidSet, UuidSet) {
    let mut a = me(X);
    a.role = Role::Primary;
    a.dirty_bits = 1;
    let b = bm(peer(Y), X);
    (a, b)
}

#[test]
fn rr_conflict_policies() {
    let (a, b) = rr_pair();
    let rr = |p| SbPolicy {
        rr_conflict: p,
        ..SbPolicy::default()
    };
    let o = resolve(&a, &b, rr(RrConflict::Disconnect));
    assert!(o.rr_conflict && o.disconnects());
    assert_eq!(o.strategy, S::SyncTargetPrimaryDisconnect);
    assert_eq!(
        texts(&o),
        vec!["I shall become SyncTarget, but I am primary!"]
    );

    let o = resolve(&a, &b, rr(RrConflict::RetryConnect));
    assert_eq!(o.strategy, S::SyncTargetPrimaryReconnect);

    let o = resolve(&a, &b, rr(RrConflict::CallPriLost));
    assert_eq!(o.strategy, S::SyncTargetPrimaryDisconnect);
    assert_eq!(o.handlers, vec![Handler::PriLost]);

    let o = resolve(&a, &b, rr(RrConflict::Violently));
    assert_eq!(o.strategy, S::TargetUseBitmap);
    assert!(o.rr_conflict && !o.disconnects());

    // auto-discard only reverses a crashed-primary decision; here it lets the target proceed.
    let o = resolve(&a, &b, rr(RrConflict::AutoDiscard));
    assert_eq!(o.strategy, S::TargetUseBitmap);

    // Nothing to sync: no conflict.
    let (mut a, b) = rr_pair();
    a.dirty_bits = 0;
    let o = resolve(&a, &b, rr(RrConflict::Disconnect));
    assert!(!o.rr_conflict);
    assert_eq!(o.strategy, S::TargetUseBitmap);
}

#[test]
fn rr_conflict_auto_discard_reverses_crashed_primary() {
    // Protocol A: the peer crashed as Primary and would be source; I am Primary now.
    let mut a = me(X);
    a.role = Role::Primary;
    a.protocol = Protocol::A;
    a.dirty_bits = 3;
    let mut b = peer(X);
    b.crashed_primary = true;
    b.protocol = Protocol::A;
    let pol = SbPolicy {
        rr_conflict: RrConflict::AutoDiscard,
        ..SbPolicy::default()
    };
    let o = resolve(&a, &b, pol);
    assert_eq!(o.rule, Rule::CrashedPrimary);
    assert_eq!(o.strategy, S::SourceUseBitmap);
    assert_eq!(texts(&o), vec![msg::RR_AUTO_DISCARD]);
    // The peer reverses the same way.
    let o = resolve(&b, &a, pol);
    assert_eq!(o.strategy, S::TargetUseBitmap);
    assert_eq!(texts(&o), vec![msg::RR_AUTO_DISCARD]);
}

#[test]
fn missed_finish_needs_an_up_to_date_source() {
    let mut a = with_hist(bm(me(X), Y), &[Z]);
    a.disk = DiskState::Outdated;
    let b = with_hist(peer(X), &[W]);
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::NoSync);
    assert_eq!(
        texts(&o),
        vec!["Resync (rule=sync-source-peer-missed-finish) skipped: sync-source (Outdated)"]
    );
    let o = resolve(&b, &a, SbPolicy::default());
    assert_eq!(o.strategy, S::NoSync);
    assert_eq!(
        texts(&o),
        vec!["Resync (rule=sync-target-missed-finish) skipped: peer sync-source (Outdated)"]
    );
    // A source that marked blocks since (it wrote as Primary after the link went, or crashed as
    // Primary and marked its activity log) is synced from, Consistent or not.
    a.disk = DiskState::Consistent;
    a.dirty_bits = 3051;
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::SourceUseBitmap, "{:?}", o.log);
    assert_eq!(
        resolve(&b, &a, SbPolicy::default()).strategy,
        S::TargetUseBitmap
    );
    // Marks only on the side not synced from: resynced from the UpToDate side.
    a.dirty_bits = 0;
    let mut b = b;
    b.dirty_bits = 7;
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::TargetUseBitmap, "{:?}", o.log);
    assert!(
        texts(&o)
            .iter()
            .any(|t| t.starts_with("No resync, but 7 bits in bitmap!")),
        "{:?}",
        o.log
    );
}

// ---- sizes ----

fn sizes(my_max: u64, peer_max: u64, la: u64, disk: DiskState) -> SizeInput {
    SizeInput {
        my_max: Sector(my_max),
        peer_max: Sector(peer_max),
        user_size: Sector(0),
        last_agreed: Sector(la),
        my_disk: disk,
        online: false,
    }
}

#[test]
fn a_resize_may_shrink_a_device_with_data_a_connect_may_not() {
    let mut s = sizes(1000, 1000, 1000, DiskState::UpToDate);
    s.user_size = Sector(600);
    assert!(
        check_sizes(&s).is_err(),
        "a connect must not cut the device"
    );
    s.online = true;
    assert_eq!(check_sizes(&s), Ok(Sector(600)));
}

#[test]
fn sizes_agree_on_the_minimum() {
    assert_eq!(
        check_sizes(&sizes(1000, 1000, 1000, DiskState::UpToDate)),
        Ok(Sector(1000))
    );
    assert_eq!(
        check_sizes(&sizes(1000, 2000, 1000, DiskState::UpToDate)),
        Ok(Sector(1000))
    );
    // A bigger pair grows past the last agreed size.
    assert_eq!(
        check_sizes(&sizes(3000, 2000, 1000, DiskState::UpToDate)),
        Ok(Sector(2000))
    );
    let mut s = sizes(3000, 2000, 1000, DiskState::UpToDate);
    s.user_size = Sector(1500);
    assert_eq!(check_sizes(&s), Ok(Sector(1500)));
}

#[test]
fn a_peer_below_the_agreed_size_is_refused_when_we_hold_data() {
    let e = check_sizes(&sizes(1000, 900, 1000, DiskState::UpToDate)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "The peer's disk size is too small! (900 < 1000 sectors)"
    );
    assert!(check_sizes(&sizes(1000, 900, 1000, DiskState::Outdated)).is_err());
    // No data to protect: shrink.
    assert_eq!(
        check_sizes(&sizes(1000, 900, 1000, DiskState::Inconsistent)),
        Ok(Sector(900))
    );
}

#[test]
fn a_side_without_disk_does_not_limit() {
    assert_eq!(
        check_sizes(&sizes(1000, 0, 1000, DiskState::UpToDate)),
        Ok(Sector(1000))
    );
    assert_eq!(
        check_sizes(&sizes(0, 800, 1000, DiskState::Diskless)),
        Ok(Sector(800))
    );
    assert_eq!(
        check_sizes(&sizes(0, 0, 1000, DiskState::Diskless)),
        Ok(Sector(1000))
    );
}

// ---- properties ----

/// UUIDs from a small pool (with a random role bit) so that collisions, the interesting cases,
/// happen all the time.
fn uuid() -> impl Strategy<Value = GenUuid> {
    (
        prop::sample::select(vec![0u64, 4, 0x10, 0x20, 0x30, 0x40, 0x50]),
        any::<bool>(),
    )
        .prop_map(|(u, p)| GenUuid(u | u64::from(p)))
}

fn disk() -> impl Strategy<Value = DiskState> {
    prop::sample::select(vec![
        DiskState::Inconsistent,
        DiskState::Outdated,
        DiskState::Consistent,
        DiskState::UpToDate,
    ])
}

fn side(node: u8) -> impl Strategy<Value = UuidSet> {
    (
        (uuid(), uuid(), prop::collection::vec(uuid(), 0..4)),
        prop::array::uniform4(any::<bool>()),
        (any::<bool>(), disk(), 0u64..3, prop::bool::weighted(0.2)),
    )
        .prop_map(
            move |(
                (current, bitmap, history),
                [crashed, reconnect, lq, proto_a],
                (pri, disk, dirty, discard),
            )| {
                UuidSet {
                    node_id: NodeId(node),
                    current,
                    bitmap,
                    history,
                    crashed_primary: crashed,
                    reconnect,
                    primary_lost_quorum: lq,
                    role: if pri { Role::Primary } else { Role::Secondary },
                    disk,
                    discard_my_data: discard,
                    dirty_bits: dirty,
                    protocol: if proto_a { Protocol::A } else { Protocol::C },
                }
            },
        )
}

/// Each side's bitmap is based on the other's current generation: DRBD decides this
/// asymmetrically (bitmap-peer is tested first on both sides, so both become target). Cannot
/// arise from real histories; excluded from the symmetry properties.
fn ambiguous(a: &UuidSet, b: &UuidSet) -> bool {
    let f = Facts::of(a, b);
    !f.me_just_created
        && !f.peer_just_created
        && !f.equal
        && f.peer_bitmap == f.me_current
        && f.me_bitmap == f.peer_current
}

fn policy() -> impl Strategy<Value = SbPolicy> {
    (
        prop::sample::select(vec![
            AfterSb0Pri::Disconnect,
            AfterSb0Pri::DiscardYoungerPrimary,
            AfterSb0Pri::DiscardOlderPrimary,
            AfterSb0Pri::DiscardZeroChanges,
            AfterSb0Pri::DiscardLeastChanges,
            AfterSb0Pri::DiscardLocal,
        ]),
        prop::sample::select(vec![
            AfterSb1Pri::Disconnect,
            AfterSb1Pri::Consensus,
            AfterSb1Pri::ViolentlyAs0p,
            AfterSb1Pri::DiscardSecondary,
            AfterSb1Pri::CallPriLostAfterSb,
        ]),
        prop::sample::select(vec![
            AfterSb2Pri::Disconnect,
            AfterSb2Pri::ViolentlyAs0p,
            AfterSb2Pri::CallPriLostAfterSb,
        ]),
        any::<bool>(),
        prop::sample::select(vec![
            RrConflict::Disconnect,
            RrConflict::RetryConnect,
            RrConflict::Violently,
            RrConflict::CallPriLost,
            RrConflict::AutoDiscard,
        ]),
    )
        .prop_map(|(z, o, t, always_asbp, rr)| SbPolicy {
            after_sb_0pri: z,
            after_sb_1pri: o,
            after_sb_2pri: t,
            always_asbp,
            rr_conflict: rr,
        })
}

/// What the peer's config says when ours says `p` (`convert_after_sb()`).
fn peer_policy(p: SbPolicy) -> SbPolicy {
    SbPolicy {
        after_sb_0pri: match p.after_sb_0pri {
            AfterSb0Pri::DiscardLocal => AfterSb0Pri::DiscardRemote,
            AfterSb0Pri::DiscardRemote => AfterSb0Pri::DiscardLocal,
            other => other,
        },
        ..p
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Swapping the sides mirrors source and target; split brain and unrelated data are seen
    /// by both.
    #[test]
    fn uuid_compare_is_symmetric(a in side(1), b in side(0)) {
        prop_assume!(!ambiguous(&a, &b));
        let ab = uuid_compare(&a, &b);
        let ba = uuid_compare(&b, &a);
        if ab.strategy.is_split_brain() || ab.strategy == S::UnrelatedData {
            prop_assert_eq!(ba.strategy, ab.strategy, "{} / {}", ab, ba);
        } else {
            prop_assert_eq!(ba.strategy, ab.strategy.reverse(), "{} / {}", ab, ba);
        }
    }

    /// After resolution the two sides never both become source or both target: if both keep
    /// the connection, one is SyncSource and the other SyncTarget (or neither syncs).
    #[test]
    fn resolution_is_consistent(a in side(1), b in side(0), pol in policy()) {
        prop_assume!(!ambiguous(&a, &b));
        let oa = resolve_split_brain(uuid_compare(&a, &b), &ctx(&a, &b, pol));
        let pb = peer_policy(pol);
        let ob = resolve_split_brain(uuid_compare(&b, &a), &ctx(&b, &a, pb));
        prop_assert_eq!(oa.refused, ob.refused);
        if !oa.disconnects() && !ob.disconnects() {
            prop_assert_eq!(
                ob.strategy, oa.strategy.reverse(),
                "{:?} / {:?}", oa, ob
            );
            prop_assert_eq!(oa.strategy.is_sync_source(), ob.strategy.is_sync_target());
        }
        // Split brain is detected on both sides alike.
        prop_assert_eq!(
            oa.handlers.contains(&Handler::InitialSplitBrain),
            ob.handlers.contains(&Handler::InitialSplitBrain)
        );
    }
}

/// Equal generations with blocks marked on one side: DRBD logs `No resync, but N bits in
/// bitmap!` and leaves them; udrbd resyncs them from the side that marked them, and the other
/// side agrees. With marks on both sides the Primary is the source.
#[test]
fn equal_generations_with_marked_blocks_resync_them() {
    let mut a = me(X);
    let b = peer(X);
    a.dirty_bits = 5;
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::SourceUseBitmap, "{:?}", o.log);
    assert!(
        texts(&o)
            .iter()
            .any(|t| t.starts_with("No resync, but 5 bits in bitmap!")),
        "{:?}",
        o.log
    );
    let back = resolve(&b, &a, SbPolicy::default());
    assert_eq!(back.strategy, S::TargetUseBitmap, "{:?}", back.log);

    let mut b = b;
    b.dirty_bits = 2;
    b.role = Role::Primary;
    assert_eq!(
        resolve(&a, &b, SbPolicy::default()).strategy,
        S::TargetUseBitmap
    );
    assert_eq!(
        resolve(&b, &a, SbPolicy::default()).strategy,
        S::SourceUseBitmap
    );

    // Nothing marked anywhere: no resync.
    a.dirty_bits = 0;
    b.dirty_bits = 0;
    assert_eq!(resolve(&a, &b, SbPolicy::default()).strategy, S::NoSync);
}

/// Three nodes reach equal UUIDs with a leftover bitmap UUID on a Secondary that marked blocks
/// for an UpToDate Primary (8.4 rule 37 from the Primary's side). The missed-end rule would
/// make the Primary the target ("I shall become SyncTarget, but I am primary!", StandAlone);
/// instead the marked blocks are resynced from the Primary, on both sides.
#[test]
fn a_missed_resync_end_never_makes_an_up_to_date_primary_the_target() {
    let mut a = me(X);
    a.role = Role::Primary;
    a.disk = DiskState::UpToDate;
    let mut b = bm(peer(X), Y);
    b.disk = DiskState::UpToDate;
    b.dirty_bits = 3;
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::SourceUseBitmap, "{:?}", texts(&o));
    assert!(!o.rr_conflict, "{:?}", texts(&o));
    let o = resolve(&b, &a, SbPolicy::default());
    assert_eq!(o.strategy, S::TargetUseBitmap, "{:?}", texts(&o));
}

/// A missed resync end never picks an Inconsistent source, marks or not: the better disk
/// serves the marked blocks (against a Consistent or UpToDate disk the Inconsistent side
/// drops the link instead, before this rule: "I shall become SyncSource, but I am
/// inconsistent!").
#[test]
fn a_missed_resync_end_never_picks_an_inconsistent_source() {
    let mut a = me(X);
    a.disk = DiskState::Outdated;
    let mut b = bm(peer(X), Y);
    b.disk = DiskState::Inconsistent;
    b.dirty_bits = 3;
    let o = resolve(&a, &b, SbPolicy::default());
    assert_eq!(o.strategy, S::SourceUseBitmap, "{:?}", texts(&o));
}
