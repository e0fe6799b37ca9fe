//! The option table: every option drbd-utils 9 accepts in `net`, `disk` (including the
//! peer-device options), `options`, `startup`, `handlers` and `global`, and the
//! `require-drbd-module-version-*` statements of the top level, with type, range, unit
//! and default (from drbd-headers' `drbd_limits.h` and drbd-utils' `config_flags.c`), plus the
//! 8.3/8.4 spellings drbd-utils still accepts and what they mean today.

use super::error::{ConfigError, did_you_mean};
use super::lexer::Token;
use serde::{Deserialize, Serialize};

/// The option sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sect {
    Global,
    /// Statements outside any section: only `require-drbd-module-version-*`.
    TopLevel,
    Net,
    Disk,
    Options,
    Startup,
    Handlers,
    /// 8.3's `syncer { }`: only translations live here.
    Syncer,
}

impl Sect {
    pub fn keyword(self) -> &'static str {
        match self {
            Sect::Global => "global",
            Sect::TopLevel => "top level",
            Sect::Net => "net",
            Sect::Disk => "disk",
            Sect::Options => "options",
            Sect::Startup => "startup",
            Sect::Handlers => "handlers",
            Sect::Syncer => "syncer",
        }
    }
}

/// How a number is counted, and so which size suffixes it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count; no suffix.
    Count,
    /// Bytes; `K`, `M`, `G` multiply by powers of 1024.
    Bytes,
    /// KiB (or KiB/s for rates): drbd-utils' scale `k`, so `25M` is 25600.
    KiB,
    /// 512-byte sectors: `1M` is 2048.
    Sectors,
    /// Tenths of a second; no suffix.
    Tenths,
    Seconds,
    Millis,
}

impl Unit {
    /// `" seconds"` etc., to follow a number; empty for counts.
    fn describe(self) -> &'static str {
        match self {
            Unit::Count => "",
            Unit::Bytes => " bytes",
            Unit::KiB => " KiB",
            Unit::Sectors => " sectors",
            Unit::Tenths => " tenths of a second",
            Unit::Seconds => " seconds",
            Unit::Millis => " milliseconds",
        }
    }

    /// Bytes per unit for the size-like units; `None` for those that take no suffix.
    fn bytes(self) -> Option<u64> {
        match self {
            Unit::Bytes => Some(1),
            Unit::KiB => Some(1024),
            Unit::Sectors => Some(512),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `yes`/`no`, or the bare keyword meaning `yes`.
    Bool,
    /// Only the bare keyword.
    Flag,
    Num {
        min: u64,
        max: u64,
        unit: Unit,
    },
    Enum(&'static [&'static str]),
    /// One of the words, or a number in `min..=max` (quorum).
    EnumNum {
        words: &'static [&'static str],
        min: u64,
        max: u64,
    },
    Str {
        max_len: Option<usize>,
    },
    /// udrbd's `ADDR:PORT` (IPv6 in brackets).
    SockAddr,
}

#[derive(Debug, Clone, Copy)]
pub struct OptDef {
    pub name: &'static str,
    pub sect: Sect,
    pub kind: Kind,
    /// DRBD's default, as it would be written; `None` for "unset".
    pub default: Option<&'static str>,
}

/// A parsed option value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Bool(bool),
    /// In the option's own unit (see `Unit`).
    Num(u64),
    /// An enum word or a string.
    Word(String),
}

const AFTER_SB_0PRI: &[&str] = &[
    "disconnect",
    "discard-younger-primary",
    "discard-older-primary",
    "discard-zero-changes",
    "discard-least-changes",
    "discard-local",
    "discard-remote",
];
const AFTER_SB_1PRI: &[&str] = &[
    "disconnect",
    "consensus",
    "violently-as0p",
    "discard-secondary",
    "call-pri-lost-after-sb",
];
const AFTER_SB_2PRI: &[&str] = &["disconnect", "violently-as0p", "call-pri-lost-after-sb"];
const RR_CONFLICT: &[&str] = &[
    "disconnect",
    "retry-connect",
    "violently",
    "call-pri-lost",
    "auto-discard",
];
const FENCING: &[&str] = &["dont-care", "resource-only", "resource-and-stonith"];
const ON_IO_ERROR: &[&str] = &["pass_on", "call-local-io-error", "detach"];
const ON_NO_DATA: &[&str] = &["io-error", "suspend-io"];
const ON_CONGESTION: &[&str] = &["block", "pull-ahead", "disconnect"];
const NBD_TLS: &[&str] = &["off", "on", "require"];
const READ_BALANCING: &[&str] = &[
    "prefer-local",
    "prefer-remote",
    "round-robin",
    "least-pending",
    "when-congested-remote",
    "32K-striping",
    "64K-striping",
    "128K-striping",
    "256K-striping",
    "512K-striping",
    "1M-striping",
];
const QUORUM: &[&str] = &["off", "majority", "all"];
const PROTOCOL: &[&str] = &["A", "B", "C"];

macro_rules! opt {
    ($sect:ident, $name:literal, $kind:expr, $def:expr) => {
        OptDef {
            name: $name,
            sect: Sect::$sect,
            kind: $kind,
            default: $def,
        }
    };
}
const fn num(min: u64, max: u64, unit: Unit) -> Kind {
    Kind::Num { min, max, unit }
}
const STR: Kind = Kind::Str { max_len: None };
const MAX_SECRET: usize = 64;

/// Every option. Peer-device options (`resync-rate`, `c-*`, `bitmap`) are written in `disk`.
pub static OPTIONS: &[OptDef] = &[
    // global
    opt!(
        Global,
        "usage-count",
        Kind::Enum(&["yes", "no", "ask"]),
        Some("ask")
    ),
    opt!(Global, "disable-ip-verification", Kind::Flag, None),
    opt!(Global, "udev-always-use-vnr", Kind::Flag, None),
    opt!(
        Global,
        "dialog-refresh",
        num(0, 600, Unit::Seconds),
        Some("1")
    ),
    opt!(Global, "minor-count", num(1, 255, Unit::Count), Some("32")),
    opt!(
        Global,
        "cmd-timeout-short",
        num(0, u32::MAX as u64, Unit::Seconds),
        Some("5")
    ),
    opt!(
        Global,
        "cmd-timeout-medium",
        num(0, u32::MAX as u64, Unit::Seconds),
        Some("121")
    ),
    opt!(
        Global,
        "cmd-timeout-long",
        num(0, u32::MAX as u64, Unit::Seconds),
        Some("600")
    ),
    // top level (drbd-utils reads them outside any section, not in global)
    opt!(TopLevel, "require-drbd-module-version-eq", STR, None),
    opt!(TopLevel, "require-drbd-module-version-ne", STR, None),
    opt!(TopLevel, "require-drbd-module-version-gt", STR, None),
    opt!(TopLevel, "require-drbd-module-version-ge", STR, None),
    opt!(TopLevel, "require-drbd-module-version-lt", STR, None),
    opt!(TopLevel, "require-drbd-module-version-le", STR, None),
    // net
    opt!(Net, "protocol", Kind::Enum(PROTOCOL), Some("C")),
    opt!(Net, "timeout", num(1, 600, Unit::Tenths), Some("60")),
    opt!(
        Net,
        "max-epoch-size",
        num(1, 20000, Unit::Count),
        Some("2048")
    ),
    opt!(Net, "connect-int", num(1, 120, Unit::Seconds), Some("10")),
    opt!(Net, "ping-int", num(1, 120, Unit::Seconds), Some("10")),
    opt!(
        Net,
        "sndbuf-size",
        num(0, 128 << 20, Unit::Bytes),
        Some("0")
    ),
    opt!(
        Net,
        "rcvbuf-size",
        num(0, 128 << 20, Unit::Bytes),
        Some("0")
    ),
    opt!(Net, "ko-count", num(0, 200, Unit::Count), Some("7")),
    opt!(Net, "allow-two-primaries", Kind::Bool, Some("no")),
    opt!(Net, "cram-hmac-alg", STR, None),
    opt!(
        Net,
        "shared-secret",
        Kind::Str {
            max_len: Some(MAX_SECRET)
        },
        None
    ),
    opt!(
        Net,
        "after-sb-0pri",
        Kind::Enum(AFTER_SB_0PRI),
        Some("disconnect")
    ),
    opt!(
        Net,
        "after-sb-1pri",
        Kind::Enum(AFTER_SB_1PRI),
        Some("disconnect")
    ),
    opt!(
        Net,
        "after-sb-2pri",
        Kind::Enum(AFTER_SB_2PRI),
        Some("disconnect")
    ),
    opt!(Net, "always-asbp", Kind::Bool, Some("no")),
    opt!(
        Net,
        "rr-conflict",
        Kind::Enum(RR_CONFLICT),
        Some("disconnect")
    ),
    opt!(Net, "ping-timeout", num(1, 300, Unit::Tenths), Some("5")),
    opt!(Net, "data-integrity-alg", STR, None),
    opt!(Net, "tcp-cork", Kind::Bool, Some("yes")),
    opt!(
        Net,
        "on-congestion",
        Kind::Enum(ON_CONGESTION),
        Some("block")
    ),
    opt!(
        Net,
        "congestion-fill",
        num(0, 10 << 21, Unit::Sectors),
        Some("0")
    ),
    opt!(
        Net,
        "congestion-extents",
        num(67, 0xfffe, Unit::Count),
        Some("1237")
    ),
    opt!(Net, "csums-alg", STR, None),
    opt!(Net, "csums-after-crash-only", Kind::Bool, Some("no")),
    opt!(Net, "verify-alg", STR, None),
    opt!(Net, "use-rle", Kind::Bool, Some("yes")),
    // DRBD 9.2's TLS switch; its key options name kernel keyring entries (tlshd), which udrbd
    // refuses with a pointer to its own `-file` keywords below.
    opt!(Net, "tls", Kind::Bool, Some("no")),
    opt!(Net, "tls-keyring", STR, None),
    opt!(Net, "tls-privkey", STR, None),
    opt!(Net, "tls-certificate", STR, None),
    // udrbd: PEM files for `tls yes` (see net/tls.rs).
    opt!(Net, "tls-ca-file", STR, None),
    opt!(Net, "tls-certificate-file", STR, None),
    opt!(Net, "tls-privkey-file", STR, None),
    opt!(
        Net,
        "socket-check-timeout",
        num(0, 300, Unit::Tenths),
        Some("0")
    ),
    opt!(Net, "fencing", Kind::Enum(FENCING), Some("dont-care")),
    opt!(
        Net,
        "max-buffers",
        num(32, 131072, Unit::Count),
        Some("2048")
    ),
    opt!(Net, "transport", STR, Some("tcp")),
    opt!(Net, "load-balance-paths", Kind::Bool, Some("no")),
    // disk
    opt!(Disk, "on-io-error", Kind::Enum(ON_IO_ERROR), Some("detach")),
    opt!(Disk, "disk-barrier", Kind::Bool, Some("no")),
    opt!(Disk, "disk-flushes", Kind::Bool, Some("yes")),
    opt!(Disk, "disk-drain", Kind::Bool, Some("yes")),
    opt!(Disk, "md-flushes", Kind::Bool, Some("yes")),
    opt!(Disk, "resync-after", STR, None),
    opt!(
        Disk,
        "al-extents",
        num(67, 0xfffe, Unit::Count),
        Some("1237")
    ),
    opt!(Disk, "al-updates", Kind::Bool, Some("yes")),
    opt!(Disk, "discard-zeroes-if-aligned", Kind::Bool, Some("yes")),
    opt!(Disk, "disable-write-same", Kind::Bool, Some("no")),
    opt!(Disk, "disk-timeout", num(0, 6000, Unit::Tenths), Some("0")),
    opt!(
        Disk,
        "read-balancing",
        Kind::Enum(READ_BALANCING),
        Some("prefer-local")
    ),
    opt!(
        Disk,
        "rs-discard-granularity",
        num(0, 1 << 20, Unit::Bytes),
        Some("0")
    ),
    opt!(Disk, "size", num(0, 2 << 40, Unit::Sectors), Some("0")),
    // A device option (DRBD 9.2's logical block size); drbdadm reads it in disk { }.
    opt!(Disk, "block-size", num(512, 4096, Unit::Bytes), Some("512")),
    // peer-device options, written in disk { }
    opt!(Disk, "resync-rate", num(1, 8 << 20, Unit::KiB), Some("250")),
    opt!(Disk, "c-plan-ahead", num(0, 300, Unit::Tenths), Some("20")),
    opt!(
        Disk,
        "c-delay-target",
        num(1, 100, Unit::Tenths),
        Some("10")
    ),
    opt!(
        Disk,
        "c-fill-target",
        num(0, 1 << 20, Unit::Sectors),
        Some("100")
    ),
    // 0 = unlimited since DRBD 9.0.28, though old headers say 250.
    opt!(
        Disk,
        "c-max-rate",
        num(0, 4 << 20, Unit::KiB),
        Some("102400")
    ),
    opt!(Disk, "c-min-rate", num(0, 4 << 20, Unit::KiB), Some("250")),
    opt!(Disk, "bitmap", Kind::Bool, Some("yes")),
    // resource options
    opt!(Options, "cpu-mask", STR, None),
    opt!(
        Options,
        "on-no-data-accessible",
        Kind::Enum(ON_NO_DATA),
        Some("io-error")
    ),
    opt!(Options, "auto-promote", Kind::Bool, Some("yes")),
    opt!(
        Options,
        "peer-ack-window",
        num(2048, 204800, Unit::Sectors),
        Some("4096")
    ),
    opt!(
        Options,
        "peer-ack-delay",
        num(1, 10000, Unit::Millis),
        Some("100")
    ),
    opt!(
        Options,
        "twopc-timeout",
        num(50, 600, Unit::Tenths),
        Some("300")
    ),
    opt!(
        Options,
        "twopc-retry-timeout",
        num(1, 50, Unit::Tenths),
        Some("1")
    ),
    opt!(
        Options,
        "auto-promote-timeout",
        num(0, 600, Unit::Tenths),
        Some("20")
    ),
    opt!(
        Options,
        "max-io-depth",
        num(4, u32::MAX as u64, Unit::Count),
        Some("8000")
    ),
    opt!(
        Options,
        "quorum",
        Kind::EnumNum {
            words: QUORUM,
            min: 1,
            max: 32
        },
        Some("off")
    ),
    opt!(
        Options,
        "on-no-quorum",
        Kind::Enum(ON_NO_DATA),
        Some("suspend-io")
    ),
    opt!(
        Options,
        "quorum-minimum-redundancy",
        Kind::EnumNum {
            words: QUORUM,
            min: 1,
            max: 32
        },
        Some("off")
    ),
    opt!(
        Options,
        "on-suspended-primary-outdated",
        Kind::Enum(&["disconnect", "force-secondary"]),
        Some("disconnect")
    ),
    // udrbd: where this node serves the resource over NBD/TCP (see the module docs).
    opt!(Options, "nbd-listen", Kind::SockAddr, None),
    // udrbd: who may use the NBD export over TCP, and TLS for it (see nbd/server/access.rs).
    opt!(Options, "nbd-tls", Kind::Enum(NBD_TLS), Some("off")),
    opt!(Options, "nbd-tls-certificate-file", STR, None),
    opt!(Options, "nbd-tls-privkey-file", STR, None),
    opt!(Options, "nbd-tls-ca-file", STR, None),
    opt!(Options, "nbd-tls-psk-file", STR, None),
    opt!(Options, "nbd-allow", STR, None),
    // udrbd: the config's `device` as a kernel block device through the kernel NBD client
    // (src/daemon/kdev.rs).
    opt!(Options, "kernel-device", Kind::Bool, Some("yes")),
    // startup
    opt!(
        Startup,
        "wfc-timeout",
        num(0, 300000, Unit::Seconds),
        Some("0")
    ),
    opt!(
        Startup,
        "degr-wfc-timeout",
        num(0, 300000, Unit::Seconds),
        Some("0")
    ),
    opt!(
        Startup,
        "outdated-wfc-timeout",
        num(0, 300000, Unit::Seconds),
        Some("0")
    ),
    opt!(Startup, "wait-after-sb", Kind::Bool, Some("no")),
    opt!(Startup, "stacked-timeouts", Kind::Flag, None),
    opt!(Startup, "become-primary-on", STR, None),
    // handlers
    opt!(Handlers, "pri-on-incon-degr", STR, None),
    opt!(Handlers, "pri-lost-after-sb", STR, None),
    opt!(Handlers, "pri-lost", STR, None),
    opt!(Handlers, "initial-split-brain", STR, None),
    opt!(Handlers, "split-brain", STR, None),
    opt!(Handlers, "fence-peer", STR, None),
    opt!(Handlers, "unfence-peer", STR, None),
    opt!(Handlers, "local-io-error", STR, None),
    opt!(Handlers, "before-resync-target", STR, None),
    opt!(Handlers, "after-resync-target", STR, None),
    opt!(Handlers, "before-resync-source", STR, None),
    opt!(Handlers, "out-of-sync", STR, None),
    opt!(Handlers, "quorum-lost", STR, None),
    opt!(Handlers, "disconnected", STR, None),
];

/// An older spelling: `old` written in section `sect` means `new` in `to`, with `value` fixed
/// (for the `no-*` flags) or taken from the written value.
#[derive(Debug, Clone, Copy)]
pub struct Alias {
    pub sect: Sect,
    pub old: &'static str,
    pub to: Sect,
    pub new: &'static str,
    pub value: Option<&'static str>,
}

macro_rules! alias {
    ($sect:ident $old:literal => $to:ident $new:literal $(= $v:literal)?) => {
        Alias { sect: Sect::$sect, old: $old, to: Sect::$to, new: $new, value: alias!(@v $($v)?) }
    };
    (@v) => { None };
    (@v $v:literal) => { Some($v) };
}

pub static ALIASES: &[Alias] = &[
    alias!(Disk "no-disk-flushes" => Disk "disk-flushes" = "no"),
    alias!(Disk "no-md-flushes" => Disk "md-flushes" = "no"),
    alias!(Disk "no-disk-barrier" => Disk "disk-barrier" = "no"),
    alias!(Disk "no-disk-drain" => Disk "disk-drain" = "no"),
    alias!(Disk "fencing" => Net "fencing"),
    alias!(Net "no-tcp-cork" => Net "tcp-cork" = "no"),
    alias!(Handlers "outdate-peer" => Handlers "fence-peer"),
    alias!(Syncer "rate" => Disk "resync-rate"),
    alias!(Syncer "resync-rate" => Disk "resync-rate"),
    alias!(Syncer "after" => Disk "resync-after"),
    alias!(Syncer "al-extents" => Disk "al-extents"),
    alias!(Syncer "c-plan-ahead" => Disk "c-plan-ahead"),
    alias!(Syncer "c-delay-target" => Disk "c-delay-target"),
    alias!(Syncer "c-fill-target" => Disk "c-fill-target"),
    alias!(Syncer "c-max-rate" => Disk "c-max-rate"),
    alias!(Syncer "c-min-rate" => Disk "c-min-rate"),
    alias!(Syncer "csums-alg" => Net "csums-alg"),
    alias!(Syncer "verify-alg" => Net "verify-alg"),
    alias!(Syncer "use-rle" => Net "use-rle"),
    alias!(Syncer "cpu-mask" => Options "cpu-mask"),
    alias!(Syncer "on-no-data-accessible" => Options "on-no-data-accessible"),
];

/// The options of `disk { }` that are per peer device and so may also be set per connection.
pub const PEER_DEVICE: &[&str] = &[
    "resync-rate",
    "c-plan-ahead",
    "c-delay-target",
    "c-fill-target",
    "c-max-rate",
    "c-min-rate",
    "bitmap",
];

pub fn lookup(sect: Sect, name: &str) -> Option<&'static OptDef> {
    OPTIONS.iter().find(|o| o.sect == sect && o.name == name)
}

pub fn lookup_alias(sect: Sect, name: &str) -> Option<&'static Alias> {
    ALIASES.iter().find(|a| a.sect == sect && a.old == name)
}

/// Names accepted in `sect`, for suggestions.
pub fn names_in(sect: Sect) -> impl Iterator<Item = &'static str> {
    OPTIONS
        .iter()
        .filter(move |o| o.sect == sect)
        .map(|o| o.name)
        .chain(
            ALIASES
                .iter()
                .filter(move |a| a.sect == sect)
                .map(|a| a.old),
        )
}

/// Splits `25M` into 25 and the multiplier in bytes; `None` for a malformed number.
fn split_suffix(text: &str) -> Option<(u64, Option<u64>)> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let n: u64 = text.get(..digits)?.parse().ok()?;
    let mult = match text.get(digits..)? {
        "" => None,
        "s" | "S" => Some(512),
        "k" | "K" => Some(1 << 10),
        "m" | "M" => Some(1 << 20),
        "g" | "G" => Some(1 << 30),
        _ => return Some((n, Some(0))),
    };
    Some((n, mult))
}

/// Why a number did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumError {
    /// Not digits (or too large).
    Malformed,
    /// A suffix that is not K/M/G, or any suffix on a value that takes none.
    BadUnit,
}

/// Parses a number written for `unit`: a plain number is in the unit itself; a suffixed one is
/// converted (rounding down), as drbd-utils' `m_strtoll` does.
pub fn parse_number(text: &str, unit: Unit) -> Result<u64, NumError> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(NumError::Malformed);
    }
    let (n, mult) = split_suffix(text).ok_or(NumError::Malformed)?;
    match (mult, unit.bytes()) {
        (None, _) => Ok(n),
        (Some(0), _) | (Some(_), None) => Err(NumError::BadUnit),
        (Some(m), Some(per)) => n.checked_mul(m).map(|b| b / per).ok_or(NumError::Malformed),
    }
}

fn number_error(e: NumError, text: &str, name: &str, unit: Unit) -> String {
    match (e, unit.bytes()) {
        (NumError::Malformed, Some(_)) => {
            format!(
                "bad number '{text}' for '{name}': expected digits with an optional K, M or G suffix"
            )
        }
        (NumError::Malformed, None) => format!("bad number '{text}' for '{name}': expected digits"),
        (NumError::BadUnit, Some(_)) => {
            format!("bad unit in '{text}' for '{name}': expected K, M or G")
        }
        (NumError::BadUnit, None) => format!(
            "bad unit in '{text}' for '{name}': it takes a plain number{}",
            match unit {
                Unit::Count => String::new(),
                u => format!(" (in{})", u.describe()),
            }
        ),
    }
}

/// Parses the values after option `key` (already known to be `def`). Returns the value and the
/// text to print in `dump` (numbers keep their suffix; bare flags become `yes`).
pub fn parse_value(
    def: &OptDef,
    key: &Token,
    args: &[Token],
) -> Result<(Value, String), ConfigError> {
    let name = def.name;
    let want = match def.kind {
        Kind::Bool => args.len().min(1),
        Kind::Flag => 0,
        _ => 1,
    };
    if let Some(extra) = args.get(want) {
        let after = args.get(want.wrapping_sub(1)).unwrap_or(key);
        return Err(extra.pos.err(format!(
            "expected ';' after {}, found {}",
            after.describe(),
            extra.describe()
        )));
    }
    let Some(arg) = args.first() else {
        return match def.kind {
            Kind::Bool | Kind::Flag => Ok((Value::Bool(true), "yes".into())),
            _ => Err(key.pos.err(format!("'{name}' needs a value"))),
        };
    };
    let text = arg.text().unwrap_or("");
    let at = |m: String| arg.pos.err(m);
    match def.kind {
        Kind::Bool | Kind::Flag => match text {
            "yes" => Ok((Value::Bool(true), "yes".into())),
            "no" => Ok((Value::Bool(false), "no".into())),
            _ => Err(at(format!(
                "bad value '{text}' for '{name}': expected yes or no"
            ))),
        },
        Kind::Num { min, max, unit } => {
            let n = parse_number(text, unit).map_err(|e| at(number_error(e, text, name, unit)))?;
            if n < min || n > max {
                return Err(at(format!(
                    "value {n} for '{name}' is out of range ({min}..{max}{})",
                    if unit == Unit::Count {
                        String::new()
                    } else {
                        format!(",{}", unit.describe().replacen(' ', " in ", 1))
                    }
                )));
            }
            Ok((Value::Num(n), text.to_string()))
        }
        Kind::Enum(words) => {
            // protocol is case-insensitive in drbd-utils.
            let t = if name == "protocol" {
                text.to_ascii_uppercase()
            } else {
                text.to_string()
            };
            let node_discard = name == "after-sb-0pri"
                && t.strip_prefix("discard-node-")
                    .is_some_and(|h| !h.is_empty());
            if words.contains(&t.as_str()) || node_discard {
                Ok((Value::Word(t.clone()), t))
            } else {
                Err(at(format!(
                    "bad value '{text}' for '{name}': expected one of {}{}{}",
                    words.join(", "),
                    if name == "after-sb-0pri" {
                        ", discard-node-NAME"
                    } else {
                        ""
                    },
                    did_you_mean(text, words.iter().copied())
                )))
            }
        }
        Kind::EnumNum { words, min, max } => {
            if words.contains(&text) {
                return Ok((Value::Word(text.to_string()), text.to_string()));
            }
            match text.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok((Value::Num(n), text.to_string())),
                _ => Err(at(format!(
                    "bad value '{text}' for '{name}': expected {} or a number {min}..{max}",
                    words.join(", ")
                ))),
            }
        }
        Kind::Str { max_len } => {
            if let Some(max) = max_len
                && text.chars().count() > max
            {
                return Err(at(format!(
                    "'{name}' is too long ({} characters, at most {max})",
                    text.chars().count()
                )));
            }
            Ok((Value::Word(text.to_string()), text.to_string()))
        }
        Kind::SockAddr => match super::addr::parse_sockaddr(text) {
            Some(a) => Ok((Value::Word(a.to_string()), a.to_string())),
            None => Err(at(format!(
                "bad address '{text}' for '{name}': expected IP:PORT (IPv6 as [ADDR]:PORT)"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_number("25M", Unit::KiB), Ok(25600));
        assert_eq!(parse_number("", Unit::KiB), Err(NumError::Malformed));
        assert_eq!(parse_number("5M", Unit::Seconds), Err(NumError::BadUnit));
        assert_eq!(parse_number("250", Unit::KiB), Ok(250));
        assert_eq!(parse_number("1M", Unit::Sectors), Ok(2048));
        assert_eq!(parse_number("2K", Unit::Bytes), Ok(2048));
        assert_eq!(parse_number("2k", Unit::Bytes), Ok(2048));
        assert!(parse_number("5M", Unit::Tenths).is_err());
        assert!(parse_number("25X", Unit::KiB).is_err());
        assert!(parse_number("x", Unit::Count).is_err());
        assert!(parse_number("99999999999999999999G", Unit::Bytes).is_err());
    }

    #[test]
    fn table_is_consistent() {
        for a in ALIASES {
            assert!(
                lookup(a.to, a.new).is_some(),
                "alias {} -> {}",
                a.old,
                a.new
            );
        }
        for (i, o) in OPTIONS.iter().enumerate() {
            assert!(
                !OPTIONS[..i]
                    .iter()
                    .any(|p| p.sect == o.sect && p.name == o.name),
                "{}",
                o.name
            );
        }
    }
}
