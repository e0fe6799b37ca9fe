//! The config's `device /dev/drbdN` as a real block device: the kernel's NBD client
//! (`nbd.ko`), handed sockets over netlink whose other ends this daemon serves, already in
//! transmission (no handshake, no `nbd-client`), with `/dev/drbdN`, `/dev/drbd/by-res/...`
//! and `/dev/drbd/by-disk/...` as links to the `/dev/nbdX` it gets, as DRBD's udev rules make
//! them.
//!
//! DRBD's semantics, as far as a server can see them: the kernel does not tell an NBD server
//! who opens the device, so the device counts as a read-only opener (DRBD's `ro_open_cond`):
//! on a Secondary it reads, its writes fail (EIO), and it never promotes or demotes the node.
//! `drbdadm primary` makes it writable. `secondary` and `down` ask the kernel whether anyone
//! holds it, by an exclusive open: a mount, a device-mapper table (kpartx, an active LV) or
//! another exclusive opener makes it fail, and the command is refused with DRBD's
//! `(-12) Device is held open by someone`. A plain open (`dd`, a qemu without locking) is
//! invisible to that check, as it is to the kernel.
//!
//! Lifetime: `down` disconnects the device and removes the links. A daemon that stops
//! (SIGTERM, crash) leaves the device configured: the kernel queues its I/O for
//! [`DEAD_CONN_TIMEOUT_SECS`], and the next `up` of the resource finds it by its backend
//! identifier (`/sys/block/nbdX/backend`: `udrbd:RES/0@RUN_DIR`) and hands it new sockets.
//!
//! [`KernelDevice`] is one device (netlink, links, the held-open probe); the `impl Daemon`
//! below keeps the resources' devices and makes, adopts and checks them for `up`, `adjust`,
//! `secondary` and `down`.

use super::nbd::NbdFront;
use super::{Daemon, error};
use crate::ctl::Response;
use crate::driver::Driver;
use crate::nbd::kernel::{self, Connect, KernelNbd, KernelNbdError};
use crate::nbd::proto::{FLAG_HAS_FLAGS, Negotiated};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long the kernel keeps the device's I/O queued after the daemon's sockets closed
/// (a daemon restart): then it fails it.
pub const DEAD_CONN_TIMEOUT_SECS: u64 = 120;

/// The kernel's logical block size for the device: 512, as DRBD's (and what partition tools
/// and LVM metadata expect of a disk).
const LOGICAL_BLOCK: u64 = 512;

/// How many sockets at most: one per CPU (the kernel gives each its own hardware queue), up
/// to this.
const MAX_CONNECTIONS: usize = 4;

/// What `up` made of the config's device.
#[derive(Debug)]
pub struct KernelDevice {
    index: u32,
    /// The links made to `/dev/nbdX`.
    links: Vec<PathBuf>,
}

/// The identifier the kernel keeps for the device (`/sys/block/nbdX/backend`): the resource,
/// its volume, and the daemon's run directory, so daemons with their own run directories on
/// one host (tests, several instances) never take each other's devices.
fn backend_id(resource: &str, run_dir: &Path) -> String {
    format!("udrbd:{resource}/0@{}", run_dir.display())
}

/// `/dev/nbdX`.
fn node_path(index: u32) -> PathBuf {
    PathBuf::from(format!("/dev/nbd{index}"))
}

/// Loads `nbd.ko` when the kernel has no nbd driver yet, as drbdadm loads drbd.ko:
/// `max_part=0`, so connecting scans no partitions and they come through kpartx as on a DRBD
/// device. (Linux 6.1 still makes `/dev/nbdXpN` when a tool re-reads the table, fdisk's
/// BLKRRPART, where DRBD's device refuses: LVM then sees each PV twice, beside kpartx's
/// mapping, unless its filter rejects `/dev/nbd*p*`; the README says so.)
fn load_module() -> Result<(), String> {
    if Path::new("/sys/module/nbd").exists() {
        return Ok(());
    }
    let out = std::process::Command::new("modprobe")
        .args(["nbd", "max_part=0"])
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "the nbd module is not loaded and there is no modprobe to load it".to_string()
            }
            _ => format!("modprobe nbd: {e}"),
        })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(format!("modprobe nbd failed: {why}"));
    }
    Ok(())
}

/// Our ends of fresh socket pairs, already being served (`serve`), and the kernel's ends.
fn socket_pairs(serve: &impl Fn(std::os::unix::net::UnixStream)) -> std::io::Result<Vec<OwnedFd>> {
    let n = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_CONNECTIONS);
    let mut kernel_ends = Vec::with_capacity(n);
    for _ in 0..n {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        // Served before the kernel gets its end: the first thing it does is read.
        serve(ours);
        kernel_ends.push(theirs.into());
    }
    Ok(kernel_ends)
}

/// The links DRBD's udev rules make for the resource's device (drbdadm sh-udev's): the
/// `device` path, `/dev/drbdN` when that is another name, `/dev/drbd/by-res/...` and
/// `/dev/drbd/by-disk/DISK`.
fn wanted_links(spec: &crate::ctl::ResourceSpec, minor: u32) -> Vec<PathBuf> {
    let mut wanted = vec![PathBuf::from(format!("/dev/drbd{minor}"))];
    if let Some(d) = &spec.device
        && !wanted.iter().any(|w| w == Path::new(d))
    {
        wanted.push(PathBuf::from(d));
    }
    let by_res = if spec.by_res.is_empty() {
        format!("drbd/by-res/{}/0", spec.name)
    } else {
        spec.by_res.clone()
    };
    wanted.push(Path::new("/dev").join(by_res));
    if let Some(disk) = &spec.disk {
        let disk = disk.strip_prefix("/dev/").unwrap_or(disk);
        wanted.push(Path::new("/dev/drbd/by-disk").join(disk));
    }
    wanted
}

impl KernelDevice {
    /// Makes `driver`'s device a kernel block device, or says in one line why it cannot
    /// (`Ok(None)`: the config does not ask for one). Blocks (modprobe, netlink): call it
    /// from a blocking task. `serve` starts serving our end of each socket pair.
    pub fn make(
        driver: &Arc<Driver>,
        run_dir: &Path,
        serve: impl Fn(std::os::unix::net::UnixStream),
    ) -> Result<Option<KernelDevice>, String> {
        let spec = driver.spec();
        let (Some(minor), true) = (spec.minor, spec.nbd_access.kernel_device) else {
            return Ok(None);
        };
        let res = spec.name.clone();
        let unavailable = |why: String| {
            format!(
                "{res}: /dev/drbd{minor} not created: {why}; the device is served over NBD only \
                 (set `options {{ kernel-device no; }}` to silence this)"
            )
        };
        load_module().map_err(unavailable)?;
        let mut nl = KernelNbd::open().map_err(|e| match e {
            KernelNbdError::NoDriver => unavailable("the kernel has no nbd driver".into()),
            other => unavailable(other.to_string()),
        })?;
        let size = driver.status().size_bytes;
        if size == 0 {
            return Err(format!(
                "{res}: /dev/drbd{minor} not created yet: the device's size is not known (a \
                 diskless node before a peer connected); `drbdadm adjust {res}` makes it once \
                 connected"
            ));
        }
        let kernel_ends =
            socket_pairs(&serve).map_err(|e| unavailable(format!("socketpair: {e}")))?;
        let fds: Vec<BorrowedFd<'_>> = kernel_ends.iter().map(|f| f.as_fd()).collect();
        let index = nl
            .connect(&Connect {
                index: None,
                sockets: &fds,
                size_bytes: size,
                block_size: LOGICAL_BLOCK,
                server_flags: u64::from(FLAG_HAS_FLAGS | super::nbd_backend::FLAGS),
                client_flags: 0,
                // No per-request timeout: a request waits while the resource suspends I/O
                // (fencing, quorum, suspend-io), as DRBD's device does.
                timeout_secs: 0,
                dead_conn_timeout_secs: DEAD_CONN_TIMEOUT_SECS,
                backend_id: &backend_id(&res, run_dir),
            })
            .map_err(|e| unavailable(e.to_string()))?;
        // The kernel holds its own references now.
        drop(fds);
        drop(kernel_ends);
        wait_for_node(&node_path(index));
        let dev = KernelDevice::with_links(index, &spec, minor);
        tracing::info!(
            "{res}: /dev/drbd{minor} is /dev/nbd{index} ({size} bytes, {} link(s))",
            dev.links.len()
        );
        Ok(Some(dev))
    }

    /// The device an earlier run of this daemon left for `driver`'s resource, if any (only a
    /// daemon with this run directory makes one, and its sockets died with it): its I/O waits
    /// for [`KernelDevice::reconnect`]. Taken over at once, links and all, so `secondary` and
    /// `down` see who holds it.
    pub fn adopt(driver: &Driver, run_dir: &Path) -> Option<KernelDevice> {
        let spec = driver.spec();
        let (Some(minor), true) = (spec.minor, spec.nbd_access.kernel_device) else {
            return None;
        };
        let index =
            kernel::find_by_backend(Path::new("/sys/block"), &backend_id(&spec.name, run_dir))?;
        tracing::info!(
            "{}: /dev/nbd{index} was left by a daemon that stopped; it gets new sockets once \
             the data is readable",
            spec.name
        );
        Some(KernelDevice::with_links(index, &spec, minor))
    }

    /// Hands an adopted device its new sockets. Blocks (netlink). A device that cannot take
    /// them stays as it is (its I/O fails after [`DEAD_CONN_TIMEOUT_SECS`]) until `down`.
    pub fn reconnect(
        &self,
        driver: &Driver,
        run_dir: &Path,
        serve: impl Fn(std::os::unix::net::UnixStream),
    ) -> Result<(), String> {
        let res = driver.spec().name.clone();
        let index = self.index;
        let failed = |e: String| format!("{res}: /dev/nbd{index} could not be reconnected: {e}");
        let mut nl = KernelNbd::open().map_err(|e| failed(e.to_string()))?;
        let kernel_ends = socket_pairs(&serve).map_err(|e| failed(e.to_string()))?;
        let fds: Vec<BorrowedFd<'_>> = kernel_ends.iter().map(|f| f.as_fd()).collect();
        let id = backend_id(&res, run_dir);
        nl.reconfigure(index, &fds, 0, DEAD_CONN_TIMEOUT_SECS, &id)
            .map_err(|e| failed(e.to_string()))?;
        tracing::info!("{res}: /dev/nbd{index} reconnected");
        Ok(())
    }

    /// The device `/dev/nbd{index}` with the links the resource wants made to it.
    fn with_links(index: u32, spec: &crate::ctl::ResourceSpec, minor: u32) -> KernelDevice {
        let mut links = Vec::new();
        for link in wanted_links(spec, minor) {
            match make_link(&link, &node_path(index)) {
                Ok(()) => links.push(link),
                Err(e) => tracing::warn!("{}: {}: {e}", spec.name, link.display()),
            }
        }
        KernelDevice { index, links }
    }

    /// `/dev/nbdX`.
    pub fn node(&self) -> PathBuf {
        node_path(self.index)
    }

    /// The name operators know it by: its first link (`/dev/drbdN`), else `/dev/nbdX`.
    pub fn name(&self) -> PathBuf {
        self.links.first().cloned().unwrap_or_else(|| self.node())
    }

    /// Whether someone holds the device: an exclusive open fails while it is mounted, under
    /// a device-mapper table (kpartx, LVM) or opened exclusively.
    pub fn held(&self) -> bool {
        let r = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
            .open(self.node());
        matches!(r, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
    }

    /// `down`: the links go, the kernel disconnects the device (it sends `NBD_CMD_DISC`).
    pub fn remove(self) {
        for l in &self.links {
            if let Err(e) = std::fs::remove_file(l) {
                tracing::warn!("{}: {e}", l.display());
            }
        }
        match KernelNbd::open().and_then(|mut nl| nl.disconnect(self.index)) {
            Ok(()) => tracing::info!("/dev/nbd{} disconnected", self.index),
            Err(e) => tracing::warn!("/dev/nbd{}: disconnect failed: {e}", self.index),
        }
    }
}

// ----- the daemon's side: which resources have a device, made at `up`/`adjust` -----

/// How long a kernel device left by an earlier run waits for the node to be able to serve
/// its queued reads before it gets its sockets anyway.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a read of the kernel device can be served now.
fn data_readable(st: &crate::repl::Status) -> bool {
    use crate::repl::{DiskState, Role};
    st.role == Role::Primary
        || st.disk == DiskState::UpToDate
        || (st.disk == DiskState::Diskless
            && st.peers.iter().any(|p| p.disk == DiskState::UpToDate))
}

impl Daemon {
    pub(super) fn kdevs(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, KernelDevice>> {
        self.kdevs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the resource's kernel block device when the config asks for one and it has none
    /// yet; the line the operator should read when it cannot be made. A device an earlier run
    /// left behind is handed its sockets in the background, once the data is readable (see
    /// [`Daemon::reconnect_kernel_device`]).
    pub(super) async fn ensure_kernel_device(&self, d: &Arc<Driver>) -> Option<String> {
        let name = d.spec().name.clone();
        if self.kdevs().contains_key(&name) {
            return None;
        }
        let front = self.nbd.get()?.clone();
        if let Some(k) = KernelDevice::adopt(d, front.run_dir()) {
            self.kdevs().insert(name, k);
            if let Some(me) = self.me.upgrade() {
                tokio::spawn(me.reconnect_kernel_device(d.clone(), front));
            }
            return None;
        }
        let driver = d.clone();
        let made = tokio::task::spawn_blocking(move || {
            KernelDevice::make(&driver, front.run_dir(), |sock| {
                front.serve_kernel_device(&driver, sock)
            })
        })
        .await;
        match made {
            Ok(Ok(Some(k))) => {
                self.kdevs().insert(name, k);
                None
            }
            Ok(Ok(None)) => None,
            Ok(Err(why)) => {
                tracing::warn!("{why}");
                Some(why)
            }
            Err(e) => Some(format!("{name}: the kernel device could not be made: {e}")),
        }
    }

    /// Hands an adopted kernel device its new sockets once the node can serve its queued
    /// reads (UpToDate data here or, diskless, at a peer; or Primary), or after
    /// [`READY_WAIT`], whichever comes first; as DRBD makes a read-only open wait for the
    /// state to settle (`ro_open_cond`). Nothing if the resource went down meanwhile.
    async fn reconnect_kernel_device(self: Arc<Self>, d: Arc<Driver>, front: Arc<NbdFront>) {
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        while tokio::time::Instant::now() < deadline && !data_readable(&d.status()) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let name = d.spec().name.clone();
        if !self.get(&name).is_some_and(|now| Arc::ptr_eq(&now, &d)) {
            return;
        }
        let me = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let k = me.kdevs();
            let Some(k) = k.get(&name) else {
                return Ok(());
            };
            k.reconnect(&d, front.run_dir(), |sock| {
                front.serve_kernel_device(&d, sock)
            })
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(why)) => tracing::warn!("{why}"),
            Err(e) => tracing::warn!("kernel device reconnect: {e}"),
        }
    }

    /// `secondary` and `down` are refused while someone holds the kernel device (DRBD's
    /// open count, as far as the kernel shows it to a server).
    pub(super) fn kernel_device_held(&self, name: &str) -> Option<Response> {
        let k = self.kdevs();
        let k = k.get(name)?;
        if !k.held() {
            return None;
        }
        // Logged as DRBD logs a refused state change; drbdadm shows the operator the same.
        tracing::info!(
            "{name}: State change failed: {} ({} is in use)",
            crate::repl::StateError::DeviceInUse,
            k.name().display()
        );
        Some(error(
            crate::repl::StateError::DeviceInUse.exit_code(),
            format!(
                "{name}: State change failed: {}\nadditional info: {} ({}) is in use \
                 (mounted, under a device-mapper table such as kpartx's or an active LV, or \
                 opened exclusively); unmount it and remove those first",
                crate::repl::StateError::DeviceInUse,
                k.name().display(),
                k.node().display()
            ),
        ))
    }
}

/// devtmpfs makes `/dev/nbdX` when the kernel adds the disk; give it a moment.
fn wait_for_node(node: &Path) {
    for _ in 0..50 {
        if node.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The target of a link at `link` to the device node `/dev/NAME`, relative as udev makes
/// them (`/dev/drbd0` -> `nbd0`, `/dev/drbd/by-res/r0/0` -> `../../../nbd0`); absolute for a
/// link outside `/dev`.
fn link_target(link: &Path, node: &Path) -> PathBuf {
    let (Ok(rel), Some(name)) = (link.strip_prefix("/dev"), node.file_name()) else {
        return node.to_path_buf();
    };
    let depth = rel.components().count().saturating_sub(1);
    let mut t: PathBuf = std::iter::repeat_n("..", depth).collect();
    t.push(name);
    t
}

/// `link` -> `target`, replacing a link left by an earlier run but never anything else (a
/// kernel DRBD's `/dev/drbd0` on the same host).
fn make_link(link: &Path, target: &Path) -> Result<(), String> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::remove_file(link).map_err(|e| format!("cannot replace the old link: {e}"))?;
        }
        Ok(_) => {
            return Err("exists and is not a link udrbd made; not replaced".into());
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(link_target(link, target), link)
        .map_err(|e| format!("cannot link it: {e}"))
}

/// The transmission parameters the kernel device's connections start with: the export as a
/// client that asked for nothing would have it (simple replies, no block status).
pub fn negotiated(export: &crate::nbd::server::OpenExport) -> Negotiated {
    Negotiated {
        export: export.info.name.clone(),
        requested_name: export.info.name.clone(),
        size: export.info.size,
        flags: FLAG_HAS_FLAGS | export.info.flags,
        block_sizes: export.info.block_sizes,
        structured: false,
        meta_context: None,
        block_size_requested: false,
        via_export_name: false,
    }
}

impl NbdFront {
    /// Serves one socket of the kernel device of `driver`.
    pub fn serve_kernel_device(&self, driver: &Arc<Driver>, sock: std::os::unix::net::UnixStream) {
        let export = super::nbd_backend::device_export(driver);
        let neg = negotiated(&export);
        let stream = match sock.set_nonblocking(true) {
            Ok(()) => tokio::net::UnixStream::from_std(sock),
            Err(e) => Err(e),
        };
        match stream {
            Ok(s) => self
                .server()
                .serve_transmission(s, "kernel nbd", neg, export.io),
            Err(e) => tracing::warn!("kernel device socket: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_at_the_node_as_udev_makes_them() {
        let node = Path::new("/dev/nbd3");
        let t = |l: &str| link_target(Path::new(l), node);
        assert_eq!(t("/dev/drbd0"), PathBuf::from("nbd3"));
        assert_eq!(t("/dev/drbd/by-res/r0/0"), PathBuf::from("../../../nbd3"));
        assert_eq!(t("/srv/drbd_r0"), PathBuf::from("/dev/nbd3"));
    }

    #[test]
    fn an_existing_file_that_is_not_a_link_is_left_alone() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let real = dir.path().join("drbd0");
        std::fs::write(&real, b"not ours")?;
        assert!(make_link(&real, Path::new("/dev/nbd0")).is_err());
        assert_eq!(std::fs::read(&real)?, b"not ours");
        let link = dir.path().join("by-res/r0/0");
        make_link(&link, Path::new("/dev/nbd0"))?;
        make_link(&link, Path::new("/dev/nbd1"))?;
        assert_eq!(std::fs::read_link(&link)?, PathBuf::from("/dev/nbd1"));
        Ok(())
    }
}
