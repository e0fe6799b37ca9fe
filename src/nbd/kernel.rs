//! A small synchronous client of the Linux kernel NBD driver's generic-netlink interface
//! (family `"nbd"`, version 1, uapi `linux/nbd-netlink.h`).
//!
//! Why netlink and not the old `NBD_SET_SOCK`/`NBD_DO_IT` ioctls: netlink hands the driver
//! several sockets at once, lets the kernel pick a free `/dev/nbdN`, tags the device with a
//! backend identifier that survives a daemon restart (`/sys/block/nbdN/backend`, see
//! [`find_by_backend`]), and lets a restarted daemon hand fresh sockets to the same device
//! ([`KernelNbd::reconfigure`]) instead of tearing it down under a mounted filesystem.
//!
//! neli does all netlink encoding and decoding; this file only says which attributes go into
//! which command and reads the kernel's answer. Every request carries `NLM_F_REQUEST |
//! NLM_F_ACK` and is read back up to its ACK or error, so a kernel errno always surfaces as
//! [`KernelNbdError::Kernel`] instead of being lost.
//!
//! The socket is neli's plain [`NlSocketHandle`], not its `NlRouter`: the router runs a
//! background thread per socket (polling every 100 ms) to demultiplex concurrent requests,
//! which a one-request-at-a-time client does not need.

use std::fmt;
use std::io::Cursor;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use neli::FromBytesWithInput;
use neli::consts::genl::{CtrlAttr, CtrlCmd};
use neli::consts::nl::{GenlId, NlmF};
use neli::consts::socket::NlFamily;
use neli::genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, Nlattr, NlattrBuilder};
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, GenlBuffer};
use neli::utils::Groups;
use neli::{Size, ToBytes};

/// The generic-netlink family name the nbd module registers.
pub const FAMILY_NAME: &str = "nbd";
/// `NBD_GENL_VERSION`.
const FAMILY_VERSION: u8 = 1;
/// The genl controller's own protocol version (what `genl ctrl` and neli send).
const CTRL_VERSION: u8 = 2;

// Commands (`enum nbd_cmd` in linux/nbd-netlink.h). LINK_DEAD (4) is a multicast
// notification from the kernel, never a request, so it has no method here.
const NBD_CMD_CONNECT: u8 = 1;
const NBD_CMD_DISCONNECT: u8 = 2;
const NBD_CMD_RECONFIGURE: u8 = 3;
const NBD_CMD_STATUS: u8 = 5;

// Top-level attributes (`enum nbd_attr`).
const NBD_ATTR_INDEX: u16 = 1; // u32
const NBD_ATTR_SIZE_BYTES: u16 = 2; // u64
const NBD_ATTR_BLOCK_SIZE_BYTES: u16 = 3; // u64
const NBD_ATTR_TIMEOUT: u16 = 4; // u64, seconds
const NBD_ATTR_SERVER_FLAGS: u16 = 5; // u64
const NBD_ATTR_CLIENT_FLAGS: u16 = 6; // u64
const NBD_ATTR_SOCKETS: u16 = 7; // nested NBD_SOCK_ITEM
const NBD_ATTR_DEAD_CONN_TIMEOUT: u16 = 8; // u64, seconds
const NBD_ATTR_DEVICE_LIST: u16 = 9; // nested NBD_DEVICE_ITEM
const NBD_ATTR_BACKEND_IDENTIFIER: u16 = 10; // NUL-terminated string

// Inside NBD_ATTR_SOCKETS.
const NBD_SOCK_ITEM: u16 = 1; // nested
const NBD_SOCK_FD: u16 = 1; // u32

// Inside NBD_ATTR_DEVICE_LIST.
const NBD_DEVICE_ITEM: u16 = 1; // nested
const NBD_DEVICE_INDEX: u16 = 1; // u32
const NBD_DEVICE_CONNECTED: u16 = 2; // u8

/// `NBD_CFLAG_DESTROY_ON_DISCONNECT`: the kernel removes `/dev/nbdN` once it disconnects.
pub const CFLAG_DESTROY_ON_DISCONNECT: u64 = 1;
/// `NBD_CFLAG_DISCONNECT_ON_CLOSE`: the device disconnects when its last opener closes it.
pub const CFLAG_DISCONNECT_ON_CLOSE: u64 = 2;

/// A generic-netlink message with no family header: a `u8` command and `u16` attribute types,
/// because the nbd family's constants are plain numbers (see above).
type GenlMsg = Genlmsghdr<u8, u16>;

/// What can go wrong talking to the kernel NBD driver.
#[derive(Debug, thiserror::Error)]
pub enum KernelNbdError {
    /// The "nbd" generic netlink family does not exist: module not loaded / not built.
    #[error("the kernel has no \"nbd\" generic netlink family (nbd module not loaded?)")]
    NoDriver,
    /// The kernel answered with an errno (keep the errno and the command name).
    #[error("kernel NBD {cmd} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel {
        /// The command that failed, e.g. `"CONNECT"`.
        cmd: &'static str,
        /// The positive errno, e.g. `libc::EBUSY`.
        errno: i32,
    },
    /// Anything else from the netlink layer (message text).
    #[error("netlink: {0}")]
    Netlink(String),
}

impl KernelNbdError {
    fn netlink(e: impl fmt::Display) -> Self {
        KernelNbdError::Netlink(e.to_string())
    }
}

/// What `NBD_CMD_CONNECT` needs: the sockets the kernel will speak NBD transmission over
/// (the handshake must already be done on each) and the export's geometry.
#[derive(Debug, Clone, Copy)]
pub struct Connect<'a> {
    /// The `/dev/nbdN` to use; `None` lets the kernel pick (or create) a free one.
    pub index: Option<u32>,
    /// Connected sockets, one per kernel queue. The kernel takes its own reference to each
    /// during the call, so the caller may close its copies once `connect` returns.
    pub sockets: &'a [BorrowedFd<'a>],
    /// The export size in bytes.
    pub size_bytes: u64,
    /// The logical block size; 0 leaves the kernel's default (1024).
    pub block_size: u64,
    /// NBD transmission flags as negotiated (`crate::nbd::proto::FLAG_*`, widened to u64).
    pub server_flags: u64,
    /// `CFLAG_*`.
    pub client_flags: u64,
    /// Per-request timeout in seconds; 0 leaves the kernel's default (no timeout).
    pub timeout_secs: u64,
    /// How long the kernel keeps I/O queued after all sockets died, waiting for
    /// [`KernelNbd::reconfigure`]; 0 sends nothing (the kernel fails I/O at once).
    pub dead_conn_timeout_secs: u64,
    /// Written to `/sys/block/nbdN/backend` so a restarted daemon can find its device again;
    /// empty sends nothing.
    pub backend_id: &'a str,
}

/// A netlink socket bound to the kernel's "nbd" generic netlink family.
pub struct KernelNbd {
    sock: NlSocketHandle,
    family: u16,
    seq: u32,
}

impl fmt::Debug for KernelNbd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelNbd")
            .field("family", &self.family)
            .field("pid", &self.sock.pid())
            .finish()
    }
}

impl KernelNbd {
    /// Opens a generic netlink socket and resolves the "nbd" family; [`KernelNbdError::NoDriver`]
    /// when the kernel has no such family.
    pub fn open() -> Result<Self, KernelNbdError> {
        let sock = NlSocketHandle::connect(NlFamily::Generic, None, Groups::empty())
            .map_err(KernelNbdError::netlink)?;
        let mut this = KernelNbd {
            sock,
            family: GenlId::Ctrl.into(),
            seq: 0,
        };
        let request = genl(
            CtrlCmd::Getfamily.into(),
            CTRL_VERSION,
            vec![attr(CtrlAttr::FamilyName.into(), FAMILY_NAME)?],
        )?;
        let reply = match this.transact(GenlId::Ctrl.into(), "GETFAMILY", request) {
            // The controller answers ENOENT for an unknown family name.
            Err(KernelNbdError::Kernel { errno, .. }) if errno == libc::ENOENT => {
                return Err(KernelNbdError::NoDriver);
            }
            other => other?,
        };
        this.family = reply
            .as_ref()
            .and_then(|r| {
                r.attrs()
                    .get_attr_handle()
                    .get_attr_payload_as::<u16>(CtrlAttr::FamilyId.into())
                    .ok()
            })
            .ok_or_else(|| KernelNbdError::netlink("GETFAMILY reply carries no family id"))?;
        Ok(this)
    }

    /// `NBD_CMD_CONNECT`: binds `c.sockets` to a device and starts it. Returns the device
    /// index the kernel chose (or was told), from the reply's `NBD_ATTR_INDEX`.
    pub fn connect(&mut self, c: &Connect<'_>) -> Result<u32, KernelNbdError> {
        let reply = self.transact(self.family, "CONNECT", connect_msg(c)?)?;
        reply
            .as_ref()
            .and_then(|r| {
                r.attrs()
                    .get_attr_handle()
                    .get_attr_payload_as::<u32>(NBD_ATTR_INDEX)
                    .ok()
            })
            .ok_or_else(|| KernelNbdError::netlink("CONNECT reply carries no NBD_ATTR_INDEX"))
    }

    /// `NBD_CMD_RECONFIGURE`: hands new sockets to a device whose old ones died (daemon
    /// restart), each replacing one dead socket. `EINVAL` when no device has that index or it
    /// is not configured. Beware: when no dead socket is left, the kernel (in every version of
    /// `nbd_genl_reconfigure` checked) turns its internal `ENOSPC` into success and just drops
    /// the extra socket, so `Ok` does not prove it was taken; the peer end of a dropped one
    /// reads EOF once the caller closes its copy.
    /// A timeout of 0 sends nothing, which keeps the device's current value. A device connected
    /// with a backend identifier takes new sockets only with the same `backend_id` (Linux 6.1
    /// answers `EINVAL`, "must specify backend", without it).
    pub fn reconfigure(
        &mut self,
        index: u32,
        sockets: &[BorrowedFd<'_>],
        timeout_secs: u64,
        dead_conn_timeout_secs: u64,
        backend_id: &str,
    ) -> Result<(), KernelNbdError> {
        let msg = reconfigure_msg(
            index,
            sockets,
            timeout_secs,
            dead_conn_timeout_secs,
            backend_id,
        )?;
        self.transact(self.family, "RECONFIGURE", msg)?;
        Ok(())
    }

    /// `NBD_CMD_DISCONNECT`: sends `NBD_CMD_DISC` to the server and shuts the device's sockets
    /// down. `EINVAL` when no device has that index.
    pub fn disconnect(&mut self, index: u32) -> Result<(), KernelNbdError> {
        let msg = genl(
            NBD_CMD_DISCONNECT,
            FAMILY_VERSION,
            vec![attr(NBD_ATTR_INDEX, index)?],
        )?;
        self.transact(self.family, "DISCONNECT", msg)?;
        Ok(())
    }

    /// `NBD_CMD_STATUS` for one device: whether it is configured ("connected" in the kernel's
    /// words, i.e. holds a configuration, even while its sockets are dead). A device that does
    /// not exist is reported as not connected, as the kernel does (an empty device list).
    pub fn status(&mut self, index: u32) -> Result<bool, KernelNbdError> {
        let msg = genl(
            NBD_CMD_STATUS,
            FAMILY_VERSION,
            vec![attr(NBD_ATTR_INDEX, index)?],
        )?;
        let Some(reply) = self.transact(self.family, "STATUS", msg)? else {
            return Err(KernelNbdError::netlink("STATUS got no reply"));
        };
        let top = reply.attrs().get_attr_handle();
        let Ok(list) = top.get_nested_attributes::<u16>(NBD_ATTR_DEVICE_LIST) else {
            return Ok(false);
        };
        for item in list.iter() {
            if *item.nla_type().nla_type() != NBD_DEVICE_ITEM {
                continue;
            }
            let dev = item
                .get_attr_handle::<u16>()
                .map_err(KernelNbdError::netlink)?;
            if dev.get_attr_payload_as::<u32>(NBD_DEVICE_INDEX).ok() == Some(index) {
                let connected = dev
                    .get_attr_payload_as::<u8>(NBD_DEVICE_CONNECTED)
                    .map_err(KernelNbdError::netlink)?;
                return Ok(connected != 0);
            }
        }
        Ok(false)
    }

    /// Sends one request and reads up to its ACK: `Ok(Some(reply))` when the kernel sent a
    /// message before the ACK, `Ok(None)` for a bare ACK, `Kernel` for an error answer.
    fn transact(
        &mut self,
        nl_type: u16,
        cmd: &'static str,
        payload: GenlMsg,
    ) -> Result<Option<GenlMsg>, KernelNbdError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = request(nl_type, seq, self.sock.pid(), payload)?;
        self.sock.send(&msg).map_err(KernelNbdError::netlink)?;

        let mut reply = None;
        loop {
            // Payloads are read as raw bytes first, so that an error answer (which echoes our
            // request) is never at the mercy of re-parsing that echo.
            let (msgs, _) = self
                .sock
                .recv::<u16, Buffer>()
                .map_err(KernelNbdError::netlink)?;
            for m in msgs {
                let m = m.map_err(KernelNbdError::netlink)?;
                // Leftovers of an earlier request that failed half-way carry an older seq.
                if *m.nl_seq() != seq {
                    continue;
                }
                match m.nl_payload() {
                    NlPayload::Ack(_) => return Ok(reply),
                    NlPayload::Err(e) => {
                        return Err(KernelNbdError::Kernel {
                            cmd,
                            errno: e.error().saturating_neg(),
                        });
                    }
                    NlPayload::Payload(bytes) => {
                        let len = bytes.len();
                        let parsed =
                            GenlMsg::from_bytes_with_input(&mut Cursor::new(bytes.as_ref()), len)
                                .map_err(KernelNbdError::netlink)?;
                        reply = Some(parsed);
                    }
                    NlPayload::DumpExtAck(_) | NlPayload::Empty => {}
                }
            }
        }
    }
}

/// One attribute whose payload neli serializes (integers in host order, `&str` with its NUL).
fn attr<P: Size + ToBytes>(ty: u16, payload: P) -> Result<Nlattr<u16, Buffer>, KernelNbdError> {
    NlattrBuilder::default()
        .nla_type(
            AttrTypeBuilder::default()
                .nla_type(ty)
                .build()
                .map_err(KernelNbdError::netlink)?,
        )
        .nla_payload(payload)
        .build()
        .map_err(KernelNbdError::netlink)
}

/// `NBD_ATTR_SOCKETS { NBD_SOCK_ITEM { NBD_SOCK_FD }... }`. The fds are numbers in *this*
/// process: the kernel resolves them while handling the request, in the sender's context.
fn sockets_attr(sockets: &[BorrowedFd<'_>]) -> Result<Nlattr<u16, Buffer>, KernelNbdError> {
    let mut list = attr(NBD_ATTR_SOCKETS, Vec::<u8>::new())?;
    for fd in sockets {
        // A BorrowedFd is never negative; the kernel reads it back as `(int)nla_get_u32`.
        let item = attr(NBD_SOCK_ITEM, Vec::<u8>::new())?
            .nest(&attr(NBD_SOCK_FD, fd.as_raw_fd() as u32)?)
            .map_err(KernelNbdError::netlink)?;
        list = list.nest(&item).map_err(KernelNbdError::netlink)?;
    }
    Ok(list)
}

fn genl(cmd: u8, version: u8, attrs: Vec<Nlattr<u16, Buffer>>) -> Result<GenlMsg, KernelNbdError> {
    GenlmsghdrBuilder::default()
        .cmd(cmd)
        .version(version)
        .attrs(attrs.into_iter().collect::<GenlBuffer<_, _>>())
        .build()
        .map_err(KernelNbdError::netlink)
}

fn request(
    nl_type: u16,
    seq: u32,
    pid: u32,
    payload: GenlMsg,
) -> Result<Nlmsghdr<u16, GenlMsg>, KernelNbdError> {
    NlmsghdrBuilder::default()
        .nl_type(nl_type)
        // ACK even on success, so every request ends with an answer to wait for.
        .nl_flags(NlmF::REQUEST | NlmF::ACK)
        .nl_seq(seq)
        .nl_pid(pid)
        .nl_payload(NlPayload::Payload(payload))
        .build()
        .map_err(KernelNbdError::netlink)
}

/// The CONNECT request. Attributes go in only when meaningful: the kernel treats a present
/// attribute as an order (e.g. an index of 0 means nbd0, not "any").
fn connect_msg(c: &Connect<'_>) -> Result<GenlMsg, KernelNbdError> {
    let mut attrs = Vec::new();
    if let Some(index) = c.index {
        attrs.push(attr(NBD_ATTR_INDEX, index)?);
    }
    // The kernel refuses CONNECT without a size (EINVAL), so it always goes in.
    attrs.push(attr(NBD_ATTR_SIZE_BYTES, c.size_bytes)?);
    if c.block_size > 0 {
        attrs.push(attr(NBD_ATTR_BLOCK_SIZE_BYTES, c.block_size)?);
    }
    if c.timeout_secs > 0 {
        attrs.push(attr(NBD_ATTR_TIMEOUT, c.timeout_secs)?);
    }
    attrs.push(attr(NBD_ATTR_SERVER_FLAGS, c.server_flags)?);
    attrs.push(attr(NBD_ATTR_CLIENT_FLAGS, c.client_flags)?);
    if !c.sockets.is_empty() {
        // Without sockets the kernel answers EINVAL, which is the right report.
        attrs.push(sockets_attr(c.sockets)?);
    }
    if c.dead_conn_timeout_secs > 0 {
        attrs.push(attr(NBD_ATTR_DEAD_CONN_TIMEOUT, c.dead_conn_timeout_secs)?);
    }
    if !c.backend_id.is_empty() {
        attrs.push(attr(NBD_ATTR_BACKEND_IDENTIFIER, c.backend_id)?);
    }
    genl(NBD_CMD_CONNECT, FAMILY_VERSION, attrs)
}

/// The RECONFIGURE request. Client flags are left out on purpose: the kernel treats their
/// presence as "replace all", and a restart must not change them.
fn reconfigure_msg(
    index: u32,
    sockets: &[BorrowedFd<'_>],
    timeout_secs: u64,
    dead_conn_timeout_secs: u64,
    backend_id: &str,
) -> Result<GenlMsg, KernelNbdError> {
    let mut attrs = vec![attr(NBD_ATTR_INDEX, index)?];
    if !backend_id.is_empty() {
        attrs.push(attr(NBD_ATTR_BACKEND_IDENTIFIER, backend_id)?);
    }
    if timeout_secs > 0 {
        attrs.push(attr(NBD_ATTR_TIMEOUT, timeout_secs)?);
    }
    if dead_conn_timeout_secs > 0 {
        attrs.push(attr(NBD_ATTR_DEAD_CONN_TIMEOUT, dead_conn_timeout_secs)?);
    }
    if !sockets.is_empty() {
        attrs.push(sockets_attr(sockets)?);
    }
    genl(NBD_CMD_RECONFIGURE, FAMILY_VERSION, attrs)
}

/// The device index whose `/sys/block/nbdN/backend` holds `id` (sysfs dir as a parameter so it
/// can be unit-tested with a temp dir). The kernel prints the identifier with a trailing
/// newline, and an empty file for a device without one, so an empty `id` never matches.
/// The lowest index wins should several match.
pub fn find_by_backend(sys_block: &Path, id: &str) -> Option<u32> {
    if id.is_empty() {
        return None;
    }
    let entries = std::fs::read_dir(sys_block).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let digits = name.to_str()?.strip_prefix("nbd")?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let index = digits.parse::<u32>().ok()?;
            let backend = std::fs::read_to_string(e.path().join("backend")).ok()?;
            (backend.strip_suffix('\n').unwrap_or(&backend) == id).then_some(index)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::proto::{FLAG_CAN_MULTI_CONN, FLAG_HAS_FLAGS, FLAG_SEND_FLUSH};
    use neli::FromBytes;
    use neli::genl::GenlAttrHandle;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn open_reports_no_driver_without_nbd_module() -> TestResult {
        // A real round trip to the kernel's genl controller. Whether the family exists is asked
        // independently through neli's own resolver, not guessed from /sys/module: a family
        // that is not netns-aware, like nbd, is invisible outside the initial network namespace
        // even with the module loaded.
        use neli::err::RouterError;
        use neli::router::synchronous::NlRouter;
        let (router, _) = NlRouter::connect(NlFamily::Generic, None, Groups::empty())?;
        let expected = match router.resolve_genl_family(FAMILY_NAME) {
            Ok(id) => Some(id),
            Err(RouterError::Nlmsgerr(e)) if *e.error() == -libc::ENOENT => None,
            Err(e) => return Err(format!("resolving {FAMILY_NAME}: {e}").into()),
        };
        match (KernelNbd::open(), expected) {
            (Err(KernelNbdError::NoDriver), None) => {}
            (Ok(k), Some(id)) => assert_eq!(k.family, id),
            (got, expected) => panic!("open() = {got:?}, family id {expected:?}"),
        }
        Ok(())
    }

    #[test]
    fn find_by_backend_matches_trimmed_identifier() -> TestResult {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        for dev in ["nbd0", "nbd3", "nbd5", "nbdx", "loop0"] {
            std::fs::create_dir(root.join(dev))?;
        }
        std::fs::write(root.join("nbd0/backend"), "other")?;
        std::fs::write(root.join("nbd3/backend"), "udrbd:r0\n")?;
        std::fs::write(root.join("nbdx/backend"), "udrbd:r0\n")?;
        std::fs::write(root.join("loop0/backend"), "udrbd:r0\n")?;
        assert_eq!(find_by_backend(root, "udrbd:r0"), Some(3));
        assert_eq!(find_by_backend(root, "other"), Some(0));
        assert_eq!(find_by_backend(root, "udrbd:r1"), None);
        assert_eq!(find_by_backend(root, ""), None);
        assert_eq!(find_by_backend(&root.join("missing"), "udrbd:r0"), None);
        Ok(())
    }

    /// Serializes a whole netlink message with neli, parses it back with neli, and returns
    /// the generic-netlink part, checking the header on the way.
    fn round_trip(msg: GenlMsg) -> Result<GenlMsg, Box<dyn std::error::Error>> {
        let nl = request(0x42, 7, 0, msg)?;
        let mut buf = Cursor::new(vec![0; nl.padded_size()]);
        nl.to_bytes(&mut buf)?;
        let bytes = buf.into_inner();
        // nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32; then genlmsghdr.
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into()?) as usize,
            bytes.len()
        );
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into()?), 0x42);
        let flags = u16::from_ne_bytes(bytes[6..8].try_into()?);
        assert_eq!(flags, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16);
        assert_eq!(bytes[17], FAMILY_VERSION);
        let back = Nlmsghdr::<u16, GenlMsg>::from_bytes(&mut Cursor::new(&bytes))?;
        back.get_payload()
            .cloned()
            .ok_or_else(|| "no payload".into())
    }

    fn types(h: &GenlAttrHandle<'_, u16>) -> Vec<u16> {
        h.iter().map(|a| *a.nla_type().nla_type()).collect()
    }

    #[test]
    fn connect_message_carries_expected_attributes() -> TestResult {
        let (a, b) = UnixStream::pair()?;
        let fds = [a.as_fd(), b.as_fd()];
        let c = Connect {
            index: Some(4),
            sockets: &fds,
            size_bytes: 1 << 30,
            block_size: 4096,
            server_flags: u64::from(FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_CAN_MULTI_CONN),
            client_flags: CFLAG_DESTROY_ON_DISCONNECT,
            timeout_secs: 30,
            dead_conn_timeout_secs: 120,
            backend_id: "udrbd:r0",
        };
        let g = round_trip(connect_msg(&c)?)?;
        assert_eq!(*g.cmd(), NBD_CMD_CONNECT);
        assert_eq!(*g.version(), FAMILY_VERSION);
        let h = g.attrs().get_attr_handle();
        assert_eq!(
            types(&h),
            [
                NBD_ATTR_INDEX,
                NBD_ATTR_SIZE_BYTES,
                NBD_ATTR_BLOCK_SIZE_BYTES,
                NBD_ATTR_TIMEOUT,
                NBD_ATTR_SERVER_FLAGS,
                NBD_ATTR_CLIENT_FLAGS,
                NBD_ATTR_SOCKETS,
                NBD_ATTR_DEAD_CONN_TIMEOUT,
                NBD_ATTR_BACKEND_IDENTIFIER,
            ]
        );
        // Sizes as the kernel's policy wants them: u32 index, u64 for the rest.
        let len = |t| h.get_attribute(t).map(|a| a.nla_payload().len());
        assert_eq!(len(NBD_ATTR_INDEX), Some(4));
        assert_eq!(len(NBD_ATTR_SIZE_BYTES), Some(8));
        assert_eq!(len(NBD_ATTR_SERVER_FLAGS), Some(8));
        assert_eq!(h.get_attr_payload_as::<u32>(NBD_ATTR_INDEX)?, 4);
        assert_eq!(h.get_attr_payload_as::<u64>(NBD_ATTR_SIZE_BYTES)?, 1 << 30);
        assert_eq!(
            h.get_attr_payload_as::<u64>(NBD_ATTR_BLOCK_SIZE_BYTES)?,
            4096
        );
        assert_eq!(h.get_attr_payload_as::<u64>(NBD_ATTR_TIMEOUT)?, 30);
        assert_eq!(h.get_attr_payload_as::<u64>(NBD_ATTR_SERVER_FLAGS)?, 0x105);
        assert_eq!(h.get_attr_payload_as::<u64>(NBD_ATTR_CLIENT_FLAGS)?, 1);
        assert_eq!(
            h.get_attr_payload_as::<u64>(NBD_ATTR_DEAD_CONN_TIMEOUT)?,
            120
        );
        // NUL-terminated, as nla_strdup expects.
        let backend = h
            .get_attribute(NBD_ATTR_BACKEND_IDENTIFIER)
            .ok_or("no backend")?;
        assert_eq!(backend.nla_payload().as_ref(), b"udrbd:r0\0");

        let socks = h.get_attribute(NBD_ATTR_SOCKETS).ok_or("no sockets")?;
        assert!(*socks.nla_type().nla_nested(), "NLA_F_NESTED set");
        let items = socks.get_attr_handle::<u16>()?;
        assert_eq!(types(&items), [NBD_SOCK_ITEM, NBD_SOCK_ITEM]);
        let mut got = Vec::new();
        for item in items.iter() {
            got.push(
                item.get_attr_handle::<u16>()?
                    .get_attr_payload_as::<u32>(NBD_SOCK_FD)?,
            );
        }
        assert_eq!(got, [a.as_raw_fd() as u32, b.as_raw_fd() as u32]);
        Ok(())
    }

    #[test]
    fn connect_message_omits_unset_attributes() -> TestResult {
        let (a, _b) = UnixStream::pair()?;
        let fds = [a.as_fd()];
        let c = Connect {
            index: None,
            sockets: &fds,
            size_bytes: 512,
            block_size: 0,
            server_flags: u64::from(FLAG_HAS_FLAGS),
            client_flags: 0,
            timeout_secs: 0,
            dead_conn_timeout_secs: 0,
            backend_id: "",
        };
        let g = round_trip(connect_msg(&c)?)?;
        assert_eq!(
            types(&g.attrs().get_attr_handle()),
            [
                NBD_ATTR_SIZE_BYTES,
                NBD_ATTR_SERVER_FLAGS,
                NBD_ATTR_CLIENT_FLAGS,
                NBD_ATTR_SOCKETS,
            ]
        );
        Ok(())
    }

    #[test]
    fn reconfigure_message_carries_index_backend_and_sockets_only_when_set() -> TestResult {
        let (a, _b) = UnixStream::pair()?;
        let g = round_trip(reconfigure_msg(2, &[a.as_fd()], 0, 60, "")?)?;
        assert_eq!(*g.cmd(), NBD_CMD_RECONFIGURE);
        let h = g.attrs().get_attr_handle();
        assert_eq!(
            types(&h),
            [NBD_ATTR_INDEX, NBD_ATTR_DEAD_CONN_TIMEOUT, NBD_ATTR_SOCKETS]
        );
        assert_eq!(h.get_attr_payload_as::<u32>(NBD_ATTR_INDEX)?, 2);
        // The backend identifier a device was connected with comes along (the kernel
        // refuses a reconfigure without it).
        let g = round_trip(reconfigure_msg(2, &[a.as_fd()], 0, 60, "udrbd:r0/0@/run")?)?;
        assert_eq!(
            types(&g.attrs().get_attr_handle()),
            [
                NBD_ATTR_INDEX,
                NBD_ATTR_BACKEND_IDENTIFIER,
                NBD_ATTR_DEAD_CONN_TIMEOUT,
                NBD_ATTR_SOCKETS
            ]
        );
        Ok(())
    }
}
