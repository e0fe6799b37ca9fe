//! The sync decision at connect time, PURE: which side resyncs from which, or why the connection
//! must be dropped. Modelled on DRBD 9's `drbd_uuid_compare()` and `drbd_sync_handshake()`
//! (`drbd/drbd_receiver.c`).
//!
//! Three steps, each a plain function of its inputs:
//!
//! 1. [`uuid_compare`] compares the two sides' generation UUIDs ([`UuidSet`]) and returns a
//!    [`Decision`]: a [`SyncStrategy`] and the [`Rule`] that produced it. The rules are data: the
//!    ordered table [`RULES`] of (rule, predicate, strategy) rows; the first matching row wins,
//!    exactly like the chain of `if`s in DRBD. `Decision`'s `Display` is DRBD's log line
//!    `uuid_compare()=<strategy> by rule=<rule>`.
//! 2. [`resolve_split_brain`] does what `drbd_sync_handshake()` does with that decision: disk
//!    states, the after-split-brain policies, `--discard-my-data`, rr-conflict, the
//!    missed-resync-finish checks. It returns an [`SbOutcome`] with the final strategy, DRBD's
//!    log lines and the handlers the caller must run.
//! 3. [`check_sizes`] is `receive_sizes()`'s refusal to shrink a device that holds data.
//!
//! Nothing here mutates metadata: where DRBD "corrects" UUIDs in passing, the outcome says so and
//! the caller applies it.
//!
//! Conventions:
//! - All UUID comparisons ignore the role bit ([`GenUuid::masked`]); a current UUID of 0 counts
//!   as just created, as in DRBD (pre-8.0.2 sync targets zeroed it).
//! - `me.bitmap` is this node's bitmap UUID for the peer; `peer.bitmap` is the peer's bitmap UUID
//!   for this node (DRBD's `peer_device->bitmap_uuids[my_node_id]`).
//! - Tie-breaks use DRBD's `RESOLVE_CONFLICTS` bit, which udrbd derives from the node ids: the
//!   side with the higher node id resolves conflicts ([`resolves_conflicts`]). Both sides compute
//!   the same answer, so the two decisions mirror each other.

mod resolve;
mod sizes;

#[cfg(test)]
mod tests;

pub use resolve::{
    Handler, Level, LogLine, SbContext, SbOutcome, SbPolicy, msg, resolve_split_brain,
};
pub use sizes::{SizeInput, SizeRefusal, agreed_user_size, check_sizes};

use super::state::{DiskState, Role};
use crate::config::Protocol;
use crate::types::{GenUuid, NodeId};
use std::fmt;

/// One side's view for the handshake: what DRBD sends in `P_UUIDS110` plus the bits of
/// `P_STATE` and `P_PROTOCOL` the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UuidSet {
    /// This side's node id (decides [`resolves_conflicts`]).
    pub node_id: NodeId,
    /// The current generation (role bit = was Primary when it was created).
    pub current: GenUuid,
    /// The bitmap UUID this side keeps for the other side (0 = its bitmap for the other side is
    /// clean). The role bit is kept: `discard-younger-primary`/`discard-older-primary` read it.
    pub bitmap: GenUuid,
    /// History UUIDs, newest first. Zero entries are unused slots.
    pub history: Vec<GenUuid>,
    /// `MDF_CRASHED_PRIMARY` / `UUID_FLAG_CRASHED_PRIMARY`: this side went down while Primary.
    pub crashed_primary: bool,
    /// `UUID_FLAG_RECONNECT`: this side was connected to the other one when the link broke (it
    /// did not restart since), so this is a reconnect, not a common power failure.
    pub reconnect: bool,
    /// `MDF_PRIMARY_LOST_QUORUM` / `UUID_FLAG_PRIMARY_LOST_QUORUM`.
    pub primary_lost_quorum: bool,
    /// The role now (split-brain policies count the current primaries).
    pub role: Role,
    /// The disk state (from the metadata while `Negotiating`).
    pub disk: DiskState,
    /// `connect --discard-my-data` was given on this side (`CF_DISCARD_MY_DATA`).
    pub discard_my_data: bool,
    /// Bits set in this side's bitmap for the other side (DRBD's `comm_bm_set` for self,
    /// `dirty_bits` for the peer): the "changes" of discard-zero/least-changes.
    pub dirty_bits: u64,
    /// The wire protocol this side configured. `P_PROTOCOL` refuses a mismatch before UUIDs are
    /// compared, so both sides carry the same value; the crashed-primary rule applies if either
    /// says A or B.
    pub protocol: Protocol,
}

impl UuidSet {
    /// A side with current UUID `current`, everything else clean: no bitmap UUID, no history,
    /// no flags, Secondary, UpToDate, protocol C.
    pub fn new(node_id: NodeId, current: GenUuid) -> UuidSet {
        UuidSet {
            node_id,
            current,
            bitmap: GenUuid::ZERO,
            history: Vec::new(),
            crashed_primary: false,
            reconnect: false,
            primary_lost_quorum: false,
            role: Role::Secondary,
            disk: DiskState::UpToDate,
            discard_my_data: false,
            dirty_bits: 0,
            protocol: Protocol::C,
        }
    }

    /// The current UUID is the just-created sentinel (or 0, which DRBD treats the same).
    pub fn just_created(&self) -> bool {
        self.current.is_zero() || self.current.same_as(GenUuid::JUST_CREATED)
    }

    /// History UUID `i` (masked), 0 when the slot does not exist.
    fn hist(&self, i: usize) -> u64 {
        self.history.get(i).map_or(0, |u| u.masked())
    }

    /// `uuid` (masked, non-zero) is one of this side's history UUIDs.
    fn in_history(&self, uuid: u64) -> bool {
        self.history.iter().any(|h| h.masked() == uuid)
    }
}

/// DRBD's `RESOLVE_CONFLICTS` bit for `me` on the connection to `peer`: set on exactly one side,
/// the one with the higher node id. It decides the symmetric ties (both lost quorum, both
/// crashed, equal changes).
pub fn resolves_conflicts(me: &UuidSet, peer: &UuidSet) -> bool {
    me.node_id > peer.node_id
}

/// The outcome of the UUID comparison, named as DRBD 9 names them (`enum sync_strategy`,
/// `sync_descriptors[]`). `SyncTargetPrimary*` only come out of [`resolve_split_brain`]'s
/// rr-conflict handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncStrategy {
    NoSync,
    /// Equal data generations, but one side crashed or lost quorum: this side is the source if
    /// neither is Primary now (a common failure); with a Primary, that one leads.
    SourceIfBothFailed,
    SourceUseBitmap,
    SourceSetBitmap,
    TargetIfBothFailed,
    TargetUseBitmap,
    TargetSetBitmap,
    SplitBrainAutoRecover,
    SplitBrainDisconnect,
    UnrelatedData,
    /// rr-conflict `retry-connect`: this Primary would become SyncTarget; drop and retry.
    SyncTargetPrimaryReconnect,
    /// rr-conflict `disconnect`/`call-pri-lost`: this Primary would become SyncTarget; drop.
    SyncTargetPrimaryDisconnect,
    /// The generations make an Inconsistent disk the source for one with good data (DRBD's
    /// "I shall become SyncSource, but I am inconsistent!"): drop and retry (the Inconsistent
    /// side may finish its resync from a third node meanwhile).
    InconsistentSourceReconnect,
}

impl SyncStrategy {
    /// DRBD's name (`sync_descriptors[].name`).
    pub fn name(self) -> &'static str {
        match self {
            SyncStrategy::NoSync => "no-sync",
            SyncStrategy::SourceIfBothFailed => "source-if-both-failed",
            SyncStrategy::SourceUseBitmap => "source-use-bitmap",
            SyncStrategy::SourceSetBitmap => "source-set-bitmap",
            SyncStrategy::TargetIfBothFailed => "target-if-both-failed",
            SyncStrategy::TargetUseBitmap => "target-use-bitmap",
            SyncStrategy::TargetSetBitmap => "target-set-bitmap",
            SyncStrategy::SplitBrainAutoRecover => "split-brain-auto-recover",
            SyncStrategy::SplitBrainDisconnect => "split-brain-disconnect",
            SyncStrategy::UnrelatedData => "unrelated-data",
            SyncStrategy::SyncTargetPrimaryReconnect => "sync-target-primary-reconnect",
            SyncStrategy::SyncTargetPrimaryDisconnect => "sync-target-primary-disconnect",
            SyncStrategy::InconsistentSourceReconnect => "inconsistent-source-reconnect",
        }
    }

    /// This side becomes SyncSource.
    pub fn is_sync_source(self) -> bool {
        matches!(
            self,
            SyncStrategy::SourceIfBothFailed
                | SyncStrategy::SourceUseBitmap
                | SyncStrategy::SourceSetBitmap
        )
    }

    /// This side becomes SyncTarget.
    pub fn is_sync_target(self) -> bool {
        matches!(
            self,
            SyncStrategy::TargetIfBothFailed
                | SyncStrategy::TargetUseBitmap
                | SyncStrategy::TargetSetBitmap
                | SyncStrategy::SyncTargetPrimaryReconnect
                | SyncStrategy::SyncTargetPrimaryDisconnect
        )
    }

    /// Split brain (auto-recoverable or not).
    pub fn is_split_brain(self) -> bool {
        matches!(
            self,
            SyncStrategy::SplitBrainAutoRecover | SyncStrategy::SplitBrainDisconnect
        )
    }

    /// The connection must be dropped (DRBD's `.disconnect` / `.reconnect` descriptors).
    pub fn drops_connection(self) -> bool {
        self.is_split_brain()
            || matches!(
                self,
                SyncStrategy::UnrelatedData
                    | SyncStrategy::SyncTargetPrimaryReconnect
                    | SyncStrategy::SyncTargetPrimaryDisconnect
                    | SyncStrategy::InconsistentSourceReconnect
            )
    }

    /// What the other side decides from the same UUIDs (`sync_descriptors[].reverse`; strategies
    /// without a direction are their own mirror).
    pub fn reverse(self) -> SyncStrategy {
        match self {
            SyncStrategy::SourceIfBothFailed => SyncStrategy::TargetIfBothFailed,
            SyncStrategy::TargetIfBothFailed => SyncStrategy::SourceIfBothFailed,
            SyncStrategy::SourceUseBitmap => SyncStrategy::TargetUseBitmap,
            SyncStrategy::TargetUseBitmap => SyncStrategy::SourceUseBitmap,
            SyncStrategy::SourceSetBitmap => SyncStrategy::TargetSetBitmap,
            SyncStrategy::TargetSetBitmap => SyncStrategy::SourceSetBitmap,
            other => other,
        }
    }

    /// The full-sync strategy in the same direction (`sync_descriptors[].full_sync_equivalent`):
    /// only the use-bitmap strategies have one.
    pub fn full_sync_equivalent(self) -> Option<SyncStrategy> {
        match self {
            SyncStrategy::SourceUseBitmap => Some(SyncStrategy::SourceSetBitmap),
            SyncStrategy::TargetUseBitmap => Some(SyncStrategy::TargetSetBitmap),
            _ => None,
        }
    }
}

impl fmt::Display for SyncStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which rule decided, with DRBD 9's names (`sync_rule_names[]`). Left out: the multi-peer
/// rules (`bitmap-peer-other`, `bitmap-self-other`), the protocol < 110 missed-start fixups
/// (`sync-target-missed-start`, `sync-source-missed-start`) and `initial-handshake-changed`
/// (a property of the connection's timeline, not of two UUID sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    JustCreatedBoth,
    JustCreatedSelf,
    JustCreatedPeer,
    SyncSourceMissedFinish,
    SyncSourcePeerMissedFinish,
    SyncTargetMissedFinish,
    SyncTargetPeerMissedFinish,
    Reconnected,
    CrashedPrimary,
    LostQuorum,
    BothOff,
    BitmapPeer,
    BitmapSelf,
    HistoryPeer,
    HistorySelf,
    BitmapBoth,
    HistoryBoth,
}

impl Rule {
    /// DRBD's name.
    pub fn name(self) -> &'static str {
        match self {
            Rule::JustCreatedBoth => "just-created-both",
            Rule::JustCreatedSelf => "just-created-self",
            Rule::JustCreatedPeer => "just-created-peer",
            Rule::SyncSourceMissedFinish => "sync-source-missed-finish",
            Rule::SyncSourcePeerMissedFinish => "sync-source-peer-missed-finish",
            Rule::SyncTargetMissedFinish => "sync-target-missed-finish",
            Rule::SyncTargetPeerMissedFinish => "sync-target-peer-missed-finish",
            Rule::Reconnected => "reconnected",
            Rule::CrashedPrimary => "crashed-primary",
            Rule::LostQuorum => "lost-quorum",
            Rule::BothOff => "both-off",
            Rule::BitmapPeer => "bitmap-peer",
            Rule::BitmapSelf => "bitmap-self",
            Rule::HistoryPeer => "history-peer",
            Rule::HistorySelf => "history-self",
            Rule::BitmapBoth => "bitmap-both",
            Rule::HistoryBoth => "history-both",
        }
    }

    /// One of the missed-end-of-resync rules (their resync is skipped unless the source is
    /// UpToDate, see [`resolve_split_brain`]).
    pub fn is_missed_finish(self) -> bool {
        matches!(
            self,
            Rule::SyncSourceMissedFinish
                | Rule::SyncSourcePeerMissedFinish
                | Rule::SyncTargetMissedFinish
                | Rule::SyncTargetPeerMissedFinish
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the UUID comparison decided and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    pub strategy: SyncStrategy,
    pub rule: Rule,
    /// Where DRBD corrects UUIDs in passing; the caller applies it (DRBD does so during the
    /// comparison, before anything else is decided).
    pub fixup: Option<Fixup>,
}

/// A metadata correction DRBD makes while comparing (`uuid_fixup_resync_end()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fixup {
    /// "was SyncSource, missed the resync finished event, corrected myself": this side's bitmap
    /// UUID for the peer goes into its history and becomes 0.
    PushOwnBitmapToHistory,
    /// "was SyncTarget, peer missed the resync finished event, corrected peer": the peer's view
    /// (its bitmap UUID for us into its history) is corrected; the peer does the same on its own
    /// side when it sees its rule `sync-source-missed-finish`.
    PeerBitmapToHistory,
}

impl fmt::Display for Decision {
    /// DRBD's log line: `uuid_compare()=target-use-bitmap by rule=bitmap-peer`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uuid_compare()={} by rule={}", self.strategy, self.rule)
    }
}

/// The facts the rule predicates read, computed once from the two sets (all UUIDs masked).
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    pub me_just_created: bool,
    pub peer_just_created: bool,
    pub me_current: u64,
    pub peer_current: u64,
    pub me_bitmap: u64,
    pub peer_bitmap: u64,
    pub me_hist0: u64,
    pub me_hist1: u64,
    pub peer_hist0: u64,
    /// Current UUIDs equal (role bit ignored).
    pub equal: bool,
    /// Protocol A or B on the link (the crashed-primary rule only applies then).
    pub async_protocol: bool,
    pub me_crashed: bool,
    pub peer_crashed: bool,
    pub me_reconnect: bool,
    pub peer_reconnect: bool,
    pub me_lost_quorum: bool,
    pub peer_lost_quorum: bool,
    /// This side holds `RESOLVE_CONFLICTS`.
    pub me_resolves: bool,
    /// This side's current UUID is in the peer's history.
    pub my_current_in_peer_history: bool,
    /// The peer's current UUID is in this side's history.
    pub peer_current_in_my_history: bool,
    /// A non-zero history UUID both sides share.
    pub common_history: bool,
}

impl Facts {
    pub fn of(me: &UuidSet, peer: &UuidSet) -> Facts {
        let me_current = me.current.masked();
        let peer_current = peer.current.masked();
        let common_history = me
            .history
            .iter()
            .any(|a| a.masked() != 0 && peer.history.iter().any(|b| b.masked() == a.masked()));
        Facts {
            me_just_created: me.just_created(),
            peer_just_created: peer.just_created(),
            me_current,
            peer_current,
            me_bitmap: me.bitmap.masked(),
            peer_bitmap: peer.bitmap.masked(),
            me_hist0: me.hist(0),
            me_hist1: me.hist(1),
            peer_hist0: peer.hist(0),
            equal: me_current == peer_current,
            async_protocol: [me.protocol, peer.protocol]
                .iter()
                .any(|p| matches!(p, Protocol::A | Protocol::B)),
            me_crashed: me.crashed_primary,
            peer_crashed: peer.crashed_primary,
            me_reconnect: me.reconnect,
            peer_reconnect: peer.reconnect,
            me_lost_quorum: me.primary_lost_quorum,
            peer_lost_quorum: peer.primary_lost_quorum,
            me_resolves: resolves_conflicts(me, peer),
            my_current_in_peer_history: me_current != 0 && peer.in_history(me_current),
            peer_current_in_my_history: peer_current != 0 && me.in_history(peer_current),
            common_history,
        }
    }
}

/// One row of the decision table.
#[derive(Clone, Copy)]
pub struct RuleRow {
    pub rule: Rule,
    pub when: fn(&Facts) -> bool,
    pub strategy: SyncStrategy,
    pub fixup: Option<Fixup>,
    /// The DRBD source this row follows.
    pub drbd: &'static str,
}

impl fmt::Debug for RuleRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleRow")
            .field("rule", &self.rule)
            .field("strategy", &self.strategy)
            .field("drbd", &self.drbd)
            .finish()
    }
}

use SyncStrategy as S;

const fn row(
    rule: Rule,
    when: fn(&Facts) -> bool,
    strategy: SyncStrategy,
    drbd: &'static str,
) -> RuleRow {
    RuleRow {
        rule,
        when,
        strategy,
        fixup: None,
        drbd,
    }
}

/// The decision table, in DRBD 9's order (`drbd_uuid_compare()`, agreed protocol >= 121). The
/// first row whose predicate holds decides. Rows after the equal-current block only run when
/// the current UUIDs differ (the equal block ends in a catch-all).
pub static RULES: &[RuleRow] = &[
    row(
        Rule::JustCreatedBoth,
        |f| f.me_just_created && f.peer_just_created,
        S::NoSync,
        "self == UUID_JUST_CREATED && peer == UUID_JUST_CREATED (8.4 rule 10)",
    ),
    row(
        Rule::JustCreatedSelf,
        |f| f.me_just_created,
        S::TargetSetBitmap,
        "self == UUID_JUST_CREATED (8.4 rule 20)",
    ),
    row(
        Rule::JustCreatedPeer,
        |f| f.peer_just_created,
        S::SourceSetBitmap,
        "peer == UUID_JUST_CREATED (8.4 rule 30)",
    ),
    // --- current UUIDs equal (8.4 rules 34-40) ---
    RuleRow {
        fixup: Some(Fixup::PushOwnBitmapToHistory),
        ..row(
            Rule::SyncSourceMissedFinish,
            |f| {
                f.equal
                    && f.peer_bitmap == 0
                    && f.me_bitmap != 0
                    && f.me_bitmap == f.peer_hist0
                    && f.me_hist0 == f.peer_hist0
            },
            S::SourceUseBitmap,
            "uuid_fixup_resync_end(): was SyncSource, missed the resync finished event (8.4 rule 34)",
        )
    },
    row(
        Rule::SyncSourcePeerMissedFinish,
        |f| f.equal && f.peer_bitmap == 0 && f.me_bitmap != 0,
        S::SourceUseBitmap,
        "uuid_fixup_resync_end(): was SyncSource (peer failed to write sync_uuid) (8.4 rule 35)",
    ),
    RuleRow {
        fixup: Some(Fixup::PeerBitmapToHistory),
        ..row(
            Rule::SyncTargetPeerMissedFinish,
            |f| {
                f.equal
                    && f.me_bitmap == 0
                    && f.peer_bitmap != 0
                    && f.me_hist0 == f.peer_bitmap
                    && f.me_hist1 == f.peer_hist0
            },
            S::TargetUseBitmap,
            "uuid_fixup_resync_end(): was SyncTarget, peer missed the resync finished event (8.4 rule 36)",
        )
    },
    row(
        Rule::SyncTargetMissedFinish,
        |f| f.equal && f.me_bitmap == 0 && f.peer_bitmap != 0,
        S::TargetUseBitmap,
        "uuid_fixup_resync_end(): was SyncTarget (failed to write sync_uuid) (8.4 rule 37)",
    ),
    row(
        Rule::Reconnected,
        |f| f.equal && f.me_reconnect && f.peer_reconnect,
        S::NoSync,
        "RULE_RECONNECTED: both UUID_FLAG_RECONNECT (protocol >= 120)",
    ),
    row(
        Rule::CrashedPrimary,
        |f| f.equal && f.async_protocol && f.me_crashed && !f.peer_crashed,
        S::SourceUseBitmap,
        "RULE_CRASHED_PRIMARY: protocol A/B, I crashed as primary (protocol >= 121)",
    ),
    row(
        Rule::CrashedPrimary,
        |f| f.equal && f.async_protocol && f.peer_crashed && !f.me_crashed,
        S::TargetUseBitmap,
        "RULE_CRASHED_PRIMARY: protocol A/B, peer crashed as primary (protocol >= 121)",
    ),
    row(
        Rule::LostQuorum,
        |f| f.equal && f.peer_lost_quorum && !f.me_lost_quorum,
        S::TargetIfBothFailed,
        "RULE_LOST_QUORUM: peer was primary and lost quorum",
    ),
    row(
        Rule::LostQuorum,
        |f| f.equal && f.me_lost_quorum && !f.peer_lost_quorum,
        S::SourceIfBothFailed,
        "RULE_LOST_QUORUM: I was primary and lost quorum",
    ),
    row(
        Rule::LostQuorum,
        |f| f.equal && f.me_lost_quorum && f.peer_lost_quorum && f.me_resolves,
        S::SourceIfBothFailed,
        "RULE_LOST_QUORUM: both lost quorum, RESOLVE_CONFLICTS set",
    ),
    row(
        Rule::LostQuorum,
        |f| f.equal && f.me_lost_quorum && f.peer_lost_quorum,
        S::TargetIfBothFailed,
        "RULE_LOST_QUORUM: both lost quorum, RESOLVE_CONFLICTS clear",
    ),
    row(
        Rule::Reconnected,
        |f| f.equal && f.peer_crashed && f.me_reconnect,
        S::SourceIfBothFailed,
        "peer crashed as primary, I survived, resync from me",
    ),
    row(
        Rule::Reconnected,
        |f| f.equal && f.me_crashed && f.peer_reconnect,
        S::TargetIfBothFailed,
        "I am a crashed primary, peer survived, resync to me",
    ),
    row(
        Rule::Reconnected,
        |f| f.equal && (f.me_reconnect || f.peer_reconnect),
        S::NoSync,
        "one of us had a connection to the other before: not a common power failure",
    ),
    row(
        Rule::BothOff,
        |f| f.equal && f.me_crashed && f.peer_crashed && f.me_resolves,
        S::TargetIfBothFailed,
        "RULE_BOTH_OFF: both crashed as primary, RESOLVE_CONFLICTS set (8.4 rule 40)",
    ),
    row(
        Rule::BothOff,
        |f| f.equal && f.me_crashed,
        S::SourceIfBothFailed,
        "RULE_BOTH_OFF: common power failure, I was the crashed primary (8.4 rule 40)",
    ),
    row(
        Rule::BothOff,
        |f| f.equal && f.peer_crashed,
        S::TargetIfBothFailed,
        "RULE_BOTH_OFF: common power failure, peer was the crashed primary (8.4 rule 40)",
    ),
    row(
        Rule::BothOff,
        |f| f.equal,
        S::NoSync,
        "RULE_BOTH_OFF: equal current UUIDs, nobody crashed (8.4 rule 40)",
    ),
    // --- current UUIDs differ ---
    row(
        Rule::BitmapPeer,
        |f| f.peer_bitmap == f.me_current,
        S::TargetUseBitmap,
        "peer->bitmap_uuids[my_node_id] == self current (8.4 rule 50)",
    ),
    row(
        Rule::BitmapSelf,
        |f| f.me_bitmap == f.peer_current,
        S::SourceUseBitmap,
        "my bitmap uuid == peer current (8.4 rule 70)",
    ),
    row(
        Rule::HistoryPeer,
        |f| f.my_current_in_peer_history && !f.peer_current_in_my_history,
        S::TargetSetBitmap,
        "my current in the peer's history (8.4 rule 60)",
    ),
    row(
        Rule::HistorySelf,
        |f| !f.my_current_in_peer_history && f.peer_current_in_my_history,
        S::SourceSetBitmap,
        "the peer's current in my history (8.4 rule 80)",
    ),
    row(
        Rule::BitmapBoth,
        |f| f.me_bitmap == f.peer_bitmap && f.me_bitmap != 0,
        S::SplitBrainAutoRecover,
        "equal non-zero bitmap uuids: common parent (8.4 rule 90)",
    ),
    row(
        Rule::HistoryBoth,
        |f| f.common_history,
        S::SplitBrainDisconnect,
        "a common history uuid (8.4 rule 100)",
    ),
    // DRBD returns UNRELATED_DATA with the rule variable still at RULE_HISTORY_BOTH.
    row(
        Rule::HistoryBoth,
        |_| true,
        S::UnrelatedData,
        "nothing in common (8.4 -1000)",
    ),
];

/// Compares the two sides' generation UUIDs: DRBD 9's `drbd_uuid_compare()` as the table
/// [`RULES`]. The result is from `me`'s point of view; the peer, comparing the same sets the
/// other way round, gets the [`SyncStrategy::reverse`] (property-tested).
pub fn uuid_compare(me: &UuidSet, peer: &UuidSet) -> Decision {
    let facts = Facts::of(me, peer);
    RULES.iter().find(|r| (r.when)(&facts)).map_or(
        // Unreachable: the last row always matches. Kept total rather than panicking.
        Decision {
            strategy: S::UnrelatedData,
            rule: Rule::HistoryBoth,
            fixup: None,
        },
        |r| Decision {
            strategy: r.strategy,
            rule: r.rule,
            fixup: r.fixup,
        },
    )
}
