//! `drbdadm status` in DRBD 9's layout (drbdsetup.c `resource_status()` and friends):
//!
//! ```text
//! res0 role:Primary
//!   disk:UpToDate
//!   node-2 connection:StandAlone
//! ```
//!
//! The connection line shows `connection:` only when not Connected and `role:` only when
//! Connected; the peer-device line is shown only when Connected (or with --verbose or
//! --statistics); `replication:` only when beyond Established; `done:` only while syncing.

use super::daemon::StatusOpts;
use serde_json::json;
use std::fmt::Write;
use udrbd::ctl::{ConnectionView, ResourceView, VolumeView};
use udrbd::repl::{ConnState, ReplState};

/// The text layout.
pub fn render(views: &[ResourceView], o: StatusOpts) -> String {
    let mut out = String::new();
    for v in views {
        let _ = write!(out, "{}", v.name);
        if o.verbose {
            let _ = write!(out, " node-id:{}", v.node_id);
        }
        let _ = write!(out, " role:{}", v.role);
        match &v.suspended {
            Some(why) => {
                let _ = write!(out, " suspended:{why}");
            }
            None if o.verbose => out.push_str(" suspended:no"),
            None => {}
        }
        out.push('\n');
        let show_volume = v.volumes.len() > 1 || v.volumes.iter().any(|d| d.volume != 0);
        for d in &v.volumes {
            out.push_str("  ");
            if show_volume || o.verbose {
                let _ = write!(out, "volume:{} ", d.volume);
            }
            if o.verbose
                && let Some(m) = d.minor
            {
                let _ = write!(out, "minor:{m} ");
            }
            let _ = write!(out, "disk:{}", d.disk);
            if d.open || o.verbose {
                let _ = write!(out, " open:{}", if d.open { "yes" } else { "no" });
            }
            out.push('\n');
            if o.statistics {
                out.push_str("     ");
                device_counters(d, &mut out);
                out.push('\n');
            }
        }
        for c in &v.connections {
            render_connection(&mut out, c, o);
        }
        // drbdsetup ends each resource with an empty line (`wrap_printf(0, "\n")` after the
        // objects, which end their own lines).
        out.push('\n');
    }
    out
}

fn render_connection(out: &mut String, c: &ConnectionView, o: StatusOpts) {
    let connected = c.connection == ConnState::Connected;
    let _ = write!(out, "  {}", c.name);
    if o.verbose {
        let _ = write!(out, " node-id:{}", c.node_id);
    }
    if !connected || o.verbose {
        let _ = write!(out, " connection:{}", c.connection);
    }
    if connected || o.verbose {
        let _ = write!(out, " role:{}", c.role);
        // drbdsetup prints it when TLS is on, or always with --verbose.
        if c.tls || o.verbose {
            let _ = write!(out, " tls:{}", if c.tls { "yes" } else { "no" });
        }
    }
    out.push('\n');
    if !(connected || o.verbose || o.statistics) {
        return;
    }
    out.push_str("    ");
    if o.verbose {
        out.push_str("volume:0 ");
    }
    if !matches!(c.replication, ReplState::Off | ReplState::Established) || o.verbose {
        let _ = write!(out, "replication:{} ", c.replication);
    }
    let _ = write!(out, "peer-disk:{}", c.peer_disk);
    if let Some(d) = c.done_centi {
        let _ = write!(out, " done:{}.{:02}", d / 100, d % 100);
    }
    if let Some(s) = &c.resync_suspended {
        let _ = write!(out, " resync-suspended:{s}");
    }
    out.push('\n');
    if o.statistics {
        out.push_str("       ");
        peer_device_counters(c, out);
        out.push('\n');
    }
}

/// A device's counters as `status --statistics` and `events2 --statistics` show them, each
/// after a space.
pub fn device_counters(d: &VolumeView, out: &mut String) {
    let _ = write!(
        out,
        " size:{} read:{} written:{} al-writes:{} bm-writes:{} upper-pending:{} \
         lower-pending:{} al-suspended:no blocked:no",
        d.size_kib,
        d.read_kib,
        d.written_kib,
        d.al_writes,
        d.bm_writes,
        d.upper_pending,
        d.lower_pending
    );
}

/// ` received:N sent:N out-of-sync:N pending:N unacked:N` and, while a resync runs,
/// ` dbdt1:R eta:S`: the peer-device counters of `status --statistics` and `events2
/// --statistics`, in DRBD's order.
pub fn peer_device_counters(c: &ConnectionView, out: &mut String) {
    let _ = write!(
        out,
        " received:{} sent:{} out-of-sync:{} pending:{} unacked:{}",
        c.received_kib, c.sent_kib, c.out_of_sync_kib, c.pending, c.unacked
    );
    if let Some(rate) = c.resync_rate_kib {
        let _ = write!(out, " dbdt1:{:.2}", rate as f64 / 1024.0);
        if let Some(eta) = c.resync_eta_s {
            let _ = write!(out, " eta:{eta}");
        }
    }
}

/// `--json`: the shape of `drbdsetup status --json` (an array of resources).
pub fn render_json(views: &[ResourceView]) -> String {
    let arr: Vec<_> = views
        .iter()
        .map(|v| {
            json!({
                "name": v.name,
                "node-id": v.node_id,
                "role": v.role.to_string(),
                "suspended": v.suspended.is_some(),
                "devices": v.volumes.iter().map(|d| json!({
                    "volume": d.volume,
                    "minor": d.minor,
                    "disk-state": d.disk.to_string(),
                    "open": d.open,
                    "size": d.size_kib,
                    "read": d.read_kib,
                    "written": d.written_kib,
                    "al-writes": d.al_writes,
                    "bm-writes": d.bm_writes,
                    "upper-pending": d.upper_pending,
                    "lower-pending": d.lower_pending,
                    "current-uuid": d.current_uuid,
                })).collect::<Vec<_>>(),
                "connections": v.connections.iter().map(|c| json!({
                    "peer-node-id": c.node_id,
                    "name": c.name,
                    "connection-state": c.connection.to_string(),
                    "peer-role": c.role.to_string(),
                    "peer_devices": [{
                        "volume": 0,
                        "replication-state": c.replication.to_string(),
                        "peer-disk-state": c.peer_disk.to_string(),
                        "out-of-sync": c.out_of_sync_kib,
                    }],
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&arr).unwrap_or_else(|_| "[]".into())
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
            local_address: None,
            peer_address: None,
            tls: false,
        }],
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
            "res0 role:Primary\n  disk:UpToDate\n  node-2 role:Secondary\n    peer-disk:UpToDate\n\n"
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
            "res0 role:Primary\n  disk:UpToDate\n  node-2 connection:Connecting\n\n"
        );
    }
}
