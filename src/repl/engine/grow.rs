//! `drbdadm resize`: growing a device whose backing devices grew while it runs.
//!
//! The node the command runs on moves its metadata to the new end of its backing device
//! ([`Action::GrowDisk`], done by the metadata writer after the writes already asked for) and
//! learns how much its disk can hold ([`Input::DiskGrew`]); then it runs the handshake again
//! with every connected peer, its `Sizes` flagged RESIZE. A peer that receives such a `Sizes`
//! first does the same with its own backing device, then runs its side of the handshake. The
//! handshake agrees on the smaller of the two disks, and when that is larger than the device
//! both sides grow it and mark the new area out of sync (unless `--assume-clean`), which the
//! decision then resyncs like any other marked blocks (see `connection::grow_to`). Writes
//! wait while the handshake runs, as at connect time. Without a connected peer the metadata
//! moves now and the device grows when a peer that can hold more connects.

use super::{Action, AdminError, Engine};
use crate::repl::state::{ConnState, ReplState, StateError};
use crate::repl::wire::{Packet, SizesFlags};
use crate::types::{BM_BLOCK_SIZE, NodeId, SECTOR_SIZE};

/// A resize waiting for this disk's metadata to move.
#[derive(Debug, Clone, Copy)]
pub(super) struct GrowOp {
    /// The admin command to answer (none when a peer asked).
    token: Option<u64>,
    /// `--assume-clean`.
    no_resync: bool,
    /// `--size` in bytes (0: none), checked once the backing device's size is known.
    user_bytes: u64,
}

impl Engine {
    /// `drbdadm resize [--assume-clean] [--size]` here.
    pub(super) fn resize_start(&mut self, token: u64, no_resync: bool, user_bytes: u64) {
        let resyncing = self
            .peers
            .values()
            .any(|c| !matches!(c.shown_repl(), ReplState::Off | ReplState::Established));
        let refuse = if self.disk.is_none() {
            Some(AdminError::State(StateError::DeviceDiskless))
        } else if self.grow.is_some() {
            Some(AdminError::State(StateError::InTransientState))
        } else if resyncing {
            Some(AdminError::ResizeResync)
        } else {
            None
        };
        if let Some(e) = refuse {
            return self.actions.push_back(Action::AdminDone {
                token,
                result: Err(e),
            });
        }
        self.grow = Some(GrowOp {
            token: Some(token),
            no_resync,
            user_bytes,
        });
        self.actions.push_back(Action::GrowDisk);
    }

    /// Whether `node`'s handshake packets are held for a resize (then `packet` is held too).
    pub(super) fn hold_for_resize(&mut self, node: NodeId, packet: Packet) -> Option<Packet> {
        match self
            .peers
            .get_mut(&node)
            .and_then(|c| c.pending_resize.as_mut())
        {
            Some(held) => {
                held.push(packet);
                None
            }
            None => Some(packet),
        }
    }

    /// A peer's `Sizes` flagged RESIZE arrived outside a handshake: check this disk first.
    pub(super) fn resize_requested(&mut self, node: NodeId, packet: Packet) {
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        c.pending_resize = Some(vec![packet]);
        if self.disk.is_none() {
            // Nothing to grow here: answer at once.
            return self.resume_pending_resizes();
        }
        if self.grow.is_none() {
            self.grow = Some(GrowOp {
                token: None,
                no_resync: false,
                user_bytes: 0,
            });
            self.actions.push_back(Action::GrowDisk);
        }
    }

    /// The metadata writer checked the backing device (and moved the metadata if it grew).
    pub(super) fn disk_grew(&mut self, result: Result<u64, crate::repl::MetaError>) {
        let op = self.grow.take();
        match result {
            Err(e) => {
                self.log(format!("resize: the meta data could not be moved: {e}"));
                if let Some(token) = op.and_then(|o| o.token) {
                    self.actions.push_back(Action::AdminDone {
                        token,
                        result: Err(AdminError::Meta(e)),
                    });
                }
            }
            Ok(max) => {
                if let Some(d) = self.disk.as_mut() {
                    let max = max - max % BM_BLOCK_SIZE;
                    if max > d.max_bytes {
                        let bits = max / BM_BLOCK_SIZE;
                        if d.bitmaps.iter_mut().any(|b| b.grow(bits).is_err()) {
                            self.log(format!("resize: no memory for a bitmap of {bits} bits"));
                        } else {
                            let old = d.max_bytes;
                            d.max_bytes = max;
                            self.log(format!(
                                "the backing device grew: it can hold {} KiB (was {} KiB)",
                                max / 1024,
                                old / 1024
                            ));
                        }
                    }
                }
                if let Some(o) = op
                    && let Some(token) = o.token
                {
                    if let Err(e) = self.set_user_size(o.user_bytes) {
                        self.actions.push_back(Action::AdminDone {
                            token,
                            result: Err(e),
                        });
                        return self.resume_pending_resizes();
                    }
                    let mut flags = SizesFlags::RESIZE;
                    if o.no_resync {
                        flags = flags | SizesFlags::NO_RESYNC;
                    }
                    let connected: Vec<NodeId> = self
                        .peers
                        .iter()
                        .filter(|(_, p)| {
                            p.st.conn() == ConnState::Connected && p.pending_resize.is_none()
                        })
                        .map(|(n, _)| *n)
                        .collect();
                    if connected.is_empty() {
                        // Alone, an explicit shrink happens now; growing waits for a peer.
                        self.shrink_to_user_size();
                        self.log(
                            "resize: no peer connected; the device grows when a peer that can \
                             hold more connects"
                                .to_string(),
                        );
                    }
                    for node in connected {
                        self.handshake_again_with(node, flags, "resize");
                    }
                    self.actions.push_back(Action::AdminDone {
                        token,
                        result: Ok(()),
                    });
                }
            }
        }
        self.resume_pending_resizes();
    }

    /// `resize --size`: the user's limit (0: none), refused beyond what the backing device
    /// holds (DRBD checks `drbd_local_max_size()`).
    fn set_user_size(&mut self, user_bytes: u64) -> Result<(), AdminError> {
        let Some(d) = self.disk.as_mut() else {
            return Err(AdminError::State(StateError::DeviceDiskless));
        };
        let user_bytes = user_bytes - user_bytes % BM_BLOCK_SIZE;
        if user_bytes > d.max_bytes {
            self.actions.push_back(Action::Log(format!(
                "{}: requested {} sectors, backend seems only able to support {}",
                self.cfg.resource,
                user_bytes / SECTOR_SIZE,
                d.max_bytes / SECTOR_SIZE
            )));
            return Err(AdminError::DiskTooSmall);
        }
        d.user_bytes = user_bytes;
        Ok(())
    }

    /// Without a peer: the device shrinks to the user's size at once (an explicit shrink).
    fn shrink_to_user_size(&mut self) {
        let target = self
            .disk
            .as_ref()
            .filter(|d| d.user_bytes > 0 && d.user_bytes < d.data_bytes)
            .map(|d| d.user_bytes);
        if let Some(bytes) = target {
            self.shrink_to(bytes);
        }
    }

    /// Answers the peers whose resize waited for this disk: our side of the handshake, then
    /// their `Sizes` as its first packet.
    fn resume_pending_resizes(&mut self) {
        let waiting: Vec<(NodeId, Vec<Packet>)> = self
            .peers
            .iter_mut()
            .filter_map(|(n, p)| p.pending_resize.take().map(|pk| (*n, pk)))
            .collect();
        for (node, packets) in waiting {
            self.handshake_again_with(node, SizesFlags::empty(), "the peer grew");
            for packet in packets {
                self.handshake_packet(node, packet);
            }
        }
    }
}
