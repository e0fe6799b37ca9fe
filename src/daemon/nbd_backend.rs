//! The daemon's resources as NBD exports: the [`NbdBackend`] the NBD server talks to.
//!
//! An export is a resource that is up, named after it. Opening it (GO) is DRBD 9's open of
//! `/dev/drbdN`: a Primary accepts, a Secondary auto-promotes when `auto-promote` is on, and the
//! client holds the device open until its last request handle is dropped, which is what makes
//! `drbdadm secondary`/`down` answer "Device is held open by someone".

use super::Daemon;
use crate::disk::engine::AllocRun;
use crate::driver::Driver;
use crate::nbd::proto::{
    BlockSizes, Errno, ExportCatalog, ExportInfo, Extent, FLAG_CAN_MULTI_CONN, FLAG_SEND_FAST_ZERO,
    FLAG_SEND_FLUSH, FLAG_SEND_FUA, FLAG_SEND_TRIM, FLAG_SEND_WRITE_ZEROES, GoRefusal, Purpose,
    RepError, STATE_HOLE, STATE_ZERO,
};
use crate::nbd::server::access::ExportPolicy;
use crate::nbd::server::{
    ExportIo, IoCmd, IoDone, IoError as NbdIoError, IoReply, NbdBackend, OpenDone, OpenExport,
};
use crate::repl::{IoError, IoOp, OpenRefusal};
use std::sync::Arc;

/// Transmission flags of every export. CAN_MULTI_CONN is honest: a FLUSH is one fdatasync of
/// the backing device, which covers writes completed on every connection.
pub(super) const FLAGS: u16 = FLAG_SEND_FLUSH
    | FLAG_SEND_FUA
    | FLAG_SEND_TRIM
    | FLAG_SEND_WRITE_ZEROES
    | FLAG_SEND_FAST_ZERO
    | FLAG_CAN_MULTI_CONN;

/// The resource table seen through NBD.
#[derive(Debug, Clone)]
pub struct DaemonBackend {
    daemon: Arc<Daemon>,
    /// Clients one export serves at once (`--nbd-max-clients`).
    max_clients: u32,
}

impl DaemonBackend {
    pub fn new(daemon: Arc<Daemon>, max_clients: u32) -> Self {
        DaemonBackend {
            daemon,
            max_clients,
        }
    }

    /// The driver for an export name; "" (the default export) is the only resource, if there is
    /// exactly one.
    fn driver(&self, name: &str) -> Result<Arc<Driver>, GoRefusal> {
        let export = name.split('/').next().unwrap_or(name);
        if export.is_empty() {
            let all = self.daemon.all();
            return match all.as_slice() {
                [one] => Ok(one.clone()),
                _ => Err(GoRefusal::new(
                    RepError::Unknown,
                    "no default export: name the resource (the export name is the resource name)",
                )),
            };
        }
        if name.contains('/') && !name.ends_with("/0") {
            return Err(GoRefusal::unknown(name));
        }
        self.daemon
            .get(export)
            .ok_or_else(|| GoRefusal::unknown(name))
    }
}

fn info(d: &Driver) -> ExportInfo {
    let st = d.status();
    ExportInfo {
        name: st.resource.clone(),
        size: st.size_bytes,
        flags: FLAGS,
        description: Some(format!(
            "udrbd resource {} (role:{} disk:{})",
            st.resource, st.role, st.disk
        )),
        block_sizes: BlockSizes::default(),
    }
}

impl ExportCatalog for DaemonBackend {
    fn lookup(&self, name: &str, _purpose: Purpose) -> Result<ExportInfo, GoRefusal> {
        let d = self.driver(name)?;
        Ok(info(&d))
    }

    fn list(&self) -> Vec<(String, Option<String>)> {
        self.daemon
            .all()
            .iter()
            .map(|d| {
                let i = info(d);
                (i.name, i.description)
            })
            .collect()
    }
}

impl NbdBackend for DaemonBackend {
    fn policy(&self, name: &str) -> ExportPolicy {
        match self.driver(name) {
            // `up` refused an unusable nbd-allow; should one get here anyway, no TCP client is
            // let in rather than every one.
            Ok(d) => super::nbd::export_policy(&d.spec().nbd_access)
                .unwrap_or_else(|_| ExportPolicy::closed()),
            // No such export: the lookup says so.
            Err(_) => ExportPolicy::default(),
        }
    }

    fn open(&self, name: &str, done: OpenDone) {
        let d = match self.driver(name) {
            Ok(d) => d,
            Err(e) => return done(Err(e)),
        };
        let res = d.spec().name.clone();
        let open = d.open_count();
        if open >= self.max_clients {
            tracing::warn!(
                "{res}: NBD client refused: {open} clients hold it open, the limit \
                 (--nbd-max-clients {})",
                self.max_clients
            );
            return done(Err(GoRefusal::new(
                RepError::Policy,
                format!(
                    "resource {res} already serves {open} NBD clients, its limit; close some \
                     or start the daemon with a higher --nbd-max-clients"
                ),
            )));
        }
        let driver = d.clone();
        d.open_waiting(move |r| match r {
            Ok(()) => {
                let info = info(&driver);
                done(Ok(OpenExport {
                    info,
                    io: Arc::new(Handle {
                        driver,
                        device: false,
                    }),
                }))
            }
            Err(OpenRefusal::Secondary) => done(Err(GoRefusal::new(
                RepError::Policy,
                format!(
                    "resource {res} is Secondary and auto-promote is off; promote it with \
                     `drbdadm primary {res}`"
                ),
            ))),
            Err(OpenRefusal::AutoPromoteFailed(e)) => done(Err(GoRefusal::new(
                RepError::Policy,
                format!(
                    "resource {res} is Secondary and cannot be auto-promoted: {e}; see \
                     `drbdadm status {res}` (`drbdadm primary --force {res}` overrides)"
                ),
            ))),
        })
    }
}

/// What the kernel block device's connections serve (src/daemon/kdev.rs): the export as an
/// NBD client would see it, and a handle that holds no open (the kernel does not say who opens
/// the device), whose requests are the device's ([`Driver::submit_device_batch`]).
pub fn device_export(driver: &Arc<Driver>) -> OpenExport {
    OpenExport {
        info: info(driver),
        io: Arc::new(Handle {
            driver: Arc::clone(driver),
            device: true,
        }),
    }
}

/// One client's hold on an export (dropping the last clone closes it), or the kernel
/// device's requests (`device`: no hold).
struct Handle {
    driver: Arc<Driver>,
    device: bool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.device {
            self.driver.close();
        }
    }
}

impl ExportIo for Handle {
    fn submit(&self, cmd: IoCmd, done: IoDone) {
        self.submit_batch(vec![(cmd, done)]);
    }

    fn submit_batch(&self, cmds: Vec<(IoCmd, IoDone)>) {
        let mut ops = Vec::with_capacity(cmds.len());
        for (cmd, done) in cmds {
            if let Some(op) = self.to_op(cmd, done) {
                ops.push(op);
            }
        }
        match (ops.is_empty(), self.device) {
            (true, _) => {}
            (false, true) => self.driver.submit_device_batch(ops),
            (false, false) => self.driver.submit_batch(ops),
        }
    }

    fn write_room(&self) -> Option<crate::nbd::server::RoomWait> {
        self.driver.write_room()
    }
}

impl Handle {
    /// The engine request for `cmd` with its completion; `None` when it was answered here
    /// (block status comes from the backing device, not through the engine).
    fn to_op(&self, cmd: IoCmd, done: IoDone) -> Option<(IoOp, crate::driver::IoDone)> {
        let op = match cmd {
            IoCmd::Read { offset, len } => IoOp::Read { offset, len },
            IoCmd::Write { offset, data, fua } => IoOp::Write { offset, data, fua },
            IoCmd::Flush => IoOp::Flush,
            IoCmd::Trim { offset, len, fua } => IoOp::Trim { offset, len, fua },
            // Zeroing is a hole punch or fallocate here, never a write of zeroes, so a FAST_ZERO
            // request is always fast.
            IoCmd::WriteZeroes {
                offset,
                len,
                fua,
                no_hole,
                fast_zero: _,
            } => IoOp::WriteZeroes {
                offset,
                len,
                fua,
                no_hole,
            },
            IoCmd::BlockStatus { offset, len } => {
                done(block_status(&self.driver, offset, len));
                return None;
            }
        };
        // The resource name is only needed for an error message: keep a handle, not a copy.
        let driver = Arc::clone(&self.driver);
        let done: crate::driver::IoDone = Box::new(move |r| {
            done(match r {
                Ok(Some(data)) => Ok(IoReply::Data(data)),
                Ok(None) => Ok(IoReply::Done),
                Err(e) => Err(to_nbd_error(&driver.spec().name, e)),
            })
        });
        Some((op, done))
    }
}

fn to_nbd_error(res: &str, e: IoError) -> NbdIoError {
    let errno = match e {
        IoError::NotPrimary => Errno::Perm,
        // The NBD protocol's answers for a request past the end of the export.
        IoError::PastEnd { write: true } => Errno::NoSpc,
        IoError::PastEnd { write: false } => Errno::Inval,
        IoError::Disk(libc::ENOSPC) => Errno::NoSpc,
        IoError::Disk(libc::EINVAL) => Errno::Inval,
        IoError::Disk(libc::ENOMEM) => Errno::NoMem,
        _ => Errno::Io,
    };
    NbdIoError::new(errno, format!("{res}: {e}"))
}

fn block_status(d: &Driver, offset: u64, len: u32) -> Result<IoReply, NbdIoError> {
    let runs = d
        .block_status(offset, u64::from(len))
        .map_err(|e| NbdIoError::new(Errno::Io, format!("block status: {e}")))?;
    let extents = to_extents(&runs);
    if extents.is_empty() {
        // Nothing known (e.g. a device without SEEK_DATA): everything is data.
        return Ok(IoReply::Extents(vec![Extent {
            length: len.max(512),
            flags: 0,
        }]));
    }
    Ok(IoReply::Extents(extents))
}

/// Allocation runs as NBD extents; runs longer than an extent can describe are split.
fn to_extents(runs: &[AllocRun]) -> Vec<Extent> {
    let mut out = Vec::new();
    for r in runs {
        let flags = if r.hole { STATE_HOLE } else { 0 } | if r.zero { STATE_ZERO } else { 0 };
        let mut left = r.len;
        while left > 0 {
            // The largest 4 KiB multiple a u32 length holds.
            let n = left.min(u64::from(!4095u32));
            out.push(Extent {
                length: n as u32,
                flags,
            });
            left -= n;
        }
    }
    out
}
