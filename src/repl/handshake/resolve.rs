//! What `drbd_sync_handshake()` does with the UUID decision: disk states, after-split-brain
//! policies (`drbd_asb_recover_0p/1p/2p()`), `--discard-my-data`, rr-conflict and the
//! missed-resync-finish checks. Pure: roles are not changed and handlers are not run here; the
//! outcome lists what the caller must do.

use super::{Decision, Fixup, Rule, SyncStrategy, UuidSet, resolves_conflicts};
use crate::config::{AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, NetOptions, RrConflict};
pub use crate::repl::handler::Handler;
use crate::repl::state::{DiskState, Role};
use crate::types::GenUuid;
use std::fmt;

use SyncStrategy as S;

/// DRBD's log texts, verbatim (format arguments shown as `%d`/`%s` in the docs of the functions
/// that fill them in).
pub mod msg {
    pub const UNRELATED_DATA: &str = "Unrelated data, aborting!";
    pub const SB_UNRESOLVED: &str = "Split-Brain detected but unresolved, dropping connection!";
    pub const WANT_FULL_SYNC: &str =
        "Want full sync but cannot decide direction, dropping connection!";
    /// DRBD's spelling ("where").
    pub const FULL_SYNC_AMBIGUOUS: &str = "Doing a full sync, since UUIDs where ambiguous.";
    pub const INCOMPATIBLE_DISCARD: &str = "incompatible discard-my-data settings";
    pub const RR_PRIMARY_TARGET: &str = "I shall become SyncTarget, but I am primary!";
    pub const INCONSISTENT_SOURCE: &str = "I shall become SyncSource, but I am inconsistent!";
    pub const PEER_INCONSISTENT_SOURCE: &str =
        "I shall become SyncTarget, but the peer is inconsistent!";
    pub const SPLIT_WHILE_INCONSISTENT: &str =
        "The generations split, but one side is inconsistent: trying again after its resync";
    /// DRBD concatenates two literals without a space; kept verbatim.
    pub const RR_VIOLENTLY: &str = "Becoming SyncTarget, violating the stable-dataassumption";
    pub const RR_AUTO_DISCARD: &str = "reversing resync by auto-discard";
    pub const DISCARD_REVERSED: &str =
        "Resync direction reversed by --discard-my-data. Reverting to older data!";
    pub const DISCARD_IGNORED: &str = "Ignoring --discard-my-data";
    pub const DISCARD_CANNOT_REVERSE: &str =
        "Can not reverse resync direction (requested via --discard-my-data)";
    pub const YOUNGER_OLDER_UNDECIDED: &str = "Discard younger/older primary did not find a decision\nUsing discard-least-changes instead";

    /// `Split-Brain detected, %d primaries, automatically solved. Sync from %s node`.
    pub fn sb_auto_solved(primaries: u32, from_peer: bool) -> String {
        format!(
            "Split-Brain detected, {primaries} primaries, automatically solved. Sync from {} node",
            if from_peer { "peer" } else { "this" }
        )
    }

    /// `Split-Brain detected, manually solved. %s from %s node` (`Sync`, or `Full sync` when the
    /// UUIDs shared only history).
    pub fn sb_manually_solved(full: bool, from_peer: bool) -> String {
        format!(
            "Split-Brain detected, manually solved. {} from {} node",
            if full { "Full sync" } else { "Sync" },
            if from_peer { "peer" } else { "this" }
        )
    }

    /// DRBD's `No resync, but %lu bits in bitmap!`, and what udrbd does about them.
    pub fn stray_bits(bits: u64, source: bool) -> String {
        format!(
            "No resync, but {bits} bits in bitmap! Resyncing them as sync {}",
            if source { "source" } else { "target" }
        )
    }

    /// `strategy = %s due to disk states. (%s/%s)`.
    pub fn due_to_disk_states(
        strategy: super::SyncStrategy,
        me: super::DiskState,
        peer: super::DiskState,
    ) -> String {
        format!("strategy = {strategy} due to disk states. ({me}/{peer})")
    }

    /// `Resync (rule=%s) skipped: sync-source (%s)` / `... skipped: peer sync-source (%s)`.
    pub fn missed_finish_skipped(rule: super::Rule, peer: bool, disk: super::DiskState) -> String {
        format!(
            "Resync (rule={rule}) skipped: {}sync-source ({disk})",
            if peer { "peer " } else { "" }
        )
    }
}

/// The policies that apply (from `net { }`; [`SbPolicy::from_net`]). `discard-node-NAME` has
/// already been turned into `discard-local`/`discard-remote` by the config layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SbPolicy {
    pub after_sb_0pri: AfterSb0Pri,
    pub after_sb_1pri: AfterSb1Pri,
    pub after_sb_2pri: AfterSb2Pri,
    pub always_asbp: bool,
    pub rr_conflict: RrConflict,
}

impl SbPolicy {
    /// The same policies as the peer states them: `discard-local` there is `discard-remote`
    /// here (DRBD's `convert_after_sb()`).
    pub fn mirrored(self) -> SbPolicy {
        let after_sb_0pri = match self.after_sb_0pri {
            AfterSb0Pri::DiscardLocal => AfterSb0Pri::DiscardRemote,
            AfterSb0Pri::DiscardRemote => AfterSb0Pri::DiscardLocal,
            p => p,
        };
        SbPolicy {
            after_sb_0pri,
            ..self
        }
    }

    pub fn from_net(n: &NetOptions) -> SbPolicy {
        SbPolicy {
            after_sb_0pri: n.after_sb_0pri,
            after_sb_1pri: n.after_sb_1pri,
            after_sb_2pri: n.after_sb_2pri,
            always_asbp: n.always_asbp,
            rr_conflict: n.rr_conflict,
        }
    }
}

/// Everything the resolution reads: both sides (roles, disk states, dirty bits, the role bit of
/// the bitmap UUIDs, `--discard-my-data`) and the policies.
#[derive(Clone, Copy, Debug)]
pub struct SbContext<'a> {
    pub me: &'a UuidSet,
    pub peer: &'a UuidSet,
    pub policy: SbPolicy,
}

/// Severity of a log line (DRBD's `drbd_info`/`drbd_warn`/`drbd_err`/`drbd_alert`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    Info,
    Warn,
    Err,
    Alert,
}

/// One log line the handshake would print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub text: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The end of the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SbOutcome {
    /// The final strategy. If it [drops the connection](SyncStrategy::drops_connection), the
    /// connection goes down (`SyncTargetPrimaryReconnect`: and is retried).
    pub strategy: SyncStrategy,
    /// The rule of the UUID decision this came from.
    pub rule: Rule,
    /// `P_PROTOCOL` refused the connection before the UUIDs mattered (both sides gave
    /// `--discard-my-data`).
    pub refused: bool,
    /// `call-pri-lost-after-sb` picked this node, a Primary, as the victim: the caller must
    /// demote it first. On success DRBD logs "Successfully gave up primary role." and goes on
    /// with `strategy`; if demotion fails the caller runs the `pri-lost-after-sb` handler and
    /// drops the connection (split-brain-disconnect).
    pub demote_first: bool,
    /// The decision would have made this Primary (with data, and with changes to sync) the
    /// SyncTarget; `rr-conflict` was applied.
    pub rr_conflict: bool,
    /// A UUID correction from the comparison. DRBD makes it while comparing, so the caller
    /// applies it whatever the final strategy.
    pub fixup: Option<Fixup>,
    /// Handlers to run, in order.
    pub handlers: Vec<Handler>,
    /// DRBD's log lines, in order.
    pub log: Vec<LogLine>,
}

impl SbOutcome {
    /// The connection is dropped.
    pub fn disconnects(&self) -> bool {
        self.refused || self.strategy.drops_connection()
    }

    fn say(&mut self, level: Level, text: impl Into<String>) {
        self.log.push(LogLine {
            level,
            text: text.into(),
        });
    }
}

/// Applies `drbd_sync_handshake()`'s steps to the UUID decision `d` (computed from the same
/// `ctx.me`/`ctx.peer`), in DRBD's order:
///
/// 1. both sides gave `--discard-my-data`: refused (`incompatible discard-my-data settings`,
///    which DRBD checks in `P_PROTOCOL`, before the UUIDs);
/// 2. `unrelated-data`: `Unrelated data, aborting!`;
/// 3. disk states (`disk_states_to_strategy()`): equal generations but differing disk states
///    resync from the better disk;
/// 4. split brain: `initial-split-brain` handler; auto-recover (or always-asbp) applies
///    after-sb-0pri/1pri/2pri by the number of current primaries, logging
///    `Split-Brain detected, %d primaries, automatically solved. Sync from %s node`;
/// 5. still split-brain-disconnect and one side gave `--discard-my-data`: that side becomes the
///    target, `Split-Brain detected, manually solved. Sync from %s node`;
/// 6. still split brain: `Split-Brain detected but unresolved, dropping connection!` and the
///    `split-brain` handler;
/// 7. otherwise `--discard-my-data` can reverse a resync direction;
/// 8. rr-conflict when this Primary would become SyncTarget;
/// 9. a missed-finish rule does not resync from a source that is not UpToDate.
pub fn resolve_split_brain(d: Decision, ctx: &SbContext) -> SbOutcome {
    let (me, peer) = (ctx.me, ctx.peer);
    let mut out = SbOutcome {
        strategy: d.strategy,
        rule: d.rule,
        refused: false,
        demote_first: false,
        rr_conflict: false,
        fixup: d.fixup,
        handlers: Vec::new(),
        log: Vec::new(),
    };

    if me.discard_my_data && peer.discard_my_data {
        out.refused = true;
        out.say(Level::Err, msg::INCOMPATIBLE_DISCARD);
        return out;
    }
    if out.strategy == S::UnrelatedData {
        out.say(Level::Alert, msg::UNRELATED_DATA);
        return out;
    }
    // `discard_my_data_to_strategy()`: None unless exactly one side asked.
    let from_user = match (me.discard_my_data, peer.discard_my_data) {
        (true, false) => Some(S::TargetUseBitmap),
        (false, true) => Some(S::SourceUseBitmap),
        _ => None,
    };

    disk_states_to_strategy(&mut out, me.disk, peer.disk);
    stray_bits(&mut out, me, peer);
    never_from_inconsistent(ctx, &mut out);
    if out.strategy == S::InconsistentSourceReconnect {
        return out;
    }

    if out.strategy.is_split_brain() {
        out.handlers.push(Handler::InitialSplitBrain);
    }
    // Only common history: whichever way it is resolved, the bitmaps mean nothing.
    let need_full_sync = out.strategy == S::SplitBrainDisconnect;

    if out.strategy == S::SplitBrainAutoRecover
        || (out.strategy == S::SplitBrainDisconnect && ctx.policy.always_asbp)
    {
        let primaries = u32::from(me.role == Role::Primary) + u32::from(peer.role == Role::Primary);
        let (s, demote) = match primaries {
            0 => (recover_0p(ctx, &mut out), false),
            1 => recover_1p(ctx, &mut out),
            _ => recover_2p(ctx, &mut out),
        };
        out.strategy = s;
        out.demote_first = demote;
        if !s.is_split_brain() {
            out.say(
                Level::Warn,
                msg::sb_auto_solved(primaries, s.is_sync_target()),
            );
            if need_full_sync {
                match s.full_sync_equivalent() {
                    Some(full) => {
                        out.say(Level::Warn, msg::FULL_SYNC_AMBIGUOUS);
                        out.strategy = full;
                    }
                    None => {
                        out.say(Level::Alert, msg::WANT_FULL_SYNC);
                        out.strategy = S::SplitBrainDisconnect;
                        out.demote_first = false;
                        return out;
                    }
                }
            }
        }
    }

    if out.strategy == S::SplitBrainDisconnect
        && let Some(user) = from_user
    {
        out.strategy = if need_full_sync {
            user.full_sync_equivalent().unwrap_or(user)
        } else {
            user
        };
        out.say(
            Level::Warn,
            msg::sb_manually_solved(need_full_sync, out.strategy.is_sync_target()),
        );
    }

    if out.strategy.is_split_brain() {
        out.say(Level::Alert, msg::SB_UNRESOLVED);
        out.handlers.push(Handler::SplitBrain);
        return out;
    }

    // --discard-my-data against the UUIDs' direction (protocol >= 121).
    if out.strategy != S::NoSync
        && let Some(user) = from_user
        && out.strategy.is_sync_source() != user.is_sync_source()
    {
        let reversed = out.strategy.reverse();
        if reversed != out.strategy {
            let source_disk = if reversed.is_sync_source() {
                me.disk
            } else {
                peer.disk
            };
            if source_disk > DiskState::Inconsistent {
                out.strategy = reversed;
                out.say(Level::Warn, msg::DISCARD_REVERSED);
            } else {
                out.say(Level::Warn, msg::DISCARD_IGNORED);
            }
        } else {
            out.say(Level::Warn, msg::DISCARD_CANNOT_REVERSE);
        }
    }

    // A missed-finish decision may be revised first; the Primary-as-target check sees the
    // final one.
    missed_finish(ctx, &mut out);
    rr_conflict(ctx, &mut out);
    out
}

/// An Inconsistent disk is never the source for one with good data (Consistent or UpToDate),
/// whatever the generations say (DRBD's "I shall become SyncSource, but I am inconsistent!"):
/// the connection is dropped and tried again. With three nodes the Inconsistent side may hold
/// the newest generation (its disk failed and came back) while the newest data is on a third
/// node, or be in the middle of its resync from a third node: neither side's data may
/// overwrite the other's.
fn never_from_inconsistent(ctx: &SbContext, out: &mut SbOutcome) {
    let good = |d: DiskState| matches!(d, DiskState::Consistent | DiskState::UpToDate);
    let (me, peer) = (ctx.me.disk, ctx.peer.disk);
    let one_inconsistent = (peer == DiskState::Inconsistent && good(me))
        || (me == DiskState::Inconsistent && good(peer));
    let text = if out.strategy.is_sync_target() && peer == DiskState::Inconsistent && good(me) {
        msg::PEER_INCONSISTENT_SOURCE
    } else if out.strategy.is_sync_source() && me == DiskState::Inconsistent && good(peer) {
        msg::INCONSISTENT_SOURCE
    } else if out.strategy.is_split_brain()
        && (one_inconsistent || (me == DiskState::Inconsistent && peer == DiskState::Inconsistent))
    {
        // Generations that split while one side (or both) is in the middle of a resync from a
        // third node (or its disk failed and came back): that side's data is no generation of
        // its own. Not a split brain to resolve; tried again once its resync has ended.
        msg::SPLIT_WHILE_INCONSISTENT
    } else {
        return;
    };
    out.say(Level::Err, text);
    out.strategy = S::InconsistentSourceReconnect;
}

/// `disk_states_to_strategy()` (agreed protocol >= 119): when the generations say "equal" (or
/// "whoever failed"), differing disk states decide, the better disk being the source.
fn disk_states_to_strategy(out: &mut SbOutcome, me: DiskState, peer: DiskState) {
    let either_inconsistent = (me == DiskState::Inconsistent && peer > DiskState::Inconsistent)
        || (peer == DiskState::Inconsistent && me > DiskState::Inconsistent);
    let dstates_want_resync = me != peer
        && me >= DiskState::Inconsistent
        && peer >= DiskState::Inconsistent
        && peer != DiskState::DUnknown;
    let arbitrary = matches!(out.strategy, S::TargetIfBothFailed | S::SourceIfBothFailed);
    let decide = dstates_want_resync
        && ((matches!(
            out.rule,
            Rule::Reconnected | Rule::LostQuorum | Rule::BothOff
        ) && arbitrary)
            || (out.strategy == S::NoSync && either_inconsistent));
    if decide {
        // DRBD picks set-bitmap/copy-bitmap variants from the peer's UUID_FLAG_SYNC_TARGET and
        // other peers' bitmaps; with two nodes and no resync in flight that is use-bitmap.
        out.strategy = if me > peer {
            S::SourceUseBitmap
        } else {
            S::TargetUseBitmap
        };
        out.say(Level::Info, msg::due_to_disk_states(out.strategy, me, peer));
    }
}

/// Equal generations and yet blocks marked out of sync on either side. DRBD logged `No resync,
/// but N bits in bitmap!` and left them, so both sides went on calling each other UpToDate over
/// blocks that differ; udrbd resyncs them. The source is the better disk; with equal disks
/// the Primary (its data is what the application has been reading); else the only side that
/// marked anything (its marks record writes the other may lack); else the side that resolves
/// conflicts. Every criterion is the mirror of the peer's, so both sides agree.
fn stray_bits(out: &mut SbOutcome, me: &UuidSet, peer: &UuidSet) {
    let bits = me.dirty_bits + peer.dirty_bits;
    if out.strategy != S::NoSync || bits == 0 {
        return;
    }
    let source = if me.disk != peer.disk {
        me.disk > peer.disk
    } else if me.role != peer.role {
        me.role == Role::Primary
    } else if (me.dirty_bits > 0) != (peer.dirty_bits > 0) {
        me.dirty_bits > 0
    } else {
        super::resolves_conflicts(me, peer)
    };
    out.strategy = if source {
        S::SourceUseBitmap
    } else {
        S::TargetUseBitmap
    };
    out.say(Level::Warn, msg::stray_bits(bits, source));
}

/// The role bit of a bitmap UUID: the generation split off while that side was Primary.
fn primary_bit(u: GenUuid) -> bool {
    u.0 & GenUuid::PRIMARY_BIT != 0
}

/// `drbd_asb_recover_0p()`: no primaries now. Returns split-brain-disconnect when undecided.
fn recover_0p(ctx: &SbContext, out: &mut SbOutcome) -> SyncStrategy {
    let (me, peer) = (ctx.me, ctx.peer);
    let resolves = resolves_conflicts(me, peer);
    let tie = if resolves {
        S::TargetUseBitmap
    } else {
        S::SourceUseBitmap
    };
    let (ch_self, ch_peer) = (me.dirty_bits, peer.dirty_bits);
    let least_changes = || match ch_self.cmp(&ch_peer) {
        std::cmp::Ordering::Less => S::TargetUseBitmap,
        std::cmp::Ordering::Greater => S::SourceUseBitmap,
        std::cmp::Ordering::Equal => tie,
    };
    // discard-zero-changes: Some(decision) if one side (or both) has no changes.
    let zero_changes = || match (ch_self == 0, ch_peer == 0) {
        (true, true) => Some(tie),
        (_, true) => Some(S::SourceUseBitmap),
        (true, _) => Some(S::TargetUseBitmap),
        _ => None,
    };
    let (self_pri, peer_pri) = (primary_bit(me.bitmap), primary_bit(peer.bitmap));
    match ctx.policy.after_sb_0pri {
        AfterSb0Pri::Disconnect => S::SplitBrainDisconnect,
        p @ (AfterSb0Pri::DiscardYoungerPrimary | AfterSb0Pri::DiscardOlderPrimary) => {
            // The side whose bitmap UUID carries the role bit was Primary when the generations
            // split: it is the older primary.
            let younger = p == AfterSb0Pri::DiscardYoungerPrimary;
            match (self_pri, peer_pri) {
                (true, false) if younger => S::SourceUseBitmap,
                (false, true) if younger => S::TargetUseBitmap,
                (true, false) => S::TargetUseBitmap,
                (false, true) => S::SourceUseBitmap,
                _ => {
                    // DRBD falls through discard-zero-changes into discard-least-changes.
                    out.say(Level::Warn, msg::YOUNGER_OLDER_UNDECIDED);
                    zero_changes().unwrap_or_else(least_changes)
                }
            }
        }
        AfterSb0Pri::DiscardZeroChanges => zero_changes().unwrap_or(S::SplitBrainDisconnect),
        AfterSb0Pri::DiscardLeastChanges => least_changes(),
        AfterSb0Pri::DiscardLocal => S::TargetUseBitmap,
        AfterSb0Pri::DiscardRemote => S::SourceUseBitmap,
    }
}

/// `drbd_asb_recover_1p()`: one primary now. The bool asks the caller to demote first.
fn recover_1p(ctx: &SbContext, out: &mut SbOutcome) -> (SyncStrategy, bool) {
    let primary = ctx.me.role == Role::Primary;
    match ctx.policy.after_sb_1pri {
        AfterSb1Pri::Disconnect => (S::SplitBrainDisconnect, false),
        AfterSb1Pri::Consensus => {
            // Only if the 0pri policy discards the secondary.
            let s = recover_0p(ctx, out);
            let ok = (s == S::TargetUseBitmap && !primary) || (s == S::SourceUseBitmap && primary);
            (if ok { s } else { S::SplitBrainDisconnect }, false)
        }
        AfterSb1Pri::ViolentlyAs0p => (recover_0p(ctx, out), false),
        AfterSb1Pri::DiscardSecondary => (
            if primary {
                S::SourceUseBitmap
            } else {
                S::TargetUseBitmap
            },
            false,
        ),
        AfterSb1Pri::CallPriLostAfterSb => {
            let s = recover_0p(ctx, out);
            (s, s == S::TargetUseBitmap && primary)
        }
    }
}

/// `drbd_asb_recover_2p()`: two primaries now.
fn recover_2p(ctx: &SbContext, out: &mut SbOutcome) -> (SyncStrategy, bool) {
    match ctx.policy.after_sb_2pri {
        AfterSb2Pri::Disconnect => (S::SplitBrainDisconnect, false),
        AfterSb2Pri::ViolentlyAs0p => (recover_0p(ctx, out), false),
        AfterSb2Pri::CallPriLostAfterSb => {
            let s = recover_0p(ctx, out);
            (s, s == S::TargetUseBitmap)
        }
    }
}

/// rr-conflict: the decision makes this node, a Primary with usable data and something to sync,
/// the SyncTarget. (Not for target-if-both-failed: with a Primary involved that one leads.)
fn rr_conflict(ctx: &SbContext, out: &mut SbOutcome) {
    let (me, peer) = (ctx.me, ctx.peer);
    let policy = ctx.policy.rr_conflict;
    let primary_now = me.role == Role::Primary && !out.demote_first;
    if out.strategy.is_sync_target()
        && out.strategy != S::TargetIfBothFailed
        && primary_now
        && me.disk >= DiskState::Consistent
        && (me.dirty_bits > 0 || peer.dirty_bits > 0)
    {
        out.rr_conflict = true;
        match policy {
            RrConflict::CallPriLost | RrConflict::Disconnect | RrConflict::RetryConnect => {
                if policy == RrConflict::CallPriLost {
                    out.handlers.push(Handler::PriLost);
                }
                out.say(Level::Err, msg::RR_PRIMARY_TARGET);
                out.strategy = if policy == RrConflict::RetryConnect {
                    S::SyncTargetPrimaryReconnect
                } else {
                    S::SyncTargetPrimaryDisconnect
                };
            }
            RrConflict::Violently => out.say(Level::Warn, msg::RR_VIOLENTLY),
            RrConflict::AutoDiscard => {
                if out.strategy == S::TargetUseBitmap && out.rule == Rule::CrashedPrimary {
                    out.say(Level::Warn, msg::RR_AUTO_DISCARD);
                    out.strategy = S::SourceUseBitmap;
                }
            }
        }
    }
    // The mirror image: the peer is the Primary that would lose its crash-time writes. Not when
    // the branch above already reversed this side (that would undo it).
    if !out.rr_conflict
        && out.strategy == S::SourceUseBitmap
        && out.rule == Rule::CrashedPrimary
        && peer.role == Role::Primary
        && peer.disk >= DiskState::Consistent
        && (me.dirty_bits > 0 || peer.dirty_bits > 0)
        && policy == RrConflict::AutoDiscard
    {
        out.say(Level::Warn, msg::RR_AUTO_DISCARD);
        out.strategy = S::TargetUseBitmap;
    }
}

/// After a missed end of resync, only an UpToDate source is worth syncing from, unless the
/// source marked blocks since: it wrote them as Primary after the link went (its generation
/// had split off for the resync already, so its current UUID did not move), or it crashed as
/// Primary and marked its activity log. Those are resynced from it (the simulator found them
/// left behind, or overwritten with the target's older data), unless it is Inconsistent.
/// Blocks marked only on the side that is not synced from are still resynced
/// ([`stray_bits`], from the better disk).
fn missed_finish(ctx: &SbContext, out: &mut SbOutcome) {
    if !out.rule.is_missed_finish() {
        return;
    }
    // An Inconsistent disk is never a source, marks or not: the better disk serves them. Nor
    // is an UpToDate Primary ever made the target by it: its data is what the application
    // reads (three nodes reach equal UUIDs with a leftover bitmap UUID on the other side).
    let no_source = |src: &UuidSet, dst: &UuidSet| {
        src.disk == DiskState::Inconsistent
            || (src.disk != DiskState::UpToDate && src.dirty_bits == 0)
            || (dst.role == Role::Primary
                && dst.disk == DiskState::UpToDate
                && src.role != Role::Primary)
    };
    if out.strategy == S::SourceUseBitmap && no_source(ctx.me, ctx.peer) {
        out.say(
            Level::Info,
            msg::missed_finish_skipped(out.rule, false, ctx.me.disk),
        );
        out.strategy = S::NoSync;
    } else if out.strategy == S::TargetUseBitmap && no_source(ctx.peer, ctx.me) {
        out.say(
            Level::Info,
            msg::missed_finish_skipped(out.rule, true, ctx.peer.disk),
        );
        out.strategy = S::NoSync;
    } else {
        return;
    }
    stray_bits(out, ctx.me, ctx.peer);
}
