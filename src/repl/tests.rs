//! The engine against a scripted driver: every action is observed, metadata completions are
//! delivered when the test says so, so "persist before you acknowledge" is checked step by step.

use super::*;
use crate::bitmap::Bitmap;
use crate::meta::layout::{Layout, Placement};
use crate::meta::superblock::{Superblock, flags};
use crate::repl::wire::Packet;
use crate::types::{AL_EXTENT_SIZE, GenUuid, NodeId, ReqId, Time};

const SIZE: u64 = 64 << 20;

pub(super) fn cfg(auto_promote: bool) -> EngineConfig {
    EngineConfig {
        resource: "r0".into(),
        node_id: NodeId(0),
        peers: vec![PeerInfo::new("bob", NodeId(1))],
        auto_promote,
        auto_promote_timeout_ms: 2_000,
        twopc_timeout_ms: 30_000,
        quorum: Default::default(),
        uuid_seed: 42,
    }
}

pub(super) fn attached(flags_or: u32, flags_clear: u32) -> Attached {
    let l = Layout::compute(SIZE, Placement::Internal, 1, 8).expect("layout");
    let mut sb = Superblock::new(&l, NodeId(0), 61, 7, &[NodeId(1)]);
    sb.flags = (sb.flags | flags_or) & !flags_clear;
    Attached {
        sb,
        data_bytes: l.data_bytes,
        user_bytes: 0,
        bitmaps: vec![Bitmap::new(l.bm_bits())],
        al: None,
        al_blocks: 8,
        on_io_error: crate::config::OnIoError::Detach,
        disk_flushes: true,
    }
}

/// Drains the engine, completing metadata writes at once, and answering as a connected peer
/// that agrees to every cluster-wide state change; returns every action seen.
pub(super) fn settle(e: &mut Engine) -> Vec<Action> {
    let mut seen = settle_failing(e, |_| false);
    let mut answered = 0;
    loop {
        let prepares: Vec<(NodeId, u32)> = seen[answered..]
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    node,
                    packet: Packet::TwoPcPrepare { tid, .. },
                } => Some((*node, *tid)),
                _ => None,
            })
            .collect();
        answered = seen.len();
        if prepares.is_empty() {
            return seen;
        }
        for (node, tid) in prepares {
            e.handle(
                Time::default(),
                Input::PeerPacket {
                    node,
                    packet: Packet::TwoPcYes { tid },
                },
            );
        }
        seen.extend(settle_failing(e, |_| false));
    }
}

/// [`settle`], where the disk requests `fails` picks complete with EIO.
pub(super) fn settle_failing(e: &mut Engine, fails: impl Fn(ReqId) -> bool) -> Vec<Action> {
    let mut seen = Vec::new();
    while let Some(a) = e.poll_action() {
        match &a {
            Action::WriteMeta { generation, .. } => e.handle(
                Time::default(),
                Input::MetaWritten {
                    generation: *generation,
                    result: Ok(()),
                },
            ),
            Action::WriteAl { seq, .. } => e.handle(
                Time::default(),
                Input::AlWritten {
                    seq: *seq,
                    result: Ok(()),
                },
            ),
            Action::WriteBitmap { .. } => {
                e.handle(Time::default(), Input::BitmapWritten { result: Ok(()) })
            }
            Action::SubmitDisk { id, .. } if fails(*id) => e.handle(
                Time::default(),
                Input::DiskDone {
                    id: *id,
                    result: Err(libc::EIO),
                },
            ),
            Action::SubmitDisk { id, op } => {
                let data = match op {
                    IoOp::Read { len, .. } => Some(bytes::Bytes::from(vec![0; *len as usize])),
                    _ => None,
                };
                e.handle(
                    Time::default(),
                    Input::DiskDone {
                        id: *id,
                        result: Ok(data),
                    },
                )
            }
            _ => {}
        }
        seen.push(a);
    }
    seen
}

/// An NBD client's open (GO): the engine's answer, with what it did meanwhile settled.
pub(super) fn open(e: &mut Engine) -> Result<(), OpenRefusal> {
    const TOKEN: u64 = 1 << 40;
    e.handle(Time::default(), Input::Open { token: TOKEN });
    settle(e)
        .into_iter()
        .find_map(|a| match a {
            Action::Opened { token, result } if token == TOKEN => Some(result),
            _ => None,
        })
        .expect("an answer to the open")
}

pub(super) fn drain(e: &mut Engine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

pub(super) fn admin_result(actions: &[Action], token: u64) -> Option<Result<(), AdminError>> {
    actions.iter().find_map(|a| match a {
        Action::AdminDone { token: t, result } if *t == token => Some(result.clone()),
        _ => None,
    })
}

pub(super) fn up(auto_promote: bool, a: Attached) -> Engine {
    let mut e = Engine::new(cfg(auto_promote));
    e.handle(Time::default(), Input::Attach(Box::new(a)));
    settle(&mut e);
    e
}

pub(super) fn write(offset: u64, len: usize) -> IoOp {
    IoOp::Write {
        offset,
        data: vec![0xab; len].into(),
        fua: false,
    }
}

#[test]
fn fresh_metadata_is_inconsistent_and_needs_force() {
    let mut e = up(true, attached(0, 0));
    assert_eq!(e.disk_state(), DiskState::Inconsistent);
    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::Primary { force: false },
        },
    );
    let r = admin_result(&settle(&mut e), 1);
    assert_eq!(r, Some(Err(AdminError::State(StateError::NoUpToDateDisk))));
    assert_eq!(e.role(), Role::Secondary);
}

#[test]
fn forced_promotion_is_acknowledged_only_after_the_superblock_is_written() {
    let mut e = up(true, attached(0, 0));
    e.handle(
        Time::default(),
        Input::Admin {
            token: 7,
            cmd: AdminCmd::Primary { force: true },
        },
    );
    let acts = drain(&mut e);
    let Some(Action::WriteMeta { generation, sb }) = acts
        .iter()
        .find(|a| matches!(a, Action::WriteMeta { .. }))
        .cloned()
    else {
        panic!("no superblock write: {acts:?}")
    };
    assert!(sb.flags & flags::PRIMARY_IND != 0);
    assert!(sb.flags & flags::CONSISTENT != 0 && sb.flags & flags::WAS_UP_TO_DATE != 0);
    assert_eq!(
        admin_result(&acts, 7),
        None,
        "acknowledged before persisted"
    );
    e.handle(
        Time::default(),
        Input::MetaWritten {
            generation,
            result: Ok(()),
        },
    );
    assert_eq!(admin_result(&drain(&mut e), 7), Some(Ok(())));
    assert_eq!(
        (e.role(), e.disk_state()),
        (Role::Primary, DiskState::UpToDate)
    );
}

#[test]
fn first_write_after_promotion_starts_a_generation_and_waits_for_metadata() {
    let mut e = up(true, attached(0, 0));
    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::Primary { force: true },
        },
    );
    settle(&mut e);
    let before = e.status().current_uuid;
    assert_eq!(
        before,
        GenUuid::JUST_CREATED,
        "promotion alone must not rotate"
    );

    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(1),
            op: write(4096, 4096),
        },
    );
    let acts = drain(&mut e);
    // New-UUID superblock and AL transaction (the bitmap is clean, so no flush before it):
    // and no disk write yet.
    assert!(acts.iter().any(|a| matches!(a, Action::WriteMeta { .. })));
    assert!(acts.iter().any(|a| matches!(a, Action::WriteAl { .. })));
    assert!(
        !acts.iter().any(|a| matches!(a, Action::SubmitDisk { .. })),
        "write issued before its metadata: {acts:?}"
    );
    // Deliver completions one by one; the write goes out only after all of them.
    let mut pending = acts;
    let mut submitted = false;
    for _ in 0..10 {
        for a in std::mem::take(&mut pending) {
            match a {
                Action::WriteMeta { generation, .. } => {
                    assert!(!submitted);
                    e.handle(
                        Time::default(),
                        Input::MetaWritten {
                            generation,
                            result: Ok(()),
                        },
                    )
                }
                Action::WriteBitmap { .. } => {
                    assert!(!submitted);
                    e.handle(Time::default(), Input::BitmapWritten { result: Ok(()) })
                }
                Action::WriteAl { seq, .. } => {
                    assert!(!submitted);
                    e.handle(
                        Time::default(),
                        Input::AlWritten {
                            seq,
                            result: Ok(()),
                        },
                    )
                }
                Action::SubmitDisk { id, .. } => {
                    submitted = true;
                    e.handle(
                        Time::default(),
                        Input::DiskDone {
                            id,
                            result: Ok(None),
                        },
                    )
                }
                _ => {}
            }
        }
        pending = drain(&mut e);
    }
    assert!(submitted);
    let st = e.status();
    assert_ne!(st.current_uuid, before);
    assert_eq!(st.current_uuid.0 & 1, 1, "Primary's role bit");
    assert_eq!(st.peers[0].out_of_sync_bytes, 4096);
    assert_eq!(st.stats.al_writes, 1);

    // A second write into the same (hot) extent needs no metadata at all.
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(2),
            op: write(8192, 512),
        },
    );
    let acts = drain(&mut e);
    assert!(
        matches!(acts.as_slice(), [Action::SubmitDisk { .. }]),
        "{acts:?}"
    );
}

#[test]
fn writes_into_new_extents_each_take_an_al_transaction() {
    let mut e = up(true, attached(flags::CONSISTENT | flags::WAS_UP_TO_DATE, 0));
    assert_eq!(e.disk_state(), DiskState::Consistent);
    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::Primary { force: false },
        },
    );
    assert_eq!(admin_result(&settle(&mut e), 1), Some(Ok(())));
    for i in 0..4u64 {
        e.handle(
            Time::default(),
            Input::Io {
                id: ReqId(i),
                op: write(i * AL_EXTENT_SIZE, 4096),
            },
        );
    }
    let acts = settle(&mut e);
    let completes = acts
        .iter()
        .filter(|a| matches!(a, Action::Complete { result: Ok(_), .. }))
        .count();
    assert_eq!(completes, 4);
    assert_eq!(e.status().stats.al_writes, 4);
    assert_eq!(e.status().peers[0].out_of_sync_bytes, 4 * 4096);
}

#[test]
fn secondary_refuses_io_and_held_open_refuses_demotion() {
    let mut e = up(
        false,
        attached(flags::CONSISTENT | flags::WAS_UP_TO_DATE, 0),
    );
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(1),
            op: IoOp::Read {
                offset: 0,
                len: 4096,
            },
        },
    );
    let acts = settle(&mut e);
    assert!(acts.contains(&Action::Complete {
        id: ReqId(1),
        result: Err(IoError::NotPrimary)
    }));
    assert_eq!(open(&mut e), Err(OpenRefusal::Secondary));

    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::Primary { force: false },
        },
    );
    settle(&mut e);
    open(&mut e).expect("Primary opens");
    e.handle(
        Time::default(),
        Input::Admin {
            token: 2,
            cmd: AdminCmd::Secondary,
        },
    );
    assert_eq!(
        admin_result(&settle(&mut e), 2),
        Some(Err(AdminError::State(StateError::DeviceInUse)))
    );
    e.close(Time::default());
    assert_eq!(e.role(), Role::Primary, "auto-promote off: no auto-demote");
    e.handle(
        Time::default(),
        Input::Admin {
            token: 3,
            cmd: AdminCmd::Secondary,
        },
    );
    assert_eq!(admin_result(&settle(&mut e), 3), Some(Ok(())));
    assert_eq!(e.role(), Role::Secondary);
}

/// The kernel block device counts as DRBD's read-only opener: on a Secondary its reads (and
/// flushes) are served where the data is UpToDate, its writes refused; an NBD client's read is
/// not. Without UpToDate data (a lone Consistent disk) the read is refused too, as DRBD's
/// `ro_open_cond()` refuses the open.
#[test]
fn the_kernel_device_reads_on_a_secondary_and_never_writes() {
    let read = IoOp::Read {
        offset: 4096,
        len: 4096,
    };
    let results = |e: &mut Engine, inputs: Vec<Input>| {
        for i in inputs {
            e.handle(Time::default(), i);
        }
        settle(e)
            .into_iter()
            .filter_map(|a| match a {
                Action::Complete { id, result } => Some((id.0, result)),
                _ => None,
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let mut lone = up(
        false,
        attached(flags::CONSISTENT | flags::WAS_UP_TO_DATE, 0),
    );
    let r = results(
        &mut lone,
        vec![Input::DeviceIo {
            id: ReqId(1),
            op: read.clone(),
        }],
    );
    assert_eq!(r.get(&1), Some(&Err(IoError::NoData)));

    let mut e = connected_in_sync();
    assert_eq!(e.status().role, Role::Secondary);
    let r = results(
        &mut e,
        vec![
            Input::DeviceIo {
                id: ReqId(11),
                op: read.clone(),
            },
            Input::DeviceIo {
                id: ReqId(12),
                op: IoOp::Flush,
            },
            Input::DeviceIo {
                id: ReqId(13),
                op: IoOp::Write {
                    offset: 0,
                    data: bytes::Bytes::from(vec![7u8; 4096]),
                    fua: false,
                },
            },
            Input::Io {
                id: ReqId(14),
                op: read,
            },
        ],
    );
    assert!(matches!(r.get(&11), Some(Ok(Some(_)))), "{r:?}");
    assert!(matches!(r.get(&12), Some(Ok(None))), "{r:?}");
    assert_eq!(r.get(&13), Some(&Err(IoError::NotPrimary)));
    assert_eq!(r.get(&14), Some(&Err(IoError::NotPrimary)));
    assert_eq!(
        e.status().role,
        Role::Secondary,
        "the device never promotes"
    );
    assert_eq!(e.open_count(), 0, "nor does it count as an opener");
}

#[test]
fn auto_promote_and_demote_follow_the_openers() {
    let mut e = up(true, attached(flags::CONSISTENT | flags::WAS_UP_TO_DATE, 0));
    open(&mut e).expect("auto-promote");
    open(&mut e).expect("second opener");
    assert_eq!(e.role(), Role::Primary);
    e.close(Time::default());
    assert_eq!(e.role(), Role::Primary);
    e.close(Time::default());
    assert_eq!(e.role(), Role::Secondary);
    settle(&mut e);

    // An explicit promotion is not undone by the last opener leaving (DRBD's EXPLICIT_PRIMARY).
    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::Primary { force: false },
        },
    );
    settle(&mut e);
    open(&mut e).expect("open");
    e.close(Time::default());
    assert_eq!(e.role(), Role::Primary);

    // Inconsistent data cannot be auto-promoted.
    let mut e = up(true, attached(0, 0));
    assert_eq!(
        open(&mut e),
        Err(OpenRefusal::AutoPromoteFailed(StateError::NoUpToDateDisk))
    );
}

#[test]
fn clear_bitmap_on_fresh_metadata_makes_it_up_to_date_without_sync() {
    let mut e = up(true, attached(0, 0));
    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::NewCurrentUuid { clear_bitmap: true },
        },
    );
    assert_eq!(admin_result(&settle(&mut e), 1), Some(Ok(())));
    let st = e.status();
    assert_eq!(st.disk, DiskState::UpToDate);
    assert!(!st.current_uuid.same_as(GenUuid::JUST_CREATED));
    assert_eq!(st.peers[0].out_of_sync_bytes, 0);
}

#[test]
fn unclean_attach_marks_the_hot_extents_and_detach_marks_clean() {
    use crate::meta::al;
    // An AL that says extents 2 and 5 were hot, and metadata without AL_CLEAN.
    let mut log = al::ActivityLog::new(61, 8);
    let mut area = al::initial_area(8, 61);
    for e in [2u32, 5] {
        if let Some(tr) = log.access(crate::types::ExtentNr(e)) {
            let b = tr.block_index(8) as usize * al::AL_BLOCK;
            area[b..b + al::AL_BLOCK].copy_from_slice(&al::encode_transaction(&tr));
        }
    }
    let mut a = attached(
        flags::CONSISTENT | flags::WAS_UP_TO_DATE | flags::PRIMARY_IND,
        flags::AL_CLEAN,
    );
    a.al = al::recover(&area, 61).ok();
    let mut e = Engine::new(cfg(true));
    e.handle(Time::default(), Input::Attach(Box::new(a)));
    let acts = settle(&mut e);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Log(l) if l.contains("Marked additional"))),
        "{acts:?}"
    );
    let st = e.status();
    assert_eq!(st.peers[0].out_of_sync_bytes, 2 * AL_EXTENT_SIZE);
    assert!(st.md_flags & flags::CRASHED_PRIMARY != 0);
    assert_eq!(
        st.disk,
        DiskState::Consistent,
        "only a peer can say it is UpToDate"
    );

    e.handle(
        Time::default(),
        Input::Admin {
            token: 9,
            cmd: AdminCmd::Detach,
        },
    );
    let acts = settle(&mut e);
    assert_eq!(admin_result(&acts, 9), Some(Ok(())));
    let last_sb = acts.iter().rev().find_map(|a| match a {
        Action::WriteMeta { sb, .. } => Some(sb.clone()),
        _ => None,
    });
    let sb = last_sb.expect("a final superblock");
    assert!(sb.flags & flags::AL_CLEAN != 0);
    assert_eq!(e.disk_state(), DiskState::Diskless);
}

/// The generation of the superblock write among `acts`.
fn meta_generation(acts: &[Action]) -> u64 {
    acts.iter()
        .find_map(|a| match a {
            Action::WriteMeta { generation, .. } => Some(*generation),
            _ => None,
        })
        .expect("a superblock write")
}

/// An EIO on metadata `area`.
fn eio(area: MetaArea) -> MetaError {
    MetaError::Io {
        area,
        errno: libc::EIO,
        detail: "Input/output error".into(),
    }
}

#[test]
fn failed_metadata_write_fails_what_waits_on_it() {
    let mut e = up(true, attached(0, 0));
    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::Primary { force: true },
        },
    );
    let generation = meta_generation(&drain(&mut e));
    e.handle(
        Time::default(),
        Input::MetaWritten {
            generation,
            result: Err(eio(MetaArea::Superblock)),
        },
    );
    assert!(matches!(
        admin_result(&drain(&mut e), 1),
        Some(Err(AdminError::Meta(_)))
    ));
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(5),
            op: write(0, 4096),
        },
    );
    assert!(drain(&mut e).contains(&Action::Complete {
        id: ReqId(5),
        result: Err(IoError::NoData)
    }));
}

/// A second metadata failure while the first one's detach is under way must not forget that
/// detach (the simulator found a disk left Failed for good).
#[test]
fn a_second_metadata_failure_still_finishes_the_detach() {
    let mut e = up(true, attached(0, 0));
    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::Primary { force: true },
        },
    );
    let mut acts = drain(&mut e);
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(5),
            op: write(0, 4096),
        },
    );
    acts.extend(drain(&mut e));
    let generation = meta_generation(&acts);
    let al_seq = acts
        .iter()
        .find_map(|a| match a {
            Action::WriteAl { seq, .. } => Some(*seq),
            _ => None,
        })
        .expect("the write's activity-log transaction");
    e.handle(
        Time::default(),
        Input::MetaWritten {
            generation,
            result: Err(eio(MetaArea::Superblock)),
        },
    );
    drain(&mut e);
    assert_eq!(e.disk_state(), DiskState::Failed);
    e.handle(
        Time::default(),
        Input::AlWritten {
            seq: al_seq,
            result: Err(eio(MetaArea::ActivityLog)),
        },
    );
    let acts = drain(&mut e);
    assert_eq!(e.disk_state(), DiskState::Diskless, "{acts:?}");
    assert!(acts.contains(&Action::ReleaseDisk));
}

#[test]
fn a_connected_primary_keeps_its_generation_and_losing_the_peer_starts_a_new_one() {
    let mut e = connected_in_sync_primary();
    assert_eq!(
        e.status().peers[0].repl,
        crate::repl::ReplState::Established
    );
    let gen0 = e.status().current_uuid;
    // A write while connected: same generation, sent to the peer, nothing out of sync.
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(1),
            op: write(0, 4096),
        },
    );
    let mut acts = drain(&mut e);
    // Complete its metadata so the write is released.
    for _ in 0..5 {
        let mut next = Vec::new();
        for a in acts {
            match a {
                Action::WriteMeta { generation, .. } => e.handle(
                    Time::default(),
                    Input::MetaWritten {
                        generation,
                        result: Ok(()),
                    },
                ),
                Action::WriteAl { seq, .. } => e.handle(
                    Time::default(),
                    Input::AlWritten {
                        seq,
                        result: Ok(()),
                    },
                ),
                Action::WriteBitmap { .. } => {
                    e.handle(Time::default(), Input::BitmapWritten { result: Ok(()) })
                }
                other => next.push(other),
            }
        }
        next.extend(drain(&mut e));
        acts = next;
    }
    assert!(
        acts.iter().any(|a| matches!(a, Action::Send { .. })),
        "{acts:?}"
    );
    assert_eq!(e.status().current_uuid, gen0);
    // The peer goes away before acknowledging: the write completes on local success and its
    // block is marked; as the peer may lack it, a new generation whose parent is the old one
    // starts at once (otherwise with the next write).
    e.handle(
        Time::default(),
        Input::PeerDown {
            node: NodeId(1),
            standalone: false,
        },
    );
    for a in acts {
        if let Action::SubmitDisk { id, .. } = a {
            e.handle(
                Time::default(),
                Input::DiskDone {
                    id,
                    result: Ok(None),
                },
            );
        }
    }
    let acts = settle(&mut e);
    assert!(acts.contains(&Action::Complete {
        id: ReqId(1),
        result: Ok(None)
    }));
    assert_eq!(e.status().peers[0].out_of_sync_bytes, 4096);
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(2),
            op: write(8192, 4096),
        },
    );
    settle(&mut e);
    let sb = e.superblock().expect("attached");
    assert_ne!(sb.current_uuid, gen0);
    assert_eq!(sb.peer(NodeId(1)).map(|p| p.bitmap_uuid), Some(gen0));
}

/// Feeds the peer's half of the handshake: same size, same generation, UpToDate, Secondary.
/// UpToDate (new-current-uuid --clear-bitmap) and connected to node 1, in sync.
pub(super) fn connected_in_sync() -> Engine {
    connected_in_sync_on(attached(flags::CONSISTENT | flags::WAS_UP_TO_DATE, 0))
}

/// [`connected_in_sync`], then promoted (admin token 2).
fn connected_in_sync_primary() -> Engine {
    let mut e = connected_in_sync();
    e.handle(
        Time::default(),
        Input::Admin {
            token: 2,
            cmd: AdminCmd::Primary { force: false },
        },
    );
    settle(&mut e);
    e
}

/// [`connected_in_sync`] on disk `a`.
fn connected_in_sync_on(a: Attached) -> Engine {
    let mut e = up(true, a);
    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::NewCurrentUuid { clear_bitmap: true },
        },
    );
    settle(&mut e);
    e.handle(
        Time::default(),
        Input::PeerUp {
            node: NodeId(1),
            protocol: crate::config::Protocol::C,
        },
    );
    peer_handshake(&mut e);
    settle(&mut e);
    e
}

pub(super) fn peer_handshake(e: &mut Engine) {
    let sectors = e.size_bytes() / 512;
    let current = e.status().current_uuid;
    for packet in [
        Packet::Sizes {
            backing: crate::types::Sector(sectors),
            user: crate::types::Sector(0),
            current: crate::types::Sector(sectors),
            max_bio_size: 1 << 20,
            flags: crate::repl::wire::SizesFlags::empty(),
        },
        Packet::Uuids {
            current,
            bitmap: GenUuid::ZERO,
            history: vec![],
            dirty_bits: 0,
            flags: crate::repl::wire::UuidFlags::empty(),
        },
        Packet::State {
            role: Role::Secondary,
            peer_role: Role::Unknown,
            disk: DiskState::UpToDate,
            peer_disk: DiskState::DUnknown,
            conn: crate::repl::ConnState::Connected,
            repl: crate::repl::ReplState::Off,
            flags: crate::repl::wire::StateFlags::empty(),
        },
    ] {
        e.handle(
            Time::default(),
            Input::PeerPacket {
                node: NodeId(1),
                packet,
            },
        );
    }
}

/// A protocol C write of one 4 KiB block from the peer, at `sector`.
fn peer_write(sector: u64) -> Packet {
    Packet::Data {
        sector: crate::types::Sector(sector),
        block_id: 7,
        seq: 1,
        seen: 0,
        flags: crate::repl::wire::DataFlags::SEND_WRITE_ACK,
        size: 4096,
        digest: bytes::Bytes::new(),
        data: bytes::Bytes::from(vec![1u8; 4096]),
    }
}

#[test]
fn a_peer_write_beyond_the_device_is_refused_and_never_reaches_the_disk() {
    let mut e = connected_in_sync();
    for sector in [e.size_bytes() / 512, u64::MAX / 8] {
        e.handle(
            Time::default(),
            Input::PeerPacket {
                node: NodeId(1),
                packet: peer_write(sector),
            },
        );
        let acts = drain(&mut e);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::SubmitDisk { .. })),
            "{acts:?}"
        );
        assert!(
            acts.iter().any(|a| matches!(
                a,
                Action::Send {
                    packet: Packet::NegAck(_),
                    ..
                }
            )),
            "{acts:?}"
        );
    }
}

/// Runs the metadata work `e` asks for but holds its disk requests: returns their ids and
/// the other actions.
fn hold_disk(e: &mut Engine) -> (Vec<ReqId>, Vec<Action>) {
    let (mut disk, mut other) = (Vec::new(), Vec::new());
    while let Some(a) = e.poll_action() {
        match a {
            Action::WriteMeta { generation, .. } => e.handle(
                Time::default(),
                Input::MetaWritten {
                    generation,
                    result: Ok(()),
                },
            ),
            Action::WriteAl { seq, .. } => e.handle(
                Time::default(),
                Input::AlWritten {
                    seq,
                    result: Ok(()),
                },
            ),
            Action::WriteBitmap { .. } => {
                e.handle(Time::default(), Input::BitmapWritten { result: Ok(()) })
            }
            Action::SubmitDisk { id, .. } => disk.push(id),
            a => other.push(a),
        }
    }
    (disk, other)
}

fn from_peer(e: &mut Engine, packet: Packet) {
    e.handle(
        Time::default(),
        Input::PeerPacket {
            node: NodeId(1),
            packet,
        },
    );
}

/// A peer's write still at the disk when its link went belongs to that link: when it
/// finishes on the next one it is not acknowledged there, and it does not count toward that
/// link's epoch 1 (whose barrier would otherwise be acknowledged before its own write is on
/// disk). DRBD drains such writes before it reconnects.
#[test]
fn a_peer_write_from_a_lost_link_is_not_answered_on_the_next_one() {
    let mut e = connected_in_sync();
    from_peer(&mut e, peer_write(8));
    let (old, _) = hold_disk(&mut e);
    let old = *old
        .first()
        .expect("the first link's write reached the disk");
    e.handle(
        Time::default(),
        Input::PeerDown {
            node: NodeId(1),
            standalone: false,
        },
    );
    e.handle(
        Time::default(),
        Input::PeerUp {
            node: NodeId(1),
            protocol: crate::config::Protocol::C,
        },
    );
    peer_handshake(&mut e);
    hold_disk(&mut e);
    assert_eq!(
        e.status().peers[0].repl,
        crate::repl::ReplState::Established
    );
    // The new link's epoch 1: one write, then its barrier.
    from_peer(&mut e, peer_write(64));
    from_peer(&mut e, Packet::Barrier { epoch: 1 });
    let (new, _) = hold_disk(&mut e);
    let new = *new
        .first()
        .expect("the second link's write reached the disk");
    e.handle(
        Time::default(),
        Input::DiskDone {
            id: old,
            result: Ok(None),
        },
    );
    let (flushes, acts) = hold_disk(&mut e);
    assert!(flushes.is_empty(), "epoch 1 flushed early: {acts:?}");
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Send { .. })),
        "the lost link's write was answered on the new one: {acts:?}"
    );
    e.handle(
        Time::default(),
        Input::DiskDone {
            id: new,
            result: Ok(None),
        },
    );
    let (flushes, acts) = hold_disk(&mut e);
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Send {
                packet: Packet::WriteAck(_),
                ..
            }
        )),
        "{acts:?}"
    );
    assert_eq!(flushes.len(), 1, "the barrier's flush: {acts:?}");
}

/// `max-buffers` (default 2048 pages): once the peer's writes at the disk hold that much, the
/// engine pauses reading the peer's data stream, and resumes as soon as they hold less.
#[test]
fn max_buffers_pauses_the_data_stream_until_the_disk_catches_up() {
    let mut e = connected_in_sync();
    let mut held = Vec::new();
    let mut paused_after = None;
    for k in 0..2100u64 {
        from_peer(&mut e, peer_write(k * 8));
        let (disk, acts) = hold_disk(&mut e);
        held.extend(disk);
        assert!(
            !acts
                .iter()
                .any(|a| matches!(a, Action::ReceiveData { paused: false, .. })),
            "{acts:?}"
        );
        if acts
            .iter()
            .any(|a| matches!(a, Action::ReceiveData { paused: true, .. }))
        {
            paused_after = Some(k + 1);
            break;
        }
    }
    assert_eq!(
        paused_after,
        Some(2048),
        "paused after 2048 writes of 4 KiB"
    );
    e.handle(
        Time::default(),
        Input::DiskDone {
            id: held[0],
            result: Ok(None),
        },
    );
    let (_, acts) = hold_disk(&mut e);
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::ReceiveData {
                node: NodeId(1),
                paused: false
            }
        )),
        "{acts:?}"
    );
}

#[test]
fn a_peer_write_counts_as_unacked_until_it_is_answered() {
    let mut e = connected_in_sync();
    e.handle(
        Time::default(),
        Input::PeerPacket {
            node: NodeId(1),
            packet: peer_write(8),
        },
    );
    // Run the metadata it needs, but hold its disk write.
    let (disk, _) = hold_disk(&mut e);
    assert_eq!(e.status().peers[0].unacked, 1);
    let id = *disk.first().expect("the peer's write reached the disk");
    e.handle(
        Time::default(),
        Input::DiskDone {
            id,
            result: Ok(None),
        },
    );
    let acts = drain(&mut e);
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::Send {
            packet: Packet::WriteAck(_),
            ..
        }
    )));
    assert_eq!(e.status().peers[0].unacked, 0);
}

/// A peer's barrier flushes the disk before BarrierAck, unless `disk-flushes no`: then the
/// epoch's writes are drained and the ack goes out without a flush (DRBD's "drain" ordering).
#[test]
fn peer_barriers_flush_unless_disk_flushes_is_off() {
    for disk_flushes in [true, false] {
        let mut a = attached(flags::CONSISTENT | flags::WAS_UP_TO_DATE, 0);
        a.disk_flushes = disk_flushes;
        let mut e = connected_in_sync_on(a);
        for packet in [peer_write(8), Packet::Barrier { epoch: 1 }] {
            e.handle(
                Time::default(),
                Input::PeerPacket {
                    node: NodeId(1),
                    packet,
                },
            );
        }
        let acts = settle(&mut e);
        let flushes = acts
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::SubmitDisk {
                        op: IoOp::Flush,
                        ..
                    }
                )
            })
            .count();
        let write_done = acts
            .iter()
            .position(|a| {
                matches!(
                    a,
                    Action::Send {
                        packet: Packet::WriteAck(_),
                        ..
                    }
                )
            })
            .expect("WriteAck");
        let acked = acts
            .iter()
            .position(|a| {
                matches!(
                    a,
                    Action::Send {
                        packet: Packet::BarrierAck {
                            epoch: 1,
                            set_size: 1
                        },
                        ..
                    }
                )
            })
            .expect("BarrierAck");
        assert_eq!(
            flushes,
            usize::from(disk_flushes),
            "disk-flushes {disk_flushes}: {acts:?}"
        );
        assert!(
            write_done < acked,
            "the ack must follow the epoch's write: {acts:?}"
        );
    }
}

/// RetryWrite and Superseded decide over our writes only when both nodes allow two primaries;
/// from any other peer they are a protocol breach: logged and ignored, the write still waits
/// for its WriteAck.
#[test]
fn a_retry_write_without_two_primaries_is_ignored() {
    let mut e = connected_in_sync_primary();
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(9),
            op: write(0, 4096),
        },
    );
    let acts = settle(&mut e);
    let ack = acts
        .iter()
        .find_map(|a| match a {
            Action::Send {
                packet:
                    Packet::Data {
                        sector,
                        block_id,
                        seq,
                        size,
                        ..
                    },
                ..
            } => Some(crate::repl::wire::BlockAck {
                sector: *sector,
                block_id: *block_id,
                size: *size,
                seq: *seq,
            }),
            _ => None,
        })
        .expect("the write replicated");
    e.handle(
        Time::default(),
        Input::PeerPacket {
            node: NodeId(1),
            packet: Packet::RetryWrite { ack, after: 99 },
        },
    );
    let acts = settle(&mut e);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Log(l) if l.contains("unexpected RetryWrite"))),
        "{acts:?}"
    );
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::Complete { .. } | Action::SubmitDisk { .. }))
    );
    e.handle(
        Time::default(),
        Input::PeerPacket {
            node: NodeId(1),
            packet: Packet::WriteAck(ack),
        },
    );
    assert!(settle(&mut e).contains(&Action::Complete {
        id: ReqId(9),
        result: Ok(None)
    }));
}

/// `forget-peer` (DRBD's `drbd_adm_forget_peer()`): refused with `ERR_NET_CONFIGURED` while
/// the connection is not StandAlone; then the peer's flags and bitmap UUID go (the UUID into
/// the history), every block is marked for it, and the answer waits for the superblock.
#[test]
fn forget_peer_needs_standalone_then_drops_the_slot_and_marks_everything() {
    let mut e = connected_in_sync();
    let forget = AdminCmd::ForgetPeer { node: NodeId(1) };
    e.handle(
        Time::default(),
        Input::Admin {
            token: 9,
            cmd: forget,
        },
    );
    let acts = settle(&mut e);
    assert_eq!(admin_result(&acts, 9), Some(Err(AdminError::NetConfigured)));
    assert_eq!(e.status().peers[0].out_of_sync_bytes, 0);

    // Disconnected, a new generation: the old one becomes the peer's bitmap UUID.
    e.handle(
        Time::default(),
        Input::PeerDown {
            node: NodeId(1),
            standalone: true,
        },
    );
    e.handle(
        Time::default(),
        Input::Admin {
            token: 10,
            cmd: AdminCmd::NewCurrentUuid {
                clear_bitmap: false,
            },
        },
    );
    settle(&mut e);
    let old = e
        .superblock()
        .and_then(|sb| sb.peer(NodeId(1)))
        .map(|p| p.bitmap_uuid)
        .expect("peer slot");
    assert!(!old.is_zero());

    e.handle(
        Time::default(),
        Input::Admin {
            token: 11,
            cmd: forget,
        },
    );
    let acts = drain(&mut e);
    assert_eq!(
        admin_result(&acts, 11),
        None,
        "answered before the metadata is written"
    );
    let generation = meta_generation(&acts);
    e.handle(
        Time::default(),
        Input::MetaWritten {
            generation,
            result: Ok(()),
        },
    );
    let acts = settle(&mut e);
    assert_eq!(admin_result(&acts, 11), Some(Ok(())));
    let sb = e.superblock().expect("attached");
    let slot = sb.peer(NodeId(1)).expect("the slot stays the node's");
    assert_eq!((slot.bitmap_uuid, slot.flags), (GenUuid::ZERO, 0));
    assert_eq!(sb.history[0], old);
    assert_eq!(
        e.status().peers[0].out_of_sync_bytes,
        e.size_bytes() / 4096 * 4096
    );
}

/// `detach --force` (DRBD's `FORCE_DETACH`): answered at once; a peer's write still at the
/// disk gets its NegAck now, the disk goes Failed, then Diskless once the metadata (no longer
/// Consistent) is written; the disk's late answer changes nothing.
#[test]
fn force_detach_aborts_the_requests_at_the_disk() {
    let mut e = connected_in_sync();
    from_peer(&mut e, peer_write(8));
    let (held, _) = hold_disk(&mut e);
    assert_eq!(held.len(), 1);
    e.handle(
        Time::default(),
        Input::Admin {
            token: 9,
            cmd: AdminCmd::ForceDetach,
        },
    );
    let acts = drain(&mut e);
    assert_eq!(admin_result(&acts, 9), Some(Ok(())));
    assert_eq!(e.disk_state(), DiskState::Failed);
    let neg_ack = acts.iter().any(|a| {
        matches!(
            a,
            Action::Send {
                packet: Packet::NegAck(_),
                ..
            }
        )
    });
    assert!(neg_ack, "{acts:?}");
    // Persisted as no longer Consistent: it comes back Inconsistent and is resynced.
    let sb_flags = acts.iter().find_map(|a| match a {
        Action::WriteMeta { sb, .. } => Some(sb.flags),
        _ => None,
    });
    assert_eq!(sb_flags.map(|f| f & flags::CONSISTENT), Some(0));
    for a in &acts {
        match a {
            Action::WriteMeta { generation, .. } => e.handle(
                Time::default(),
                Input::MetaWritten {
                    generation: *generation,
                    result: Ok(()),
                },
            ),
            Action::WriteBitmap { .. } => {
                e.handle(Time::default(), Input::BitmapWritten { result: Ok(()) })
            }
            _ => {}
        }
    }
    let (_, acts) = hold_disk(&mut e);
    assert_eq!(e.disk_state(), DiskState::Diskless);
    assert!(acts.contains(&Action::ReleaseDisk), "{acts:?}");
    e.handle(
        Time::default(),
        Input::DiskDone {
            id: held[0],
            result: Ok(None),
        },
    );
    let late = drain(&mut e);
    assert!(
        !late.iter().any(|a| matches!(a, Action::Send { .. })),
        "{late:?}"
    );
}

/// `twopc-timeout` bounds a cluster-wide state change the peer never answers: with 5 s
/// configured, a promotion fails after 5 s, not after DRBD's default 30.
#[test]
fn twopc_timeout_bounds_a_state_change_the_peer_does_not_answer() {
    let mut e = connected_in_sync();
    e.handle(
        Time::default(),
        Input::Reconfigure(Box::new(crate::repl::engine::Settings {
            peers: vec![PeerInfo::new("bob", NodeId(1))],
            auto_promote: true,
            auto_promote_timeout_ms: 2_000,
            twopc_timeout_ms: 5_000,
            quorum: Default::default(),
            on_io_error: crate::config::OnIoError::Detach,
            disk_flushes: true,
        })),
    );
    e.handle(
        Time::default(),
        Input::Admin {
            token: 9,
            cmd: AdminCmd::Primary { force: false },
        },
    );
    let acts = settle_failing(&mut e, |_| false);
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Send {
                packet: Packet::TwoPcPrepare { .. },
                ..
            }
        )),
        "{acts:?}"
    );
    let answered = |acts: &[Action]| {
        acts.iter().any(|a| {
            matches!(
                a,
                Action::AdminDone {
                    token: 9,
                    result: Err(_)
                }
            )
        })
    };
    e.handle_timeout(Time::default().plus_ms(4_000));
    assert!(!answered(&settle_failing(&mut e, |_| false)));
    e.handle_timeout(Time::default().plus_ms(5_001));
    assert!(answered(&settle_failing(&mut e, |_| false)));
}
