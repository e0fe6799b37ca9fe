//! Typed option structs with DRBD's defaults, filled from option blocks. Options udrbd does not
//! act on are kept in `extra` (name -> value as written) so nothing from the file is lost.

use super::model::OptBlock;
use super::options::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident = $word:literal),+ $(,)? } default $def:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $word)] $var),+ }
        impl $name {
            pub fn from_word(w: &str) -> Option<Self> {
                match w { $($word => Some(Self::$var),)+ _ => None }
            }
            pub fn word(self) -> &'static str {
                match self { $(Self::$var => $word),+ }
            }
        }
        impl Default for $name {
            fn default() -> Self { Self::$def }
        }
    };
}

word_enum!(
    /// Replication protocol: when a write counts as complete.
    Protocol { A = "A", B = "B", C = "C" } default C
);
word_enum!(AfterSb0Pri {
    Disconnect = "disconnect",
    DiscardYoungerPrimary = "discard-younger-primary",
    DiscardOlderPrimary = "discard-older-primary",
    DiscardZeroChanges = "discard-zero-changes",
    DiscardLeastChanges = "discard-least-changes",
    DiscardLocal = "discard-local",
    DiscardRemote = "discard-remote",
} default Disconnect);
word_enum!(AfterSb1Pri {
    Disconnect = "disconnect",
    Consensus = "consensus",
    ViolentlyAs0p = "violently-as0p",
    DiscardSecondary = "discard-secondary",
    CallPriLostAfterSb = "call-pri-lost-after-sb",
} default Disconnect);
word_enum!(AfterSb2Pri {
    Disconnect = "disconnect",
    ViolentlyAs0p = "violently-as0p",
    CallPriLostAfterSb = "call-pri-lost-after-sb",
} default Disconnect);
word_enum!(RrConflict {
    Disconnect = "disconnect",
    RetryConnect = "retry-connect",
    Violently = "violently",
    CallPriLost = "call-pri-lost",
    AutoDiscard = "auto-discard",
} default Disconnect);
word_enum!(Fencing {
    DontCare = "dont-care",
    ResourceOnly = "resource-only",
    ResourceAndStonith = "resource-and-stonith",
} default DontCare);
word_enum!(OnCongestion { Block = "block", PullAhead = "pull-ahead", Disconnect = "disconnect" } default Block);
word_enum!(OnIoError { PassOn = "pass_on", CallLocalIoError = "call-local-io-error", Detach = "detach" } default Detach);
word_enum!(OnNoData { IoError = "io-error", SuspendIo = "suspend-io" } default IoError);
word_enum!(
    /// udrbd's `nbd-tls`: STARTTLS not offered, offered, or required for the export.
    NbdTlsMode { Off = "off", On = "on", Require = "require" } default Off
);

/// `quorum` / `quorum-minimum-redundancy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quorum {
    #[default]
    Off,
    Majority,
    All,
    Nodes(u32),
}

impl Quorum {
    fn from_value(v: &Value) -> Option<Quorum> {
        match v {
            Value::Word(w) if w == "off" => Some(Quorum::Off),
            Value::Word(w) if w == "majority" => Some(Quorum::Majority),
            Value::Word(w) if w == "all" => Some(Quorum::All),
            Value::Num(n) => u32::try_from(*n).ok().map(Quorum::Nodes),
            _ => None,
        }
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}
fn as_u32(v: &Value) -> Option<u32> {
    match v {
        Value::Num(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}
fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Num(n) => Some(*n),
        _ => None,
    }
}
fn as_str(v: &Value) -> Option<String> {
    match v {
        Value::Word(w) => Some(w.clone()),
        _ => None,
    }
}

/// Assigns typed fields from a block: `fill!(self, block, { "name" => field: conv, ... })`.
/// Values were validated when parsed, so a failed conversion cannot happen; it would leave the
/// default rather than panic.
macro_rules! fill {
    ($s:ident, $block:ident, { $($name:literal => $field:ident : $conv:expr),* $(,)? }) => {
        for e in &$block.entries {
            match e.name {
                $($name => { if let Some(v) = $conv(&e.value) { $s.$field = v; } })*
                _ => { $s.extra.insert(e.name.to_string(), e.text.clone()); }
            }
        }
    };
}

/// Effective `net { }` options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetOptions {
    pub protocol: Protocol,
    /// Tenths of a second.
    pub timeout: u32,
    /// Seconds.
    pub connect_int: u32,
    /// Seconds.
    pub ping_int: u32,
    /// Tenths of a second.
    pub ping_timeout: u32,
    pub ko_count: u32,
    pub max_buffers: u32,
    pub max_epoch_size: u32,
    /// Bytes; 0 = automatic.
    pub sndbuf_size: u64,
    pub rcvbuf_size: u64,
    pub allow_two_primaries: bool,
    pub cram_hmac_alg: Option<String>,
    pub shared_secret: Option<String>,
    pub after_sb_0pri: AfterSb0Pri,
    pub after_sb_1pri: AfterSb1Pri,
    pub after_sb_2pri: AfterSb2Pri,
    pub always_asbp: bool,
    pub rr_conflict: RrConflict,
    pub fencing: Fencing,
    pub csums_alg: Option<String>,
    pub csums_after_crash_only: bool,
    pub verify_alg: Option<String>,
    pub data_integrity_alg: Option<String>,
    pub tcp_cork: bool,
    pub on_congestion: OnCongestion,
    /// Sectors; 0 = off.
    pub congestion_fill: u64,
    pub congestion_extents: u32,
    pub use_rle: bool,
    /// `tls`: the peer link runs over mutually authenticated TLS.
    pub tls: bool,
    /// udrbd's `tls-ca-file`: PEM CA certificates the peer's certificate must chain to.
    pub tls_ca_file: Option<String>,
    /// udrbd's `tls-certificate-file`: our PEM certificate (chain).
    pub tls_certificate_file: Option<String>,
    /// udrbd's `tls-privkey-file`: our PEM private key.
    pub tls_privkey_file: Option<String>,
    /// Options kept but not acted on (transport, socket-check-timeout, ...).
    pub extra: BTreeMap<String, String>,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            protocol: Protocol::C,
            timeout: 60,
            connect_int: 10,
            ping_int: 10,
            ping_timeout: 5,
            ko_count: 7,
            max_buffers: 2048,
            max_epoch_size: 2048,
            sndbuf_size: 0,
            rcvbuf_size: 0,
            allow_two_primaries: false,
            cram_hmac_alg: None,
            shared_secret: None,
            after_sb_0pri: AfterSb0Pri::Disconnect,
            after_sb_1pri: AfterSb1Pri::Disconnect,
            after_sb_2pri: AfterSb2Pri::Disconnect,
            always_asbp: false,
            rr_conflict: RrConflict::Disconnect,
            fencing: Fencing::DontCare,
            csums_alg: None,
            csums_after_crash_only: false,
            verify_alg: None,
            data_integrity_alg: None,
            tcp_cork: true,
            on_congestion: OnCongestion::Block,
            congestion_fill: 0,
            congestion_extents: 1237,
            use_rle: true,
            tls: false,
            tls_ca_file: None,
            tls_certificate_file: None,
            tls_privkey_file: None,
            extra: BTreeMap::new(),
        }
    }
}

fn word<T>(f: fn(&str) -> Option<T>) -> impl Fn(&Value) -> Option<T> {
    move |v| match v {
        Value::Word(w) => f(w),
        _ => None,
    }
}
fn some_str(v: &Value) -> Option<Option<String>> {
    as_str(v).map(Some)
}

impl NetOptions {
    /// `me`: this host's name, to turn `discard-node-NAME` into discard-local/-remote.
    pub fn from_block(b: &OptBlock, me: &str) -> NetOptions {
        let mut s = NetOptions::default();
        let asb0 = |v: &Value| match v {
            Value::Word(w) => match w.strip_prefix("discard-node-") {
                Some(n) if n == me => Some(AfterSb0Pri::DiscardLocal),
                Some(_) => Some(AfterSb0Pri::DiscardRemote),
                None => AfterSb0Pri::from_word(w),
            },
            _ => None,
        };
        fill!(s, b, {
            "protocol" => protocol: word(Protocol::from_word),
            "timeout" => timeout: as_u32,
            "connect-int" => connect_int: as_u32,
            "ping-int" => ping_int: as_u32,
            "ping-timeout" => ping_timeout: as_u32,
            "ko-count" => ko_count: as_u32,
            "max-buffers" => max_buffers: as_u32,
            "max-epoch-size" => max_epoch_size: as_u32,
            "sndbuf-size" => sndbuf_size: as_u64,
            "rcvbuf-size" => rcvbuf_size: as_u64,
            "allow-two-primaries" => allow_two_primaries: as_bool,
            "cram-hmac-alg" => cram_hmac_alg: some_str,
            "shared-secret" => shared_secret: some_str,
            "after-sb-0pri" => after_sb_0pri: asb0,
            "after-sb-1pri" => after_sb_1pri: word(AfterSb1Pri::from_word),
            "after-sb-2pri" => after_sb_2pri: word(AfterSb2Pri::from_word),
            "always-asbp" => always_asbp: as_bool,
            "rr-conflict" => rr_conflict: word(RrConflict::from_word),
            "fencing" => fencing: word(Fencing::from_word),
            "csums-alg" => csums_alg: some_str,
            "csums-after-crash-only" => csums_after_crash_only: as_bool,
            "verify-alg" => verify_alg: some_str,
            "data-integrity-alg" => data_integrity_alg: some_str,
            "tcp-cork" => tcp_cork: as_bool,
            "on-congestion" => on_congestion: word(OnCongestion::from_word),
            "congestion-fill" => congestion_fill: as_u64,
            "congestion-extents" => congestion_extents: as_u32,
            "use-rle" => use_rle: as_bool,
            "tls" => tls: as_bool,
            "tls-ca-file" => tls_ca_file: some_str,
            "tls-certificate-file" => tls_certificate_file: some_str,
            "tls-privkey-file" => tls_privkey_file: some_str,
        });
        s
    }
}

/// Resync controller options, per peer device (written in `disk { }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDeviceOptions {
    /// KiB/s; the fixed rate when `c_plan_ahead` is 0.
    pub resync_rate: u32,
    /// Tenths of a second; 0 = fixed rate.
    pub c_plan_ahead: u32,
    /// Tenths of a second.
    pub c_delay_target: u32,
    /// Sectors in flight; 0 = use the delay target.
    pub c_fill_target: u32,
    /// KiB/s; 0 = unlimited.
    pub c_max_rate: u32,
    /// KiB/s.
    pub c_min_rate: u32,
    pub bitmap: bool,
}

impl Default for PeerDeviceOptions {
    fn default() -> Self {
        PeerDeviceOptions {
            resync_rate: 250,
            c_plan_ahead: 20,
            c_delay_target: 10,
            c_fill_target: 100,
            c_max_rate: 102400,
            c_min_rate: 250,
            bitmap: true,
        }
    }
}

impl PeerDeviceOptions {
    pub fn from_block(b: &OptBlock) -> PeerDeviceOptions {
        let mut s = PeerDeviceOptions::default();
        for e in &b.entries {
            let n = as_u32(&e.value);
            match (e.name, n) {
                ("resync-rate", Some(n)) => s.resync_rate = n,
                ("c-plan-ahead", Some(n)) => s.c_plan_ahead = n,
                ("c-delay-target", Some(n)) => s.c_delay_target = n,
                ("c-fill-target", Some(n)) => s.c_fill_target = n,
                ("c-max-rate", Some(n)) => s.c_max_rate = n,
                ("c-min-rate", Some(n)) => s.c_min_rate = n,
                ("bitmap", _) => s.bitmap = as_bool(&e.value).unwrap_or(true),
                _ => {}
            }
        }
        s
    }
}

/// Effective `disk { }` options of a volume, including the peer-device defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskOptions {
    pub on_io_error: OnIoError,
    pub disk_flushes: bool,
    pub md_flushes: bool,
    pub disk_barrier: bool,
    pub disk_drain: bool,
    /// Tenths of a second; 0 = off.
    pub disk_timeout: u32,
    pub al_extents: u32,
    pub al_updates: bool,
    pub read_balancing: String,
    /// `resync-after RES[/VOL]`.
    pub resync_after: Option<String>,
    pub discard_zeroes_if_aligned: bool,
    pub disable_write_same: bool,
    /// Bytes.
    pub rs_discard_granularity: u64,
    /// Sectors; 0 = the backing device's size.
    pub size: u64,
    pub resync: PeerDeviceOptions,
    pub extra: BTreeMap<String, String>,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            on_io_error: OnIoError::Detach,
            disk_flushes: true,
            md_flushes: true,
            disk_barrier: false,
            disk_drain: true,
            disk_timeout: 0,
            al_extents: 1237,
            al_updates: true,
            read_balancing: "prefer-local".into(),
            resync_after: None,
            discard_zeroes_if_aligned: true,
            disable_write_same: false,
            rs_discard_granularity: 0,
            size: 0,
            resync: PeerDeviceOptions::default(),
            extra: BTreeMap::new(),
        }
    }
}

impl DiskOptions {
    pub fn from_block(b: &OptBlock) -> DiskOptions {
        let mut s = DiskOptions {
            resync: PeerDeviceOptions::from_block(b),
            ..DiskOptions::default()
        };
        let skip = |_: &Value| -> Option<PeerDeviceOptions> { None };
        fill!(s, b, {
            "on-io-error" => on_io_error: word(OnIoError::from_word),
            "disk-flushes" => disk_flushes: as_bool,
            "md-flushes" => md_flushes: as_bool,
            "disk-barrier" => disk_barrier: as_bool,
            "disk-drain" => disk_drain: as_bool,
            "disk-timeout" => disk_timeout: as_u32,
            "al-extents" => al_extents: as_u32,
            "al-updates" => al_updates: as_bool,
            "read-balancing" => read_balancing: as_str,
            "resync-after" => resync_after: some_str,
            "discard-zeroes-if-aligned" => discard_zeroes_if_aligned: as_bool,
            "disable-write-same" => disable_write_same: as_bool,
            "rs-discard-granularity" => rs_discard_granularity: as_u64,
            "size" => size: as_u64,
            "resync-rate" => resync: skip,
            "c-plan-ahead" => resync: skip,
            "c-delay-target" => resync: skip,
            "c-fill-target" => resync: skip,
            "c-max-rate" => resync: skip,
            "c-min-rate" => resync: skip,
            "bitmap" => resync: skip,
        });
        s
    }
}

/// Effective `options { }` (resource options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceOptions {
    pub auto_promote: bool,
    /// Tenths of a second.
    pub auto_promote_timeout: u32,
    /// `twopc-timeout`, tenths of a second: how long a cluster-wide state change waits for
    /// the peers' answers.
    #[serde(default = "twopc_timeout")]
    pub twopc_timeout: u32,
    pub quorum: Quorum,
    pub quorum_minimum_redundancy: Quorum,
    pub on_no_quorum: OnNoData,
    pub on_no_data_accessible: OnNoData,
    pub cpu_mask: Option<String>,
    pub max_io_depth: u32,
    /// udrbd: the resource-wide NBD/TCP listen address (a host's own `nbd-listen` wins).
    pub nbd_listen: Option<String>,
    /// udrbd: `nbd-tls off|on|require`.
    #[serde(default)]
    pub nbd_tls: NbdTlsMode,
    /// udrbd: the NBD server's PEM certificate and key, the CA client certificates must chain
    /// to (when set, clients must present one), and a PSK file (`identity:hexkey` lines, as
    /// `psktool` writes them).
    #[serde(default)]
    pub nbd_tls_certificate_file: Option<String>,
    #[serde(default)]
    pub nbd_tls_privkey_file: Option<String>,
    #[serde(default)]
    pub nbd_tls_ca_file: Option<String>,
    #[serde(default)]
    pub nbd_tls_psk_file: Option<String>,
    /// udrbd: `nbd-allow "ADDR[/PREFIX] NAME ..."`: TCP clients allowed to use the export.
    #[serde(default)]
    pub nbd_allow: Option<String>,
    /// udrbd: make the config's `device` (`/dev/drbdN`) a kernel block device through the
    /// kernel NBD client, where the kernel has one (`kernel-device yes|no`).
    #[serde(default = "yes")]
    pub kernel_device: bool,
    pub extra: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// DRBD's default `twopc-timeout`: 30 seconds.
fn twopc_timeout() -> u32 {
    300
}

impl Default for ResourceOptions {
    fn default() -> Self {
        ResourceOptions {
            auto_promote: true,
            auto_promote_timeout: 20,
            twopc_timeout: twopc_timeout(),
            quorum: Quorum::Off,
            quorum_minimum_redundancy: Quorum::Off,
            on_no_quorum: OnNoData::SuspendIo,
            on_no_data_accessible: OnNoData::IoError,
            cpu_mask: None,
            max_io_depth: 8000,
            nbd_listen: None,
            nbd_tls: NbdTlsMode::Off,
            nbd_tls_certificate_file: None,
            nbd_tls_privkey_file: None,
            nbd_tls_ca_file: None,
            nbd_tls_psk_file: None,
            nbd_allow: None,
            kernel_device: true,
            extra: BTreeMap::new(),
        }
    }
}

impl ResourceOptions {
    pub fn from_block(b: &OptBlock) -> ResourceOptions {
        let mut s = ResourceOptions::default();
        fill!(s, b, {
            "auto-promote" => auto_promote: as_bool,
            "auto-promote-timeout" => auto_promote_timeout: as_u32,
            "twopc-timeout" => twopc_timeout: as_u32,
            "quorum" => quorum: Quorum::from_value,
            "quorum-minimum-redundancy" => quorum_minimum_redundancy: Quorum::from_value,
            "on-no-quorum" => on_no_quorum: word(OnNoData::from_word),
            "on-no-data-accessible" => on_no_data_accessible: word(OnNoData::from_word),
            "cpu-mask" => cpu_mask: some_str,
            "max-io-depth" => max_io_depth: as_u32,
            "nbd-listen" => nbd_listen: some_str,
            "nbd-tls" => nbd_tls: word(NbdTlsMode::from_word),
            "nbd-tls-certificate-file" => nbd_tls_certificate_file: some_str,
            "nbd-tls-privkey-file" => nbd_tls_privkey_file: some_str,
            "nbd-tls-ca-file" => nbd_tls_ca_file: some_str,
            "nbd-tls-psk-file" => nbd_tls_psk_file: some_str,
            "nbd-allow" => nbd_allow: some_str,
            "kernel-device" => kernel_device: as_bool,
        });
        s
    }
}

/// Effective `startup { }`: how long `wait-connect` waits (seconds, 0 = forever).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartupOptions {
    pub wfc_timeout: u32,
    pub degr_wfc_timeout: u32,
    pub outdated_wfc_timeout: u32,
    pub wait_after_sb: bool,
    pub extra: BTreeMap<String, String>,
}

impl StartupOptions {
    pub fn from_block(b: &OptBlock) -> StartupOptions {
        let mut s = StartupOptions::default();
        fill!(s, b, {
            "wfc-timeout" => wfc_timeout: as_u32,
            "degr-wfc-timeout" => degr_wfc_timeout: as_u32,
            "outdated-wfc-timeout" => outdated_wfc_timeout: as_u32,
            "wait-after-sb" => wait_after_sb: as_bool,
        });
        s
    }
}
