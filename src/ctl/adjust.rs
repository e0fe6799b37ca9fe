//! `drbdadm adjust`: the steps that bring a running resource to what its configuration says,
//! computed from the running [`ResourceSpec`], its status and the wanted one. Pure; the daemon
//! applies the steps (`daemon::adjust`), and `drbdadm -d adjust` prints them in drbdsetup's
//! words without applying anything.
//!
//! What is applied how, as DRBD 9 does where udrbd can:
//! - resource, disk and peer-device options, the engine's net options (`ko-count`, `fencing`,
//!   `max-buffers`, the after-split-brain policies) and handlers: at once, nothing interrupted;
//!   a running resync or verify takes the new controller settings from its next step;
//! - what the link or the handshake agreed with the peer (protocol, timeouts, the digests,
//!   two primaries, authentication, TLS) and a changed path: the connection is closed as
//!   `drbdadm disconnect` closes it (agreed, so a Primary fences nobody) and reopened with
//!   the new settings; application I/O goes on, and the reconnect resyncs what it wrote
//!   meanwhile;
//! - a disk the configuration no longer names is detached, one it names is attached (also
//!   after a detach or an I/O error), a changed backing device is detached and the new one
//!   attached;
//! - a StandAlone connection is connected.
//!
//! Refused, with what to do instead: another node id or host section, added or removed peers,
//! another minor, a changed `nbd-listen`, `kernel-device` or NBD TLS setup (`down` and `up` apply those).

use super::proto::{ConnectionView, PeerSpec, ResourceSpec, ResourceView};
use crate::repl::{ConnState, DiskState};
use crate::types::MetaDisk;
use serde::Serialize;
use serde_json::Value;
use std::net::SocketAddr;

/// One option that changed: its DRBD name and its new value as drbdsetup takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub value: String,
}

/// One step of an adjustment, in the order they are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `options { }` changed.
    ResourceOptions(Vec<Change>),
    /// Detach the disk (no longer configured, or replaced by another).
    Detach,
    /// Close the connections, agreed with the peers, before their settings change.
    Disconnect { peers: Vec<u8> },
    /// A peer's `net { }` changed; `reconnect`: what changed is agreed at connect time.
    NetOptions {
        peer: u8,
        changes: Vec<Change>,
        reconnect: bool,
    },
    /// A peer's paths changed (an address, or paths added or removed).
    Path {
        peer: u8,
        old: Vec<crate::config::NetPath>,
        new: Vec<crate::config::NetPath>,
    },
    /// A peer's resync controller options changed.
    PeerDeviceOptions { peer: u8, changes: Vec<Change> },
    /// `handlers { }` changed (the names of those that did).
    Handlers(Vec<String>),
    /// Attach the configured disk.
    Attach,
    /// `on-io-error`, `disk-flushes` or `md-flushes` changed.
    DiskOptions(Vec<Change>),
    /// Connect a peer that is StandAlone, or that was disconnected for new settings.
    Connect { peer: u8 },
    /// `disk { size }` changed on an attached disk: resize to it (0: as large as the disks
    /// allow), as drbdadm adjust runs `drbdsetup resize --size`.
    Resize { size_bytes: u64 },
}

/// The steps for `want` on a resource running `run` with status `view`; empty when nothing
/// differs. An error says what adjust cannot change and what to do instead.
pub fn plan(
    run: &ResourceSpec,
    view: &ResourceView,
    want: &ResourceSpec,
) -> Result<Vec<Step>, String> {
    refuse_structural(run, want)?;
    let mut steps = Vec::new();

    // `nbd_access` carries every resource option (`auto-promote` too).
    let res_changes = diff(&run.nbd_access, &want.nbd_access);
    if !res_changes.is_empty() {
        steps.push(Step::ResourceOptions(res_changes));
    }

    let attached = view.volumes.iter().any(|v| v.disk != DiskState::Diskless);
    let disk_replaced = run.disk != want.disk || run.meta_disk != want.meta_disk;
    let detach = attached && (want.disk.is_none() || disk_replaced);
    if detach {
        steps.push(Step::Detach);
    }

    let mut reconnect = Vec::new();
    let mut link_steps = Vec::new();
    for (old, new) in run.peers.iter().zip(&want.peers) {
        let changes = diff(&old.net, &new.net);
        if !changes.is_empty() {
            let needs = changes.iter().any(|c| agreed_at_connect(&c.name));
            if needs {
                reconnect.push(new.node_id);
            }
            link_steps.push(Step::NetOptions {
                peer: new.node_id,
                changes,
                reconnect: needs,
            });
        }
        if old.net_paths() != new.net_paths() {
            reconnect.push(new.node_id);
            link_steps.push(Step::Path {
                peer: new.node_id,
                old: old.net_paths(),
                new: new.net_paths(),
            });
        }
        let changes = diff(&old.sync, &new.sync);
        if !changes.is_empty() {
            link_steps.push(Step::PeerDeviceOptions {
                peer: new.node_id,
                changes,
            });
        }
    }
    reconnect.sort_unstable();
    reconnect.dedup();
    let connected: Vec<u8> = reconnect
        .iter()
        .copied()
        .filter(|n| !is_standalone(conn_of(view, *n)))
        .collect();
    if !connected.is_empty() {
        steps.push(Step::Disconnect { peers: connected });
    }
    steps.extend(link_steps);

    let changed_handlers: Vec<String> = run
        .handlers
        .keys()
        .chain(want.handlers.keys())
        .filter(|k| run.handlers.get(*k) != want.handlers.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !changed_handlers.is_empty() {
        steps.push(Step::Handlers(changed_handlers));
    }

    if want.disk.is_some() && (!attached || detach) {
        steps.push(Step::Attach);
    }
    let mut disk_changes = Vec::new();
    if run.on_io_error != want.on_io_error {
        disk_changes.push(change("on-io-error", want.on_io_error.word()));
    }
    if run.disk_flushes != want.disk_flushes {
        disk_changes.push(change("disk-flushes", yes_no(want.disk_flushes)));
    }
    if run.md_flushes != want.md_flushes {
        disk_changes.push(change("md-flushes", yes_no(want.md_flushes)));
    }
    if !disk_changes.is_empty() && want.disk.is_some() {
        steps.push(Step::DiskOptions(disk_changes));
    }
    // Not when the device has that size already (the peer's adjust resized both nodes).
    let current = view.volumes.first().map_or(0, |v| v.size_kib * 1024);
    let done = want.disk_size > 0 && current == want.disk_size;
    if run.disk_size != want.disk_size && attached && !detach && !done {
        steps.push(Step::Resize {
            size_bytes: want.disk_size,
        });
    }

    for p in &want.peers {
        if p.address.is_none() {
            continue; // nothing to connect to
        }
        let standalone = is_standalone(conn_of(view, p.node_id));
        if standalone || reconnect.contains(&p.node_id) {
            steps.push(Step::Connect { peer: p.node_id });
        }
    }
    Ok(steps)
}

/// The steps `up` takes for a resource that is not up, as `drbdadm -d adjust` prints them.
pub fn up_steps(want: &ResourceSpec) -> Vec<Step> {
    let mut steps = Vec::new();
    if want.disk.is_some() {
        steps.push(Step::Attach);
    }
    for p in &want.peers {
        if p.address.is_some() {
            steps.push(Step::Connect { peer: p.node_id });
        }
    }
    steps
}

/// What adjust cannot change on a running resource.
fn refuse_structural(run: &ResourceSpec, want: &ResourceSpec) -> Result<(), String> {
    let down_up = |what: String| {
        Err(format!(
            "{}: {what}; adjust cannot change that on a running resource: run `drbdadm down \
             {}` and `drbdadm up {}`",
            run.name, run.name, run.name
        ))
    };
    if run.node_name != want.node_name || run.node_id != want.node_id {
        return down_up(format!(
            "this node is now '{}' (node-id {}), was '{}' (node-id {})",
            want.node_name, want.node_id, run.node_name, run.node_id
        ));
    }
    let ids = |s: &ResourceSpec| {
        s.peers
            .iter()
            .map(|p| (p.node_id, p.name.clone()))
            .collect::<Vec<_>>()
    };
    if ids(run) != ids(want) {
        return down_up(format!(
            "the peers are now {}, were {}",
            peer_list(&want.peers),
            peer_list(&run.peers)
        ));
    }
    if run.minor != want.minor {
        return down_up(format!(
            "the minor is now {}, was {}",
            opt_text(want.minor),
            opt_text(run.minor)
        ));
    }
    if run.nbd_listen != want.nbd_listen {
        return down_up(format!(
            "nbd-listen is now {}, was {}",
            opt_text(want.nbd_listen),
            opt_text(run.nbd_listen)
        ));
    }
    if run.nbd_access.kernel_device != want.nbd_access.kernel_device {
        return down_up(format!(
            "kernel-device is now {}, was {}",
            yes_no(want.nbd_access.kernel_device),
            yes_no(run.nbd_access.kernel_device)
        ));
    }
    let tls = |s: &ResourceSpec| {
        let o = &s.nbd_access;
        (
            o.nbd_tls,
            o.nbd_tls_certificate_file.clone(),
            o.nbd_tls_privkey_file.clone(),
            o.nbd_tls_ca_file.clone(),
            o.nbd_tls_psk_file.clone(),
        )
    };
    if tls(run) != tls(want) {
        return down_up("the NBD export's TLS settings changed".to_string());
    }
    Ok(())
}

fn peer_list(peers: &[PeerSpec]) -> String {
    if peers.is_empty() {
        return "none".to_string();
    }
    peers
        .iter()
        .map(|p| format!("{} (node-id {})", p.name, p.node_id))
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt_text<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "unset".to_string(), |v| v.to_string())
}

/// Net options that only a new connection applies: the link's timers and authentication,
/// and what the handshake agrees with the peer (both sides must match).
fn agreed_at_connect(name: &str) -> bool {
    matches!(
        name,
        "protocol"
            | "timeout"
            | "connect-int"
            | "ping-int"
            | "ping-timeout"
            | "allow-two-primaries"
            | "cram-hmac-alg"
            | "shared-secret"
            | "verify-alg"
            | "csums-alg"
            | "data-integrity-alg"
            | "tls"
            | "tls-ca-file"
            | "tls-certificate-file"
            | "tls-privkey-file"
            | "sndbuf-size"
            | "rcvbuf-size"
    )
}

fn conn_of(view: &ResourceView, node: u8) -> Option<&ConnectionView> {
    view.connections.iter().find(|c| c.node_id == node)
}

fn is_standalone(c: Option<&ConnectionView>) -> bool {
    c.is_none_or(|c| c.connection == ConnState::StandAlone)
}

fn change(name: &str, value: &str) -> Change {
    Change {
        name: name.to_string(),
        value: value.to_string(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Every option of an option struct, by its DRBD name (the struct's field names in kebab
/// case; its `extra` map holds options by name already), with its value as drbdsetup takes
/// it. `drbdsetup show` prints them.
pub fn fields<T: Serialize>(opts: &T) -> Vec<Change> {
    let Ok(Value::Object(m)) = serde_json::to_value(opts) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in &m {
        if k == "extra" {
            if let Some(e) = v.as_object() {
                out.extend(e.iter().map(|(k, v)| change(k, &value_text(v))));
            }
        } else {
            out.push(change(&k.replace('_', "-"), &value_text(v)));
        }
    }
    out
}

/// The options whose values differ between two option structs (see [`fields`]); one that
/// only `old` has comes with an empty value.
pub fn diff<T: Serialize>(old: &T, new: &T) -> Vec<Change> {
    let (a, b) = (fields(old), fields(new));
    let mut out: Vec<Change> = b.iter().filter(|c| !a.contains(c)).cloned().collect();
    for c in a {
        if !b.iter().any(|x| x.name == c.name) {
            out.push(change(&c.name, ""));
        }
    }
    out
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => yes_no(*b).to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        // `quorum 2` serializes as {"nodes":2}.
        Value::Object(m) => m.values().next().map_or(String::new(), value_text),
        Value::Array(_) => v.to_string(),
    }
}

impl Step {
    /// The step as the drbdsetup command DRBD's `drbdadm -d adjust` would print for it (a
    /// comment where DRBD has no command); `secrets`: print `shared-secret` in clear.
    pub fn lines(&self, spec: &ResourceSpec, secrets: bool) -> Vec<String> {
        let res = &spec.name;
        let minor = spec.minor.unwrap_or(0);
        let opts = |changes: &[Change]| {
            changes
                .iter()
                .map(|c| {
                    let v = if c.name == "shared-secret" && !secrets && !c.value.is_empty() {
                        "<hidden>"
                    } else {
                        &c.value
                    };
                    format!(" --{}={}", c.name, shell_word(v))
                })
                .collect::<String>()
        };
        let path = |p: &crate::config::NetPath| {
            format!("{} {}", addr_text(Some(p.local)), addr_text(Some(p.peer)))
        };
        match self {
            Step::ResourceOptions(c) => {
                vec![format!("drbdsetup resource-options {res}{}", opts(c))]
            }
            Step::Detach => vec![format!("drbdsetup detach {minor}")],
            Step::Disconnect { peers } => peers
                .iter()
                .map(|p| format!("drbdsetup disconnect {res} {p}"))
                .collect(),
            Step::NetOptions { peer, changes, .. } => {
                vec![format!(
                    "drbdsetup net-options {res} {peer}{}",
                    opts(changes)
                )]
            }
            Step::Path { peer, old, new } => old
                .iter()
                .filter(|p| !new.contains(p))
                .map(|p| format!("drbdsetup del-path {res} {peer} {}", path(p)))
                .chain(
                    new.iter()
                        .filter(|p| !old.contains(p))
                        .map(|p| format!("drbdsetup new-path {res} {peer} {}", path(p))),
                )
                .collect(),
            Step::PeerDeviceOptions { peer, changes } => vec![format!(
                "drbdsetup peer-device-options {res} {peer} 0{}",
                opts(changes)
            )],
            Step::Handlers(names) => vec![format!(
                "# {res}: the {} handler{} changed (applied by the daemon at once)",
                names.join(", "),
                if names.len() == 1 { "" } else { "s" }
            )],
            Step::Attach => {
                let disk = spec.disk.as_deref().unwrap_or("none");
                let meta = match &spec.meta_disk {
                    MetaDisk::Internal => format!("{disk} internal"),
                    MetaDisk::External { path, index: None } => format!("{path} flexible"),
                    MetaDisk::External {
                        path,
                        index: Some(i),
                    } => format!("{path} {i}"),
                };
                vec![format!("drbdsetup attach {minor} {disk} {meta}")]
            }
            Step::DiskOptions(c) => vec![format!("drbdsetup disk-options {minor}{}", opts(c))],
            Step::Resize { size_bytes } => vec![format!(
                "drbdsetup resize {minor} --size={}s",
                size_bytes / crate::types::SECTOR_SIZE
            )],
            Step::Connect { peer } => vec![format!("drbdsetup connect {res} {peer}")],
        }
    }
}

fn addr_text(a: Option<SocketAddr>) -> String {
    match a {
        Some(SocketAddr::V4(a)) => format!("ipv4:{a}"),
        Some(SocketAddr::V6(a)) => format!("ipv6:{a}"),
        None => "none".to_string(),
    }
}

/// `v` as one shell word (drbdsetup's arguments are shell words in `-d` output).
fn shell_word(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,<>".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}
