//! `drbdsetup show`: what a running resource runs, in drbdsetup's layout (drbd-utils'
//! `show_resource_list`): options that differ from DRBD's defaults (all with
//! `--show-defaults`, marked `# default`), this host's volume, and one `connection` per peer
//! with its path, net options and peer-device options.

use std::fmt::Write;
use udrbd::config::{DiskOptions, Kind, NetOptions, PeerDeviceOptions, ResourceOptions, Sect};
use udrbd::ctl::ResourceSpec;
use udrbd::ctl::adjust::{Change, fields};
use udrbd::types::MetaDisk;

/// How `show` prints.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShowOpts {
    pub show_defaults: bool,
    pub show_secrets: bool,
}

/// The resources as drbdsetup prints them; DRBD's line when there is none.
pub fn render(specs: &[ResourceSpec], opts: ShowOpts) -> String {
    if specs.is_empty() {
        return "# No currently configured DRBD found.\n".to_string();
    }
    let mut out = String::new();
    for s in specs {
        resource(&mut out, s, opts);
    }
    out
}

fn resource(out: &mut String, s: &ResourceSpec, opts: ShowOpts) {
    let _ = writeln!(out, "resource \"{}\" {{", s.name);
    block(
        out,
        1,
        "options",
        Sect::Options,
        &fields(&s.nbd_access),
        &fields(&ResourceOptions::default()),
        opts,
    );
    let _ = writeln!(out, "    _this_host {{");
    let _ = writeln!(out, "        node-id\t\t\t{};", s.node_id);
    let _ = writeln!(out, "        volume 0 {{");
    if let Some(m) = s.minor {
        let _ = writeln!(out, "            device\t\t\tminor {m};");
    }
    match &s.disk {
        Some(d) => {
            let _ = writeln!(out, "            disk\t\t\t\"{d}\";");
            let meta = match &s.meta_disk {
                MetaDisk::Internal => "internal;".to_string(),
                MetaDisk::External { path, index: None } => format!("\"{path}\";"),
                MetaDisk::External {
                    path,
                    index: Some(i),
                } => format!("\"{path}\" [ {i} ];"),
            };
            let _ = writeln!(out, "            meta-disk\t\t\t{meta}");
        }
        None => {
            let _ = writeln!(out, "            disk\t\t\tnone;");
        }
    }
    let disk = DiskOptions {
        on_io_error: s.on_io_error,
        disk_flushes: s.disk_flushes,
        md_flushes: s.md_flushes,
        ..DiskOptions::default()
    };
    let disk_fields = |d: &DiskOptions| {
        // The spec carries the disk options the daemon runs; the rest are not in it.
        fields(d)
            .into_iter()
            .filter(|c| {
                matches!(
                    c.name.as_str(),
                    "on-io-error" | "disk-flushes" | "md-flushes"
                )
            })
            .collect::<Vec<_>>()
    };
    block(
        out,
        3,
        "disk",
        Sect::Disk,
        &disk_fields(&disk),
        &disk_fields(&DiskOptions::default()),
        opts,
    );
    let _ = writeln!(out, "        }}");
    let _ = writeln!(out, "    }}");
    for p in &s.peers {
        let _ = writeln!(out, "    connection {{");
        let _ = writeln!(out, "        _peer_node_id {};", p.node_id);
        if let (Some(local), Some(remote)) = (p.local_address, p.address) {
            let _ = writeln!(out, "        path {{");
            let _ = writeln!(out, "            _this_host {};", addr(local));
            let _ = writeln!(out, "            _remote_host {};", addr(remote));
            let _ = writeln!(out, "        }}");
        }
        let mut net = fields(&p.net);
        net.push(Change {
            name: "_name".to_string(),
            value: p.name.clone(),
        });
        block(
            out,
            2,
            "net",
            Sect::Net,
            &net,
            &fields(&NetOptions::default()),
            opts,
        );
        let sync = fields(&p.sync);
        let sync_defaults = fields(&PeerDeviceOptions::default());
        if opts.show_defaults || sync.iter().any(|c| !sync_defaults.contains(c)) {
            let _ = writeln!(out, "        volume 0 {{");
            block(out, 3, "disk", Sect::Disk, &sync, &sync_defaults, opts);
            let _ = writeln!(out, "        }}");
        }
        let _ = writeln!(out, "    }}");
    }
    let _ = writeln!(out, "}}\n");
}

/// One option section at `depth` (4 spaces each): the options that are not at their default
/// (all with `show_defaults`), none at all when that leaves nothing.
fn block(
    out: &mut String,
    depth: usize,
    title: &str,
    sect: Sect,
    values: &[Change],
    defaults: &[Change],
    opts: ShowOpts,
) {
    let pad = "    ".repeat(depth);
    let mut lines = Vec::new();
    for c in values {
        let is_default = defaults.contains(c);
        if c.value.is_empty() || (is_default && !opts.show_defaults) {
            continue; // unset
        }
        let value = if c.name == "shared-secret" && !opts.show_secrets {
            udrbd::config::HIDDEN_SECRET.to_string()
        } else {
            c.value.clone()
        };
        let quoted = c.name == "_name"
            || udrbd::config::lookup(sect, &c.name)
                .is_some_and(|d| matches!(d.kind, Kind::Str { .. }));
        let value = if quoted {
            format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
        } else {
            value
        };
        let comment = if is_default { " # default" } else { "" };
        lines.push(format!("{pad}    {:<16}\t{value};{comment}", c.name));
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "{pad}{title} {{");
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = writeln!(out, "{pad}}}");
}

fn addr(a: std::net::SocketAddr) -> String {
    match a {
        std::net::SocketAddr::V4(a) => format!("ipv4 {a}"),
        std::net::SocketAddr::V6(a) => format!("ipv6 {a}"),
    }
}
