//! `dump-md`, `get-gi` and `show-gi` texts, in drbdmeta's layout (drbd-utils
//! `user/shared/drbdmeta.c` `meta_dump_md()`, `fprintf_bm()`, `meta_show_gi()`;
//! `user/v9/drbdtool_common.c` `dt_print_v9_uuids()`, `dt_pretty_print_v9_uuids()`).
//! Pure: the caller passes the time, host name and command line for the header.

use std::fmt::Write as _;

use super::FORMAT_NAME;
use super::superblock::{PeerMd, Superblock, flags, peer_flags};
use crate::types::{NodeId, SECTOR_SIZE};

/// Node ids a dump lists (`DRBD_NODE_ID_MAX`).
const NODE_IDS: u8 = 32;

/// What `dump-md` prints, gathered by the caller.
#[derive(Debug)]
pub struct DumpInput<'a> {
    /// `2026-01-02 03:04:05 +0000 [1767323045]`, drbdmeta's `%F %T %z [%s]`.
    pub time: &'a str,
    pub host: &'a str,
    /// The command line, printed after `host>`.
    pub argv: &'a [String],
    pub sb: &'a Superblock,
    pub md_size_sect: u64,
    pub md_offset: u64,
    pub al_offset: u64,
    pub bm_offset: u64,
    /// One word vector per bitmap index (0..max-peers), covering the last agreed size.
    pub bitmaps: &'a [Vec<u64>],
}

/// drbdmeta's `ppsize()`: a size in KiB as `N KB/MB/GB...`, at most 4 digits.
pub fn ppsize(kb: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    let (mut size, mut base) = (kb, 0);
    while size >= 10000 && base < UNITS.len() - 1 {
        size = (size >> 10) + u64::from(size & (1 << 9) != 0);
        base += 1;
    }
    format!("{size} {}B", UNITS[base])
}

/// ` # connected | seen` style annotation of peer flags (drbdmeta's `pretty_peer_md_flags`).
fn pretty_peer_flags(f: u32) -> String {
    let mut out = String::new();
    let mut sep = " # ";
    for bit in 0..32 {
        let v = 1u32 << bit;
        if f & v == 0 {
            continue;
        }
        let name = match v {
            peer_flags::CONNECTED => "connected".to_string(),
            peer_flags::OUTDATED => "<=outdated".to_string(),
            peer_flags::FENCING => "fencing".to_string(),
            peer_flags::FULL_SYNC => "full-sync".to_string(),
            peer_flags::SEEN => "seen".to_string(),
            peer_flags::EXISTS => "exists".to_string(),
            _ => format!("{v:#x}=?"),
        };
        out.push_str(sep);
        out.push_str(&name);
        sep = " | ";
    }
    out
}

/// One peer's bitmap as drbdmeta's `fprintf_bm()` prints it: 4 words a line, a `# at NkB`
/// marker every 32 words (8 MiB of data), runs of 8 or more equal words (in whole lines) as
/// `N times 0x...;`. Returns the text and the number of bits set.
pub fn format_bitmap(words: &[u64]) -> (String, u64) {
    let mut s = String::from("{");
    let mut bits = 0u64;
    let mut k = 0;
    while k < words.len() {
        let w = words[k];
        if k % 4 == 0 {
            if k % 32 == 0 {
                let _ = write!(s, "\n   # at {}kB\n   ", k as u64 * 256);
            } else {
                s.push_str("\n   ");
            }
            let run = words[k..].iter().take_while(|&&x| x == w).count() / 4 * 4;
            if run > 4 {
                let _ = write!(s, " {run} times 0x{w:016X};");
                bits += run as u64 * u64::from(w.count_ones());
                k += run;
                continue;
            }
        }
        let _ = write!(s, " 0x{w:016X};");
        bits += u64::from(w.count_ones());
        k += 1;
    }
    s.push_str("\n}\n");
    (s, bits)
}

/// The `dump-md` text.
pub fn dump_md(d: &DumpInput<'_>) -> String {
    let sb = d.sb;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# DRBD meta data dump\n# {}\n# {}>{}\n#\n",
        d.time,
        d.host,
        {
            let mut a = String::new();
            for x in d.argv {
                a.push(' ');
                a.push_str(x);
            }
            a
        }
    );
    let _ = writeln!(s, "version \"{FORMAT_NAME}\";\n");
    if sb.flags & crate::meta::superblock::flags::AL_CLEAN == 0 {
        // drbdmeta's words for a forced dump of unclean metadata; the first line makes the
        // text fail to parse for a restore on purpose.
        let _ = writeln!(
            s,
            "This_is_an_unclean_meta_data_dump._Don't_trust_the_bitmap.\n\
             # You should \"apply-al\" first, if you plan to restore this.\n"
        );
    }
    let _ = writeln!(s, "max-peers {};", sb.geometry.max_peers);
    let _ = writeln!(s, "# md_size_sect {}", d.md_size_sect);
    let _ = writeln!(s, "# md_offset {}", d.md_offset);
    let _ = writeln!(s, "# al_offset {}", d.al_offset);
    let _ = writeln!(s, "# bm_offset {}\n", d.bm_offset);
    let _ = writeln!(s, "node-id {};", sb.node_id);
    let _ = writeln!(s, "current-uuid 0x{:016X};", sb.current_uuid.0);
    let _ = writeln!(s, "flags 0x{:08X};", sb.flags);
    for node in 0..NODE_IDS {
        let p = sb.peer(NodeId(node)).copied().unwrap_or(PeerMd::UNUSED);
        let idx = p.bitmap_index.map_or(-1, i32::from);
        let _ = writeln!(s, "peer[{node}] {{");
        let _ = writeln!(s, "    bitmap-index {idx};");
        let _ = writeln!(s, "    bitmap-uuid 0x{:016X};", p.bitmap_uuid.0);
        // udrbd keeps no dagtags; printed for drbdmeta's layout.
        let _ = writeln!(s, "    bitmap-dagtag 0x{:016X};", 0);
        let _ = writeln!(
            s,
            "    flags 0x{:08X};{}",
            p.flags,
            pretty_peer_flags(p.flags)
        );
        s.push_str("}\n");
    }
    s.push_str("history-uuids {");
    for (i, h) in sb.history.iter().enumerate() {
        let sep = if i % 4 == 0 { "\n        " } else { " " };
        let _ = write!(s, "{sep}0x{:016X};", h.0);
    }
    s.push_str("\n}\n");
    let _ = writeln!(s, "# al-extents {};", sb.al_extents);
    let _ = writeln!(s, "la-size-sect {};", sb.la_size_sect);
    let _ = writeln!(s, "bm-byte-per-bit {};", sb.bm_block_size);
    let _ = writeln!(s, "device-uuid 0x{:016X};", sb.device_uuid);
    let _ = writeln!(s, "la-peer-max-bio-size {};", sb.la_peer_max_bio_size);
    let _ = writeln!(s, "al-stripes 1;");
    let _ = writeln!(s, "al-stripe-size-4k {};", sb.geometry.al_blocks);
    let words: usize = d.bitmaps.iter().map(Vec::len).max().unwrap_or(0);
    let bm_bytes = (words as u64 * 8 * u64::from(sb.geometry.max_peers)).div_ceil(4096) * 4096;
    let _ = writeln!(s, "# bm-bytes {bm_bytes};");
    let mut bits = 0;
    for (i, bm) in d.bitmaps.iter().enumerate() {
        let (text, b) = format_bitmap(bm);
        let _ = write!(s, "bitmap[{i}] {text}");
        bits += b;
    }
    let _ = writeln!(s, "# bits-set {bits};");
    s
}

/// The peer slot `get-gi`/`show-gi` report: the requested node's, or the first used one.
fn gi_peer(sb: &Superblock, peer: Option<NodeId>) -> PeerMd {
    match peer {
        Some(n) => sb.peer(n).copied(),
        None => sb.peers.iter().find(|p| p.node_id.is_some()).copied(),
    }
    .unwrap_or(PeerMd::UNUSED)
}

/// What `get-gi` and `show-gi` print of one device and one peer: drbd-utils'
/// `dt_print_v9_uuids()` arguments. drbdmeta takes them from the metadata on disk; drbdsetup
/// from the kernel (the running daemon here), so both print the same line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gi {
    pub current: u64,
    /// The peer's bitmap UUID.
    pub bitmap: u64,
    /// The two youngest history UUIDs.
    pub history: [u64; 2],
    /// Device flags (`flags::*`).
    pub flags: u32,
    /// The peer's flags (`peer_flags::*`).
    pub peer_flags: u32,
}

impl Gi {
    /// The identifiers `sb` records for `peer` (or the first used peer slot).
    pub fn of(sb: &Superblock, peer: Option<NodeId>) -> Gi {
        let p = gi_peer(sb, peer);
        Gi {
            current: sb.current_uuid.0,
            bitmap: p.bitmap_uuid.0,
            history: [sb.history[0].0, sb.history[1].0],
            flags: sb.flags,
            peer_flags: p.flags,
        }
    }

    /// The `get-gi` line: `CURRENT:BITMAP:HIST1:HIST2:` then 7 device and 5 peer flag digits
    /// (`dt_print_v9_uuids()`).
    pub fn line(&self) -> String {
        let d = |f: u32| u8::from(self.flags & f != 0);
        let pf = |f: u32| u8::from(self.peer_flags & f != 0);
        format!(
            "{:016X}:{:016X}:{:016X}:{:016X}:{}:{}:{}:{}:{}:{}:{}:{}:{}:{}:{}:{}\n",
            self.current,
            self.bitmap,
            self.history[0],
            self.history[1],
            d(flags::CONSISTENT),
            d(flags::WAS_UP_TO_DATE),
            d(flags::PRIMARY_IND),
            d(flags::CRASHED_PRIMARY),
            d(flags::AL_CLEAN),
            d(flags::AL_DISABLED),
            d(flags::PRIMARY_LOST_QUORUM),
            pf(peer_flags::CONNECTED),
            pf(peer_flags::OUTDATED),
            pf(peer_flags::FENCING),
            pf(peer_flags::FULL_SYNC),
            pf(peer_flags::SEEN),
        )
    }

    /// The line with the legend: drbdsetup's `show-gi` (`dt_pretty_print_v9_uuids()`);
    /// drbdmeta's adds the sizes ([`show_gi`]).
    pub fn pretty(&self) -> String {
        format!("{SHOW_GI_HEAD}{}{SHOW_GI_LEGEND}", self.line())
    }
}

/// The `get-gi` line of `sb` for `peer` (see [`Gi::line`]).
pub fn get_gi(sb: &Superblock, peer: Option<NodeId>) -> String {
    Gi::of(sb, peer).line()
}

const SHOW_GI_HEAD: &str = "
       +--<  Current data generation UUID  >-
       |               +--<  Bitmap's base data generation UUID  >-
       |               |                 +--<  younger history UUID  >-
       |               |                 |         +-<  older history  >-
       V               V                 V         V
";

const SHOW_GI_LEGEND: &str =
    "                                                                    ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^ ^
                                      -<  Data consistency flag  >--+ | | | | | | | | | | |
                             -<  Data was/is currently up-to-date  >--+ | | | | | | | | | |
                                  -<  Node was/is currently primary  >--+ | | | | | | | | |
 -<  This node was a crashed primary, and has not seen its peer since  >--+ | | | | | | | |
             -<  The activity-log was applied, the disk can be attached  >--+ | | | | | | |
        -<  The activity-log was disabled, peer is completely out of sync  >--+ | | | | | |
                              -<  This node was primary when it lost quorum  >--+ | | | | |
                                          -<  Node was/is currently connected  >--+ | | | |
                              -<  The peer's disk was out-dated or inconsistent  >--+ | | |
                                 -<   A fence policy other the dont-care was used  >--+ | |
                  -<  Node was in the progress of marking all blocks as out of sync  >--+ |
                     -<  At least once we saw this node with a backing device attached >--+

";

/// The `show-gi` text: the `get-gi` line with drbdmeta's legend and the size lines.
pub fn show_gi(sb: &Superblock, peer: Option<NodeId>) -> String {
    let mut s = Gi::of(sb, peer).pretty();
    if sb.la_size_sect != 0 {
        let kb = sb.la_size_sect * SECTOR_SIZE / 1024;
        let _ = writeln!(
            s,
            "last agreed size: {} ({} sectors)",
            ppsize(kb),
            sb.la_size_sect
        );
        let _ = writeln!(
            s,
            "last agreed max bio size: {} Byte",
            sb.la_peer_max_bio_size
        );
    } else {
        s.push_str("zero size device -- never seen peer yet?\n");
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ppsize_matches_drbdmeta() {
        assert_eq!(ppsize(1023), "1023 KB");
        assert_eq!(ppsize(1 << 20), "1024 MB");
        assert_eq!(ppsize(3 << 20), "3072 MB");
        assert_eq!(ppsize(64 << 20), "64 GB");
    }

    #[test]
    fn bitmap_run_length() {
        let mut w = vec![0u64; 4096];
        w[5] = 0xF;
        let (t, bits) = format_bitmap(&w);
        assert_eq!(bits, 4);
        assert!(t.starts_with("{\n   # at 0kB\n    0x0000000000000000;"));
        assert!(t.contains(" 0x000000000000000F;"));
        assert!(t.contains(" 4088 times 0x0000000000000000;"));
        assert!(t.ends_with("\n}\n"));
    }
}
