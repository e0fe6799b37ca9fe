//! One driver per resource: feeds the [`Engine`] from the NBD server, the control socket and
//! the disk and metadata completions, and executes the engine's actions in the order it emits
//! them.
//!
//! Concurrency: the engine sits behind a mutex. Every entry point locks, hands the engine one
//! input, drains its actions, unlocks, and only then executes them, so a disk engine or a
//! callback that completes inline can re-enter without deadlock. Executing batches from several
//! threads cannot reorder anything that matters: the engine itself sequences every dependency
//! (it holds a write until its metadata is persisted, and never has two superblock, AL or bitmap
//! writes in flight), and the metadata writes run on one thread in submission order.

pub mod handlers;
mod link;
mod meta_thread;

use crate::bitmap::Bitmap;
use crate::ctl::proto::{
    ConnectionView, Event, HelperEvent, PathView, ResourceSpec, ResourceView, VolumeView,
};
use crate::disk::engine::{AllocRun, Completion, DiskDone, DiskEngine, DiskOp};
use crate::disk::metadev::{self, MetaState};
use crate::net::LinkError;
use crate::repl::digest::DigestAlg;
use crate::repl::{
    Action, AdminCmd, AdminError, Attached, Engine, EngineConfig, Input, IoError, IoOp,
    OpenRefusal, PeerInfo, QuorumSettings, Role, Settings, Status,
};
use crate::types::{NodeId, ReqId, Time};
use meta_thread::{MetaJob, MetaThread};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use tokio::sync::oneshot;

/// The answer to an open (NBD GO).
type OpenDone = Box<dyn FnOnce(Result<(), OpenRefusal>) + Send + 'static>;

/// Completion of an application request: `Some(data)` for reads.
pub type IoDone = Box<dyn FnOnce(Result<Option<bytes::Bytes>, IoError>) + Send + 'static>;

/// Opens the data engine for a backing device of `data_bytes` usable bytes.
pub type DiskOpener =
    dyn Fn(&Path, u64) -> std::io::Result<Arc<dyn DiskEngine>> + Send + Sync + 'static;

/// Why attaching failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{0}")]
    Meta(#[from] metadev::MetaDevError),
    #[error("cannot open the backing device {path}: {source}")]
    Disk {
        path: String,
        source: std::io::Error,
    },
    #[error("the resource has no disk configured on this node")]
    NoDisk,
    /// drbdsetup's text for `attach` on a node with a disk.
    #[error("(124) Device is attached to a disk (use detach first)")]
    Attached,
    /// DRBD's `ERR_IMPLICIT_SHRINK` at attach.
    #[error(
        "(170) Implicit device shrinking not allowed. See kernel log.\n\
         To-be-attached device has last effective > current size, and is consistent\n\
         ({eff} > {cur} sectors). Refusing to attach."
    )]
    ImplicitShrink { eff: u64, cur: u64 },
    #[error("{0}")]
    Internal(String),
}

impl AttachError {
    /// drbdsetup's exit code: 10 for a metadata/config failure ("Failure: (119) ..."), 20 else.
    pub fn exit_code(&self) -> i32 {
        match self {
            AttachError::Meta(_)
            | AttachError::NoDisk
            | AttachError::Attached
            | AttachError::ImplicitShrink { .. } => 10,
            _ => 20,
        }
    }
}

static NEXT_BATCH_KEY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One resource.
pub struct Driver {
    /// What the resource runs; `drbdadm adjust` replaces it (see [`Driver::reconfigure`]).
    spec: RwLock<Arc<ResourceSpec>>,
    handlers: RwLock<Arc<handlers::HandlerRunner>>,
    rt: Option<tokio::runtime::Handle>,
    inner: Mutex<Inner>,
    /// Groups this driver's deferred disk completions (see [`Driver::disk_done`]): unique for
    /// the process's life, unlike an address that a later driver may reuse.
    batch_key: usize,
    /// The engine's clock starts here: [`Time`] is nanoseconds since.
    origin: std::time::Instant,
    me: Weak<Driver>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("resource", &self.spec().name)
            .finish()
    }
}

struct Inner {
    engine: Engine,
    disk: Option<Arc<dyn DiskEngine>>,
    meta: Option<MetaThread>,
    io_waiters: HashMap<ReqId, IoDone>,
    admin_waiters: HashMap<u64, oneshot::Sender<Result<(), AdminError>>>,
    open_waiters: HashMap<u64, OpenDone>,
    next_req: u64,
    next_token: u64,
    /// Per connected peer: where the engine's packets go (see `link`).
    senders: HashMap<NodeId, PeerSender>,
    peer_tasks: HashMap<NodeId, link::PeerTask>,
    /// The engine's next deadline ([`Engine::poll_timeout`]), watched by the timer task.
    deadline: tokio::sync::watch::Sender<Option<Time>>,
    timer: Option<tokio::task::JoinHandle<()>>,
    events: Publisher,
    /// The attached metadata's `md-flushes` switch (see [`Driver::reconfigure`]).
    md_flushes: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The attached backing device (what `drbdadm resize` measures).
    disk_path: Option<std::path::PathBuf>,
    /// Per configured peer: reading its data stream is paused (`max-buffers`, the engine's
    /// [`Action::ReceiveData`]); each link of that peer follows it.
    receive_paused: HashMap<NodeId, tokio::sync::watch::Sender<bool>>,
}

/// Where state changes go for `drbdsetup events2` (the daemon's event bus).
struct Publisher {
    /// For the view: minor, backing device, peer addresses.
    spec: Arc<ResourceSpec>,
    tx: tokio::sync::broadcast::Sender<Event>,
}

impl Publisher {
    /// Publishes the state now. Called under the driver's lock, so the events leave in the
    /// order the states happened even when batches run on several threads.
    /// Callers check [`Publisher::listening`] first.
    fn state(&self, engine: &Engine, links: &LinkFacts) {
        let resource = view_of(&self.spec, engine.status(), links);
        let _ = self.tx.send(Event::State { resource });
    }

    /// Someone reads the events.
    fn listening(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes a handler's call (`status` None) or response.
    fn helper(
        &self,
        handler: crate::repl::handler::Handler,
        node: Option<NodeId>,
        status: Option<i32>,
    ) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let peer = node.and_then(|n| self.spec.peers.iter().find(|p| p.node_id == n.0));
        // DRBD's kernel names the device for device-level helpers and the connection for those
        // that concern a peer; fence-peer, unfence-peer and disconnected are connection-level.
        let on_device = !matches!(
            handler,
            crate::repl::handler::Handler::FencePeer
                | crate::repl::handler::Handler::UnfencePeer
                | crate::repl::handler::Handler::Disconnected
        );
        let _ = self.tx.send(Event::Helper(HelperEvent {
            name: self.spec.name.clone(),
            peer_node_id: peer.map(|p| p.node_id),
            conn_name: peer.map(|p| p.name.clone()),
            volume: on_device.then_some(0),
            minor: if on_device { self.spec.minor } else { None },
            helper: handler.name().to_string(),
            status,
        }));
    }
}

/// A request for the backing device. The disk is taken under the same lock that drained the
/// engine, so the hot path locks once per batch, not once more per request.
struct DiskReq {
    id: ReqId,
    op: IoOp,
    disk: Option<Arc<dyn DiskEngine>>,
}

/// Work taken out of the lock, executed in order after it is released.
enum Exec {
    /// The disk requests of a batch, submitted together (see [`take_actions`]).
    Disk(Vec<DiskReq>),
    Meta(MetaJob),
    Io(IoDone, Result<Option<bytes::Bytes>, IoError>),
    Admin(
        oneshot::Sender<Result<(), AdminError>>,
        Result<(), AdminError>,
    ),
    Opened(OpenDone, Result<(), OpenRefusal>),
    Log(String),
    DropLink(NodeId, bool),
    /// A packet whose place on the wire was taken under the lock; the link's drain task
    /// encodes (for a large one, a copy and a CRC of up to 1 MiB) and writes it.
    Send(crate::net::Reservation, crate::repl::wire::Packet),
    Handler(crate::repl::handler::Handler, Option<NodeId>),
    /// The engine detached a failed disk: close it; the metadata thread is joined off the
    /// executor.
    ReleaseDisk(Option<Arc<dyn DiskEngine>>, Option<MetaThread>),
}

impl Driver {
    /// A resource that is up but not yet attached; its state changes go to `events`.
    pub fn new(spec: ResourceSpec, events: tokio::sync::broadcast::Sender<Event>) -> Arc<Driver> {
        let settings = settings_of(&spec);
        let cfg = EngineConfig {
            resource: spec.name.clone(),
            node_id: NodeId(spec.node_id),
            peers: settings.peers,
            auto_promote: settings.auto_promote,
            auto_promote_timeout_ms: settings.auto_promote_timeout_ms,
            twopc_timeout_ms: settings.twopc_timeout_ms,
            quorum: settings.quorum,
            // Any value works for determinism; the OS makes the two nodes' UUIDs differ.
            uuid_seed: getrandom::u64().unwrap_or(0x5eed_f00d_u64),
        };
        let spec = Arc::new(spec);
        let handlers = Arc::new(handlers::HandlerRunner::new(
            &spec,
            handlers::handler_timeout(),
        ));
        let publisher = Publisher {
            spec: spec.clone(),
            tx: events,
        };
        let receive_paused = spec
            .peers
            .iter()
            .map(|p| (NodeId(p.node_id), tokio::sync::watch::Sender::new(false)))
            .collect();
        Arc::new_cyclic(|me| Driver {
            handlers: RwLock::new(handlers),
            // Handlers run as tokio tasks; completions that trigger them come from disk threads.
            rt: tokio::runtime::Handle::try_current().ok(),
            spec: RwLock::new(spec),
            inner: Mutex::new(Inner {
                engine: Engine::new(cfg),
                disk: None,
                meta: None,
                io_waiters: HashMap::new(),
                admin_waiters: HashMap::new(),
                open_waiters: HashMap::new(),
                next_req: 1,
                next_token: 1,
                senders: HashMap::new(),
                peer_tasks: HashMap::new(),
                deadline: tokio::sync::watch::Sender::new(None),
                timer: None,
                events: publisher,
                md_flushes: None,
                disk_path: None,
                receive_paused,
            }),
            batch_key: NEXT_BATCH_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            origin: std::time::Instant::now(),
            me: me.clone(),
        })
    }

    /// The engine's time now.
    fn now(&self) -> Time {
        Time(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The resource as `up` pushed it.
    pub fn spec(&self) -> Arc<ResourceSpec> {
        self.spec
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn handlers(&self) -> Arc<handlers::HandlerRunner> {
        self.handlers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Locks the state. A poisoned lock means a panic while holding it; with `panic = abort`
    /// in release that cannot happen, and in tests the state is still the best we have.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data engine accepts requests up to `bytes` (`drbdadm resize` moved the metadata).
    pub(super) fn grow_disk_engine(&self, bytes: u64) {
        if let Some(disk) = self.lock().disk.clone() {
            disk.grow_to(bytes);
        }
    }

    /// Records the backing device's size (see `disk::md_move`), after an attach and after
    /// `drbdadm resize` moved the metadata.
    pub fn record_backing_size(&self) {
        let spec = self.spec();
        let Some(disk) = spec.disk.as_deref() else {
            return;
        };
        let record =
            crate::disk::md_move::lkbd_path(&crate::disk::md_move::state_dir(), &spec.name);
        let recorded = metadev::backing_size(Path::new(disk)).and_then(|bytes| {
            crate::disk::md_move::record_size(&record, Path::new(disk), bytes).map_err(|source| {
                metadev::MetaDevError::Io {
                    path: record.clone(),
                    source,
                }
            })
        });
        if let Err(e) = recorded {
            tracing::warn!(
                "{}: cannot record the size of {disk}: {e}; should it grow while detached, its \
                 meta data will not be found",
                spec.name
            );
        }
    }

    /// `drbdadm adjust`: runs `spec` from now on. The engine takes the options it acts on
    /// (see [`settings_of`]), the metadata thread `md-flushes`, the handler runner its
    /// commands, and status the rest. What only a new link or disk applies (addresses, the
    /// handshake's agreements, the backing device) is the caller's: it reconnects or
    /// re-attaches after this. The name, node id and set of peers must be unchanged.
    pub fn reconfigure(&self, spec: ResourceSpec) {
        let settings = settings_of(&spec);
        let spec = Arc::new(spec);
        *self
            .handlers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(
            handlers::HandlerRunner::new(&spec, handlers::handler_timeout()),
        );
        *self
            .spec
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = spec.clone();
        let actions = {
            let mut g = self.lock();
            if let Some(f) = &g.md_flushes {
                f.store(spec.md_flushes, std::sync::atomic::Ordering::Relaxed);
            }
            g.events.spec = spec;
            g.engine
                .handle(self.now(), Input::Reconfigure(Box::new(settings)));
            take_actions(&mut g)
        };
        self.exec(actions);
        self.publish_state();
    }

    /// Reads the metadata, opens the disk and hands both to the engine (`drbdadm attach`, and
    /// the attach step of `up`). Blocking: call it from a blocking context.
    pub fn attach_blocking(&self, opener: &DiskOpener) -> Result<(), AttachError> {
        let spec = self.spec();
        let disk_path = spec.disk.as_deref().ok_or(AttachError::NoDisk)?;
        if self.lock().disk.is_some() {
            return Err(AttachError::Attached);
        }
        // A backing device that grew while detached still has its internal metadata at the
        // old end: moved first (DRBD's check-resize), and the size attached with recorded.
        let record =
            crate::disk::md_move::lkbd_path(&crate::disk::md_move::state_dir(), &spec.name);
        if let Some(old) = crate::disk::md_move::recorded_size(&record, Path::new(disk_path)) {
            match crate::disk::md_move::check_resize(Path::new(disk_path), &spec.meta_disk, old) {
                Ok(Some(m)) => tracing::info!(
                    "{}: {disk_path} grew from {} to {} bytes: moved the meta data to its new end",
                    spec.name,
                    m.old_backing,
                    m.new_backing
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "{}: {disk_path} was {old} bytes when last attached; no meta data found at \
                     that end either: {e}",
                    spec.name
                ),
            }
        }
        let state = metadev::read_md(Path::new(disk_path), &spec.meta_disk)?;
        self.record_backing_size();
        let meta_io = crate::disk::meta_io::MetaIo::open(&state, spec.md_flushes)?;
        let md_flushes = meta_io.flush_switch();
        let data_bytes = state.layout.data_bytes;
        let disk =
            opener(Path::new(disk_path), data_bytes).map_err(|source| AttachError::Disk {
                path: disk_path.to_string(),
                source,
            })?;
        let attached = attached_from(&state, &spec)?;
        let meta = MetaThread::start(&spec.name, meta_io, self.me.clone())
            .map_err(|e| AttachError::Internal(format!("cannot start metadata thread: {e}")))?;
        let actions = {
            let mut g = self.lock();
            g.disk = Some(disk);
            g.meta = Some(meta);
            g.md_flushes = Some(md_flushes);
            g.disk_path = Some(std::path::PathBuf::from(disk_path));
            g.engine
                .handle(self.now(), Input::Attach(Box::new(attached)));
            take_actions(&mut g)
        };
        self.exec(actions);
        Ok(())
    }

    /// Runs an administrative state change and waits until the engine answers (after the
    /// metadata that records it is on disk).
    pub async fn admin(&self, cmd: AdminCmd) -> Result<(), AdminError> {
        let (tx, rx) = oneshot::channel();
        let actions = {
            let mut g = self.lock();
            let token = g.next_token;
            g.next_token += 1;
            g.admin_waiters.insert(token, tx);
            g.engine.handle(self.now(), Input::Admin { token, cmd });
            take_actions(&mut g)
        };
        self.exec(actions);
        let result = rx
            .await
            .unwrap_or(Err(AdminError::Meta(crate::repl::MetaError::Gone)));
        if matches!(cmd, AdminCmd::Detach) && result.is_ok() {
            let (disk, meta) = {
                let mut g = self.lock();
                (g.disk.take(), g.meta.take())
            };
            drop(disk);
            if let Some(m) = meta {
                // Joins the metadata thread off the async executor.
                let _ = tokio::task::spawn_blocking(move || m.stop()).await;
            }
        }
        result
    }

    /// An NBD client opens the device (GO), and `done` gets the engine's answer. An
    /// auto-promotion may wait: for the peer's agreement, for a handshake to decide, at most
    /// `auto-promote-timeout`.
    pub fn open_waiting(&self, done: impl FnOnce(Result<(), OpenRefusal>) + Send + 'static) {
        let actions = {
            let mut g = self.lock();
            let token = g.next_token;
            g.next_token += 1;
            g.open_waiters.insert(token, Box::new(done));
            g.engine.handle(self.now(), Input::Open { token });
            take_actions(&mut g)
        };
        self.exec(actions);
    }

    /// An NBD client that opened the device left. May auto-demote.
    pub fn close(&self) {
        let actions = {
            let mut g = self.lock();
            g.engine.close(self.now());
            g.publish_state();
            take_actions(&mut g)
        };
        self.exec(actions);
    }

    /// Submits an application request; `done` is called exactly once.
    pub fn submit(&self, op: IoOp, done: IoDone) {
        self.submit_batch(vec![(op, done)]);
    }

    /// Submits several application requests that arrived together (what an NBD client had in
    /// flight in one read): one lock, one batch of actions, and their disk writes handed to the
    /// disk together.
    pub fn submit_batch(&self, ops: Vec<(IoOp, IoDone)>) {
        self.submit_from(ops, false);
    }

    /// Submits the kernel block device's requests ([`Input::DeviceIo`]: served on a
    /// Secondary as a read-only opener's).
    pub fn submit_device_batch(&self, ops: Vec<(IoOp, IoDone)>) {
        self.submit_from(ops, true);
    }

    fn submit_from(&self, ops: Vec<(IoOp, IoDone)>, device: bool) {
        let actions = {
            let mut g = self.lock();
            let now = self.now();
            for (op, done) in ops {
                let id = ReqId(g.next_req);
                g.next_req += 1;
                g.io_waiters.insert(id, done);
                let input = if device {
                    Input::DeviceIo { id, op }
                } else {
                    Input::Io { id, op }
                };
                g.engine.handle(now, input);
            }
            take_actions(&mut g)
        };
        self.exec(actions);
    }

    /// `None` if every peer link has room for more replicated data, or a future that waits
    /// until they all have: an application write waits there before its payload is taken in,
    /// so a slow peer bounds what queues for it (see `net::outbox`).
    pub fn write_room(
        &self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>> {
        let full: Vec<crate::net::LinkSender> = self
            .lock()
            .senders
            .values()
            .filter(|s| !s.tx.has_room())
            .map(|s| s.tx.clone())
            .collect();
        if full.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            for tx in full {
                tx.wait_room().await;
            }
        }))
    }

    /// Allocation status from the backing device (NBD `base:allocation`).
    pub fn block_status(&self, offset: u64, len: u64) -> std::io::Result<Vec<AllocRun>> {
        let disk = self.lock().disk.clone();
        match disk {
            Some(d) => d.block_status(offset, len),
            None => Err(std::io::Error::other("no local disk")),
        }
    }

    /// Usable size in bytes (0 while diskless).
    pub fn size(&self) -> u64 {
        self.lock().engine.size_bytes()
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.lock().engine.role()
    }

    /// Clients holding the device open.
    pub fn open_count(&self) -> u32 {
        self.lock().engine.open_count()
    }

    /// A status snapshot.
    pub fn status(&self) -> Status {
        self.lock().engine.status()
    }

    /// The generation identifiers of the device toward peer `node`, as `get-gi` prints them
    /// (None while diskless).
    pub fn generation_ids(&self, node: NodeId) -> Option<crate::meta::text::Gi> {
        let g = self.lock();
        g.engine
            .superblock()
            .map(|sb| crate::meta::text::Gi::of(sb, Some(node)))
    }

    /// The status in control-socket form.
    pub fn view(&self) -> ResourceView {
        let spec = self.spec();
        let g = self.lock();
        view_of(&spec, g.engine.status(), &g.link_facts())
    }

    /// Publishes the current state (a resource that was just created).
    pub fn publish_state(&self) {
        let g = self.lock();
        g.publish_state();
    }

    /// Publishes a handler's response.
    fn publish_helper(
        &self,
        handler: crate::repl::handler::Handler,
        node: Option<NodeId>,
        status: Option<i32>,
    ) {
        self.lock().events.helper(handler, node, status);
    }

    /// Feeds a completion from the disk or metadata thread.
    fn feed(&self, input: Input) {
        self.feed_batch(vec![input]);
    }

    fn feed_batch(&self, inputs: Vec<Input>) {
        let actions = {
            let mut g = self.lock();
            let now = self.now();
            for input in inputs {
                g.engine.handle(now, input);
            }
            take_actions(&mut g)
        };
        self.exec(actions);
    }

    /// The engine's deadline passed (see `link::timer_loop`).
    fn fire_timeout(&self) {
        let actions = {
            let mut g = self.lock();
            let now = self.now();
            g.engine.handle_timeout(now);
            take_actions(&mut g)
        };
        self.exec(actions);
    }

    /// A disk completion. Inside a completion batch (the reaper running several, see
    /// [`crate::batch`]) it waits for the batch's end and goes to the engine with this driver's
    /// others: one lock, and the acks they cause in one write.
    fn disk_done(&self, input: Input) {
        let me = self.me.clone();
        crate::batch::defer_grouped(self.batch_key, input, move |inputs| {
            if let Some(d) = me.upgrade() {
                d.feed_batch(inputs);
            }
        });
    }

    fn exec(&self, actions: Vec<Exec>) {
        for a in actions {
            match a {
                // A failed link is reported by its task; an encoding error ends the link.
                Exec::Send(place, packet) => {
                    let _ = place.fill(0, packet);
                }
                Exec::Disk(reqs) => self.submit_disk(reqs),
                Exec::Meta(job) => {
                    let rejected = match self.lock().meta.as_ref() {
                        Some(m) => m.send(job).err(),
                        None => Some(job),
                    };
                    if let Some(job) = rejected {
                        // The metadata thread is gone: fail the write so nothing waits forever.
                        self.feed(job.not_issued());
                    }
                }
                Exec::Io(done, result) => done(result),
                Exec::Admin(tx, result) => {
                    let _ = tx.send(result);
                }
                Exec::Opened(done, result) => done(result),
                Exec::Log(line) => tracing::info!("{line}"),
                Exec::DropLink(node, standalone) => self.drop_link(node, standalone),
                Exec::Handler(handler, node) => self.run_handler(handler, node),
                Exec::ReleaseDisk(disk, meta) => {
                    drop(disk);
                    if let Some(m) = meta {
                        let name = self.spec().name.clone();
                        let joined = std::thread::Builder::new()
                            .name(format!("{name}-detach"))
                            .spawn(move || m.stop());
                        if let Err(e) = joined {
                            tracing::warn!("{name}: cannot stop the metadata thread: {e}");
                        }
                    }
                    tracing::warn!(
                        "{}: the backing device was detached (an I/O error, or detach --force); \
                         once it is sound, `drbdadm attach {}` resyncs what it missed",
                        self.spec().name,
                        self.spec().name
                    );
                }
            }
        }
    }

    /// Runs a handler from the resource's `handlers { }` (if configured) in the background,
    /// with DRBD's environment; its outcome is logged and fed back to the engine
    /// ([`Input::HandlerDone`]), which acts on fence-peer's.
    fn run_handler(&self, handler: crate::repl::handler::Handler, node: Option<NodeId>) {
        let name = handler.name();
        // DRBD's kernel always calls drbdadm, which runs nothing for a handler the config
        // lacks: events2 shows the call (published with the batch that asked for it) and its
        // response either way.
        if !self.handlers().is_configured(name) {
            tracing::debug!("{}: no {name} handler configured", self.spec().name);
            self.publish_helper(handler, node, Some(0));
            // drbdadm runs nothing and exits 0 for a handler the config lacks; DRBD reads
            // that exit code like any other (for fence-peer: "helper broken, returned 0").
            return self.feed(Input::HandlerDone {
                handler,
                node,
                exit: Some(0),
            });
        }
        let Some(rt) = self.rt.as_ref() else {
            tracing::warn!(
                "{}: cannot run the {name} handler: no runtime",
                self.spec().name
            );
            self.publish_helper(handler, node, Some(0));
            return self.feed(Input::HandlerDone {
                handler,
                node,
                exit: None,
            });
        };
        let status = self.status();
        let cstate = node.and_then(|n| {
            status
                .peers
                .iter()
                .find(|p| p.node_id == n)
                .map(|p| p.conn.to_string())
        });
        let mut up_to_date = 0u64;
        if status.disk == crate::repl::DiskState::UpToDate {
            up_to_date |= 1 << status.node_id.0;
        }
        for p in &status.peers {
            if p.disk == crate::repl::DiskState::UpToDate {
                up_to_date |= 1 << p.node_id.0;
            }
        }
        let _enter = rt.enter();
        let task = self
            .handlers()
            .spawn(name, node, cstate.as_deref(), up_to_date);
        let res = self.spec().name.clone();
        let me = self.me.clone();
        rt.spawn(async move {
            let exit = match task.await {
                Ok(outcome) => {
                    tracing::info!("{res}: {name} handler: {outcome:?}");
                    match outcome {
                        // See above: what drbdadm answers for a handler it does not have.
                        handlers::HandlerOutcome::NotConfigured => Some(0),
                        o => o.exit_code(),
                    }
                }
                Err(e) => {
                    tracing::warn!("{res}: {name} handler task failed: {e}");
                    None
                }
            };
            if let Some(d) = me.upgrade() {
                // The kernel reports `(wait status >> 8) & 0xff`: 0 for a handler that died
                // of a signal (or was killed at the timeout).
                d.publish_helper(handler, node, Some(exit.unwrap_or(0)));
                d.feed(Input::HandlerDone {
                    handler,
                    node,
                    exit,
                });
            }
        });
    }

    /// Hands requests to the disk they were taken with, together per disk (in practice there
    /// is one; a request taken while diskless fails).
    fn submit_disk(&self, reqs: Vec<DiskReq>) {
        let mut batch: Vec<(DiskOp, Completion)> = Vec::with_capacity(reqs.len());
        let mut batch_disk: Option<Arc<dyn DiskEngine>> = None;
        let mut diskless = Vec::new();
        for DiskReq { id, op, disk } in reqs {
            let Some(disk) = disk else {
                diskless.push(Input::DiskDone {
                    id,
                    result: Err(libc::EIO),
                });
                continue;
            };
            if let Some(d) = &batch_disk
                && !Arc::ptr_eq(d, &disk)
            {
                d.submit_batch(std::mem::take(&mut batch));
            }
            batch_disk = Some(disk);
            batch.push((op, self.disk_completion(id)));
        }
        if let Some(d) = batch_disk {
            d.submit_batch(batch);
        }
        if !diskless.is_empty() {
            self.feed_batch(diskless);
        }
    }

    /// What the disk calls when request `id` is done: the result goes to the engine.
    fn disk_completion(&self, id: ReqId) -> Completion {
        let me = self.me.clone();
        Box::new(move |r| {
            let result = match r {
                Ok(DiskDone::Read(data)) => Ok(Some(data)),
                Ok(DiskDone::Done) => Ok(None),
                Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
            };
            if let Some(d) = me.upgrade() {
                d.disk_done(Input::DiskDone { id, result });
            }
        })
    }
}

/// Drains the engine and pairs completions with their waiters, under the lock.
fn take_actions(g: &mut Inner) -> Vec<Exec> {
    let mut out = Vec::new();
    // The engine logs every state change (role, disk, connection, replication, resync start
    // and end), and logs are rare: a batch with a log line is the cue to publish the state.
    let mut changed = false;
    // Deferred sends go last: the drain task they wake should not delay the local disk
    // submissions of the same batch. Their order on the wire is fixed already.
    let mut sends = Vec::new();
    let mut gathered: HashMap<NodeId, Vec<crate::repl::wire::Packet>> = HashMap::new();
    let (mut disk, mut disk_at) = (Vec::new(), None);
    while let Some(a) = g.engine.poll_action() {
        match a {
            // Every disk request of the batch goes to the disk together, where the first of
            // them stands. That moves later ones ahead of other work of the batch, never behind
            // it, and never ahead of what they depend on: the engine holds a write back until
            // the metadata it needs is on disk, so no disk request comes in the batch that
            // writes that metadata (and metadata goes to its own thread, in no fixed order
            // with the data disk anyway).
            Action::SubmitDisk { id, op } => {
                disk_at.get_or_insert(out.len());
                disk.push(DiskReq {
                    id,
                    op,
                    disk: g.disk.clone(),
                });
            }
            Action::WriteMeta { generation, sb } => {
                out.push(Exec::Meta(MetaJob::Superblock { generation, sb }))
            }
            Action::WriteAl { seq, block, tr } => {
                out.push(Exec::Meta(MetaJob::Al { seq, block, tr }))
            }
            Action::WriteBitmap { pages } => out.push(Exec::Meta(MetaJob::Bitmap { pages })),
            Action::GrowDisk => out.push(Exec::Meta(MetaJob::Grow {
                disk: g.disk_path.clone().unwrap_or_default(),
            })),
            Action::Complete { id, result } => {
                if let Some(done) = g.io_waiters.remove(&id) {
                    out.push(Exec::Io(done, result));
                }
            }
            Action::AdminDone { token, result } => {
                if let Some(tx) = g.admin_waiters.remove(&token) {
                    out.push(Exec::Admin(tx, result));
                }
            }
            Action::Opened { token, result } => {
                // `open:` is state events2 shows.
                changed = true;
                if let Some(done) = g.open_waiters.remove(&token) {
                    out.push(Exec::Opened(done, result));
                }
            }
            Action::Log(line) => {
                changed = true;
                out.push(Exec::Log(line))
            }
            Action::RunHandler { handler, node } => {
                // Published here, in the engine's order: DRBD shows the call before the state
                // change that follows it (before-resync-target, then SyncTarget).
                g.events.helper(handler, node, None);
                out.push(Exec::Handler(handler, node))
            }
            Action::ReleaseDisk => out.push(Exec::ReleaseDisk(g.disk.take(), g.meta.take())),
            Action::DropLink { node, standalone } => out.push(Exec::DropLink(node, standalone)),
            Action::ReceiveData { node, paused } => {
                if let Some(tx) = g.receive_paused.get(&node) {
                    tx.send_replace(paused);
                }
            }
            // Written (or queued) under the lock: the order the engine emitted is the order on
            // the wire. Written here rather than by a writer task, so a replicated write leaves
            // before this thread goes on to submit the local disk write (see `net::outbox`).
            // Small packets are gathered per peer and go out together at the end of the batch
            // (one write for the writes and acks of several requests).
            Action::Send { node, packet } => {
                if let Some(s) = g.senders.get(&node) {
                    let defer =
                        s.defer_data && matches!(packet, crate::repl::wire::Packet::Data { .. });
                    if defer || packet.data_len() > crate::net::LARGE_FRAME_DATA {
                        // Its place comes after what was gathered for the peer before it.
                        if let Some(small) = gathered.remove(&node) {
                            send_gathered(s, node, &small, &mut out);
                        }
                        sends.push(Exec::Send(s.tx.reserve(&packet), packet));
                        continue;
                    }
                    gathered.entry(node).or_default().push(packet);
                }
            }
        }
    }
    for (node, small) in gathered {
        if let Some(s) = g.senders.get(&node) {
            send_gathered(s, node, &small, &mut out);
        }
    }
    if changed {
        g.publish_state();
    }
    // The timer task sleeps until the engine's next deadline; it is woken only when that moved.
    let deadline = g.engine.poll_timeout();
    g.deadline
        .send_if_modified(|d| std::mem::replace(d, deadline) != deadline);
    if let Some(at) = disk_at {
        out.insert(at, Exec::Disk(disk));
    }
    out.append(&mut sends);
    out
}

/// Sends the small packets gathered for a peer (under the driver lock, so in engine order).
fn send_gathered(
    s: &PeerSender,
    node: NodeId,
    packets: &[crate::repl::wire::Packet],
    out: &mut Vec<Exec>,
) {
    match s.tx.send_now_many(0, packets) {
        Ok(()) => {}
        // An engine bug, not the network: end the link rather than leave the peer waiting for
        // a packet that never comes.
        Err(LinkError::Encode(e)) => {
            tracing::error!("cannot encode a packet for node {}: {e}", node.0);
            out.push(Exec::DropLink(node, false));
        }
        // The link failed; its task reports that to the engine.
        Err(_) => {}
    }
}

/// What the links add to the engine's status.
#[derive(Default)]
struct LinkFacts {
    /// The peers whose data stream is above its high-water mark (DRBD's `congested:`, which
    /// it sets when the socket's send queue is 4/5 full).
    congested: Vec<NodeId>,
    /// The path each connected peer's link runs on.
    paths: HashMap<NodeId, crate::config::NetPath>,
}

impl Inner {
    fn link_facts(&self) -> LinkFacts {
        LinkFacts {
            congested: self
                .senders
                .iter()
                .filter(|(_, s)| !s.tx.has_room())
                .map(|(n, _)| *n)
                .collect(),
            paths: self
                .senders
                .iter()
                .filter_map(|(n, s)| Some((*n, s.path?)))
                .collect(),
        }
    }

    /// Publishes the current state to `events2` listeners (nothing is computed while nobody
    /// listens: this runs after every batch that changed a state).
    fn publish_state(&self) {
        if self.events.listening() {
            self.events.state(&self.engine, &self.link_facts());
        }
    }
}

/// How the driver sends to one connected peer.
struct PeerSender {
    tx: crate::net::LinkSender,
    /// Application writes go through the drain task too (protocol A), not just large packets.
    defer_data: bool,
    /// The path the link runs on (status, events2).
    path: Option<crate::config::NetPath>,
}

/// A status in control-socket form.
/// What the engine runs of `spec`.
fn settings_of(spec: &ResourceSpec) -> Settings {
    Settings {
        peers: spec
            .peers
            .iter()
            .map(|p| PeerInfo {
                ko_deadline_ms: (p.net.ko_count > 0)
                    .then(|| u64::from(p.net.timeout) * 100 * u64::from(p.net.ko_count)),
                sync: p.sync.clone(),
                sb_policy: crate::repl::handshake::SbPolicy::from_net(&p.net),
                // Names were checked by `ResourceSpec::from_resolved`.
                verify_alg: p.net.verify_alg.as_deref().and_then(DigestAlg::from_name),
                csums_alg: p.net.csums_alg.as_deref().and_then(DigestAlg::from_name),
                integrity_alg: p
                    .net
                    .data_integrity_alg
                    .as_deref()
                    .and_then(DigestAlg::from_name),
                fencing: p.net.fencing,
                max_buffers: p.net.max_buffers,
                two_primaries: p.net.allow_two_primaries,
                intentional_diskless: p.diskless,
                ..PeerInfo::new(p.name.clone(), NodeId(p.node_id))
            })
            .collect(),
        auto_promote: spec.auto_promote,
        auto_promote_timeout_ms: u64::from(spec.auto_promote_timeout) * 100,
        twopc_timeout_ms: u64::from(spec.nbd_access.twopc_timeout) * 100,
        quorum: QuorumSettings {
            quorum: spec.nbd_access.quorum,
            min_redundancy: spec.nbd_access.quorum_minimum_redundancy,
            on_no_quorum: spec.nbd_access.on_no_quorum,
            intentional_diskless: spec.disk.is_none(),
        },
        on_io_error: spec.on_io_error,
        disk_flushes: spec.disk_flushes,
    }
}

fn view_of(spec: &ResourceSpec, st: Status, links: &LinkFacts) -> ResourceView {
    ResourceView {
        // A client that still holds the device open on a Secondary gets I/O errors: that
        // happens only after `secondary --force` demoted under it (an open needs Primary).
        force_io_failures: st.role != Role::Primary && st.open_count > 0,
        // udrbd flushes the backing device for FLUSH/FUA and barriers, or (disk-flushes no)
        // relies on the device's own ordering; it never drains.
        write_ordering: if spec.disk_flushes { "flush" } else { "none" }.to_string(),
        name: st.resource.clone(),
        node_id: st.node_id.0,
        role: st.role,
        suspended: (st.suspended_fencing || st.suspended_user || st.suspended_quorum).then(|| {
            crate::repl::engine::suspended_str(
                st.suspended_user,
                st.suspended_fencing,
                st.suspended_quorum,
            )
        }),
        volumes: vec![VolumeView {
            volume: 0,
            minor: spec.minor,
            disk: st.disk,
            open: st.open_count > 0,
            size_kib: st.size_bytes / 1024,
            read_kib: st.stats.read_kib,
            written_kib: st.stats.written_kib,
            al_writes: st.stats.al_writes,
            concurrent_writes: st.stats.concurrent_writes,
            bm_writes: st.stats.bm_writes,
            upper_pending: st.stats.upper_pending,
            lower_pending: st.stats.lower_pending,
            current_uuid: st.current_uuid.to_string(),
            backing_dev: spec.disk.clone(),
            quorum: st.quorum,
            // udrbd keeps the activity log going in every state (DRBD suspends it while a
            // Primary has no peer); nothing suspends it.
            al_suspended: false,
            blocked_upper: st.io_blocked,
        }],
        connections: st
            .peers
            .iter()
            .map(|p| {
                let cfg = spec.peers.iter().find(|c| c.node_id == p.node_id.0);
                ConnectionView {
                    name: p.name.clone(),
                    node_id: p.node_id.0,
                    connection: p.conn,
                    role: p.role,
                    replication: p.repl,
                    peer_disk: p.disk,
                    out_of_sync_kib: p.out_of_sync_bytes / 1024,
                    done_centi: p.resync.map(|r| (r.done_percent() * 100.0) as u32),
                    resync_rate_kib: p.resync.map(|r| r.rate_bytes_per_sec / 1024),
                    resync_eta_s: p.resync.and_then(|r| r.eta_secs()),
                    resync_suspended: match (p.user_paused, p.peer_paused) {
                        (true, true) => Some("user,peer".into()),
                        (true, false) => Some("user".into()),
                        (false, true) => Some("peer".into()),
                        _ => None,
                    },
                    received_kib: p.received_kib,
                    sent_kib: p.sent_kib,
                    pending: p.pending,
                    unacked: p.unacked,
                    local_address: cfg.and_then(|c| c.local_address),
                    peer_address: cfg.and_then(|c| c.address),
                    tls: cfg.is_some_and(|c| c.net.tls),
                    congested: links.congested.contains(&p.node_id),
                    paths: cfg
                        .map(|c| c.net_paths())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|np| PathView {
                            local: np.local,
                            peer: np.peer,
                            established: p.conn == crate::repl::ConnState::Connected
                                && links.paths.get(&p.node_id) == Some(&np),
                        })
                        .collect(),
                    ap_in_flight_sectors: p.ap_in_flight_bytes >> 9,
                    rs_in_flight_sectors: p.rs_in_flight_bytes >> 9,
                }
            })
            .collect(),
    }
}

fn attached_from(state: &MetaState, spec: &ResourceSpec) -> Result<Attached, AttachError> {
    let bits = state.layout.bm_bits();
    let bitmaps = state
        .bitmaps
        .iter()
        .map(|w| Bitmap::from_words(bits, w.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AttachError::Internal(e.to_string()))?;
    if !state.bad_pages.is_empty() {
        tracing::warn!(
            "{} bitmap pages failed their checksum; their blocks are marked out of sync",
            state.bad_pages.len()
        );
    }
    // DRBD's attach: a consistent device whose backing device cannot hold its last agreed
    // size any more is not cut down behind the user's back, only to `disk { size }`.
    let eff = state.sb.la_size_sect;
    let cur = state.layout.data_bytes / crate::types::SECTOR_SIZE;
    let user = spec.disk_size / crate::types::SECTOR_SIZE;
    if state.sb.flags & crate::meta::superblock::flags::CONSISTENT != 0
        && eff > cur
        && !(user > 0 && user <= cur)
    {
        return Err(AttachError::ImplicitShrink { eff, cur });
    }
    Ok(Attached {
        sb: state.sb.clone(),
        data_bytes: state.layout.data_bytes,
        user_bytes: spec.disk_size,
        bitmaps,
        al: state.al.as_ref().ok().cloned(),
        al_blocks: state.layout.al_blocks,
        on_io_error: spec.on_io_error,
        disk_flushes: spec.disk_flushes,
    })
}
