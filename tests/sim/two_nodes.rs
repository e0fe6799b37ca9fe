//! Two engines, a Primary and a Secondary, joined by a simulated in-order link that can drop.
//! Disk completions and packet deliveries happen in a seeded random order; metadata writes
//! complete at once (the one-node simulation covers their ordering and crashes).
//!
//! Invariants:
//! - protocol C: a write is acknowledged only once it is on both disks; B: once the peer has
//!   received it; A: once it is on the local disk;
//! - a protocol-C FLUSH is acknowledged only after the peer flushed every write before it;
//! - after the link drops, every block where the two disks differ, or may still come to differ
//!   (writes in flight on the peer), is marked out of sync in the Primary's bitmap for the peer.

use super::Rng;
use std::collections::{BTreeSet, HashMap, VecDeque};
use udrbd::bitmap::Bitmap;
use udrbd::config::Protocol;
use udrbd::meta::layout::{Layout, Placement};
use udrbd::meta::superblock::Superblock;
use udrbd::repl::wire::Packet;
use udrbd::repl::{
    Action, AdminCmd, Attached, Engine, EngineConfig, Input, IoError, IoOp, PeerInfo, ReplState,
};
use udrbd::types::{BM_BLOCK_SIZE, BlockIdx, NodeId, ReqId, Time};

const DISK: u64 = 32 << 20;
const SECTOR: u64 = 512;

/// An application completion: the request and its result.
type Completion = (ReqId, Result<Option<bytes::Bytes>, IoError>);

struct Node {
    engine: Engine,
    disk: Vec<u8>,
    pending: Vec<(ReqId, IoOp)>,
    /// Packets sent to the other node, in order.
    outbox: VecDeque<Packet>,
    flushes: u64,
    /// What the backing device can hold once it "grew" (`drbdadm resize`); None: it did not.
    grown: Option<u64>,
}

fn node(id: u8, peer: u8, seed: u64) -> Node {
    let l = Layout::compute(DISK, Placement::Internal, 1, 8).expect("layout");
    let sb = Superblock::new(&l, NodeId(id), 61, seed, &[NodeId(peer)]);
    let mut engine = Engine::new(EngineConfig {
        resource: "sim2".into(),
        node_id: NodeId(id),
        peers: vec![PeerInfo::new(format!("n{peer}"), NodeId(peer))],
        auto_promote: false,
        auto_promote_timeout_ms: 2_000,
        twopc_timeout_ms: 30_000,
        quorum: Default::default(),
        uuid_seed: seed ^ u64::from(id),
    });
    engine.handle(
        Time::default(),
        Input::Attach(Box::new(Attached {
            sb,
            data_bytes: l.data_bytes,
            user_bytes: 0,
            bitmaps: vec![Bitmap::new(l.bm_bits())],
            al: None,
            al_blocks: 8,
            on_io_error: udrbd::config::OnIoError::Detach,
            disk_flushes: true,
        })),
    );
    Node {
        engine,
        disk: vec![0; l.data_bytes as usize],
        pending: Vec::new(),
        outbox: VecDeque::new(),
        flushes: 0,
        grown: None,
    }
}

/// Delivers every packet and completes every disk op until both nodes are idle (the
/// handshake, an admin command's propagation).
fn settle(a: &mut Node, b: &mut Node) {
    let done = settle_collect(a, b);
    assert!(done.is_empty(), "unexpected completions: {done:?}");
}

/// [`settle`], returning the application completions it produced.
fn settle_collect(a: &mut Node, b: &mut Node) -> Vec<Completion> {
    let mut done = Vec::new();
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(p) = a.outbox.pop_front() {
            b.engine.handle(
                Time::default(),
                Input::PeerPacket {
                    node: NodeId(0),
                    packet: p,
                },
            );
            moved = true;
        }
        while let Some(p) = b.outbox.pop_front() {
            a.engine.handle(
                Time::default(),
                Input::PeerPacket {
                    node: NodeId(1),
                    packet: p,
                },
            );
            moved = true;
        }
        while !a.pending.is_empty() {
            a.complete_disk(0);
            moved = true;
        }
        while !b.pending.is_empty() {
            b.complete_disk(0);
            moved = true;
        }
        done.extend(a.pump(&mut Vec::new()));
        done.extend(b.pump(&mut Vec::new()));
        if !moved && a.outbox.is_empty() && b.outbox.is_empty() {
            return done;
        }
    }
    panic!("the two nodes never settled");
}

impl Node {
    fn admin(&mut self, cmd: AdminCmd) {
        self.engine
            .handle(Time::default(), Input::Admin { token: 0, cmd });
        let done = self.pump(&mut Vec::new());
        assert!(done.is_empty());
    }

    /// Executes actions; metadata completes at once. Returns application completions.
    fn pump(&mut self, log: &mut Vec<String>) -> Vec<Completion> {
        let mut done = Vec::new();
        while let Some(a) = self.engine.poll_action() {
            match a {
                Action::SubmitDisk { id, op } => self.pending.push((id, op)),
                Action::WriteMeta { generation, .. } => self.engine.handle(
                    Time::default(),
                    Input::MetaWritten {
                        generation,
                        result: Ok(()),
                    },
                ),
                Action::WriteAl { seq, .. } => self.engine.handle(
                    Time::default(),
                    Input::AlWritten {
                        seq,
                        result: Ok(()),
                    },
                ),
                Action::WriteBitmap { .. } => self
                    .engine
                    .handle(Time::default(), Input::BitmapWritten { result: Ok(()) }),
                Action::Send { packet, .. } => self.outbox.push_back(packet),
                Action::GrowDisk => {
                    // The metadata writer moved the metadata: the data area is what grew.
                    let max = match self.grown {
                        Some(max) => {
                            self.disk.resize(max as usize, 0xee);
                            max
                        }
                        None => self.disk.len() as u64,
                    };
                    self.engine
                        .handle(Time::default(), Input::DiskGrew { result: Ok(max) });
                }
                Action::Complete { id, result } => done.push((id, result)),
                Action::AdminDone { result, .. } => {
                    assert!(result.is_ok(), "admin failed: {result:?}")
                }
                Action::Log(l) => log.push(l),
                Action::DropLink { node, .. } => log.push(format!("drop link to {node}")),
                Action::RunHandler { handler, .. } => log.push(format!("handler {handler}")),
                Action::ReleaseDisk => log.push("disk released".into()),
                // This harness delivers every packet at once; pausing the data stream is the
                // pair world's to model (`pair.rs`).
                Action::ReceiveData { node, paused } => {
                    log.push(format!("receive data from {node}: paused {paused}"))
                }
                Action::Opened { result, .. } => {
                    assert!(result.is_ok(), "open failed: {result:?}")
                }
            }
        }
        done
    }

    fn apply(&mut self, op: &IoOp) {
        match op {
            IoOp::Write { offset, data, .. } => {
                let at = *offset as usize;
                self.disk[at..at + data.len()].copy_from_slice(data);
            }
            IoOp::Trim { offset, len, .. } | IoOp::WriteZeroes { offset, len, .. } => {
                let at = *offset as usize;
                self.disk[at..at + *len as usize].fill(0);
            }
            IoOp::Flush => self.flushes += 1,
            IoOp::Read { .. } => {}
        }
    }

    /// Completes in-flight disk op `i`.
    fn complete_disk(&mut self, i: usize) {
        let (id, op) = self.pending.swap_remove(i);
        let data = match &op {
            IoOp::Read { offset, len } => {
                let at = *offset as usize;
                Some(bytes::Bytes::copy_from_slice(
                    &self.disk[at..at + *len as usize],
                ))
            }
            _ => None,
        };
        self.apply(&op);
        self.engine.handle(
            Time::default(),
            Input::DiskDone {
                id,
                result: Ok(data),
            },
        );
    }
}

/// The how-to: two fresh nodes connected, the initial sync skipped, node 0 promoted.
fn primary_pair(seed: u64, protocol: Protocol) -> (Node, Node) {
    let mut a = node(0, 1, seed);
    let mut b = node(1, 0, seed);
    for (n, peer) in [(&mut a, 1u8), (&mut b, 0u8)] {
        n.engine.handle(
            Time::default(),
            Input::PeerUp {
                node: NodeId(peer),
                protocol,
            },
        );
        n.pump(&mut Vec::new());
    }
    settle(&mut a, &mut b);
    a.admin(AdminCmd::NewCurrentUuid { clear_bitmap: true });
    settle(&mut a, &mut b);
    a.admin(AdminCmd::Primary { force: false });
    settle(&mut a, &mut b);
    (a, b)
}

fn run(seed: u64, protocol: Protocol) {
    let mut rng = Rng(seed);
    let (mut a, mut b) = primary_pair(seed, protocol);
    assert_eq!(
        a.engine.superblock().map(|s| s.current_uuid),
        b.engine.superblock().map(|s| s.current_uuid),
        "seed {seed}: the peer did not follow the clear-bitmap UUID"
    );
    let mut log = Vec::new();
    // Application requests on the Primary: id -> (op, write id)
    let mut outstanding: HashMap<ReqId, IoOp> = HashMap::new();
    let mut written: BTreeSet<u64> = BTreeSet::new();
    let mut next = 1u64;
    let mut connected = true;
    let steps = 400 + rng.below(400);
    for step in 0..steps {
        match rng.below(100) {
            0..=29 if outstanding.len() < 24 => {
                let len = (1 + rng.below(16)) * SECTOR;
                let offset = rng.below((DISK - (64 << 10)) / SECTOR) * SECTOR;
                let busy = outstanding.values().any(|op| match op.written_range() {
                    Some((o, l)) => o < offset + len && offset < o + l,
                    None => false,
                });
                if busy {
                    continue;
                }
                let id = ReqId(next);
                next += 1;
                let op = if rng.chance(900) {
                    IoOp::Write {
                        offset,
                        data: vec![(id.0 % 251 + 1) as u8; len as usize].into(),
                        fua: rng.chance(100),
                    }
                } else {
                    IoOp::Trim {
                        offset,
                        len: len as u32,
                        fua: false,
                    }
                };
                for blk in offset / BM_BLOCK_SIZE..(offset + len).div_ceil(BM_BLOCK_SIZE) {
                    written.insert(blk);
                }
                outstanding.insert(id, op.clone());
                a.engine.handle(Time::default(), Input::Io { id, op });
            }
            30..=33 if outstanding.len() < 24 => {
                let id = ReqId(next);
                next += 1;
                outstanding.insert(id, IoOp::Flush);
                a.engine.handle(
                    Time::default(),
                    Input::Io {
                        id,
                        op: IoOp::Flush,
                    },
                );
            }
            34 if connected && step > 50 && rng.chance(200) => {
                // The link drops: whatever is in flight on the wire is lost.
                connected = false;
                a.outbox.clear();
                b.outbox.clear();
                a.engine.handle(
                    Time::default(),
                    Input::PeerDown {
                        node: NodeId(1),
                        standalone: false,
                    },
                );
                b.engine.handle(
                    Time::default(),
                    Input::PeerDown {
                        node: NodeId(0),
                        standalone: false,
                    },
                );
            }
            35..=64 if !a.pending.is_empty() => {
                let i = rng.below(a.pending.len() as u64) as usize;
                a.complete_disk(i);
            }
            65..=84 if !b.pending.is_empty() => {
                let i = rng.below(b.pending.len() as u64) as usize;
                b.complete_disk(i);
            }
            85..=92 if connected => {
                if let Some(p) = a.outbox.pop_front() {
                    b.engine.handle(
                        Time::default(),
                        Input::PeerPacket {
                            node: NodeId(0),
                            packet: p,
                        },
                    );
                }
            }
            _ if connected => {
                if let Some(p) = b.outbox.pop_front() {
                    a.engine.handle(
                        Time::default(),
                        Input::PeerPacket {
                            node: NodeId(1),
                            packet: p,
                        },
                    );
                }
            }
            _ => {}
        }
        b.pump(&mut log);
        for (id, result) in a.pump(&mut log) {
            let op = outstanding
                .remove(&id)
                .unwrap_or_else(|| panic!("seed {seed}: double completion of {id:?}"));
            assert!(result.is_ok(), "seed {seed}: {id:?} failed: {result:?}");
            check_completion(seed, protocol, connected, &a, &b, &op);
        }
    }
    if connected {
        a.engine.handle(
            Time::default(),
            Input::PeerDown {
                node: NodeId(1),
                standalone: false,
            },
        );
        b.engine.handle(
            Time::default(),
            Input::PeerDown {
                node: NodeId(0),
                standalone: false,
            },
        );
        for (id, result) in a.pump(&mut log) {
            assert!(result.is_ok());
            outstanding.remove(&id);
        }
        b.pump(&mut log);
    }
    // After the drop: the Secondary may still finish what it received (it is on its disk now
    // or never); the Primary finishes everything locally.
    while !b.pending.is_empty() {
        b.complete_disk(0);
        b.pump(&mut log);
    }
    while !a.pending.is_empty() {
        a.complete_disk(0);
        for (id, result) in a.pump(&mut log) {
            assert!(result.is_ok());
            outstanding.remove(&id);
        }
    }
    assert!(
        outstanding.is_empty(),
        "seed {seed} {protocol:?}: requests never completed: {:?}",
        outstanding.keys().collect::<Vec<_>>()
    );
    let bm = a.engine.peer_bitmap(NodeId(1)).expect("bitmap");
    for blk in &written {
        let at = (*blk * BM_BLOCK_SIZE) as usize;
        let end = (at + BM_BLOCK_SIZE as usize).min(a.disk.len());
        if a.disk[at..end] != b.disk[at..end] {
            assert!(
                bm.test(BlockIdx(*blk)),
                "seed {seed} {protocol:?}: block {blk} differs between the nodes but is not \
                 marked out of sync"
            );
        }
    }
}

/// What an acknowledgement promises, per protocol, checked at the moment it happens.
fn check_completion(seed: u64, protocol: Protocol, connected: bool, a: &Node, b: &Node, op: &IoOp) {
    let Some((offset, len)) = op.written_range() else {
        return;
    };
    let range = offset as usize..(offset + len) as usize;
    let expect: Vec<u8> = match op {
        IoOp::Write { data, .. } => data.to_vec(),
        _ => vec![0; len as usize],
    };
    assert!(
        a.disk[range.clone()] == expect[..],
        "seed {seed}: acknowledged before the local write"
    );
    if connected && protocol == Protocol::C {
        assert!(
            b.disk[range] == expect[..],
            "seed {seed}: protocol C acknowledged a write the peer does not have"
        );
    }
}

#[test]
fn replication_acks_follow_the_protocol_and_a_drop_marks_every_difference() {
    let seeds: u64 = std::env::var("UDRBD_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    for seed in 0..seeds {
        for protocol in [Protocol::A, Protocol::B, Protocol::C] {
            run(seed, protocol);
        }
    }
}

/// `drbdadm resize` on the Secondary after both backing devices grew (by different amounts)
/// while the Primary has data on the old area: both grow to the smaller disk, only the new
/// area (which holds different garbage on each) is marked and resynced from the Primary, the
/// old data is untouched, and the Primary can write at the new end.
#[test]
fn resize_agrees_on_the_smaller_disk_and_marks_the_new_area_for_resync() {
    let (mut a, mut b) = primary_pair(99, Protocol::C);
    let old = a.engine.size_bytes();
    let write = |n: &mut Node, offset: u64, fill: u8| {
        n.engine.handle(
            Time::default(),
            Input::Io {
                id: ReqId(offset + 1),
                op: IoOp::Write {
                    offset,
                    data: vec![fill; 4096].into(),
                    fua: false,
                },
            },
        );
    };
    write(&mut a, 4096, 0x5a);
    assert!(
        settle_collect(&mut a, &mut b)
            .iter()
            .all(|(_, r)| r.is_ok())
    );
    a.grown = Some(old + (12 << 20));
    b.grown = Some(old + (8 << 20));
    b.disk.resize((old + (8 << 20)) as usize, 0x33);
    b.admin(AdminCmd::Resize {
        no_resync: false,
        user_bytes: 0,
    });
    settle(&mut a, &mut b);
    let new = old + (8 << 20);
    assert_eq!(a.engine.size_bytes(), new);
    assert_eq!(b.engine.size_bytes(), new);
    assert_eq!(&a.disk[4096..8192], &[0x5a; 4096][..]);
    // The new area is marked on both sides (for the resync this harness does not pace: it
    // runs no timers; tests/resize.rs sees it through with real daemons) and nothing else.
    for (n, peer) in [(&a, 1u8), (&b, 0u8)] {
        let bm = n.engine.peer_bitmap(NodeId(peer)).expect("bitmap");
        let first = bm.find_next_set(BlockIdx(0)).map(|b| b.0);
        assert!(
            first.is_some_and(|f| f >= old / BM_BLOCK_SIZE) && bm.count() > 0,
            "marked outside the new area, or nothing: first {first:?}, {} bits",
            bm.count()
        );
    }
    let repl = |n: &Node| n.engine.status().peers.first().map(|p| p.repl);
    assert_eq!(
        (repl(&a), repl(&b)),
        (Some(ReplState::SyncSource), Some(ReplState::SyncTarget)),
        "the Primary's data is the source"
    );
    write(&mut a, new - 4096, 0x77);
    let done = settle_collect(&mut a, &mut b);
    assert!(done.len() == 1 && done[0].1.is_ok(), "{done:?}");
    assert!(
        b.disk[(new - 4096) as usize..new as usize]
            .iter()
            .all(|&x| x == 0x77),
        "a write at the new end did not reach the peer"
    );
}

/// `resize --size` below the current size on one node of a connected pair: both shrink to it
/// (an explicit, online shrink), nothing beyond is left marked, and a write past the new end
/// is refused as past the end of the device.
#[test]
fn resize_with_a_smaller_size_shrinks_both_and_refuses_writes_past_the_end() {
    let (mut a, mut b) = primary_pair(98, Protocol::C);
    let old = a.engine.size_bytes();
    let new = old - (8 << 20);
    a.grown = Some(old);
    b.grown = Some(old);
    b.admin(AdminCmd::Resize {
        no_resync: false,
        user_bytes: new,
    });
    settle(&mut a, &mut b);
    assert_eq!(a.engine.size_bytes(), new);
    assert_eq!(b.engine.size_bytes(), new);
    for (n, peer) in [(&a, 1u8), (&b, 0u8)] {
        let bm = n.engine.peer_bitmap(NodeId(peer)).expect("bitmap");
        assert_eq!(bm.count(), 0, "nothing to resync after a shrink");
    }
    a.engine.handle(
        Time::default(),
        Input::Io {
            id: ReqId(7),
            op: IoOp::Write {
                offset: new,
                data: vec![1; 4096].into(),
                fua: false,
            },
        },
    );
    let done = settle_collect(&mut a, &mut b);
    assert!(
        matches!(
            done.as_slice(),
            [(_, Err(udrbd::repl::IoError::PastEnd { write: true }))]
        ),
        "{done:?}"
    );
}
