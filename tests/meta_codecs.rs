//! Property tests of the metadata codecs: round trips, corruption detection, no panics, and
//! activity-log recovery.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use udrbd::meta::al::{self, AL_BLOCK, ActivityLog, TrKind, Transaction};
use udrbd::meta::bm_page;
use udrbd::meta::layout::{Layout, Placement};
use udrbd::meta::superblock::{self, PeerMd, SbError, Superblock};
use udrbd::types::{ExtentNr, GenUuid, NodeId};

fn arb_sb() -> impl Strategy<Value = Superblock> {
    (
        (1u32..=31, 2u32..=16, 1u64..(1 << 40)),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        prop::collection::vec(any::<u64>(), 32),
        prop::collection::vec((any::<u64>(), any::<u32>(), 0u8..32), 31),
        0u8..32,
    )
        .prop_map(
            |((peers, al_blocks, size), dev, cur, flags, hist, pm, node)| {
                let l = Layout::compute(size.max(1 << 20), Placement::Internal, peers, al_blocks)
                    .unwrap();
                let mut sb = Superblock::new(
                    &l,
                    NodeId(node),
                    1 + (dev as u32) % al::max_al_extents(al_blocks),
                    dev,
                    &[],
                );
                sb.current_uuid = GenUuid(cur);
                sb.flags = flags;
                for (h, v) in sb.history.iter_mut().zip(hist) {
                    *h = GenUuid(v);
                }
                for (i, (p, (u, f, n))) in sb.peers.iter_mut().zip(pm).enumerate() {
                    if (i as u32) < peers {
                        *p = PeerMd {
                            node_id: Some(NodeId(n)),
                            bitmap_uuid: GenUuid(u),
                            bitmap_index: Some(i as u8),
                            flags: f,
                        };
                    }
                }
                sb
            },
        )
}

fn arb_tr() -> impl Strategy<Value = Transaction> {
    (1u32..=6433, any::<u64>(), any::<bool>()).prop_flat_map(|(ext, nr, init)| {
        (
            Just(ext),
            Just(nr),
            Just(init),
            prop::collection::vec((0..ext as u16, 0u32..u32::MAX), 0..=64),
            0..ext,
        )
            .prop_flat_map(|(ext, nr, init, upd, start)| {
                let window = ((ext - start) as usize).min(al::CONTEXT_PER_TR);
                prop::collection::vec(prop::option::of(0u32..u32::MAX), window).prop_map(
                    move |ctx| Transaction {
                        tr_number: nr,
                        kind: if init {
                            TrKind::Initialized
                        } else {
                            TrKind::Update
                        },
                        al_extents: ext,
                        updates: upd.iter().map(|(s, e)| (*s, ExtentNr(*e))).collect(),
                        context_start: start,
                        context: ctx.into_iter().map(|c| c.map(ExtentNr)).collect(),
                    },
                )
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn superblock_round_trip(sb in arb_sb(), seq in any::<u64>()) {
        let b = superblock::encode_slot(&sb, seq);
        let d = superblock::decode_slot(&b).unwrap();
        prop_assert_eq!(d.seq, seq);
        prop_assert_eq!(d.sb, sb);
    }

    #[test]
    fn superblock_single_byte_corruption_detected(sb in arb_sb(), at in 0usize..4096, x in 1u8..=255) {
        let mut b = superblock::encode_slot(&sb, 9);
        b[at] ^= x;
        prop_assert!(superblock::decode_slot(&b).is_err());
    }

    #[test]
    fn transaction_round_trip(tr in arb_tr()) {
        let b = al::encode_transaction(&tr);
        prop_assert_eq!(al::decode_transaction(&b).unwrap(), tr);
    }

    #[test]
    fn transaction_single_byte_corruption_detected(tr in arb_tr(), at in 0usize..4096, x in 1u8..=255) {
        let mut b = al::encode_transaction(&tr);
        b[at] ^= x;
        prop_assert!(al::decode_transaction(&b).is_err());
    }

    #[test]
    fn bitmap_page_round_trip(peer in any::<u16>(), page in any::<u32>(), words in prop::collection::vec(any::<u64>(), 510)) {
        let b = bm_page::encode_page(peer, page, &words);
        prop_assert_eq!(bm_page::decode_page(&b, peer, page).unwrap(), words);
        prop_assert!(bm_page::decode_page(&b, peer.wrapping_add(1), page).is_err());
        prop_assert!(bm_page::decode_page(&b, peer, page.wrapping_add(1)).is_err());
    }

    #[test]
    fn bitmap_page_single_byte_corruption_detected(words in prop::collection::vec(any::<u64>(), 510), at in 0usize..4096, x in 1u8..=255) {
        let mut b = bm_page::encode_page(3, 7, &words);
        b[at] ^= x;
        prop_assert!(bm_page::decode_page(&b, 3, 7).is_err());
    }

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        let _ = superblock::decode_slot(&bytes);
        let _ = al::decode_transaction(&bytes);
        let _ = bm_page::decode_page_any(&bytes);
        let _ = al::recover(&bytes, 1237);
    }

    /// After any access sequence, replaying the ring rebuilds the LRU's hot set; with the
    /// newest block torn, the state before the newest transaction.
    #[test]
    fn al_recover_matches_lru(seq in prop::collection::vec(0u32..200, 1..600), ext in 1u32..64, nblocks in 2u32..10, tear in any::<bool>()) {
        let ext = ext.min(al::max_al_extents(nblocks));
        let mut area = al::initial_area(nblocks, ext);
        let mut log = ActivityLog::new(ext, u64::from(nblocks));
        let mut before_last = log.hot_extents();
        let mut last_block = None;
        for e in seq {
            let before = log.hot_extents();
            if let Some(tr) = log.access(ExtentNr(e)) {
                let at = tr.block_index(nblocks) as usize * AL_BLOCK;
                area[at..at + AL_BLOCK].copy_from_slice(&al::encode_transaction(&tr));
                before_last = before;
                last_block = Some(at);
            }
        }
        if tear && let Some(at) = last_block {
            area[at + 100] ^= 0xFF;
            let r = al::recover(&area, ext).unwrap();
            prop_assert_eq!(r.extents, before_last);
            prop_assert_eq!(r.corrupt_blocks, 1);
        } else {
            let r = al::recover(&area, ext).unwrap();
            prop_assert_eq!(&r.extents, &log.hot_extents());
            // And a log rebuilt from it continues with the same hot set.
            prop_assert_eq!(ActivityLog::from_recovery(&r).hot_extents(), log.hot_extents());
        }
    }
}

#[test]
fn foreign_superblocks_are_named() {
    let mut b = [0u8; 4096];
    b[60..64].copy_from_slice(&0x8374_026Du32.to_be_bytes());
    assert_eq!(
        superblock::decode_slot(&b),
        Err(SbError::ForeignDrbd("DRBD v09"))
    );
    assert_eq!(superblock::decode_slot(&[0u8; 4096]), Err(SbError::NoMagic));
    assert_eq!(
        superblock::decode_slot(&[0u8; 10]),
        Err(SbError::TooShort(10))
    );
}

#[test]
fn unsupported_version_is_reported() {
    let l = Layout::compute(1 << 30, Placement::Internal, 1, 8).unwrap();
    let sb = Superblock::new(&l, NodeId(0), 1237, 1, &[]);
    let mut b = superblock::encode_slot(&sb, 1);
    b[8] = 2;
    // Re-seal the checksum so only the version is wrong.
    b[12..16].fill(0);
    let crc = crc32c::crc32c(&b);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        superblock::decode_slot(&b),
        Err(SbError::UnsupportedVersion(2))
    );
}

/// Regenerates the fuzz seed corpora (`cargo test -p udrbd --test meta_codecs -- --ignored`):
/// valid encodings plus a few corrupt ones.
#[test]
#[ignore = "writes fuzz/corpus/{superblock,al,bitmap_page}; run by hand after changing the seeds"]
fn write_fuzz_seeds() {
    use std::fs;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let put = |dir: &str, name: &str, bytes: &[u8]| {
        let d = root.join(dir);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(name), bytes).unwrap();
    };
    let l = Layout::compute(1 << 30, Placement::Internal, 2, 8).unwrap();
    let sb = Superblock::new(&l, NodeId(0), 1237, 0xDEAD_BEEF, &[NodeId(1), NodeId(2)]);
    let good = superblock::encode_slot(&sb, 7);
    put("superblock", "valid", &good);
    let mut bad = good;
    bad[100] ^= 1;
    put("superblock", "bad_crc", &bad);
    put("superblock", "short", &good[..100]);
    let mut drbd = [0u8; 4096];
    drbd[60..64].copy_from_slice(&0x8374_026Du32.to_be_bytes());
    put("superblock", "drbd_v09", &drbd);

    let area = al::initial_area(8, 1237);
    put("al", "initialized", &area[..AL_BLOCK]);
    let mut log = ActivityLog::new(1237, 8);
    let tr = log.access(ExtentNr(42)).unwrap();
    let block = al::encode_transaction(&tr);
    put("al", "update", &block);
    let mut torn = block;
    torn[2000..].fill(0);
    put("al", "torn", &torn);

    let words: Vec<u64> = (0..510u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    let page = bm_page::encode_page(1, 3, &words);
    put("bitmap_page", "valid", &page);
    put("bitmap_page", "zero", &bm_page::encode_page(0, 0, &[]));
    let mut bad = page;
    bad[4000] ^= 0x80;
    put("bitmap_page", "bad_crc", &bad);
}
