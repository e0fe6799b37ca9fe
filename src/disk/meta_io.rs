//! Runtime metadata writes for an attached device: superblock generations, activity-log
//! transactions and bitmap pages. Every write is followed by fdatasync before it is reported
//! done, because the engine acknowledges application I/O on the strength of it; `md-flushes
//! no` (DRBD's option for a battery-backed write cache) leaves the fdatasync out.
//!
//! Blocking by design: the driver runs it on its own metadata thread, one write at a time, in
//! the order the engine asked (the engine never has two of a kind in flight).

use super::metadev::{MetaDevError, MetaState};
use crate::meta::al::{self, Transaction};
use crate::meta::bm_page;
use crate::meta::layout::Layout;
use crate::meta::superblock::{self, Superblock};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The open metadata device of one attached volume.
#[derive(Debug)]
pub struct MetaIo {
    file: File,
    path: PathBuf,
    layout: Layout,
    /// Slot and sequence number of the newest superblock on disk.
    current: (usize, u64),
    /// `md-flushes`: fdatasync after each write. Shared so that `drbdadm adjust` can switch it
    /// while the metadata thread owns this.
    flushes: Arc<AtomicBool>,
    /// fdatasyncs issued so far.
    syncs: u64,
}

impl MetaIo {
    /// Opens the metadata device that `state` was read from.
    pub fn open(state: &MetaState, flushes: bool) -> Result<MetaIo, MetaDevError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&state.meta_path)
            .map_err(|source| MetaDevError::Io {
                path: state.meta_path.clone(),
                source,
            })?;
        Ok(MetaIo {
            file,
            path: state.meta_path.clone(),
            layout: state.layout.clone(),
            current: (state.slot, state.seq),
            flushes: Arc::new(AtomicBool::new(flushes)),
            syncs: 0,
        })
    }

    /// The `md-flushes` switch, to change it later.
    pub fn flush_switch(&self) -> Arc<AtomicBool> {
        self.flushes.clone()
    }

    /// Writes `sb` into the slot not holding the newest generation (so a torn write leaves the
    /// previous one valid), then syncs.
    pub fn write_superblock(&mut self, sb: &Superblock) -> Result<(), MetaDevError> {
        let (slot, seq) = superblock::next_write(Some(self.current));
        // Where the metadata is is this writer's to say: after a move (`grow`) the engine's
        // copy of the geometry may still be the old one.
        let mut sb = sb.clone();
        sb.geometry = superblock::Geometry::of(&self.layout);
        let bytes = superblock::encode_slot(&sb, seq);
        // Never write what we could not read back.
        superblock::decode_slot(&bytes).map_err(|e| MetaDevError::Geometry(e.to_string()))?;
        let off = self.layout.sb_offsets[slot.min(1)];
        self.write_synced(off, &bytes)?;
        self.current = (slot, seq);
        Ok(())
    }

    /// `drbdadm resize`: the backing device `disk` may have grown. Internal metadata is moved
    /// to the new end (see [`super::md_move::relocate`]; the writes queued before this one are
    /// on disk, those after go to the new place); external metadata stays and the data area
    /// may grow up to what its bitmap covers. Returns the bytes the data area can now hold.
    pub fn grow(&mut self, disk: &Path) -> Result<u64, MetaDevError> {
        let backing = super::metadev::backing_size(disk)?;
        let capacity = u64::from(self.layout.bm_pages_per_peer)
            * crate::meta::layout::BM_BITS_PER_PAGE
            * crate::meta::layout::BLOCK;
        match self.layout.placement {
            crate::meta::layout::Placement::Internal => {
                let block = crate::meta::layout::BLOCK;
                if backing / block * block <= self.layout.sb_offsets[1] + block {
                    return Ok(self.layout.data_bytes);
                }
                let slots = super::metadev::read_slots(
                    &self.file,
                    &super::metadev::Located {
                        meta_path: self.path.clone(),
                        backing: self.layout.sb_offsets[1] + block,
                        placement: self.layout.placement,
                        sb_offsets: self.layout.sb_offsets,
                    },
                )?;
                let chosen = superblock::choose(&slots[0], &slots[1])
                    .map_err(|e| MetaDevError::Geometry(e.to_string()))?;
                let (layout, current) = super::md_move::relocate(
                    &self.file,
                    &self.path,
                    &self.layout,
                    chosen,
                    backing,
                )?;
                self.layout = layout;
                self.current = current;
                Ok(self.layout.data_bytes)
            }
            _ => {
                let grown = (backing / crate::meta::layout::BLOCK * crate::meta::layout::BLOCK)
                    .min(capacity)
                    .max(self.layout.data_bytes);
                self.layout.data_bytes = grown;
                Ok(grown)
            }
        }
    }

    /// Writes one AL transaction at ring block `block`, then syncs.
    pub fn write_al(&mut self, block: u32, tr: &Transaction) -> Result<(), MetaDevError> {
        let block = block % self.layout.al_blocks.max(1);
        let off = self.layout.al_offset + u64::from(block) * al::AL_BLOCK as u64;
        self.write_synced(off, &al::encode_transaction(tr))
    }

    /// Writes bitmap pages `(bitmap index, page, words)`, then syncs once.
    pub fn write_bitmap(&mut self, pages: &[(u32, u32, Vec<u64>)]) -> Result<(), MetaDevError> {
        for (idx, page, words) in pages {
            if *idx >= self.layout.max_peers || *page >= self.layout.bm_pages_per_peer {
                return Err(MetaDevError::Geometry(format!(
                    "bitmap page {idx}/{page} is outside the bitmap area"
                )));
            }
            let bytes = bm_page::encode_page(*idx as u16, *page, words);
            let off = self.layout.bm_page_offset(*idx, *page);
            self.file
                .write_all_at(&bytes, off)
                .map_err(|source| self.io(source))?;
        }
        self.sync()
    }

    fn write_synced(&mut self, off: u64, bytes: &[u8]) -> Result<(), MetaDevError> {
        self.file
            .write_all_at(bytes, off)
            .map_err(|source| self.io(source))?;
        self.sync()
    }

    fn sync(&mut self) -> Result<(), MetaDevError> {
        if !self.flushes.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.syncs += 1;
        self.file.sync_data().map_err(|source| self.io(source))
    }

    /// fdatasyncs issued so far (none with `md-flushes no`).
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    fn io(&self, source: std::io::Error) -> MetaDevError {
        MetaDevError::Io {
            path: self.path.clone(),
            source,
        }
    }
}
