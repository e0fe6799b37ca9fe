//! The node daemon's resource table: what `up` created, and the answers to control requests in
//! drbdsetup's words and exit codes.
//!
//! - [`nbd`]: the NBD listeners; [`nbd_backend`]: resources as NBD exports.
//! - [`metrics`]: the Prometheus endpoint.
//! - [`kdev`]: the config's `device` as a kernel block device.

mod adjust;
pub mod kdev;
pub mod metrics;
pub mod nbd;
pub mod nbd_backend;

use crate::config::Resolved;
use crate::ctl::proto::{Event, Request, ResourceSpec, ResourceView, Response};
use crate::ctl::server::Handler;
use crate::disk::metadev::MetaDevError;
use crate::driver::{AttachError, DiskOpener, Driver};
use crate::repl::{AdminCmd, AdminError};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

/// Every resource this node has up.
pub struct Daemon {
    resources: Mutex<BTreeMap<String, Arc<Driver>>>,
    opener: Arc<DiskOpener>,
    nbd: OnceLock<Arc<nbd::NbdFront>>,
    /// State changes and handler runs of every resource, for `drbdsetup events2`.
    events: tokio::sync::broadcast::Sender<Event>,
    /// The kernel block devices (`/dev/drbdN`) of the resources that have one.
    kdevs: Mutex<BTreeMap<String, kdev::KernelDevice>>,
    /// This daemon, for the background tasks it starts.
    me: std::sync::Weak<Daemon>,
}

/// Events buffered per listener before it counts as fallen behind (and gets a fresh
/// snapshot instead of what it missed).
const EVENT_BACKLOG: usize = 1024;
/// Events queued for one client's socket.
const CLIENT_QUEUE: usize = 64;
/// How often `events2 --statistics` sees the counters and resync progress.
const STATISTICS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").finish_non_exhaustive()
    }
}

/// drbdsetup's exit code for "Failure: (NNN) ..." configuration errors.
const E_CONFIG: i32 = 10;

fn error(code: i32, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

fn unknown_resource(name: &str) -> Response {
    error(E_CONFIG, format!("{name}: Failure: (158) Unknown resource"))
}

impl Daemon {
    pub fn new(opener: Arc<DiskOpener>) -> Arc<Daemon> {
        Arc::new_cyclic(|me| Daemon {
            me: me.clone(),
            resources: Mutex::new(BTreeMap::new()),
            opener,
            nbd: OnceLock::new(),
            events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
            kdevs: Mutex::new(BTreeMap::new()),
        })
    }

    /// The NBD front, once started (for `nbd-listen`).
    pub fn set_nbd(&self, front: Arc<nbd::NbdFront>) {
        let _ = self.nbd.set(front);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Driver>>> {
        self.resources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource named `name`, if up.
    pub fn get(&self, name: &str) -> Option<Arc<Driver>> {
        self.table().get(name).cloned()
    }

    /// Every resource, by name.
    pub fn all(&self) -> Vec<Arc<Driver>> {
        self.table().values().cloned().collect()
    }

    async fn up(&self, resolved: &Resolved) -> Response {
        let spec = match ResourceSpec::from_resolved(resolved) {
            Ok(s) => s,
            Err(e) => return error(E_CONFIG, e),
        };
        if let Some(d) = self.get(&spec.name) {
            return if d.spec().same_except_handlers(&spec) {
                // drbdsetup's new-minor on a minor that exists (drbdadm up of a resource that is
                // up): scripts tell "already up" from "up failed" by it.
                let who = spec.minor.map_or(spec.name.clone(), |m| m.to_string());
                error(
                    10,
                    format!(
                        "{who}: Failure: (161) Minor or volume exists already (delete it first)"
                    ),
                )
            } else {
                error(
                    E_CONFIG,
                    format!(
                        "{}: is already up with a different configuration; run `drbdadm adjust \
                         {}` to apply the new one",
                        spec.name, spec.name
                    ),
                )
            };
        }
        if let Err(r) = check_links(&spec) {
            return r;
        }
        let nbd_tls = match nbd::export_tls(&spec.nbd_access, spec.nbd_listen.is_some()) {
            Ok(t) => t,
            Err(e) => return error(E_CONFIG, format!("{}: {e}", spec.name)),
        };
        if let (Some(addr), Some(front)) = (spec.nbd_listen, self.nbd.get())
            && let Err(e) = front.listen_tcp(addr, nbd_tls).await
        {
            return error(
                E_CONFIG,
                format!(
                    "{}: cannot serve NBD on nbd-listen {addr}: {e}; choose a free address in \
                     the resource's nbd-listen",
                    spec.name
                ),
            );
        }
        let driver = Driver::new(spec.clone(), self.events.clone());
        self.table().insert(spec.name.clone(), driver.clone());
        driver.publish_state();
        for p in &spec.peers {
            if p.net.shared_secret.is_none()
                && !p.net.tls
                && p.address.is_some_and(|a| !a.ip().is_loopback())
            {
                // The link accepts only the peer's address, but whoever holds that address (or
                // can spoof it on the segment) is taken for the peer without a secret.
                tracing::warn!(
                    "{}: the link to {} is not authenticated: anyone who controls its address \
                     can replicate with this node; set `net {{ cram-hmac-alg sha256; \
                     shared-secret \"...\"; }}` or `net {{ tls yes; ... }}`",
                    spec.name,
                    p.name
                );
            }
            if p.net.fencing != crate::config::Fencing::DontCare
                && !spec.handlers.contains_key("fence-peer")
            {
                // As on DRBD, a missing handler "returns 0", which fence-peer callers read as a
                // broken helper: nothing is fenced, and resource-and-stonith stays frozen.
                tracing::warn!(
                    "{}: fencing {} toward {} but no fence-peer handler is configured: losing \
                     the peer as Primary will not fence it{}",
                    spec.name,
                    p.net.fencing.word(),
                    p.name,
                    if p.net.fencing == crate::config::Fencing::ResourceAndStonith {
                        ", and I/O stays frozen until `drbdadm resume-io`"
                    } else {
                        ""
                    }
                );
            }
        }
        if spec.disk.is_none() {
            // A diskless client: nothing to attach; `up` connects it (DRBD's `up` is attach
            // + connect, the attach being a no-op for `disk none;`).
            driver.start_links();
        } else {
            let r = self.attach(&driver).await;
            if r != Response::Ok {
                return r;
            }
            // DRBD's `up` is attach + connect.
            driver.start_links();
        }
        match self.ensure_kernel_device(&driver).await {
            Some(message) => Response::Notice { message },
            None => Response::Ok,
        }
    }

    async fn attach(&self, driver: &Arc<Driver>) -> Response {
        let d = driver.clone();
        let opener = self.opener.clone();
        let r = tokio::task::spawn_blocking(move || d.attach_blocking(&*opener)).await;
        match r {
            Ok(Ok(())) => Response::Ok,
            Ok(Err(e)) => attach_failure(&driver.spec(), &e),
            Err(e) => error(20, format!("attach failed: {e}")),
        }
    }

    async fn connect(&self, name: &str, discard_my_data: bool, tentative: bool) -> Response {
        let Some(d) = self.get(name) else {
            return unknown_resource(name);
        };
        if let Err(e) = d
            .admin(AdminCmd::Connect {
                discard_my_data,
                tentative,
            })
            .await
        {
            return admin_failure(name, &e, &d);
        }
        d.start_links();
        Response::Ok
    }

    /// `disconnect`: agreed with the peer first (the engine's cluster-wide change), then the
    /// links close; `--force` closes them at once.
    async fn disconnect(&self, name: &str, force: bool) -> Response {
        let Some(d) = self.get(name) else {
            return unknown_resource(name);
        };
        if !force && let Err(e) = d.admin(AdminCmd::Disconnect).await {
            return admin_failure(name, &e, &d);
        }
        d.stop_links().await;
        Response::Ok
    }

    async fn down(&self, name: &str) -> Response {
        let Some(d) = self.get(name) else {
            // drbdsetup down succeeds for a resource that is not up.
            return Response::Ok;
        };
        if d.open_count() > 0 {
            return admin_failure(
                name,
                &AdminError::State(crate::repl::StateError::DeviceInUse),
                &d,
            );
        }
        if let Some(held) = self.kernel_device_held(name) {
            return held;
        }
        // The kernel device goes first: nothing may reach the resource past this point.
        let kdev = self.kdevs().remove(name);
        if let Some(k) = kdev {
            let _ = tokio::task::spawn_blocking(move || k.remove()).await;
        }
        // As DRBD's `down`: a disconnect the peer agrees to (a Secondary leaving a Primary
        // under fencing is Outdated, and the Primary does not call fence-peer for it).
        if let Err(e) = d.admin(AdminCmd::Disconnect).await {
            return admin_failure(name, &e, &d);
        }
        d.stop_links().await;
        if let Err(e) = d.admin(AdminCmd::Detach).await {
            return admin_failure(name, &e, &d);
        }
        self.table().remove(name);
        let _ = self.events.send(Event::Destroy {
            name: name.to_string(),
        });
        Response::Ok
    }

    async fn admin(&self, name: &str, cmd: AdminCmd) -> Response {
        let Some(d) = self.get(name) else {
            return unknown_resource(name);
        };
        match d.admin(cmd).await {
            Ok(()) => Response::Ok,
            Err(e) => admin_failure(name, &e, &d),
        }
    }

    /// `drbdsetup forget-peer` (DRBD's `drbd_adm_forget_peer()`): a connection that is not
    /// StandAlone refuses (`(125)`, checked by the engine), then a node id DRBD cannot have
    /// (`(171)`).
    async fn forget_peer(&self, name: &str, peer_node_id: u32) -> Response {
        let Some(d) = self.get(name) else {
            return unknown_resource(name);
        };
        let node = u8::try_from(peer_node_id)
            .ok()
            .filter(|n| *n <= crate::types::MAX_NODE_ID);
        let Some(node) = node else {
            // DRBD's text ends in a newline of its own.
            return error(
                E_CONFIG,
                format!("{name}: Failure: (171) Invalid peer-node-id\n"),
            );
        };
        let node = crate::types::NodeId(node);
        match d.admin(AdminCmd::ForgetPeer { node }).await {
            Ok(()) => Response::Ok,
            Err(e) => admin_failure(name, &e, &d),
        }
    }

    /// `drbdsetup get-gi`/`show-gi` (drbdsetup's `show_or_get_gi_cmd()`): the identifiers of
    /// the peer device, or its words and exit codes when there is none or it has no disk.
    fn get_gi(&self, name: &str, peer_node_id: u32, volume: u32) -> Response {
        let no_such = || error(E_CONFIG, format!("{name}: No such peer device"));
        let Some(d) = self.get(name) else {
            return no_such();
        };
        let Some(node) = d
            .spec()
            .peers
            .iter()
            .find(|p| u32::from(p.node_id) == peer_node_id)
            .map(|p| crate::types::NodeId(p.node_id))
        else {
            return no_such();
        };
        // This build serves one volume per resource, volume 0 to the daemon.
        if volume != 0 {
            return no_such();
        }
        match d.generation_ids(node) {
            Some(gi) => Response::Gi { gi },
            None => {
                let off = d
                    .status()
                    .peers
                    .iter()
                    .find(|p| p.node_id == node)
                    .is_none_or(|p| p.repl == crate::repl::ReplState::Off);
                error(
                    1,
                    if off {
                        "Device is unconfigured"
                    } else {
                        "Device has no disk"
                    },
                )
            }
        }
    }

    fn status(&self, name: Option<&str>) -> Response {
        let list = match name {
            Some(n) => match self.get(n) {
                Some(d) => vec![d],
                None => return error(E_CONFIG, format!("{n}: No such resource")),
            },
            None => self.all(),
        };
        Response::Status {
            resources: list.iter().map(|d| d.view()).collect(),
        }
    }

    /// The views of the resources `filter` selects (all with None).
    fn views(&self, filter: Option<&str>) -> Vec<ResourceView> {
        self.all()
            .iter()
            .filter(|d| filter.is_none_or(|f| d.spec().name == f))
            .map(|d| d.view())
            .collect()
    }

    /// Feeds one events2 client: the initial snapshot, then every event of the selected
    /// resources, until the client's receiver is gone.
    async fn pump_events(
        self: Arc<Daemon>,
        filter: Option<String>,
        statistics: bool,
        tx: tokio::sync::mpsc::Sender<Event>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        // Subscribed before the snapshot is taken, so no change falls between the two.
        let mut bus = self.events.subscribe();
        let snapshot = |initial| Event::Snapshot {
            resources: self.views(filter.as_deref()),
            initial,
        };
        if tx.send(snapshot(true)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(STATISTICS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                r = bus.recv() => match r {
                    Ok(ev) if selected(&ev, filter.as_deref()) => ev,
                    Ok(_) => continue,
                    // Fell behind: the present state replaces what was missed.
                    Err(RecvError::Lagged(_)) => snapshot(false),
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick(), if statistics => snapshot(false),
                () = tx.closed() => return,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }

    /// Clean shutdown (SIGTERM): every resource is detached so its metadata says "clean".
    /// Resources still held open by a client are detached anyway once their I/O is done; the
    /// client sees the connection close.
    pub async fn shutdown(&self) {
        for d in self.all() {
            let name = d.spec().name.clone();
            d.stop_links().await;
            match d.admin(AdminCmd::Detach).await {
                Ok(()) => tracing::info!("{name}: detached cleanly"),
                Err(e) => tracing::warn!("{name}: could not detach cleanly: {e}"),
            }
        }
    }
}

/// A link configuration that cannot work (TLS files, an unknown cram-hmac-alg) fails `up`
/// and `adjust` now, not the connection later.
fn check_links(spec: &ResourceSpec) -> Result<(), Response> {
    for p in &spec.peers {
        let (me, peer) = (
            crate::types::NodeId(spec.node_id),
            crate::types::NodeId(p.node_id),
        );
        if let Err(e) =
            crate::net::LinkConfig::from_net_options(&spec.name, me, peer, &p.name, &p.net)
        {
            return Err(error(
                E_CONFIG,
                format!("{}: peer {}: {e}", spec.name, p.name),
            ));
        }
    }
    Ok(())
}

fn admin_failure(name: &str, e: &AdminError, d: &Driver) -> Response {
    match e {
        AdminError::State(s) => {
            let mut msg = format!("{name}: State change failed: {s}");
            if matches!(s, crate::repl::StateError::DeviceInUse) {
                let n = d.open_count();
                msg.push_str(&format!(
                    "\nadditional info from kernel:\n{n} NBD client(s) hold the export {name} open; \
                     disconnect them first"
                ));
            }
            error(s.exit_code(), msg)
        }
        AdminError::Meta(m) => error(E_CONFIG, format!("{name}: Failure: (118) {m}")),
        AdminError::DiscardMyDataPrimary
        | AdminError::DiskTooSmall
        | AdminError::ResizeResync
        | AdminError::NetConfigured => error(e.exit_code(), format!("{name}: {e}")),
    }
}

fn attach_failure(spec: &ResourceSpec, e: &AttachError) -> Response {
    let who = spec.minor.map_or(spec.name.clone(), |m| m.to_string());
    let msg = match e {
        AttachError::Meta(MetaDevError::NoMetadata { .. }) => format!(
            "{who}: Failure: (119) No valid meta-data signature found.\n\n\t==> Use 'drbdadm \
             create-md {}' to initialize meta-data area. <==\n({e})",
            spec.name
        ),
        AttachError::Meta(MetaDevError::Shrunk { .. }) => {
            format!("{who}: Failure: (111) Low.dev. smaller than requested DRBD-dev. size.\n{e}")
        }
        AttachError::Meta(MetaDevError::Io { .. }) => format!(
            "{who}: Failure: (118) IO error(s) occurred during initial access to meta-data.\n{e}"
        ),
        other => format!("{who}: Failure: {other}"),
    };
    error(e.exit_code(), msg)
}

/// Whether `ev` concerns the resource `filter` names (every event without a filter).
fn selected(ev: &Event, filter: Option<&str>) -> bool {
    let Some(f) = filter else { return true };
    match ev {
        Event::Snapshot { .. } => true,
        Event::State { resource } => resource.name == f,
        Event::Destroy { name } => name == f,
        Event::Helper(h) => h.name == f,
    }
}

impl Handler for Daemon {
    fn handle(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + Send + '_>> {
        self.answer(req)
    }

    fn events(
        self: &Arc<Self>,
        resource: Option<String>,
        statistics: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<Event>, Response> {
        if let Some(n) = &resource
            && self.get(n).is_none()
        {
            return Err(error(E_CONFIG, format!("{n}: No such resource")));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(self.clone().pump_events(resource, statistics, tx));
        Ok(rx)
    }
}

impl Daemon {
    fn answer(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + Send + '_>> {
        Box::pin(async move {
            match req {
                Request::Up { resource } => self.up(&resource).await,
                Request::Adjust { resource, dry_run } => self.adjust(&resource, dry_run).await,
                Request::Down { resource } => self.down(&resource).await,
                Request::Attach { resource } => match self.get(&resource) {
                    Some(d) => self.attach(&d).await,
                    None => unknown_resource(&resource),
                },
                Request::Detach { resource, force } => {
                    let cmd = if force {
                        AdminCmd::ForceDetach
                    } else {
                        AdminCmd::Detach
                    };
                    self.admin(&resource, cmd).await
                }
                Request::ForgetPeer {
                    resource,
                    peer_node_id,
                } => self.forget_peer(&resource, peer_node_id).await,
                Request::GetGi {
                    resource,
                    peer_node_id,
                    volume,
                } => self.get_gi(&resource, peer_node_id, volume),
                Request::Primary { resource, force } => {
                    self.admin(&resource, AdminCmd::Primary { force }).await
                }
                Request::Secondary { resource, force } => {
                    let cmd = if force {
                        AdminCmd::ForceSecondary
                    } else if let Some(held) = self.kernel_device_held(&resource) {
                        return held;
                    } else {
                        AdminCmd::Secondary
                    };
                    self.admin(&resource, cmd).await
                }
                Request::NewCurrentUuid {
                    resource,
                    clear_bitmap,
                } => {
                    self.admin(&resource, AdminCmd::NewCurrentUuid { clear_bitmap })
                        .await
                }
                Request::Connect {
                    resource,
                    discard_my_data,
                    tentative,
                } => self.connect(&resource, discard_my_data, tentative).await,
                Request::Disconnect { resource, force } => self.disconnect(&resource, force).await,
                Request::Invalidate {
                    resource,
                    reset_bitmap,
                } => {
                    self.admin(&resource, AdminCmd::Invalidate { reset_bitmap })
                        .await
                }
                Request::Verify {
                    resource,
                    start,
                    stop,
                } => {
                    let cmd = AdminCmd::Verify {
                        start: crate::types::Sector(start),
                        stop: stop.map(crate::types::Sector),
                    };
                    self.admin(&resource, cmd).await
                }
                Request::InvalidateRemote {
                    resource,
                    reset_bitmap,
                } => {
                    self.admin(&resource, AdminCmd::InvalidateRemote { reset_bitmap })
                        .await
                }
                Request::PauseSync { resource } => self.admin(&resource, AdminCmd::PauseSync).await,
                Request::ResumeSync { resource } => {
                    self.admin(&resource, AdminCmd::ResumeSync).await
                }
                Request::Outdate { resource } => self.admin(&resource, AdminCmd::Outdate).await,
                Request::Resize {
                    resource,
                    assume_clean,
                    size_bytes,
                } => {
                    self.admin(
                        &resource,
                        AdminCmd::Resize {
                            no_resync: assume_clean,
                            user_bytes: size_bytes,
                        },
                    )
                    .await
                }
                Request::ResumeIo { resource } => self.admin(&resource, AdminCmd::ResumeIo).await,
                Request::SuspendIo { resource } => self.admin(&resource, AdminCmd::SuspendIo).await,
                Request::Status { resource } => self.status(resource.as_deref()),
                Request::Show { resource } => match resource {
                    Some(n) => match self.get(&n) {
                        Some(d) => Response::Show {
                            resources: vec![(*d.spec()).clone()],
                        },
                        None => error(E_CONFIG, format!("{n}: No such resource")),
                    },
                    None => Response::Show {
                        resources: self.all().iter().map(|d| (*d.spec()).clone()).collect(),
                    },
                },
                // Served by `Handler::events`; the server never hands it here.
                Request::Events { .. } => error(20, "events are a stream: use the event request"),
            }
        })
    }
}
