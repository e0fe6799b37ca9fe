//! Prints a configuration back in drbd-utils' `drbdadm dump` style: 4-space indents, option
//! names padded to 16 columns, modern spellings (with a comment for each translated old one).
//! The output is a normal form: parsing and dumping it again gives the same bytes, which is why
//! there are no `# defined at file:line` comments (they would change on every round).

use super::addr::show;
use super::error::{ConfigError, Pos};
use super::model::*;
use super::options::{self, Kind};
use crate::types::MetaDisk;
use std::fmt::Write;

/// `s` as one token: bare when it reads back as the same word, else double-quoted.
pub fn quote(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !matches!(c, '{' | '}' | ';' | '"' | '#' | '\\'));
    if bare {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quotes words that would otherwise read as keywords (`disk "none"` is a path named none).
fn quote_path(s: &str, keyword: &str) -> String {
    if s == keyword {
        format!("\"{s}\"")
    } else {
        quote(s)
    }
}

struct Out {
    s: String,
    depth: usize,
    /// Print `shared-secret` as [`HIDDEN_SECRET`] (`drbdadm dump` without `--show-secrets`).
    hide_secrets: bool,
}

/// What `drbdadm dump` prints instead of a `shared-secret` unless asked for it.
pub const HIDDEN_SECRET: &str = "<hidden: drbdadm dump --show-secrets>";

impl Out {
    fn line(&mut self, text: &str) {
        for _ in 0..self.depth {
            self.s.push_str("    ");
        }
        self.s.push_str(text);
        self.s.push('\n');
    }
    fn open(&mut self, head: &str) {
        self.line(&format!("{head} {{"));
        self.depth += 1;
    }
    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.line("}");
    }
    /// `name value;` padded like drbdadm's `%-16s %3s;`.
    fn param(&mut self, width: usize, name: &str, value: &str) {
        self.line(&format!("{name:<width$} {value:>3};"));
    }
    fn block(&mut self, name: &str, b: &OptBlock) {
        if b.is_empty() {
            return;
        }
        let sect = OPT_SECTS.iter().copied().find(|s| s.keyword() == name);
        self.open(name);
        for e in &b.entries {
            if let Some(n) = sect.and_then(|s| super::effect::no_effect(s, e)) {
                self.line(&format!(
                    "# {}: accepted but has no effect in udrbd ({})",
                    e.name, n.why
                ));
            }
            let flag = OPT_SECTS
                .iter()
                .filter_map(|s| options::lookup(*s, e.name))
                .any(|d| d.kind == Kind::Flag);
            if flag {
                self.line(&format!("{};", e.name));
            } else if self.hide_secrets && e.name == "shared-secret" {
                self.param(16, e.name, &quote(HIDDEN_SECRET));
            } else {
                self.param(16, e.name, &quote(&e.text));
            }
        }
        self.close();
    }
    fn sections(&mut self, s: &Sections) {
        self.block("options", &s.options);
        self.block("net", &s.net);
        self.block("disk", &s.disk);
        self.block("startup", &s.startup);
        self.block("handlers", &s.handlers);
    }
}

const OPT_SECTS: &[options::Sect] = &[
    options::Sect::Global,
    options::Sect::Net,
    options::Sect::Disk,
    options::Sect::Options,
    options::Sect::Startup,
    options::Sect::Handlers,
];

fn volume_body(o: &mut Out, v: &VolumeCfg) {
    if let Some(d) = &v.device {
        let text = match &d.path {
            Some(p) => format!("{} minor {}", quote_path(p, "minor"), d.minor),
            None => format!("minor {}", d.minor),
        };
        o.param(20, "device", &text);
    }
    if let Some(d) = &v.disk {
        let text = match d {
            DiskCfg::None => "none".to_string(),
            DiskCfg::Path(p) => quote_path(p, "none"),
        };
        o.param(20, "disk", &text);
    }
    if let Some(m) = &v.meta_disk {
        let text = match m {
            MetaDisk::Internal => "internal".to_string(),
            MetaDisk::External { path, index: None } => quote_path(path, "internal"),
            MetaDisk::External {
                path,
                index: Some(i),
            } => format!("{} [{i}]", quote_path(path, "internal")),
        };
        o.param(20, "meta-disk", &text);
    }
    if let Some(t) = v.tiebreaker {
        o.param(20, "tiebreaker", if t { "yes" } else { "no" });
    }
    o.block("disk", &v.disk_opts);
}

fn volumes(o: &mut Out, vols: &[VolumeCfg]) {
    for v in vols {
        if v.implicit {
            volume_body(o, v);
        } else {
            o.open(&format!("volume {}", v.number));
            volume_body(o, v);
            o.close();
        }
    }
}

fn conn_host(ch: &ConnHost) -> String {
    let mut s = format!("host {}", quote(&ch.name));
    if let Some(a) = &ch.address {
        let _ = write!(s, " address {}", show(a));
    }
    if let Some(p) = ch.port {
        let _ = write!(s, " port {p}");
    }
    if let Some(a) = &ch.outside {
        let _ = write!(s, " via outside-address {}", show(a));
    }
    s.push(';');
    s
}

fn resource(o: &mut Out, r: &Resource) {
    o.open(&format!("resource {}", quote(&r.name)));
    for n in &r.notes {
        o.line(n);
    }
    o.sections(&r.sections);
    volumes(o, &r.volumes);
    for h in &r.hosts {
        if let (true, Some(a)) = (h.floating, &h.address) {
            o.open(&format!("floating {}", show(a)));
        } else {
            o.open(&format!("on {}", quote(&h.name)));
        }
        if let Some(id) = h.node_id {
            o.line(&format!("node-id {id};"));
        }
        if let (Some(a), false) = (&h.address, h.floating) {
            o.param(16, "address", &show(a));
        }
        if let Some(a) = &h.nbd_listen {
            o.param(16, "nbd-listen", &a.to_string());
        }
        volumes(o, &h.volumes);
        o.close();
    }
    if let Some(m) = &r.mesh {
        o.open("connection-mesh");
        let hosts: Vec<String> = m.hosts.iter().map(|(n, _)| quote(n)).collect();
        o.line(&format!("hosts {};", hosts.join(" ")));
        o.block("net", &m.net);
        o.close();
    }
    for c in &r.connections {
        match &c.name {
            Some(n) => o.open(&format!("connection {}", quote(n))),
            None => o.open("connection"),
        }
        for h in &c.hosts {
            o.line(&conn_host(h));
        }
        for p in &c.paths {
            o.open("path");
            for h in p {
                o.line(&conn_host(h));
            }
            o.close();
        }
        o.block("net", &c.net);
        o.block("disk", &c.disk);
        for (n, b) in &c.volumes {
            o.open(&format!("volume {n}"));
            o.block("disk", b);
            o.close();
        }
        o.close();
    }
    o.close();
}

/// The configuration (`None`: global, common and every resource) or one resource, normalised.
pub fn dump(cfg: &Config, resource_name: Option<&str>) -> Result<String, ConfigError> {
    dump_with(cfg, resource_name, false)
}

/// [`dump`], with every `shared-secret` replaced by [`HIDDEN_SECRET`] when `hide_secrets`, so
/// that a dump pasted into a ticket or a log does not give the peer link's secret away.
pub fn dump_with(
    cfg: &Config,
    resource_name: Option<&str>,
    hide_secrets: bool,
) -> Result<String, ConfigError> {
    let mut o = Out {
        s: String::new(),
        depth: 0,
        hide_secrets,
    };
    match resource_name {
        Some(name) => {
            let Some(r) = cfg.resource(name) else {
                let at = cfg
                    .resources
                    .first()
                    .map(|r| r.pos.clone())
                    .unwrap_or_else(|| Pos {
                        file: "(config)".into(),
                        line: 0,
                        col: 0,
                    });
                return Err(at.err(format!("'{name}' not defined in your config")));
            };
            resource(&mut o, r);
        }
        None => {
            if !cfg.global.is_empty() {
                o.block("global", &cfg.global);
                o.s.push('\n');
            }
            if !cfg.module_version.is_empty() {
                for e in &cfg.module_version.entries {
                    if let Some(n) = super::effect::no_effect(options::Sect::TopLevel, e) {
                        o.line(&format!(
                            "# {}: accepted but has no effect in udrbd ({})",
                            e.name, n.why
                        ));
                    }
                    o.line(&format!("{} {};", e.name, quote(&e.text)));
                }
                o.s.push('\n');
            }
            let c = &cfg.common;
            if c.sections != Sections::default() || !c.notes.is_empty() {
                o.open("common");
                for n in &c.notes {
                    o.line(n);
                }
                o.sections(&c.sections);
                o.close();
                o.s.push('\n');
            }
            for r in &cfg.resources {
                resource(&mut o, r);
                o.s.push('\n');
            }
        }
    }
    Ok(o.s)
}
