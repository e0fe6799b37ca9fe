//! One listening socket per local address, shared by every connection that listens there.
//!
//! In a `connection-mesh` of three or more hosts each node listens on its one `address` for
//! all of its peers (DRBD does the same), so the connections cannot each bind it. The first
//! connection to ask for an address binds it and starts an accept task; each connection
//! registers the address of its peer and receives the sockets accepted from that address.
//! A socket from an address no connection expects is logged and closed at once, before a
//! byte is read. The last registration to go closes the socket.
//!
//! Peers are told apart by their IP address, as DRBD's TCP transport tells its paths apart:
//! two peers of one listener at the same IP (different ports) cannot be, so a socket from an
//! IP that several connections expect is refused with a message saying so.

use super::LinkConfig;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Where [`super::connect::establish_paths`] takes accepted sockets from.
pub trait Acceptor: Send + Sync {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>>;
    /// The address it listens on (our dials leave from its IP).
    fn local_ip(&self) -> Option<IpAddr>;
}

impl Acceptor for TcpListener {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        TcpListener::poll_accept(self, cx)
    }

    fn local_ip(&self) -> Option<IpAddr> {
        self.local_addr().ok().map(|a| a.ip())
    }
}

type Accepted = (TcpStream, SocketAddr);

/// One connection's share of a listening address: the sockets accepted from its peer.
#[derive(Debug)]
pub struct PathListener {
    rx: Mutex<mpsc::UnboundedReceiver<Accepted>>,
    hub: Arc<Hub>,
    id: u64,
}

impl Acceptor for PathListener {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let mut rx = self.rx.lock().unwrap_or_else(PoisonError::into_inner);
        match rx.poll_recv(cx) {
            Poll::Ready(Some(a)) => Poll::Ready(Ok(a)),
            // The accept task ended (its socket failed): say so every time asked.
            Poll::Ready(None) => Poll::Ready(Err(io::Error::other(format!(
                "the listener on {} stopped",
                self.hub.addr
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_ip(&self) -> Option<IpAddr> {
        Some(self.hub.addr.ip())
    }
}

impl Drop for PathListener {
    fn drop(&mut self) {
        self.hub
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|r| r.id != self.id);
    }
}

/// A connection waiting for sockets from `peer_ip`; `owner` tells the paths of one
/// connection (which may share a peer IP) from those of another.
#[derive(Debug)]
struct Route {
    id: u64,
    owner: u64,
    peer_ip: IpAddr,
    /// The peer, for messages (its node id).
    peer: String,
    tx: mpsc::UnboundedSender<Accepted>,
}

/// A bound address and the connections that listen on it.
#[derive(Debug)]
struct Hub {
    addr: SocketAddr,
    routes: Mutex<Vec<Route>>,
    accept_task: tokio::task::AbortHandle,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// The hubs by address; a hub lives while a [`PathListener`] holds it.
static HUBS: Mutex<Option<HashMap<SocketAddr, Weak<Hub>>>> = Mutex::new(None);
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh owner id for [`listen`]: one per connection.
pub fn new_owner() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Listens on `local` for the connection `owner` to the peer at `peer_ip` (binding the address
/// with `cfg`'s socket options if no connection listens there yet). Must run inside a tokio
/// runtime.
pub fn listen(
    cfg: &LinkConfig,
    local: SocketAddr,
    owner: u64,
    peer_ip: IpAddr,
) -> io::Result<PathListener> {
    let mut hubs = HUBS.lock().unwrap_or_else(PoisonError::into_inner);
    let hubs = hubs.get_or_insert_with(HashMap::new);
    hubs.retain(|_, h| h.strong_count() > 0);
    let hub = match hubs.get(&local).and_then(Weak::upgrade) {
        Some(h) => h,
        None => {
            let listener = cfg.listen(local)?;
            let hub = Arc::new_cyclic(|weak: &Weak<Hub>| Hub {
                addr: local,
                routes: Mutex::new(Vec::new()),
                accept_task: tokio::spawn(accept_loop(listener, weak.clone())).abort_handle(),
            });
            hubs.insert(local, Arc::downgrade(&hub));
            hub
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    hub.routes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Route {
            id,
            owner,
            peer_ip,
            peer: cfg.peer.to_string(),
            tx,
        });
    Ok(PathListener {
        rx: Mutex::new(rx),
        hub,
        id,
    })
}

/// Accepts until the hub goes, handing each socket to the connection of its peer.
async fn accept_loop(listener: TcpListener, hub: Weak<Hub>) {
    loop {
        let accepted = listener.accept().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let (stream, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: do not spin on a listener that keeps failing.
                tracing::warn!("accept on {} failed: {e}", hub.addr);
                drop(hub);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let routes = hub.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let same = |r: &&Route| r.peer_ip.to_canonical() == from.ip().to_canonical();
        let matching: Vec<&Route> = routes.iter().filter(same).collect();
        match matching.as_slice() {
            [] => {
                let expected: Vec<String> = routes
                    .iter()
                    .map(|r| format!("peer {} ({})", r.peer, r.peer_ip))
                    .collect();
                tracing::warn!(
                    %from,
                    "connection refused: not from the address configured for {}",
                    expected.join(", ")
                )
            }
            [first, rest @ ..] if rest.iter().all(|r| r.owner == first.owner) => {
                // The connection may be gone in between: the socket is dropped then.
                let _ = first.tx.send((stream, from));
            }
            _ => tracing::warn!(
                %from,
                "connection on {} refused: several peers are configured at {}; give each \
                 peer its own IP address",
                hub.addr,
                from.ip()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_connections_share_an_address_and_get_their_own_peers_sockets() {
        let cfg = LinkConfig::new("r0", crate::types::NodeId(0), crate::types::NodeId(1));
        // Bind a free port first, then share it.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let local = probe.local_addr().expect("addr");
        drop(probe);
        let a = listen(&cfg, local, 1, "127.0.0.2".parse().unwrap()).expect("a");
        let b = listen(&cfg, local, 2, "127.0.0.3".parse().unwrap()).expect("b");
        let dial = |from: &str| {
            let s = tokio::net::TcpSocket::new_v4().expect("socket");
            s.bind(format!("{from}:0").parse().unwrap()).expect("bind");
            s.connect(local)
        };
        let _c3 = dial("127.0.0.3").await.expect("dial .3");
        let _c2 = dial("127.0.0.2").await.expect("dial .2");
        let got_b = std::future::poll_fn(|cx| b.poll_accept(cx))
            .await
            .expect("b");
        let got_a = std::future::poll_fn(|cx| a.poll_accept(cx))
            .await
            .expect("a");
        assert_eq!(got_b.1.ip().to_string(), "127.0.0.3");
        assert_eq!(got_a.1.ip().to_string(), "127.0.0.2");
        // The last registration closes the socket: the address is free again.
        drop((a, b));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        std::net::TcpListener::bind(local).expect("the address is free again");
    }
}
