//! Activity log: which 4 MiB extents may have writes in flight, so that after a Primary crash
//! only those (plus the bitmap) need resyncing.
//!
//! On disk it is a ring of 4 KiB transaction blocks; transaction `n` goes to block
//! `n % nblocks`. Each block carries up to 64 slot updates (slot -> extent) and a window of 919
//! context entries (the full slot table, a window at a time, rotating), like DRBD's
//! `al_transaction_on_disk`. Replaying the valid blocks oldest to newest (context first, then
//! updates) rebuilds the slot table: every slot was last described either by an update that is
//! still in the ring or by a context window written after it.
//!
//! **Capacity**: the newest transaction may be torn by the crash, so the windows of the other
//! `nblocks - 1` blocks must cover the table: `max al-extents = 919 x (nblocks - 1)`, capped at
//! 65534 (slot numbers are u16; DRBD's `AL_EXTENTS_MAX`). Default 8 blocks (32 KiB) -> 6433,
//! DRBD's figure; the default 1237 fits.
//!
//! Block layout (little endian): magic u32 `udal`, CRC32C u32 (field zeroed), transaction
//! number u64, type u16 (0 update, 0xFFFF initialized), update count u16, context size u32
//! (= al-extents), context start slot u32, 8 reserved bytes, 64 update slots u16 (0xFFFF
//! unused), 64 update extents u32, 919 context extents u32 (0xFFFFFFFF empty).

use std::collections::{BTreeSet, HashMap};

use super::{crc_with_hole, get_u16, get_u32, get_u64, put};
use crate::types::ExtentNr;

/// Bytes of one transaction block.
pub const AL_BLOCK: usize = 4096;
/// Slot updates per transaction.
pub const UPDATES_PER_TR: usize = 64;
/// Context entries per transaction.
pub const CONTEXT_PER_TR: usize = 919;
/// Highest al-extents (u16 slot numbers, one value reserved).
pub const AL_EXTENTS_MAX: u32 = 65534;
/// DRBD's default `al-extents`.
pub const DEFAULT_AL_EXTENTS: u32 = 1237;
const MAGIC: u32 = u32::from_le_bytes(*b"udal");
const CRC_AT: usize = 4;
const UPD_SLOT_AT: usize = 36;
const UPD_EXT_AT: usize = UPD_SLOT_AT + 2 * UPDATES_PER_TR;
const CTX_AT: usize = UPD_EXT_AT + 4 * UPDATES_PER_TR;
const EMPTY: u32 = u32::MAX;
const NO_SLOT: u16 = u16::MAX;

/// Most al-extents a ring of `nblocks` transaction blocks can hold (see module docs).
pub fn max_al_extents(nblocks: u32) -> u32 {
    let n = u64::from(nblocks.saturating_sub(1)) * CONTEXT_PER_TR as u64;
    n.min(u64::from(AL_EXTENTS_MAX)) as u32
}

/// Transaction type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrKind {
    Update,
    /// Written by create-md (and after apply-al): no updates, empty context.
    Initialized,
}

/// One transaction, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub tr_number: u64,
    pub kind: TrKind,
    /// al-extents at the time of writing (the slot table size).
    pub al_extents: u32,
    /// (slot, extent) pairs, at most 64.
    pub updates: Vec<(u16, ExtentNr)>,
    /// First slot of the context window.
    pub context_start: u32,
    /// The window: slot `context_start + i` holds `context[i]`. At most 919 entries.
    pub context: Vec<Option<ExtentNr>>,
}

impl Transaction {
    /// The ring block this transaction must be written to.
    pub fn block_index(&self, nblocks: u32) -> u32 {
        (self.tr_number % u64::from(nblocks.max(1))) as u32
    }
}

/// Why a block is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlBlockError {
    #[error("short block ({0} bytes)")]
    TooShort(usize),
    #[error("no activity log signature")]
    NoMagic,
    #[error("bad checksum")]
    BadChecksum,
    #[error("malformed transaction: {0}")]
    Malformed(&'static str),
}

/// Why the log as a whole is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlError {
    #[error("No usable activity log found. Do you need to create-md?")]
    NoUsableLog,
    #[error("activity log area of {0} bytes is not a whole number of 4 KiB blocks")]
    BadAreaSize(usize),
}

/// Encodes one transaction block. Updates beyond 64 and context beyond 919 are dropped (the
/// in-memory log never produces them).
pub fn encode_transaction(tr: &Transaction) -> [u8; AL_BLOCK] {
    let mut b = [0u8; AL_BLOCK];
    put(&mut b, 0, &MAGIC.to_le_bytes());
    put(&mut b, 8, &tr.tr_number.to_le_bytes());
    let kind: u16 = match tr.kind {
        TrKind::Update => 0,
        TrKind::Initialized => 0xFFFF,
    };
    put(&mut b, 16, &kind.to_le_bytes());
    let n = tr.updates.len().min(UPDATES_PER_TR);
    put(&mut b, 18, &(n as u16).to_le_bytes());
    put(&mut b, 20, &tr.al_extents.to_le_bytes());
    put(&mut b, 24, &tr.context_start.to_le_bytes());
    for i in 0..UPDATES_PER_TR {
        let (slot, ext) = tr
            .updates
            .get(i)
            .map_or((NO_SLOT, EMPTY), |(s, e)| (*s, e.0));
        put(&mut b, UPD_SLOT_AT + 2 * i, &slot.to_le_bytes());
        put(&mut b, UPD_EXT_AT + 4 * i, &ext.to_le_bytes());
    }
    for i in 0..CONTEXT_PER_TR {
        let e = tr.context.get(i).copied().flatten().map_or(EMPTY, |e| e.0);
        put(&mut b, CTX_AT + 4 * i, &e.to_le_bytes());
    }
    let crc = crc_with_hole(&b, CRC_AT);
    put(&mut b, CRC_AT, &crc.to_le_bytes());
    b
}

/// Decodes one block. Never panics, whatever the bytes.
pub fn decode_transaction(buf: &[u8]) -> Result<Transaction, AlBlockError> {
    if buf.len() < AL_BLOCK {
        return Err(AlBlockError::TooShort(buf.len()));
    }
    let b = &buf[..AL_BLOCK];
    if get_u32(b, 0) != MAGIC {
        return Err(AlBlockError::NoMagic);
    }
    if get_u32(b, CRC_AT) != crc_with_hole(b, CRC_AT) {
        return Err(AlBlockError::BadChecksum);
    }
    let kind = match get_u16(b, 16) {
        0 => TrKind::Update,
        0xFFFF => TrKind::Initialized,
        _ => return Err(AlBlockError::Malformed("transaction type")),
    };
    let n = usize::from(get_u16(b, 18));
    if n > UPDATES_PER_TR {
        return Err(AlBlockError::Malformed("update count"));
    }
    let al_extents = get_u32(b, 20);
    let context_start = get_u32(b, 24);
    if al_extents == 0 || al_extents > AL_EXTENTS_MAX || context_start >= al_extents {
        return Err(AlBlockError::Malformed("context size or start"));
    }
    let mut updates = Vec::with_capacity(n);
    for i in 0..n {
        let slot = get_u16(b, UPD_SLOT_AT + 2 * i);
        let ext = get_u32(b, UPD_EXT_AT + 4 * i);
        if u32::from(slot) >= al_extents || ext == EMPTY {
            return Err(AlBlockError::Malformed("update slot"));
        }
        updates.push((slot, ExtentNr(ext)));
    }
    let window = (al_extents - context_start).min(CONTEXT_PER_TR as u32) as usize;
    let context = (0..window)
        .map(|i| {
            let e = get_u32(b, CTX_AT + 4 * i);
            (e != EMPTY).then_some(ExtentNr(e))
        })
        .collect();
    Ok(Transaction {
        tr_number: get_u64(b, 8),
        kind,
        al_extents,
        updates,
        context_start,
        context,
    })
}

/// The context window that follows one starting at `start`.
fn next_context_start(start: u32, al_extents: u32) -> u32 {
    let n = start.saturating_add(CONTEXT_PER_TR as u32);
    if n >= al_extents { 0 } else { n }
}

/// The ring as create-md writes it: `nblocks` initialized transactions (numbers 0..nblocks)
/// whose windows together say "every slot empty".
pub fn initial_area(nblocks: u32, al_extents: u32) -> Vec<u8> {
    let mut area = Vec::with_capacity(nblocks as usize * AL_BLOCK);
    let mut start = 0;
    for i in 0..nblocks {
        let window = (al_extents.saturating_sub(start)).min(CONTEXT_PER_TR as u32);
        let tr = Transaction {
            tr_number: u64::from(i),
            kind: TrKind::Initialized,
            al_extents,
            updates: Vec::new(),
            context_start: start,
            context: vec![None; window as usize],
        };
        area.extend_from_slice(&encode_transaction(&tr));
        start = next_context_start(start, al_extents);
    }
    area
}

/// What replaying the ring found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlRecovery {
    /// Hot extents, sorted, deduplicated: the ones to mark out of sync after a crash.
    pub extents: Vec<ExtentNr>,
    /// The slot table (length al-extents), to rebuild the in-memory log.
    pub slots: Vec<Option<ExtentNr>>,
    /// Number for the next transaction.
    pub next_tr: u64,
    /// Context window start for the next transaction.
    pub next_context_start: u32,
    pub valid_blocks: usize,
    /// Torn, corrupt, or written for another al-extents; skipped as DRBD does.
    pub corrupt_blocks: usize,
}

/// Replays the valid blocks of `area` in transaction order. Corrupt blocks are skipped.
pub fn recover(area: &[u8], al_extents: u32) -> Result<AlRecovery, AlError> {
    if area.is_empty() || !area.len().is_multiple_of(AL_BLOCK) {
        return Err(AlError::BadAreaSize(area.len()));
    }
    let nblocks = area.len() / AL_BLOCK;
    let mut valid: Vec<Transaction> = area
        .chunks_exact(AL_BLOCK)
        .filter_map(|b| decode_transaction(b).ok())
        .filter(|t| t.al_extents == al_extents)
        .collect();
    if valid.is_empty() {
        return Err(AlError::NoUsableLog);
    }
    valid.sort_by_key(|t| t.tr_number);
    let mut slots = vec![None; al_extents as usize];
    for t in &valid {
        for (i, e) in t.context.iter().enumerate() {
            if let Some(s) = slots.get_mut(t.context_start as usize + i) {
                *s = *e;
            }
        }
        for (slot, e) in &t.updates {
            if let Some(s) = slots.get_mut(usize::from(*slot)) {
                *s = Some(*e);
            }
        }
    }
    let mut extents: Vec<ExtentNr> = slots.iter().flatten().copied().collect();
    extents.sort();
    extents.dedup();
    let (next_tr, next_context_start) = match valid.last() {
        Some(t) => (
            t.tr_number.wrapping_add(1),
            next_context_start(t.context_start, al_extents),
        ),
        None => (0, 0),
    };
    Ok(AlRecovery {
        extents,
        slots,
        next_tr,
        next_context_start,
        valid_blocks: valid.len(),
        corrupt_blocks: nblocks - valid.len(),
    })
}

/// The in-memory activity log: an LRU of at most al-extents hot extents.
#[derive(Clone, Debug)]
pub struct ActivityLog {
    slots: Vec<Option<ExtentNr>>,
    /// Last-use stamp per slot.
    stamp: Vec<u64>,
    /// (stamp, slot) of occupied slots; the first is the least recently used.
    lru: BTreeSet<(u64, u32)>,
    index: HashMap<ExtentNr, u32>,
    free: Vec<u32>,
    clock: u64,
    next_tr: u64,
    context_start: u32,
}

impl ActivityLog {
    /// An empty log of `al_extents` slots whose next transaction is `next_tr` (after
    /// create-md: the ring size).
    pub fn new(al_extents: u32, next_tr: u64) -> ActivityLog {
        let n = al_extents.clamp(1, AL_EXTENTS_MAX);
        ActivityLog {
            slots: vec![None; n as usize],
            stamp: vec![0; n as usize],
            lru: BTreeSet::new(),
            index: HashMap::new(),
            free: (0..n).rev().collect(),
            clock: 0,
            next_tr,
            context_start: 0,
        }
    }

    /// Continues from what [`recover`] found. The recovered extents start out equally old.
    pub fn from_recovery(rec: &AlRecovery) -> ActivityLog {
        let mut al = ActivityLog::new(rec.slots.len() as u32, rec.next_tr);
        al.context_start = rec.next_context_start;
        al.free.clear();
        for (i, e) in rec.slots.iter().enumerate().rev() {
            let slot = i as u32;
            match e {
                Some(e) if !al.index.contains_key(e) => {
                    al.slots[i] = Some(*e);
                    al.index.insert(*e, slot);
                    al.lru.insert((0, slot));
                }
                _ => al.free.push(slot),
            }
        }
        al
    }

    /// Records a write into extent `e`. Returns None if `e` is hot (the write may be issued at
    /// once), else the transaction that makes it hot, evicting the least recently used extent
    /// if the log is full: persist it before issuing the write.
    pub fn access(&mut self, e: ExtentNr) -> Option<Transaction> {
        self.clock += 1;
        if let Some(&slot) = self.index.get(&e) {
            self.touch(slot);
            return None;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let (_, victim) = self.lru.pop_first()?;
                if let Some(old) = self.slots[victim as usize].take() {
                    self.index.remove(&old);
                }
                victim
            }
        };
        self.slots[slot as usize] = Some(e);
        self.index.insert(e, slot);
        self.stamp[slot as usize] = self.clock;
        self.lru.insert((self.clock, slot));
        Some(self.transaction(vec![(slot as u16, e)]))
    }

    fn touch(&mut self, slot: u32) {
        let old = self.stamp[slot as usize];
        self.lru.remove(&(old, slot));
        self.stamp[slot as usize] = self.clock;
        self.lru.insert((self.clock, slot));
    }

    fn transaction(&mut self, updates: Vec<(u16, ExtentNr)>) -> Transaction {
        let n = self.slots.len() as u32;
        let start = self.context_start.min(n.saturating_sub(1));
        let end = (start as usize + CONTEXT_PER_TR).min(self.slots.len());
        let tr = Transaction {
            tr_number: self.next_tr,
            kind: TrKind::Update,
            al_extents: n,
            updates,
            context_start: start,
            context: self.slots[start as usize..end].to_vec(),
        };
        self.next_tr = self.next_tr.wrapping_add(1);
        self.context_start = next_context_start(start, n);
        tr
    }

    /// Whether a write into `e` needs no transaction.
    pub fn is_hot(&self, e: ExtentNr) -> bool {
        self.index.contains_key(&e)
    }

    /// The hot extents, sorted.
    pub fn hot_extents(&self) -> Vec<ExtentNr> {
        let mut v: Vec<ExtentNr> = self.index.keys().copied().collect();
        v.sort();
        v
    }

    /// Number of slots (al-extents).
    pub fn al_extents(&self) -> u32 {
        self.slots.len() as u32
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(area: &mut [u8], nblocks: u32, tr: &Transaction) {
        let at = tr.block_index(nblocks) as usize * AL_BLOCK;
        area[at..at + AL_BLOCK].copy_from_slice(&encode_transaction(tr));
    }

    #[test]
    fn default_capacity_matches_drbd() {
        assert_eq!(max_al_extents(8), 6433);
        assert!(DEFAULT_AL_EXTENTS <= max_al_extents(8));
    }

    #[test]
    fn initial_area_recovers_empty() {
        let r = recover(&initial_area(8, 1237), 1237).unwrap();
        assert!(r.extents.is_empty());
        assert_eq!(r.next_tr, 8);
        assert_eq!(r.corrupt_blocks, 0);
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut al = ActivityLog::new(3, 0);
        for e in [1, 2, 3] {
            assert!(al.access(ExtentNr(e)).is_some());
        }
        assert!(al.access(ExtentNr(1)).is_none());
        let tr = al.access(ExtentNr(4)).unwrap();
        assert_eq!(
            al.hot_extents(),
            vec![ExtentNr(1), ExtentNr(3), ExtentNr(4)]
        );
        assert_eq!(tr.updates.len(), 1);
    }

    #[test]
    fn replay_rebuilds_hot_set() {
        let (n, ext) = (8u32, 2000u32);
        let mut area = initial_area(n, ext);
        let mut al = ActivityLog::new(ext, u64::from(n));
        let mut x: u64 = 7;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if let Some(tr) = al.access(ExtentNr(((x >> 33) % 3000) as u32)) {
                write(&mut area, n, &tr);
            }
        }
        let r = recover(&area, ext).unwrap();
        assert_eq!(r.extents, al.hot_extents());
    }
}
