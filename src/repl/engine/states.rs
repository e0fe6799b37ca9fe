//! The one path by which role, disk, peer-disk, connection and replication states change.
//!
//! The states live in [`NodeStates`] (this node) and [`PeerStates`] (one per peer), whose
//! fields are private to this module: everything else reads them through getters and changes
//! them by building a [`Change`] and handing it to [`Engine::change`]. That function does what
//! DRBD's `drbd_state.c` does for every change, in order:
//!
//! 1. apply the proposal to a copy of the current states;
//! 2. [`state_rules::sanitize`] it (what the new states imply);
//! 3. [`state_rules::check`] it against DRBD's validity rules: a refusal returns DRBD's error
//!    code and logs `State change failed: ...` with the attempted change, and nothing changes;
//! 4. commit, and log the change in DRBD's words, one line per object
//!    (`role( Secondary -> Primary )`, `conn( Connecting -> Connected ) peer( Unknown -> Secondary )`,
//!    `disk( Attaching -> UpToDate )`, `pdsk( DUnknown -> UpToDate ) repl( Off -> Established )`);
//! 5. run what follows from the change itself ([`Engine::after_state_change`]): a Primary that
//!    lost sight of its peer's disk starts a new data generation, a resync or verify that the
//!    states ended is dropped.
//!
//! A change is *soft* when someone asked for it (an admin command, a peer's report), and *hard*
//! when it records a fact (a lost link, a failed disk, a decided handshake): hard changes skip
//! the soft rules, as in DRBD.

use super::Engine;
use crate::repl::state::{ConnState, DiskState, ReplState, Role, StateError};
use crate::repl::state_rules::{self, Context, PeerContext, PeerView, Transition, View};
use crate::types::NodeId;
use std::fmt::Write as _;

/// This node's own states.
#[derive(Debug)]
pub(super) struct NodeStates {
    role: Role,
    disk: DiskState,
    susp_fen: bool,
    susp_user: bool,
    /// `suspended:quorum`: derived from `quorum` and `on-no-quorum suspend-io` at every change.
    susp_quorum: bool,
    /// Quorum as enforced (always yes with `quorum off`).
    quorum: bool,
}

impl NodeStates {
    /// `quorum`: whether quorum is enforced (a node starts without it, alone).
    pub fn new(enforced: bool) -> NodeStates {
        NodeStates {
            role: Role::Secondary,
            disk: DiskState::Diskless,
            susp_fen: false,
            susp_user: false,
            susp_quorum: false,
            quorum: !enforced,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn disk(&self) -> DiskState {
        self.disk
    }

    /// I/O frozen by `fencing resource-and-stonith` (`susp-io( fencing )`).
    pub fn susp_fen(&self) -> bool {
        self.susp_fen
    }

    /// I/O frozen by `drbdadm suspend-io` (`susp-io( user )`).
    pub fn susp_user(&self) -> bool {
        self.susp_user
    }

    /// I/O frozen for lack of quorum (`susp-io( quorum )`).
    pub fn susp_quorum(&self) -> bool {
        self.susp_quorum
    }

    /// This node has quorum (always with `quorum off`).
    pub fn quorum(&self) -> bool {
        self.quorum
    }

    /// New application requests wait (queued, not failed).
    pub fn io_frozen(&self) -> bool {
        self.susp_fen || self.susp_user || self.susp_quorum
    }
}

/// What this node holds about one peer's states.
#[derive(Debug)]
pub(super) struct PeerStates {
    conn: ConnState,
    role: Role,
    disk: DiskState,
    repl: ReplState,
}

impl PeerStates {
    pub fn new() -> PeerStates {
        PeerStates {
            conn: ConnState::StandAlone,
            role: Role::Unknown,
            disk: DiskState::DUnknown,
            repl: ReplState::Off,
        }
    }

    pub fn conn(&self) -> ConnState {
        self.conn
    }

    /// The peer's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's disk.
    pub fn disk(&self) -> DiskState {
        self.disk
    }

    pub fn repl(&self) -> ReplState {
        self.repl
    }
}

/// A proposed change of some states; what it does not name stays as it is.
#[derive(Clone, Debug)]
#[must_use = "a change does nothing until it is handed to Engine::change"]
pub(super) struct Change {
    /// What DRBD prints after the change in brackets (`[primary]`, `[connected]`).
    tag: &'static str,
    hard: bool,
    /// `primary --force` (see [`Context::force`]).
    force: bool,
    role: Option<Role>,
    disk: Option<DiskState>,
    susp_fen: Option<bool>,
    susp_user: Option<bool>,
    /// `primary --force` without quorum: unreachable peers not known to be anything are taken
    /// as Outdated (DRBD's `CS_FP_OUTDATE_PEERS`), which lets this node count without them.
    outdate_unreachable: bool,
    peers: Vec<(NodeId, PeerChange)>,
}

#[derive(Clone, Copy, Debug, Default)]
struct PeerChange {
    conn: Option<ConnState>,
    role: Option<Role>,
    disk: Option<DiskState>,
    repl: Option<ReplState>,
}

impl Change {
    /// A change someone asked for: every rule applies.
    pub fn soft(tag: &'static str) -> Change {
        Change {
            tag,
            hard: false,
            force: false,
            role: None,
            disk: None,
            susp_fen: None,
            susp_user: None,
            outdate_unreachable: false,
            peers: Vec::new(),
        }
    }

    /// A change that records a fact: only the hard rules apply.
    pub fn hard(tag: &'static str) -> Change {
        Change {
            hard: true,
            ..Change::soft(tag)
        }
    }

    pub fn force(mut self) -> Change {
        self.force = true;
        self
    }

    pub fn role(mut self, role: Role) -> Change {
        self.role = Some(role);
        self
    }

    pub fn disk(mut self, disk: DiskState) -> Change {
        self.disk = Some(disk);
        self
    }

    pub fn susp_fen(mut self, on: bool) -> Change {
        self.susp_fen = Some(on);
        self
    }

    pub fn susp_user(mut self, on: bool) -> Change {
        self.susp_user = Some(on);
        self
    }

    pub fn outdate_unreachable(mut self) -> Change {
        self.outdate_unreachable = true;
        self
    }

    fn peer(&mut self, node: NodeId) -> &mut PeerChange {
        let at = match self.peers.iter().position(|(n, _)| *n == node) {
            Some(i) => i,
            None => {
                self.peers.push((node, PeerChange::default()));
                self.peers.len() - 1
            }
        };
        &mut self.peers[at].1
    }

    pub fn conn(mut self, node: NodeId, conn: ConnState) -> Change {
        self.peer(node).conn = Some(conn);
        self
    }

    pub fn peer_role(mut self, node: NodeId, role: Role) -> Change {
        self.peer(node).role = Some(role);
        self
    }

    pub fn pdsk(mut self, node: NodeId, disk: DiskState) -> Change {
        self.peer(node).disk = Some(disk);
        self
    }

    pub fn repl(mut self, node: NodeId, repl: ReplState) -> Change {
        self.peer(node).repl = Some(repl);
        self
    }
}

impl Engine {
    /// The states as the rules see them, peers in node-id order.
    pub(super) fn view(&self) -> View {
        View {
            role: self.st.role,
            disk: self.st.disk,
            susp_fen: self.st.susp_fen,
            susp_user: self.st.susp_user,
            susp_quorum: self.st.susp_quorum,
            quorum: self.st.quorum,
            peers: self
                .peers
                .iter()
                .map(|(n, p)| PeerView {
                    node: *n,
                    conn: p.st.conn,
                    role: p.st.role,
                    disk: p.st.disk,
                    repl: p.st.repl,
                })
                .collect(),
        }
    }

    fn rule_context(&self, force: bool) -> Context {
        Context {
            open_count: self.open_count,
            in_handshake: self.handshaking(),
            force,
            peers: self
                .peers
                .values()
                .map(|p| PeerContext {
                    two_primaries: p.info.two_primaries,
                    fencing: p.info.fencing != crate::config::Fencing::DontCare,
                    verify_alg: p.info.verify_alg.is_some(),
                })
                .collect(),
        }
    }

    /// What `c` would make of the states: the old and the new view (sanitized), or None when
    /// nothing would change.
    fn plan(&self, c: &Change) -> (View, View) {
        let old = self.view();
        let mut new = old.clone();
        if let Some(r) = c.role {
            new.role = r;
        }
        if let Some(d) = c.disk {
            new.disk = d;
        }
        if let Some(s) = c.susp_fen {
            new.susp_fen = s;
        }
        if let Some(s) = c.susp_user {
            new.susp_user = s;
        }
        for (node, pc) in &c.peers {
            let Some(p) = new.peers.iter_mut().find(|p| p.node == *node) else {
                continue; // not a configured peer
            };
            p.conn = pc.conn.unwrap_or(p.conn);
            p.role = pc.role.unwrap_or(p.role);
            p.disk = pc.disk.unwrap_or(p.disk);
            p.repl = pc.repl.unwrap_or(p.repl);
        }
        if c.outdate_unreachable {
            for p in new.peers.iter_mut() {
                if p.repl == ReplState::Off && p.disk == DiskState::DUnknown {
                    p.disk = DiskState::Outdated;
                }
            }
        }
        state_rules::sanitize(&old, &mut new);
        // Quorum follows from the other states (DRBD computes it in `sanitize_state()`), so
        // a change that loses it is checked, logged and acted on with it.
        let verdict = self.quorum_verdict(&new);
        new.quorum = verdict.have || !self.quorum_enforced();
        new.susp_quorum =
            !new.quorum && self.cfg.quorum.on_no_quorum == crate::config::OnNoData::SuspendIo;
        (old, new)
    }

    /// Whether `c` would be allowed now, without making it (the first phase of a cluster-wide
    /// change).
    pub(super) fn validate(&self, c: &Change) -> Result<(), StateError> {
        let (old, new) = self.plan(c);
        if new == old {
            return Ok(());
        }
        let ctx = self.rule_context(c.force);
        let t = Transition {
            old: &old,
            new: &new,
            ctx: &ctx,
        };
        state_rules::check(&t, !c.hard).map_err(|(e, _)| e)
    }

    /// Validates and commits `c` (see the module docs); on refusal nothing changes.
    pub(super) fn change(&mut self, c: Change) -> Result<(), StateError> {
        let (old, new) = self.plan(&c);
        if new == old {
            return Ok(());
        }
        let ctx = self.rule_context(c.force);
        let t = Transition {
            old: &old,
            new: &new,
            ctx: &ctx,
        };
        if let Err((e, rule)) = state_rules::check(&t, !c.hard) {
            self.log(format!("State change failed: {e} (rule {})", rule.id));
            if e == StateError::NoQuorum {
                let why = self
                    .quorum_verdict(&new)
                    .explain(new.disk <= DiskState::Attaching);
                self.log(why);
            }
            for line in self.describe(&old, &new, c.tag) {
                self.actions
                    .push_back(super::Action::Log(format!("Failed: {line}")));
            }
            return Err(e);
        }
        self.st.role = new.role;
        self.st.disk = new.disk;
        self.st.susp_fen = new.susp_fen;
        self.st.susp_user = new.susp_user;
        self.st.susp_quorum = new.susp_quorum;
        self.st.quorum = new.quorum;
        for pv in &new.peers {
            if let Some(p) = self.peers.get_mut(&pv.node) {
                p.st.conn = pv.conn;
                p.st.role = pv.role;
                p.st.disk = pv.disk;
                p.st.repl = pv.repl;
            }
        }
        for line in self.describe(&old, &new, c.tag) {
            self.actions.push_back(super::Action::Log(line));
        }
        self.after_state_change(&old, &new);
        Ok(())
    }

    /// A change that records a fact. Only the hard rules can refuse it, and a refusal means
    /// the engine asked for something impossible: it is logged, not acted on.
    pub(super) fn force_change(&mut self, c: Change) {
        debug_assert!(c.hard, "force_change takes a hard change");
        if let Err(e) = self.change(c) {
            self.log(format!("BUG: a recorded fact was refused: {e}"));
        }
    }

    /// The log lines of a change, DRBD's layout: the resource, then each connection, then the
    /// device and each peer device; only objects with a changed field get a line.
    fn describe(&self, old: &View, new: &View, tag: &'static str) -> Vec<String> {
        let res = &self.cfg.resource;
        let mut lines = Vec::new();
        let mut push = |prefix: String, fields: String| {
            if !fields.is_empty() {
                let tag = if tag.is_empty() {
                    String::new()
                } else {
                    format!(" [{tag}]")
                };
                lines.push(format!("{prefix}: {}{tag}", fields.trim_end()));
            }
        };
        let mut f = String::new();
        field(&mut f, "role", old.role, new.role);
        let susp = |v: &View| suspended_str(v.susp_user, v.susp_fen, v.susp_quorum);
        if susp(old) != susp(new) {
            let _ = write!(f, "susp-io( {} -> {} ) ", susp(old), susp(new));
        }
        push(res.to_string(), std::mem::take(&mut f));
        for (o, n) in old.peers.iter().zip(&new.peers) {
            field(&mut f, "conn", o.conn, n.conn);
            field(&mut f, "peer", o.role, n.role);
            push(
                format!("{res} {}", self.peer_name(n.node)),
                std::mem::take(&mut f),
            );
        }
        field(&mut f, "disk", old.disk, new.disk);
        field(&mut f, "quorum", yes_no(old.quorum), yes_no(new.quorum));
        push(format!("{res}/0"), std::mem::take(&mut f));
        for (o, n) in old.peers.iter().zip(&new.peers) {
            field(&mut f, "pdsk", o.disk, n.disk);
            field(&mut f, "repl", o.repl, n.repl);
            push(
                format!("{res}/0 {}", self.peer_name(n.node)),
                std::mem::take(&mut f),
            );
        }
        lines
    }

    /// What follows from a committed change by itself (DRBD's `finish_state_change()` and
    /// `w_after_state_change()`, the parts udrbd has).
    fn after_state_change(&mut self, old: &View, new: &View) {
        let c_forced = self.force_demote;
        let target = |v: &View| {
            v.peers
                .iter()
                .any(|p| matches!(p.repl, ReplState::WFBitMapT | ReplState::SyncTarget))
        };
        if !target(old) && target(new) {
            // Answers held (no quorum, fencing) for writes this disk took while it was cut
            // off: the resync that starts now may bring the peer's older data over them, so
            // they are not acknowledged after all (DRBD's `on-suspended-primary-outdated`
            // fails them the same way).
            let held = self.reqs.take_held();
            if !held.is_empty() {
                self.log(format!(
                    "{} held writes failed: this node becomes a sync target",
                    held.len()
                ));
            }
            for r in held {
                self.answer(r.id, Err(super::IoError::NoData));
            }
        }
        if old.role != Role::Primary && new.role == Role::Primary {
            if self.diskless() {
                self.diskless_promoted();
            } else {
                self.reannounce_generation();
            }
        }
        if old.role == Role::Primary && new.role != Role::Primary {
            self.generation_confirmed();
            // DRBD writes the bitmap out on demotion: a Secondary's AL is not replayed into
            // the bitmaps of peers in its generation after a crash, so what it marked as
            // Primary (writes no peer got) must be on disk now.
            self.flush_bitmap_if_dirty();
        }
        // A peer that became UpToDate in sync with this node while blocks are marked for it.
        let up: Vec<NodeId> = new
            .peers
            .iter()
            .filter(|p| p.disk == DiskState::UpToDate && p.repl == ReplState::Established)
            .filter(|p| {
                old.peers
                    .iter()
                    .any(|o| o.node == p.node && o.disk != DiskState::UpToDate)
            })
            .map(|p| p.node)
            .collect();
        for node in up {
            self.resync_again_if_marked(node);
        }
        let holds = |v: &View| v.susp_fen || v.susp_quorum;
        if holds(old) != holds(new) {
            // A freeze holds the application's answers (a write the lost peer may not have
            // must not be acknowledged before that peer is fenced, or while this node has no
            // quorum) and new requests; lifting it answers the held ones, then admits the
            // frozen ones, in order.
            for r in self.reqs.hold_answers(holds(new)) {
                self.finished(r);
            }
        }
        if old.quorum != new.quorum {
            self.quorum_changed(old, new);
        }
        self.clear_outdated_marks(new);

        if old.role == Role::Primary && new.role != Role::Primary && (holds(old) || c_forced) {
            // `secondary --force` (or any demotion of a Primary whose answers were withheld):
            // they never will be given now (the data may be replaced by a resync from the
            // side that promoted), so every application request still here fails, as DRBD
            // fails the I/O of a forced Secondary.
            self.fail_app_requests("demoted by force or while I/O was suspended");
        }
        let frozen = |v: &View| v.susp_fen || v.susp_user || v.susp_quorum;
        if frozen(old) && !frozen(new) {
            self.thaw();
        }
        for (o, n) in old.peers.iter().zip(&new.peers) {
            let node = n.node;
            // A resync or verify the new states ended (a disk went away, the link went). The
            // normal ends take theirs before they change the states.
            let resyncing = matches!(
                n.repl,
                ReplState::StartingSyncS
                    | ReplState::StartingSyncT
                    | ReplState::WFBitMapS
                    | ReplState::WFBitMapT
                    | ReplState::WFSyncUUID
                    | ReplState::SyncSource
                    | ReplState::SyncTarget
                    | ReplState::PausedSyncS
                    | ReplState::PausedSyncT
            );
            let verifying = matches!(n.repl, ReplState::VerifyS | ReplState::VerifyT);
            let why = if n.repl == ReplState::Off {
                "the link went"
            } else {
                "a disk went away"
            };
            if let Some(p) = self.peers.get_mut(&node)
                && p.rs.is_some()
                && !resyncing
            {
                p.rs = None;
                self.peer_log(
                    node,
                    format!(
                        "resync interrupted ({why}); it continues from the bitmap when both \
                         disks are connected again"
                    ),
                );
            }
            if let Some(p) = self.peers.get_mut(&node)
                && p.ov.is_some()
                && !verifying
            {
                p.ov = None;
                self.peer_log(node, format!("online verify interrupted ({why})"));
            }
            // A peer that failed a write (its disk Failed, or Inconsistent after a NegAck)
            // differs at once: that needs a new generation too, even though its data is still
            // in sight (DRBD's immediate `drbd_uuid_new_current()`).
            let failed = o.disk == DiskState::UpToDate
                && matches!(n.disk, DiskState::Failed | DiskState::Inconsistent)
                && o.repl == ReplState::Established
                && n.repl == ReplState::Established;
            // Only data that was in sight can be lost: a peer remembered Inconsistent while
            // disconnected, and corrected by a handshake, was not.
            let in_sight = o.repl >= ReplState::Established;
            // (A Primary whose disk is being resynced writes through its sync source: the
            // lost peer is behind it all the same, and must not come back as a source.)
            let writes_here = new.disk == DiskState::UpToDate
                || (new.disk == DiskState::Inconsistent && self.up_to_date_peer().is_some());
            if new.role == Role::Primary
                && writes_here
                && in_sight
                && (state_rules::lost_peer_data(o, n) || failed)
            {
                self.lost_peer_data(node, o.disk, n.disk);
            }
            // A diskless Primary's writes no longer reach a peer that got them.
            let got_writes = |p: &state_rules::PeerView| {
                p.repl >= ReplState::Established
                    && p.disk >= DiskState::Inconsistent
                    && p.disk != DiskState::DUnknown
            };
            if new.role == Role::Primary && self.diskless() && got_writes(o) && !got_writes(n) {
                self.diskless_lost_peer();
            }
            // A Primary peer demoted: its weak mask no longer holds.
            if o.role == Role::Primary && n.role == Role::Secondary {
                self.weak_mask_gone(node, true);
            }
            // A Primary's writes reach one peer more, or one less: the others learn it.
            if new.role == Role::Primary && got_writes(o) != got_writes(n) {
                self.announce_generation();
            }
            // An Outdated disk that is no longer weak finds a peer to become UpToDate through
            // (see `weak`): one just settled in sync with this node.
            let settled = |p: &state_rules::PeerView| {
                p.repl == ReplState::Established
                    && matches!(p.disk, DiskState::UpToDate | DiskState::Consistent)
            };
            if new.disk == DiskState::Outdated && settled(n) && !settled(o) {
                self.weakness_changed();
            }
        }
    }
}

/// Appends `name( old -> new ) ` when the value changed.
fn field<T: PartialEq + std::fmt::Display>(out: &mut String, name: &str, old: T, new: T) {
    if old != new {
        let _ = write!(out, "{name}( {old} -> {new} ) ");
    }
}

/// DRBD's `susp_str()` for the reasons udrbd has, in DRBD's order: `no`, or a comma list of
/// `user`, `fencing`, `quorum`.
pub fn suspended_str(user: bool, fencing: bool, quorum: bool) -> String {
    let reasons: Vec<&str> = [(user, "user"), (fencing, "fencing"), (quorum, "quorum")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    if reasons.is_empty() {
        "no".to_string()
    } else {
        reasons.join(",")
    }
}

/// `yes`/`no` as DRBD prints a flag in a state change.
fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
