//! The parsed configuration, as written (before inheritance). `resolve` computes what one node
//! runs from it; `dump` prints it back.

use super::addr::Addr;
use super::error::Pos;
use super::options::{Sect, Value};
use crate::types::MetaDisk;
use std::net::SocketAddr;

/// One option as written (after translating old spellings).
#[derive(Debug, Clone, PartialEq)]
pub struct OptEntry {
    /// Canonical (DRBD 9) name.
    pub name: &'static str,
    /// The value as it will be dumped (`25M` stays `25M`).
    pub text: String,
    pub value: Value,
    pub pos: Pos,
}

/// The options of one section, in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptBlock {
    pub entries: Vec<OptEntry>,
}

impl OptBlock {
    pub fn get(&self, name: &str) -> Option<&OptEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Sets or replaces (a later spelling of the same option wins, as in drbdadm).
    pub fn set(&mut self, e: OptEntry) {
        match self.entries.iter_mut().find(|x| x.name == e.name) {
            Some(x) => *x = e,
            None => self.entries.push(e),
        }
    }
    /// `self` overlaid with `over` (inheritance: the more specific block wins per option).
    pub fn overlay(&self, over: &OptBlock) -> OptBlock {
        let mut out = self.clone();
        for e in &over.entries {
            out.set(e.clone());
        }
        out
    }
}

/// The option sections a `common` or `resource` can carry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sections {
    pub net: OptBlock,
    pub disk: OptBlock,
    pub options: OptBlock,
    pub startup: OptBlock,
    pub handlers: OptBlock,
}

impl Sections {
    pub fn block_mut(&mut self, s: Sect) -> Option<&mut OptBlock> {
        match s {
            Sect::Net => Some(&mut self.net),
            Sect::Disk => Some(&mut self.disk),
            Sect::Options => Some(&mut self.options),
            Sect::Startup => Some(&mut self.startup),
            Sect::Handlers => Some(&mut self.handlers),
            Sect::Global | Sect::TopLevel | Sect::Syncer => None,
        }
    }
    pub fn overlay(&self, over: &Sections) -> Sections {
        Sections {
            net: self.net.overlay(&over.net),
            disk: self.disk.overlay(&over.disk),
            options: self.options.overlay(&over.options),
            startup: self.startup.overlay(&over.startup),
            handlers: self.handlers.overlay(&over.handlers),
        }
    }
}

/// A whole configuration: `global`, `common` and the resources, includes followed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub global: OptBlock,
    /// `require-drbd-module-version-{eq,ne,gt,ge,lt,le} X.Y.Z;` statements (top level).
    pub module_version: OptBlock,
    pub common: Common,
    pub resources: Vec<Resource>,
}

impl Config {
    /// Resource names in the order they are defined.
    pub fn resource_names(&self) -> Vec<&str> {
        self.resources.iter().map(|r| r.name.as_str()).collect()
    }
    pub fn has_resource(&self, n: &str) -> bool {
        self.resources.iter().any(|r| r.name == n)
    }
    pub fn resource(&self, n: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == n)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Common {
    pub sections: Sections,
    /// Comment lines `dump` prints: which old spellings were translated.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub pos: Pos,
    pub sections: Sections,
    pub notes: Vec<String>,
    /// Volumes written at resource level (shared by all hosts).
    pub volumes: Vec<VolumeCfg>,
    pub hosts: Vec<HostCfg>,
    pub connections: Vec<ConnCfg>,
    pub mesh: Option<MeshCfg>,
}

/// drbd-utils' `hostnames_equal`: two fully qualified names must be equal, otherwise the host
/// parts (up to the first `.`) must be; case does not matter (DNS names). So `host n1` and a
/// node whose hostname is `n1` both match `on n1.example.com`, but `n1.a` does not match `n1.b`.
pub fn hostnames_equal(a: &str, b: &str) -> bool {
    fn host_part(s: &str) -> &str {
        s.split_once('.').map_or(s, |(h, _)| h)
    }
    if a.contains('.') && b.contains('.') {
        a.eq_ignore_ascii_case(b)
    } else {
        host_part(a).eq_ignore_ascii_case(host_part(b))
    }
}

impl Resource {
    /// The host section `name` means: the one named exactly so, else the first `on` section
    /// whose name is the same host by [`hostnames_equal`] (drbdadm's rule). A floating
    /// section is only named by its address, exactly.
    pub fn host(&self, name: &str) -> Option<&HostCfg> {
        self.hosts.iter().find(|h| h.name == name).or_else(|| {
            self.hosts
                .iter()
                .find(|h| !h.floating && hostnames_equal(&h.name, name))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCfg {
    /// `/dev/drbdN` when written; `device minor N` has none.
    pub path: Option<String>,
    pub minor: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskCfg {
    /// `disk none;`: a diskless node.
    None,
    Path(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeCfg {
    pub number: u32,
    pub pos: Pos,
    /// Written as bare `device`/`disk`/`meta-disk` (volume 0) rather than `volume 0 { }`.
    pub implicit: bool,
    pub device: Option<DeviceCfg>,
    pub disk: Option<DiskCfg>,
    pub meta_disk: Option<MetaDisk>,
    pub disk_opts: OptBlock,
    /// `tiebreaker yes|no;` (DRBD 9.0 witness volumes): kept, not acted on.
    pub tiebreaker: Option<bool>,
}

impl VolumeCfg {
    pub fn new(number: u32, pos: Pos, implicit: bool) -> VolumeCfg {
        VolumeCfg {
            number,
            pos,
            implicit,
            device: None,
            disk: None,
            meta_disk: None,
            disk_opts: OptBlock::default(),
            tiebreaker: None,
        }
    }
    /// `self` with `over`'s fields where `over` sets them (host volume over resource volume).
    pub fn overlay(&self, over: &VolumeCfg) -> VolumeCfg {
        VolumeCfg {
            number: self.number,
            pos: over.pos.clone(),
            implicit: self.implicit && over.implicit,
            device: over.device.clone().or_else(|| self.device.clone()),
            disk: over.disk.clone().or_else(|| self.disk.clone()),
            meta_disk: over.meta_disk.clone().or_else(|| self.meta_disk.clone()),
            disk_opts: self.disk_opts.overlay(&over.disk_opts),
            tiebreaker: over.tiebreaker.or(self.tiebreaker),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostCfg {
    /// The `on` name; for `floating`, the address (`10.0.0.3:7789`), which connections use.
    pub name: String,
    pub pos: Pos,
    pub floating: bool,
    pub node_id: Option<u8>,
    /// True when `node_id` was assigned (2-node config without node ids), not written.
    pub implicit_node_id: bool,
    pub address: Option<Addr>,
    pub nbd_listen: Option<SocketAddr>,
    pub volumes: Vec<VolumeCfg>,
}

/// `host NAME [address ...] [port P] [via outside-address ...];` in a connection or path.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnHost {
    pub name: String,
    pub pos: Pos,
    pub address: Option<Addr>,
    pub port: Option<u16>,
    /// `via outside-address ADDR:PORT`: the address the other host connects to, when a NAT
    /// forwards it to this host's own `address` (drbd-utils uses it as the peer's address).
    pub outside: Option<Addr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConnCfg {
    pub name: Option<String>,
    pub pos: Pos,
    /// The two `host` lines (empty when only `path`s are given).
    pub hosts: Vec<ConnHost>,
    pub paths: Vec<Vec<ConnHost>>,
    pub net: OptBlock,
    /// Peer-device options for all volumes of this connection.
    pub disk: OptBlock,
    /// `volume N { disk { ... } }` inside the connection.
    pub volumes: Vec<(u32, OptBlock)>,
    /// Not written: made from two hosts or a mesh.
    pub implicit: bool,
}

impl ConnCfg {
    /// The host names this connection joins (from `host` lines, else from the first path).
    pub fn host_names(&self) -> Vec<&str> {
        let src = if self.hosts.is_empty() {
            self.paths.first().map(Vec::as_slice).unwrap_or(&[])
        } else {
            &self.hosts
        };
        src.iter().map(|h| h.name.as_str()).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MeshCfg {
    pub pos: Pos,
    pub hosts: Vec<(String, Pos)>,
    pub net: OptBlock,
}
