//! `drbdsetup events2` lines from the daemon's event stream.
//!
//! The daemon sends whole resource states ([`Event::State`], [`Event::Snapshot`]); this module
//! keeps the last state of each resource and prints what changed the way drbd-utils 9's
//! `drbdsetup_events2.c` does after it applies a kernel notification: objects in the order
//! resource, connections, devices, then per connection its peer devices and paths; a new
//! object (`exists` in the initial dump, `create` later) with every field, a changed one
//! (`change`) with only the groups that changed:
//!
//! ```text
//! exists resource name:res0 role:Secondary suspended:no force-io-failures:no may_promote:no promotion_score:10101
//! exists connection name:res0 peer-node-id:1 conn-name:node-2 connection:Connecting role:Unknown
//! exists device name:res0 volume:0 minor:0 backing_dev:/dev/sdb disk:UpToDate client:no open:no quorum:yes
//! exists peer-device name:res0 peer-node-id:1 conn-name:node-2 volume:0 replication:Off peer-disk:DUnknown peer-client:no resync-suspended:no
//! exists path name:res0 peer-node-id:1 conn-name:node-2 local:ipv4:10.0.0.1:7789 peer:ipv4:10.0.0.2:7789 established:no
//! exists -
//! change resource name:res0 role:Primary may_promote:no promotion_score:10101
//! call helper name:res0 peer-node-id:1 conn-name:node-2 volume:0 minor:0 helper:before-resync-target
//! response helper name:res0 peer-node-id:1 conn-name:node-2 volume:0 minor:0 helper:before-resync-target status:0
//! ```

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use udrbd::ctl::{ConnectionView, Event, HelperEvent, ResourceView, VolumeView};
use udrbd::repl::{ConnState, DiskState, Role};

/// Options of `events2` that change the lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    /// `--statistics`: the counters DRBD adds to each object.
    pub statistics: bool,
}

/// What the reader knows: the last state of each resource.
#[derive(Debug, Default)]
pub struct Tracker {
    known: BTreeMap<String, ResourceView>,
    opts: Opts,
}

impl Tracker {
    pub fn new(opts: Opts) -> Tracker {
        Tracker {
            known: BTreeMap::new(),
            opts,
        }
    }

    /// The lines for one event (without timestamps). The initial snapshot ends with
    /// `exists -`.
    pub fn apply(&mut self, ev: Event) -> Vec<String> {
        let mut out = Vec::new();
        match ev {
            Event::Snapshot { resources, initial } => {
                let action = if initial { "exists" } else { "create" };
                // A snapshot is the whole truth: what it does not name is gone.
                let mut before = std::mem::take(&mut self.known);
                for r in resources {
                    let old = before.remove(&r.name);
                    out.extend(changes(old.as_ref(), &r, action, self.opts));
                    self.known.insert(r.name.clone(), r);
                }
                for old in before.values() {
                    out.extend(destroyed(old));
                }
                if initial {
                    out.push("exists -".to_string());
                }
            }
            Event::State { resource } => {
                out = changes(
                    self.known.get(&resource.name),
                    &resource,
                    "create",
                    self.opts,
                );
                self.known.insert(resource.name.clone(), resource);
            }
            Event::Destroy { name } => {
                if let Some(old) = self.known.remove(&name) {
                    out = destroyed(&old);
                }
            }
            Event::Helper(h) => out.push(helper_line(&h)),
        }
        out
    }
}

/// `yes`/`no`.
fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The line for a new object (every group), or for a changed one (the groups that differ);
/// None when nothing it shows changed.
fn line(head: String, old: Option<&[String]>, new: &[String], action_new: &str) -> Option<String> {
    let (action, parts): (&str, Vec<&String>) = match old {
        None => (action_new, new.iter().collect()),
        Some(old) => (
            "change",
            new.iter()
                .zip(old)
                .filter(|(n, o)| n != o)
                .map(|(n, _)| n)
                .collect(),
        ),
    };
    if old.is_some() && parts.is_empty() {
        return None;
    }
    let mut l = format!("{action} {head}");
    for p in parts {
        l.push_str(p);
    }
    Some(l)
}

/// Every line for `new` against `old` (None: the resource is new to the reader).
fn changes(
    old: Option<&ResourceView>,
    new: &ResourceView,
    action_new: &str,
    o: Opts,
) -> Vec<String> {
    let mut out = Vec::new();
    let name = &new.name;
    let old_groups = old.map(|r| resource_groups(r, o));
    out.extend(line(
        format!("resource name:{name}"),
        old_groups.as_deref(),
        &resource_groups(new, o),
        action_new,
    ));
    let old_conn = |c: &ConnectionView| {
        old.and_then(|r| r.connections.iter().find(|x| x.node_id == c.node_id))
    };
    for c in &new.connections {
        out.extend(line(
            conn_head("connection", name, c),
            old_conn(c).map(|c| connection_groups(c, o)).as_deref(),
            &connection_groups(c, o),
            action_new,
        ));
    }
    for d in &new.volumes {
        let old_dev = old.and_then(|r| r.volumes.iter().find(|x| x.volume == d.volume));
        out.extend(line(
            format!(
                "device name:{name} volume:{} minor:{}",
                d.volume,
                d.minor.unwrap_or(d.volume)
            ),
            old_dev.map(|d| device_groups(d, o)).as_deref(),
            &device_groups(d, o),
            action_new,
        ));
    }
    for c in &new.connections {
        let before = old_conn(c);
        out.extend(line(
            format!("{} volume:0", conn_head("peer-device", name, c)),
            before.map(|c| peer_device_groups(c, o)).as_deref(),
            &peer_device_groups(c, o),
            action_new,
        ));
        if let Some(p) = path_head(name, c) {
            out.extend(line(
                p,
                before.map(path_groups).as_deref(),
                &path_groups(c),
                action_new,
            ));
        }
    }
    out
}

/// `destroy` lines for a resource that went down, innermost objects first.
fn destroyed(old: &ResourceView) -> Vec<String> {
    let name = &old.name;
    let mut out = Vec::new();
    for c in &old.connections {
        if let Some(p) = path_head(name, c) {
            out.push(format!("destroy {p}"));
        }
        out.push(format!(
            "destroy {} volume:0",
            conn_head("peer-device", name, c)
        ));
    }
    for c in &old.connections {
        out.push(format!("destroy {}", conn_head("connection", name, c)));
    }
    for d in &old.volumes {
        out.push(format!("destroy device name:{name} volume:{}", d.volume));
    }
    out.push(format!("destroy resource name:{name}"));
    out
}

fn conn_head(object: &str, name: &str, c: &ConnectionView) -> String {
    format!(
        "{object} name:{name} peer-node-id:{} conn-name:{}",
        c.node_id, c.name
    )
}

/// DRBD's address form: `ipv4:10.0.0.1:7789`, `ipv6:[fe80::1]:7789`.
fn addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => format!("ipv4:{v}"),
        SocketAddr::V6(v) => format!("ipv6:[{}]:{}", v.ip(), v.port()),
    }
}

/// A path is shown only where both ends are configured.
fn path_head(name: &str, c: &ConnectionView) -> Option<String> {
    let (l, p) = (c.local_address?, c.peer_address?);
    Some(format!(
        "{} local:{} peer:{}",
        conn_head("path", name, c),
        addr(l),
        addr(p)
    ))
}

fn path_groups(c: &ConnectionView) -> Vec<String> {
    vec![format!(
        " established:{}",
        yn(c.connection == ConnState::Connected)
    )]
}

/// DRBD's `compute_promotion_info()` (drbdsetup_events2.c), for our one volume: whether a
/// promotion would succeed now, and a score that ranks nodes by how much good data they have.
/// Peers' UpToDate data counts as stable (udrbd does not track DRBD's UUID_FLAG_STABLE).
fn promotion(r: &ResourceView) -> (bool, u32) {
    // Peer disk states are per connection here (one volume), so every volume sees the same.
    let peers_up_to_date = r
        .connections
        .iter()
        .filter(|c| c.peer_disk == DiskState::UpToDate)
        .count() as u32;
    let up_to_date = |d: &&VolumeView| d.disk == DiskState::UpToDate;
    let replicas = r
        .volumes
        .iter()
        .map(|d| peers_up_to_date + u32::from(up_to_date(&d)))
        .min()
        .unwrap_or(0);
    if replicas == 0 {
        return (false, 0);
    }
    let up_to_date_devices = r.volumes.iter().filter(up_to_date).count() as u32;
    let all_have_disk = r.volumes.iter().all(|d| {
        matches!(
            d.disk,
            DiskState::UpToDate | DiskState::Consistent | DiskState::Inconsistent
        )
    });
    let have_primary =
        r.role == Role::Primary || r.connections.iter().any(|c| c.role == Role::Primary);
    let score =
        u32::from(all_have_disk) * 10000 + up_to_date_devices.min(99) * 100 + replicas.min(99);
    (!have_primary, score)
}

/// role | suspended | force-io-failures | statistics | promotion.
fn resource_groups(r: &ResourceView, o: Opts) -> Vec<String> {
    let (may, score) = promotion(r);
    vec![
        format!(" role:{}", r.role),
        format!(" suspended:{}", r.suspended.as_deref().unwrap_or("no")),
        " force-io-failures:no".to_string(),
        if o.statistics {
            " write-ordering:none".to_string()
        } else {
            String::new()
        },
        format!(" may_promote:{} promotion_score:{score}", yn(may)),
    ]
}

/// connection | role | statistics.
fn connection_groups(c: &ConnectionView, o: Opts) -> Vec<String> {
    vec![
        format!(" connection:{}", c.connection),
        format!(" role:{}", c.role),
        if o.statistics {
            // udrbd's link is never congested and does not count bytes in flight apart.
            " congested:no ap-in-flight:0 rs-in-flight:0".to_string()
        } else {
            String::new()
        },
    ]
}

/// info (backing_dev disk client open quorum) | statistics.
fn device_groups(d: &VolumeView, o: Opts) -> Vec<String> {
    // DRBD names the backing device only while one is attached.
    let backing = match (&d.backing_dev, d.disk) {
        (Some(b), disk) if disk != DiskState::Diskless => b.as_str(),
        _ => "none",
    };
    let mut stats = String::new();
    if o.statistics {
        crate::commands::status::device_counters(d, &mut stats);
    }
    vec![
        format!(
            " backing_dev:{backing} disk:{} client:{} open:{} quorum:yes",
            d.disk,
            yn(d.backing_dev.is_none()),
            yn(d.open)
        ),
        stats,
    ]
}

/// replication | peer-disk peer-client | resync-suspended | statistics (`done:` while a resync
/// or verify runs; the counters with --statistics).
fn peer_device_groups(c: &ConnectionView, o: Opts) -> Vec<String> {
    let mut stats = String::new();
    if let Some(d) = c.done_centi {
        let _ = write!(stats, " done:{}.{:02}", d / 100, d % 100);
    }
    if o.statistics {
        crate::commands::status::peer_device_counters(c, &mut stats);
    }
    vec![
        format!(" replication:{}", c.replication),
        format!(" peer-disk:{} peer-client:no", c.peer_disk),
        format!(
            " resync-suspended:{}",
            c.resync_suspended.as_deref().unwrap_or("no")
        ),
        stats,
    ]
}

/// `call helper ...` / `response helper ... status:N`.
pub fn helper_line(h: &HelperEvent) -> String {
    let mut l = format!(
        "{} helper name:{}",
        if h.status.is_some() {
            "response"
        } else {
            "call"
        },
        h.name
    );
    if let Some(n) = h.peer_node_id {
        let _ = write!(l, " peer-node-id:{n}");
    }
    if let Some(c) = &h.conn_name {
        let _ = write!(l, " conn-name:{c}");
    }
    if let Some(v) = h.volume {
        let _ = write!(l, " volume:{v}");
    }
    if let Some(m) = h.minor {
        let _ = write!(l, " minor:{m}");
    }
    let _ = write!(l, " helper:{}", h.helper);
    if let Some(s) = h.status {
        let _ = write!(l, " status:{s}");
    }
    l
}

/// `--timestamps`: DRBD's prefix, local time with microseconds and the UTC offset
/// (`2026-01-31T12:34:56.123456+01:00 `).
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = libc::time_t::try_from(now.as_secs()).unwrap_or(0);
    // SAFETY: localtime_r only writes the `tm` we own; a zeroed tm is a valid value to start
    // from, and it stays zeroed (1900-01-00) if the conversion fails.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    let off = tm.tm_gmtoff;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{}{:02}:{:02} ",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_micros(),
        if off < 0 { '-' } else { '+' },
        off.abs() / 3600,
        (off.abs() / 60) % 60
    )
}

/// `events2`'s command line, the same under `drbdadm` and `drbdsetup`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A resource name; every resource when omitted (or `all`).
    pub resource: Option<String>,
    /// Print the current state, then `exists -`, and exit.
    #[arg(long)]
    pub now: bool,
    /// Add DRBD's counters to each line (and show them change, once a second).
    #[arg(short = 's', long)]
    pub statistics: bool,
    /// Prefix each line with the local time (ISO 8601, microseconds).
    #[arg(short = 'T', long)]
    pub timestamps: bool,
}

/// Prints the events `args` asks for as `drbdsetup events2` does, until the stream ends or
/// (with `--now`) after the initial dump.
pub fn stream(
    daemon: &crate::commands::daemon::Daemon,
    args: &Args,
) -> Result<(), crate::error::AdmError> {
    use std::io::Write as _;
    let opts = Opts {
        statistics: args.statistics,
    };
    let (now, ts) = (args.now, args.timestamps);
    let req = udrbd::ctl::Request::Events {
        // `all` means no filter, as in drbdsetup.
        resource: args.resource.clone().filter(|r| r != "all"),
        statistics: opts.statistics,
    };
    let mut stream = udrbd::ctl::client::events(&daemon.socket, &req)?;
    let mut tracker = Tracker::new(opts);
    let stdout = std::io::stdout();
    loop {
        let ev = match stream.next_line()? {
            Some(udrbd::ctl::StreamLine::Event(ev)) => ev,
            Some(udrbd::ctl::StreamLine::Response(udrbd::ctl::Response::Error {
                code,
                message,
            })) => {
                return Err(crate::error::AdmError::new(code, message));
            }
            Some(udrbd::ctl::StreamLine::Response(other)) => {
                return Err(crate::error::AdmError::new(
                    crate::error::E_EXEC,
                    format!("the daemon answered {other:?} to an event request"),
                ));
            }
            None => {
                return Err(crate::error::AdmError::new(
                    crate::error::E_EXEC,
                    "the udrbd daemon closed the event stream (it went away)",
                ));
            }
        };
        let initial = matches!(ev, udrbd::ctl::Event::Snapshot { initial: true, .. });
        let mut out = stdout.lock();
        for l in tracker.apply(ev) {
            let written = if ts {
                writeln!(out, "{}{l}", timestamp())
            } else {
                writeln!(out, "{l}")
            };
            // A reader that went away (a closed pipe) ends the stream quietly, as for any
            // filter-style tool.
            if written.is_err() {
                return Ok(());
            }
        }
        // Each event is flushed at once: readers such as the Pacemaker agent or drbd-reactor
        // act on lines as they come.
        if out.flush().is_err() || (now && initial) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use udrbd::repl::ReplState;

    fn view(role: Role, conn: ConnState, repl: ReplState, peer: DiskState) -> ResourceView {
        let mut v = crate::commands::status::sample_view(role, conn, repl, peer);
        v.volumes[0].backing_dev = Some("/dev/sdb".into());
        v.connections[0].local_address = "10.0.0.1:7789".parse().ok();
        v.connections[0].peer_address = "10.0.0.2:7789".parse().ok();
        v
    }

    fn standalone() -> ResourceView {
        view(
            Role::Secondary,
            ConnState::StandAlone,
            ReplState::Off,
            DiskState::DUnknown,
        )
    }

    #[test]
    fn the_initial_dump_shows_every_object_in_drbds_order_and_ends_with_exists_dash() {
        let mut t = Tracker::new(Opts::default());
        let lines = t.apply(Event::Snapshot {
            resources: vec![standalone()],
            initial: true,
        });
        assert_eq!(
            lines,
            [
                "exists resource name:res0 role:Secondary suspended:no force-io-failures:no \
                 may_promote:yes promotion_score:10101",
                "exists connection name:res0 peer-node-id:1 conn-name:node-2 \
                 connection:StandAlone role:Unknown",
                "exists device name:res0 volume:0 minor:0 backing_dev:/dev/sdb disk:UpToDate \
                 client:no open:no quorum:yes",
                "exists peer-device name:res0 peer-node-id:1 conn-name:node-2 volume:0 \
                 replication:Off peer-disk:DUnknown peer-client:no resync-suspended:no",
                "exists path name:res0 peer-node-id:1 conn-name:node-2 \
                 local:ipv4:10.0.0.1:7789 peer:ipv4:10.0.0.2:7789 established:no",
                "exists -",
            ]
        );
    }

    #[test]
    fn a_change_shows_only_the_groups_that_changed() {
        let mut t = Tracker::new(Opts::default());
        t.apply(Event::Snapshot {
            resources: vec![standalone()],
            initial: true,
        });
        let connected = view(
            Role::Secondary,
            ConnState::Connected,
            ReplState::Established,
            DiskState::UpToDate,
        );
        assert_eq!(
            t.apply(Event::State {
                resource: connected.clone()
            }),
            [
                "change resource name:res0 may_promote:yes promotion_score:10102",
                "change connection name:res0 peer-node-id:1 conn-name:node-2 \
                 connection:Connected role:Secondary",
                "change peer-device name:res0 peer-node-id:1 conn-name:node-2 volume:0 \
                 replication:Established peer-disk:UpToDate peer-client:no",
                "change path name:res0 peer-node-id:1 conn-name:node-2 \
                 local:ipv4:10.0.0.1:7789 peer:ipv4:10.0.0.2:7789 established:yes",
            ]
        );
        // The same state again prints nothing.
        assert!(
            t.apply(Event::State {
                resource: connected.clone()
            })
            .is_empty()
        );
        let mut primary = connected;
        primary.role = Role::Primary;
        primary.volumes[0].open = true;
        assert_eq!(
            t.apply(Event::State { resource: primary }),
            [
                "change resource name:res0 role:Primary may_promote:no promotion_score:10102",
                "change device name:res0 volume:0 minor:0 backing_dev:/dev/sdb disk:UpToDate \
                 client:no open:yes quorum:yes",
            ]
        );
    }

    #[test]
    fn resync_progress_shows_done_and_statistics_add_drbds_counters() {
        let mut t = Tracker::new(Opts { statistics: true });
        let mut r = view(
            Role::Primary,
            ConnState::Connected,
            ReplState::SyncSource,
            DiskState::Inconsistent,
        );
        r.connections[0].done_centi = Some(3750);
        r.connections[0].out_of_sync_kib = 2500;
        r.connections[0].resync_rate_kib = Some(245);
        r.connections[0].resync_eta_s = Some(10);
        let lines = t.apply(Event::Snapshot {
            resources: vec![r.clone()],
            initial: true,
        });
        assert_eq!(
            lines[0],
            "exists resource name:res0 role:Primary suspended:no force-io-failures:no \
             write-ordering:none may_promote:no promotion_score:10101"
        );
        assert_eq!(
            lines[1],
            "exists connection name:res0 peer-node-id:1 conn-name:node-2 connection:Connected \
             role:Secondary congested:no ap-in-flight:0 rs-in-flight:0"
        );
        assert_eq!(
            lines[2],
            "exists device name:res0 volume:0 minor:0 backing_dev:/dev/sdb disk:UpToDate \
             client:no open:no quorum:yes size:1024 read:0 written:0 al-writes:0 bm-writes:0 \
             upper-pending:0 lower-pending:0 al-suspended:no blocked:no"
        );
        assert_eq!(
            lines[3],
            "exists peer-device name:res0 peer-node-id:1 conn-name:node-2 volume:0 \
             replication:SyncSource peer-disk:Inconsistent peer-client:no resync-suspended:no \
             done:37.50 received:0 sent:0 out-of-sync:2500 pending:0 unacked:0 dbdt1:0.24 eta:10"
        );
        r.connections[0].done_centi = Some(5000);
        r.connections[0].out_of_sync_kib = 2000;
        assert_eq!(
            t.apply(Event::Snapshot {
                resources: vec![r],
                initial: false
            }),
            [
                "change peer-device name:res0 peer-node-id:1 conn-name:node-2 volume:0 \
              done:50.00 received:0 sent:0 out-of-sync:2000 pending:0 unacked:0 dbdt1:0.24 eta:10"
            ]
        );
    }

    #[test]
    fn up_is_create_and_down_destroys_innermost_first() {
        let mut t = Tracker::new(Opts::default());
        assert_eq!(
            t.apply(Event::Snapshot {
                resources: vec![],
                initial: true
            }),
            ["exists -"]
        );
        let created = t.apply(Event::State {
            resource: standalone(),
        });
        assert!(created[0].starts_with("create resource name:res0 role:Secondary"));
        assert_eq!(created.len(), 5);
        assert_eq!(
            t.apply(Event::Destroy {
                name: "res0".into()
            }),
            [
                "destroy path name:res0 peer-node-id:1 conn-name:node-2 \
                 local:ipv4:10.0.0.1:7789 peer:ipv4:10.0.0.2:7789",
                "destroy peer-device name:res0 peer-node-id:1 conn-name:node-2 volume:0",
                "destroy connection name:res0 peer-node-id:1 conn-name:node-2",
                "destroy device name:res0 volume:0",
                "destroy resource name:res0",
            ]
        );
        // A later snapshot without it says nothing more.
        assert!(
            t.apply(Event::Snapshot {
                resources: vec![],
                initial: false
            })
            .is_empty()
        );
    }

    #[test]
    fn helper_lines_name_the_connection_and_device_like_drbd() {
        let mut h = HelperEvent {
            name: "res0".into(),
            peer_node_id: Some(1),
            conn_name: Some("node-2".into()),
            volume: Some(0),
            minor: Some(0),
            helper: "before-resync-target".into(),
            status: None,
        };
        assert_eq!(
            helper_line(&h),
            "call helper name:res0 peer-node-id:1 conn-name:node-2 volume:0 minor:0 \
             helper:before-resync-target"
        );
        h.status = Some(4);
        h.volume = None;
        h.minor = None;
        h.helper = "fence-peer".into();
        assert_eq!(
            helper_line(&h),
            "response helper name:res0 peer-node-id:1 conn-name:node-2 helper:fence-peer status:4"
        );
    }

    #[test]
    fn diskless_shows_backing_dev_none_and_ipv6_paths_are_bracketed() {
        let mut r = standalone();
        r.volumes[0].disk = DiskState::Diskless;
        r.connections[0].local_address = "[fe80::1]:7789".parse().ok();
        let lines = changes(None, &r, "exists", Opts::default());
        assert!(
            lines[0].ends_with("may_promote:no promotion_score:0"),
            "{lines:?}"
        );
        assert!(lines[2].contains(" backing_dev:none disk:Diskless client:no "));
        assert!(lines[4].contains(" local:ipv6:[fe80::1]:7789 "));
        let ts = timestamp();
        assert_eq!(ts.len(), "2026-01-31T12:34:56.123456+01:00 ".len(), "{ts}");
    }
}
