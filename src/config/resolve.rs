//! What one node runs for one resource: picks the host that is "me", follows inheritance
//! (common -> resource -> connection / volume / host) and types every option.

use super::addr::{Addr, system_if_index};
use super::error::{ConfigError, Pos};
use super::model::*;
use super::options::Value;
use super::typed::*;
use super::validate::{conn_address, effective_volumes, peer_address};
use crate::types::{MetaDisk, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// How to find "me": `explicit` (from `--node NAME` / `UDRBD_NODE`) wins; else the `on` section
/// named `hostname` (exactly, else by drbdadm's [`hostnames_equal`]: `node1` is
/// `on node1.example.com`); else a `floating` section whose address `is_local`.
pub struct HostQuery<'a> {
    pub explicit: Option<&'a str>,
    pub hostname: &'a str,
    pub is_local: &'a dyn Fn(IpAddr) -> bool,
}

impl std::fmt::Debug for HostQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostQuery")
            .field("explicit", &self.explicit)
            .field("hostname", &self.hostname)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub node_id: NodeId,
    pub address: Option<SocketAddr>,
    /// udrbd: where to serve the resource over NBD/TCP (`nbd-listen`), if anywhere.
    pub nbd_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerVolume {
    pub number: u32,
    pub opts: PeerDeviceOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    pub node_id: NodeId,
    /// Where the peer listens.
    pub address: Option<SocketAddr>,
    /// The address this node uses towards this peer (its `on` address, or the connection's).
    pub local_address: Option<SocketAddr>,
    /// Every `path` of the connection (this node's address, the peer's), the one above
    /// first; each is tried (DRBD 9's multiple paths).
    #[serde(default)]
    pub paths: Vec<NetPath>,
    pub net: NetOptions,
    pub volumes: Vec<PeerVolume>,
    /// The peer is configured without a disk (`disk none;` for all its volumes): a diskless
    /// client, which is not a quorum voter.
    #[serde(default)]
    pub diskless: bool,
}

/// One network path of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPath {
    /// Where this node listens and dials from.
    pub local: SocketAddr,
    /// Where the peer listens.
    pub peer: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub number: u32,
    pub minor: u32,
    /// `/dev/drbdN` when the config names one.
    pub device: Option<String>,
    /// `None` = `disk none;` (diskless).
    pub disk: Option<String>,
    /// Meaningless when diskless (then `Internal`).
    pub meta_disk: MetaDisk,
    pub disk_opts: DiskOptions,
    /// The link DRBD's udev rules make for it under `/dev` (drbdadm sh-udev's
    /// `SYMLINK_BY_RES`): `drbd/by-res/RES` for a volume written without a `volume` section,
    /// unless `global { udev-always-use-vnr; }`, else `drbd/by-res/RES/VNR`.
    #[serde(default)]
    pub by_res: String,
}

/// One resource as this node runs it. Sent to the daemon as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    pub name: String,
    pub me: Host,
    pub peers: Vec<Peer>,
    pub volumes: Vec<Volume>,
    /// Resource-level effective net options (a peer's own are in `Peer::net`).
    pub net: NetOptions,
    pub options: ResourceOptions,
    pub startup: StartupOptions,
    pub handlers: BTreeMap<String, String>,
    /// The file that defines the resource.
    pub config_file: String,
}

fn choose_host<'r>(res: &'r Resource, me: &HostQuery<'_>) -> Result<&'r HostCfg, ConfigError> {
    let names = || {
        res.hosts
            .iter()
            .filter(|h| !h.floating)
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(n) = me.explicit {
        return res.host(n).ok_or_else(|| {
            res.pos.err(format!(
                "{}: no host section named '{n}' (from --node or UDRBD_NODE); on sections: {}",
                res.name,
                names()
            ))
        });
    }
    let on = || res.hosts.iter().filter(|h| !h.floating);
    if let Some(h) = on()
        .find(|h| h.name == me.hostname)
        .or_else(|| on().find(|h| hostnames_equal(&h.name, me.hostname)))
    {
        return Ok(h);
    }
    if let Some(h) = res
        .hosts
        .iter()
        .find(|h| h.floating && h.address.as_ref().is_some_and(|a| (me.is_local)(a.ip())))
    {
        return Ok(h);
    }
    Err(res.pos.err(format!(
        "{}: no host section matches this node ('{}'); on sections: {}. Use --node NAME or UDRBD_NODE to choose one.",
        res.name,
        me.hostname,
        names()
    )))
}

/// One connection from me to a peer, as the pieces resolve needs.
struct Link<'r> {
    peer: &'r HostCfg,
    peer_addr: Option<Addr>,
    my_addr: Option<Addr>,
    /// The `path`s of an explicit connection: (this node's address, the peer's).
    paths: Vec<(Option<Addr>, Option<Addr>)>,
    net: OptBlock,
    disk: OptBlock,
    volumes: Vec<(u32, OptBlock)>,
}

fn links<'r>(res: &'r Resource, me: &HostCfg) -> Vec<Link<'r>> {
    let mut out: Vec<Link<'r>> = Vec::new();
    let plain = |peer: &'r HostCfg, net: OptBlock| Link {
        peer,
        peer_addr: peer.address.clone(),
        my_addr: me.address.clone(),
        paths: Vec::new(),
        net,
        disk: OptBlock::default(),
        volumes: Vec::new(),
    };
    for c in &res.connections {
        let group = if c.hosts.is_empty() {
            c.paths.first()
        } else {
            Some(&c.hosts)
        };
        let Some(group) = group else { continue };
        // A `host` line names its host exactly or by `hostnames_equal` (`Resource::host`).
        let is_me = |ch: &ConnHost| res.host(&ch.name).is_some_and(|h| h.name == me.name);
        let Some(mine) = group.iter().find(|h| is_me(h)) else {
            continue;
        };
        let Some(other) = group.iter().find(|h| !is_me(h)) else {
            continue;
        };
        let Some(peer) = res.host(&other.name) else {
            continue;
        };
        let paths = c
            .paths
            .iter()
            .filter_map(|g| {
                let mine = g.iter().find(|h| is_me(h))?;
                let other = g.iter().find(|h| !is_me(h))?;
                Some((conn_address(me, mine), peer_address(peer, other)))
            })
            .collect();
        out.push(Link {
            peer,
            peer_addr: peer_address(peer, other),
            my_addr: conn_address(me, mine),
            paths,
            net: c.net.clone(),
            disk: c.disk.clone(),
            volumes: c.volumes.clone(),
        });
    }
    if let Some(m) = &res.mesh
        && m.hosts
            .iter()
            .any(|(n, _)| res.host(n).is_some_and(|h| h.name == me.name))
    {
        for (n, _) in &m.hosts {
            let Some(peer) = res.host(n) else { continue };
            // An explicit connection to the same peer overrides the mesh's.
            if peer.name == me.name || out.iter().any(|l| l.peer.name == peer.name) {
                continue;
            }
            out.push(plain(peer, m.net.clone()));
        }
    }
    if res.connections.is_empty() && res.mesh.is_none() && res.hosts.len() == 2 {
        // The implicit connection of a two-node resource.
        if let Some(peer) = res.hosts.iter().find(|h| h.name != me.name) {
            out.push(plain(peer, OptBlock::default()));
        }
    }
    out.sort_by_key(|l| l.peer.node_id);
    out
}

/// `discard-node-NAME` must name a host of the resource.
fn check_discard_node(res: &Resource, b: &OptBlock) -> Result<(), ConfigError> {
    if let Some(e) = b.get("after-sb-0pri")
        && let Value::Word(w) = &e.value
        && let Some(n) = w.strip_prefix("discard-node-")
        && res.host(n).is_none()
    {
        return Err(e.pos.err(format!(
            "after-sb-0pri {w}: resource {} has no host '{n}'",
            res.name
        )));
    }
    Ok(())
}

/// `discard-node-NAME` with NAME as its `on` section spells it, so that `NetOptions` can tell
/// "me" from "the peer" by comparing names (`discard-node-n1` for `on n1.example.com`).
fn canonical_discard_node(res: &Resource, mut b: OptBlock) -> OptBlock {
    for e in &mut b.entries {
        if e.name == "after-sb-0pri"
            && let Value::Word(w) = &e.value
            && let Some(h) = w.strip_prefix("discard-node-").and_then(|n| res.host(n))
        {
            e.value = Value::Word(format!("discard-node-{}", h.name));
        }
    }
    b
}

fn node_id(h: &HostCfg) -> NodeId {
    NodeId(h.node_id.unwrap_or_default())
}

/// Resolves `resource` for the node `me` describes.
pub fn resolve(cfg: &Config, resource: &str, me: &HostQuery<'_>) -> Result<Resolved, ConfigError> {
    let Some(res) = cfg.resource(resource) else {
        let at = cfg
            .resources
            .first()
            .map(|r| r.pos.clone())
            .unwrap_or_else(|| Pos {
                file: "(config)".into(),
                line: 0,
                col: 0,
            });
        return Err(at.err(format!("'{resource}' not defined in your config")));
    };
    let host = choose_host(res, me)?;
    let secs = cfg.common.sections.overlay(&res.sections);
    check_discard_node(res, &secs.net)?;

    // An IPv6 `%interface` becomes this node's index of that interface.
    let socket = |a: Option<Addr>| a.map(|a| a.socket_addr(&system_if_index)).transpose();

    let volumes_cfg = effective_volumes(res, host);
    let always_vnr = cfg.global.get("udev-always-use-vnr").is_some();
    let volumes = volumes_cfg
        .iter()
        .map(|v| Volume {
            number: v.number,
            minor: v.device.as_ref().map(|d| d.minor).unwrap_or_default(),
            device: v.device.as_ref().and_then(|d| d.path.clone()),
            disk: match &v.disk {
                Some(DiskCfg::Path(p)) => Some(p.clone()),
                _ => None,
            },
            meta_disk: v.meta_disk.clone().unwrap_or(MetaDisk::Internal),
            disk_opts: DiskOptions::from_block(&secs.disk.overlay(&v.disk_opts)),
            by_res: if v.implicit && !always_vnr {
                format!("drbd/by-res/{}", res.name)
            } else {
                format!("drbd/by-res/{}/{}", res.name, v.number)
            },
        })
        .collect();

    let mut peers = Vec::new();
    let mut my_address = host.address.clone();
    for l in links(res, host) {
        let net_block = canonical_discard_node(res, secs.net.overlay(&l.net));
        check_discard_node(res, &l.net)?;
        let pvols = volumes_cfg
            .iter()
            .map(|v| {
                let mut b = secs.disk.overlay(&v.disk_opts).overlay(&l.disk);
                if let Some((_, vb)) = l.volumes.iter().find(|(n, _)| *n == v.number) {
                    b = b.overlay(vb);
                }
                PeerVolume {
                    number: v.number,
                    opts: PeerDeviceOptions::from_block(&b),
                }
            })
            .collect();
        if my_address.is_none() {
            my_address.clone_from(&l.my_addr);
        }
        let (address, local_address) = (socket(l.peer_addr)?, socket(l.my_addr)?);
        let mut candidates = vec![(local_address, address)];
        for (mine, theirs) in l.paths {
            candidates.push((socket(mine)?, socket(theirs)?));
        }
        let mut paths: Vec<NetPath> = Vec::new();
        for (local, peer) in candidates {
            if let (Some(local), Some(peer)) = (local, peer)
                && !paths.contains(&NetPath { local, peer })
            {
                paths.push(NetPath { local, peer });
            }
        }
        peers.push(Peer {
            name: l.peer.name.clone(),
            node_id: node_id(l.peer),
            address,
            local_address,
            paths,
            net: NetOptions::from_block(&net_block, &host.name),
            volumes: pvols,
            diskless: effective_volumes(res, l.peer)
                .iter()
                .all(|v| matches!(v.disk, Some(DiskCfg::None))),
        });
    }

    let options = ResourceOptions::from_block(&secs.options);
    let nbd_listen = host
        .nbd_listen
        .or_else(|| options.nbd_listen.as_deref().and_then(|s| s.parse().ok()));
    Ok(Resolved {
        name: res.name.clone(),
        me: Host {
            name: host.name.clone(),
            node_id: node_id(host),
            address: socket(my_address)?,
            nbd_listen,
        },
        peers,
        volumes,
        net: NetOptions::from_block(&canonical_discard_node(res, secs.net.clone()), &host.name),
        options,
        startup: StartupOptions::from_block(&secs.startup),
        handlers: secs
            .handlers
            .entries
            .iter()
            .map(|e| (e.name.to_string(), e.text.clone()))
            .collect(),
        config_file: res.pos.file.to_string(),
    })
}
