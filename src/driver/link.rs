//! The driver's peer links: one task per configured peer that listens, dials, authenticates
//! (all in [`crate::net`]), reports the link to the engine and carries its packets, plus the
//! resource's timer task, which wakes the engine at its next deadline.
//!
//! Order: the engine's `Send` actions are pushed into the peer's channel while the driver lock
//! is held (see `take_actions`), so packets leave in exactly the order the engine emitted them,
//! whatever thread executed the batch. A link is reported down before a new one is reported up.

use super::Driver;
use crate::config::Protocol;
use crate::ctl::proto::PeerSpec;
use crate::net::{Link, LinkConfig, LinkError, LinkSender};
use crate::repl::Input;
use crate::repl::wire::Packet;
use crate::types::{NodeId, Time};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the driver tells a peer task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkCmd {
    /// Close the current link; `standalone`: and stay disconnected.
    Drop { standalone: bool },
}

/// A running peer task.
pub(super) struct PeerTask {
    pub cmd: mpsc::UnboundedSender<LinkCmd>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Driver {
    /// Starts the tick task and one link task per peer with an address (`up`, `connect`).
    /// Must run inside the tokio runtime.
    pub fn start_links(self: &Arc<Self>) {
        // Connecting from the moment `up`/`connect` returns, as DRBD shows it.
        for p in &self.spec().peers {
            let node = NodeId(p.node_id);
            let running = self
                .lock()
                .peer_tasks
                .get(&node)
                .is_some_and(|t| !t.task.is_finished());
            if !running {
                self.feed(Input::PeerConnecting { node });
            }
        }
        let mut g = self.lock();
        if g.timer.is_none() {
            let deadline = g.deadline.subscribe();
            g.timer = Some(tokio::spawn(timer_loop(Arc::downgrade(self), deadline)));
        }
        for p in &self.spec().peers {
            let node = NodeId(p.node_id);
            if g.peer_tasks
                .get(&node)
                .is_some_and(|t| !t.task.is_finished())
            {
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(peer_loop(Arc::downgrade(self), p.clone(), rx));
            g.peer_tasks.insert(node, PeerTask { cmd: tx, task });
        }
    }

    /// Closes every link and stays disconnected (`disconnect`, `down`); returns once each
    /// peer task has reported its link down.
    pub async fn stop_links(&self) {
        let tasks: Vec<PeerTask> = self.lock().peer_tasks.drain().map(|(_, t)| t).collect();
        for t in tasks {
            let _ = t.cmd.send(LinkCmd::Drop { standalone: true });
            if tokio::time::timeout(Duration::from_secs(5), t.task)
                .await
                .is_err()
            {
                tracing::warn!("{}: a peer link did not close in time", self.spec().name);
            }
        }
    }

    /// The engine asked for a link to be dropped.
    pub(super) fn drop_link(&self, node: NodeId, standalone: bool) {
        if let Some(t) = self.lock().peer_tasks.get(&node) {
            let _ = t.cmd.send(LinkCmd::Drop { standalone });
        }
    }

    fn set_sender(
        &self,
        node: NodeId,
        tx: Option<(LinkSender, Protocol, Option<crate::config::NetPath>)>,
    ) {
        let mut g = self.lock();
        match tx {
            Some((tx, protocol, path)) => g.senders.insert(
                node,
                super::PeerSender {
                    tx,
                    // Under protocol A the peer is off the write's critical path: its copy
                    // should not delay the local submission (see `Exec::Send`).
                    defer_data: protocol == Protocol::A,
                    path,
                },
            ),
            None => g.senders.remove(&node),
        };
    }
}

/// Sleeps until the engine's next deadline and runs its timeouts then. A deadline that moves
/// (the engine reports it after every batch) restarts the sleep; none means sleep until one is
/// set. Ends with the driver.
async fn timer_loop(
    driver: Weak<Driver>,
    mut deadline: tokio::sync::watch::Receiver<Option<Time>>,
) {
    loop {
        let next = *deadline.borrow_and_update();
        let wake = {
            let Some(d) = driver.upgrade() else {
                return;
            };
            next.map(|t| tokio::time::Instant::from_std(d.origin) + Duration::from_nanos(t.0))
        };
        match wake {
            Some(at) => tokio::select! {
                r = deadline.changed() => {
                    if r.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(at) => {}
            },
            None => {
                if deadline.changed().await.is_err() {
                    return;
                }
                continue;
            }
        }
        let Some(d) = driver.upgrade() else {
            return;
        };
        d.fire_timeout();
    }
}

/// Why a connected link ended.
enum Ended {
    Failed(LinkError),
    Dropped { standalone: bool },
}

async fn peer_loop(
    driver: Weak<Driver>,
    peer: PeerSpec,
    mut cmd: mpsc::UnboundedReceiver<LinkCmd>,
) {
    let node = NodeId(peer.node_id);
    let Some(d) = driver.upgrade() else {
        return;
    };
    let name = d.spec().name.clone();
    let me = NodeId(d.spec().node_id);
    let Some(mut paused) = d.lock().receive_paused.get(&node).map(|t| t.subscribe()) else {
        return;
    };
    drop(d);
    let standalone = |why: String| {
        tracing::error!("{name}: peer {}: {why}; connection:StandAlone", peer.name);
        if let Some(d) = driver.upgrade() {
            d.feed(Input::PeerDown {
                node,
                standalone: true,
            });
        }
    };
    let paths = peer.net_paths();
    if paths.is_empty() {
        return standalone("no address for this connection in the configuration".into());
    }
    let cfg = match LinkConfig::from_net_options(&name, me, node, &peer.name, &peer.net) {
        Ok(c) => c,
        Err(e) => return standalone(e.to_string()),
    };
    // Each path listens on its local address, shared with the other connections (and
    // paths) that listen there: a mesh node has one address for all its peers.
    let owner = crate::net::shared_listener::new_owner();
    let mut listeners = Vec::new();
    for p in &paths {
        match crate::net::shared_listener::listen(&cfg, p.local, owner, p.peer.ip()) {
            Ok(l) => listeners.push((l, p.peer)),
            Err(e) => {
                let local = p.local;
                return standalone(format!(
                    "cannot listen on {local}: {e} (is another daemon or resource using it? fix \
                     `address` and run `drbdadm adjust` or `down`/`up`)"
                ));
            }
        }
    }
    let path_listeners: Vec<(
        &dyn crate::net::shared_listener::Acceptor,
        std::net::SocketAddr,
    )> = listeners
        .iter()
        .map(|(l, peer)| (l as &dyn crate::net::shared_listener::Acceptor, *peer))
        .collect();
    loop {
        if let Some(d) = driver.upgrade() {
            d.feed(Input::PeerConnecting { node });
        }
        let established = tokio::select! {
            r = Link::establish_paths(&cfg, &path_listeners) => r,
            c = cmd.recv() => match c {
                Some(LinkCmd::Drop { standalone: false }) => continue,
                _ => {
                    if let Some(d) = driver.upgrade() {
                        d.feed(Input::PeerDown { node, standalone: true });
                    }
                    return;
                }
            },
        };
        let mut link = match established {
            Ok(l) => l,
            Err(e) if e.is_fatal() => return standalone(e.to_string()),
            Err(e) => {
                tracing::warn!("{name}: peer {}: {e}; retrying", peer.name);
                tokio::time::sleep(cfg.connect_int).await;
                continue;
            }
        };
        let Some(d) = driver.upgrade() else {
            return;
        };
        tracing::info!(
            "{name}: peer {}: Handshake to peer {} successful: Agreed network protocol version {}",
            peer.name,
            node,
            link.info().protocol
        );
        let path = established_path(&paths, link.info());
        d.set_sender(node, Some((link.sender(), peer.net.protocol, path)));
        d.feed(Input::PeerUp {
            node,
            protocol: peer.net.protocol,
        });
        drop(d);
        link.set_data_paused(*paused.borrow_and_update());
        let ended = loop {
            tokio::select! {
                f = link.recv() => match f {
                    Ok(frame) => match driver.upgrade() {
                        Some(d) => d.feed(Input::PeerPacket { node, packet: frame.packet }),
                        None => return,
                    },
                    Err(e) => break Ended::Failed(e),
                },
                r = paused.changed() => match r {
                    Ok(()) => link.set_data_paused(*paused.borrow_and_update()),
                    Err(_) => return, // the driver is gone
                },
                c = cmd.recv() => break match c {
                    Some(LinkCmd::Drop { standalone }) => Ended::Dropped { standalone },
                    None => Ended::Dropped { standalone: true },
                },
            }
        };
        let Some(d) = driver.upgrade() else {
            return;
        };
        // What the engine sent before (its side of the handshake, so that the peer sees a
        // split brain too) is in the link's outboxes; `close` writes it before the FIN.
        d.set_sender(node, None);
        let standalone = match &ended {
            Ended::Failed(e) => {
                tracing::warn!("{name}: peer {}: {e}; connection lost", peer.name);
                e.is_fatal()
            }
            Ended::Dropped { standalone } => *standalone,
        };
        if standalone {
            let _ = link.send(0, &Packet::Disconnect).await;
        }
        link.close().await;
        d.feed(Input::PeerDown { node, standalone });
        if standalone {
            return;
        }
    }
}

/// The path a link runs on: the dialer knows the peer's address it dialed, the acceptor its
/// own listening address (`paths` may share either, so both ends are compared).
fn established_path(
    paths: &[crate::config::NetPath],
    info: &crate::net::LinkInfo,
) -> Option<crate::config::NetPath> {
    let ours = |p: &&crate::config::NetPath| {
        if info.dialed {
            p.peer == info.data_peer && p.local.ip() == info.data_local.ip()
        } else {
            p.local == info.data_local && p.peer.ip() == info.data_peer.ip()
        }
    };
    paths.iter().find(ours).copied()
}
