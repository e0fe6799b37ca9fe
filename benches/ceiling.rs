//! Reference points for the benchmarks: what this machine allows any implementation, measured
//! in the same run as udrbd (`benches/nbd_fio.sh`, `benches/pair_fio.sh`).
//!
//! - `ceiling nbd SOCKET FILE`: the smallest NBD server that can serve fio's `nbd` engine from
//!   a file with O_DIRECT: one thread, one io_uring for the socket and the disk, every request
//!   read in one `recv` is submitted with one `io_uring_enter`, replies of all completions that
//!   arrived together go out in one `write`. No replication, no metadata, no locking, no
//!   allocation beyond one aligned buffer per request, simple replies only. It shows what the
//!   protocol, this client and this disk leave to a server with no work of its own (one with
//!   more threads can do a little better: udrbd, with two, does).
//! - `ceiling rtt`: the round trip of 32 bytes between two processes over loopback TCP (what a
//!   protocol C write pays on top of the local write, before the peer's disk write).
//!
//! Not part of udrbd: it serves one client at a time, trusts its client, and exists to be
//! measured. Errors end the connection or the program with a message.

use io_uring::{IoUring, opcode, types};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, ExitCode};
use std::time::Instant;
use udrbd::buf::AlignedBuf;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("nbd") if args.len() == 4 => serve_nbd(&args[2], &args[3]),
        Some("rtt") => rtt(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20_000)),
        Some("rtt-echo") if args.len() == 3 => rtt_echo(&args[2]),
        _ => {
            eprintln!("usage: ceiling nbd SOCKET FILE | ceiling rtt [ROUND_TRIPS]");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}

// --- loopback round trip -------------------------------------------------------------------------

fn rtt(n: usize) -> io::Result<()> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port().to_string();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["rtt-echo", &port])
        .spawn()?;
    let (mut s, _) = l.accept()?;
    s.set_nodelay(true)?;
    let mut b = [0u8; 32];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        s.write_all(&b)?;
        s.read_exact(&mut b)?;
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    drop(s);
    child.wait()?;
    lat.sort_by(f64::total_cmp);
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!("rtt_us p50 {:.1} p99 {:.1}", pct(50), pct(99));
    Ok(())
}

fn rtt_echo(port: &str) -> io::Result<()> {
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}"))?;
    s.set_nodelay(true)?;
    let mut b = [0u8; 32];
    while s.read_exact(&mut b).is_ok() {
        s.write_all(&b)?;
    }
    Ok(())
}

// --- the minimal NBD server ----------------------------------------------------------------------

/// The codecs are udrbd's own (pure, cheap); everything else is this file's.
use udrbd::nbd::proto::{
    CMD_DISC, CMD_FLAG_FUA, CMD_FLUSH, CMD_READ, CMD_WRITE, Errno, FLAG_FIXED_NEWSTYLE,
    FLAG_HAS_FLAGS, FLAG_NO_ZEROES, FLAG_SEND_FLUSH, FLAG_SEND_FUA, IHAVEOPT, INFO_EXPORT,
    NBDMAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, REP_ACK, REP_ERR_UNSUP, REP_INFO,
    REQUEST_HEADER_LEN, RequestHeader, encode_option_reply, reply::simple_reply,
};

const TRANSMISSION_FLAGS: u16 = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA;
/// Requests in flight at once; more are left in the socket until some complete.
const SLOTS: usize = 128;
const MAX_REQUEST: usize = 32 << 20;
/// user_data of the socket's recv.
const RECV: u64 = u64::MAX;

fn serve_nbd(socket: &str, file: &str) -> io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(file)?;
    let size = f.metadata()?.len();
    let _ = std::fs::remove_file(socket);
    let l = UnixListener::bind(socket)?;
    for conn in l.incoming() {
        let mut s = conn?;
        match negotiate(&mut s, size) {
            Ok(true) => {
                if let Err(e) = transmit(&s, &f, size) {
                    eprintln!("ceiling: connection ended: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => eprintln!("ceiling: handshake failed: {e}"),
        }
    }
    Ok(())
}

fn opt_reply(s: &mut UnixStream, opt: u32, ty: u32, data: &[u8]) -> io::Result<()> {
    let mut v = Vec::with_capacity(20 + data.len());
    encode_option_reply(&mut v, opt, ty, data);
    s.write_all(&v)
}

/// Fixed newstyle with NO_ZEROES; `true` once the client is in transmission.
fn negotiate(s: &mut UnixStream, size: u64) -> io::Result<bool> {
    let mut hello = NBDMAGIC.to_be_bytes().to_vec();
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;
    let mut client_flags = [0u8; 4];
    s.read_exact(&mut client_flags)?;
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h)?;
        let opt = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let len = u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as usize;
        if len > 1 << 16 {
            return Err(io::Error::other("option too long"));
        }
        let mut data = vec![0u8; len];
        s.read_exact(&mut data)?;
        match opt {
            OPT_INFO | OPT_GO => {
                let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                opt_reply(s, opt, REP_INFO, &info)?;
                opt_reply(s, opt, REP_ACK, &[])?;
                if opt == OPT_GO {
                    return Ok(true);
                }
            }
            OPT_EXPORT_NAME => {
                let mut r = size.to_be_bytes().to_vec();
                r.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                s.write_all(&r)?;
                return Ok(true);
            }
            OPT_ABORT => {
                opt_reply(s, opt, REP_ACK, &[])?;
                return Ok(false);
            }
            _ => opt_reply(s, opt, REP_ERR_UNSUP, &[])?,
        }
    }
}

struct Slot {
    cookie: u64,
    buf: AlignedBuf,
    /// Bytes to send back after the reply header (reads).
    read_len: usize,
}

fn transmit(s: &UnixStream, f: &std::fs::File, size: u64) -> io::Result<()> {
    let mut ring = IoUring::new(256)?;
    let sfd = types::Fd(s.as_raw_fd());
    let ffd = types::Fd(f.as_raw_fd());
    let mut inbuf = vec![0u8; 2 * MAX_REQUEST];
    let (mut start, mut end) = (0usize, 0usize);
    let mut recv_armed = false;
    let mut slots: Vec<Option<Slot>> = (0..SLOTS).map(|_| None).collect();
    let mut free: Vec<usize> = (0..SLOTS).rev().collect();
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut disc = false;
    let mut writer = s;
    loop {
        // Every whole request already received becomes an SQE (as long as slots last).
        while let Some(&idx) = free.last() {
            let h = &inbuf[start..end];
            let Some(head) = h.first_chunk::<REQUEST_HEADER_LEN>() else {
                break;
            };
            let req = RequestHeader::decode(head).map_err(io::Error::other)?;
            let (ty, cookie, offset) = (req.kind, req.cookie, req.offset);
            let len = req.length as usize;
            let need = REQUEST_HEADER_LEN + req.payload_len() as usize;
            if len > MAX_REQUEST || offset.saturating_add(len as u64) > size {
                return Err(io::Error::other("request out of range"));
            }
            if h.len() < need {
                break;
            }
            if ty == CMD_DISC {
                disc = true;
                start += need;
                break;
            }
            let mut buf = match ty {
                CMD_WRITE => AlignedBuf::copy_of(&h[REQUEST_HEADER_LEN..need]),
                // SAFETY: only a read fills it, and only a read that returned all `len` bytes
                // has it read (below).
                _ => unsafe { AlignedBuf::for_kernel_fill(len) },
            };
            let p = buf.as_mut_ptr();
            let sqe = match ty {
                CMD_READ => opcode::Read::new(ffd, p, len as u32).offset(offset).build(),
                CMD_WRITE => {
                    let dsync = if req.flags & CMD_FLAG_FUA != 0 {
                        libc::RWF_DSYNC
                    } else {
                        0
                    };
                    opcode::Write::new(ffd, p, len as u32)
                        .offset(offset)
                        .rw_flags(dsync)
                        .build()
                }
                CMD_FLUSH => opcode::Fsync::new(ffd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
                _ => return Err(io::Error::other(format!("command {ty} not supported"))),
            };
            free.pop();
            let read_len = if ty == CMD_READ { len } else { 0 };
            slots[idx] = Some(Slot {
                cookie,
                buf,
                read_len,
            });
            // SAFETY: the buffer lives in `slots[idx]` until this SQE's CQE is reaped.
            unsafe { ring.submission().push(&sqe.user_data(idx as u64)) }
                .map_err(|_| io::Error::other("submission queue full"))?;
            start += need;
        }
        // The buffer is only rearranged while no recv points into it.
        let idle = !recv_armed;
        if idle && start == end {
            (start, end) = (0, 0);
        } else if idle && start > 0 && inbuf.len() - end < MAX_REQUEST + REQUEST_HEADER_LEN {
            // Room for the largest request after what is buffered.
            inbuf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        if idle && !disc && end < inbuf.len() {
            let room = inbuf.len() - end;
            // SAFETY: `end..` lies inside `inbuf`, which outlives the loop; nothing moves or
            // reads that part of it until this recv's CQE has been reaped.
            let p = unsafe { inbuf.as_mut_ptr().add(end) };
            let sqe = opcode::Recv::new(sfd, p, room as u32)
                .build()
                .user_data(RECV);
            // SAFETY: as above.
            unsafe { ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("submission queue full"))?;
            recv_armed = true;
        }
        if !out.is_empty() {
            writer.write_all(&out)?;
            out.clear();
        }
        if disc && free.len() == SLOTS {
            return Ok(());
        }
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (ud, res) in done {
            if ud == RECV {
                recv_armed = false;
                if res <= 0 {
                    return Ok(());
                }
                end += res as usize;
                continue;
            }
            let idx = ud as usize;
            let Some(slot) = slots.get_mut(idx).and_then(Option::take) else {
                continue;
            };
            free.push(idx);
            let ok = res >= 0 && (slot.read_len == 0 || res as usize == slot.read_len);
            out.extend_from_slice(&simple_reply(slot.cookie, (!ok).then_some(Errno::Io)));
            if ok && slot.read_len > 0 {
                // The read returned all of its bytes (`ok`), so the buffer is filled.
                out.extend_from_slice(slot.buf.as_slice());
            }
        }
    }
}
