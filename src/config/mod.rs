//! The drbd.conf language: lexer, parser, option table, validation, `dump` and `resolve`.
//!
//! The syntax is DRBD's (see `drbd.conf(5)`): sections `keyword [name] { ... }`, parameters
//! `keyword value...;`, `#` comments, double-quoted strings, a `skip` prefix that disables a
//! section, and `include "glob";` at top level (relative to the including file's directory).
//! drbd-utils 9 options are accepted with their ranges and defaults; the 8.3/8.4 spellings it
//! still accepts (`syncer { rate 25M; }`, `no-disk-flushes;`, `outdate-peer`, `fencing` in
//! `disk`, `protocol C;` outside `net`) are translated, and `dump` says so in a comment.
//! Options udrbd does not act on (`cpu-mask`, `tcp-cork`, `transport`, quorum knobs, ...) are
//! kept and dumped.
//!
//! # udrbd's own keyword: `nbd-listen`
//!
//! ```text
//! resource r0 {
//!     options { nbd-listen 0.0.0.0:10809; }          # every host serves r0 on this address
//!     on alice { node-id 0; address 10.0.0.1:7789;
//!                nbd-listen 127.0.0.1:10809; }       # ...but alice only on loopback
//! }
//! ```
//!
//! `nbd-listen ADDR:PORT;` (IPv6 as `[ADDR]:PORT`) makes the daemon serve the resource over
//! NBD/TCP on that address. Without it the resource is served only on the daemon's Unix socket.
//! It may be written inside `on HOST { }` (that host only) and in the resource's `options { }`
//! (all hosts); the host's own setting wins. DRBD has no equivalent.
//!
//! The module is pure: files come through the [`Source`] trait, so tests and the fuzzer use
//! [`MemSource`] and drbdadm reads the real filesystem. One exception: [`resolve`] asks the
//! system for the index of an interface an IPv6 address names (`[fe80::1%eth0]:7789`), since
//! that is what the address means on this node; parsing and `dump` keep the name as written.
//!
//! # What drbd-utils 9 accepts that udrbd refuses
//!
//! Each with a message saying it is not supported by udrbd: `stacked-on-top-of`,
//! `template-file`, DRBD Proxy (`proxy { }`, `host ... via proxy on ...`), the address
//! families `ssocks`, `sdp` and `sci`, and the `drbdsetup show` syntax drbdadm reads back
//! (`_this_host`, `_remote_host`, `_peer_node_id`, ...).

mod addr;
mod ast;
mod build;
mod dump;
pub mod effect;
mod error;
mod lexer;
mod model;
mod options;
mod parser;
mod resolve;
mod source;
mod typed;
mod validate;

pub use addr::{Addr, Family};
pub use dump::{HIDDEN_SECRET, dump, dump_with};
pub use error::{ConfigError, Pos};
pub use model::{
    Common, Config, ConnCfg, ConnHost, DeviceCfg, DiskCfg, HostCfg, MeshCfg, OptBlock, OptEntry,
    Resource, Sections, VolumeCfg, hostnames_equal,
};
pub use options::{Kind, NumError, OPTIONS, OptDef, Sect, Unit, Value, lookup, parse_number};
pub use resolve::{Host, HostQuery, NetPath, Peer, PeerVolume, Resolved, Volume, resolve};
pub use source::{MemSource, Source, load, parse_str};
pub use typed::{
    AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, DiskOptions, Fencing, NbdTlsMode, NetOptions,
    OnCongestion, OnIoError, OnNoData, PeerDeviceOptions, Protocol, Quorum, ResourceOptions,
    RrConflict, StartupOptions,
};
