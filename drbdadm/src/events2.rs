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
use std::fmt::{Display, Write};
use std::net::SocketAddr;
use udrbd::ctl::{ConnectionView, Event, HelperEvent, PathView, ResourceView, VolumeView};
use udrbd::repl::{DiskState, Role};

/// Options of `events2` that change the lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    /// `--statistics` (or `--full`): the counters DRBD adds to each object.
    pub statistics: bool,
    /// `--full`: a change line shows every field of the object, not only those that changed.
    pub full: bool,
    /// `--diff`: a changed field shows as `old->new`.
    pub diff: bool,
}

impl Opts {
    /// drbdsetup raises its verbosity with each of `--statistics` and `--full`.
    fn verbose(self) -> bool {
        self.statistics || self.full
    }
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

use crate::commands::status::{self as st, yn};

/// drbdsetup's placeholder for the old value of a new object under `--diff`.
const UNKNOWN: &str = "UNKNOWN";

/// How a field shows under `--diff`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Diff {
    /// `key:old->new` whenever the field is printed (drbdsetup's `DIFF_COLOR`).
    Always,
    /// `key:old->new` only when the value changed, else `key:new`.
    IfChanged,
}

/// One event line being built.
struct Line {
    text: String,
    o: Opts,
}

impl Line {
    /// Appends ` key:new`, or its `--diff` form.
    fn field(&mut self, key: &str, old: Option<String>, new: String, diff: Diff) {
        let changed = old.as_ref() != Some(&new);
        if self.o.diff && (diff == Diff::Always || changed) {
            let old = old.as_deref().unwrap_or(UNKNOWN);
            let _ = write!(self.text, " {key}:{old}->{new}");
        } else {
            let _ = write!(self.text, " {key}:{new}");
        }
    }

    /// A field `--diff` shows as `old->new` whenever it is printed (drbdsetup's `DIFF_COLOR`).
    fn always(&mut self, key: &str, old: Option<impl Display>, new: impl Display) {
        self.field(
            key,
            old.map(|v| v.to_string()),
            new.to_string(),
            Diff::Always,
        );
    }

    /// A field `--diff` shows as `old->new` only when its value changed.
    fn if_changed(&mut self, key: &str, old: Option<impl Display>, new: impl Display) {
        self.field(
            key,
            old.map(|v| v.to_string()),
            new.to_string(),
            Diff::IfChanged,
        );
    }
}

/// A line's start: `change` for an object the reader knew, else `action_new`, then the
/// object.
fn head(old_known: bool, action_new: &str, object: String, o: Opts) -> Line {
    Line {
        text: format!("{} {object}", if old_known { "change" } else { action_new }),
        o,
    }
}

/// drbdsetup_events2.c `print_resource_changes()`.
fn resource_line(
    old: Option<&ResourceView>,
    new: &ResourceView,
    action_new: &str,
    o: Opts,
) -> Option<String> {
    let promo = promotion(new);
    let old_promo = old.map(promotion);
    let role_changed = old.is_none_or(|r| r.role != new.role);
    let info_changed = old.is_none_or(|r| r.suspended != new.suspended);
    let fail_io_changed = old.is_none_or(|r| r.force_io_failures != new.force_io_failures);
    let stats_changed = o.statistics && old.is_none_or(|r| r.write_ordering != new.write_ordering);
    let promo_changed = old_promo != Some(promo);
    if !(role_changed || info_changed || fail_io_changed || stats_changed || promo_changed) {
        return None;
    }
    let mut l = head(
        old.is_some(),
        action_new,
        format!("resource name:{}", new.name),
        o,
    );
    if role_changed || o.full {
        l.always("role", old.map(|r| r.role), new.role);
    }
    let susp = |r: &ResourceView| r.suspended.clone().unwrap_or_else(|| "no".into());
    if info_changed || o.full {
        l.always("suspended", old.map(susp), susp(new));
    }
    if fail_io_changed || o.full {
        let fio = |r: &ResourceView| yn(r.force_io_failures);
        l.always("force-io-failures", old.map(fio), fio(new));
    }
    // The one resource counter: `stats_changed` means it changed (or is new).
    if stats_changed || o.full {
        let _ = write!(l.text, " write-ordering:{}", new.write_ordering);
    }
    if promo_changed || o.full {
        let (may, score) = promo;
        if o.diff {
            let old_may = old_promo.map_or(UNKNOWN, |(m, _)| yn(m));
            let old_score = old_promo.map_or(0, |(_, s)| s);
            let _ = write!(
                l.text,
                " may_promote:{old_may}->{} promotion_score:{old_score}->{score}",
                yn(may)
            );
        } else {
            let _ = write!(l.text, " may_promote:{} promotion_score:{score}", yn(may));
        }
    }
    Some(l.text)
}

/// drbdsetup_events2.c `print_connection_changes()`.
fn connection_line(
    name: &str,
    old: Option<&ConnectionView>,
    new: &ConnectionView,
    action_new: &str,
    o: Opts,
) -> Option<String> {
    let cs_changed = old.is_none_or(|c| c.connection != new.connection);
    let role_changed = old.is_none_or(|c| c.role != new.role);
    let stats = |c: &ConnectionView| (c.congested, c.ap_in_flight_sectors, c.rs_in_flight_sectors);
    let stats_changed = o.statistics && old.is_none_or(|c| stats(c) != stats(new));
    if !(cs_changed || role_changed || stats_changed) {
        return None;
    }
    let mut l = head(
        old.is_some(),
        action_new,
        conn_head("connection", name, new),
        o,
    );
    if cs_changed || o.full {
        l.always("connection", old.map(|c| c.connection), new.connection);
    }
    if role_changed || o.full {
        l.always("role", old.map(|c| c.role), new.role);
    }
    if stats_changed || o.full {
        st::connection_statistics(&mut l.text, old, new, o.full);
    }
    Some(l.text)
}

/// The device counters compared for a change (`memcmp` of DRBD's statistics).
fn device_stats(d: &VolumeView) -> [u64; 9] {
    [
        d.size_kib,
        d.read_kib,
        d.written_kib,
        d.al_writes,
        d.bm_writes,
        d.upper_pending,
        d.lower_pending,
        u64::from(d.al_suspended),
        u64::from(d.blocked_upper),
    ]
}

/// drbdsetup_events2.c `print_device_changes()`.
fn device_line(
    name: &str,
    old: Option<&VolumeView>,
    new: &VolumeView,
    action_new: &str,
    o: Opts,
) -> Option<String> {
    let info_changed =
        old.is_none_or(|d| d.disk != new.disk || d.quorum != new.quorum || d.open != new.open);
    let stats_changed = o.statistics && old.is_none_or(|d| device_stats(d) != device_stats(new));
    if !(info_changed || stats_changed) {
        return None;
    }
    let mut l = head(
        old.is_some(),
        action_new,
        format!(
            "device name:{name} volume:{} minor:{}",
            new.volume,
            st::minor_of(new)
        ),
        o,
    );
    if info_changed || o.full {
        let bd = st::backing_dev_str;
        l.if_changed("backing_dev", old.map(bd), bd(new));
        l.always("disk", old.map(|d| d.disk), new.disk);
        let client = |d: &VolumeView| yn(d.backing_dev.is_none());
        l.if_changed("client", old.map(client), client(new));
        l.if_changed("open", old.map(|d| yn(d.open)), yn(new.open));
        l.if_changed("quorum", old.map(|d| yn(d.quorum)), yn(new.quorum));
    }
    if stats_changed || o.full {
        st::device_statistics(&mut l.text, old, new, o.verbose(), o.statistics, o.full);
    }
    Some(l.text)
}

/// The peer-device counters compared for a change.
fn peer_device_stats(c: &ConnectionView) -> (u64, u64, u64, u64, u64, Option<u64>, Option<u64>) {
    (
        c.received_kib,
        c.sent_kib,
        c.out_of_sync_kib,
        c.pending,
        c.unacked,
        c.resync_rate_kib,
        c.resync_eta_s,
    )
}

/// drbdsetup_events2.c `print_peer_device_changes()`. DRBD's kernel reports a peer device
/// only when its state changes; udrbd's events carry the whole resource, so without
/// `--statistics` a change of the counters alone (other than `done:`) is not a change.
fn peer_device_line(
    name: &str,
    old: Option<&ConnectionView>,
    new: &ConnectionView,
    action_new: &str,
    o: Opts,
) -> Option<String> {
    let repl_changed = old.is_none_or(|c| c.replication != new.replication);
    let disk_changed = old.is_none_or(|c| c.peer_disk != new.peer_disk);
    let susp_changed = old.is_none_or(|c| c.resync_suspended != new.resync_suspended);
    let stats_changed = old.is_none_or(|c| {
        c.done_centi != new.done_centi
            || (o.statistics && peer_device_stats(c) != peer_device_stats(new))
    });
    if !(repl_changed || disk_changed || susp_changed || stats_changed) {
        return None;
    }
    let mut l = head(
        old.is_some(),
        action_new,
        format!("{} volume:0", conn_head("peer-device", name, new)),
        o,
    );
    if repl_changed || o.full {
        l.always("replication", old.map(|c| c.replication), new.replication);
    }
    if disk_changed || o.full {
        l.always("peer-disk", old.map(|c| c.peer_disk), new.peer_disk);
        l.if_changed("peer-client", old.map(|_| "no"), "no");
    }
    if susp_changed || o.full {
        let susp = st::resync_suspended_str;
        l.always("resync-suspended", old.map(susp), susp(new));
    }
    if stats_changed || o.full {
        if let Some(done) = st::done_str(new) {
            l.text.push_str(&done);
        }
        if o.statistics {
            st::peer_device_statistics(&mut l.text, new, o.verbose());
        }
    }
    Some(l.text)
}

/// drbdsetup_events2.c `print_path_changes()`, for each path of the connection.
fn path_lines(
    name: &str,
    old: Option<&ConnectionView>,
    new: &ConnectionView,
    action_new: &str,
    o: Opts,
) -> Vec<String> {
    let old_paths = old.map(st::paths_of);
    let mut out = Vec::new();
    for p in st::paths_of(new) {
        let before = old_paths
            .as_ref()
            .and_then(|ps| ps.iter().find(|q| q.local == p.local && q.peer == p.peer));
        if before.is_some_and(|q| q.established == p.established) {
            continue;
        }
        let mut l = head(before.is_some(), action_new, path_head(name, new, &p), o);
        l.always(
            "established",
            before.map(|q| yn(q.established)),
            yn(p.established),
        );
        out.push(l.text);
    }
    out
}

/// Every line for `new` against `old` (None: the resource is new to the reader), in
/// drbdsetup's order: resource, connections, devices, then per connection its peer devices
/// and paths.
fn changes(
    old: Option<&ResourceView>,
    new: &ResourceView,
    action_new: &str,
    o: Opts,
) -> Vec<String> {
    let mut out = Vec::new();
    let name = &new.name;
    out.extend(resource_line(old, new, action_new, o));
    let old_conn = |c: &ConnectionView| {
        old.and_then(|r| r.connections.iter().find(|x| x.node_id == c.node_id))
    };
    for c in &new.connections {
        out.extend(connection_line(name, old_conn(c), c, action_new, o));
    }
    for d in &new.volumes {
        let old_dev = old.and_then(|r| r.volumes.iter().find(|x| x.volume == d.volume));
        out.extend(device_line(name, old_dev, d, action_new, o));
    }
    for c in &new.connections {
        out.extend(peer_device_line(name, old_conn(c), c, action_new, o));
        out.extend(path_lines(name, old_conn(c), c, action_new, o));
    }
    out
}

/// `destroy` lines for a resource that went down, innermost objects first.
fn destroyed(old: &ResourceView) -> Vec<String> {
    let name = &old.name;
    let mut out = Vec::new();
    for c in &old.connections {
        for p in st::paths_of(c) {
            out.push(format!("destroy {}", path_head(name, c, &p)));
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

fn path_head(name: &str, c: &ConnectionView, p: &PathView) -> String {
    format!(
        "{} local:{} peer:{}",
        conn_head("path", name, c),
        addr(p.local),
        addr(p.peer)
    )
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
    /// Print the current state, then `exists -`, and exit (with --poll: wait on stdin).
    #[arg(long)]
    pub now: bool,
    /// Read commands from stdin: `n` prints the state again (with --now: the whole state
    /// as `exists` lines; without: what changed since it was last printed); anything else,
    /// or the end of stdin, exits.
    #[arg(long)]
    pub poll: bool,
    /// Add DRBD's counters to each line (and show them change, once a second).
    #[arg(short = 's', long)]
    pub statistics: bool,
    /// Every line shows all of its object's fields, counters included, not only those
    /// that changed.
    #[arg(long)]
    pub full: bool,
    /// Changed fields show as `old->new` (`UNKNOWN->new` for a new object).
    #[arg(long)]
    pub diff: bool,
    /// Prefix each line with the local time (ISO 8601, microseconds).
    #[arg(short = 'T', long)]
    pub timestamps: bool,
}

/// Writes `lines` to stdout (each with a timestamp under `ts`) and flushes: readers such as
/// the Pacemaker agent or drbd-reactor act on lines as they come. False when stdout is gone
/// (a closed pipe), which ends the command quietly, as for any filter-style tool.
fn emit(lines: &[String], ts: bool) -> bool {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for l in lines {
        let written = if ts {
            writeln!(out, "{}{l}", timestamp())
        } else {
            writeln!(out, "{l}")
        };
        if written.is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}

/// What `--poll` read from stdin.
enum PollCmd {
    /// `n`: print the state again.
    Next,
    /// Anything but `n` or a newline, or the end of stdin.
    Quit,
}

/// Reads stdin up to the next `n` (newlines are skipped, as drbdsetup skips them).
fn next_poll_cmd(stdin: &mut impl std::io::Read) -> PollCmd {
    let mut c = [0u8; 1];
    loop {
        match stdin.read(&mut c) {
            Ok(1) if c[0] == b'\n' => continue,
            Ok(1) if c[0] == b'n' => return PollCmd::Next,
            _ => return PollCmd::Quit,
        }
    }
}

/// Prints the events `args` asks for as `drbdsetup events2` does, until the stream ends or
/// (with `--now`) after the initial dump.
pub fn stream(
    daemon: &crate::commands::daemon::Daemon,
    args: &Args,
) -> Result<(), crate::error::AdmError> {
    use std::sync::{Arc, Mutex, PoisonError};
    let opts = Opts {
        // drbdsetup: `--full` implies `--statistics`.
        statistics: args.statistics || args.full,
        full: args.full,
        diff: args.diff,
    };
    let ts = args.timestamps;
    // `all` means no filter, as in drbdsetup.
    let resource = args.resource.clone().filter(|r| r != "all");
    if args.now && args.poll {
        // The state, then again on each `n`, each time as a fresh initial dump.
        loop {
            let mut tracker = Tracker::new(opts);
            let resources = daemon.status(resource.as_deref())?;
            let lines = tracker.apply(Event::Snapshot {
                resources,
                initial: true,
            });
            if !emit(&lines, ts) {
                return Ok(());
            }
            if let PollCmd::Quit = next_poll_cmd(&mut std::io::stdin().lock()) {
                return Ok(());
            }
        }
    }
    let req = udrbd::ctl::Request::Events {
        resource: resource.clone(),
        statistics: opts.statistics,
    };
    let mut stream = udrbd::ctl::client::events(&daemon.socket, &req)?;
    let tracker = Arc::new(Mutex::new(Tracker::new(opts)));
    if args.poll {
        // Events print as they come; `n` on stdin prints what changed since (the state
        // asked for again and compared, as drbdsetup treats its new `exists` lines).
        let (tracker, daemon) = (Arc::clone(&tracker), daemon.clone());
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            while let PollCmd::Next = next_poll_cmd(&mut stdin) {
                let Ok(resources) = daemon.status(resource.as_deref()) else {
                    break;
                };
                let mut t = tracker.lock().unwrap_or_else(PoisonError::into_inner);
                let lines = t.apply(Event::Snapshot {
                    resources,
                    initial: false,
                });
                if !emit(&lines, ts) {
                    break;
                }
            }
            // drbdsetup exits when stdin says so, whatever the event stream is doing.
            std::process::exit(0);
        });
    }
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
        let initial = matches!(ev, Event::Snapshot { initial: true, .. });
        // Lines are computed and written under the tracker's lock, so that a `--poll`
        // update and an event do not interleave.
        let mut t = tracker.lock().unwrap_or_else(PoisonError::into_inner);
        let lines = t.apply(ev);
        if !emit(&lines, ts) || (args.now && initial) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use udrbd::repl::{ConnState, ReplState};

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
        let mut t = Tracker::new(Opts {
            statistics: true,
            ..Opts::default()
        });
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
             write-ordering:flush may_promote:no promotion_score:10101"
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
