//! Offline metadata operations on a real device or file: create-md, read (attach), superblock
//! update, dump-md, wipe-md, get-gi, show-gi. The byte formats are in [`crate::meta`]; this
//! file only finds, reads and writes them, and talks to the operator with drbdmeta's texts.
//!
//! Exit codes ([`MetaDevError::exit_code`]) follow drbdmeta: 255 when there is no (usable)
//! metadata, which the OCF test suite uses to decide whether create-md is needed (drbdmeta's
//! `return -1`); 1 when the operator declined ("Operation cancelled."); 40 when create-md
//! would destroy a filesystem ("Operation refused."); 10 for configuration-ish failures
//! (device too small, shrunk device, geometry mismatch); 20 for I/O failures (drbdmeta's
//! `exit(20)` when it cannot open or read the device).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::fs_sig;
use crate::meta::al::{self, AlError, AlRecovery};
use crate::meta::bm_page;
use crate::meta::layout::{self, BLOCK, Layout, LayoutError, Placement};
use crate::meta::superblock::{self, Chosen, SbError, Superblock, flags};
use crate::meta::{FORMAT_NAME, text};
use crate::types::{MetaDisk, NodeId};

/// Options of create-md (from the config and the command line).
#[derive(Clone, Debug)]
pub struct CreateMdOptions {
    pub node_id: NodeId,
    /// Bitmap slots to reserve (drbdmeta's `create-md MAX_PEERS`).
    pub max_peers: u32,
    /// Peers known from the config; slot i gets bitmap index i.
    pub peer_node_ids: Vec<NodeId>,
    pub al_extents: u32,
    /// `--force`: answer every question with yes and override the sanity checks.
    pub force: bool,
}

/// Errors of the metadata operations.
#[derive(Debug, thiserror::Error)]
pub enum MetaDevError {
    /// `outdate` of metadata that is not even consistent (drbdmeta's text and exit code 5).
    #[error("Device is inconsistent.")]
    Inconsistent,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Layout(#[from] LayoutError),
    #[error("No valid meta data found on {dev}: {detail}")]
    NoMetadata { dev: String, detail: String },
    #[error("Found meta data is \"unclean\", please apply-al first")]
    Unclean,
    #[error(
        "backing device is smaller than the last agreed size ({have} sectors < {need} sectors); refusing to attach to avoid data loss"
    )]
    Shrunk { have: u64, need: u64 },
    #[error("meta data does not fit this device: {0}")]
    Geometry(String),
    #[error("Operation cancelled.")]
    Cancelled,
    #[error("Operation refused: {0}")]
    WouldDestroyData(String),
    #[error("al-extents {have} too large for the activity log (at most {max})")]
    AlExtents { have: u32, max: u32 },
    #[error("could not get random bytes for the device UUID: {0}")]
    Random(String),
}

impl MetaDevError {
    /// drbdmeta's exit code for this failure (see the module docs).
    pub fn exit_code(&self) -> i32 {
        match self {
            MetaDevError::NoMetadata { .. } | MetaDevError::Unclean => 255,
            MetaDevError::Cancelled => 1,
            MetaDevError::Inconsistent => 5,
            MetaDevError::WouldDestroyData(_) => 40,
            MetaDevError::Layout(_)
            | MetaDevError::Shrunk { .. }
            | MetaDevError::Geometry(_)
            | MetaDevError::AlExtents { .. } => 10,
            MetaDevError::Io { .. } | MetaDevError::Random(_) => 20,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetaDevError + '_ {
    move |source| MetaDevError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Size in bytes of a regular file or block device. For block devices this is what
/// `BLKGETSIZE64` reports; seeking to the end gives the same number without unsafe code.
pub fn backing_size(path: &Path) -> Result<u64, MetaDevError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    f.seek(SeekFrom::End(0)).map_err(io_err(path))
}

/// Where the metadata of `disk` is, before anything is read.
#[derive(Clone, Debug)]
pub(super) struct Located {
    pub(super) meta_path: PathBuf,
    pub(super) backing: u64,
    pub(super) placement: Placement,
    /// Superblock slot offsets on `meta_path`.
    pub(super) sb_offsets: [u64; 2],
}

pub(super) fn locate(disk: &Path, meta: &MetaDisk) -> Result<Located, MetaDevError> {
    let backing = backing_size(disk)?;
    let (meta_path, placement, start) = match meta {
        MetaDisk::Internal => (disk.to_path_buf(), Placement::Internal, None),
        MetaDisk::External { path, index } => {
            let p = PathBuf::from(path);
            let meta_dev_bytes = backing_size(&p)?;
            match index {
                None => (p, Placement::External { meta_dev_bytes }, Some(0)),
                Some(i) => (
                    p,
                    Placement::Indexed {
                        meta_dev_bytes,
                        index: *i,
                    },
                    Some(u64::from(*i) * layout::INDEXED_SLOT_BYTES),
                ),
            }
        }
    };
    let sb_offsets = match start {
        Some(s) => [s, s + BLOCK],
        None => {
            let end = backing / BLOCK * BLOCK;
            if end < 2 * BLOCK {
                return Err(MetaDevError::NoMetadata {
                    dev: disk.display().to_string(),
                    detail: format!("device is only {backing} bytes"),
                });
            }
            [end - 2 * BLOCK, end - BLOCK]
        }
    };
    Ok(Located {
        meta_path,
        backing,
        placement,
        sb_offsets,
    })
}

pub(super) fn open_rw(path: &Path) -> Result<File, MetaDevError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))
}

pub(super) fn read_at(
    f: &File,
    path: &Path,
    off: u64,
    len: usize,
) -> Result<Vec<u8>, MetaDevError> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off).map_err(io_err(path))?;
    Ok(buf)
}

pub(super) fn write_at(f: &File, path: &Path, off: u64, buf: &[u8]) -> Result<(), MetaDevError> {
    f.write_all_at(buf, off).map_err(io_err(path))
}

pub(super) fn sync(f: &File, path: &Path) -> Result<(), MetaDevError> {
    f.sync_data().map_err(io_err(path))
}

pub(super) fn read_slots(f: &File, loc: &Located) -> Result<[Vec<u8>; 2], MetaDevError> {
    Ok([
        read_at(f, &loc.meta_path, loc.sb_offsets[0], superblock::SLOT_SIZE)?,
        read_at(f, &loc.meta_path, loc.sb_offsets[1], superblock::SLOT_SIZE)?,
    ])
}

/// Everything the metadata says, as read at attach time.
#[derive(Clone, Debug)]
pub struct MetaState {
    /// The device holding the metadata (the backing device for internal metadata).
    pub meta_path: PathBuf,
    /// The geometry as stored; `data_bytes` is the usable size on the device as it is now.
    pub layout: Layout,
    /// Slot (0 = A, 1 = B) and sequence number of the superblock in use.
    pub slot: usize,
    pub seq: u64,
    pub sb: Superblock,
    /// Per bitmap index (0..max-peers): words covering `layout.bm_bits()` bits. Pages that
    /// failed their checksum read as all ones.
    pub bitmaps: Vec<Vec<u64>>,
    /// (bitmap index, page) of the pages that failed.
    pub bad_pages: Vec<(u32, u32)>,
    /// Activity-log replay.
    pub al: Result<AlRecovery, AlError>,
}

fn no_md(dev: &Path, e: impl std::fmt::Display) -> MetaDevError {
    MetaDevError::NoMetadata {
        dev: dev.display().to_string(),
        detail: e.to_string(),
    }
}

/// The newest valid superblock and the layout it describes on the devices as they are now.
pub(super) fn read_superblock(loc: &Located, f: &File) -> Result<(Chosen, Layout), MetaDevError> {
    let [a, b] = read_slots(f, loc)?;
    let chosen = superblock::choose(&a, &b).map_err(|e| no_md(&loc.meta_path, e))?;
    let g = chosen.sb.geometry;
    if g.placement != loc.placement.kind() {
        return Err(MetaDevError::Geometry(format!(
            "meta data was created with placement code {} but the configuration says {}",
            g.placement,
            loc.placement.kind()
        )));
    }
    let md_size = u64::from(g.md_size_4k) * BLOCK;
    let md_offset = loc.sb_offsets[0] - u64::from(g.sb_offset_4k()) * BLOCK;
    let capacity = chosen.sb.bm_capacity_bytes();
    let data_bytes = match loc.placement {
        Placement::Internal => md_offset,
        _ => (loc.backing / BLOCK * BLOCK).min(capacity),
    };
    if let Placement::External { meta_dev_bytes } | Placement::Indexed { meta_dev_bytes, .. } =
        loc.placement
        && md_offset + md_size > meta_dev_bytes
    {
        return Err(MetaDevError::Geometry(format!(
            "meta data needs {md_size} bytes at offset {md_offset}, meta device has {meta_dev_bytes}"
        )));
    }
    if loc.placement == Placement::Internal
        && loc.sb_offsets[0] < u64::from(g.sb_offset_4k()) * BLOCK
    {
        return Err(MetaDevError::Geometry(
            "meta data larger than the device".into(),
        ));
    }
    let need = chosen.sb.la_size_sect;
    let have = data_bytes / 512;
    if need > have {
        return Err(MetaDevError::Shrunk { have, need });
    }
    let layout = Layout {
        placement: loc.placement,
        md_offset,
        md_size,
        sb_offsets: loc.sb_offsets,
        al_offset: md_offset + u64::from(g.al_offset_4k) * BLOCK,
        al_blocks: g.al_blocks,
        bm_offset: md_offset + u64::from(g.bm_offset_4k) * BLOCK,
        bm_pages_per_peer: g.bm_pages_per_peer,
        max_peers: g.max_peers,
        data_bytes,
    };
    Ok((chosen, layout))
}

/// Reads one peer's bitmap; bad pages become all ones. Bits beyond `bits` are zero.
pub(super) fn read_bitmap(
    f: &File,
    path: &Path,
    l: &Layout,
    peer: u32,
    bits: u64,
    bad: &mut Vec<(u32, u32)>,
) -> Result<Vec<u64>, MetaDevError> {
    let nwords = bits.div_ceil(64) as usize;
    let npages = (nwords.div_ceil(layout::BM_WORDS_PER_PAGE) as u32).min(l.bm_pages_per_peer);
    let raw = read_at(
        f,
        path,
        l.bm_page_offset(peer, 0),
        npages as usize * bm_page::PAGE_SIZE,
    )?;
    let mut words = Vec::with_capacity(npages as usize * layout::BM_WORDS_PER_PAGE);
    for (i, page) in raw.chunks_exact(bm_page::PAGE_SIZE).enumerate() {
        match bm_page::decode_page(page, peer as u16, i as u32) {
            Ok(w) => words.extend(w),
            Err(_) => {
                bad.push((peer, i as u32));
                words.extend(std::iter::repeat_n(u64::MAX, layout::BM_WORDS_PER_PAGE));
            }
        }
    }
    words.resize(nwords, 0);
    if !bits.is_multiple_of(64)
        && let Some(last) = words.last_mut()
    {
        *last &= (1u64 << (bits % 64)) - 1;
    }
    Ok(words)
}

/// Reads the metadata of `disk`: superblock, per-peer bitmaps and activity-log replay.
/// Refuses a backing device smaller than the last agreed size.
pub fn read_md(disk: &Path, meta: &MetaDisk) -> Result<MetaState, MetaDevError> {
    let loc = locate(disk, meta)?;
    let f = File::open(&loc.meta_path).map_err(io_err(&loc.meta_path))?;
    let (chosen, layout) = read_superblock(&loc, &f)?;
    let mut bad_pages = Vec::new();
    let bitmaps = (0..layout.max_peers)
        .map(|p| {
            read_bitmap(
                &f,
                &loc.meta_path,
                &layout,
                p,
                layout.bm_bits(),
                &mut bad_pages,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let area = read_at(
        &f,
        &loc.meta_path,
        layout.al_offset,
        layout.al_blocks as usize * al::AL_BLOCK,
    )?;
    Ok(MetaState {
        meta_path: loc.meta_path,
        slot: chosen.slot,
        seq: chosen.seq,
        al: al::recover(&area, chosen.sb.al_extents),
        sb: chosen.sb,
        bitmaps,
        bad_pages,
        layout,
    })
}

/// Where the two superblock slots of `disk`'s metadata are: (device, [slot A, slot B] byte
/// offsets). For tests and tools that need to look at the raw slots.
pub fn superblock_slots(disk: &Path, meta: &MetaDisk) -> Result<(PathBuf, [u64; 2]), MetaDevError> {
    let loc = locate(disk, meta)?;
    Ok((loc.meta_path, loc.sb_offsets))
}

/// Persists `sb` atomically: writes the slot not holding the newest valid generation with the
/// next sequence number, then fdatasync. A crash during the write leaves the previous
/// generation readable. Returns the new sequence number.
pub fn write_superblock(
    disk: &Path,
    meta: &MetaDisk,
    sb: &Superblock,
) -> Result<u64, MetaDevError> {
    let loc = locate(disk, meta)?;
    let f = open_rw(&loc.meta_path)?;
    let [a, b] = read_slots(&f, &loc)?;
    let current = superblock::choose(&a, &b).ok().map(|c| (c.slot, c.seq));
    let (slot, seq) = superblock::next_write(current);
    let bytes = superblock::encode_slot(sb, seq);
    // Never write what we could not read back.
    superblock::decode_slot(&bytes).map_err(|e| MetaDevError::Geometry(e.to_string()))?;
    write_at(&f, &loc.meta_path, loc.sb_offsets[slot], &bytes)?;
    sync(&f, &loc.meta_path)?;
    Ok(seq)
}

/// Asks `text`, or answers yes under `--force` the way drbdmeta's `confirmed()` does.
fn ask(
    force: bool,
    text: &str,
    confirm: &mut dyn FnMut(&str) -> bool,
    out: &mut dyn Write,
) -> Result<bool, MetaDevError> {
    if force {
        writeln!(
            out,
            "\n{text}\n*** confirmation forced via --force option ***"
        )
        .map_err(io_err(Path::new("<output>")))?;
        return Ok(true);
    }
    Ok(confirm(text))
}

fn say(out: &mut dyn Write, s: &str) -> Result<(), MetaDevError> {
    out.write_all(s.as_bytes())
        .map_err(io_err(Path::new("<output>")))
}

/// drbdmeta's "refused" epilogue.
const ZERO_OUT_HINT: &str = "If you want me to do this, you need to zero out the first part\n\
of the device (destroy the content).\nYou should be very sure that you mean it.\nOperation refused.\n\n";

/// Checks for metadata already in place; asks before overwriting it.
fn check_existing_md(
    loc: &Located,
    f: &File,
    opts: &CreateMdOptions,
    confirm: &mut dyn FnMut(&str) -> bool,
    out: &mut dyn Write,
) -> Result<bool, MetaDevError> {
    let [a, b] = read_slots(f, loc)?;
    let found = [(&a, loc.sb_offsets[0]), (&b, loc.sb_offsets[1])]
        .into_iter()
        .find_map(|(buf, off)| match superblock::decode_slot(buf) {
            Ok(_) => Some((FORMAT_NAME, off)),
            Err(SbError::ForeignDrbd(name)) => Some((name, off)),
            Err(_) => None,
        });
    let Some((name, off)) = found else {
        return Ok(false);
    };
    let question = match loc.placement {
        Placement::Internal => {
            say(
                out,
                &format!(
                    "You want me to create a {FORMAT_NAME} style flexible-size internal meta data block.\n\
                     There appears to be a {name} flexible-size internal meta data block\n\
                     already in place on {} at byte offset {off}\n",
                    loc.meta_path.display()
                ),
            )?;
            "Do you really want to overwrite the existing meta-data?"
        }
        _ => "Valid meta data seems to be in place.\nDo you really want to overwrite?",
    };
    if !ask(opts.force, question, confirm, out)? {
        say(out, "Operation cancelled.\n")?;
        return Err(MetaDevError::Cancelled);
    }
    Ok(true)
}

/// Whether any byte in [off, off+len) is non-zero.
fn any_nonzero(f: &File, path: &Path, off: u64, len: u64) -> Result<bool, MetaDevError> {
    const CHUNK: u64 = 1 << 20;
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(CHUNK);
        if read_at(f, path, off + pos, n as usize)?
            .iter()
            .any(|&b| b != 0)
        {
            return Ok(true);
        }
        pos += n;
    }
    Ok(false)
}

/// drbdmeta's `check_for_existing_data()`: refuse to destroy a filesystem, ask before
/// overwriting anything else that is not zero.
fn check_existing_data(
    loc: &Located,
    f: &File,
    l: &Layout,
    had_md: bool,
    opts: &CreateMdOptions,
    confirm: &mut dyn FnMut(&str) -> bool,
    out: &mut dyn Write,
) -> Result<(), MetaDevError> {
    // Internal metadata overwrites the end of the data device, so look at what the data
    // device starts with; external metadata overwrites the meta area only.
    let probe_at = match loc.placement {
        Placement::Internal => 0,
        _ => l.md_offset,
    };
    let avail = match loc.placement {
        Placement::Internal => loc.backing,
        _ => l.md_size,
    };
    let probe_len = (fs_sig::PROBE_BYTES as u64).min(avail);
    let head = read_at(f, &loc.meta_path, probe_at, probe_len as usize)?;
    let found = fs_sig::probe(&head);
    let overwritten_nonzero = !had_md && any_nonzero(f, &loc.meta_path, l.md_offset, l.md_size)?;
    let Some(found) = found else {
        if overwritten_nonzero {
            say(out, "\n ==> This might destroy existing data! <==\n")?;
            if !ask(opts.force, "Do you want to proceed?", confirm, out)? {
                say(out, "Operation canceled.\n")?;
                return Err(MetaDevError::Cancelled);
            }
        }
        return Ok(());
    };
    say(
        out,
        &format!(
            "md_offset {}\nal_offset {}\nbm_offset {}\n\nFound {}\n",
            l.md_offset, l.al_offset, l.bm_offset, found.kind
        ),
    )?;
    let refuse = |out: &mut dyn Write, why: &str| -> Result<(), MetaDevError> {
        if opts.force {
            return say(out, "\nIgnoring sanity check on user request.\n\n");
        }
        say(out, ZERO_OUT_HINT)?;
        Err(MetaDevError::WouldDestroyData(format!(
            "found {} on {}",
            found.kind, why
        )))
    };
    if loc.placement != Placement::Internal {
        say(out, "\nThis would corrupt existing data.\n")?;
        return refuse(out, &loc.meta_path.display().to_string());
    }
    let usable_kb = l.data_bytes >> 10;
    match found.size {
        Some(sz) if sz.div_ceil(1024) <= usable_kb => {
            say(
                out,
                &format!(
                    "{:>12} kB data area apparently used\n{usable_kb:>12} kB left usable by current configuration\n\
                     \nEven though it looks like this would place the new meta data into\n\
                     unused space, you still need to confirm, as this is only a guess.\n",
                    sz.div_ceil(1024)
                ),
            )?;
            if !ask(opts.force, "Do you want to proceed?", confirm, out)? {
                say(out, "Operation canceled.\n")?;
                return Err(MetaDevError::Cancelled);
            }
            Ok(())
        }
        Some(sz) => {
            say(
                out,
                &format!(
                    "{:>12} kB data area apparently used\n{usable_kb:>12} kB left usable by current configuration\n\
                     \nDevice size would be truncated, which\nwould corrupt data and result in\n\
                     'access beyond end of device' errors.\nYou need to either\n\
                     \x20  * use external meta data (recommended)\n   * shrink that filesystem first\n\
                     \x20  * zero out the device (destroy the filesystem)\n",
                    sz.div_ceil(1024)
                ),
            )?;
            refuse(out, &loc.meta_path.display().to_string())
        }
        None => {
            say(
                out,
                &format!(
                    "{usable_kb:>12} kB left usable by current configuration\n\
                     Could not determine the size of the actually used data area.\n\n\
                     Device size would be truncated, which\nwould corrupt data and result in\n\
                     'access beyond end of device' errors.\n"
                ),
            )?;
            refuse(out, &loc.meta_path.display().to_string())
        }
    }
}

/// create-md: writes fresh metadata (bitmap all zero, AL initialized, superblock with the
/// just-created UUID and a random device UUID), after drbdmeta's checks and questions.
pub fn create_md(
    disk: &Path,
    meta: &MetaDisk,
    opts: &CreateMdOptions,
    confirm: &mut dyn FnMut(&str) -> bool,
    out: &mut dyn Write,
) -> Result<(), MetaDevError> {
    let loc = locate(disk, meta)?;
    let l = Layout::compute(
        loc.backing,
        loc.placement,
        opts.max_peers,
        layout::DEFAULT_AL_BLOCKS,
    )?;
    let max = al::max_al_extents(l.al_blocks);
    if opts.al_extents == 0 || opts.al_extents > max {
        return Err(MetaDevError::AlExtents {
            have: opts.al_extents,
            max,
        });
    }
    let f = open_rw(&loc.meta_path)?;
    let had_md = check_existing_md(&loc, &f, opts, confirm, out)?;
    check_existing_data(&loc, &f, &l, had_md, opts, confirm, out)?;
    let device_uuid = getrandom::u64().map_err(|e| MetaDevError::Random(e.to_string()))?;
    let sb = Superblock::new(
        &l,
        opts.node_id,
        opts.al_extents,
        device_uuid,
        &opts.peer_node_ids,
    );
    let path = &loc.meta_path;

    say(out, "initializing activity log\n")?;
    write_at(
        &f,
        path,
        l.al_offset,
        &al::initial_area(l.al_blocks, opts.al_extents),
    )?;

    say(
        out,
        &format!(
            "initializing bitmap ({} KB) to all zero\n",
            l.bm_bytes() >> 10
        ),
    )?;
    for peer in 0..l.max_peers {
        // One peer's pages at a time keeps memory bounded by one bitmap.
        let mut run = Vec::with_capacity(l.bm_pages_per_peer as usize * bm_page::PAGE_SIZE);
        for page in 0..l.bm_pages_per_peer {
            run.extend_from_slice(&bm_page::encode_page(peer as u16, page, &[]));
        }
        write_at(&f, path, l.bm_page_offset(peer, 0), &run)?;
    }
    // Bitmap and AL must be durable before a superblock points at them.
    sync(&f, path)?;

    say(out, "Writing meta data...\n")?;
    // Slot B is cleared so an older generation there cannot outrank the new slot A.
    write_at(&f, path, l.sb_offsets[1], &[0u8; superblock::SLOT_SIZE])?;
    write_at(&f, path, l.sb_offsets[0], &superblock::encode_slot(&sb, 1))?;
    sync(&f, path)?;
    say(out, "New drbd meta data block successfully created.\n")
}

/// wipe-md: zeroes both superblock slots after confirmation.
pub fn wipe_md(
    disk: &Path,
    meta: &MetaDisk,
    confirm: &mut dyn FnMut(&str) -> bool,
    out: &mut dyn Write,
) -> Result<(), MetaDevError> {
    let loc = locate(disk, meta)?;
    let f = open_rw(&loc.meta_path)?;
    let [a, b] = read_slots(&f, &loc)?;
    if superblock::choose(&a, &b).is_err() {
        return say(out, "There appears to be no drbd meta data to wipe out?\n");
    }
    if !confirm("Do you really want to wipe out the DRBD meta data?") {
        say(out, "Operation cancelled.\n")?;
        return Err(MetaDevError::Cancelled);
    }
    say(out, "Wiping meta data...\n")?;
    for off in loc.sb_offsets {
        write_at(&f, &loc.meta_path, off, &[0u8; superblock::SLOT_SIZE])?;
    }
    sync(&f, &loc.meta_path)?;
    say(out, "DRBD meta data block successfully wiped out.\n")
}

/// drbdmeta's dump header time, `%F %T %z [%s]`, in UTC.
fn dump_time() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 [{secs}]",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// dump-md: the metadata as text (drbdmeta's layout). Refuses unclean metadata (an activity
/// log not applied, or the device attached) unless `force`; then the text says so.
pub fn dump_md(
    disk: &Path,
    meta: &MetaDisk,
    force: bool,
    out: &mut dyn Write,
) -> Result<(), MetaDevError> {
    let st = read_md(disk, meta)?;
    if st.sb.flags & flags::AL_CLEAN == 0 {
        // drbdmeta says it on stderr either way; without --force it stops there.
        if !force {
            return Err(MetaDevError::Unclean);
        }
        eprintln!("{}", MetaDevError::Unclean);
    }
    let la_words = (st.sb.la_size_sect * 512 / BLOCK).div_ceil(64) as usize;
    let bitmaps: Vec<Vec<u64>> = st
        .bitmaps
        .iter()
        .map(|b| b.iter().copied().take(la_words).collect())
        .collect();
    let argv: Vec<String> = std::env::args().collect();
    let l = &st.layout;
    let s = text::dump_md(&text::DumpInput {
        time: &dump_time(),
        host: &host_name(),
        argv: &argv,
        sb: &st.sb,
        md_size_sect: l.md_size / 512,
        md_offset: l.sb_offsets[0],
        al_offset: l.al_offset,
        bm_offset: l.bm_offset,
        bitmaps: &bitmaps,
    });
    say(out, &s)
}

/// get-gi: the generation identifiers line for `peer` (or the first configured peer).
pub fn get_gi(
    disk: &Path,
    meta: &MetaDisk,
    peer: Option<NodeId>,
    out: &mut dyn Write,
) -> Result<(), MetaDevError> {
    let st = read_md(disk, meta)?;
    say(out, &text::get_gi(&st.sb, peer))
}

/// show-gi: get-gi with drbdmeta's legend and the last agreed size.
pub fn show_gi(
    disk: &Path,
    meta: &MetaDisk,
    peer: Option<NodeId>,
    out: &mut dyn Write,
) -> Result<(), MetaDevError> {
    let st = read_md(disk, meta)?;
    say(out, &text::show_gi(&st.sb, peer))
}

/// The disk state the metadata records, as drbdmeta's `dstate` prints it for a resource that is
/// down: `Consistent` (it was UpToDate when last up; whether it still is, only a connection can
/// tell), `Outdated`, or `Inconsistent`.
pub fn dstate_offline(disk: &Path, meta: &MetaDisk) -> Result<&'static str, MetaDevError> {
    let st = read_md(disk, meta)?;
    Ok(recorded_dstate(st.sb.flags))
}

fn recorded_dstate(f: u32) -> &'static str {
    if f & flags::CONSISTENT == 0 {
        "Inconsistent"
    } else if f & flags::WAS_UP_TO_DATE != 0 {
        "Consistent"
    } else {
        "Outdated"
    }
}

/// drbdmeta's `outdate` for a resource that is down: clears "was UpToDate" in the metadata, so
/// the next `up` comes up Outdated. Inconsistent data cannot be outdated
/// ([`MetaDevError::Inconsistent`], exit 5).
pub fn outdate_offline(disk: &Path, meta: &MetaDisk) -> Result<(), MetaDevError> {
    let st = read_md(disk, meta)?;
    if st.sb.flags & flags::CONSISTENT == 0 {
        return Err(MetaDevError::Inconsistent);
    }
    if st.sb.flags & flags::WAS_UP_TO_DATE == 0 {
        return Ok(());
    }
    let mut sb = st.sb.clone();
    sb.flags &= !flags::WAS_UP_TO_DATE;
    write_superblock(disk, meta, &sb).map(|_| ())
}

/// drbdmeta's `forget-peer` for a resource that is down (the daemon's `forget-peer` does the
/// same to the attached metadata, see the engine's `forget_peer`): the slot of `peer` loses its
/// flags, its bitmap UUID goes into the history, and its bitmap is set all out of sync, so the
/// next connection to that node resyncs everything. drbdmeta leaves the bitmap to the operator
/// ("Setting all bits in slot N not implemented. Do it with dump-md, edit, restore-md"); here
/// it is done. A node without a slot has nothing to forget.
pub fn forget_peer_offline(disk: &Path, meta: &MetaDisk, peer: NodeId) -> Result<(), MetaDevError> {
    let st = read_md(disk, meta)?;
    let mut sb = st.sb.clone();
    let Some(slot) = sb.peers.iter_mut().find(|p| p.node_id == Some(peer)) else {
        return Ok(());
    };
    slot.flags = 0;
    let old = std::mem::replace(&mut slot.bitmap_uuid, crate::types::GenUuid::ZERO);
    let index = slot.bitmap_index;
    if !old.is_zero() {
        sb.push_history(old);
    }
    if let Some(index) = index {
        let l = &st.layout;
        let bits = l.bm_bits();
        let nwords = bits.div_ceil(64) as usize;
        let mut words = vec![u64::MAX; nwords];
        if !bits.is_multiple_of(64)
            && let Some(last) = words.last_mut()
        {
            *last = (1u64 << (bits % 64)) - 1;
        }
        let f = open_rw(&st.meta_path)?;
        for (page, chunk) in words.chunks(layout::BM_WORDS_PER_PAGE).enumerate() {
            let bytes = bm_page::encode_page(u16::from(index), page as u32, chunk);
            write_at(
                &f,
                &st.meta_path,
                l.bm_page_offset(u32::from(index), page as u32),
                &bytes,
            )?;
        }
        // The bitmap is on disk before a superblock says the peer is forgotten.
        sync(&f, &st.meta_path)?;
    }
    write_superblock(disk, meta, &sb).map(|_| ())
}
