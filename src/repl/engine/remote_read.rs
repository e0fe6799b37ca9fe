//! Reads the local disk cannot serve, served by a peer (DRBD's `P_DATA_REQUEST` /
//! `P_DATA_REPLY`).
//!
//! A Primary whose disk is not UpToDate still has data to offer while a peer with UpToDate
//! data replicates with it: DRBD 9 calls that data *accessible*. That Primary is a SyncTarget
//! (a split-brain victim under `after-sb-*pri violently-as0p`, or a node promoted while its
//! resync runs). Its own blocks are current where its bitmap for the sync source is clear (a
//! resync write or a replicated write made them so); a read of any other block goes to the
//! source. Writes go to the local disk and the peer as always, so the peer keeps the newest
//! data; the resync must then not write an older copy over them (see
//! [`Engine::resync_overwritten`]).
//!
//! The serving peer reads through its request table like a resync read: after every write
//! the reader sent before its request, never half of one.

use super::requests::{Event, Origin, PART, State};
use super::{Engine, IoError, IoOp};
use crate::repl::state::{DiskState, ReplState};
use crate::repl::wire::{BlockAck, Packet};
use crate::types::{BM_BLOCK_SIZE, BlockIdx, NodeId, ReqId, SECTOR_SIZE, Sector};

/// Where an application read is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadFrom {
    Local,
    Peer(NodeId),
}

impl Engine {
    /// A peer that replicates with this node and has UpToDate data (DRBD's remote half of
    /// `drbd_data_accessible`).
    pub(super) fn up_to_date_peer(&self) -> Option<NodeId> {
        self.peers
            .iter()
            .find(|(_, c)| {
                c.replicating()
                    && c.hs.is_none()
                    && c.st.disk() == DiskState::UpToDate
                    && c.st.repl() >= ReplState::Established
            })
            .map(|(n, _)| *n)
    }

    /// The application may write: a local disk takes the write (it may be Inconsistent,
    /// then a peer has the data), and current data is accessible here or at a peer.
    pub(super) fn writable(&self) -> bool {
        if self.diskless() {
            return self.data_peer().is_some();
        }
        self.disk.is_some()
            && !self.meta_failed
            && self.st.disk() >= DiskState::Inconsistent
            && (self.st.disk() == DiskState::UpToDate || self.up_to_date_peer().is_some())
    }

    /// Where a read of `[offset, offset+len)` is served from: the local disk when it is
    /// UpToDate, or when a resync from the peer it syncs from has made every block of the
    /// range current; otherwise a peer with UpToDate data. None: nowhere.
    pub(super) fn read_from(&self, offset: u64, len: u64) -> Option<ReadFrom> {
        if self.diskless() {
            return self.data_peer().map(ReadFrom::Peer);
        }
        let d = self.disk.as_ref().filter(|_| !self.meta_failed);
        if d.is_some() && self.st.disk() == DiskState::UpToDate {
            return Some(ReadFrom::Local);
        }
        let peer = self.up_to_date_peer()?;
        let local_current = d.is_some_and(|d| {
            let syncs_from_peer = self.peers.get(&peer).is_some_and(|c| {
                matches!(c.st.repl(), ReplState::SyncTarget | ReplState::PausedSyncT)
            });
            let first = offset / BM_BLOCK_SIZE;
            let end = (offset + len).div_ceil(BM_BLOCK_SIZE);
            syncs_from_peer
                && self.st.disk() >= DiskState::Inconsistent
                && d.bitmap(peer)
                    .is_some_and(|bm| bm.count_range(BlockIdx(first), BlockIdx(end)) == 0)
        });
        Some(if local_current {
            ReadFrom::Local
        } else {
            ReadFrom::Peer(peer)
        })
    }

    /// Sends the DataRequests of application read `id` to `node`: one per frame's worth.
    pub(super) fn request_remote_read(&mut self, id: ReqId, node: NodeId, offset: u64, len: u32) {
        let mut at = 0;
        while at < len {
            let size = (len - at).min(PART);
            self.send(
                node,
                Packet::DataRequest {
                    sector: Sector((offset + u64::from(at)) / SECTOR_SIZE),
                    block_id: id.0,
                    size,
                },
            );
            at += size;
        }
    }

    /// A DataRequest from `node`: read it here if this disk has UpToDate data, else refuse.
    pub(super) fn serve_data_request(
        &mut self,
        node: NodeId,
        sector: Sector,
        block_id: u64,
        size: u32,
    ) {
        let offset = sector.bytes();
        let in_range = size > 0
            && offset
                .checked_add(u64::from(size))
                .is_some_and(|e| e <= self.size_bytes());
        let ack = BlockAck {
            sector,
            block_id,
            size,
            seq: 0,
        };
        let current = self.disk.is_some() && !self.meta_failed;
        if !in_range || !current || self.st.disk() != DiskState::UpToDate {
            return self.send(node, Packet::NegDataReply(ack));
        }
        self.queue_internal(
            Origin::PeerRead { node, ack },
            IoOp::Read { offset, len: size },
            0,
        );
    }

    /// This disk answered a read done for `node`.
    pub(super) fn peer_read_done(
        &mut self,
        node: NodeId,
        ack: BlockAck,
        result: Result<Option<bytes::Bytes>, i32>,
    ) {
        if !self.peers.get(&node).is_some_and(|p| p.replicating()) {
            return;
        }
        let packet = match result {
            Ok(Some(data)) if data.len() == ack.size as usize => Packet::DataReply {
                sector: ack.sector,
                block_id: ack.block_id,
                digest: bytes::Bytes::new(),
                data,
            },
            _ => Packet::NegDataReply(ack),
        };
        self.send(node, packet);
    }

    /// `node` answered one of our reads (DataReply or NegDataReply).
    pub(super) fn data_reply(&mut self, node: NodeId, packet: Packet) {
        let (id, sector, result) = match packet {
            Packet::DataReply {
                sector,
                block_id,
                data,
                ..
            } => (ReqId(block_id), sector, Ok(Some(data))),
            Packet::NegDataReply(a) => {
                self.peer_log(
                    node,
                    format!("the peer could not read sector {} for us", a.sector.0),
                );
                (ReqId(a.block_id), a.sector, Err(IoError::Disk(libc::EIO)))
            }
            _ => return,
        };
        let Some(r) = self
            .reqs
            .get(id)
            .filter(|r| r.remote == Some(node) && r.state == State::Submitted)
        else {
            return; // not ours, or answered already (a part failed, or the link went)
        };
        let IoOp::Read { offset, len } = r.op else {
            return;
        };
        let at = sector
            .bytes()
            .checked_sub(offset)
            .filter(|a| *a < u64::from(len));
        let result = match (at, result) {
            (Some(_), Err(e)) => Err(e),
            (Some(at), Ok(Some(data))) => match self.reqs.remote_part(id, at, data) {
                Ok(None) => return, // more parts to come
                Ok(Some(whole)) => Ok(Some(whole)),
                Err(()) => return self.reply_mismatch(node),
            },
            _ => return self.reply_mismatch(node),
        };
        if let Ok(Some(data)) = &result {
            self.stats.read_kib += data.len() as u64 / 1024;
        }
        if let Some(done) = self.reqs.modify(id, Event::LocalDone(result)) {
            self.finished(done);
        }
    }

    /// A DataReply that answers no part of its request: the peer is broken.
    fn reply_mismatch(&mut self, node: NodeId) {
        self.peer_log(
            node,
            "data reply does not match its request; dropping the connection".to_string(),
        );
        self.drop_link(node, false);
    }

    /// The link to `node` went: the reads it owed fail (DRBD completes them with an error
    /// too; the application retries, and finds the data wherever it is accessible then).
    pub(super) fn remote_reads_lost(&mut self, node: NodeId) {
        for id in self.reqs.remote_reads_of(node) {
            if let Some(done) = self.reqs.modify(id, Event::LocalDone(Err(IoError::NoData))) {
                self.finished(done);
            }
        }
    }
}
