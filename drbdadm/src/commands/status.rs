//! `drbdadm status` in DRBD 9's layout (drbdsetup.c `resource_status()` and friends):
//!
//! ```text
//! res0 role:Primary
//!   disk:UpToDate open:no
//!   node-2 connection:StandAlone
//! ```
//!
//! The connection line shows `connection:` only when not Connected and `role:` only when
//! Connected; the peer-device line is shown only when Connected (or with --verbose or
//! --statistics); `replication:` only when beyond Established; `done:` only while syncing.

use super::daemon::StatusOpts;
use crate::wrap::Wrap;
use std::fmt::Write;
use std::net::SocketAddr;
use udrbd::ctl::{ConnectionView, PathView, ResourceView, VolumeView};
use udrbd::repl::{ConnState, DiskState, ReplState};

/// `yes`/`no`.
pub fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The text layout, wrapped at 80 columns as drbdsetup wraps when stdout is not a terminal.
pub fn render(views: &[ResourceView], o: StatusOpts) -> String {
    render_to(views, o, Wrap::new(80), false)
}

/// The text layout into `w`; `tty`: stdout is a terminal (drbdsetup then leaves out
/// `client:`/`peer-client:`).
pub fn render_to(views: &[ResourceView], o: StatusOpts, mut w: Wrap, tty: bool) -> String {
    for v in views {
        resource_status(&mut w, v, o);
        let single = v.volumes.len() == 1;
        for d in &v.volumes {
            device_status(&mut w, d, single, tty, o);
        }
        for c in &v.connections {
            connection_status(&mut w, c, single, tty, o);
        }
        // drbdsetup ends each resource with an empty line.
        w.print(0, "\n");
    }
    w.into_string()
}

/// drbdsetup.c `resource_status()`.
fn resource_status(w: &mut Wrap, v: &ResourceView, o: StatusOpts) {
    w.print(0, &v.name);
    if o.verbose {
        w.print(4, &format!(" node-id:{}", v.node_id));
    }
    w.print(4, &format!(" role:{}", v.role));
    if o.verbose || v.suspended.is_some() {
        w.print(
            4,
            &format!(" suspended:{}", v.suspended.as_deref().unwrap_or("no")),
        );
    }
    if o.verbose || v.force_io_failures {
        w.print(
            4,
            &format!(" force-io-failures:{}", yn(v.force_io_failures)),
        );
    }
    if o.statistics && o.verbose {
        w.print(4, "\n");
        w.print(4, &format!(" write-ordering:{}", v.write_ordering));
    }
    w.print(0, "\n");
}

/// The backing device as DRBD names it: only while one is attached.
pub fn backing_dev_str(d: &VolumeView) -> &str {
    match (&d.backing_dev, d.disk) {
        (Some(b), disk) if disk != DiskState::Diskless => b.as_str(),
        _ => "none",
    }
}

/// DRBD numbers every device; udrbd's config may leave the minor out (it then shows the
/// volume number, as the first minor would be).
pub fn minor_of(d: &VolumeView) -> u32 {
    d.minor.unwrap_or(d.volume)
}

/// drbdsetup.c `device_status()`.
fn device_status(w: &mut Wrap, d: &VolumeView, single: bool, tty: bool, o: StatusOpts) {
    let mut indent = 2;
    if o.verbose || !(single && d.volume == 0) {
        w.print(indent, &format!("volume:{}", d.volume));
        indent = 6;
        if o.verbose {
            w.print(indent, &format!(" minor:{}", minor_of(d)));
        }
    }
    w.print(indent, &format!(" disk:{}", d.disk));
    if d.disk == DiskState::Diskless && (o.verbose || !tty) {
        w.print(indent, &format!(" client:{}", yn(d.backing_dev.is_none())));
    }
    if o.verbose {
        w.print(indent, &format!(" backing_dev:{}", backing_dev_str(d)));
    }
    if o.verbose || !d.quorum {
        w.print(indent, &format!(" quorum:{}", yn(d.quorum)));
    }
    // udrbd always knows whether the device is open, so `open:` is always shown (drbdsetup
    // leaves it out only when an old kernel does not say).
    w.print(indent, &format!(" open:{}", yn(d.open)));
    if o.statistics {
        w.print(6, "\n");
    }
    let mut stats = String::new();
    device_statistics(&mut stats, None, d, o.verbose, o.statistics, false);
    print_pieces(w, 6, &stats);
    w.print(6, "\n");
}

/// Prints `pieces` (each starting with a space) one by one, so that each may wrap.
fn print_pieces(w: &mut Wrap, indent: usize, pieces: &str) {
    for p in pieces.split(' ').filter(|p| !p.is_empty()) {
        w.print(indent, &format!(" {p}"));
    }
}

/// drbdsetup.c `print_device_statistics()`: `old` is the state shown before (events2), None
/// for a first showing; `fullch`: events2 --full.
pub fn device_statistics(
    out: &mut String,
    old: Option<&VolumeView>,
    d: &VolumeView,
    verbose: bool,
    statistics: bool,
    fullch: bool,
) {
    if statistics {
        if verbose {
            let _ = write!(out, " size:{}", d.size_kib);
        }
        let _ = write!(out, " read:{} written:{}", d.read_kib, d.written_kib);
        if verbose {
            let _ = write!(
                out,
                " al-writes:{} bm-writes:{} upper-pending:{} lower-pending:{}",
                d.al_writes, d.bm_writes, d.upper_pending, d.lower_pending
            );
            if old.is_none_or(|o| o.al_suspended != d.al_suspended) || fullch {
                let _ = write!(out, " al-suspended:{}", yn(d.al_suspended));
            }
        }
    }
    // `blocked:lower` is the backing device's congestion, which Linux stopped reporting
    // (DRBD sets it false since 5.x kernels); udrbd's disk engine queues instead.
    if old.is_none_or(|o| o.blocked_upper != d.blocked_upper) && (verbose || d.blocked_upper) {
        let _ = write!(
            out,
            " blocked:{}",
            if d.blocked_upper { "upper" } else { "no" }
        );
    }
}

/// drbdsetup.c `print_connection_statistics()`.
pub fn connection_statistics(
    out: &mut String,
    old: Option<&ConnectionView>,
    c: &ConnectionView,
    fullch: bool,
) {
    if old.is_none_or(|o| o.congested != c.congested) || fullch {
        let _ = write!(out, " congested:{}", yn(c.congested));
    }
    let _ = write!(
        out,
        " ap-in-flight:{} rs-in-flight:{}",
        c.ap_in_flight_sectors, c.rs_in_flight_sectors
    );
}

/// drbdsetup.c `connection_status()`.
fn connection_status(w: &mut Wrap, c: &ConnectionView, single: bool, tty: bool, o: StatusOpts) {
    let connected = c.connection == ConnState::Connected;
    w.print(2, &c.name);
    if o.verbose {
        w.print(6, &format!(" node-id:{}", c.node_id));
    }
    if o.verbose || !connected {
        w.print(6, &format!(" connection:{}", c.connection));
    }
    if o.verbose || connected {
        w.print(6, &format!(" role:{}", c.role));
        if o.verbose || c.tls {
            w.print(6, &format!(" tls:{}", yn(c.tls)));
        }
    }
    if o.verbose || c.congested {
        let mut stats = String::new();
        connection_statistics(&mut stats, None, c, false);
        print_pieces(w, 6, &stats);
    }
    w.print(0, "\n");
    if o.verbose || o.statistics || connected {
        peer_device_status(w, c, single, tty, o);
    }
}

/// The connection's paths; a view without them (from an older daemon) has at most the one
/// of its two addresses, established while connected.
pub fn paths_of(c: &ConnectionView) -> Vec<PathView> {
    if !c.paths.is_empty() {
        return c.paths.clone();
    }
    match (c.local_address, c.peer_address) {
        (Some(local), Some(peer)) => vec![PathView {
            local,
            peer,
            established: c.connection == ConnState::Connected,
        }],
        _ => Vec::new(),
    }
}

/// A resync or verify is running with this peer (DRBD: the kernel sent `rs-total`).
fn sync_details(c: &ConnectionView) -> bool {
    c.done_centi.is_some()
}

/// `done:` as drbdsetup prints it.
pub fn done_str(c: &ConnectionView) -> Option<String> {
    c.done_centi
        .map(|d| format!(" done:{}.{:02}", d / 100, d % 100))
}

/// What `resync-suspended:` shows.
pub fn resync_suspended_str(c: &ConnectionView) -> &str {
    c.resync_suspended.as_deref().unwrap_or("no")
}

/// drbdsetup.c `peer_device_status()` (one volume per connection in udrbd).
fn peer_device_status(w: &mut Wrap, c: &ConnectionView, single: bool, tty: bool, o: StatusOpts) {
    let mut indent = 4;
    if o.verbose || !single {
        w.print(indent, "volume:0");
        indent = 8;
    }
    if o.verbose || !matches!(c.replication, ReplState::Off | ReplState::Established) {
        w.print(indent, &format!(" replication:{}", c.replication));
        indent = 8;
    }
    if o.verbose
        || o.statistics
        || c.replication != ReplState::Off
        || c.peer_disk != DiskState::DUnknown
    {
        w.print(indent, &format!(" peer-disk:{}", c.peer_disk));
        if c.peer_disk == DiskState::Diskless && (o.verbose || !tty) {
            // udrbd has no diskless clients yet, so a Diskless peer lost or left its disk.
            w.print(indent, " peer-client:no");
        }
        indent = 8;
        if let Some(done) = done_str(c) {
            w.print(indent, &done);
        }
        if o.verbose || c.resync_suspended.is_some() {
            w.print(
                indent,
                &format!(" resync-suspended:{}", resync_suspended_str(c)),
            );
        }
        if o.statistics {
            w.print(indent, "\n");
            let mut stats = String::new();
            peer_device_statistics(&mut stats, c, o.verbose);
            print_pieces(w, indent, &stats);
        }
    }
    w.print(0, "\n");
}

/// drbdsetup.c `print_peer_device_statistics()` without the `done:` (which the callers
/// print where drbdsetup does): ` received:N sent:N`, `out-of-sync:` when not zero (always
/// with `verbose`), and with `verbose` ` pending:N unacked:N` and, while a resync or verify
/// runs, ` dbdt1:MiB/s eta:S`.
pub fn peer_device_statistics(out: &mut String, c: &ConnectionView, verbose: bool) {
    let _ = write!(out, " received:{} sent:{}", c.received_kib, c.sent_kib);
    if verbose || c.out_of_sync_kib > 0 {
        let _ = write!(out, " out-of-sync:{}", c.out_of_sync_kib);
    }
    if !verbose {
        return;
    }
    let _ = write!(out, " pending:{} unacked:{}", c.pending, c.unacked);
    if !sync_details(c) {
        return;
    }
    let rate = c.resync_rate_kib.unwrap_or(0);
    let _ = write!(out, " dbdt1:{:.2}", rate as f64 / 1024.0);
    // drbdsetup divides by a rate of 0 and prints `nan`.
    match c.resync_eta_s {
        Some(eta) if rate > 0 => {
            let _ = write!(out, " eta:{eta}");
        }
        _ => out.push_str(" eta:nan"),
    }
}

/// A JSON string (names are restricted in the config, but quote them properly anyway).
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn jb(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// `--json`: `drbdsetup status --json` byte for byte (drbdsetup.c `resource_status_json()`
/// and friends, whose layout, including a stray space after `connection-state`, is kept).
pub fn render_json(views: &[ResourceView]) -> String {
    let mut out = String::from("[\n");
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        let susp = v.suspended.as_deref().unwrap_or("");
        let has = |what: &str| susp.split(',').any(|s| s == what);
        let _ = write!(
            out,
            "{{\n  \"name\": {},\n  \"node-id\": {},\n  \"role\": \"{}\",\n  \"suspended\": {},\n  \
             \"suspended-user\": {},\n  \"suspended-no-data\": {},\n  \"suspended-fencing\": {},\n  \
             \"suspended-quorum\": {},\n  \"force-io-failures\": {},\n  \"write-ordering\": \"{}\",\n  \
             \"devices\": [\n",
            js(&v.name),
            v.node_id,
            v.role,
            jb(v.suspended.is_some()),
            jb(has("user")),
            jb(has("no-data")),
            jb(has("fencing")),
            jb(has("quorum")),
            jb(v.force_io_failures),
            v.write_ordering,
        );
        for (j, d) in v.volumes.iter().enumerate() {
            if j > 0 {
                out.push_str(",\n");
            }
            device_json(&mut out, d);
        }
        out.push_str(" ],\n  \"connections\": [\n");
        let size_kib = v.volumes.first().map_or(0, |d| d.size_kib);
        for (j, c) in v.connections.iter().enumerate() {
            if j > 0 {
                out.push_str(",\n");
            }
            connection_json(&mut out, c, size_kib);
        }
        out.push_str(" ]\n}\n");
    }
    out.push_str("]\n");
    out
}

fn device_json(out: &mut String, d: &VolumeView) {
    let _ = write!(
        out,
        "    {{\n      \"volume\": {},\n      \"minor\": {},\n      \"disk-state\": \"{}\",\n      \
         \"client\": {},\n      \"open\": {},\n      \"quorum\": {},\n      \"size\": {},\n      \
         \"read\": {},\n      \"written\": {},\n      \"al-writes\": {},\n      \"bm-writes\": {},\n      \
         \"upper-pending\": {},\n      \"lower-pending\": {}\n    }}",
        d.volume,
        minor_of(d),
        d.disk,
        jb(d.backing_dev.is_none()),
        jb(d.open),
        jb(d.quorum),
        d.size_kib,
        d.read_kib,
        d.written_kib,
        d.al_writes,
        d.bm_writes,
        d.upper_pending,
        d.lower_pending,
    );
}

/// drbdsetup's `address_json()`.
fn address_json(out: &mut String, a: SocketAddr) {
    let ind = "            ";
    let (ip, family) = match a {
        SocketAddr::V4(v) => (v.ip().to_string(), "ipv4"),
        SocketAddr::V6(v) if v.scope_id() != 0 => (format!("{}%{}", v.ip(), v.scope_id()), "ipv6"),
        SocketAddr::V6(v) => (v.ip().to_string(), "ipv6"),
    };
    let _ = write!(
        out,
        "{ind}\"address\": \"{ip}\",\n{ind}\"port\": {},\n{ind}\"family\": \"{family}\"\n",
        a.port()
    );
}

fn connection_json(out: &mut String, c: &ConnectionView, size_kib: u64) {
    let _ = write!(
        out,
        "    {{\n      \"peer-node-id\": {},\n      \"name\": {},\n      \
         \"connection-state\": \"{}\", \n      \"congested\": {},\n      \"peer-role\": \"{}\",\n      \
         \"tls\": {},\n      \"ap-in-flight\": {},\n      \"rs-in-flight\": {},\n      \"paths\": [\n",
        c.node_id,
        js(&c.name),
        c.connection,
        jb(c.congested),
        c.role,
        jb(c.tls),
        c.ap_in_flight_sectors,
        c.rs_in_flight_sectors,
    );
    for (i, p) in paths_of(c).iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        out.push_str("        {\n          \"this_host\": {\n");
        address_json(out, p.local);
        out.push_str("          },\n          \"remote_host\": {\n");
        address_json(out, p.peer);
        let _ = write!(
            out,
            "          }},\n          \"established\": {}\n        }}",
            jb(p.established)
        );
    }
    out.push_str(" ],\n      \"peer_devices\": [\n");
    // udrbd does not hand out DRBD's detailed resync counters (rs-dt0-ms, ...); drbdsetup
    // then shows `percent-resync-done` from the out-of-sync count, as below.
    let in_resync = matches!(
        c.replication,
        ReplState::SyncSource
            | ReplState::SyncTarget
            | ReplState::PausedSyncS
            | ReplState::PausedSyncT
    );
    let in_sync = |oos: u64| {
        if size_kib == 0 {
            0.0
        } else {
            100.0 * (1.0 - oos as f64 / size_kib as f64)
        }
    };
    let _ = write!(
        out,
        "        {{\n          \"volume\": 0,\n          \"replication-state\": \"{}\",\n          \
         \"peer-disk-state\": \"{}\",\n          \"peer-client\": false,\n          \
         \"resync-suspended\": \"{}\",\n          \"received\": {},\n          \"sent\": {},\n          \
         \"out-of-sync\": {},\n          \"pending\": {},\n          \"unacked\": {},\n          \
         \"has-sync-details\": false,\n          \"has-online-verify-details\": false,\n          \
         \"percent-in-sync\": {:.2}{}\n",
        c.replication,
        c.peer_disk,
        resync_suspended_str(c),
        c.received_kib,
        c.sent_kib,
        c.out_of_sync_kib,
        c.pending,
        c.unacked,
        in_sync(c.out_of_sync_kib),
        if in_resync { "," } else { "" },
    );
    if in_resync {
        let _ = writeln!(
            out,
            "          \"percent-resync-done\": {:.2}",
            in_sync(c.out_of_sync_kib)
        );
    }
    out.push_str("        } ]\n    }");
}

/// One resource with one volume and one peer, for the renderers' tests.
#[cfg(test)]
pub(crate) fn sample_view(
    role: udrbd::repl::Role,
    conn: udrbd::repl::ConnState,
    repl: udrbd::repl::ReplState,
    peer_disk: udrbd::repl::DiskState,
) -> ResourceView {
    use udrbd::ctl::VolumeView;
    use udrbd::repl::{ConnState, DiskState, Role};
    ResourceView {
        name: "res0".into(),
        node_id: 0,
        role,
        suspended: None,
        volumes: vec![VolumeView {
            volume: 0,
            minor: Some(0),
            disk: DiskState::UpToDate,
            open: false,
            size_kib: 1024,
            read_kib: 0,
            written_kib: 0,
            al_writes: 0,
            bm_writes: 0,
            concurrent_writes: 0,
            upper_pending: 0,
            lower_pending: 0,
            current_uuid: "0".into(),
            backing_dev: None,
            quorum: true,
            al_suspended: false,
            blocked_upper: false,
        }],
        connections: vec![ConnectionView {
            name: "node-2".into(),
            node_id: 1,
            connection: conn,
            role: if conn == ConnState::Connected {
                Role::Secondary
            } else {
                Role::Unknown
            },
            replication: repl,
            peer_disk,
            out_of_sync_kib: 0,
            done_centi: None,
            resync_rate_kib: None,
            resync_eta_s: None,
            resync_suspended: None,
            received_kib: 0,
            sent_kib: 0,
            pending: 0,
            unacked: 0,
            paths: Vec::new(),
            local_address: None,
            peer_address: None,
            tls: false,
            congested: false,
            ap_in_flight_sectors: 0,
            rs_in_flight_sectors: 0,
        }],
        force_io_failures: false,
        write_ordering: "flush".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use udrbd::repl::{DiskState, Role};

    fn view(conn: ConnState, repl: ReplState, peer_disk: DiskState) -> ResourceView {
        let mut v = sample_view(Role::Primary, conn, repl, peer_disk);
        v.connections[0].done_centi =
            matches!(repl, ReplState::SyncSource | ReplState::SyncTarget).then_some(4567);
        v
    }

    #[test]
    fn connected_peer_shows_role_and_peer_disk_like_drbd() {
        // COMMANDS.md's expected block.
        let v = view(
            ConnState::Connected,
            ReplState::Established,
            DiskState::UpToDate,
        );
        assert_eq!(
            render(&[v], StatusOpts::default()),
            "res0 role:Primary\n  disk:UpToDate open:no\n  node-2 role:Secondary\n    peer-disk:UpToDate\n\n"
        );
    }

    #[test]
    fn replication_shows_only_beyond_established_and_disconnected_hides_the_peer_device() {
        let v = view(
            ConnState::Connected,
            ReplState::SyncSource,
            DiskState::Inconsistent,
        );
        assert!(
            render(&[v], StatusOpts::default())
                .contains("    replication:SyncSource peer-disk:Inconsistent done:45.67\n")
        );
        let v = view(ConnState::Connecting, ReplState::Off, DiskState::DUnknown);
        assert_eq!(
            render(&[v], StatusOpts::default()),
            "res0 role:Primary\n  disk:UpToDate open:no\n  node-2 connection:Connecting\n\n"
        );
    }
}
