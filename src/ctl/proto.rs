//! Control-socket messages. Field names are part of the interface that `drbdadm --json`, the
//! Pacemaker agent and tests read: add fields, never rename them.

use crate::config::{Fencing, Resolved};
use crate::repl::{ConnState, DiskState, ReplState, Role};
use crate::types::MetaDisk;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// What the daemon runs of a resource: derived from the [`Resolved`] resource drbdadm sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSpec {
    pub name: String,
    /// This node's `on` section name.
    pub node_name: String,
    pub node_id: u8,
    /// From `device /dev/drbdN` or `minor N`.
    pub minor: Option<u32>,
    /// Backing device; None for a diskless client.
    pub disk: Option<String>,
    pub meta_disk: MetaDisk,
    pub peers: Vec<PeerSpec>,
    pub auto_promote: bool,
    /// `fencing dont-care` on every connection.
    pub fencing_dont_care: bool,
    /// udrbd's `nbd-listen`: serve the export over TCP here too.
    pub nbd_listen: Option<SocketAddr>,
}

/// A configured peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    pub name: String,
    pub node_id: u8,
    pub address: Option<SocketAddr>,
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
        Ok(ResourceSpec {
            name: r.name.clone(),
            node_name: r.me.name.clone(),
            node_id: r.me.node_id.0,
            minor: Some(vol.minor),
            disk: vol.disk.clone(),
            meta_disk: vol.meta_disk.clone(),
            peers: r
                .peers
                .iter()
                .map(|p| PeerSpec {
                    name: p.name.clone(),
                    node_id: p.node_id.0,
                    address: p.address,
                })
                .collect(),
            auto_promote: r.options.auto_promote,
            fencing_dont_care: r.peers.iter().all(|p| p.net.fencing == Fencing::DontCare),
            nbd_listen: r.me.nbd_listen,
        })
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
    /// Demote, detach and forget the resource.
    Down {
        resource: String,
    },
    Attach {
        resource: String,
    },
    Detach {
        resource: String,
    },
    Primary {
        resource: String,
        force: bool,
    },
    Secondary {
        resource: String,
    },
    NewCurrentUuid {
        resource: String,
        clear_bitmap: bool,
    },
    /// One resource, or all with `None`.
    Status {
        resource: Option<String>,
    },
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok,
    Status {
        resources: Vec<ResourceView>,
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
    pub upper_pending: u64,
    pub lower_pending: u64,
    /// Current generation UUID, hex.
    pub current_uuid: String,
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
}
