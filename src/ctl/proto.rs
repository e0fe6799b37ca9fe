//! Control-socket messages. Field names are part of the interface that `drbdadm --json`, the
//! Pacemaker agent and tests read: add fields, never rename them.

use crate::config::{NetOptions, PeerDeviceOptions, Resolved};
use crate::repl::{ConnState, DiskState, ReplState, Role};
use crate::types::MetaDisk;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// What the daemon runs of a resource: derived from the [`Resolved`] resource drbdadm sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceSpec {
    pub name: String,
    /// This node's `on` section name.
    pub node_name: String,
    pub node_id: u8,
    /// From `device /dev/drbdN` or `minor N`.
    pub minor: Option<u32>,
    /// The config's device path when it names one (`device /dev/drbd_r0 minor 0;`): the
    /// kernel block device gets it as a link besides `/dev/drbdN`.
    #[serde(default)]
    pub device: Option<String>,
    /// The `/dev/drbd/by-res/...` link DRBD's udev rules make, without `/dev/`
    /// ([`crate::config::Volume::by_res`]).
    #[serde(default)]
    pub by_res: String,
    /// Backing device; None for a diskless client.
    pub disk: Option<String>,
    pub meta_disk: MetaDisk,
    pub peers: Vec<PeerSpec>,
    pub auto_promote: bool,
    /// `options { auto-promote-timeout }`, in tenths of a second: how long an opener waits
    /// for a promotion that is refused only for now (a handshake in progress).
    #[serde(default = "auto_promote_timeout")]
    pub auto_promote_timeout: u32,
    /// `fencing dont-care` on every connection (kept for readers of older output; the policy
    /// the engine runs is each peer's `net.fencing`).
    pub fencing_dont_care: bool,
    /// udrbd's `nbd-listen`: serve the export over TCP here too.
    pub nbd_listen: Option<SocketAddr>,
    /// udrbd's `nbd-tls*` and `nbd-allow` (the `options { }` they come from).
    #[serde(default)]
    pub nbd_access: crate::config::ResourceOptions,
    /// `disk { on-io-error }` of the volume.
    #[serde(default)]
    pub on_io_error: crate::config::OnIoError,
    /// `disk { disk-flushes }`: flush the backing device for a peer's barrier.
    #[serde(default = "yes")]
    pub disk_flushes: bool,
    /// `disk { md-flushes }`: flush the metadata device after each metadata write.
    #[serde(default = "yes")]
    pub md_flushes: bool,
    /// `disk { size }` in bytes: the device is at most this large (0: no limit).
    #[serde(default)]
    pub disk_size: u64,
    /// `handlers { }`: DRBD's handler name (`fence-peer`, `split-brain`, ...) -> shell command.
    #[serde(default)]
    pub handlers: BTreeMap<String, String>,
    /// The file that defines the resource: handlers see it as `DRBD_CONF`.
    #[serde(default)]
    pub config_file: String,
}

/// DRBD's default `auto-promote-timeout` (2 s).
fn auto_promote_timeout() -> u32 {
    20
}

/// A configured peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerSpec {
    pub name: String,
    pub node_id: u8,
    /// Where the peer listens.
    pub address: Option<SocketAddr>,
    /// Where this node listens for the peer (its `address`).
    pub local_address: Option<SocketAddr>,
    /// Every path to the peer, the one above first; each is tried.
    #[serde(default)]
    pub paths: Vec<crate::config::NetPath>,
    /// The connection's effective `net { }` options.
    pub net: NetOptions,
    /// The peer device options of volume 0 (resync controller).
    pub sync: PeerDeviceOptions,
    /// The peer is a diskless client (`disk none;` in its `on` section).
    #[serde(default)]
    pub diskless: bool,
}

impl PeerSpec {
    /// Every path to the peer: the configured `paths`, or the one of `local_address` and
    /// `address` (a spec from before paths were kept).
    pub fn net_paths(&self) -> Vec<crate::config::NetPath> {
        if !self.paths.is_empty() {
            return self.paths.clone();
        }
        match (self.local_address, self.address) {
            (Some(local), Some(peer)) => vec![crate::config::NetPath { local, peer }],
            _ => Vec::new(),
        }
    }
}

impl ResourceSpec {
    /// The daemon's view of a resolved resource. This build serves one volume per resource.
    pub fn from_resolved(r: &Resolved) -> Result<ResourceSpec, String> {
        let [vol] = r.volumes.as_slice() else {
            return Err(format!(
                "{}: has {} volumes; this udrbd build serves exactly one volume per resource",
                r.name,
                r.volumes.len()
            ));
        };
        for p in &r.peers {
            if p.net.allow_two_primaries && p.net.protocol != crate::config::Protocol::C {
                // drbdsetup's ERR_NOT_PROTO_C: concurrent writes of two Primaries are only
                // resolved with protocol C's write acks.
                return Err(format!(
                    "{}: Failure: (139) Protocol C required (allow-two-primaries in the \
                     connection to {} runs protocol {:?}; set `protocol C;`)",
                    r.name, p.name, p.net.protocol
                ));
            }
            for (what, alg) in [
                ("verify-alg", &p.net.verify_alg),
                ("csums-alg", &p.net.csums_alg),
                ("data-integrity-alg", &p.net.data_integrity_alg),
            ] {
                if let Some(a) = alg
                    && crate::repl::digest::DigestAlg::from_name(a).is_none()
                {
                    return Err(format!(
                        "{}: {what} '{a}' (connection to {}) is not supported; use one of {}",
                        r.name,
                        p.name,
                        crate::repl::digest::KNOWN
                    ));
                }
            }
        }
        Ok(ResourceSpec {
            name: r.name.clone(),
            node_name: r.me.name.clone(),
            node_id: r.me.node_id.0,
            minor: Some(vol.minor),
            device: vol.device.clone(),
            by_res: vol.by_res.clone(),
            disk: vol.disk.clone(),
            meta_disk: vol.meta_disk.clone(),
            peers: r
                .peers
                .iter()
                .map(|p| PeerSpec {
                    name: p.name.clone(),
                    node_id: p.node_id.0,
                    address: p.address,
                    local_address: p.local_address,
                    paths: p.paths.clone(),
                    net: p.net.clone(),
                    sync: p
                        .volumes
                        .iter()
                        .find(|v| v.number == vol.number)
                        .map(|v| v.opts.clone())
                        .unwrap_or_default(),
                    diskless: p.diskless,
                })
                .collect(),
            auto_promote: r.options.auto_promote,
            auto_promote_timeout: r.options.auto_promote_timeout,
            fencing_dont_care: r
                .peers
                .iter()
                .all(|p| p.net.fencing == crate::config::Fencing::DontCare),
            nbd_listen: r.me.nbd_listen,
            nbd_access: r.options.clone(),
            on_io_error: vol.disk_opts.on_io_error,
            disk_flushes: vol.disk_opts.disk_flushes,
            disk_size: vol.disk_opts.size * crate::types::SECTOR_SIZE,
            md_flushes: vol.disk_opts.md_flushes,
            handlers: r.handlers.clone(),
            config_file: r.config_file.clone(),
        })
    }

    /// Equal in everything the data path runs. DRBD reads `handlers { }` from the config file
    /// each time it calls one, so a changed handler (or the same file named by another path)
    /// is not "a different configuration" for a second `up`.
    pub fn same_except_handlers(&self, other: &ResourceSpec) -> bool {
        let strip = |s: &ResourceSpec| ResourceSpec {
            handlers: BTreeMap::new(),
            config_file: String::new(),
            ..s.clone()
        };
        strip(self) == strip(other)
    }
}

/// A request from drbdadm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Create the resource (if new) and attach its disk.
    Up {
        resource: Box<Resolved>,
    },
    /// `drbdadm adjust`: bring the resource to `resource` (up when it is not), answered with
    /// the steps taken ([`Response::Adjusted`]); `dry_run`: only say what they would be.
    Adjust {
        resource: Box<Resolved>,
        #[serde(default)]
        dry_run: bool,
    },
    /// Demote, detach and forget the resource.
    Down {
        resource: String,
    },
    Attach {
        resource: String,
    },
    /// `drbdadm detach`; `force` (`--force`): the disk goes at once, without waiting for the
    /// requests at it (answered before the disk is released).
    Detach {
        resource: String,
        #[serde(default)]
        force: bool,
    },
    /// `drbdsetup forget-peer RES PEER_NODE_ID`: drop what the metadata holds of a peer whose
    /// connection is StandAlone (its bitmap UUID and flags; its bitmap becomes all set).
    ForgetPeer {
        resource: String,
        peer_node_id: u32,
    },
    /// `drbdsetup get-gi`/`show-gi RES PEER_NODE_ID VOLUME`: the generation identifiers the
    /// daemon holds, answered with [`Response::Gi`].
    GetGi {
        resource: String,
        peer_node_id: u32,
        #[serde(default)]
        volume: u32,
    },
    Primary {
        resource: String,
        force: bool,
    },
    Secondary {
        resource: String,
        /// `--force`: demote although NBD clients hold the device open.
        #[serde(default)]
        force: bool,
    },
    NewCurrentUuid {
        resource: String,
        clear_bitmap: bool,
    },
    /// Start connecting to the peers (`drbdadm connect`). `discard_my_data` is accepted for
    /// the split-brain recovery of a later build.
    Connect {
        resource: String,
        #[serde(default)]
        discard_my_data: bool,
        /// `--tentative`: only log what the connection would do, then stay StandAlone.
        #[serde(default)]
        tentative: bool,
    },
    /// Close the peer links and stay StandAlone.
    Disconnect {
        resource: String,
        /// `--force`: close at once, without the peer's agreement.
        #[serde(default)]
        force: bool,
    },
    /// `reset_bitmap: false` (`--reset-bitmap=no`): resync only the marked blocks.
    Invalidate {
        resource: String,
        #[serde(default = "yes")]
        reset_bitmap: bool,
    },
    InvalidateRemote {
        resource: String,
        #[serde(default = "yes")]
        reset_bitmap: bool,
    },
    /// Online verify from sector `start` to `stop` (the end when absent).
    Verify {
        resource: String,
        #[serde(default)]
        start: u64,
        #[serde(default)]
        stop: Option<u64>,
    },
    PauseSync {
        resource: String,
    },
    ResumeSync {
        resource: String,
    },
    /// `drbdadm resize [--assume-clean]`: the backing devices grew.
    Resize {
        resource: String,
        #[serde(default)]
        assume_clean: bool,
        /// `--size`: the device's size in bytes (0 or absent: as large as the disks allow).
        #[serde(default)]
        size_bytes: u64,
    },
    /// Mark this node's data Outdated (`drbdadm outdate`).
    Outdate {
        resource: String,
    },
    /// Lift `suspend-io` and the I/O freeze of resource-and-stonith (`drbdadm resume-io`).
    ResumeIo {
        resource: String,
    },
    /// Queue new application I/O until `resume-io` (`drbdadm suspend-io`).
    SuspendIo {
        resource: String,
    },
    /// What a resource runs (all with `None`), for `drbdsetup show`.
    Show {
        #[serde(default)]
        resource: Option<String>,
    },
    /// One resource, or all with `None`.
    Status {
        resource: Option<String>,
    },
    /// `drbdsetup events2`: the daemon answers with a stream of [`Event`] lines (or one error
    /// [`Response`]) until the client closes the connection. `statistics` adds a snapshot every
    /// second, so counters and resync progress show between state changes.
    Events {
        resource: Option<String>,
        #[serde(default)]
        statistics: bool,
    },
}

/// One line of an event stream (`Request::Events`). Tagged `event`, so a reader tells it from
/// the error [`Response`] (tagged `result`) the daemon sends instead when it refuses the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Every selected resource, replacing what the reader knew: first the initial dump
    /// (`initial`), later again after the reader fell behind or on a statistics tick.
    Snapshot {
        resources: Vec<ResourceView>,
        initial: bool,
    },
    /// A resource's state right after a change (a new resource: `up`).
    State { resource: ResourceView },
    /// The resource went down.
    Destroy { name: String },
    /// A handler (DRBD's "helper") was started, or (`status` set) it finished.
    Helper(HelperEvent),
}

/// A handler run, as DRBD's `call helper` / `response helper` events show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperEvent {
    pub name: String,
    /// The connection it concerns (fence-peer, before-resync-target, ...).
    pub peer_node_id: Option<u8>,
    pub conn_name: Option<String>,
    /// The device it concerns (resync and split-brain handlers, local-io-error).
    pub volume: Option<u32>,
    pub minor: Option<u32>,
    pub helper: String,
    /// None for the call; the exit code for the response.
    pub status: Option<i32>,
}

/// What an event-stream reader gets per line: an event, or the refusal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamLine {
    Event(Event),
    Response(Response),
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok,
    /// Done, with a line the operator should read (drbdadm prints it on stderr): `up` when
    /// the kernel block device could not be made.
    Notice {
        message: String,
    },
    /// The steps an adjust took (or would take), as drbdsetup commands.
    Adjusted {
        steps: Vec<String>,
        /// Lines the operator should read (drbdadm prints them on stderr), as with
        /// [`Response::Notice`].
        #[serde(default)]
        notes: Vec<String>,
    },
    /// What the resources run (`Request::Show`).
    Show {
        resources: Vec<ResourceSpec>,
    },
    Status {
        resources: Vec<ResourceView>,
    },
    /// The generation identifiers of one peer device (`Request::GetGi`).
    Gi {
        gi: crate::meta::text::Gi,
    },
    /// `code` is the exit code drbdadm should use; `message` is DRBD's wording.
    Error {
        code: i32,
        message: String,
    },
}

/// A resource in status output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    pub name: String,
    pub node_id: u8,
    pub role: Role,
    pub volumes: Vec<VolumeView>,
    pub connections: Vec<ConnectionView>,
    /// Why I/O is suspended, DRBD's words (`fencing`); None when it is not.
    #[serde(default)]
    pub suspended: Option<String>,
    /// Requests of the clients that hold the device open fail: it was demoted under them
    /// (`secondary --force`), DRBD's `force-io-failures:yes`.
    #[serde(default)]
    pub force_io_failures: bool,
    /// How writes are ordered on the backing device: `flush` (disk-flushes yes) or `none`
    /// (DRBD's `write-ordering:`, shown by `status --verbose --statistics`).
    #[serde(default)]
    pub write_ordering: String,
}

/// A volume (device) in status output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeView {
    pub volume: u32,
    pub minor: Option<u32>,
    pub disk: DiskState,
    /// Held open by an NBD client.
    pub open: bool,
    pub size_kib: u64,
    pub read_kib: u64,
    pub written_kib: u64,
    pub al_writes: u64,
    pub bm_writes: u64,
    /// Two primaries: peer writes found concurrent with local ones.
    #[serde(default)]
    pub concurrent_writes: u64,
    pub upper_pending: u64,
    pub lower_pending: u64,
    /// Current generation UUID, hex.
    pub current_uuid: String,
    /// The configured backing device; None for a diskless client (`client:yes`).
    #[serde(default)]
    pub backing_dev: Option<String>,
    /// Quorum (DRBD's `quorum:`); always yes until quorum is implemented.
    #[serde(default = "yes")]
    pub quorum: bool,
    /// Activity-log updates are suspended (DRBD's `al-suspended:`).
    #[serde(default)]
    pub al_suspended: bool,
    /// New application requests wait (I/O suspended or frozen): DRBD's `blocked:upper`.
    #[serde(default)]
    pub blocked_upper: bool,
}

/// One network path of a connection in status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathView {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The link runs on this path.
    pub established: bool,
}

/// A connection (and its one peer device) in status output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub name: String,
    pub node_id: u8,
    pub connection: ConnState,
    pub role: Role,
    pub replication: ReplState,
    pub peer_disk: DiskState,
    pub out_of_sync_kib: u64,
    /// While a resync runs: DRBD's `done:` in hundredths of a percent (4567 = 45.67).
    #[serde(default)]
    pub done_centi: Option<u32>,
    /// While a resync runs: KiB/s over the last second, and seconds to go.
    #[serde(default)]
    pub resync_rate_kib: Option<u64>,
    #[serde(default)]
    pub resync_eta_s: Option<u64>,
    /// `resync-suspended:` — "user" (pause-sync here), "peer" (there), or both.
    #[serde(default)]
    pub resync_suspended: Option<String>,
    #[serde(default)]
    pub received_kib: u64,
    #[serde(default)]
    pub sent_kib: u64,
    /// Requests sent to the peer and not yet answered.
    #[serde(default)]
    pub pending: u64,
    /// Requests of the peer's not yet answered here (`unacked:`).
    #[serde(default)]
    pub unacked: u64,
    /// Every configured path, and whether the link runs on it.
    #[serde(default)]
    pub paths: Vec<PathView>,
    /// The path's addresses (this node's, the peer's), as configured.
    #[serde(default)]
    pub local_address: Option<SocketAddr>,
    #[serde(default)]
    pub peer_address: Option<SocketAddr>,
    /// The link runs over TLS (`tls yes`).
    #[serde(default)]
    pub tls: bool,
    /// The data stream's send queue is above its high-water mark (DRBD's `congested:`).
    #[serde(default)]
    pub congested: bool,
    /// Sectors of application writes sent and not yet acknowledged (`ap-in-flight:`), and
    /// of resync data requested and not yet written (`rs-in-flight:`).
    #[serde(default)]
    pub ap_in_flight_sectors: u64,
    #[serde(default)]
    pub rs_in_flight_sectors: u64,
}

fn yes() -> bool {
    true
}
