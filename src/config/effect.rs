//! The options udrbd parses (so that existing DRBD configurations load) but does not act on.
//! None is ignored in silence: `up` and `adjust` warn about each one a resource sets (with
//! the file and line), and `dump` marks it with a comment. An option that is set to what udrbd
//! does anyway (`use-rle yes`, `quorum off`) draws no warning.

use super::model::{Config, OptBlock, OptEntry, Sections};
use super::options::{Sect, Value};

/// One option without effect.
#[derive(Debug, Clone, Copy)]
pub struct NoEffect {
    pub sect: Sect,
    pub name: &'static str,
    /// The value udrbd's behaviour matches: no warning for it.
    pub unless: Option<&'static str>,
    /// Why, or what udrbd does instead.
    pub why: &'static str,
}

macro_rules! none {
    ($sect:ident, $name:literal, $unless:expr, $why:expr) => {
        NoEffect {
            sect: Sect::$sect,
            name: $name,
            unless: $unless,
            why: $why,
        }
    };
}

const NO_MODULE: &str = "udrbd has no kernel module";
const NO_VERSION: &str = "udrbd has no kernel module whose version could be checked";

/// Every option udrbd does not act on (the README lists them).
pub static NO_EFFECT: &[NoEffect] = &[
    none!(Global, "usage-count", Some("no"), "udrbd reports no usage"),
    none!(
        Global,
        "disable-ip-verification",
        None,
        "drbdadm does not verify addresses; a wrong one fails when the daemon binds it"
    ),
    none!(Global, "dialog-refresh", None, "drbdadm shows no dialogs"),
    none!(Global, "minor-count", None, NO_MODULE),
    none!(
        Global,
        "cmd-timeout-short",
        None,
        "drbdadm waits for the daemon's answer"
    ),
    none!(
        Global,
        "cmd-timeout-medium",
        None,
        "drbdadm waits for the daemon's answer"
    ),
    none!(
        Global,
        "cmd-timeout-long",
        None,
        "drbdadm waits for the daemon's answer"
    ),
    none!(TopLevel, "require-drbd-module-version-eq", None, NO_VERSION),
    none!(TopLevel, "require-drbd-module-version-ne", None, NO_VERSION),
    none!(TopLevel, "require-drbd-module-version-gt", None, NO_VERSION),
    none!(TopLevel, "require-drbd-module-version-ge", None, NO_VERSION),
    none!(TopLevel, "require-drbd-module-version-lt", None, NO_VERSION),
    none!(TopLevel, "require-drbd-module-version-le", None, NO_VERSION),
    none!(
        Net,
        "max-epoch-size",
        None,
        "an epoch closes after 256 writes or at a flush"
    ),
    none!(
        Net,
        "tcp-cork",
        None,
        "links set TCP_NODELAY and batch their writes themselves"
    ),
    none!(
        Net,
        "on-congestion",
        Some("block"),
        "a congested link always blocks new writes (no Ahead/Behind)"
    ),
    none!(
        Net,
        "congestion-fill",
        Some("0"),
        "a congested link always blocks new writes (no Ahead/Behind)"
    ),
    none!(
        Net,
        "congestion-extents",
        None,
        "a congested link always blocks new writes (no Ahead/Behind)"
    ),
    none!(
        Net,
        "csums-after-crash-only",
        Some("no"),
        "csums-alg is used for every resync"
    ),
    none!(
        Net,
        "use-rle",
        Some("yes"),
        "bitmaps are always sent run-length encoded"
    ),
    none!(
        Net,
        "socket-check-timeout",
        None,
        "the link's own handshake settles which socket wins"
    ),
    none!(
        Net,
        "transport",
        Some("tcp"),
        "udrbd replicates over TCP only"
    ),
    none!(
        Net,
        "load-balance-paths",
        Some("no"),
        "a connection runs over one path at a time (each is tried in turn)"
    ),
    none!(
        Disk,
        "disk-barrier",
        Some("no"),
        "a kernel block-layer setting; udrbd orders writes with flushes"
    ),
    none!(
        Disk,
        "disk-drain",
        None,
        "a kernel block-layer setting; udrbd orders writes with flushes"
    ),
    none!(
        Disk,
        "resync-after",
        None,
        "resources resync independently of each other"
    ),
    none!(
        Disk,
        "al-updates",
        Some("yes"),
        "the activity log is always written"
    ),
    none!(
        Disk,
        "discard-zeroes-if-aligned",
        None,
        "a kernel discard setting; NBD trim and write-zeroes keep their own meaning"
    ),
    none!(
        Disk,
        "disable-write-same",
        None,
        "a kernel block-layer setting"
    ),
    none!(
        Disk,
        "disk-timeout",
        Some("0"),
        "backing-device I/O is not timed out"
    ),
    none!(
        Disk,
        "read-balancing",
        Some("prefer-local"),
        "reads are served locally (from a peer only for blocks out of sync, or by the \
         lowest-id UpToDate peer on a node without a disk)"
    ),
    none!(
        Disk,
        "rs-discard-granularity",
        Some("0"),
        "resync writes data, never discards"
    ),
    none!(
        Disk,
        "block-size",
        Some("512"),
        "udrbd's NBD exports advertise a 512-byte minimum block size"
    ),
    none!(
        Disk,
        "bitmap",
        Some("yes"),
        "a bitmap is always kept for every peer"
    ),
    none!(
        Options,
        "cpu-mask",
        None,
        "the daemon's threads are not pinned"
    ),
    none!(
        Options,
        "on-no-data-accessible",
        Some("io-error"),
        "I/O without access to UpToDate data fails"
    ),
    none!(
        Options,
        "peer-ack-window",
        None,
        "peers acknowledge each write themselves"
    ),
    none!(
        Options,
        "peer-ack-delay",
        None,
        "peers acknowledge each write themselves"
    ),
    none!(
        Options,
        "twopc-retry-timeout",
        None,
        "a deferred state change is retried when the running one ends"
    ),
    none!(
        Options,
        "max-io-depth",
        None,
        "each NBD connection keeps up to 128 requests in flight"
    ),
    none!(
        Options,
        "on-suspended-primary-outdated",
        None,
        "a Primary whose I/O is suspended for lack of quorum stays Primary until quorum returns, \
         resume-io or secondary --force"
    ),
    none!(
        Startup,
        "degr-wfc-timeout",
        None,
        "wait-connect waits wfc-timeout, also after a degraded Primary's reboot"
    ),
    none!(
        Startup,
        "outdated-wfc-timeout",
        None,
        "wait-connect waits wfc-timeout, also with Outdated data"
    ),
    none!(
        Startup,
        "wait-after-sb",
        None,
        "wait-connect keeps waiting after a split brain until its timeout"
    ),
    none!(
        Startup,
        "become-primary-on",
        None,
        "promote with `drbdadm primary` or the Pacemaker agent"
    ),
    none!(
        Startup,
        "stacked-timeouts",
        None,
        "stacked resources are not supported"
    ),
    none!(
        Handlers,
        "pri-on-incon-degr",
        None,
        "udrbd never calls this handler"
    ),
];

/// The value as the `unless` column writes it.
fn text(v: &Value) -> String {
    match v {
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Num(n) => n.to_string(),
        Value::Word(w) => w.clone(),
    }
}

/// The entry's note when it has no effect in udrbd.
pub fn no_effect(sect: Sect, e: &OptEntry) -> Option<&'static NoEffect> {
    // Peer-device options are written in `disk { }` but belong to no other section.
    NO_EFFECT.iter().find(|n| {
        n.sect == sect && n.name == e.name && n.unless.is_none_or(|u| u != text(&e.value))
    })
}

/// The warnings `up` and `adjust` print for `resource` (and for `global` and the top-level
/// `require-drbd-module-version-*` statements): one line per option
/// set without effect, `FILE:LINE:COL: NAME is accepted but has no effect in udrbd: WHY`.
pub fn warnings(cfg: &Config, resource: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut out_extra = Vec::new();
    let mut block = |sect: Sect, b: &OptBlock| {
        for e in &b.entries {
            if let Some(n) = no_effect(sect, e) {
                out.push(format!(
                    "{}: {} is accepted but has no effect in udrbd: {}",
                    e.pos, e.name, n.why
                ));
            }
        }
    };
    let sections = |s: &Sections, block: &mut dyn FnMut(Sect, &OptBlock)| {
        block(Sect::Net, &s.net);
        block(Sect::Disk, &s.disk);
        block(Sect::Options, &s.options);
        block(Sect::Startup, &s.startup);
        block(Sect::Handlers, &s.handlers);
    };
    block(Sect::Global, &cfg.global);
    block(Sect::TopLevel, &cfg.module_version);
    sections(&cfg.common.sections, &mut block);
    let Some(r) = cfg.resource(resource) else {
        return out;
    };
    sections(&r.sections, &mut block);
    for v in r
        .volumes
        .iter()
        .chain(r.hosts.iter().flat_map(|h| &h.volumes))
    {
        block(Sect::Disk, &v.disk_opts);
        if v.tiebreaker.is_some() {
            out_extra.push(format!(
                "{}: tiebreaker is accepted but has no effect in udrbd: diskless nodes \
                 do not break quorum ties in udrbd",
                v.pos
            ));
        }
    }
    if let Some(m) = &r.mesh {
        block(Sect::Net, &m.net);
    }
    for c in &r.connections {
        block(Sect::Net, &c.net);
        block(Sect::Disk, &c.disk);
        for (_, b) in &c.volumes {
            block(Sect::Disk, b);
        }
    }
    out.extend(out_extra);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    const CONF: &str = r#"
global { usage-count no; minor-count 8; }
common {
    net { tcp-cork no; use-rle yes; protocol C; }
    options { quorum off; }
}
resource r0 {
    options { twopc-retry-timeout 3; auto-promote no; }
    disk { read-balancing prefer-local; disk-barrier yes; c-max-rate 10M; }
    on a { node-id 0; address 127.0.0.1:7000; disk /dev/x; meta-disk internal; device minor 0; }
    on b { node-id 1; address 127.0.0.1:7001; disk /dev/y; meta-disk internal; device minor 0; }
}
"#;

    #[test]
    fn options_without_effect_are_named_with_their_place_and_matching_values_are_not() {
        let cfg = parse_str("t.conf", CONF).expect("parses");
        let w = warnings(&cfg, "r0");
        let names: Vec<&str> = w
            .iter()
            .map(|l| {
                let rest = l.split(": ").nth(1).unwrap_or_default();
                rest.split(' ').next().unwrap_or_default()
            })
            .collect();
        assert_eq!(
            names,
            [
                "minor-count",
                "tcp-cork",
                "disk-barrier",
                "twopc-retry-timeout"
            ],
            "{w:#?}"
        );
        assert!(
            w[1].starts_with("t.conf:4:")
                && w[1].contains("tcp-cork is accepted but has no effect in udrbd"),
            "{w:#?}"
        );
    }

    #[test]
    fn dump_marks_options_without_effect() {
        let cfg = parse_str("t.conf", CONF).expect("parses");
        let out = crate::config::dump(&cfg, Some("r0")).expect("dump");
        assert!(
            out.contains("# twopc-retry-timeout: accepted but has no effect in udrbd"),
            "{out}"
        );
        assert!(!out.contains("# auto-promote:"), "{out}");
        // Still a normal form: the comment goes away when parsed and comes back when dumped.
        let again = parse_str("t.conf", &out).expect("reparses");
        assert_eq!(crate::config::dump(&again, Some("r0")).expect("dump"), out);
    }
}
