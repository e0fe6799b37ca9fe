//! Fencing in the engine: fence-peer's exit codes as DRBD reads them, the resource-and-stonith
//! freeze (queued, never failed), promotion while disconnected, and `outdate` persisted.

use super::handler::Handler;
use super::tests::{admin_result, attached, cfg, drain, peer_handshake, settle, write};
use super::*;
use crate::config::Fencing;
use crate::meta::superblock::{Superblock, flags, peer_flags};
use crate::types::{NodeId, ReqId, Time};

const PEER: NodeId = NodeId(1);

fn engine(policy: Fencing, a: Attached) -> Engine {
    let mut c = cfg(true);
    c.peers[0].fencing = policy;
    let mut e = Engine::new(c);
    e.handle(Time::default(), Input::Attach(Box::new(a)));
    settle(&mut e);
    e
}

fn admin(e: &mut Engine, token: u64, cmd: AdminCmd) -> Vec<Action> {
    e.handle(Time::default(), Input::Admin { token, cmd });
    settle(e)
}

/// UpToDate, connected in sync with an UpToDate peer, Primary.
fn connected_primary(policy: Fencing) -> Engine {
    let mut e = engine(
        policy,
        attached(flags::CONSISTENT | flags::WAS_UP_TO_DATE, 0),
    );
    admin(&mut e, 1, AdminCmd::NewCurrentUuid { clear_bitmap: true });
    e.handle(
        Time::default(),
        Input::PeerUp {
            node: PEER,
            protocol: crate::config::Protocol::C,
        },
    );
    peer_handshake(&mut e);
    let acts = settle(&mut e);
    assert_eq!(
        fence_calls(&acts, Handler::UnfencePeer),
        usize::from(policy != Fencing::DontCare),
        "both UpToDate: unfence-peer is due under fencing: {acts:?}"
    );
    let acts = admin(&mut e, 2, AdminCmd::Primary { force: false });
    assert_eq!(admin_result(&acts, 2), Some(Ok(())));
    e
}

fn fence_calls(acts: &[Action], which: Handler) -> usize {
    acts.iter()
        .filter(
            |a| matches!(a, Action::RunHandler { handler, node: Some(PEER) } if *handler == which),
        )
        .count()
}

fn logged(acts: &[Action], text: &str) -> bool {
    acts.iter()
        .any(|a| matches!(a, Action::Log(l) if l.contains(text)))
}

fn completed(acts: &[Action], id: ReqId) -> Option<Result<Option<bytes::Bytes>, IoError>> {
    acts.iter().find_map(|a| match a {
        Action::Complete { id: i, result } if *i == id => Some(result.clone()),
        _ => None,
    })
}

fn answer(e: &mut Engine, exit: Option<i32>) -> Vec<Action> {
    e.handle(
        Time::default(),
        Input::HandlerDone {
            handler: Handler::FencePeer,
            node: Some(PEER),
            exit,
        },
    );
    settle(e)
}

fn peer_disk(e: &Engine) -> DiskState {
    e.status().peers[0].disk
}

fn last_sb(acts: &[Action]) -> Option<Superblock> {
    acts.iter().rev().find_map(|a| match a {
        Action::WriteMeta { sb, .. } => Some((**sb).clone()),
        _ => None,
    })
}

/// A write the peer has not acknowledged, then the link goes: returns the actions of the loss.
fn lose_link_with_write_in_flight(e: &mut Engine) -> Vec<Action> {
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(10),
            op: write(0, 4096),
        },
    );
    let acts = settle(e);
    assert!(completed(&acts, ReqId(10)).is_none(), "waits for the peer");
    e.handle(
        Time::default(),
        Input::PeerDown {
            node: PEER,
            standalone: false,
        },
    );
    settle(e)
}

#[test]
fn stonith_freezes_io_from_the_link_loss_until_fence_peer_answers() {
    let mut e = connected_primary(Fencing::ResourceAndStonith);
    let acts = lose_link_with_write_in_flight(&mut e);
    assert_eq!(fence_calls(&acts, Handler::FencePeer), 1);
    assert!(logged(&acts, "susp-io( no -> fencing )"));
    assert!(
        completed(&acts, ReqId(10)).is_none(),
        "not acknowledged before the peer is fenced"
    );
    assert!(e.status().suspended_fencing);
    // A new write is queued, not failed.
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(11),
            op: write(8192, 4096),
        },
    );
    let acts = settle(&mut e);
    assert!(completed(&acts, ReqId(11)).is_none());
    assert!(!e.is_quiet());

    let acts = answer(&mut e, Some(4));
    assert!(logged(
        &acts,
        "fence-peer helper returned 4 (peer was fenced)"
    ));
    assert!(logged(&acts, "susp-io( fencing -> no )"));
    assert_eq!(completed(&acts, ReqId(10)), Some(Ok(None)));
    assert_eq!(completed(&acts, ReqId(11)), Some(Ok(None)));
    assert_eq!(peer_disk(&e), DiskState::Outdated);
    let sb = last_sb(&acts).expect("the fenced peer is persisted");
    assert!(
        sb.peer(PEER)
            .is_some_and(|p| p.flags & peer_flags::OUTDATED != 0)
    );
    assert!(!e.status().suspended_fencing);
    assert!(e.is_quiet());
}

#[test]
fn resource_only_fences_but_never_freezes() {
    let mut e = connected_primary(Fencing::ResourceOnly);
    let acts = lose_link_with_write_in_flight(&mut e);
    assert_eq!(fence_calls(&acts, Handler::FencePeer), 1);
    assert_eq!(completed(&acts, ReqId(10)), Some(Ok(None)));
    assert!(!e.status().suspended_fencing);
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(11),
            op: write(8192, 4096),
        },
    );
    assert_eq!(completed(&settle(&mut e), ReqId(11)), Some(Ok(None)));
    answer(&mut e, Some(4));
    assert_eq!(peer_disk(&e), DiskState::Outdated);
}

#[test]
fn dont_care_never_calls_fence_peer() {
    let mut e = connected_primary(Fencing::DontCare);
    let acts = lose_link_with_write_in_flight(&mut e);
    assert_eq!(fence_calls(&acts, Handler::FencePeer), 0);
    assert_eq!(completed(&acts, ReqId(10)), Some(Ok(None)));
}

#[test]
fn exit_codes_3_5_7_set_the_peer_disk_as_drbd_does() {
    for (policy, code, disk, text) in [
        (
            Fencing::ResourceAndStonith,
            3,
            DiskState::Inconsistent,
            "fence-peer helper returned 3 (peer is inconsistent or worse)",
        ),
        (
            Fencing::ResourceAndStonith,
            5,
            DiskState::Outdated,
            "fence-peer helper returned 5 (peer is unreachable, assumed to be dead)",
        ),
        (
            Fencing::ResourceAndStonith,
            7,
            DiskState::Outdated,
            "fence-peer helper returned 7 (peer was stonithed)",
        ),
        (
            Fencing::ResourceOnly,
            7,
            DiskState::Outdated,
            "fence-peer helper returned 7 (peer was stonithed)",
        ),
    ] {
        let mut e = connected_primary(policy);
        lose_link_with_write_in_flight(&mut e);
        let acts = answer(&mut e, Some(code));
        assert!(logged(&acts, text), "{code}: {acts:?}");
        assert_eq!(peer_disk(&e), disk, "{code}");
        assert_eq!(
            logged(&acts, "fence-peer() = 7 && fencing != Stonith !!!"),
            code == 7 && policy != Fencing::ResourceAndStonith
        );
        assert!(!e.status().suspended_fencing);
        assert!(e.is_quiet(), "{code}: the held write was acknowledged");
    }
}

#[test]
fn exit_code_6_on_a_primary_changes_nothing_and_keeps_the_freeze() {
    let mut e = connected_primary(Fencing::ResourceAndStonith);
    lose_link_with_write_in_flight(&mut e);
    let acts = answer(&mut e, Some(6));
    assert!(logged(
        &acts,
        "fence-peer helper returned 6 (peer is active)"
    ));
    assert!(logged(&acts, "Peer is primary, outdating myself."));
    assert_eq!(e.disk_state(), DiskState::UpToDate);
    assert_eq!(peer_disk(&e), DiskState::DUnknown);
    assert!(e.status().suspended_fencing);
}

#[test]
fn a_broken_helper_keeps_io_frozen_until_resume_io_which_completes_it() {
    for exit in [Some(1), Some(0), None] {
        let mut e = connected_primary(Fencing::ResourceAndStonith);
        lose_link_with_write_in_flight(&mut e);
        let acts = answer(&mut e, exit);
        assert!(
            logged(&acts, "fence-peer helper broken"),
            "{exit:?}: {acts:?}"
        );
        if let Some(n) = exit {
            assert!(logged(
                &acts,
                &format!("fence-peer helper broken, returned {n}")
            ));
        }
        assert_eq!(
            peer_disk(&e),
            DiskState::DUnknown,
            "the state change is aborted"
        );
        assert!(completed(&acts, ReqId(10)).is_none());
        e.handle(
            Time::default(),
            Input::Io {
                id: ReqId(11),
                op: write(8192, 4096),
            },
        );
        assert!(completed(&settle(&mut e), ReqId(11)).is_none());
        assert!(e.status().suspended_fencing);

        let acts = admin(&mut e, 9, AdminCmd::ResumeIo);
        assert_eq!(admin_result(&acts, 9), Some(Ok(())));
        assert_eq!(completed(&acts, ReqId(10)), Some(Ok(None)), "never failed");
        assert_eq!(completed(&acts, ReqId(11)), Some(Ok(None)), "never failed");
        assert!(!e.status().suspended_fencing);
        assert!(e.is_quiet());
    }
}

#[test]
fn a_reconnect_before_the_answer_ends_the_freeze_and_the_answer_is_not_applied() {
    let mut e = connected_primary(Fencing::ResourceAndStonith);
    lose_link_with_write_in_flight(&mut e);
    e.handle(
        Time::default(),
        Input::PeerUp {
            node: PEER,
            protocol: crate::config::Protocol::C,
        },
    );
    let acts = settle(&mut e);
    assert!(logged(&acts, "susp-io( fencing -> no )"));
    assert_eq!(completed(&acts, ReqId(10)), Some(Ok(None)));
    let acts = answer(&mut e, Some(4));
    assert!(logged(&acts, "fence-peer exit code not applied"));
    assert_ne!(peer_disk(&e), DiskState::Outdated);
}

#[test]
fn a_peer_known_outdated_at_the_loss_is_not_fenced() {
    let mut e = connected_primary(Fencing::ResourceAndStonith);
    e.handle(
        Time::default(),
        Input::PeerPacket {
            node: PEER,
            packet: crate::repl::wire::Packet::State {
                role: Role::Secondary,
                peer_role: Role::Primary,
                disk: DiskState::Outdated,
                peer_disk: DiskState::UpToDate,
                conn: ConnState::Connected,
                repl: ReplState::Established,
                flags: crate::repl::wire::StateFlags::empty(),
            },
        },
    );
    settle(&mut e);
    let acts = lose_link_with_write_in_flight(&mut e);
    assert_eq!(fence_calls(&acts, Handler::FencePeer), 0);
    assert_eq!(completed(&acts, ReqId(10)), Some(Ok(None)));
    assert_eq!(
        peer_disk(&e),
        DiskState::Outdated,
        "kept while disconnected"
    );
}

/// A disconnected Secondary with consistent data (never connected since attach).
fn disconnected_secondary(policy: Fencing) -> Engine {
    engine(
        policy,
        attached(flags::CONSISTENT | flags::WAS_UP_TO_DATE, 0),
    )
}

#[test]
fn promotion_while_disconnected_waits_for_fence_peer_and_proceeds_on_4_5_7_3() {
    // The disk is Consistent (not known UpToDate): 5 is "doing nothing since disk !=
    // UpToDate" and refuses, the others let it promote.
    for (code, ok) in [(4, true), (7, true), (3, true), (5, false)] {
        let mut e = disconnected_secondary(Fencing::ResourceOnly);
        assert_eq!(e.disk_state(), DiskState::Consistent);
        let acts = admin(&mut e, 5, AdminCmd::Primary { force: false });
        assert_eq!(fence_calls(&acts, Handler::FencePeer), 1);
        assert_eq!(admin_result(&acts, 5), None, "answers after the handler");
        assert_eq!(e.role(), Role::Secondary);
        let acts = answer(&mut e, Some(code));
        if ok {
            assert_eq!(admin_result(&acts, 5), Some(Ok(())), "{code}");
            assert_eq!(e.role(), Role::Primary);
            assert_eq!(e.disk_state(), DiskState::UpToDate);
        } else {
            assert!(logged(
                &acts,
                "peer unreachable, doing nothing since disk != UpToDate"
            ));
            assert_eq!(
                admin_result(&acts, 5),
                Some(Err(AdminError::State(StateError::NoUpToDateDisk)))
            );
            assert_eq!(e.role(), Role::Secondary);
        }
    }
}

#[test]
fn promotion_answered_6_outdates_this_node_persistently_and_is_refused() {
    let mut e = disconnected_secondary(Fencing::ResourceAndStonith);
    admin(&mut e, 5, AdminCmd::Primary { force: false });
    let acts = answer(&mut e, Some(6));
    assert_eq!(
        admin_result(&acts, 5),
        Some(Err(AdminError::State(StateError::NoUpToDateDisk)))
    );
    assert_eq!(e.disk_state(), DiskState::Outdated);
    let sb = last_sb(&acts).expect("persisted");
    assert!(sb.flags & flags::CONSISTENT != 0 && sb.flags & flags::WAS_UP_TO_DATE == 0);
}

#[test]
fn promotion_with_a_broken_helper_is_refused_unless_forced() {
    let mut e = disconnected_secondary(Fencing::ResourceOnly);
    admin(&mut e, 5, AdminCmd::Primary { force: false });
    let acts = answer(&mut e, Some(1));
    assert_eq!(
        admin_result(&acts, 5),
        Some(Err(AdminError::State(StateError::NoUpToDateDisk)))
    );
    admin(&mut e, 6, AdminCmd::Primary { force: true });
    let acts = answer(&mut e, Some(1));
    assert_eq!(admin_result(&acts, 6), Some(Ok(())));
    assert!(logged(&acts, "Forced into split brain situation!"));
    assert_eq!(e.role(), Role::Primary);
}

#[test]
fn an_uptodate_node_that_lost_its_peer_refuses_auto_promote_with_primary_nop() {
    let mut e = connected_primary(Fencing::ResourceOnly);
    admin(&mut e, 3, AdminCmd::Secondary);
    e.handle(
        Time::default(),
        Input::PeerDown {
            node: PEER,
            standalone: false,
        },
    );
    settle(&mut e);
    assert_eq!(e.disk_state(), DiskState::UpToDate);
    assert_eq!(
        super::tests::open(&mut e),
        Err(OpenRefusal::AutoPromoteFailed(StateError::PrimaryNop)),
        "(-7) Refusing to be Primary while peer is not outdated"
    );
    // `drbdadm primary` asks fence-peer instead.
    let acts = admin(&mut e, 4, AdminCmd::Primary { force: false });
    assert_eq!(fence_calls(&acts, Handler::FencePeer), 1);
    let acts = answer(&mut e, Some(5));
    assert!(logged(&acts, "peer is unreachable, assumed to be dead"));
    assert_eq!(admin_result(&acts, 4), Some(Ok(())));
}

#[test]
fn a_fenced_peer_is_remembered_across_a_restart() {
    let mut e = connected_primary(Fencing::ResourceOnly);
    lose_link_with_write_in_flight(&mut e);
    answer(&mut e, Some(4));
    admin(&mut e, 3, AdminCmd::Secondary);
    let sb = e.superblock().expect("attached").clone();
    let mut a = attached(0, 0);
    a.sb = sb;
    let mut e = engine(Fencing::ResourceOnly, a);
    assert_eq!(peer_disk(&e), DiskState::Outdated);
    let acts = admin(&mut e, 4, AdminCmd::Primary { force: false });
    assert_eq!(fence_calls(&acts, Handler::FencePeer), 0);
    assert_eq!(admin_result(&acts, 4), Some(Ok(())));
}

#[test]
fn outdate_is_persisted_across_detach_and_attach_and_refuses_primary_without_force() {
    let mut e = disconnected_secondary(Fencing::DontCare);
    let acts = admin(&mut e, 1, AdminCmd::Outdate);
    assert_eq!(admin_result(&acts, 1), Some(Ok(())));
    assert!(logged(&acts, "disk( Consistent -> Outdated )"));
    assert_eq!(e.status().disk, DiskState::Outdated);
    let acts = admin(&mut e, 2, AdminCmd::Detach);
    assert_eq!(admin_result(&acts, 2), Some(Ok(())));
    let sb = last_sb(&acts).expect("detach writes the superblock");
    assert!(sb.flags & flags::CONSISTENT != 0 && sb.flags & flags::WAS_UP_TO_DATE == 0);

    let mut a = attached(0, 0);
    a.sb = sb;
    let mut e = engine(Fencing::DontCare, a);
    assert_eq!(e.disk_state(), DiskState::Outdated);
    let acts = admin(&mut e, 3, AdminCmd::Primary { force: false });
    assert_eq!(
        admin_result(&acts, 3),
        Some(Err(AdminError::State(StateError::NoUpToDateDisk)))
    );
    assert_eq!(
        AdminError::State(StateError::NoUpToDateDisk).exit_code(),
        17
    );
    let acts = admin(&mut e, 4, AdminCmd::Primary { force: true });
    assert_eq!(admin_result(&acts, 4), Some(Ok(())));
    assert_eq!(e.disk_state(), DiskState::UpToDate);
}

#[test]
fn outdate_is_refused_while_primary_connected_or_inconsistent() {
    let mut e = connected_primary(Fencing::DontCare);
    let acts = admin(&mut e, 1, AdminCmd::Outdate);
    assert_eq!(
        admin_result(&acts, 1),
        Some(Err(AdminError::State(StateError::NoUpToDateDisk)))
    );
    admin(&mut e, 2, AdminCmd::Secondary);
    // DRBD 9: a Secondary may outdate itself while no Primary relies on it; a Primary peer
    // does.
    e.handle(
        Time::default(),
        Input::PeerPacket {
            node: PEER,
            packet: crate::repl::wire::Packet::State {
                role: Role::Primary,
                peer_role: Role::Secondary,
                disk: DiskState::UpToDate,
                peer_disk: DiskState::UpToDate,
                conn: crate::repl::ConnState::Connected,
                repl: crate::repl::ReplState::Established,
                flags: crate::repl::wire::StateFlags::empty(),
            },
        },
    );
    settle(&mut e);
    let acts = admin(&mut e, 3, AdminCmd::Outdate);
    assert_eq!(
        admin_result(&acts, 3),
        Some(Err(AdminError::State(StateError::ConnectedOutdates)))
    );
    let mut e = engine(Fencing::DontCare, attached(0, 0));
    let acts = admin(&mut e, 4, AdminCmd::Outdate);
    assert_eq!(
        admin_result(&acts, 4),
        Some(Err(AdminError::State(StateError::LowerThanOutdated)))
    );
    let _ = drain(&mut e);
}

fn sent_commit_before_answer(acts: &[Action], token: u64) -> bool {
    let commit = acts.iter().position(|a| {
        matches!(
            a,
            Action::Send {
                packet: crate::repl::wire::Packet::TwoPcCommit { .. },
                ..
            }
        )
    });
    let answer = acts
        .iter()
        .position(|a| matches!(a, Action::AdminDone { token: t, .. } if *t == token));
    matches!((commit, answer), (Some(c), Some(a)) if c < a)
}

#[test]
fn a_planned_disconnect_from_the_primary_outdates_the_peer_and_fences_nobody() {
    let mut e = connected_primary(Fencing::ResourceOnly);
    let acts = admin(&mut e, 3, AdminCmd::Disconnect);
    assert!(logged(
        &acts,
        "conn( Disconnecting ) (the Secondary outdated)"
    ));
    assert_eq!(admin_result(&acts, 3), Some(Ok(())));
    assert!(
        sent_commit_before_answer(&acts, 3),
        "the driver closes the link on the answer: the commit goes first: {acts:?}"
    );
    assert_eq!(peer_disk(&e), DiskState::Outdated);
    let sb = last_sb(&acts).expect("the outdated peer is persisted");
    assert!(
        sb.peer(PEER)
            .is_some_and(|p| p.flags & peer_flags::OUTDATED != 0)
    );
    e.handle(
        Time::default(),
        Input::PeerDown {
            node: PEER,
            standalone: true,
        },
    );
    let acts = settle(&mut e);
    assert_eq!(fence_calls(&acts, Handler::FencePeer), 0, "{acts:?}");
    assert_eq!(peer_disk(&e), DiskState::Outdated);
}

#[test]
fn the_secondary_disconnecting_on_purpose_is_recorded_outdated_not_fenced() {
    use crate::repl::wire::{Packet, TwoPcChange};
    let mut e = connected_primary(Fencing::ResourceAndStonith);
    let prepare = Packet::TwoPcPrepare {
        tid: 7,
        change: TwoPcChange::Disconnect { outdate: true },
    };
    e.handle(
        Time::default(),
        Input::PeerPacket {
            node: PEER,
            packet: prepare,
        },
    );
    let acts = settle(&mut e);
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Send {
                packet: Packet::TwoPcYes { tid: 7 },
                ..
            }
        )),
        "{acts:?}"
    );
    e.handle(
        Time::default(),
        Input::PeerPacket {
            node: PEER,
            packet: Packet::TwoPcCommit { tid: 7 },
        },
    );
    settle(&mut e);
    assert_eq!(peer_disk(&e), DiskState::Outdated);
    let acts = lose_link_with_write_in_flight(&mut e);
    assert_eq!(fence_calls(&acts, Handler::FencePeer), 0, "{acts:?}");
    assert!(!e.status().suspended_fencing, "nothing to freeze for");
    assert_eq!(completed(&acts, ReqId(10)), Some(Ok(None)));
}

#[test]
fn without_the_commit_a_lost_link_is_fenced_as_before() {
    use crate::repl::wire::{Packet, TwoPcChange};
    let mut e = connected_primary(Fencing::ResourceOnly);
    e.handle(
        Time::default(),
        Input::PeerPacket {
            node: PEER,
            packet: Packet::TwoPcPrepare {
                tid: 8,
                change: TwoPcChange::Disconnect { outdate: true },
            },
        },
    );
    settle(&mut e);
    // The Secondary may have died before it outdated itself: only a commit proves it did.
    let acts = lose_link_with_write_in_flight(&mut e);
    assert_eq!(fence_calls(&acts, Handler::FencePeer), 1);
}

/// DRBD 9's `disconnected` handler runs when an established connection goes down (whatever
/// the fencing policy), and not for a link that never got established.
#[test]
fn the_disconnected_handler_runs_when_an_established_link_goes_down() {
    let mut e = connected_primary(Fencing::DontCare);
    let acts = lose_link_with_write_in_flight(&mut e);
    assert_eq!(fence_calls(&acts, Handler::Disconnected), 1);
    e.handle(
        Time::default(),
        Input::PeerDown {
            node: PEER,
            standalone: true,
        },
    );
    assert_eq!(fence_calls(&settle(&mut e), Handler::Disconnected), 0);
}
