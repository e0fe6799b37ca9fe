//! The superblock: two 4 KiB slots, each self-checking.
//!
//! A writer always overwrites the slot that does NOT hold the newest generation, with the
//! sequence number one higher; a reader takes the valid slot with the highest sequence. A write
//! torn at any byte therefore corrupts only the slot being written (its CRC fails) and the
//! other slot, the previous generation, stays readable.
//!
//! Slot layout (little endian; unlisted bytes are zero):
//!
//! | off | field | off | field |
//! |---|---|---|---|
//! | 0 | magic `udrbd-sb` | 56 | indexed slot number u32 |
//! | 8 | format version u32 (1) | 60 | bitmap block size u32 (4096) |
//! | 12 | CRC32C of the slot with this field zero | 64 | al-extents u32 |
//! | 16 | sequence u64 | 68 | AL blocks u32 |
//! | 24 | last agreed size, sectors u64 | 72 | md size, 4 KiB blocks u32 |
//! | 32 | device UUID u64 | 76 | AL offset in md area, 4 KiB blocks u32 |
//! | 40 | current UUID u64 | 80 | bitmap offset in md area, 4 KiB blocks u32 |
//! | 48 | device flags u32 (DRBD's MDF_* values) | 84 | bitmap pages per peer u32 |
//! | 52 | node id u8, max peers u8, placement u8 | 88 | last agreed peer max bio size u32 |
//! | 96 | 32 history UUIDs u64 | 352 | 31 peer slots of 16 bytes |
//!
//! Peer slot: bitmap UUID u64, flags u32 (DRBD's MDF_PEER_* values), node id u8 (0xFF unused),
//! bitmap index u8 (0xFF none), 2 reserved bytes.

use super::layout::{self, BLOCK, Layout, MAX_AL_BLOCKS, MIN_AL_BLOCKS, Placement};
use super::{crc_with_hole, get_u32, get_u64, put};
use crate::types::{GenUuid, HISTORY_UUIDS, MAX_NODE_ID, MAX_PEERS, NodeId};

/// Bytes of one slot.
pub const SLOT_SIZE: usize = 4096;
/// First 8 bytes of every udrbd superblock slot.
pub const MAGIC: [u8; 8] = *b"udrbd-sb";
/// The only format version this code reads and writes.
pub const VERSION: u32 = 1;
const CRC_AT: usize = 12;
const HISTORY_AT: usize = 96;
const PEERS_AT: usize = HISTORY_AT + 8 * HISTORY_UUIDS;
const PEER_SIZE: usize = 16;
/// Peer slots in a superblock.
pub const PEER_SLOTS: usize = MAX_PEERS as usize;
const UNUSED: u8 = 0xFF;

/// DRBD's superblock magics (`DRBD_MAGIC + 4/5/6`, big endian at byte 60), recognised only to
/// say what was found.
const DRBD_MAGICS: [(u32, &str); 3] = [
    (0x8374_026B, "DRBD v08"),
    (0x8374_026C, "DRBD v08 (unclean)"),
    (0x8374_026D, "DRBD v09"),
];

/// Device flags: DRBD's `MDF_*` bit values, so dumps read the same.
pub mod flags {
    pub const CONSISTENT: u32 = 1 << 0;
    pub const PRIMARY_IND: u32 = 1 << 1;
    pub const WAS_UP_TO_DATE: u32 = 1 << 4;
    pub const CRASHED_PRIMARY: u32 = 1 << 6;
    pub const AL_CLEAN: u32 = 1 << 7;
    pub const AL_DISABLED: u32 = 1 << 8;
    pub const PRIMARY_LOST_QUORUM: u32 = 1 << 9;
}

/// Per-peer flags: DRBD's `MDF_PEER_*` bit values.
pub mod peer_flags {
    pub const CONNECTED: u32 = 1 << 0;
    pub const OUTDATED: u32 = 1 << 1;
    pub const FENCING: u32 = 1 << 2;
    pub const FULL_SYNC: u32 = 1 << 3;
    pub const SEEN: u32 = 1 << 4;
    pub const EXISTS: u32 = 1 << 16;
}

/// Why a slot cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SbError {
    #[error("short superblock ({0} bytes)")]
    TooShort(usize),
    #[error("no udrbd meta data signature")]
    NoMagic,
    #[error("found a {0} superblock (DRBD's format, not udrbd's)")]
    ForeignDrbd(&'static str),
    #[error("bad checksum (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("unsupported udrbd meta data version {0}")]
    UnsupportedVersion(u32),
    #[error("inconsistent geometry: {0}")]
    InconsistentGeometry(String),
}

/// Where the AL and bitmap are, relative to the metadata area, so reading needs no config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// 0 internal, 1 external, 2 indexed.
    pub placement: u8,
    pub index: u32,
    pub md_size_4k: u32,
    pub al_offset_4k: u32,
    pub al_blocks: u32,
    pub bm_offset_4k: u32,
    pub bm_pages_per_peer: u32,
    pub max_peers: u32,
}

impl Geometry {
    /// The geometry of a computed layout.
    pub fn of(l: &Layout) -> Geometry {
        let rel = |off: u64| ((off - l.md_offset) / BLOCK) as u32;
        Geometry {
            placement: l.placement.kind(),
            index: match l.placement {
                Placement::Indexed { index, .. } => index,
                _ => 0,
            },
            md_size_4k: (l.md_size / BLOCK) as u32,
            al_offset_4k: rel(l.al_offset),
            al_blocks: l.al_blocks,
            bm_offset_4k: rel(l.bm_offset),
            bm_pages_per_peer: l.bm_pages_per_peer,
            max_peers: l.max_peers,
        }
    }

    /// Offset of superblock slot A within the metadata area, in 4 KiB blocks.
    pub fn sb_offset_4k(&self) -> u32 {
        if self.placement == 0 {
            self.md_size_4k.saturating_sub(2)
        } else {
            0
        }
    }

    /// Checks that the regions are where this format puts them; foreign bytes that happen to
    /// pass the CRC still cannot point reads outside the metadata area.
    fn check(&self) -> Result<(), String> {
        if !(1..=MAX_PEERS).contains(&self.max_peers) {
            return Err(format!("max-peers {}", self.max_peers));
        }
        if !(MIN_AL_BLOCKS..=MAX_AL_BLOCKS).contains(&self.al_blocks) {
            return Err(format!("{} activity log blocks", self.al_blocks));
        }
        if self.bm_pages_per_peer == 0 {
            return Err("empty bitmap".into());
        }
        let bm = u64::from(self.bm_pages_per_peer) * u64::from(self.max_peers);
        let al = u64::from(self.al_blocks);
        let (al_at, bm_at, size) = match self.placement {
            0 => (bm, 0, bm + al + 2),
            1 | 2 => (2, 2 + al, 2 + al + bm),
            p => return Err(format!("placement code {p}")),
        };
        if u64::from(self.al_offset_4k) != al_at
            || u64::from(self.bm_offset_4k) != bm_at
            || u64::from(self.md_size_4k) != size
        {
            return Err("activity log / bitmap offsets do not match their sizes".into());
        }
        Ok(())
    }
}

/// One peer slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerMd {
    /// The peer this slot tracks; None = unused.
    pub node_id: Option<NodeId>,
    pub bitmap_uuid: GenUuid,
    /// Which per-peer bitmap belongs to this peer.
    pub bitmap_index: Option<u8>,
    /// `peer_flags::*`.
    pub flags: u32,
}

impl PeerMd {
    /// An unused slot.
    pub const UNUSED: PeerMd = PeerMd {
        node_id: None,
        bitmap_uuid: GenUuid::ZERO,
        bitmap_index: None,
        flags: 0,
    };
}

/// The decoded contents of a slot (the sequence number travels separately).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Last agreed size in 512-byte sectors.
    pub la_size_sect: u64,
    pub node_id: NodeId,
    pub bm_block_size: u32,
    pub al_extents: u32,
    pub geometry: Geometry,
    pub device_uuid: u64,
    /// `flags::*`.
    pub flags: u32,
    pub current_uuid: GenUuid,
    pub history: [GenUuid; HISTORY_UUIDS],
    pub peers: [PeerMd; PEER_SLOTS],
    pub la_peer_max_bio_size: u32,
}

impl Superblock {
    /// The superblock create-md writes: just-created current UUID, no history, AL clean
    /// (drbdmeta's initial flags), Inconsistent.
    pub fn new(
        layout: &Layout,
        node_id: NodeId,
        al_extents: u32,
        device_uuid: u64,
        peer_node_ids: &[NodeId],
    ) -> Superblock {
        let mut peers = [PeerMd::UNUSED; PEER_SLOTS];
        for (i, (slot, id)) in peers.iter_mut().zip(peer_node_ids).enumerate() {
            if (i as u32) < layout.max_peers {
                *slot = PeerMd {
                    node_id: Some(*id),
                    bitmap_uuid: GenUuid::ZERO,
                    bitmap_index: Some(i as u8),
                    flags: 0,
                };
            }
        }
        Superblock {
            la_size_sect: layout.data_bytes / 512,
            node_id,
            bm_block_size: crate::types::BM_BLOCK_SIZE as u32,
            al_extents,
            geometry: Geometry::of(layout),
            device_uuid,
            flags: flags::AL_CLEAN,
            current_uuid: GenUuid::JUST_CREATED,
            history: [GenUuid::ZERO; HISTORY_UUIDS],
            peers,
            la_peer_max_bio_size: 0,
        }
    }

    /// Makes `uuid` the newest history UUID (the oldest falls off).
    pub fn push_history(&mut self, uuid: GenUuid) {
        self.history.rotate_right(1);
        self.history[0] = uuid;
    }

    /// The peer slot tracking `node`, if any.
    pub fn peer(&self, node: NodeId) -> Option<&PeerMd> {
        self.peers.iter().find(|p| p.node_id == Some(node))
    }

    /// Bitmap capacity in bytes of data covered per peer.
    pub fn bm_capacity_bytes(&self) -> u64 {
        u64::from(self.geometry.bm_pages_per_peer) * layout::BM_BITS_PER_PAGE * BLOCK
    }

    fn check(&self) -> Result<(), String> {
        self.geometry.check()?;
        if self.bm_block_size != crate::types::BM_BLOCK_SIZE as u32 {
            return Err(format!("bitmap block size {}", self.bm_block_size));
        }
        let max_al = super::al::max_al_extents(self.geometry.al_blocks);
        if self.al_extents == 0 || self.al_extents > max_al {
            return Err(format!(
                "al-extents {} (this activity log holds at most {max_al})",
                self.al_extents
            ));
        }
        if self.node_id.0 > MAX_NODE_ID {
            return Err(format!("node-id {}", self.node_id));
        }
        for p in &self.peers {
            if p.node_id.is_some_and(|n| n.0 > MAX_NODE_ID) {
                return Err("peer node-id out of range".into());
            }
            if p.bitmap_index
                .is_some_and(|b| u32::from(b) >= self.geometry.max_peers)
            {
                return Err("peer bitmap index beyond max-peers".into());
            }
        }
        if self.la_size_sect.saturating_mul(512) > self.bm_capacity_bytes() {
            return Err("last agreed size exceeds what the bitmap covers".into());
        }
        Ok(())
    }
}

/// A valid slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedSlot {
    pub seq: u64,
    pub sb: Superblock,
}

/// Encodes `sb` with sequence number `seq` into one slot.
pub fn encode_slot(sb: &Superblock, seq: u64) -> [u8; SLOT_SIZE] {
    let mut b = [0u8; SLOT_SIZE];
    let g = &sb.geometry;
    put(&mut b, 0, &MAGIC);
    put(&mut b, 8, &VERSION.to_le_bytes());
    put(&mut b, 16, &seq.to_le_bytes());
    put(&mut b, 24, &sb.la_size_sect.to_le_bytes());
    put(&mut b, 32, &sb.device_uuid.to_le_bytes());
    put(&mut b, 40, &sb.current_uuid.0.to_le_bytes());
    put(&mut b, 48, &sb.flags.to_le_bytes());
    put(&mut b, 52, &[sb.node_id.0, g.max_peers as u8, g.placement]);
    for (off, v) in [
        (56, g.index),
        (60, sb.bm_block_size),
        (64, sb.al_extents),
        (68, g.al_blocks),
        (72, g.md_size_4k),
        (76, g.al_offset_4k),
        (80, g.bm_offset_4k),
        (84, g.bm_pages_per_peer),
        (88, sb.la_peer_max_bio_size),
    ] {
        put(&mut b, off, &v.to_le_bytes());
    }
    for (i, h) in sb.history.iter().enumerate() {
        put(&mut b, HISTORY_AT + 8 * i, &h.0.to_le_bytes());
    }
    for (i, p) in sb.peers.iter().enumerate() {
        let at = PEERS_AT + PEER_SIZE * i;
        put(&mut b, at, &p.bitmap_uuid.0.to_le_bytes());
        put(&mut b, at + 8, &p.flags.to_le_bytes());
        put(
            &mut b,
            at + 12,
            &[
                p.node_id.map_or(UNUSED, |n| n.0),
                p.bitmap_index.unwrap_or(UNUSED),
            ],
        );
    }
    let crc = crc_with_hole(&b, CRC_AT);
    put(&mut b, CRC_AT, &crc.to_le_bytes());
    b
}

/// Decodes one slot. Never panics, whatever the bytes.
pub fn decode_slot(buf: &[u8]) -> Result<DecodedSlot, SbError> {
    if buf.len() < SLOT_SIZE {
        return Err(SbError::TooShort(buf.len()));
    }
    let b = &buf[..SLOT_SIZE];
    if b[..8] != MAGIC {
        let be = b
            .get(60..64)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        if let Some((_, name)) = DRBD_MAGICS.iter().find(|(m, _)| *m == be) {
            return Err(SbError::ForeignDrbd(name));
        }
        return Err(SbError::NoMagic);
    }
    let stored = get_u32(b, CRC_AT);
    let computed = crc_with_hole(b, CRC_AT);
    if stored != computed {
        return Err(SbError::BadChecksum { stored, computed });
    }
    let version = get_u32(b, 8);
    if version != VERSION {
        return Err(SbError::UnsupportedVersion(version));
    }
    let geometry = Geometry {
        placement: b[54],
        index: get_u32(b, 56),
        md_size_4k: get_u32(b, 72),
        al_offset_4k: get_u32(b, 76),
        al_blocks: get_u32(b, 68),
        bm_offset_4k: get_u32(b, 80),
        bm_pages_per_peer: get_u32(b, 84),
        max_peers: u32::from(b[53]),
    };
    let mut history = [GenUuid::ZERO; HISTORY_UUIDS];
    for (i, h) in history.iter_mut().enumerate() {
        *h = GenUuid(get_u64(b, HISTORY_AT + 8 * i));
    }
    let mut peers = [PeerMd::UNUSED; PEER_SLOTS];
    for (i, p) in peers.iter_mut().enumerate() {
        let at = PEERS_AT + PEER_SIZE * i;
        let opt = |v: u8| (v != UNUSED).then_some(v);
        *p = PeerMd {
            bitmap_uuid: GenUuid(get_u64(b, at)),
            flags: get_u32(b, at + 8),
            node_id: opt(b[at + 12]).map(NodeId),
            bitmap_index: opt(b[at + 13]),
        };
    }
    let sb = Superblock {
        la_size_sect: get_u64(b, 24),
        node_id: NodeId(b[52]),
        bm_block_size: get_u32(b, 60),
        al_extents: get_u32(b, 64),
        geometry,
        device_uuid: get_u64(b, 32),
        flags: get_u32(b, 48),
        current_uuid: GenUuid(get_u64(b, 40)),
        history,
        peers,
        la_peer_max_bio_size: get_u32(b, 88),
    };
    sb.check().map_err(SbError::InconsistentGeometry)?;
    Ok(DecodedSlot {
        seq: get_u64(b, 16),
        sb,
    })
}

/// The newest valid slot of the pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// 0 = slot A, 1 = slot B.
    pub slot: usize,
    pub seq: u64,
    pub sb: Superblock,
}

/// Neither slot is valid; why, per slot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("slot A: {a}; slot B: {b}")]
pub struct NoValidSlot {
    pub a: SbError,
    pub b: SbError,
}

/// Picks the valid slot with the highest sequence number (slot A on a tie, which writers never
/// produce).
pub fn choose(a: &[u8], b: &[u8]) -> Result<Chosen, NoValidSlot> {
    match (decode_slot(a), decode_slot(b)) {
        (Ok(x), Ok(y)) if y.seq > x.seq => Ok(Chosen {
            slot: 1,
            seq: y.seq,
            sb: y.sb,
        }),
        (Ok(x), _) => Ok(Chosen {
            slot: 0,
            seq: x.seq,
            sb: x.sb,
        }),
        (Err(_), Ok(y)) => Ok(Chosen {
            slot: 1,
            seq: y.seq,
            sb: y.sb,
        }),
        (Err(a), Err(b)) => Err(NoValidSlot { a, b }),
    }
}

/// Slot and sequence number for the next write, given the current newest `(slot, seq)`:
/// the other slot, one higher. With nothing valid, slot A with sequence 1.
pub fn next_write(current: Option<(usize, u64)>) -> (usize, u64) {
    match current {
        Some((slot, seq)) => (1 - slot.min(1), seq.wrapping_add(1)),
        None => (0, 1),
    }
}
