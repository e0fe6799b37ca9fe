//! Growing a backing device that carries internal metadata (DRBD's `check-resize`).
//!
//! Internal metadata sits at the end of the backing device, so once an LV or a file grew the
//! superblock is no longer where the new size says: without help the next attach would find
//! "No valid meta data". As drbd-utils does, the last size each backing device was attached
//! with is recorded (`lkbd`, "last known backing device" size: one small file per resource in
//! the state directory, `/var/lib/udrbd` or `$UDRBD_STATE_DIR`); when the metadata is not at
//! the current end but is at the recorded one, it is moved: bitmap pages (the extra pages the
//! larger device needs start clear), the activity-log ring as it is, then the superblock with
//! the new geometry, and only then are the old superblock slots cleared. A crash in between
//! leaves either the old metadata (found again through the record) or the new one.
//!
//! Moving does not change the device's size: the last agreed size stays until the peers
//! agree on a larger one (see the engine's handshake), and what the new area holds is then
//! resynced.

use super::metadev::{
    Located, MetaDevError, locate, open_rw, read_at, read_bitmap, read_superblock, sync, write_at,
};
use crate::meta::bm_page;
use crate::meta::layout::{self, BLOCK, Layout, Placement};
use crate::meta::superblock::{self, Geometry};
use crate::types::MetaDisk;
use std::path::{Path, PathBuf};

/// Where the record for `resource` lives: always a file directly in `state_dir`, whatever
/// the name holds (a quoted resource name may contain `/` or start with `..`).
pub fn lkbd_path(state_dir: &Path, resource: &str) -> PathBuf {
    let safe: String = resource
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join(format!("res-{safe}.lkbd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_in_the_state_directory_whatever_the_resource_name() {
        let dir = Path::new("/var/lib/udrbd");
        assert_eq!(lkbd_path(dir, "r0"), dir.join("res-r0.lkbd"));
        let evil = lkbd_path(dir, "a/../../x");
        assert_eq!(evil.parent(), Some(dir));
        assert_eq!(lkbd_path(dir, ".."), dir.join("res-...lkbd"));
        assert_eq!(lkbd_path(dir, "..").parent(), Some(dir));
    }
}

/// The state directory: `$UDRBD_STATE_DIR`, else `/var/lib/udrbd`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("UDRBD_STATE_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/udrbd"), PathBuf::from)
}

/// Records that `disk` was attached with `bytes` (written to a temporary file and renamed,
/// so a crash leaves the old record or the new one).
pub fn record_size(record: &Path, disk: &Path, bytes: u64) -> std::io::Result<()> {
    if let Some(dir) = record.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = record.with_extension("lkbd.tmp");
    std::fs::write(&tmp, format!("{} {bytes}\n", disk.display()))?;
    std::fs::rename(&tmp, record)
}

/// The size recorded for `disk`, if the record names this device.
pub fn recorded_size(record: &Path, disk: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(record).ok()?;
    let (path, bytes) = text.trim_end().rsplit_once(' ')?;
    (Path::new(path) == disk).then(|| bytes.parse().ok())?
}

/// What a move did: the data area before and after, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    pub old_backing: u64,
    pub new_backing: u64,
}

/// DRBD's check-resize for internal metadata: when `disk` grew from `old_backing` bytes and
/// its metadata is still at the old end, moves it to the new end. `Ok(None)` when there is
/// nothing to move (the metadata is where it belongs, external metadata, or the device did
/// not grow); an error when the metadata is at neither place.
pub fn check_resize(
    disk: &Path,
    meta: &MetaDisk,
    old_backing: u64,
) -> Result<Option<Moved>, MetaDevError> {
    if *meta != MetaDisk::Internal {
        return Ok(None);
    }
    let loc = locate(disk, meta)?;
    let f = open_rw(&loc.meta_path)?;
    if read_superblock(&loc, &f).is_ok() {
        return Ok(None);
    }
    if loc.backing / BLOCK <= old_backing / BLOCK {
        return Ok(None);
    }
    let old_end = old_backing / BLOCK * BLOCK;
    let old_loc = Located {
        meta_path: loc.meta_path.clone(),
        backing: old_backing,
        placement: Placement::Internal,
        sb_offsets: [old_end - 2 * BLOCK, old_end - BLOCK],
    };
    let (chosen, old) = read_superblock(&old_loc, &f)?;
    relocate(&f, &loc.meta_path, &old, chosen, loc.backing)?;
    Ok(Some(Moved {
        old_backing,
        new_backing: loc.backing,
    }))
}

/// Moves internal metadata described by `old` (whose newest superblock is `chosen`) to the
/// end of a backing device of `new_backing` bytes: the bitmap pages (new ones clear), the
/// activity-log ring, then the superblock with the new geometry (slot A, one sequence number
/// on), and last the old slots are cleared. Returns the new layout and the new superblock's
/// slot and sequence number. Used offline ([`check_resize`]) and by the metadata thread of an
/// attached disk (`drbdadm resize`), which serialises it with the engine's metadata writes.
pub(crate) fn relocate(
    f: &std::fs::File,
    path: &Path,
    old: &Layout,
    chosen: superblock::Chosen,
    new_backing: u64,
) -> Result<(Layout, (usize, u64)), MetaDevError> {
    let new = Layout::compute(
        new_backing,
        Placement::Internal,
        old.max_peers,
        old.al_blocks,
    )?;
    if new.data_bytes < old.data_bytes {
        return Err(MetaDevError::Geometry(format!(
            "the device shrank ({} -> {} data bytes): meta data is not moved",
            old.data_bytes, new.data_bytes
        )));
    }
    // The bitmaps, page by page in their new place; the pages the larger device adds are clear.
    let mut bad = Vec::new();
    for peer in 0..old.max_peers {
        let words = read_bitmap(f, path, old, peer, old.bm_bits(), &mut bad)?;
        let mut run = Vec::with_capacity(new.bm_pages_per_peer as usize * bm_page::PAGE_SIZE);
        for page in 0..new.bm_pages_per_peer {
            let from = page as usize * layout::BM_WORDS_PER_PAGE;
            let part = words
                .get(from..(from + layout::BM_WORDS_PER_PAGE).min(words.len()))
                .unwrap_or(&[]);
            run.extend_from_slice(&bm_page::encode_page(peer as u16, page, part));
        }
        write_at(f, path, new.bm_page_offset(peer, 0), &run)?;
    }
    // The activity log's transactions do not depend on where the ring is.
    let ring = read_at(
        f,
        path,
        old.al_offset,
        old.al_blocks as usize * crate::meta::al::AL_BLOCK,
    )?;
    write_at(f, path, new.al_offset, &ring)?;
    sync(f, path)?;
    let mut sb = chosen.sb;
    sb.geometry = Geometry::of(&new);
    let seq = chosen.seq + 1;
    write_at(f, path, new.sb_offsets[1], &[0u8; superblock::SLOT_SIZE])?;
    write_at(
        f,
        path,
        new.sb_offsets[0],
        &superblock::encode_slot(&sb, seq),
    )?;
    sync(f, path)?;
    // Only now can the old copy go: found before the new one was whole, it was the valid one.
    for off in old.sb_offsets {
        write_at(f, path, off, &[0u8; superblock::SLOT_SIZE])?;
    }
    sync(f, path)?;
    Ok((new, (0, seq)))
}
