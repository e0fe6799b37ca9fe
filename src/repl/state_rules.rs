//! DRBD's state-change rules as data, PURE: what a proposed change may not do, and what every
//! change implies. The engine's one state-change path (`engine::states`) runs each proposal
//! through [`sanitize`] and then [`check`] before it commits anything.
//!
//! Modelled on DRBD 9's `drbd_state.c`: `sanitize_state()` first rewrites the NEW state (a
//! lost connection forgets the peer's role, a SyncTarget's disk is Inconsistent, a failed disk
//! ends a resync...), then `is_valid_transition()` ("hard" rules, checked for every change) and
//! `__is_valid_soft_transition()` ("soft" rules, only for changes someone asked for: an admin
//! command, a peer's state report) refuse what must not happen, with DRBD's `SS_*` code. The
//! rules are the ordered table [`RULES`]; the first that matches refuses the change. Rule ids
//! (`H2`, `S13`, ...) follow the reference notes; the `drbd` column quotes the C condition.
//!
//! Left out until their issues: multiple volumes. Read-only openers (the kernel block device)
//! change no state and need no rule: their reads are admitted on a Secondary in
//! `engine::io`. "Access to UpToDate data" is the local disk, or a connected peer's UpToDate disk (reads the local disk lacks,
//! or every read of a Diskless node, are served by that peer; see `engine::diskless`).

use super::state::{ConnState, DiskState, ReplState, Role, StateError};
use crate::types::NodeId;

/// One side of a transition: every state the rules read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub role: Role,
    pub disk: DiskState,
    /// I/O frozen by `fencing resource-and-stonith` (`susp-io( fencing )`).
    pub susp_fen: bool,
    /// I/O frozen by `drbdadm suspend-io` (`susp-io( user )`).
    pub susp_user: bool,
    /// I/O frozen for lack of quorum (`susp-io( quorum )`, `on-no-quorum suspend-io`).
    pub susp_quorum: bool,
    /// Quorum as enforced (always yes with `quorum off`); the engine computes it from the
    /// other states with `crate::repl::quorum`.
    pub quorum: bool,
    pub peers: Vec<PeerView>,
}

/// What this node holds about one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub node: NodeId,
    pub conn: ConnState,
    /// The peer's role (`peer( )`).
    pub role: Role,
    /// The peer's disk (`pdsk( )`).
    pub disk: DiskState,
    pub repl: ReplState,
}

/// Facts the rules read that are not states.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Clients holding the device open.
    pub open_count: u32,
    /// A connect handshake is between its start and its decision.
    pub in_handshake: bool,
    /// `primary --force`: fencing's "peer is not outdated" does not refuse it (DRBD retries
    /// the promotion with `CS_FP_OUTDATE_PEERS`).
    pub force: bool,
    /// Per peer, in [`View::peers`] order.
    pub peers: Vec<PeerContext>,
}

/// Per-peer configuration the rules read.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerContext {
    /// `net { allow-two-primaries yes; }`.
    pub two_primaries: bool,
    /// `fencing resource-only` or `resource-and-stonith`.
    pub fencing: bool,
    /// `net { verify-alg }` is set.
    pub verify_alg: bool,
}

/// A proposed change, after [`sanitize`].
#[derive(Clone, Copy, Debug)]
pub struct Transition<'a> {
    pub old: &'a View,
    pub new: &'a View,
    pub ctx: &'a Context,
}

/// One peer's side of a transition.
#[derive(Clone, Copy, Debug)]
pub struct PeerPair<'a> {
    pub old: &'a PeerView,
    pub new: &'a PeerView,
    pub ctx: &'a PeerContext,
}

/// What a rule looks at.
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)] // function pointers; `Rule`'s Debug names the rule
pub enum Check {
    /// The resource and its device.
    Resource(fn(&Transition) -> bool),
    /// Each peer in turn (a match on any refuses).
    Peer(fn(&Transition, &PeerPair) -> bool),
}

/// One row of the table.
#[derive(Clone, Copy)]
pub struct Rule {
    pub id: &'static str,
    /// Checked only for changes someone asked for (DRBD's soft transitions), not for facts
    /// (a lost link, a failed disk).
    pub soft_only: bool,
    pub check: Check,
    pub refuse: StateError,
    /// The DRBD condition this row follows.
    pub drbd: &'static str,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("id", &self.id)
            .field("refuse", &self.refuse)
            .finish()
    }
}

/// Access to UpToDate data (DRBD's `drbd_data_accessible()`): the local disk, or a connected
/// peer's, whatever the local disk is (see the module docs).
fn accessible(v: &View) -> bool {
    v.disk == DiskState::UpToDate
        || v.peers
            .iter()
            .any(|p| p.disk == DiskState::UpToDate && p.repl >= ReplState::Established)
}

fn sync_source(r: ReplState) -> bool {
    matches!(r, ReplState::SyncSource | ReplState::PausedSyncS)
}

fn sync_target(r: ReplState) -> bool {
    matches!(r, ReplState::SyncTarget | ReplState::PausedSyncT)
}

fn verifying(r: ReplState) -> bool {
    matches!(r, ReplState::VerifyS | ReplState::VerifyT)
}

fn starting_sync(r: ReplState) -> bool {
    matches!(r, ReplState::StartingSyncS | ReplState::StartingSyncT)
}

/// A Primary peer relies on this node: it may not outdate itself (DRBD's
/// `local_disk_may_be_outdated()`, negated).
fn primary_needs_me(t: &Transition) -> bool {
    if t.new.role == Role::Primary {
        return !t
            .new
            .peers
            .iter()
            .any(|p| p.disk == DiskState::UpToDate && p.repl == ReplState::WFBitMapT);
    }
    let Some(_) = t
        .new
        .peers
        .iter()
        .find(|p| p.role == Role::Primary && p.repl > ReplState::Off)
    else {
        return false; // no Primary neighbour: I might be outdated
    };
    !t.new.peers.iter().any(|p| {
        matches!(
            p.repl,
            ReplState::WFSyncUUID
                | ReplState::WFBitMapT
                | ReplState::StartingSyncT
                | ReplState::SyncTarget
                | ReplState::PausedSyncT
                | ReplState::Behind
        )
    })
}

use Check::{Peer, Resource};
use ConnState as C;
use DiskState as D;
use ReplState as L;

/// The rules, in DRBD's order: `is_valid_transition()` (hard) first, then
/// `__is_valid_soft_transition()` (resource, connection, device, peer device).
pub static RULES: &[Rule] = &[
    Rule {
        id: "H2",
        soft_only: false,
        check: Peer(|_, p| p.old.conn == C::StandAlone && p.new.conn == C::Disconnecting),
        refuse: StateError::AlreadyStandalone,
        drbd: "oc == C_STANDALONE && nc == C_DISCONNECTING",
    },
    Rule {
        id: "H3",
        soft_only: false,
        check: Peer(|_, p| {
            p.old.conn == C::StandAlone
                && p.new.conn != C::StandAlone
                && p.new.conn != C::Unconnected
        }),
        refuse: StateError::NeedConnection,
        drbd: "oc == C_STANDALONE && nc != C_UNCONNECTED",
    },
    Rule {
        id: "H4",
        soft_only: false,
        check: Peer(|_, p| {
            p.old.conn != p.new.conn
                && p.old.conn >= C::Timeout
                && p.old.conn <= C::TearDown
                && p.new.conn != C::Unconnected
                && p.new.conn != C::Disconnecting
        }),
        refuse: StateError::InTransientState,
        drbd: "oc >= C_TIMEOUT && oc <= C_TEAR_DOWN && nc != C_UNCONNECTED && nc != C_DISCONNECTING",
    },
    Rule {
        id: "H5",
        soft_only: false,
        check: Peer(|_, p| {
            p.old.conn == C::Disconnecting
                && p.new.conn != C::Disconnecting
                && p.new.conn != C::StandAlone
        }),
        refuse: StateError::InTransientState,
        drbd: "oc == C_DISCONNECTING && nc != C_STANDALONE",
    },
    Rule {
        id: "H6",
        soft_only: false,
        check: Resource(|t| {
            matches!(t.new.disk, D::Failed | D::Detaching) && t.old.disk == D::Diskless
        }),
        refuse: StateError::DeviceDiskless,
        drbd: "(disk[NEW] == D_FAILED || disk[NEW] == D_DETACHING) && disk[OLD] == D_DISKLESS",
    },
    Rule {
        id: "S1",
        soft_only: true,
        check: Peer(|t, p| {
            t.old.role != Role::Primary
                && t.new.role == Role::Primary
                && !p.ctx.two_primaries
                && p.new.role == Role::Primary
        }),
        refuse: StateError::TwoPrimaries,
        drbd: "role[OLD] != R_PRIMARY && role[NEW] == R_PRIMARY && !nc->two_primaries && \
               peer_role[NEW] == R_PRIMARY",
    },
    Rule {
        id: "S2",
        soft_only: true,
        check: Resource(|t| {
            t.ctx.in_handshake && t.old.role != Role::Primary && t.new.role == Role::Primary
        }),
        refuse: StateError::InTransientState,
        drbd: "in_handshake && role[OLD] != R_PRIMARY && role[NEW] == R_PRIMARY",
    },
    Rule {
        id: "S6",
        soft_only: true,
        check: Peer(|_, p| p.new.conn == C::Disconnecting && p.old.conn == C::Unconnected),
        refuse: StateError::InTransientState,
        drbd: "cstate[NEW] == C_DISCONNECTING && cstate[OLD] == C_UNCONNECTED",
    },
    Rule {
        id: "S7",
        soft_only: true,
        check: Peer(|t, p| {
            p.new.role == Role::Primary
                && p.old.role != Role::Primary
                && !p.ctx.two_primaries
                && t.new.role == Role::Primary
        }),
        refuse: StateError::TwoPrimaries,
        drbd: "peer_role[NEW] == R_PRIMARY && peer_role[OLD] != R_PRIMARY && !two_primaries && \
               role[NOW] == R_PRIMARY",
    },
    Rule {
        id: "S10",
        soft_only: true,
        check: Resource(|t| {
            t.old.role == Role::Primary
                && t.new.role == Role::Secondary
                && t.ctx.open_count > 0
                && !t.ctx.force
        }),
        refuse: StateError::DeviceInUse,
        drbd: "role[OLD] == R_PRIMARY && role[NEW] == R_SECONDARY && device->writable \
               (udrbd: not under secondary --force)",
    },
    Rule {
        id: "S11",
        soft_only: true,
        check: Resource(|t| t.new.disk > D::Attaching && t.old.disk == D::Diskless),
        refuse: StateError::DeviceDiskless,
        drbd: "disk[NEW] > D_ATTACHING && disk[OLD] == D_DISKLESS",
    },
    Rule {
        id: "S12",
        soft_only: true,
        check: Resource(|t| {
            t.new.disk == D::Outdated
                && t.old.disk < D::Outdated
                && !matches!(t.old.disk, D::Attaching | D::Negotiating)
                && !t
                    .old
                    .peers
                    .iter()
                    .zip(&t.new.peers)
                    .any(|(o, n)| o.repl == L::SyncTarget && n.repl == L::Established)
        }),
        refuse: StateError::LowerThanOutdated,
        drbd: "disk[NEW] == D_OUTDATED && disk[OLD] < D_OUTDATED && disk[OLD] != D_ATTACHING && \
               disk[OLD] != D_NEGOTIATING, unless a resync ends in the same change",
    },
    Rule {
        id: "S13",
        soft_only: true,
        check: Resource(|t| {
            let primary_without_data = |v: &View| v.role == Role::Primary && !accessible(v);
            !primary_without_data(t.old) && primary_without_data(t.new)
        }),
        refuse: StateError::NoUpToDateDisk,
        drbd: "!(role[OLD] == R_PRIMARY && !acc[OLD]) && (role[NEW] == R_PRIMARY && !acc[NEW])",
    },
    Rule {
        id: "S13q",
        soft_only: true,
        check: Resource(|t| {
            (t.old.role == Role::Secondary || t.old.quorum)
                && t.new.role == Role::Primary
                && !t.new.quorum
        }),
        refuse: StateError::NoQuorum,
        drbd: "(role[OLD] == R_SECONDARY || have_quorum[OLD]) && role[NEW] == R_PRIMARY && \
               !have_quorum[NEW]",
    },
    Rule {
        id: "S17",
        soft_only: true,
        check: Peer(|t, p| {
            let exposed = |role: Role, q: &PeerView| {
                role == Role::Primary && q.repl < L::Established && q.disk > D::Outdated
            };
            p.ctx.fencing
                && !t.ctx.force
                && !exposed(t.old.role, p.old)
                && exposed(t.new.role, p.new)
        }),
        refuse: StateError::PrimaryNop,
        drbd: "fencing >= FP_RESOURCE && !(role[OLD] == R_PRIMARY && repl[OLD] < L_ESTABLISHED && \
               !(pdsk[OLD] <= D_OUTDATED)) && (role[NEW] == R_PRIMARY && repl[NEW] < L_ESTABLISHED \
               && !(pdsk[NEW] <= D_OUTDATED))",
    },
    Rule {
        id: "S18",
        soft_only: true,
        check: Peer(|t, p| {
            let bad = |r: L, d: D| r > L::Established && d < D::Inconsistent;
            !bad(p.old.repl, t.old.disk) && bad(p.new.repl, t.new.disk)
        }),
        refuse: StateError::NoLocalDisk,
        drbd: "!(repl[OLD] > L_ESTABLISHED && disk[OLD] < D_INCONSISTENT) && \
               (repl[NEW] > L_ESTABLISHED && disk[NEW] < D_INCONSISTENT)",
    },
    Rule {
        id: "S19",
        soft_only: true,
        check: Peer(|_, p| {
            let bad = |q: &PeerView| q.repl > L::Established && q.disk < D::Inconsistent;
            !bad(p.old) && bad(p.new)
        }),
        refuse: StateError::NoRemoteDisk,
        drbd: "!(repl[OLD] > L_ESTABLISHED && pdsk[OLD] < D_INCONSISTENT) && \
               (repl[NEW] > L_ESTABLISHED && pdsk[NEW] < D_INCONSISTENT)",
    },
    Rule {
        id: "S20",
        soft_only: true,
        check: Resource(|t| {
            t.old.disk > D::Outdated && t.new.disk == D::Outdated && primary_needs_me(t)
        }),
        refuse: StateError::ConnectedOutdates,
        drbd: "disk[OLD] > D_OUTDATED && disk[NEW] == D_OUTDATED && \
               !local_disk_may_be_outdated(device)",
    },
    Rule {
        id: "S21",
        soft_only: true,
        check: Peer(|_, p| !verifying(p.old.repl) && verifying(p.new.repl) && !p.ctx.verify_alg),
        refuse: StateError::NoVerifyAlg,
        drbd: "repl[NEW] is VerifyS/T (and repl[OLD] not) && !nc->verify_alg[0]",
    },
    Rule {
        id: "S23",
        soft_only: true,
        check: Peer(|_, p| sync_source(p.old.repl) && p.new.repl == L::WFBitMapS),
        refuse: StateError::ResyncRunning,
        drbd: "repl_is_sync_source(repl[OLD]) && repl[NEW] == L_WF_BITMAP_S",
    },
    Rule {
        id: "S24",
        soft_only: true,
        check: Peer(|_, p| sync_target(p.old.repl) && p.new.repl == L::WFBitMapT),
        refuse: StateError::ResyncRunning,
        drbd: "repl_is_sync_target(repl[OLD]) && repl[NEW] == L_WF_BITMAP_T",
    },
    Rule {
        id: "S25",
        soft_only: true,
        check: Peer(|_, p| {
            p.new.repl != p.old.repl && starting_sync(p.new.repl) && p.old.repl > L::Established
        }),
        refuse: StateError::ResyncRunning,
        drbd: "repl[NEW] != repl[OLD] && repl[NEW] is StartingSyncS/T && repl[OLD] > L_ESTABLISHED",
    },
    Rule {
        id: "S26",
        soft_only: true,
        check: Peer(|_, p| verifying(p.new.repl) && p.old.repl < L::Established),
        refuse: StateError::NeedConnection,
        drbd: "repl[NEW] is VerifyS/T && repl[OLD] < L_ESTABLISHED",
    },
    Rule {
        id: "S27",
        soft_only: true,
        check: Peer(|_, p| {
            verifying(p.new.repl) && p.new.repl != p.old.repl && p.old.repl > L::Established
        }),
        refuse: StateError::ResyncRunning,
        drbd: "repl[NEW] is VerifyS/T && repl[NEW] != repl[OLD] && repl[OLD] > L_ESTABLISHED",
    },
    Rule {
        id: "S28",
        soft_only: true,
        check: Peer(|_, p| starting_sync(p.new.repl) && p.old.repl < L::Established),
        refuse: StateError::NeedConnection,
        drbd: "repl[NEW] is StartingSyncS/T && repl[OLD] < L_ESTABLISHED",
    },
    Rule {
        id: "S29",
        soft_only: true,
        check: Peer(|_, p| {
            matches!(p.new.repl, L::SyncTarget | L::SyncSource) && p.old.conn < C::Connected
        }),
        refuse: StateError::NeedConnection,
        drbd: "(repl[NEW] == L_SYNC_TARGET || repl[NEW] == L_SYNC_SOURCE) && repl[OLD] < L_OFF",
    },
];

/// Checks a sanitized transition against [`RULES`]; `soft` for a change someone asked for.
/// The refusal names the first rule that matched.
pub fn check(t: &Transition, soft: bool) -> Result<(), (StateError, &'static Rule)> {
    for rule in RULES {
        if rule.soft_only && !soft {
            continue;
        }
        let hit = match rule.check {
            Resource(f) => f(t),
            Peer(f) => t
                .old
                .peers
                .iter()
                .zip(&t.new.peers)
                .zip(&t.ctx.peers)
                .any(|((old, new), ctx)| f(t, &PeerPair { old, new, ctx })),
        };
        if hit {
            return Err((rule.refuse, rule));
        }
    }
    Ok(())
}

/// The disk states a replication state allows, this node's and the peer's (DRBD's
/// `sanitize_state()` clamp): `(disk min, disk max, pdsk min, pdsk max)`.
fn clamp_for(repl: ReplState) -> (D, D, D, D) {
    match repl {
        L::Off => (D::Diskless, D::UpToDate, D::Inconsistent, D::DUnknown),
        L::WFBitMapT | L::StartingSyncT | L::WFSyncUUID | L::Behind => {
            (D::Inconsistent, D::Outdated, D::Inconsistent, D::UpToDate)
        }
        L::VerifyS | L::VerifyT => (D::Inconsistent, D::UpToDate, D::Inconsistent, D::UpToDate),
        L::Established => (D::Diskless, D::UpToDate, D::Diskless, D::UpToDate),
        L::WFBitMapS | L::PausedSyncS | L::StartingSyncS | L::Ahead => {
            (D::Inconsistent, D::UpToDate, D::Inconsistent, D::Consistent)
        }
        L::PausedSyncT | L::SyncTarget => (
            D::Inconsistent,
            D::Inconsistent,
            D::Inconsistent,
            D::UpToDate,
        ),
        L::SyncSource => (
            D::Inconsistent,
            D::UpToDate,
            D::Inconsistent,
            D::Inconsistent,
        ),
    }
}

/// What every change implies (DRBD's `sanitize_state()`, the parts udrbd has states for):
///
/// - D1: a Diskless disk that is told to detach stays Diskless.
/// - N1: a peer that is not connected has no known role.
/// - P1: without replication a peer's disk is only known when it cannot hold newer data
///   (Inconsistent, Outdated); otherwise it is DUnknown.
/// - P4: a resync or verify ends when either disk goes away.
/// - B5: a replication state bounds both disk states (a SyncTarget is Inconsistent, a
///   SyncSource's peer is Inconsistent, WFBitMapT cannot be UpToDate...).
/// - B6: a Diskless peer does not fail again.
pub fn sanitize(old: &View, new: &mut View) {
    if old.disk == D::Diskless && new.disk == D::Detaching {
        new.disk = D::Diskless;
    }
    for (o, p) in old.peers.iter().zip(new.peers.iter_mut()) {
        if p.conn < C::Connected {
            p.role = Role::Unknown;
            p.repl = L::Off;
        }
        if p.repl < L::Established && (p.disk > D::DUnknown || p.disk < D::Inconsistent) {
            p.disk = D::DUnknown;
        }
        if p.repl > L::Established && (new.disk <= D::Failed || p.disk <= D::Failed) {
            p.repl = L::Established;
        }
        let (dmin, dmax, pmin, pmax) = clamp_for(p.repl);
        // The local disk is clamped only while it exists: attaching and detaching disks are
        // handled by their own changes.
        if new.disk > D::Failed {
            new.disk = new.disk.clamp(dmin, dmax);
        }
        if p.repl != L::Off {
            p.disk = p.disk.clamp(pmin, pmax);
        }
        if o.disk == D::Diskless && matches!(p.disk, D::Failed | D::Detaching) {
            p.disk = D::Diskless;
        }
    }
}

/// The peers whose disk this node just lost sight of as a Primary: their writes go into the
/// bitmap from now on, so a new data generation is due (DRBD's `lost_contact_to_peer_data()`).
pub fn lost_peer_data(old: &PeerView, new: &PeerView) -> bool {
    let had = old.disk >= D::Inconsistent && old.disk != D::DUnknown && old.disk != D::Outdated;
    let lost = new.disk < D::Inconsistent || new.disk == D::DUnknown || new.disk == D::Outdated;
    had && lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(conn: ConnState, role: Role, disk: DiskState, repl: ReplState) -> PeerView {
        PeerView {
            node: NodeId(1),
            conn,
            role,
            disk,
            repl,
        }
    }

    fn view(role: Role, disk: DiskState, p: PeerView) -> View {
        View {
            role,
            disk,
            susp_fen: false,
            susp_user: false,
            susp_quorum: false,
            quorum: true,
            peers: vec![p],
        }
    }

    fn ctx() -> Context {
        Context {
            peers: vec![PeerContext::default()],
            ..Context::default()
        }
    }

    fn try_change(old: &View, new: &View, ctx: &Context) -> Result<View, StateError> {
        let mut new = new.clone();
        sanitize(old, &mut new);
        check(
            &Transition {
                old,
                new: &new,
                ctx,
            },
            true,
        )
        .map_err(|(e, _)| e)?;
        Ok(new)
    }

    fn connected(role: Role, disk: DiskState) -> PeerView {
        peer(ConnState::Connected, role, disk, ReplState::Established)
    }

    #[test]
    fn promotion_needs_uptodate_data_and_no_primary_peer() {
        let old = view(
            Role::Secondary,
            D::UpToDate,
            connected(Role::Primary, D::UpToDate),
        );
        let new = View {
            role: Role::Primary,
            ..old.clone()
        };
        assert_eq!(
            try_change(&old, &new, &ctx()),
            Err(StateError::TwoPrimaries)
        );
        let mut c = ctx();
        c.peers[0].two_primaries = true;
        assert!(try_change(&old, &new, &c).is_ok());

        let old = view(
            Role::Secondary,
            D::Consistent,
            connected(Role::Secondary, D::Outdated),
        );
        let new = View {
            role: Role::Primary,
            ..old.clone()
        };
        assert_eq!(
            try_change(&old, &new, &ctx()),
            Err(StateError::NoUpToDateDisk)
        );
    }

    #[test]
    fn a_node_with_a_disk_reaches_uptodate_data_through_its_peer() {
        // DRBD 9 promotes a SyncTarget: what its disk lacks, the UpToDate peer serves.
        let old = view(
            Role::Secondary,
            D::Inconsistent,
            peer(
                ConnState::Connected,
                Role::Secondary,
                D::UpToDate,
                ReplState::SyncTarget,
            ),
        );
        let new = View {
            role: Role::Primary,
            ..old.clone()
        };
        assert!(try_change(&old, &new, &ctx()).is_ok());
        // Without a disk of its own too (a Diskless Primary reads and writes through it)...
        let diskless = View {
            disk: D::Diskless,
            ..old.clone()
        };
        let new = View {
            role: Role::Primary,
            ..diskless.clone()
        };
        assert!(try_change(&diskless, &new, &ctx()).is_ok());
        // ...and not once the peer has gone.
        let gone = view(
            Role::Secondary,
            D::Inconsistent,
            peer(
                ConnState::Connecting,
                Role::Unknown,
                D::DUnknown,
                ReplState::Off,
            ),
        );
        let new = View {
            role: Role::Primary,
            ..gone.clone()
        };
        assert_eq!(
            try_change(&gone, &new, &ctx()),
            Err(StateError::NoUpToDateDisk)
        );
    }

    #[test]
    fn demotion_while_open_is_refused() {
        let old = view(
            Role::Primary,
            D::UpToDate,
            connected(Role::Secondary, D::UpToDate),
        );
        let new = View {
            role: Role::Secondary,
            ..old.clone()
        };
        let mut c = ctx();
        c.open_count = 1;
        assert_eq!(try_change(&old, &new, &c), Err(StateError::DeviceInUse));
        assert!(try_change(&old, &new, &ctx()).is_ok());
    }

    #[test]
    fn fencing_refuses_a_primary_next_to_an_unknown_peer_unless_forced() {
        let gone = peer(
            ConnState::Connecting,
            Role::Unknown,
            D::DUnknown,
            ReplState::Off,
        );
        let old = view(Role::Secondary, D::UpToDate, gone);
        let new = View {
            role: Role::Primary,
            ..old.clone()
        };
        let mut c = ctx();
        c.peers[0].fencing = true;
        assert_eq!(try_change(&old, &new, &c), Err(StateError::PrimaryNop));
        c.force = true;
        assert!(try_change(&old, &new, &c).is_ok());
        // An Outdated peer cannot have newer data.
        let old = view(
            Role::Secondary,
            D::UpToDate,
            peer(
                ConnState::Connecting,
                Role::Unknown,
                D::Outdated,
                ReplState::Off,
            ),
        );
        let new = View {
            role: Role::Primary,
            ..old.clone()
        };
        c.force = false;
        assert!(try_change(&old, &new, &c).is_ok());
    }

    #[test]
    fn sanitize_forgets_what_a_lost_link_cannot_tell() {
        let old = view(
            Role::Primary,
            D::UpToDate,
            connected(Role::Secondary, D::UpToDate),
        );
        let mut new = old.clone();
        new.peers[0].conn = ConnState::Connecting;
        sanitize(&old, &mut new);
        let p = new.peers[0];
        assert_eq!(
            (p.role, p.disk, p.repl),
            (Role::Unknown, D::DUnknown, ReplState::Off)
        );
        // An Outdated peer stays known Outdated.
        let mut new = old.clone();
        new.peers[0].conn = ConnState::Connecting;
        new.peers[0].disk = D::Outdated;
        sanitize(&old, &mut new);
        assert_eq!(new.peers[0].disk, D::Outdated);
    }

    #[test]
    fn sanitize_clamps_disks_to_the_replication_state() {
        let old = view(
            Role::Secondary,
            D::UpToDate,
            connected(Role::Primary, D::UpToDate),
        );
        let mut new = old.clone();
        new.peers[0].repl = ReplState::SyncTarget;
        sanitize(&old, &mut new);
        assert_eq!(new.disk, D::Inconsistent);
        let mut new = old.clone();
        new.peers[0].repl = ReplState::SyncSource;
        sanitize(&old, &mut new);
        assert_eq!(new.peers[0].disk, D::Inconsistent);
        // A failed disk ends the resync.
        let old = view(
            Role::Secondary,
            D::Inconsistent,
            peer(
                ConnState::Connected,
                Role::Primary,
                D::UpToDate,
                ReplState::SyncTarget,
            ),
        );
        let mut new = old.clone();
        new.disk = D::Failed;
        sanitize(&old, &mut new);
        assert_eq!(new.peers[0].repl, ReplState::Established);
    }

    #[test]
    fn resync_and_verify_need_both_disks_and_no_other_run() {
        let old = view(
            Role::Secondary,
            D::UpToDate,
            connected(Role::Secondary, D::Diskless),
        );
        let mut new = old.clone();
        new.peers[0].repl = ReplState::VerifyS;
        let mut c = ctx();
        c.peers[0].verify_alg = true;
        // Sanitize ends a run toward a missing disk before the rules see it (P4): nothing
        // changes.
        assert_eq!(try_change(&old, &new, &c), Ok(old.clone()));
        let old = view(
            Role::Secondary,
            D::Diskless,
            connected(Role::Secondary, D::UpToDate),
        );
        let mut new = old.clone();
        new.peers[0].repl = ReplState::VerifyS;
        new.disk = D::Inconsistent;
        assert_eq!(try_change(&old, &new, &c), Err(StateError::DeviceDiskless));
        let old = view(
            Role::Secondary,
            D::UpToDate,
            peer(
                ConnState::Connected,
                Role::Secondary,
                D::Inconsistent,
                ReplState::SyncSource,
            ),
        );
        let mut new = old.clone();
        new.peers[0].repl = ReplState::VerifyS;
        assert_eq!(try_change(&old, &new, &c), Err(StateError::ResyncRunning));
        let old = view(
            Role::Secondary,
            D::UpToDate,
            connected(Role::Secondary, D::UpToDate),
        );
        let mut new = old.clone();
        new.peers[0].repl = ReplState::VerifyS;
        assert_eq!(try_change(&old, &new, &ctx()), Err(StateError::NoVerifyAlg));
        assert!(try_change(&old, &new, &c).is_ok());
    }

    #[test]
    fn a_disk_comes_back_through_attaching_and_outdates_only_from_consistent() {
        let p = peer(
            ConnState::StandAlone,
            Role::Unknown,
            D::DUnknown,
            ReplState::Off,
        );
        let old = view(Role::Secondary, D::Diskless, p);
        let new = view(Role::Secondary, D::UpToDate, p);
        assert_eq!(
            try_change(&old, &new, &ctx()),
            Err(StateError::DeviceDiskless)
        );
        let new = view(Role::Secondary, D::Attaching, p);
        assert!(try_change(&old, &new, &ctx()).is_ok());
        let old = view(Role::Secondary, D::Inconsistent, p);
        let new = view(Role::Secondary, D::Outdated, p);
        assert_eq!(
            try_change(&old, &new, &ctx()),
            Err(StateError::LowerThanOutdated)
        );
    }

    #[test]
    fn outdating_is_refused_only_when_a_primary_relies_on_this_node() {
        let old = view(
            Role::Secondary,
            D::UpToDate,
            connected(Role::Primary, D::UpToDate),
        );
        let new = View {
            disk: D::Outdated,
            ..old.clone()
        };
        assert_eq!(
            try_change(&old, &new, &ctx()),
            Err(StateError::ConnectedOutdates)
        );
        let old = view(
            Role::Secondary,
            D::UpToDate,
            connected(Role::Secondary, D::UpToDate),
        );
        let new = View {
            disk: D::Outdated,
            ..old.clone()
        };
        assert!(try_change(&old, &new, &ctx()).is_ok());
    }

    #[test]
    fn hard_changes_skip_the_soft_rules() {
        // (With an UpToDate peer the Primary would keep access to UpToDate data.)
        let old = view(
            Role::Primary,
            D::UpToDate,
            connected(Role::Secondary, D::Outdated),
        );
        let new = View {
            disk: D::Failed,
            ..old.clone()
        };
        let t = Transition {
            old: &old,
            new: &new,
            ctx: &ctx(),
        };
        assert!(check(&t, true).is_err(), "a Primary losing its data");
        assert!(check(&t, false).is_ok(), "but a failing disk is a fact");
    }

    #[test]
    fn no_promotion_without_quorum_and_a_primary_keeps_the_fact() {
        let peer = connected(Role::Secondary, D::UpToDate);
        let old = View {
            quorum: false,
            ..view(Role::Secondary, D::UpToDate, peer)
        };
        let new = View {
            role: Role::Primary,
            ..old.clone()
        };
        assert_eq!(try_change(&old, &new, &ctx()), Err(StateError::NoQuorum));
        let with = View {
            quorum: true,
            ..new.clone()
        };
        let old_with = View {
            quorum: true,
            ..old.clone()
        };
        assert!(try_change(&old_with, &with, &ctx()).is_ok());
        // A Primary that has lost quorum already may change other things (its state is a
        // fact): only the loss itself is refused to a soft change.
        let primary_without = View {
            role: Role::Primary,
            quorum: false,
            ..old.clone()
        };
        let detached_peer = View {
            peers: vec![connected(Role::Secondary, D::Outdated)],
            ..primary_without.clone()
        };
        assert!(try_change(&primary_without, &detached_peer, &ctx()).is_ok());
        let primary_with = View {
            quorum: true,
            ..primary_without.clone()
        };
        assert_eq!(
            try_change(&primary_with, &primary_without, &ctx()),
            Err(StateError::NoQuorum)
        );
    }

    #[test]
    fn every_rule_has_an_id_and_a_source() {
        for r in RULES {
            assert!(!r.id.is_empty() && !r.drbd.is_empty(), "{r:?}");
        }
    }
}
