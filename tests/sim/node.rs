//! One simulated node's hardware, shared by the simulated worlds (`pair`, `cluster`): its
//! engine, a data disk with a volatile write cache, a metadata device (two superblock slots'
//! worth of superblock, the activity-log ring, one bitmap per peer slot), the I/O in flight,
//! power loss (each unflushed write survives or not; a metadata write in flight lands, is lost
//! or is torn) and a restart from what the metadata device holds.

use super::Rng;
use udrbd::bitmap::Bitmap;
use udrbd::meta::al;
use udrbd::meta::layout::{BM_WORDS_PER_PAGE, Layout, Placement};
use udrbd::meta::superblock::Superblock;
use udrbd::repl::handler::Handler;
use udrbd::repl::{
    Attached, ConnState, DiskState, Engine, EngineConfig, Input, IoOp, MetaArea, MetaError,
    PeerStatus, ReplState,
};
use udrbd::types::{GenUuid, NodeId, ReqId, Time};

pub const DISK: u64 = 16 << 20;
pub const SECTOR: u64 = 512;
pub const AL_EXTENTS: u32 = 3;
pub const AL_BLOCKS: u32 = 4;

/// A write's payload: every sector starts with the write id (and its complement), so a disk
/// says which write each sector holds.
pub fn payload(wid: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    for s in v.chunks_mut(SECTOR as usize) {
        s[..8].copy_from_slice(&wid.to_le_bytes());
        s[8..16].copy_from_slice(&(!wid).to_le_bytes());
    }
    v
}

/// The write id sector `sector` of `disk` holds.
pub fn tag(disk: &[u8], sector: u64) -> u64 {
    let at = (sector * SECTOR) as usize;
    u64::from_le_bytes(disk[at..at + 8].try_into().expect("8 bytes"))
}

/// What a node's devices have not finished yet.
pub enum Work {
    Data {
        id: ReqId,
        op: IoOp,
    },
    Meta {
        generation: u64,
        sb: Box<Superblock>,
    },
    Al {
        seq: u64,
        block: u32,
        tr: Box<al::Transaction>,
    },
    Bitmap {
        pages: Vec<(u32, u32, Vec<u64>)>,
    },
}

pub struct PendingIo {
    pub work: Work,
    pub at: u64,
    pub fail: bool,
}

pub struct Node {
    pub id: usize,
    pub engine: Engine,
    pub layout: Layout,
    /// What survives power loss.
    pub durable: Vec<u8>,
    /// What reads see (durable plus the volatile cache).
    pub visible: Vec<u8>,
    /// Completed writes not yet flushed: (offset, data, fua), in completion order.
    unflushed: Vec<(u64, Vec<u8>, bool)>,
    pub pending: Vec<PendingIo>,
    pub sb: Superblock,
    /// Per bitmap index (one per peer slot): the persisted bitmap words.
    bm_words: Vec<Vec<u64>>,
    pub al: Vec<u8>,
    pub alive: bool,
    /// The world's time when this node last acted (its engine's clock at attach).
    pub now: Time,
    pub logs: Vec<String>,
    pub last_uuid: GenUuid,
    /// This node's own commands allow the next current-UUID change (promotion, ncu).
    pub uuid_change_ok: bool,
    /// How its engine is configured (a restart builds the engine from it again).
    cfg: EngineConfig,
    /// Handlers the engine asked for, in order.
    pub handlers: Vec<Handler>,
    /// What every handler "exits" with, answered at once (a missing handler exits 0, as
    /// drbdadm's does).
    pub handler_exit: Option<i32>,
}

impl Node {
    /// A node with fresh metadata for its configured peers, attached; `disk: false` makes a
    /// diskless client (`disk none;`), which never attaches.
    pub fn new(id: usize, seed: u64, cfg: EngineConfig, disk: bool) -> Node {
        let peers: Vec<NodeId> = cfg.peers.iter().map(|p| p.node_id).collect();
        let layout = Layout::compute(DISK, Placement::Internal, peers.len() as u32, AL_BLOCKS)
            .expect("layout");
        let sb = Superblock::new(&layout, NodeId(id as u8), AL_EXTENTS, seed ^ 0x5eed, &peers);
        let nwords = layout.bm_bits().div_ceil(64) as usize;
        let n = layout.data_bytes as usize;
        let mut node = Node {
            id,
            engine: Engine::new(cfg.clone()),
            cfg,
            durable: vec![0; n],
            visible: vec![0; n],
            unflushed: Vec::new(),
            pending: Vec::new(),
            last_uuid: sb.current_uuid,
            sb,
            bm_words: vec![vec![0; nwords]; peers.len()],
            al: al::initial_area(AL_BLOCKS, AL_EXTENTS),
            layout,
            alive: true,
            now: Time::default(),
            logs: Vec::new(),
            uuid_change_ok: false,
            handlers: Vec::new(),
            handler_exit: Some(0),
        };
        if disk {
            node.attach();
        }
        node
    }

    pub fn attach(&mut self) {
        let bits = self.layout.bm_bits();
        let a = Attached {
            sb: self.sb.clone(),
            data_bytes: self.layout.data_bytes,
            user_bytes: 0,
            bitmaps: self
                .bm_words
                .iter()
                .map(|w| Bitmap::from_words(bits, w.clone()).expect("bitmap"))
                .collect(),
            al: al::recover(&self.al, self.sb.al_extents).ok(),
            al_blocks: AL_BLOCKS,
            on_io_error: udrbd::config::OnIoError::Detach,
            disk_flushes: true,
        };
        self.engine.handle(self.now, Input::Attach(Box::new(a)));
    }

    /// The status of its first configured peer (a pair's only one).
    pub fn status_peer(&self) -> PeerStatus {
        self.engine.status().peers[0].clone()
    }

    /// Connected to its first peer and past the handshake's decision.
    pub fn connected(&self) -> bool {
        let p = self.status_peer();
        self.alive && p.conn == ConnState::Connected && p.repl != ReplState::Off
    }

    /// As this node sees it, its first peer has a disk that gets replicated writes (a
    /// Diskless or failed one is marked out of sync instead).
    pub fn peer_has_disk(&self) -> bool {
        let d = self.status_peer().disk;
        d >= DiskState::Inconsistent && d != DiskState::DUnknown
    }

    pub fn uuid(&self) -> GenUuid {
        self.engine
            .superblock()
            .map(|s| s.current_uuid)
            .unwrap_or_default()
    }

    /// Bits set in its bitmap for its first peer.
    pub fn oos_bits(&self) -> u64 {
        let peer = self.cfg.peers[0].node_id;
        self.engine.peer_bitmap(peer).map_or(0, |b| b.count())
    }

    pub fn write_data(&mut self, op: &IoOp) {
        let (offset, data) = match op {
            IoOp::Write { offset, data, .. } => (*offset, data.to_vec()),
            IoOp::Trim { offset, len, .. } | IoOp::WriteZeroes { offset, len, .. } => {
                (*offset, vec![0; *len as usize])
            }
            _ => return,
        };
        let fua = match op {
            IoOp::Write { fua, .. } | IoOp::Trim { fua, .. } | IoOp::WriteZeroes { fua, .. } => {
                *fua
            }
            _ => false,
        };
        let at = offset as usize;
        self.visible[at..at + data.len()].copy_from_slice(&data);
        if fua {
            self.durable[at..at + data.len()].copy_from_slice(&data);
        }
        self.unflushed.push((offset, data, fua));
    }

    pub fn flush(&mut self) {
        for (offset, data, _) in self.unflushed.drain(..) {
            let at = offset as usize;
            self.durable[at..at + data.len()].copy_from_slice(&data);
        }
    }

    /// Power loss: each unflushed (or in-flight) write survives or not; FUA ones do. A
    /// metadata write in flight lands, is lost, or is torn: a superblock slot keeps the
    /// previous one valid (two slots), a torn AL block fails its checksum, each bitmap page of
    /// a flush lands or not.
    pub fn power_loss(&mut self, rng: &mut Rng) {
        for p in std::mem::take(&mut self.pending) {
            match p.work {
                Work::Data { op, .. } => {
                    if rng.chance(500) {
                        self.write_data(&op);
                    }
                }
                Work::Meta { sb, .. } => {
                    if rng.chance(500) {
                        self.sb = *sb;
                    }
                }
                Work::Al { block, tr, .. } => {
                    let at = block as usize % AL_BLOCKS as usize * al::AL_BLOCK;
                    match rng.below(3) {
                        0 => self.al[at..at + al::AL_BLOCK]
                            .copy_from_slice(&al::encode_transaction(&tr)),
                        1 => {
                            self.al[at + 2000..at + 2008].copy_from_slice(&rng.next().to_le_bytes())
                        }
                        _ => {}
                    }
                }
                Work::Bitmap { pages } => {
                    for (idx, page, words) in pages {
                        if rng.chance(500) {
                            self.write_bitmap_page(idx, page, &words);
                        }
                    }
                }
            }
        }
        for (offset, data, fua) in std::mem::take(&mut self.unflushed) {
            if fua || rng.chance(500) {
                let at = offset as usize;
                self.durable[at..at + data.len()].copy_from_slice(&data);
            }
        }
        self.visible = self.durable.clone();
        self.alive = false;
    }

    fn write_bitmap_page(&mut self, idx: u32, page: u32, words: &[u64]) {
        let Some(bm) = self.bm_words.get_mut(idx as usize) else {
            panic!("bitmap index {idx} beyond the peer slots");
        };
        let at = page as usize * BM_WORDS_PER_PAGE;
        let end = (at + words.len()).min(bm.len());
        bm[at..end].copy_from_slice(&words[..end - at]);
    }

    /// Restarts after a crash from what its devices hold (`disk: false`: a diskless client).
    pub fn restart(&mut self, seed: u64, now: Time, disk: bool) {
        self.now = now;
        self.engine = Engine::new(EngineConfig {
            uuid_seed: seed,
            ..self.cfg.clone()
        });
        self.alive = true;
        if disk {
            self.attach();
        }
        self.last_uuid = self.uuid();
    }

    /// Finishes metadata work: it lands (after the cache flush a metadata write does, which
    /// flushes the data too when `flushes_data`: internal metadata on the same device) or
    /// fails. Returns the engine's input for it.
    pub fn finish_meta(&mut self, work: Work, fail: bool, flushes_data: bool) -> Input {
        let err = |area| {
            Err(MetaError::Io {
                area,
                errno: libc::EIO,
                detail: "injected metadata I/O error".into(),
            })
        };
        if !fail && flushes_data {
            self.flush();
        }
        match work {
            Work::Meta { generation, sb } => {
                if !fail {
                    self.sb = *sb;
                }
                Input::MetaWritten {
                    generation,
                    result: if fail {
                        err(MetaArea::Superblock)
                    } else {
                        Ok(())
                    },
                }
            }
            Work::Al { seq, block, tr } => {
                if !fail {
                    let at = block as usize % AL_BLOCKS as usize * al::AL_BLOCK;
                    self.al[at..at + al::AL_BLOCK].copy_from_slice(&al::encode_transaction(&tr));
                }
                Input::AlWritten {
                    seq,
                    result: if fail {
                        err(MetaArea::ActivityLog)
                    } else {
                        Ok(())
                    },
                }
            }
            Work::Bitmap { pages } => {
                if !fail {
                    for (idx, page, words) in pages {
                        self.write_bitmap_page(idx, page, &words);
                    }
                }
                Input::BitmapWritten {
                    result: if fail { err(MetaArea::Bitmap) } else { Ok(()) },
                }
            }
            Work::Data { .. } => unreachable!("data work is completed by the caller"),
        }
    }

    /// 4 KiB blocks of the extents its persisted activity log holds hot.
    pub fn al_hot_blocks(&self) -> std::collections::BTreeSet<u64> {
        let per = udrbd::types::AL_EXTENT_SIZE / udrbd::types::BM_BLOCK_SIZE;
        let bits = self.layout.bm_bits();
        let hot = al::recover(&self.al, self.sb.al_extents)
            .map(|r| r.extents)
            .unwrap_or_default();
        hot.iter()
            .flat_map(|e| u64::from(e.0) * per..((u64::from(e.0) + 1) * per).min(bits))
            .collect()
    }
}
