//! The backing-device engines against each other (differential), plus the io_uring engine's
//! RMW serialisation, flush coalescing and trim behaviour. Files live under
//! CARGO_TARGET_TMPDIR (a real filesystem): tmpfs would hide O_DIRECT and hole behaviour.
#![allow(clippy::unwrap_used)]

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use udrbd::disk::wait::{read_blocking, run_blocking};
use udrbd::disk::{DiskDone, DiskEngine, DiskOp, MemEngine, PioEngine, UringEngine};

const SIZE: u64 = 64 * 4096;
const SECTORS: u64 = SIZE / 512;

/// The runtime whose task reaps for io_uring engines in tokio mode; the tests themselves
/// submit and wait from plain threads, as in thread mode.
static RT: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

/// An io_uring engine reaped by a tokio task.
fn uring_tokio(path: &Path) -> UringEngine {
    let e = UringEngine::open_on(path, None, RT.handle()).unwrap();
    assert!(e.reaps_on_tokio());
    e
}

/// Opens an io_uring engine in thread mode (`false`) or tokio mode (`true`).
fn uring(path: &Path, tokio: bool) -> UringEngine {
    if tokio {
        uring_tokio(path)
    } else {
        UringEngine::open(path, None).unwrap()
    }
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn sparse_file(dir: &Path, name: &str, size: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

/// What a completion is compared by: read bytes, done, or the error kind.
type Outcome = Result<Option<Vec<u8>>, io::ErrorKind>;

fn outcome(r: io::Result<DiskDone>) -> Outcome {
    match r {
        Ok(DiskDone::Read(b)) => Ok(Some(b.to_vec())),
        Ok(DiskDone::Done) => Ok(None),
        Err(e) => Err(e.kind()),
    }
}

#[derive(Debug, Clone)]
enum Step {
    One(DiskOp),
    /// Submitted together, waited for together (modifying ops only, so the outcome does not
    /// depend on timing: overlapping ones are ordered by the block locks).
    Batch(Vec<DiskOp>),
}

fn offset_len() -> impl Strategy<Value = (u64, u32)> {
    prop_oneof![
        // Mostly in range, sometimes crossing the end.
        8 => (0..SECTORS, 0u32..=20).prop_map(|(s, n)| (s * 512, n * 512)),
        1 => (SECTORS - 4..SECTORS + 4, 0u32..=8).prop_map(|(s, n)| (s * 512, n * 512)),
        // Not sector aligned.
        1 => (0..SIZE, 1u32..5000),
    ]
}

fn modifying_op() -> impl Strategy<Value = DiskOp> {
    prop_oneof![
        4 => (offset_len(), any::<u8>(), any::<bool>(), any::<bool>()).prop_map(
            |((offset, len), seed, fua, aligned)| {
                let bytes: Vec<u8> = (0..len).map(|i| seed.wrapping_add((i / 7) as u8) | 1).collect();
                // Payloads in aligned memory, as the NBD server and the peer link deliver them,
                // take the engines' no-copy path when the request is aligned too.
                let data = if aligned {
                    let mut fill = udrbd::buf::AlignedFill::new(bytes.len());
                    fill.extend_from_slice(&bytes);
                    fill.finish()
                } else {
                    bytes.into()
                };
                DiskOp::Write { offset, data, fua }
            }
        ),
        1 => (offset_len(), any::<bool>()).prop_map(|((offset, len), fua)| DiskOp::Trim {
            offset,
            len,
            fua,
        }),
        1 => (offset_len(), any::<bool>(), any::<bool>()).prop_map(
            |((offset, len), fua, no_hole)| DiskOp::WriteZeroes {
                offset,
                len,
                fua,
                no_hole,
            }
        ),
        1 => Just(DiskOp::Flush),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => modifying_op().prop_map(Step::One),
        2 => offset_len().prop_map(|(offset, len)| Step::One(DiskOp::Read { offset, len })),
        1 => prop::collection::vec(modifying_op(), 2..8).prop_map(Step::Batch),
    ]
}

fn run_steps(e: &dyn DiskEngine, steps: &[Step]) -> Vec<Outcome> {
    let mut out = Vec::new();
    for s in steps {
        match s {
            Step::One(op) => out.push(outcome(run_blocking(e, op.clone()))),
            Step::Batch(ops) => {
                let (tx, rx) = mpsc::channel();
                for (i, op) in ops.iter().enumerate() {
                    let tx = tx.clone();
                    e.submit(
                        op.clone(),
                        Box::new(move |r| {
                            let _ = tx.send((i, outcome(r)));
                        }),
                    );
                }
                let mut got: Vec<(usize, Outcome)> =
                    (0..ops.len()).map(|_| rx.recv().unwrap()).collect();
                got.sort_by_key(|(i, _)| *i);
                out.extend(got.into_iter().map(|(_, o)| o));
            }
        }
    }
    out
}

fn contents(e: &dyn DiskEngine) -> Vec<u8> {
    read_blocking(e, 0, SIZE as u32).unwrap().to_vec()
}

/// Every run an engine reports as a hole or zero reads as zeroes.
fn check_status_is_truthful(e: &dyn DiskEngine, data: &[u8]) {
    let mut pos = 0u64;
    let runs = e.block_status(0, SIZE).unwrap();
    for r in &runs {
        if r.hole || r.zero {
            let s = &data[pos as usize..(pos + r.len) as usize];
            assert!(
                s.iter().all(|&b| b == 0),
                "run at {pos} ({r:?}) is not zero"
            );
        }
        pos += r.len;
    }
    assert_eq!(pos, SIZE, "runs {runs:?} do not cover the device");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn engines_agree(steps in prop::collection::vec(step(), 1..24)) {
        let dir = tmpdir();
        let mem = MemEngine::new(SIZE);
        let pio = PioEngine::open(&sparse_file(dir.path(), "pio", SIZE), None).unwrap();
        let uring = UringEngine::open(&sparse_file(dir.path(), "uring", SIZE), None).unwrap();
        let ut = uring_tokio(&sparse_file(dir.path(), "uring-tokio", SIZE));
        prop_assert!(pio.is_direct() && uring.is_direct() && ut.is_direct());
        let want = run_steps(&mem, &steps);
        prop_assert_eq!(&run_steps(&pio, &steps), &want);
        prop_assert_eq!(&run_steps(&uring, &steps), &want);
        prop_assert_eq!(&run_steps(&ut, &steps), &want);
        let final_mem = mem.snapshot();
        prop_assert_eq!(&contents(&mem), &final_mem);
        prop_assert!(contents(&pio) == final_mem, "pio contents differ");
        prop_assert!(contents(&uring) == final_mem, "uring contents differ");
        prop_assert!(contents(&ut) == final_mem, "uring (tokio mode) contents differ");
        check_status_is_truthful(&mem, &final_mem);
        check_status_is_truthful(&pio, &final_mem);
        check_status_is_truthful(&uring, &final_mem);
    }
}

#[test]
fn concurrent_sector_writes_into_shared_blocks_all_land() {
    concurrent_sector_writes(false);
}

#[test]
fn concurrent_sector_writes_into_shared_blocks_all_land_tokio_mode() {
    concurrent_sector_writes(true);
}

fn concurrent_sector_writes(tokio: bool) {
    let dir = tmpdir();
    let e = Arc::new(uring(&sparse_file(dir.path(), "d", SIZE), tokio));
    assert!(
        e.is_direct(),
        "the test needs O_DIRECT so every write is an RMW"
    );
    // Pre-fill so a lost RMW would show old bytes, not zeroes.
    run_blocking(
        &*e,
        DiskOp::Write {
            offset: 0,
            data: vec![0xEE; 4 * 4096].into(),
            fua: false,
        },
    )
    .unwrap();
    // 64 sectors in 4 blocks: sector i of the first 32 KiB, interleaved over 4 threads so
    // neighbours in one block are in flight at once.
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (e, tx) = (Arc::clone(&e), tx.clone());
            std::thread::spawn(move || {
                for k in 0..16u64 {
                    // First half: even sectors, second half: the odd ones beside them.
                    let sector = (k * 4 + t) % 32 * 2 + k / 8;
                    let tx = tx.clone();
                    e.submit(
                        DiskOp::Write {
                            offset: sector * 512,
                            data: vec![sector as u8 + 1; 512].into(),
                            fua: false,
                        },
                        Box::new(move |r| tx.send(r.map(|_| sector)).unwrap()),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(tx);
    let mut seen: Vec<u64> = rx.iter().map(|r| r.unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..64).collect::<Vec<_>>());
    let data = read_blocking(&*e, 0, 8 * 4096).unwrap();
    for s in 0..64usize {
        assert!(
            data[s * 512..(s + 1) * 512]
                .iter()
                .all(|&b| b == s as u8 + 1),
            "sector {s} lost its write"
        );
    }
    assert!(data[64 * 512..].iter().all(|&b| b == 0));
}

#[test]
fn flushes_coalesce_but_never_piggy_back() {
    flushes_coalesce(false);
}

#[test]
fn flushes_coalesce_but_never_piggy_back_tokio_mode() {
    flushes_coalesce(true);
}

fn flushes_coalesce(tokio: bool) {
    let dir = tmpdir();
    let e = Arc::new(uring(&sparse_file(dir.path(), "d", SIZE), tokio));
    const N: usize = 200;
    // (fsyncs started when submitted, fsyncs completed when the flush completed)
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (e, tx, seen) = (Arc::clone(&e), tx.clone(), Arc::clone(&seen));
            std::thread::spawn(move || {
                for _ in 0..N / 4 {
                    let started = e.flush_stats().started;
                    let (e2, tx, seen) = (Arc::clone(&e), tx.clone(), Arc::clone(&seen));
                    e.submit(
                        DiskOp::Flush,
                        Box::new(move |r| {
                            r.unwrap();
                            let completed = e2.flush_stats().completed;
                            seen.lock().unwrap().push((started, completed));
                            tx.send(()).unwrap();
                        }),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for _ in 0..N {
        rx.recv().unwrap();
    }
    for &(started, completed) in seen.lock().unwrap().iter() {
        // An fsync that began after this flush was submitted has finished.
        assert!(
            completed > started,
            "flush rode an fsync that began before it"
        );
    }
    let stats = e.flush_stats();
    assert_eq!(stats.started, stats.completed);
    assert!(stats.started >= 1);
    assert!(
        (stats.started as usize) < N,
        "no coalescing: {} fsyncs for {N} flushes",
        stats.started
    );
}

fn trim_reads_zero_and_leaves_a_hole(e: &dyn DiskEngine) {
    let block = 4096u64;
    run_blocking(
        e,
        DiskOp::Write {
            offset: 0,
            data: vec![0x5A; 16 * block as usize].into(),
            fua: true,
        },
    )
    .unwrap();
    run_blocking(
        e,
        DiskOp::Trim {
            offset: 4 * block,
            len: 8 * block as u32,
            fua: false,
        },
    )
    .unwrap();
    let data = read_blocking(e, 0, 16 * block as u32).unwrap();
    assert!(data[..4 * block as usize].iter().all(|&b| b == 0x5A));
    assert!(
        data[4 * block as usize..12 * block as usize]
            .iter()
            .all(|&b| b == 0)
    );
    assert!(data[12 * block as usize..].iter().all(|&b| b == 0x5A));
    let runs = e.block_status(0, 16 * block).unwrap();
    let mut pos = 0;
    let mut hole_at = None;
    for r in &runs {
        if r.hole && pos <= 4 * block && pos + r.len >= 12 * block {
            hole_at = Some(pos);
        }
        pos += r.len;
    }
    assert!(
        hole_at.is_some(),
        "no hole over the trimmed range: {runs:?}"
    );
    // A 512-byte trim inside a block zeroes just that sector.
    run_blocking(
        e,
        DiskOp::Trim {
            offset: 512,
            len: 512,
            fua: true,
        },
    )
    .unwrap();
    let head = read_blocking(e, 0, 4096).unwrap();
    assert!(head[..512].iter().all(|&b| b == 0x5A));
    assert!(head[512..1024].iter().all(|&b| b == 0));
    assert!(head[1024..].iter().all(|&b| b == 0x5A));
}

#[test]
fn trim_on_files() {
    let dir = tmpdir();
    let u = UringEngine::open(&sparse_file(dir.path(), "u", SIZE), None).unwrap();
    trim_reads_zero_and_leaves_a_hole(&u);
    trim_reads_zero_and_leaves_a_hole(&uring_tokio(&sparse_file(dir.path(), "t", SIZE)));
    let p = PioEngine::open(&sparse_file(dir.path(), "p", SIZE), None).unwrap();
    trim_reads_zero_and_leaves_a_hole(&p);
    trim_reads_zero_and_leaves_a_hole(&MemEngine::new(SIZE));
}

#[test]
fn data_bytes_limits_the_device() {
    let dir = tmpdir();
    let path = sparse_file(dir.path(), "d", SIZE);
    for kind in [
        udrbd::disk::EngineKind::Uring,
        udrbd::disk::EngineKind::Pio,
        udrbd::disk::EngineKind::Auto,
    ] {
        let e = udrbd::disk::open_engine(&path, kind, Some(SIZE - 8192)).unwrap();
        assert_eq!(e.size(), SIZE - 8192);
        let err = run_blocking(
            &*e,
            DiskOp::Write {
                offset: SIZE - 8192,
                data: vec![1; 512].into(),
                fua: false,
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(udrbd::disk::open_engine(&path, kind, Some(SIZE + 4096)).is_err());
    }
    // A size that is not 4 KiB aligned works too (buffered, since O_DIRECT spans would
    // reach past the data area).
    let e = PioEngine::open(&path, Some(SIZE - 512)).unwrap();
    assert!(!e.is_direct());
    run_blocking(
        &e,
        DiskOp::Write {
            offset: SIZE - 1024,
            data: vec![3; 512].into(),
            fua: true,
        },
    )
    .unwrap();
    assert_eq!(read_blocking(&e, SIZE - 1024, 512).unwrap(), vec![3; 512]);
}

#[test]
fn async_wrapper_and_drop_drains() {
    let dir = tmpdir();
    let e = UringEngine::open(&sparse_file(dir.path(), "d", SIZE), None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        udrbd::disk::wait::run_async(
            &e,
            DiskOp::Write {
                offset: 512,
                data: vec![9; 1024].into(),
                fua: true,
            },
        )
        .await
        .unwrap();
        let r = udrbd::disk::wait::run_async(
            &e,
            DiskOp::Read {
                offset: 0,
                len: 2048,
            },
        )
        .await
        .unwrap();
        let mut want = vec![0; 2048];
        want[512..1536].fill(9);
        assert_eq!(r, DiskDone::Read(want.into()));
    });
    // Ops still in flight at drop are completed, not lost.
    let (tx, rx) = mpsc::channel();
    for i in 0..32u64 {
        let tx = tx.clone();
        e.submit(
            DiskOp::Write {
                offset: i * 512,
                data: vec![1; 512].into(),
                fua: false,
            },
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        );
    }
    drop(e);
    drop(tx);
    assert_eq!(rx.iter().filter(|&ok| ok).count(), 32);
}

/// Rough throughput of the file engines (`cargo test --test disk_engines -- --ignored
/// --nocapture`): queue depth 32, 4 KiB aligned writes, 512-byte RMW writes, 4 KiB reads.
#[test]
#[ignore = "measurement, not a check"]
fn measure_throughput() {
    const DEV: u64 = 64 << 20;
    const OPS: u64 = 8192;
    let dir = tmpdir();
    let engines: Vec<(&str, Box<dyn DiskEngine>)> = vec![
        (
            "uring",
            Box::new(UringEngine::open(&sparse_file(dir.path(), "u", DEV), None).unwrap()),
        ),
        (
            "pio",
            Box::new(PioEngine::open(&sparse_file(dir.path(), "p", DEV), None).unwrap()),
        ),
    ];
    for (name, e) in &engines {
        for (what, len, read) in [
            ("4k write", 4096u64, false),
            ("512 rmw write", 512, false),
            ("4k read", 4096, true),
        ] {
            let (tx, rx) = mpsc::sync_channel::<()>(64);
            let t0 = std::time::Instant::now();
            let mut inflight = 0;
            for i in 0..OPS {
                // A scattered but deterministic pattern over the device.
                let offset = (i * 7919 % (DEV / 4096)) * 4096 + if len == 512 { 1024 } else { 0 };
                let op = if read {
                    DiskOp::Read {
                        offset,
                        len: len as u32,
                    }
                } else {
                    DiskOp::Write {
                        offset,
                        data: vec![i as u8; len as usize].into(),
                        fua: false,
                    }
                };
                if inflight == 32 {
                    rx.recv().unwrap();
                    inflight -= 1;
                }
                let tx = tx.clone();
                e.submit(
                    op,
                    Box::new(move |r| {
                        r.unwrap();
                        let _ = tx.send(());
                    }),
                );
                inflight += 1;
            }
            for _ in 0..inflight {
                rx.recv().unwrap();
            }
            let dt = t0.elapsed();
            println!(
                "{name:6} {what:14} {:>8.0} IOPS",
                OPS as f64 / dt.as_secs_f64()
            );
        }
    }
}

/// Trim and write-zeroes on a real block device (BLKZEROOUT plus RMW edges). Needs a scratch
/// device whose contents may be destroyed, e.g. `losetup --sector-size 4096 -f --show img`:
/// `UDRBD_TEST_BLOCKDEV=/dev/loopN cargo test --test disk_engines -- --ignored block_device`.
#[test]
#[ignore = "needs a scratch block device in UDRBD_TEST_BLOCKDEV"]
fn block_device_zeroing() {
    let Some(dev) = std::env::var_os("UDRBD_TEST_BLOCKDEV") else {
        return;
    };
    let dev = Path::new(&dev);
    let engines: Vec<Box<dyn DiskEngine>> = vec![
        Box::new(UringEngine::open(dev, Some(SIZE)).unwrap()),
        Box::new(PioEngine::open(dev, Some(SIZE)).unwrap()),
    ];
    for e in &engines {
        let e = &**e;
        run_blocking(
            e,
            DiskOp::Write {
                offset: 0,
                data: vec![0x77; SIZE as usize].into(),
                fua: true,
            },
        )
        .unwrap();
        // Unaligned edges on both sides of an aligned middle.
        let ops = [
            DiskOp::Trim {
                offset: 3584,
                len: 3 * 4096,
                fua: false,
            },
            DiskOp::WriteZeroes {
                offset: 40960 + 512,
                len: 1024,
                fua: true,
                no_hole: true,
            },
        ];
        for op in ops {
            run_blocking(e, op).unwrap();
        }
        let data = contents(e);
        let mut want = vec![0x77; SIZE as usize];
        want[3584..3584 + 3 * 4096].fill(0);
        want[40960 + 512..40960 + 1536].fill(0);
        assert!(data == want, "zeroing on the block device went wrong");
        assert_eq!(
            e.block_status(0, SIZE).unwrap(),
            vec![udrbd::disk::AllocRun {
                len: SIZE,
                hole: false,
                zero: false
            }]
        );
    }
}

#[test]
fn tokio_mode_drop_drains_and_data_lands() {
    let dir = tmpdir();
    let path = sparse_file(dir.path(), "d", SIZE);
    let e = uring_tokio(&path);
    // Ops still in flight at drop are completed, not lost.
    let (tx, rx) = mpsc::channel();
    for i in 0..64u64 {
        let tx = tx.clone();
        e.submit(
            DiskOp::Write {
                offset: i * 512,
                data: vec![i as u8 + 1; 512].into(),
                fua: false,
            },
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        );
    }
    drop(e);
    drop(tx);
    let got: Vec<bool> = rx.iter().collect();
    assert_eq!(got.len(), 64);
    assert!(got.iter().all(|&ok| ok));
    // Submitting from a callback (on the reaper task) works and completes too.
    let e = Arc::new(uring_tokio(&path));
    let (tx, rx) = mpsc::channel();
    let e2 = Arc::clone(&e);
    e.submit(
        DiskOp::Read {
            offset: 0,
            len: 64 * 512,
        },
        Box::new(move |r| {
            let first = r.unwrap();
            e2.submit(
                DiskOp::Read {
                    offset: 0,
                    len: 512,
                },
                Box::new(move |r2| tx.send((first, r2.unwrap())).unwrap()),
            );
        }),
    );
    let (first, second) = rx.recv().unwrap();
    let DiskDone::Read(first) = first else {
        panic!("not a read")
    };
    for i in 0..64usize {
        assert!(
            first[i * 512..(i + 1) * 512]
                .iter()
                .all(|&b| b == i as u8 + 1)
        );
    }
    assert_eq!(second, DiskDone::Read(vec![1; 512].into()));
}
