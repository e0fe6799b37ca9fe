//! The NBD server against real clients (nbdinfo, nbdcopy, qemu-io, qemu-img, libnbd's Python
//! bindings) and hostile ones written here, over a memory backend. Client binaries come from
//! `.ci/apt-packages`; a missing one fails the test rather than skipping it.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use udrbd::nbd::proto::client::{
    Chunk, ReplyHeader, decode_chunk, decode_greeting, decode_option_reply, decode_reply_header,
    encode_client_flags, encode_option, info_request_payload, meta_context_payload,
};
use udrbd::nbd::proto::reply::Extent;
use udrbd::nbd::proto::*;
use udrbd::nbd::server::*;

// ---------------------------------------------------------------------------------------------
// Memory backend

const BLOCK: u64 = 4096;
const R0_SIZE: u64 = 64 << 20;

/// Completions held back until `threshold` are waiting (or `release`), to prove how many
/// requests the server keeps in flight.
#[derive(Default)]
struct Gate {
    threshold: Option<usize>,
    held: Vec<Box<dyn FnOnce() + Send>>,
}

struct Disk {
    name: String,
    size: u64,
    flags: u16,
    data: Mutex<Vec<u8>>,
    /// Per 4 KiB block: holds data (false = hole, reads as zeroes).
    alloc: Mutex<Vec<bool>>,
}

struct MemBackend {
    disks: Vec<Arc<Disk>>,
    rt: tokio::runtime::Handle,
    opens: Arc<AtomicUsize>,
    gate: Arc<Mutex<Gate>>,
    max_held: AtomicUsize,
    /// Sizes of the batches the server handed to `submit_batch`.
    batches: Arc<Mutex<Vec<usize>>>,
}

const RW_FLAGS: u16 = FLAG_SEND_FLUSH
    | FLAG_SEND_FUA
    | FLAG_SEND_TRIM
    | FLAG_SEND_WRITE_ZEROES
    | FLAG_SEND_FAST_ZERO
    | FLAG_CAN_MULTI_CONN
    | FLAG_SEND_CACHE;

impl MemBackend {
    fn new(rt: tokio::runtime::Handle) -> Self {
        let disk = |name: &str, size: u64, flags| {
            Arc::new(Disk {
                name: name.into(),
                size,
                flags,
                data: Mutex::new(vec![0; size as usize]),
                alloc: Mutex::new(vec![false; size.div_ceil(BLOCK) as usize]),
            })
        };
        MemBackend {
            disks: vec![
                disk("r0", R0_SIZE, RW_FLAGS),
                disk("ro", 1 << 20, FLAG_READ_ONLY),
                disk("lossy", 1 << 20, RW_FLAGS),
            ],
            rt,
            opens: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Mutex::new(Gate::default())),
            batches: Arc::default(),
            max_held: AtomicUsize::new(0),
        }
    }

    fn find(&self, name: &str) -> Option<&Arc<Disk>> {
        let name = if name.is_empty() { "r0" } else { name };
        self.disks.iter().find(|d| d.name == name)
    }

    fn info(d: &Disk) -> ExportInfo {
        ExportInfo {
            name: d.name.clone(),
            size: d.size,
            flags: d.flags,
            description: Some(format!("memory disk {}", d.name)),
            block_sizes: BlockSizes::default(),
        }
    }
}

impl ExportCatalog for MemBackend {
    fn lookup(&self, name: &str, _purpose: Purpose) -> Result<ExportInfo, GoRefusal> {
        self.find(name)
            .map(|d| Self::info(d))
            .ok_or_else(|| GoRefusal::unknown(name))
    }
    fn list(&self) -> Vec<(String, Option<String>)> {
        self.disks.iter().map(|d| (d.name.clone(), None)).collect()
    }
}

impl NbdBackend for MemBackend {
    fn open(&self, name: &str, done: OpenDone) {
        let Some(d) = self.find(name) else {
            return done(Err(GoRefusal::unknown(name)));
        };
        self.opens.fetch_add(1, Ordering::SeqCst);
        let io = MemIo {
            disk: Arc::clone(d),
            rt: self.rt.clone(),
            opens: Arc::clone(&self.opens),
            gate: Arc::clone(&self.gate),
            seq: AtomicUsize::new(0),
            batches: Arc::clone(&self.batches),
        };
        done(Ok(OpenExport {
            info: Self::info(d),
            io: Arc::new(io),
        }))
    }
}

struct MemIo {
    disk: Arc<Disk>,
    rt: tokio::runtime::Handle,
    opens: Arc<AtomicUsize>,
    gate: Arc<Mutex<Gate>>,
    seq: AtomicUsize,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Drop for MemIo {
    fn drop(&mut self) {
        self.opens.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Disk {
    fn zero(&self, offset: u64, len: u32, punch: bool) {
        let (s, e) = (offset as usize, offset as usize + len as usize);
        self.data.lock().unwrap()[s..e].fill(0);
        if punch {
            let mut alloc = self.alloc.lock().unwrap();
            let first = offset.div_ceil(BLOCK);
            let last = (offset + u64::from(len)) / BLOCK;
            for b in first..last {
                alloc[b as usize] = false;
            }
        }
    }

    fn run(&self, cmd: IoCmd) -> Result<IoReply, IoError> {
        match cmd {
            IoCmd::Read { offset, len } => {
                let d = self.data.lock().unwrap();
                let s = offset as usize;
                Ok(IoReply::Data(Bytes::copy_from_slice(
                    &d[s..s + len as usize],
                )))
            }
            IoCmd::Write { offset, data, .. } => {
                let s = offset as usize;
                self.data.lock().unwrap()[s..s + data.len()].copy_from_slice(&data);
                let mut alloc = self.alloc.lock().unwrap();
                let end = offset + data.len() as u64;
                for b in offset / BLOCK..end.div_ceil(BLOCK) {
                    alloc[b as usize] = true;
                }
                Ok(IoReply::Done)
            }
            IoCmd::Flush => Ok(IoReply::Done),
            IoCmd::Trim { offset, len, .. } => {
                self.zero(offset, len, true);
                Ok(IoReply::Done)
            }
            IoCmd::WriteZeroes {
                offset,
                len,
                no_hole,
                ..
            } => {
                self.zero(offset, len, !no_hole);
                Ok(IoReply::Done)
            }
            IoCmd::BlockStatus { offset, len } => {
                let alloc = self.alloc.lock().unwrap();
                let end = (offset + u64::from(len)).min(self.size);
                let mut pos = offset;
                let mut out = Vec::new();
                while pos < end {
                    let state = alloc[(pos / BLOCK) as usize];
                    let mut next = (pos / BLOCK + 1) * BLOCK;
                    while next < end && alloc[(next / BLOCK) as usize] == state {
                        next += BLOCK;
                    }
                    let next = next.min(end);
                    let flags = if state { 0 } else { STATE_HOLE | STATE_ZERO };
                    out.push(Extent {
                        length: (next - pos) as u32,
                        flags,
                    });
                    pos = next;
                }
                Ok(IoReply::Extents(out))
            }
        }
    }
}

impl ExportIo for MemIo {
    fn submit_batch(&self, cmds: Vec<(IoCmd, IoDone)>) {
        self.batches.lock().unwrap().push(cmds.len());
        for (cmd, done) in cmds {
            self.submit(cmd, done);
        }
    }

    fn submit(&self, cmd: IoCmd, done: IoDone) {
        // Export "lossy" loses reads: the completion is dropped without being called.
        if self.disk.name == "lossy" && matches!(cmd, IoCmd::Read { .. }) {
            drop(done);
            return;
        }
        let result = self.disk.run(cmd);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let rt = self.rt.clone();
        // Complete on another task, every 8th after a short sleep, so replies leave out of order.
        let deliver = move || {
            rt.spawn(async move {
                if seq.is_multiple_of(8) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                done(result);
            });
        };
        let mut gate = self.gate.lock().unwrap();
        match gate.threshold {
            Some(n) => {
                gate.held.push(Box::new(deliver));
                if gate.held.len() >= n {
                    // One-shot: later requests complete normally.
                    gate.threshold = None;
                    gate.held.drain(..).for_each(|f| f());
                }
            }
            None => deliver(),
        }
    }
}

impl MemBackend {
    fn hold_until(&self, n: usize) {
        self.gate.lock().unwrap().threshold = Some(n);
    }
    fn held(&self) -> usize {
        let n = self.gate.lock().unwrap().held.len();
        self.max_held.fetch_max(n, Ordering::SeqCst);
        n
    }
    fn release(&self) {
        let mut g = self.gate.lock().unwrap();
        g.threshold = None;
        g.held.drain(..).for_each(|f| f());
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

struct Harness {
    rt: tokio::runtime::Runtime,
    server: NbdServer,
    backend: Arc<MemBackend>,
    dir: tempfile::TempDir,
    sock: PathBuf,
    tcp: std::net::SocketAddr,
}

impl Harness {
    fn start(config: ServerConfig) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let backend = Arc::new(MemBackend::new(rt.handle().clone()));
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nbd.sock");
        let server = NbdServer::new(backend.clone(), config);
        let tcp = rt.block_on(async {
            server.serve_unix(bind_unix(&sock).unwrap());
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            server.serve_tcp(l);
            addr
        });
        Harness {
            rt,
            server,
            backend,
            dir,
            sock,
            tcp,
        }
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.sock.display())
    }

    /// Waits until every client has gone and the backend's exports are all closed again.
    fn wait_idle(&self) {
        let t = Instant::now();
        while self.server.connections() > 0 || self.backend.opens.load(Ordering::SeqCst) > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "still {} connections, {} opens",
                self.server.connections(),
                self.backend.opens.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.backend.disks[0].data.lock().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.rt
            .block_on(self.server.shutdown(Duration::from_secs(5)));
    }
}

/// Runs a client tool; a missing binary, a failure or a hang (60 s) fails the test, with its
/// output.
fn run(prog: &str, args: &[&str]) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(prog)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {prog} ({e}); install the packages in .ci/apt-packages")
        });
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{prog} {args:?} hung\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for tens of MiB.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

// ---------------------------------------------------------------------------------------------
// Real clients

#[test]
fn nbdinfo_reports_export_and_map() {
    let h = Harness::start(ServerConfig::default());
    let out = run("nbdinfo", &["--json", &h.uri("r0")]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v["exports"][0];
    assert_eq!(e["export-name"], "r0", "{v}");
    assert_eq!(e["export-size"], R0_SIZE, "{v}");
    assert_eq!(e["block_size_minimum"], 512, "{v}");
    assert_eq!(e["block_size_preferred"], 4096, "{v}");
    assert_eq!(e["block_size_maximum"], 32 << 20, "{v}");
    assert_eq!(e["can_multi_conn"], true, "{v}");
    assert_eq!(v["structured"], true, "{v}");

    let list = stdout(&run("nbdinfo", &["--list", "--json", &h.uri("")]));
    assert!(list.contains("\"r0\"") && list.contains("\"ro\""), "{list}");
    assert!(list.contains("\"lossy\""), "{list}");

    // Data at 1 MiB..1 MiB+8 KiB: the map shows hole, data, hole.
    h.disk()[1 << 20..(1 << 20) + 8192].fill(7);
    h.backend.disks[0].alloc.lock().unwrap()[256..258].fill(true);
    let map = stdout(&run("nbdinfo", &["--map", &h.uri("r0")]));
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["0", "1048576", "3"], "{map}");
    assert_eq!(rows[1][..3], ["1048576", "8192", "0"], "{map}");
    assert_eq!(
        rows[2][..3],
        ["1056768", &(R0_SIZE - 1056768).to_string(), "3"],
        "{map}"
    );

    // The TCP listener serves the same exports.
    let tcp = format!("nbd://{}/ro", h.tcp);
    let v: serde_json::Value =
        serde_json::from_slice(&run("nbdinfo", &["--json", &tcp]).stdout).unwrap();
    assert_eq!(v["exports"][0]["export-size"], 1 << 20, "{v}");
    assert_eq!(v["exports"][0]["is_read_only"], true, "{v}");
    h.wait_idle();
}

#[test]
fn nbdcopy_in_and_out_is_byte_identical() {
    let h = Harness::start(ServerConfig::default());
    let src = h.dir.path().join("src.img");
    let data = random_bytes(R0_SIZE as usize, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(&src, &data).unwrap();
    run("nbdcopy", &[src.to_str().unwrap(), &h.uri("r0")]);
    assert!(*h.disk() == data, "nbdcopy in: export differs");

    let out = h.dir.path().join("out.img");
    run("nbdcopy", &[&h.uri("r0"), out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data, "nbdcopy out differs");

    // Four connections at once (the export advertises multi-conn), over TCP this time.
    let data2 = random_bytes(R0_SIZE as usize, 42);
    std::fs::write(&src, &data2).unwrap();
    let tcp = format!("nbd://{}/r0", h.tcp);
    run("nbdcopy", &["--connections=4", src.to_str().unwrap(), &tcp]);
    assert!(*h.disk() == data2, "nbdcopy --connections=4 in differs");
    std::fs::remove_file(&out).unwrap();
    run("nbdcopy", &["--connections=4", &tcp, out.to_str().unwrap()]);
    assert!(
        std::fs::read(&out).unwrap() == data2,
        "nbdcopy --connections=4 out differs"
    );
    h.wait_idle();
}

#[test]
fn qemu_io_patterns_and_aio() {
    let h = Harness::start(ServerConfig::default());
    let uri = h.uri("r0");
    let mut args = vec!["-f", "raw", &uri];
    let cmds = [
        "write -P 0xab 0 64k",
        "read -P 0xab 0 64k",
        // 512-byte aligned, not 4 KiB aligned.
        "write -P 0x5c 4608 1536",
        "read -P 0x5c 4608 1536",
        "read -P 0xab 4096 512",
        "read -P 0xab 6144 2048",
        "write -P 0x11 1048064 1024",
        "read -P 0x11 1048064 1024",
        "write -z 8192 8192",
        "read -P 0 8192 8192",
        "discard 65536 65536",
        "read -P 0 65536 65536",
        "flush",
    ];
    for c in &cmds {
        args.extend(["-c", c]);
    }
    let out = stdout(&run("qemu-io", &args));
    assert!(!out.contains("Pattern verification failed"), "{out}");

    // Many asynchronous writes in flight (512-byte aligned only), then read them back.
    let aio: Vec<String> = (0..64)
        .map(|i| format!("aio_write -P {} {} 64k", i + 1, (i << 20) + 512))
        .collect();
    let check: Vec<String> = (0..64)
        .map(|i| format!("read -P {} {} 64k", i + 1, (i << 20) + 512))
        .collect();
    let flush = "aio_flush".to_string();
    let mut args = vec!["-f", "raw", &uri];
    for c in aio.iter().chain(std::iter::once(&flush)).chain(&check) {
        args.extend(["-c", c.as_str()]);
    }
    let out = stdout(&run("qemu-io", &args));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let disk = h.disk();
    for i in 0..64usize {
        let s = (i << 20) + 512;
        assert!(disk[s..s + 65536].iter().all(|&b| b == i as u8 + 1));
    }
    drop(disk);
    h.wait_idle();
}

#[test]
fn qemu_img_convert_both_ways() {
    let h = Harness::start(ServerConfig::default());
    let src = h.dir.path().join("in.raw");
    let data = random_bytes(R0_SIZE as usize, 7);
    std::fs::write(&src, &data).unwrap();
    let uri = h.uri("r0");
    run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ],
    );
    assert!(*h.disk() == data, "qemu-img convert in differs");
    let out = h.dir.path().join("out.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            out.to_str().unwrap(),
        ],
    );
    assert!(
        std::fs::read(&out).unwrap() == data,
        "qemu-img convert out differs"
    );
    h.wait_idle();
}

const PY_INFLIGHT: &str = r#"
import nbd, sys
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(sys.argv[1])
assert h.can_trim() and h.can_zero() and h.can_meta_context("base:allocation")
assert h.get_block_size(nbd.SIZE_MINIMUM) == 512
# 64 writes in flight at once; the backend holds completions until all 64 arrived.
bufs = [nbd.Buffer.from_bytearray(bytearray([i + 1]) * 65536) for i in range(64)]
cookies = [h.aio_pwrite(bufs[i], i * 65536) for i in range(64)]
peak = h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
print("peak", peak)
for i in range(64):
    assert h.pread(65536, i * 65536) == bytes([i + 1]) * 65536, i
# Trim and write-zeroes read back as zeroes; a trimmed 4K-aligned range becomes a hole.
h.trim(1 << 20, 0)
h.zero(8192, 65536 * 2)
assert h.pread(1 << 20, 0) == bytes(1 << 20)
assert h.pread(8192, 65536 * 2) == bytes(8192)
ext = []
h.block_status(1 << 20, 0, lambda ctx, off, e, err: ext.extend(e))
assert ext[0] == 1 << 20 and ext[1] & 1, ext
h.flush()
h.shutdown()
"#;

#[test]
fn libnbd_64_in_flight_trim_and_zeroes() {
    let h = Harness::start(ServerConfig::default());
    h.backend.hold_until(64);
    let out = run("/usr/bin/python3", &["-c", PY_INFLIGHT, &h.uri("r0")]);
    assert!(stdout(&out).contains("peak 64"), "{}", stdout(&out));
    h.backend.release();
    h.wait_idle();
}

// ---------------------------------------------------------------------------------------------
// Hostile clients

/// A hand-rolled client that negotiates structured replies, base:allocation and GO on `r0`.
fn handshake(sock: &Path) -> UnixStream {
    handshake_to(sock, "r0")
}

/// [`handshake`] to any export.
fn handshake_to(sock: &Path, export: &str) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut g = [0u8; GREETING_LEN];
    s.read_exact(&mut g).unwrap();
    decode_greeting(&g).unwrap();
    let flags = ClientFlags {
        fixed_newstyle: true,
        no_zeroes: true,
    };
    s.write_all(&encode_client_flags(flags)).unwrap();
    let mut opts = Vec::new();
    encode_option(&mut opts, OPT_STRUCTURED_REPLY, &[]);
    encode_option(
        &mut opts,
        OPT_SET_META_CONTEXT,
        &meta_context_payload(export, &[BASE_ALLOCATION]),
    );
    encode_option(
        &mut opts,
        OPT_GO,
        &info_request_payload(export, &[INFO_BLOCK_SIZE]),
    );
    s.write_all(&opts).unwrap();
    let mut acks = 0;
    while acks < 3 {
        let mut head = [0u8; OPTION_REPLY_HEADER_LEN];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
        let mut whole = head.to_vec();
        whole.resize(OPTION_REPLY_HEADER_LEN + len, 0);
        s.read_exact(&mut whole[OPTION_REPLY_HEADER_LEN..]).unwrap();
        let (rep, _) = decode_option_reply(&whole).unwrap();
        assert!(!rep.is_error(), "option {} refused", rep.option);
        if rep.reply_type == REP_ACK {
            acks += 1;
        }
    }
    s
}

fn request(kind: u16, cookie: u64, offset: u64, length: u32) -> [u8; REQUEST_HEADER_LEN] {
    RequestHeader {
        flags: 0,
        kind,
        cookie,
        offset,
        length,
    }
    .encode()
}

/// Reads one complete (single-chunk or simple) reply: cookie, error, payload.
fn read_reply(s: &mut UnixStream, read_len: usize) -> (u64, u32, Vec<u8>) {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    let magic = u32::from_be_bytes(head);
    let mut rest = vec![0u8; if magic == SIMPLE_REPLY_MAGIC { 12 } else { 16 }];
    s.read_exact(&mut rest).unwrap();
    let whole = [head.to_vec(), rest].concat();
    match decode_reply_header(&whole).unwrap().0 {
        ReplyHeader::Simple { error, cookie } => (cookie, error, Vec::new()),
        ReplyHeader::Chunk {
            kind,
            cookie,
            length,
            flags,
        } => {
            assert!(flags & REPLY_FLAG_DONE != 0);
            let mut payload = vec![0u8; length as usize];
            s.read_exact(&mut payload).unwrap();
            match decode_chunk(kind, &payload).unwrap() {
                Chunk::OffsetData { data, .. } => {
                    assert_eq!(data.len(), read_len);
                    (cookie, 0, data.to_vec())
                }
                Chunk::Error { error, .. } => (cookie, error, Vec::new()),
                Chunk::BlockStatus { .. } | Chunk::None => (cookie, 0, payload),
                other => panic!("unexpected chunk {other:?}"),
            }
        }
    }
}

/// A well-behaved client still gets served: write, read back, disconnect.
fn assert_served(h: &Harness) {
    let mut s = handshake(&h.sock);
    let mut w = request(CMD_WRITE, 1, 4096, 4096).to_vec();
    w.extend_from_slice(&[0x77; 4096]);
    s.write_all(&w).unwrap();
    assert_eq!(read_reply(&mut s, 0), (1, 0, Vec::new()));
    s.write_all(&request(CMD_READ, 2, 4096, 4096)).unwrap();
    assert_eq!(read_reply(&mut s, 4096), (2, 0, vec![0x77; 4096]));
    s.write_all(&request(CMD_DISC, 3, 0, 0)).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no reply to DISC");
}

#[test]
fn fio_verified_random_writes() {
    let h = Harness::start(ServerConfig::default());
    let uri = format!("--uri={}", h.uri("r0"));
    run(
        "fio",
        &[
            "--name=verify",
            "--ioengine=nbd",
            &uri,
            "--rw=randwrite",
            "--bs=4k",
            "--size=16M",
            "--iodepth=32",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            // fio would write its verify state into the working directory (the repo).
            "--verify_state_save=0",
        ],
    );
    h.wait_idle();
}

#[test]
fn lost_completion_is_answered_with_eio() {
    let h = Harness::start(ServerConfig::default());
    let mut s = handshake_to(&h.sock, "lossy");
    s.write_all(&request(CMD_READ, 1, 0, 4096)).unwrap();
    let (cookie, err, _) = read_reply(&mut s, 0);
    assert_eq!((cookie, err), (1, EIO));
    drop(s);
    assert_served(&h);
    h.wait_idle();
}

/// Reads option replies until one that ends the option (ACK or error).
fn read_option_replies(s: &mut UnixStream) -> Vec<udrbd::nbd::proto::client::OptionReply> {
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; OPTION_REPLY_HEADER_LEN];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
        let mut whole = head.to_vec();
        whole.resize(OPTION_REPLY_HEADER_LEN + len, 0);
        s.read_exact(&mut whole[OPTION_REPLY_HEADER_LEN..]).unwrap();
        let rep = decode_option_reply(&whole).unwrap().0;
        let last = rep.reply_type == REP_ACK || rep.is_error();
        out.push(rep);
        if last {
            return out;
        }
    }
}

#[test]
fn option_haggling_edge_cases() {
    let h = Harness::start(ServerConfig::default());
    let greet = |s: &mut UnixStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut g = [0u8; GREETING_LEN];
        s.read_exact(&mut g).unwrap();
        s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    };
    // GO for an unknown export is refused and haggling continues; then ABORT is acknowledged.
    let mut s = UnixStream::connect(&h.sock).unwrap();
    greet(&mut s);
    let mut o = Vec::new();
    encode_option(&mut o, OPT_GO, &info_request_payload("nope", &[]));
    s.write_all(&o).unwrap();
    let r = read_option_replies(&mut s);
    assert_eq!(r.last().unwrap().reply_type, REP_ERR_UNKNOWN);
    let mut o = Vec::new();
    encode_option(&mut o, OPT_ABORT, &[]);
    s.write_all(&o).unwrap();
    assert_eq!(read_option_replies(&mut s)[0].reply_type, REP_ACK);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // Old-style NBD_OPT_EXPORT_NAME (zeroes padding, simple replies only) still works.
    let mut s = UnixStream::connect(&h.sock).unwrap();
    greet(&mut s);
    let mut o = Vec::new();
    encode_option(&mut o, OPT_EXPORT_NAME, b"r0");
    s.write_all(&o).unwrap();
    let mut reply = [0u8; 8 + 2 + EXPORT_NAME_PADDING];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), R0_SIZE);
    s.write_all(&request(CMD_READ, 9, 0, 512)).unwrap();
    assert_eq!(read_reply(&mut s, 0), (9, 0, Vec::new()));
    let mut data = [0u8; 512];
    s.read_exact(&mut data).unwrap();
    // BLOCK_STATUS without a negotiated context is refused with a simple error reply.
    s.write_all(&request(CMD_BLOCK_STATUS, 10, 0, 512)).unwrap();
    assert_eq!(read_reply(&mut s, 0), (10, EINVAL, Vec::new()));
    drop(s);
    h.wait_idle();
    assert_eq!(h.backend.opens.load(Ordering::SeqCst), 0);
}

#[test]
fn garbage_handshakes_cost_only_their_connection() {
    let h = Harness::start(ServerConfig::default());
    for seed in 1..6u64 {
        let mut s = UnixStream::connect(&h.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Some connections send plausible flags first, so the garbage hits the option parser.
        if seed % 2 == 0 {
            let mut g = [0u8; GREETING_LEN];
            s.read_exact(&mut g).unwrap();
            s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
        }
        let _ = s.write_all(&random_bytes(4096, seed));
        let mut sink = Vec::new();
        // The server hangs up (reading to EOF must not time out).
        let _ = s.read_to_end(&mut sink);
    }
    // An option header announcing 2^31 bytes is dropped without being read.
    let mut s = UnixStream::connect(&h.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut g = [0u8; GREETING_LEN];
    s.read_exact(&mut g).unwrap();
    s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    s.write_all(
        &OptionHeader {
            option: OPT_GO,
            length: 1 << 31,
        }
        .encode(),
    )
    .unwrap();
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).unwrap();
    assert!(sink.is_empty());
    assert_served(&h);
    h.wait_idle();
}

/// `max_connections`: one connection beyond the limit is closed before the greeting; once a
/// connection ends, a new one is served again.
#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    let h = Harness::start(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    });
    let first = handshake(&h.sock);
    let second = handshake(&h.sock);
    let mut third = UnixStream::connect(&h.sock).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = Vec::new();
    third.read_to_end(&mut sink).unwrap();
    assert!(sink.is_empty(), "the third connection got a greeting");
    drop(first);
    let t = Instant::now();
    while h.server.connections() > 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the first never closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let again = handshake(&h.sock);
    drop((second, again));
    h.wait_idle();
}

#[test]
fn vanishing_client_with_reads_in_flight() {
    let h = Harness::start(ServerConfig::default());
    h.backend.hold_until(usize::MAX);
    let mut s = handshake(&h.sock);
    let mut reqs = Vec::new();
    for i in 0..32u64 {
        reqs.extend_from_slice(&request(CMD_READ, i, i << 20, 1 << 20));
    }
    s.write_all(&reqs).unwrap();
    // 32 MiB of reads fit the 64 MiB in-flight budget: all 32 reach the backend.
    let t = Instant::now();
    while h.backend.held() < 32 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{}",
            h.backend.held()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    // Completions for the dead connection arrive now and are dropped harmlessly.
    h.backend.release();
    h.wait_idle();
    assert_served(&h);
    h.wait_idle();
}

#[test]
fn oversized_and_invalid_requests() {
    let h = Harness::start(ServerConfig::default());
    let mut s = handshake(&h.sock);
    // A 1 GiB read is refused (larger than the 32 MiB maximum) and the connection carries on.
    s.write_all(&request(CMD_READ, 10, 0, 1 << 30)).unwrap();
    assert_eq!(read_reply(&mut s, 0), (10, EINVAL, Vec::new()));
    // Misaligned and out-of-range requests are refused too.
    s.write_all(&request(CMD_READ, 11, 100, 512)).unwrap();
    assert_eq!(read_reply(&mut s, 0), (11, EINVAL, Vec::new()));
    let mut w = request(CMD_WRITE, 12, R0_SIZE, 512).to_vec();
    w.extend_from_slice(&[1; 512]);
    s.write_all(&w).unwrap();
    // The refused write's payload was drained: the next request is understood.
    assert_eq!(read_reply(&mut s, 0), (12, ENOSPC, Vec::new()));
    s.write_all(&request(CMD_BLOCK_STATUS, 13, 0, 1 << 20))
        .unwrap();
    let (cookie, err, payload) = read_reply(&mut s, 0);
    assert_eq!((cookie, err), (13, 0));
    assert_eq!(payload.len(), 4 + 8, "one hole extent: {payload:?}");
    // A 1 GiB write cannot be skipped: the connection is dropped...
    s.write_all(&request(CMD_WRITE, 14, 0, 1 << 30)).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    // ...and so is one with a bad magic.
    let mut s = handshake(&h.sock);
    s.write_all(&[0xff; REQUEST_HEADER_LEN]).unwrap();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert_served(&h);
    h.wait_idle();
}

#[test]
fn in_flight_bound_and_stalled_reader() {
    let h = Harness::start(ServerConfig {
        write_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    });
    h.backend.hold_until(usize::MAX);
    let mut s = handshake(&h.sock);
    let mut reqs = Vec::new();
    for i in 0..200u64 {
        reqs.extend_from_slice(&request(CMD_READ, i, 0, 4096));
    }
    s.write_all(&reqs).unwrap();
    // The reader stops at 128 requests in flight.
    let t = Instant::now();
    while h.backend.held() < 128 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{}",
            h.backend.held()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.backend.held(), 128);
    h.backend.release();
    for _ in 0..200 {
        let (_, err, data) = read_reply(&mut s, 4096);
        assert_eq!((err, data.len()), (0, 4096));
    }

    // Now a client that never reads: 256 reads of 1 MiB fill every buffer; the writer gives up
    // after the write timeout and drops it, while another client is served meanwhile.
    let mut stalled = handshake(&h.sock);
    let mut reqs = Vec::new();
    for i in 0..256u64 {
        reqs.extend_from_slice(&request(CMD_READ, i, 0, 1 << 20));
    }
    stalled.write_all(&reqs).unwrap();
    assert_served(&h);
    let t = Instant::now();
    while h.server.connections() > 1 {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "stalled client not dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stalled);
    drop(s);
    h.wait_idle();
}

/// Requests that arrive together reach the backend together (one submission to the disk), at
/// most 8 at a time; a request alone is not held back waiting for company.
#[test]
fn requests_that_arrive_together_are_submitted_together() {
    let h = Harness::start(ServerConfig::default());
    let mut s = handshake(&h.sock);
    let mut reqs = Vec::new();
    for i in 0..20u64 {
        reqs.extend_from_slice(&request(CMD_READ, i, i * 4096, 4096));
    }
    s.write_all(&reqs).unwrap();
    for _ in 0..20 {
        let (_, err, _) = read_reply(&mut s, 4096);
        assert_eq!(err, 0);
    }
    let sizes = std::mem::take(&mut *h.backend.batches.lock().unwrap());
    assert_eq!(sizes.iter().sum::<usize>(), 20, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 8), "{sizes:?}");
    assert!(
        sizes.iter().any(|&n| n > 1),
        "nothing was batched: {sizes:?}"
    );
    // One request at a time: each answered without waiting for another.
    for i in 0..3u64 {
        s.write_all(&request(CMD_READ, 100 + i, 0, 4096)).unwrap();
        let (cookie, err, _) = read_reply(&mut s, 4096);
        assert_eq!((cookie, err), (100 + i, 0));
    }
    assert_eq!(*h.backend.batches.lock().unwrap(), vec![1, 1, 1]);
    drop(s);
    h.wait_idle();
}

/// With fewer in-flight permits than a batch holds, a refused request behind held ones is
/// still answered: the held requests go to the backend before the refusal waits for a permit.
#[test]
fn a_refusal_behind_held_requests_with_a_small_in_flight_bound() {
    let h = Harness::start(ServerConfig {
        max_in_flight: 2,
        ..ServerConfig::default()
    });
    let mut s = handshake(&h.sock);
    let mut reqs = Vec::new();
    reqs.extend_from_slice(&request(CMD_READ, 1, 0, 4096));
    reqs.extend_from_slice(&request(CMD_READ, 2, 4096, 4096));
    // Misaligned: refused.
    reqs.extend_from_slice(&request(CMD_READ, 3, 100, 512));
    reqs.extend_from_slice(&request(CMD_READ, 4, 8192, 4096));
    s.write_all(&reqs).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let (cookie, err, _) = read_reply(&mut s, 4096);
        got.push((cookie, err));
    }
    got.sort();
    assert_eq!(got, vec![(1, 0), (2, 0), (3, EINVAL), (4, 0)]);
    drop(s);
    h.wait_idle();
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let h = Harness::start(ServerConfig::default());
    h.backend.hold_until(usize::MAX);
    let mut s = handshake(&h.sock);
    s.write_all(&request(CMD_READ, 5, 0, 4096)).unwrap();
    while h.backend.held() < 1 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let server = h.server.clone();
    let stop =
        h.rt.spawn(async move { server.shutdown(Duration::from_secs(10)).await });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !stop.is_finished(),
        "shutdown must wait for the request in flight"
    );
    // New connections are refused (the listener is gone) ...
    assert!(
        UnixStream::connect(&h.sock).is_err() || {
            let mut c = UnixStream::connect(&h.sock).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = Vec::new();
            c.read_to_end(&mut b).map(|n| n == 0).unwrap_or(true)
        }
    );
    // ... and the one in flight is answered before the connection closes.
    h.backend.release();
    assert_eq!(read_reply(&mut s, 4096), (5, 0, vec![0; 4096]));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    h.rt.block_on(stop).unwrap();
    assert_eq!(h.server.connections(), 0);
}

/// A client that stops sending a write's payload is dropped once `payload_timeout` passes
/// without a byte, which frees what it held; another client is served meanwhile.
#[test]
fn a_write_payload_that_stops_arriving_drops_its_client() {
    let h = Harness::start(ServerConfig {
        payload_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    });
    let mut stalled = handshake(&h.sock);
    stalled
        .write_all(&request(CMD_WRITE, 1, 0, 1 << 20))
        .unwrap();
    stalled.write_all(&vec![0x5a; 4096]).unwrap();
    assert_served(&h);
    let t = Instant::now();
    let mut rest = Vec::new();
    // The server closes it: the read ends (EOF or reset) without a reply.
    let _ = stalled.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a reply to a write that never arrived");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "not dropped: {:?}",
        t.elapsed()
    );
    h.wait_idle();
}
