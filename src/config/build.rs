//! Gives the statement tree its meaning: which keyword may appear where, option values, old
//! spellings translated, implicit volume 0. Cross-checks that need the whole resource live in
//! `validate`.

use super::addr::{parse_address, parse_sockaddr};
use super::ast::{Body, Stmt};
use super::dump::quote;
use super::error::{ConfigError, did_you_mean};
use super::lexer::{TokKind, Token};
use super::model::*;
use super::options::{self, OptDef, PEER_DEVICE, Sect, Value};
use crate::types::{MAX_NODE_ID, MetaDisk};

/// Highest volume number DRBD accepts (`DRBD_VOLUME_MAX`).
const VOLUME_MAX: u32 = 65534;
/// Highest minor (`DRBD_MINOR_NUMBER_MAX`).
const MINOR_MAX: u32 = (1 << 20) - 1;

fn is_note(st: &Stmt) -> Option<&str> {
    match &st.key.kind {
        TokKind::Note(n) => Some(n),
        _ => None,
    }
}

/// The `{ }` of a section keyword.
fn body_of(st: &Stmt) -> Result<&Body, ConfigError> {
    st.body.as_ref().ok_or_else(|| {
        let last = st.args.last().unwrap_or(&st.key);
        last.pos.err(format!(
            "expected '{{' after {} ('{}' is a section)",
            last.describe(),
            st.name()
        ))
    })
}

/// Rejects a body on a parameter keyword: the `;` before it was forgotten.
fn no_body(st: &Stmt) -> Result<(), ConfigError> {
    match &st.body {
        Some(b) => {
            let last = st.args.last().unwrap_or(&st.key);
            Err(b.open.err(format!(
                "expected ';' after {}, found '{{'",
                last.describe()
            )))
        }
        None => Ok(()),
    }
}

/// Exactly `n` arguments; the first extra one is reported as a missing `;`.
fn args_n<'a>(st: &'a Stmt, n: usize, what: &str) -> Result<&'a [Token], ConfigError> {
    if st.args.len() < n {
        let last = st.args.last().unwrap_or(&st.key);
        return Err(last.pos.err(format!("'{}' needs {what}", st.name())));
    }
    if let Some(extra) = st.args.get(n) {
        let after = st.args.get(n.wrapping_sub(1)).unwrap_or(&st.key);
        let sep = if st.body.is_some() { "'{'" } else { "';'" };
        return Err(extra.pos.err(format!(
            "expected {sep} after {}, found {}",
            after.describe(),
            extra.describe()
        )));
    }
    Ok(&st.args[..n])
}

fn text(t: &Token) -> &str {
    t.text().unwrap_or("")
}

fn number(t: &Token, what: &str, max: u32) -> Result<u32, ConfigError> {
    match text(t).parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        Ok(n) => Err(t.pos.err(format!("{what} {n} is out of range (0..{max})"))),
        Err(_) => Err(t
            .pos
            .err(format!("bad {what} '{}': expected a number", text(t)))),
    }
}

/// Keywords of `drbdsetup show` output (which drbdadm reads back for `adjust`).
const SHOW_SYNTAX: &[&str] = &[
    "_this_host",
    "_remote_host",
    "_peer_node_id",
    "_cstate",
    "_unknown",
    "_name",
];

fn unknown(st: &Stmt, context: &str, known: &[&str]) -> ConfigError {
    let name = st.name();
    if name == "include" {
        return st.pos().err(format!(
            "'include' is only allowed at top level, not inside {context}"
        ));
    }
    if name == "proxy" {
        return st
            .pos()
            .err("'proxy' (DRBD Proxy) is not supported by udrbd");
    }
    if SHOW_SYNTAX.contains(&name) {
        return st.pos().err(format!(
            "'{name}' (the syntax of `drbdsetup show` output) is not supported by udrbd in a \
             configuration: name the hosts with 'on NAME {{ }}' and 'host NAME'"
        ));
    }
    st.pos().err(format!(
        "unknown keyword '{name}' in {context}{}",
        did_you_mean(name, known.iter().copied())
    ))
}

/// Where an option parsed in one section ends up.
type Sink<'a> = dyn FnMut(Sect, OptEntry, &Stmt) -> Result<(), ConfigError> + 'a;

/// One option statement in section `sect` (handles old spellings and records a note for them).
fn option_stmt(
    sect: Sect,
    st: &Stmt,
    sink: &mut Sink<'_>,
    notes: &mut Vec<String>,
) -> Result<(), ConfigError> {
    no_body(st)?;
    let name = st.name();
    if let Some(def) = options::lookup(sect, name) {
        let (value, text) = options::parse_value(def, &st.key, &st.args)?;
        return sink(
            sect,
            OptEntry {
                name: def.name,
                text,
                value,
                pos: st.pos().clone(),
            },
            st,
        );
    }
    if let Some(alias) = options::lookup_alias(sect, name) {
        let Some(def) = options::lookup(alias.to, alias.new) else {
            return Err(st.pos().err(format!("internal: no option '{}'", alias.new)));
        };
        let (value, text) = match alias.value {
            Some(v) => {
                args_n(st, 0, "no value")?;
                (Value::Bool(v == "yes"), v.to_string())
            }
            None => options::parse_value(def, &st.key, &st.args)?,
        };
        let written: Vec<String> = st.args.iter().map(|a| quote(text_of(a))).collect();
        let old = if written.is_empty() {
            name.to_string()
        } else {
            format!("{name} {}", written.join(" "))
        };
        notes.push(format!(
            "# {} {{ {old}; }} translated to {} {{ {} {}; }}",
            sect.keyword(),
            alias.to.keyword(),
            def.name,
            quote(&text)
        ));
        return sink(
            alias.to,
            OptEntry {
                name: def.name,
                text,
                value,
                pos: st.pos().clone(),
            },
            st,
        );
    }
    if sect == Sect::Global && options::lookup(Sect::TopLevel, name).is_some() {
        return Err(st.pos().err(format!(
            "'{name}' is written at top level, outside any section, not in global"
        )));
    }
    let known: Vec<&str> = options::names_in(sect).collect();
    Err(unknown(st, &format!("section {}", sect.keyword()), &known))
}

/// `require-drbd-module-version-OP MAJOR.MINOR.SUBLEVEL;` (the version as drbd-utils reads it).
fn module_version(st: &Stmt, cfg: &mut Config) -> Result<(), ConfigError> {
    let mut sink = |_: Sect, e: OptEntry, st: &Stmt| {
        let parts: Vec<&str> = e.text.split('.').collect();
        let ok = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            let at = st.args.first().map_or(st.pos(), |a| &a.pos);
            return Err(at.err(format!(
                "bad version '{}' for '{}': expected MAJOR.MINOR.SUBLEVEL, as in 9.2.0",
                e.text, e.name
            )));
        }
        cfg.module_version.set(e);
        Ok(())
    };
    option_stmt(Sect::TopLevel, st, &mut sink, &mut Vec::new())
}

fn text_of(t: &Token) -> &str {
    t.text().unwrap_or("")
}

/// Every statement of an option section.
fn option_section(
    sect: Sect,
    body: &Body,
    sink: &mut Sink<'_>,
    notes: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for st in &body.stmts {
        if is_note(st).is_some() || st.name() == "skip" {
            continue;
        }
        option_stmt(sect, st, sink, notes)?;
    }
    Ok(())
}

fn sect_of(name: &str) -> Option<Sect> {
    Some(match name {
        "net" => Sect::Net,
        "disk" => Sect::Disk,
        "options" => Sect::Options,
        "startup" => Sect::Startup,
        "handlers" => Sect::Handlers,
        "syncer" => Sect::Syncer,
        _ => return None,
    })
}

/// An option section or `protocol X;` inside common/resource; `Ok(false)` if `st` is neither.
fn sections_stmt(
    st: &Stmt,
    secs: &mut Sections,
    notes: &mut Vec<String>,
) -> Result<bool, ConfigError> {
    let mut sink = |s: Sect, e: OptEntry, _: &Stmt| {
        if let Some(b) = secs.block_mut(s) {
            b.set(e);
        }
        Ok(())
    };
    if st.name() == "protocol" {
        // 8.4: `protocol C;` directly in common/resource means net { protocol C; }.
        option_stmt(Sect::Net, st, &mut sink, &mut Vec::new())?;
        let v = secs
            .net
            .get("protocol")
            .map(|e| e.text.clone())
            .unwrap_or_default();
        notes.push(format!(
            "# protocol {v}; translated to net {{ protocol {v}; }}"
        ));
        return Ok(true);
    }
    let Some(sect) = sect_of(st.name()) else {
        return Ok(false);
    };
    if sect == Sect::Disk && st.body.is_none() {
        return Ok(false); // `disk PATH;`: the caller's implicit volume 0
    }
    args_n(st, 0, "no name")?;
    option_section(sect, body_of(st)?, &mut sink, notes)?;
    Ok(true)
}

const COMMON_KEYWORDS: &[&str] = &[
    "net", "disk", "options", "startup", "handlers", "syncer", "protocol",
];

/// Builds the configuration from the statements of all files (includes already spliced in).
pub fn build(stmts: &[Stmt]) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    let mut seen_global: Option<&Stmt> = None;
    let mut seen_common: Option<&Stmt> = None;
    for st in stmts {
        if is_note(st).is_some() {
            continue;
        }
        match st.name() {
            "skip" => {}
            "global" => {
                if let Some(first) = seen_global {
                    return Err(st.pos().err(format!(
                        "second 'global' section (the first is at {})",
                        first.pos()
                    )));
                }
                seen_global = Some(st);
                args_n(st, 0, "no name")?;
                let mut sink = |_: Sect, e: OptEntry, _: &Stmt| {
                    cfg.global.set(e);
                    Ok(())
                };
                option_section(Sect::Global, body_of(st)?, &mut sink, &mut Vec::new())?;
            }
            "common" => {
                if let Some(first) = seen_common {
                    return Err(st.pos().err(format!(
                        "second 'common' section (the first is at {})",
                        first.pos()
                    )));
                }
                seen_common = Some(st);
                args_n(st, 0, "no name")?;
                for inner in &body_of(st)?.stmts {
                    if let Some(n) = is_note(inner) {
                        cfg.common.notes.push(n.to_string());
                        continue;
                    }
                    if inner.name() == "skip" {
                        continue;
                    }
                    if !sections_stmt(inner, &mut cfg.common.sections, &mut cfg.common.notes)? {
                        return Err(unknown(inner, "section common", COMMON_KEYWORDS));
                    }
                }
            }
            "resource" => {
                let res = resource(st)?;
                if let Some(first) = cfg.resource(&res.name) {
                    return Err(st.pos().err(format!(
                        "duplicate resource '{}' (first defined at {})",
                        res.name, first.pos
                    )));
                }
                cfg.resources.push(res);
            }
            "include" => return Err(st.pos().err("'include' is not resolved here (use load)")),
            name if options::lookup(Sect::TopLevel, name).is_some() => {
                module_version(st, &mut cfg)?
            }
            name => {
                let known = ["global", "common", "resource", "include"]
                    .into_iter()
                    .chain(options::names_in(Sect::TopLevel));
                let hint = match did_you_mean(name, known) {
                    s if s.is_empty() => " (expected global, common, resource, include or \
                                          require-drbd-module-version-*)"
                        .to_string(),
                    s => s,
                };
                return Err(st
                    .pos()
                    .err(format!("unknown keyword '{name}' at top level{hint}")));
            }
        }
    }
    super::validate::validate(&mut cfg)?;
    Ok(cfg)
}

const RESOURCE_KEYWORDS: &[&str] = &[
    "net",
    "disk",
    "options",
    "startup",
    "handlers",
    "syncer",
    "protocol",
    "device",
    "meta-disk",
    "volume",
    "on",
    "floating",
    "connection",
    "connection-mesh",
];

fn resource(st: &Stmt) -> Result<Resource, ConfigError> {
    let name = text(&args_n(st, 1, "a name")?[0]).to_string();
    let body = body_of(st)?;
    let mut res = Resource {
        name,
        pos: st.pos().clone(),
        sections: Sections::default(),
        notes: Vec::new(),
        volumes: Vec::new(),
        hosts: Vec::new(),
        connections: Vec::new(),
        mesh: None,
    };
    let ctx = format!("resource {}", res.name);
    for inner in &body.stmts {
        if let Some(n) = is_note(inner) {
            res.notes.push(n.to_string());
            continue;
        }
        if sections_stmt(inner, &mut res.sections, &mut res.notes)? {
            continue;
        }
        match inner.name() {
            "skip" => {}
            "device" | "disk" | "meta-disk" => {
                implicit_volume(inner, &mut res.volumes, &mut res.notes)?
            }
            "volume" => {
                let v = volume(inner, &mut res.notes)?;
                push_volume(&mut res.volumes, v, inner)?;
            }
            "on" | "floating" => {
                let h = host(inner, &mut res.notes)?;
                if let Some(first) = res.hosts.iter().find(|x| x.name == h.name) {
                    return Err(inner.pos().err(format!(
                        "host '{}' is defined twice in resource {} (first at {})",
                        h.name, res.name, first.pos
                    )));
                }
                res.hosts.push(h);
            }
            "connection" => {
                let c = connection(inner, &mut res.notes)?;
                res.connections.push(c);
            }
            "connection-mesh" => {
                if res.mesh.is_some() {
                    return Err(inner.pos().err("second 'connection-mesh' in this resource"));
                }
                res.mesh = Some(mesh(inner, &mut res.notes)?);
            }
            "stacked-on-top-of" | "template-file" => {
                return Err(inner
                    .pos()
                    .err(format!("'{}' is not supported by udrbd", inner.name())));
            }
            _ => return Err(unknown(inner, &ctx, RESOURCE_KEYWORDS)),
        }
    }
    Ok(res)
}

fn push_volume(list: &mut Vec<VolumeCfg>, v: VolumeCfg, st: &Stmt) -> Result<(), ConfigError> {
    if let Some(first) = list.iter().find(|x| x.number == v.number) {
        return Err(st.pos().err(format!(
            "duplicate volume {} (first at {})",
            v.number, first.pos
        )));
    }
    list.push(v);
    Ok(())
}

/// `device`/`disk`/`meta-disk` written outside `volume { }`: they describe volume 0.
fn implicit_volume(
    st: &Stmt,
    list: &mut Vec<VolumeCfg>,
    notes: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let idx = match list.iter().position(|v| v.number == 0) {
        Some(i) if list[i].implicit => i,
        Some(i) => {
            return Err(st.pos().err(format!(
                "'{}' outside a volume section describes volume 0, which is already defined at {}",
                st.name(),
                list[i].pos
            )));
        }
        None => {
            list.push(VolumeCfg::new(0, st.pos().clone(), true));
            list.len() - 1
        }
    };
    volume_stmt(st, &mut list[idx], notes)
}

fn volume(st: &Stmt, notes: &mut Vec<String>) -> Result<VolumeCfg, ConfigError> {
    let n = number(
        &args_n(st, 1, "a volume number")?[0],
        "volume number",
        VOLUME_MAX,
    )?;
    let mut v = VolumeCfg::new(n, st.pos().clone(), false);
    for inner in &body_of(st)?.stmts {
        if is_note(inner).is_some() || inner.name() == "skip" {
            continue;
        }
        volume_stmt(inner, &mut v, notes)?;
    }
    Ok(v)
}

fn once<T>(slot: &Option<T>, st: &Stmt) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(st
            .pos()
            .err(format!("'{}' is given twice for this volume", st.name())));
    }
    Ok(())
}

/// One statement of a volume (or of the implicit volume 0).
fn volume_stmt(st: &Stmt, v: &mut VolumeCfg, notes: &mut Vec<String>) -> Result<(), ConfigError> {
    match st.name() {
        "disk" if st.body.is_some() => {
            args_n(st, 0, "no name")?;
            let mut sink = |s: Sect, e: OptEntry, st: &Stmt| {
                if s != Sect::Disk {
                    return Err(st.pos().err(format!(
                        "'{}' belongs in the {} section, not in a volume's disk section",
                        st.name(),
                        s.keyword()
                    )));
                }
                v.disk_opts.set(e);
                Ok(())
            };
            option_section(Sect::Disk, body_of(st)?, &mut sink, notes)
        }
        "device" => {
            no_body(st)?;
            once(&v.device, st)?;
            v.device = Some(device(st)?);
            Ok(())
        }
        "disk" => {
            no_body(st)?;
            once(&v.disk, st)?;
            let a = &args_n(st, 1, "a device path or 'none'")?[0];
            v.disk = Some(match (&a.kind, text(a)) {
                (TokKind::Word(_), "none") => DiskCfg::None,
                (_, p) => DiskCfg::Path(p.to_string()),
            });
            Ok(())
        }
        "meta-disk" => {
            no_body(st)?;
            once(&v.meta_disk, st)?;
            v.meta_disk = Some(meta_disk(st)?);
            Ok(())
        }
        "tiebreaker" => {
            no_body(st)?;
            let def = OptDef {
                name: "tiebreaker",
                sect: Sect::Disk,
                kind: options::Kind::Bool,
                default: Some("yes"),
            };
            let (val, _) = options::parse_value(&def, &st.key, &st.args)?;
            v.tiebreaker = Some(val == Value::Bool(true));
            Ok(())
        }
        _ => Err(unknown(
            st,
            &format!("volume {}", v.number),
            &["device", "disk", "meta-disk", "tiebreaker"],
        )),
    }
}

/// `device /dev/drbdN`, `device minor N`, `device /dev/drbdN minor N`.
fn device(st: &Stmt) -> Result<DeviceCfg, ConfigError> {
    let a = &st.args;
    let minor_of = |t: &Token| number(t, "minor", MINOR_MAX);
    match a.len() {
        0 => Err(st.pos().err("'device' needs /dev/drbdN or 'minor N'")),
        _ if text(&a[0]) == "minor" && matches!(a[0].kind, TokKind::Word(_)) => {
            let n = args_n(st, 2, "a minor number")?;
            Ok(DeviceCfg {
                path: None,
                minor: minor_of(&n[1])?,
            })
        }
        1 => {
            let path = text(&a[0]);
            let digits = path.len() - path.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let tail = path.get(path.len() - digits..).unwrap_or("");
            match tail.parse::<u32>() {
                Ok(m) if m <= MINOR_MAX && !tail.is_empty() => Ok(DeviceCfg {
                    path: Some(path.to_string()),
                    minor: m,
                }),
                _ => Err(a[0].pos.err(format!(
                    "cannot tell the minor number from '{path}': write 'device {path} minor N'"
                ))),
            }
        }
        _ => {
            if text(&a[1]) != "minor" {
                return Err(a[1].pos.err(format!(
                    "expected ';' or 'minor' after {}, found {}",
                    a[0].describe(),
                    a[1].describe()
                )));
            }
            let n = args_n(st, 3, "a minor number after 'minor'")?;
            Ok(DeviceCfg {
                path: Some(text(&n[0]).to_string()),
                minor: minor_of(&n[2])?,
            })
        }
    }
}

/// `meta-disk internal | PATH | PATH [N]`.
fn meta_disk(st: &Stmt) -> Result<MetaDisk, ConfigError> {
    let a = &st.args;
    let Some(first) = a.first() else {
        return Err(st
            .pos()
            .err("'meta-disk' needs 'internal' or a device path"));
    };
    if text(first) == "internal" {
        args_n(st, 1, "internal")?;
        return Ok(MetaDisk::Internal);
    }
    let path = text(first).to_string();
    match a.get(1) {
        None => Ok(MetaDisk::External { path, index: None }),
        Some(idx) => {
            args_n(st, 2, "a path and an index")?;
            let inner = text(idx)
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'));
            match inner.and_then(|s| s.parse::<u32>().ok()) {
                Some(i) => Ok(MetaDisk::External {
                    path,
                    index: Some(i),
                }),
                None => Err(idx
                    .pos
                    .err(format!("bad meta-disk index '{}': expected [N]", text(idx)))),
            }
        }
    }
}

const HOST_KEYWORDS: &[&str] = &[
    "node-id",
    "address",
    "volume",
    "device",
    "disk",
    "meta-disk",
    "nbd-listen",
];

/// `on NAME { }` or `floating [af] ADDR:PORT { }`.
fn host(st: &Stmt, notes: &mut Vec<String>) -> Result<HostCfg, ConfigError> {
    let floating = st.name() == "floating";
    let (name, address) = if floating {
        let a = parse_address(&st.key, &st.args)?;
        (a.to_string(), Some(a))
    } else {
        (text(&args_n(st, 1, "a host name")?[0]).to_string(), None)
    };
    let mut h = HostCfg {
        name,
        pos: st.pos().clone(),
        floating,
        node_id: None,
        implicit_node_id: false,
        address,
        nbd_listen: None,
        volumes: Vec::new(),
    };
    for inner in &body_of(st)?.stmts {
        if is_note(inner).is_some() {
            continue;
        }
        match inner.name() {
            "skip" => {}
            "node-id" => {
                no_body(inner)?;
                let n = number(
                    &args_n(inner, 1, "a number")?[0],
                    "node-id",
                    u32::from(MAX_NODE_ID),
                )?;
                h.node_id = u8::try_from(n).ok();
            }
            "address" if !floating => {
                no_body(inner)?;
                if h.address.is_some() {
                    return Err(inner
                        .pos()
                        .err(format!("'address' is given twice for host '{}'", h.name)));
                }
                h.address = Some(parse_address(&inner.key, &inner.args)?);
            }
            "nbd-listen" => {
                no_body(inner)?;
                let a = &args_n(inner, 1, "ADDR:PORT")?[0];
                h.nbd_listen = Some(parse_sockaddr(text(a)).ok_or_else(|| {
                    a.pos.err(format!(
                        "bad address '{}' for 'nbd-listen': expected IP:PORT (IPv6 as [ADDR]:PORT)",
                        text(a)
                    ))
                })?);
            }
            "volume" => {
                let v = volume(inner, notes)?;
                push_volume(&mut h.volumes, v, inner)?;
            }
            "device" | "disk" | "meta-disk" => implicit_volume(inner, &mut h.volumes, notes)?,
            _ => {
                return Err(unknown(
                    inner,
                    &format!("host section '{}'", h.name),
                    HOST_KEYWORDS,
                ));
            }
        }
    }
    Ok(h)
}

/// `host NAME [address [af] ADDR:PORT] [port P] [via outside-address [af] ADDR:PORT];`
fn conn_host(st: &Stmt) -> Result<ConnHost, ConfigError> {
    let name_tok = st
        .args
        .first()
        .ok_or_else(|| st.pos().err("'host' needs a host name"))?;
    let mut ch = ConnHost {
        name: text(name_tok).to_string(),
        pos: name_tok.pos.clone(),
        address: None,
        port: None,
        outside: None,
    };
    let mut rest = &st.args[1..];
    while let Some(kw) = rest.first() {
        match text(kw) {
            "address" => {
                // The address is the rest up to `port` or `via` (an optional family word and
                // ADDR:PORT).
                let end = rest
                    .iter()
                    .skip(1)
                    .position(|t| matches!(text(t), "port" | "via"))
                    .map_or(rest.len(), |p| p + 1);
                ch.address = Some(parse_address(kw, &rest[1..end])?);
                rest = &rest[end..];
            }
            "port" => {
                let p = rest
                    .get(1)
                    .ok_or_else(|| kw.pos.err("'port' needs a number"))?;
                let n = number(p, "port", 65535)?;
                ch.port = u16::try_from(n).ok().filter(|&p| p > 0);
                if ch.port.is_none() {
                    return Err(p.pos.err("port 0 is not allowed"));
                }
                rest = &rest[2..];
            }
            "via" => match rest.get(1).map(text) {
                Some("proxy") => {
                    return Err(kw
                        .pos
                        .err("'via proxy' (DRBD Proxy) is not supported by udrbd"));
                }
                Some("outside-address") => {
                    // The address ends the statement.
                    ch.outside = Some(parse_address(&rest[1], &rest[2..])?);
                    rest = &[];
                }
                _ => {
                    return Err(kw.pos.err(format!(
                        "expected 'outside-address' or 'proxy' after 'via', found {}",
                        rest.get(1).map_or("';'".to_string(), Token::describe)
                    )));
                }
            },
            _ => {
                return Err(kw.pos.err(format!(
                    "expected 'address', 'port', 'via' or ';' in 'host {}', found {}",
                    ch.name,
                    kw.describe()
                )));
            }
        }
    }
    no_body(st)?;
    Ok(ch)
}

fn connection(st: &Stmt, notes: &mut Vec<String>) -> Result<ConnCfg, ConfigError> {
    let name = match st.args.len() {
        0 => None,
        _ => Some(text(&args_n(st, 1, "at most a name")?[0]).to_string()),
    };
    let mut c = ConnCfg {
        name,
        pos: st.pos().clone(),
        hosts: Vec::new(),
        paths: Vec::new(),
        net: OptBlock::default(),
        disk: OptBlock::default(),
        volumes: Vec::new(),
        implicit: false,
    };
    for inner in &body_of(st)?.stmts {
        if is_note(inner).is_some() {
            continue;
        }
        match inner.name() {
            "skip" => {}
            "host" => c.hosts.push(conn_host(inner)?),
            "path" => {
                args_n(inner, 0, "no name")?;
                let mut p = Vec::new();
                for h in &body_of(inner)?.stmts {
                    if is_note(h).is_some() || h.name() == "skip" {
                        continue;
                    }
                    if h.name() != "host" {
                        return Err(unknown(h, "section path", &["host"]));
                    }
                    p.push(conn_host(h)?);
                }
                c.paths.push(p);
            }
            "net" | "disk" => {
                args_n(inner, 0, "no name")?;
                let sect = if inner.name() == "net" {
                    Sect::Net
                } else {
                    Sect::Disk
                };
                let (net, disk) = (&mut c.net, &mut c.disk);
                let mut sink = |s: Sect, e: OptEntry, st: &Stmt| peer_sink(s, e, st, net, disk);
                option_section(sect, body_of(inner)?, &mut sink, notes)?;
            }
            "volume" => {
                let n = number(
                    &args_n(inner, 1, "a volume number")?[0],
                    "volume number",
                    VOLUME_MAX,
                )?;
                let mut block = OptBlock::default();
                for d in &body_of(inner)?.stmts {
                    if is_note(d).is_some() || d.name() == "skip" {
                        continue;
                    }
                    if d.name() != "disk" || d.body.is_none() {
                        return Err(unknown(d, &format!("connection volume {n}"), &["disk"]));
                    }
                    args_n(d, 0, "no name")?;
                    let mut net_unused = OptBlock::default();
                    let mut sink = |s: Sect, e: OptEntry, st: &Stmt| {
                        peer_sink(s, e, st, &mut net_unused, &mut block)
                    };
                    option_section(Sect::Disk, body_of(d)?, &mut sink, notes)?;
                }
                if c.volumes.iter().any(|(m, _)| *m == n) {
                    return Err(inner
                        .pos()
                        .err(format!("duplicate volume {n} in this connection")));
                }
                c.volumes.push((n, block));
            }
            _ => {
                return Err(unknown(
                    inner,
                    "section connection",
                    &["host", "path", "net", "disk", "volume"],
                ));
            }
        }
    }
    Ok(c)
}

/// Options set per connection: net options, and of the disk options only the peer-device ones.
fn peer_sink(
    s: Sect,
    e: OptEntry,
    st: &Stmt,
    net: &mut OptBlock,
    disk: &mut OptBlock,
) -> Result<(), ConfigError> {
    match s {
        Sect::Net => net.set(e),
        Sect::Disk if PEER_DEVICE.contains(&e.name) => disk.set(e),
        _ => {
            return Err(st.pos().err(format!(
                "'{}' can not be set per connection (only {} can)",
                e.name,
                PEER_DEVICE.join(", ")
            )));
        }
    }
    Ok(())
}

fn mesh(st: &Stmt, notes: &mut Vec<String>) -> Result<MeshCfg, ConfigError> {
    args_n(st, 0, "no name")?;
    let mut m = MeshCfg {
        pos: st.pos().clone(),
        hosts: Vec::new(),
        net: OptBlock::default(),
    };
    for inner in &body_of(st)?.stmts {
        if is_note(inner).is_some() {
            continue;
        }
        match inner.name() {
            "skip" => {}
            "hosts" => {
                no_body(inner)?;
                m.hosts.extend(
                    inner
                        .args
                        .iter()
                        .map(|t| (text(t).to_string(), t.pos.clone())),
                );
            }
            "net" => {
                args_n(inner, 0, "no name")?;
                let mut sink = |s: Sect, e: OptEntry, st: &Stmt| {
                    if s != Sect::Net {
                        return Err(st
                            .pos()
                            .err(format!("'{}' can not be set in a connection-mesh", e.name)));
                    }
                    m.net.set(e);
                    Ok(())
                };
                option_section(Sect::Net, body_of(inner)?, &mut sink, notes)?;
            }
            _ => return Err(unknown(inner, "section connection-mesh", &["hosts", "net"])),
        }
    }
    Ok(m)
}
