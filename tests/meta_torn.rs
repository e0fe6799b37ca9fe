//! Torn superblock writes: the slot being written may hold any prefix of the new bytes; the
//! reader must then get the previous generation.

#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use udrbd::disk::metadev::{self, CreateMdOptions};
use udrbd::meta::superblock::{self, Superblock};
use udrbd::types::{GenUuid, MetaDisk, NodeId};

fn setup(dir: &Path) -> PathBuf {
    let p = dir.join("d");
    File::create(&p).unwrap().set_len(16 << 20).unwrap();
    let o = CreateMdOptions {
        node_id: NodeId(0),
        max_peers: 2,
        peer_node_ids: vec![NodeId(1), NodeId(2)],
        al_extents: 1237,
        force: false,
    };
    metadev::create_md(&p, &MetaDisk::Internal, &o, &mut |_| false, &mut Vec::new()).unwrap();
    p
}

fn generation(sb: &Superblock, n: u64) -> Superblock {
    let mut s = sb.clone();
    s.current_uuid = GenUuid(0x1000 * n);
    s
}

/// Writes generation 2 properly, then tears the write of generation 3 after `cut` bytes
/// (the rest of the slot keeps the old bytes, or zeroes when `zero_rest`). Returns the
/// current UUID read back, and the UUID expected: generation 3 only if the torn bytes happen
/// to equal the complete new slot (its tail is zero padding, like the old slot's).
fn torn(disk: &Path, cut: usize, zero_rest: bool, flip: Option<usize>) -> (GenUuid, GenUuid) {
    let md = MetaDisk::Internal;
    let st = metadev::read_md(disk, &md).unwrap();
    let g2 = generation(&st.sb, 2);
    metadev::write_superblock(disk, &md, &g2).unwrap();
    let st = metadev::read_md(disk, &md).unwrap();
    assert_eq!(st.sb.current_uuid, GenUuid(0x2000));
    // The next write goes to the other slot with seq+1.
    let (slot, seq) = superblock::next_write(Some((st.slot, st.seq)));
    let (path, offs) = metadev::superblock_slots(disk, &md).unwrap();
    let mut new = superblock::encode_slot(&generation(&st.sb, 3), seq);
    if let Some(i) = flip {
        new[i] ^= 0x01;
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut buf = [0u8; 4096];
    f.read_exact_at(&mut buf, offs[slot]).unwrap();
    if zero_rest {
        buf = [0u8; 4096];
    }
    buf[..cut].copy_from_slice(&new[..cut]);
    f.write_all_at(&buf, offs[slot]).unwrap();
    let expect = if flip.is_none() && buf == new {
        0x3000
    } else {
        0x2000
    };
    (
        metadev::read_md(disk, &md).unwrap().sb.current_uuid,
        GenUuid(expect),
    )
}

#[test]
fn torn_write_at_sampled_positions_keeps_previous_generation() {
    let dir = tempfile::tempdir().unwrap();
    let disk = setup(dir.path());
    // Run several rounds so that both slot A and slot B get torn.
    for (round, cut) in [0usize, 1, 7, 8, 15, 16, 23, 100, 351, 848, 2048, 4095]
        .into_iter()
        .enumerate()
    {
        let (got, expect) = torn(&disk, cut, round % 2 == 1, None);
        assert_eq!(got, expect, "cut at {cut}");
        // Zeroed tails differ from the new slot wherever it has data, so short cuts with
        // zeroes must always fall back.
        if round % 2 == 1 && cut < 352 {
            assert_eq!(got, GenUuid(0x2000), "cut at {cut}");
        }
    }
}

#[test]
fn complete_write_wins_by_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let disk = setup(dir.path());
    assert_eq!(torn(&disk, 4096, false, None).0, GenUuid(0x3000));
    // Both slots valid now; the higher sequence is generation 3.
    let st = metadev::read_md(&disk, &MetaDisk::Internal).unwrap();
    assert_eq!(st.seq, 3);
    // A flipped bit in the full new slot is caught: previous generation again.
    assert_eq!(torn(&disk, 4096, false, Some(2000)).0, GenUuid(0x2000));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn torn_at_any_position(cut in 0usize..4096, zero in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let disk = setup(dir.path());
        let (got, expect) = torn(&disk, cut, zero, None);
        prop_assert_eq!(got, expect);
    }
}
