//! create-md / dump-md / wipe-md / get-gi / show-gi on temp files, and the refusals.

#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use udrbd::disk::metadev::{self, CreateMdOptions, MetaDevError};
use udrbd::meta::layout::{self, Layout, Placement};
use udrbd::types::{GenUuid, MetaDisk, NodeId};

fn sparse(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn opts(force: bool) -> CreateMdOptions {
    CreateMdOptions {
        node_id: NodeId(0),
        max_peers: 1,
        peer_node_ids: vec![NodeId(1)],
        al_extents: 1237,
        force,
    }
}

fn create(disk: &Path, meta: &MetaDisk, o: &CreateMdOptions) -> (Result<(), MetaDevError>, String) {
    let mut out = Vec::new();
    let r = metadev::create_md(disk, meta, o, &mut |_| false, &mut out);
    (r, String::from_utf8(out).unwrap())
}

fn dump(disk: &Path, meta: &MetaDisk) -> String {
    let mut out = Vec::new();
    metadev::dump_md(disk, meta, false, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn internal_create_dump_wipe_several_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for (i, size) in [1u64 << 20, 64 << 20, 1 << 30, (3 << 30) + 12 * 1024]
        .into_iter()
        .enumerate()
    {
        let disk = sparse(dir.path(), &format!("d{i}"), size);
        let (r, text) = create(&disk, &MetaDisk::Internal, &opts(false));
        r.unwrap();
        assert!(text.contains("initializing activity log\n"), "{text}");
        assert!(text.contains("initializing bitmap ("), "{text}");
        assert!(
            text.ends_with(
                "Writing meta data...\nNew drbd meta data block successfully created.\n"
            )
        );

        let l = Layout::compute(size, Placement::Internal, 1, 8).unwrap();
        // Documented rule: 8 KiB + 32 KiB AL + ceil(bits/32640) pages.
        let bits = size.div_ceil(4096);
        assert_eq!(l.md_size, 8192 + 32768 + bits.div_ceil(32640) * 4096);
        // Within a few KiB of DRBD's 36 KiB + size/32K.
        let drbd = layout::drbd_md_size(size, 1);
        assert!(
            l.md_size >= drbd && l.md_size - drbd <= 12 * 1024,
            "{size}: {} vs {drbd}",
            l.md_size
        );

        let st = metadev::read_md(&disk, &MetaDisk::Internal).unwrap();
        assert_eq!(st.layout.data_bytes, size / 4096 * 4096 - l.md_size);
        assert_eq!(st.sb.la_size_sect, st.layout.data_bytes / 512);
        assert_eq!(st.sb.current_uuid, GenUuid::JUST_CREATED);
        assert!(st.bad_pages.is_empty());
        assert!(st.bitmaps[0].iter().all(|&w| w == 0));
        assert!(st.al.as_ref().unwrap().extents.is_empty());

        let d = dump(&disk, &MetaDisk::Internal);
        assert!(d.starts_with("# DRBD meta data dump\n# "));
        assert!(d.contains("\nversion \"udrbd-v1\";\n\nmax-peers 1;\n"));
        assert!(d.contains(&format!("# md_size_sect {}\n", l.md_size / 512)));
        assert!(d.contains("current-uuid 0x0000000000000004;\n"));
        assert!(d.contains("flags 0x00000080;\n"));
        assert!(
            d.contains("peer[1] {\n    bitmap-index 0;\n    bitmap-uuid 0x0000000000000000;\n")
        );
        assert!(d.contains("peer[0] {\n    bitmap-index -1;"));
        assert!(d.contains("# al-extents 1237;\n"));
        assert!(d.contains(&format!("la-size-sect {};\n", st.sb.la_size_sect)));
        assert!(d.contains("bm-byte-per-bit 4096;\n"));
        assert!(d.contains("bitmap[0] {\n   # at 0kB\n"));
        assert!(d.ends_with("# bits-set 0;\n"), "{}", &d[d.len() - 200..]);

        let mut out = Vec::new();
        metadev::wipe_md(
            &disk,
            &MetaDisk::Internal,
            &mut |q| {
                assert_eq!(q, "Do you really want to wipe out the DRBD meta data?");
                true
            },
            &mut out,
        )
        .unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("DRBD meta data block successfully wiped out.\n")
        );
        let e = metadev::read_md(&disk, &MetaDisk::Internal).unwrap_err();
        assert_eq!(e.exit_code(), 255);
        let mut out = Vec::new();
        metadev::wipe_md(&disk, &MetaDisk::Internal, &mut |_| true, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "There appears to be no drbd meta data to wipe out?\n"
        );
    }
}

#[test]
fn external_and_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse(dir.path(), "data", 1 << 30);
    let md = sparse(dir.path(), "md", 1 << 20);
    let ext = MetaDisk::External {
        path: md.display().to_string(),
        index: None,
    };
    create(&disk, &ext, &opts(false)).0.unwrap();
    let st = metadev::read_md(&disk, &ext).unwrap();
    assert_eq!(st.layout.sb_offsets, [0, 4096]);
    assert_eq!(st.layout.data_bytes, 1 << 30);
    assert!(dump(&disk, &ext).contains("# md_offset 0\n"));

    let big = sparse(dir.path(), "mdidx", 3 * layout::INDEXED_SLOT_BYTES);
    let idx = MetaDisk::External {
        path: big.display().to_string(),
        index: Some(2),
    };
    create(&disk, &idx, &opts(false)).0.unwrap();
    let st = metadev::read_md(&disk, &idx).unwrap();
    assert_eq!(st.layout.sb_offsets[0], 2 * layout::INDEXED_SLOT_BYTES);
    // Slot 0 of that device holds nothing.
    let idx0 = MetaDisk::External {
        path: big.display().to_string(),
        index: Some(0),
    };
    assert_eq!(metadev::read_md(&disk, &idx0).unwrap_err().exit_code(), 255);

    // Too small external meta device.
    let tiny = sparse(dir.path(), "tiny", 8192);
    let t = MetaDisk::External {
        path: tiny.display().to_string(),
        index: None,
    };
    let e = create(&disk, &t, &opts(false)).0.unwrap_err();
    assert_eq!(e.exit_code(), 10, "{e}");
}

#[test]
fn get_gi_and_show_gi() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse(dir.path(), "d", 64 << 20);
    create(&disk, &MetaDisk::Internal, &opts(false)).0.unwrap();
    let mut st = metadev::read_md(&disk, &MetaDisk::Internal).unwrap();
    st.sb.current_uuid = GenUuid(0x38BA_C2CC_396C_0581);
    st.sb.history[0] = GenUuid(0x0001_0000_0000_0000);
    st.sb.peers[0].bitmap_uuid = GenUuid(0xAB);
    st.sb.peers[0].flags = 1 | 16;
    st.sb.flags |= 1 | 16;
    metadev::write_superblock(&disk, &MetaDisk::Internal, &st.sb).unwrap();
    let mut out = Vec::new();
    metadev::get_gi(&disk, &MetaDisk::Internal, Some(NodeId(1)), &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "38BAC2CC396C0581:00000000000000AB:0001000000000000:0000000000000000:1:1:0:0:1:0:0:1:0:0:0:1\n"
    );
    let mut out = Vec::new();
    metadev::show_gi(&disk, &MetaDisk::Internal, Some(NodeId(1)), &mut out).unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("\n       +--<  Current data generation UUID  >-\n"));
    assert!(s.contains("-<  Data consistency flag  >--+ | | | | | | | | | | |\n"));
    assert!(s.contains("last agreed size: "));
    assert!(s.contains(&format!("({} sectors)\n", st.sb.la_size_sect)));

    let empty = sparse(dir.path(), "e", 1 << 20);
    let e = metadev::get_gi(&empty, &MetaDisk::Internal, None, &mut Vec::new()).unwrap_err();
    assert_eq!(e.exit_code(), 255);
}

#[test]
fn create_refuses_existing_metadata_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse(dir.path(), "d", 64 << 20);
    create(&disk, &MetaDisk::Internal, &opts(false)).0.unwrap();
    let (r, text) = create(&disk, &MetaDisk::Internal, &opts(false));
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(text.contains("There appears to be a udrbd-v1 flexible-size internal meta data block\nalready in place on"), "{text}");
    assert!(text.ends_with("Operation cancelled.\n"));
    let (r, text) = create(&disk, &MetaDisk::Internal, &opts(true));
    r.unwrap();
    assert!(text.contains("*** confirmation forced via --force option ***"));
}

#[test]
fn create_refuses_ext4_looking_device() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse(dir.path(), "d", 64 << 20);
    let f = OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&0xEF53u16.to_le_bytes(), 1080).unwrap();
    let (r, text) = create(&disk, &MetaDisk::Internal, &opts(false));
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 40, "{e}");
    assert!(text.contains("Found ext2 filesystem"), "{text}");
    assert!(text.ends_with("Operation refused.\n\n"));
    assert_eq!(
        metadev::read_md(&disk, &MetaDisk::Internal)
            .unwrap_err()
            .exit_code(),
        255
    );
    create(&disk, &MetaDisk::Internal, &opts(true)).0.unwrap();
}

#[test]
fn create_asks_before_overwriting_nonzero_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse(dir.path(), "d", 64 << 20);
    let f = OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(b"precious", (64 << 20) - 20_000).unwrap();
    let (r, text) = create(&disk, &MetaDisk::Internal, &opts(false));
    assert_eq!(r.unwrap_err().exit_code(), 1);
    assert!(text.contains("==> This might destroy existing data! <=="));
}

#[test]
fn shrunk_backing_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // External: truncate the data device below the agreed size.
    let disk = sparse(dir.path(), "data", 64 << 20);
    let md = sparse(dir.path(), "md", 1 << 20);
    let ext = MetaDisk::External {
        path: md.display().to_string(),
        index: None,
    };
    create(&disk, &ext, &opts(false)).0.unwrap();
    File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let e = metadev::read_md(&disk, &ext).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "backing device is smaller than the last agreed size ({} sectors < {} sectors); refusing to attach to avoid data loss",
            (32u64 << 20) / 512,
            (64u64 << 20) / 512
        )
    );
    assert_eq!(
        std::fs::metadata(&disk).unwrap().len(),
        32 << 20,
        "never truncated further"
    );

    // Internal: an agreed size beyond the usable data area.
    let disk = sparse(dir.path(), "int", 64 << 20);
    create(&disk, &MetaDisk::Internal, &opts(false)).0.unwrap();
    let mut st = metadev::read_md(&disk, &MetaDisk::Internal).unwrap();
    st.sb.la_size_sect += 8;
    metadev::write_superblock(&disk, &MetaDisk::Internal, &st.sb).unwrap();
    let e = metadev::read_md(&disk, &MetaDisk::Internal).unwrap_err();
    assert!(matches!(e, MetaDevError::Shrunk { .. }), "{e}");
}

#[test]
fn corrupt_or_foreign_metadata_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse(dir.path(), "d", 1 << 20);
    let f = OpenOptions::new().write(true).open(&disk).unwrap();
    // A DRBD v09 superblock in DRBD's place (last 4 KiB): magic 0x8374026D at byte 60, BE.
    f.write_all_at(&0x8374_026Du32.to_be_bytes(), (1 << 20) - 4096 + 60)
        .unwrap();
    let e = metadev::read_md(&disk, &MetaDisk::Internal).unwrap_err();
    assert!(e.to_string().contains("DRBD v09 superblock"), "{e}");
    assert_eq!(e.exit_code(), 255);
    // Random bytes.
    let junk: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    f.write_all_at(&junk, (1 << 20) - 8192).unwrap();
    let e = metadev::read_md(&disk, &MetaDisk::Internal).unwrap_err();
    assert!(
        e.to_string().starts_with("No valid meta data found on"),
        "{e}"
    );
    // A corrupt bitmap page reads as all ones.
    let disk = sparse(dir.path(), "b", 256 << 20);
    create(&disk, &MetaDisk::Internal, &opts(false)).0.unwrap();
    let st = metadev::read_md(&disk, &MetaDisk::Internal).unwrap();
    let f = OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&[0x55], st.layout.bm_page_offset(0, 0) + 100)
        .unwrap();
    let st = metadev::read_md(&disk, &MetaDisk::Internal).unwrap();
    assert_eq!(st.bad_pages, vec![(0, 0)]);
    assert!(st.bitmaps[0][..510].iter().all(|&w| w == u64::MAX));
    assert!(st.bitmaps[0][510..].iter().all(|&w| w == 0));
}

/// Runtime metadata writes are fdatasynced, one per write, unless `md-flushes no`; either way
/// what was written reads back.
#[test]
fn md_flushes_decides_whether_metadata_writes_are_synced() {
    let dir = tempfile::tempdir().unwrap();
    for flushes in [true, false] {
        let disk = sparse(dir.path(), &format!("md-{flushes}.img"), 64 << 20);
        let (r, _) = create(&disk, &MetaDisk::Internal, &opts(false));
        r.unwrap();
        let state = metadev::read_md(&disk, &MetaDisk::Internal).unwrap();
        let mut io = udrbd::disk::meta_io::MetaIo::open(&state, flushes).unwrap();
        let mut sb = state.sb.clone();
        sb.current_uuid = GenUuid(0x1234_5679);
        io.write_superblock(&sb).unwrap();
        io.write_bitmap(&[(0, 0, vec![u64::MAX; 512])]).unwrap();
        assert_eq!(io.syncs(), if flushes { 2 } else { 0 });
        let back = metadev::read_md(&disk, &MetaDisk::Internal).unwrap();
        assert_eq!(back.sb.current_uuid, GenUuid(0x1234_5679));
    }
}
