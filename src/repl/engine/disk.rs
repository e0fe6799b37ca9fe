//! The local disk: attach, detach, local I/O errors (`on-io-error`), and the out-of-sync
//! bitmaps and generation UUIDs it carries.

use super::{
    Action, AdminError, Attached, Change, Engine, Event, FAILURE_DETACH, IoError, Origin, State,
};
use crate::bitmap::Bitmap;
use crate::meta::al::ActivityLog;
use crate::meta::superblock::{Superblock, flags};
use crate::repl::state::{ConnState, DiskState, ReplState, Role, StateError};
use crate::repl::uuid::UuidGen;
use crate::types::{AL_EXTENT_SIZE, BM_BLOCK_SIZE, BlockIdx, GenUuid, NodeId, ReqId};

/// The per-attach state: only present while a disk is attached.
#[derive(Debug)]
pub(super) struct Disk {
    pub(super) sb: Superblock,
    /// The device's size: the size last agreed with the peers (`la_size_sect`), at most
    /// `max_bytes`. It grows only when the peers agree (see `connection::agree_size`).
    pub(super) data_bytes: u64,
    /// What the backing device can hold after its metadata.
    pub(super) max_bytes: u64,
    /// The user's limit (`disk { size }`, `resize --size`), 0 for none.
    pub(super) user_bytes: u64,
    pub(super) al: ActivityLog,
    pub(super) al_blocks: u32,
    pub(super) bitmaps: Vec<Bitmap>,
    pub(super) on_io_error: crate::config::OnIoError,
    pub(super) disk_flushes: bool,
    /// Per peer this node is SyncSource for: the ranges marked since the resync began (the
    /// end clears everything else).
    pub(super) recording: std::collections::BTreeMap<NodeId, Recording>,
    /// A local I/O error made this disk go away (`on-io-error detach`); the detach is under
    /// way.
    pub(super) failed: bool,
}

/// Clears every bitmap's marks at and beyond `bytes`: that part is no longer part of the
/// device (a shrink), so nothing there is to be resynced.
pub(super) fn clear_beyond(bitmaps: &mut [Bitmap], bytes: u64) {
    for bm in bitmaps {
        bm.clear_range(BlockIdx(bytes / BM_BLOCK_SIZE), BlockIdx(bm.len_bits()));
    }
}

impl Disk {
    /// The out-of-sync bitmap kept for peer `node`, if it has a slot.
    pub(super) fn bitmap(&self, node: NodeId) -> Option<&Bitmap> {
        let idx = self.sb.peer(node)?.bitmap_index?;
        self.bitmaps.get(usize::from(idx))
    }

    /// Every peer `behind` selects whose bitmap UUID is clean gets the current UUID as its
    /// bitmap UUID: from this generation on it lacks what this disk gets. True when one did.
    pub(super) fn record_behind(&mut self, behind: impl Fn(NodeId) -> bool) -> bool {
        let own = self.sb.current_uuid;
        let mut changed = false;
        for p in self.sb.peers.iter_mut() {
            if p.node_id.is_some_and(&behind) && p.bitmap_uuid.is_zero() {
                p.bitmap_uuid = own;
                changed = true;
            }
        }
        changed
    }

    /// Marks for `node` every block marked for any other peer; returns the bits newly set.
    pub(super) fn gather_marks_into(&mut self, node: NodeId) -> u64 {
        let Some(to) = self.sb.peer(node).and_then(|p| p.bitmap_index) else {
            return 0;
        };
        let to = usize::from(to);
        let others: Vec<usize> = self
            .sb
            .peers
            .iter()
            .filter(|p| p.node_id.is_some() && p.node_id != Some(node))
            .filter_map(|p| p.bitmap_index.map(usize::from))
            .filter(|i| *i != to)
            .collect();
        let mut added = 0;
        for i in others {
            let Some(src) = self.bitmaps.get(i).cloned() else {
                continue;
            };
            if let Some(dst) = self.bitmaps.get_mut(to) {
                added += dst.union_with(&src).unwrap_or(0);
            }
        }
        added
    }

    /// The bitmap for `node`, to change.
    pub(super) fn bitmap_mut(&mut self, node: NodeId) -> Option<&mut Bitmap> {
        let idx = self.sb.peer(node)?.bitmap_index?;
        self.bitmaps.get_mut(usize::from(idx))
    }

    /// Starts remembering what is marked for `node` (a resync toward it begins).
    pub(super) fn start_recording(&mut self, node: NodeId) {
        self.recording.insert(node, Recording::default());
    }

    /// What was marked for `node` since [`Disk::start_recording`].
    pub(super) fn stop_recording(&mut self, node: NodeId) -> Option<Recording> {
        self.recording.remove(&node)
    }

    /// Marks `[offset, offset+len)` out of sync with `node`; returns the newly set bits.
    pub(super) fn mark(&mut self, node: NodeId, offset: u64, len: u64) -> u64 {
        if let Some(r) = self.recording.get_mut(&node) {
            r.note(offset, len);
        }
        let dev = self.data_bytes;
        self.bitmap_mut(node)
            .map_or(0, |bm| mark_bytes(bm, offset, len, dev))
    }

    /// Clears the blocks `[offset, offset+len)` covers completely in `node`'s bitmap.
    pub(super) fn clear_covered(&mut self, node: NodeId, offset: u64, len: u64) {
        let dev = self.data_bytes;
        if let Some(bm) = self.bitmap_mut(node) {
            bm.clear_bytes_covered_dev(offset, len, dev);
        }
    }

    /// The bitmap UUID for `node` goes into the history and becomes 0 (a resync toward it
    /// ended); false if it was 0 already.
    pub(super) fn bitmap_uuid_to_history(&mut self, node: NodeId) -> bool {
        let Some(p) = self.sb.peers.iter_mut().find(|p| p.node_id == Some(node)) else {
            return false;
        };
        if p.bitmap_uuid.is_zero() {
            return false;
        }
        let old = std::mem::replace(&mut p.bitmap_uuid, GenUuid::ZERO);
        self.sb.push_history(old);
        true
    }
}

/// The ranges marked for a peer while a resync toward it runs.
#[derive(Debug, Default)]
pub(super) struct Recording {
    pub ranges: Vec<(u64, u64)>,
    /// More than [`Recording::MAX`] ranges: too many to keep.
    pub overflow: bool,
}

impl Recording {
    /// Marks during a resync are rare (a write the target failed, an `OutOfSync`); past this
    /// many the end keeps every bit instead.
    const MAX: usize = 65_536;

    fn note(&mut self, offset: u64, len: u64) {
        if self.ranges.len() >= Self::MAX {
            self.overflow = true;
            self.ranges = Vec::new();
        } else if !self.overflow {
            self.ranges.push((offset, len));
        }
    }
}

impl Engine {
    /// `attach`: the metadata was read. The disk comes up in the state its flags record
    /// (DRBD's `disk_state_from_md()`), through Attaching; a crashed Primary's hot extents are
    /// marked first. With a peer connected, the handshake runs again on the same link: the
    /// UUIDs decide what to resync, exactly as at connect time (DRBD's attach on a connected
    /// device), so what the peer wrote meanwhile reaches this disk before it counts as
    /// UpToDate.
    pub(super) fn attach(&mut self, a: Attached) {
        if let Err(e) = self.change(Change::soft("attach").disk(DiskState::Attaching)) {
            return self.log(format!("attach refused: {e}"));
        }
        // A new attach brings a metadata device that has not failed (yet).
        self.meta_failed = false;
        self.meta_inflight = None;
        let mut sb = a.sb;
        let mut bitmaps = a.bitmaps;
        let al = match &a.al {
            Some(rec) => ActivityLog::from_recovery(rec),
            None => ActivityLog::new(sb.al_extents, u64::from(a.al_blocks)),
        };
        let crashed_primary = sb.flags & flags::PRIMARY_IND != 0;
        if sb.flags & flags::AL_CLEAN == 0 {
            // A Primary stopped uncleanly: every extent the AL says was hot may differ from
            // the peers. A Secondary that crashed needs no such marks toward the peers in
            // its generation: every write it got came from a Primary, which keeps each one
            // it has not seen flushed here in its transfer log and marks it when the link
            // drops, or, if it crashed as well, has the same extents in its own AL (marking
            // them here too would resync whole 4 MiB extents after every Secondary restart).
            // But toward a peer it knows to be behind (a bitmap UUID: three nodes, a third
            // node away) its own marks are the record, and the last of them may not have
            // reached the disk: the hot extents are marked for that peer.
            let behind: Vec<usize> = sb
                .peers
                .iter()
                .filter(|p| p.node_id.is_some() && !p.bitmap_uuid.is_zero())
                .filter_map(|p| p.bitmap_index.map(usize::from))
                .collect();
            let hot = a.al.as_ref().map(|r| r.extents.clone()).unwrap_or_default();
            let mut marked = 0;
            for e in &hot {
                let start = u64::from(e.0) * AL_EXTENT_SIZE;
                for (i, bm) in bitmaps.iter_mut().enumerate() {
                    if crashed_primary || behind.contains(&i) {
                        marked += mark_bytes(bm, start, AL_EXTENT_SIZE, a.data_bytes);
                    }
                }
            }
            if crashed_primary || marked > 0 {
                self.log(format!(
                    "Marked additional {} KB as out-of-sync based on AL ({} extents)",
                    marked * BM_BLOCK_SIZE / 1024,
                    hot.len()
                ));
            }
        }
        if sb.flags & flags::PRIMARY_IND != 0 {
            sb.flags |= flags::CRASHED_PRIMARY;
        }
        let mut disk = disk_state_from_flags(sb.flags);
        sb.flags &= !flags::AL_CLEAN;
        // A Diskless Primary wrote through its peers in the generation it served: the disk it
        // gets now is of that generation, behind (the peers marked for this node every write
        // since it went Diskless), never the root of a new one beside it.
        let exposed = self.exposed.uuid;
        if self.st.role() == Role::Primary
            && !exposed.is_zero()
            && !sb.current_uuid.same_as(exposed)
        {
            self.log(format!(
                "attached to a Primary that served generation {exposed}: the disk ({}) takes it, \
                 Inconsistent until resynced",
                sb.current_uuid
            ));
            take_generation(&mut sb, exposed, &[]);
            sb.flags &= !flags::CONSISTENT;
            disk = DiskState::Inconsistent;
        }
        // As DRBD's `drbd_new_dev_size()` without a peer: the last agreed size, also when the
        // backing device grew meanwhile (the peers' disks may not have); the handshake grows
        // it once both sides can hold more.
        let la = sb.la_size_sect * crate::types::SECTOR_SIZE;
        let data_bytes = if la == 0 {
            a.data_bytes
        } else {
            la.min(a.data_bytes)
        };
        // `disk { size }` below the last agreed size cuts the device down (DRBD: "truncating a
        // consistent device during attach"): the user asked for it.
        let user_bytes = a.user_bytes - a.user_bytes % BM_BLOCK_SIZE;
        let data_bytes = if user_bytes > 0 && user_bytes < data_bytes {
            self.log(format!(
                "truncating the device to its configured size during attach ({} < {} KiB)",
                user_bytes / 1024,
                data_bytes / 1024
            ));
            clear_beyond(&mut bitmaps, user_bytes);
            user_bytes
        } else {
            data_bytes
        };
        if data_bytes < a.data_bytes && user_bytes == 0 {
            self.log(format!(
                "backing device can hold {} KiB, the device keeps its last agreed size of {} KiB \
                 until a peer can hold more",
                a.data_bytes / 1024,
                data_bytes / 1024
            ));
        }
        self.disk = Some(Disk {
            sb,
            data_bytes,
            max_bytes: a.data_bytes,
            user_bytes,
            al,
            al_blocks: a.al_blocks,
            bitmaps,
            on_io_error: a.on_io_error,
            disk_flushes: a.disk_flushes,
            recording: std::collections::BTreeMap::new(),
            failed: false,
        });
        self.force_change(Change::hard("attach").disk(disk));
        self.fence_attached();
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        let connected: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.st.conn() == ConnState::Connected)
            .map(|(n, _)| *n)
            .collect();
        for node in connected {
            self.handshake_again(node);
        }
    }

    pub(super) fn detach(&mut self, token: u64) -> Result<(), StateError> {
        if self.st.role() == Role::Primary {
            if self.open_count == 0 {
                // Nobody uses the device: it steps down first (`down`, a clean shutdown).
                self.demote("detach")?;
            } else if self.up_to_date_peer().is_none() {
                // Its openers would lose their data.
                return Err(StateError::NoUpToDateDisk);
            }
            // Otherwise it goes on without its disk, reading and writing through the
            // UpToDate peer (see `diskless`), as DRBD 9 does.
        }
        if self.disk.is_none() {
            self.actions.push_back(Action::AdminDone {
                token,
                result: Ok(()),
            });
            return Ok(());
        }
        self.change(Change::soft("detach").disk(DiskState::Detaching))?;
        // Clean stop: bitmap on disk, then a superblock that says the AL is clean. The reply
        // comes when both are persisted (see `maybe_finish_detach`).
        self.flush_waiters.push((token, self.al_next_seq));
        self.flush_bitmap_if_dirty();
        self.maybe_finish_detach();
        Ok(())
    }

    /// A backing-device read or write failed (`on-io-error`, DRBD's `__drbd_chk_io_error_()`).
    /// The range is marked out of sync for every peer first, so whatever happens next (the
    /// request is answered, the disk goes away) the blocks are resynced later. `pass_on`
    /// keeps the disk but makes it Inconsistent; `detach` (and `call-local-io-error`, which
    /// runs the handler too) detaches it.
    pub(super) fn local_io_error(&mut self, offset: u64, len: u64, write: bool, errno: i32) {
        let nodes: Vec<NodeId> = self.cfg.peers.iter().map(|p| p.node_id).collect();
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        for node in nodes {
            d.mark(node, offset, len);
        }
        let policy = d.on_io_error;
        let already = d.failed;
        // A resync into this disk cannot declare it UpToDate now (pass_on keeps it attached).
        for c in self.peers.values_mut() {
            if let Some(rs) = c.rs.as_mut().filter(|rs| !rs.source) {
                rs.failed_bytes += len;
            }
        }
        let what = if write { "WRITE" } else { "READ" };
        let sector = offset / crate::types::SECTOR_SIZE;
        use crate::config::OnIoError;
        if policy == OnIoError::PassOn {
            self.log(format!(
                "Local IO failed in {what} at sector {sector} (errno {errno}); passed on \
                 (on-io-error pass_on), the blocks are marked out of sync"
            ));
            if self.st.disk() > DiskState::Inconsistent {
                self.force_change(Change::hard("local-io-error").disk(DiskState::Inconsistent));
                if let Some(d) = self.disk.as_mut() {
                    d.sb.flags &= !(flags::CONSISTENT | flags::WAS_UP_TO_DATE);
                }
                self.sb_changed();
            }
            return self.flush_bitmap_if_dirty();
        }
        if already {
            return;
        }
        self.log(format!(
            "Local IO failed in {what} at sector {sector} (errno {errno}). Detaching..."
        ));
        if policy == OnIoError::CallLocalIoError {
            self.run_handler(crate::repl::handler::Handler::LocalIoError, None);
        }
        if let Some(d) = self.disk.as_mut() {
            d.failed = true;
            // Comes back Inconsistent: the next handshake resyncs the marked blocks to it.
            d.sb.flags &= !(flags::CONSISTENT | flags::WAS_UP_TO_DATE);
        }
        self.force_change(Change::hard("local-io-error").disk(DiskState::Failed));
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        self.flush_waiters.push((FAILURE_DETACH, self.al_next_seq));
    }

    /// `detach --force` (DRBD's `adm_detach()` with `force`, which sets `FORCE_DETACH`, and
    /// `tl_abort_disk_io()`): the disk goes away along the path of a local I/O error under
    /// `on-io-error detach` (Failed now, Diskless once the metadata says so), whatever the
    /// role and whoever holds the device open. The requests at the disk are not waited for:
    /// their local part counts as failed (EIO), so an application write a peer has succeeds
    /// and one no peer has fails, a peer's write gets its NegAck (the peer marks it), a read
    /// fails. Their blocks are marked out of sync for every peer: the disk may still write
    /// them. The metadata comes back Inconsistent, as after an I/O error: the next handshake
    /// resyncs the marked blocks to it.
    pub(super) fn force_detach(&mut self) {
        let nodes: Vec<NodeId> = self.cfg.peers.iter().map(|p| p.node_id).collect();
        let at_disk: Vec<(ReqId, Option<(u64, u64)>)> = self
            .reqs
            .iter()
            .filter(|r| {
                r.state == State::Submitted
                    && r.remote.is_none()
                    && !matches!(r.origin, Origin::AlFlush { .. })
            })
            .map(|r| (r.id, r.op.written_range()))
            .collect();
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        if d.failed {
            return; // going already (an I/O error, or a second --force)
        }
        d.failed = true;
        d.sb.flags &= !(flags::CONSISTENT | flags::WAS_UP_TO_DATE);
        let mut aborted_bytes = 0;
        for (offset, len) in at_disk.iter().filter_map(|(_, w)| *w) {
            for node in &nodes {
                d.mark(*node, offset, len);
            }
            aborted_bytes += len;
        }
        for c in self.peers.values_mut() {
            if let Some(rs) = c.rs.as_mut().filter(|rs| !rs.source) {
                rs.failed_bytes += aborted_bytes;
            }
        }
        self.log(format!(
            "detach --force: detaching now, {} request(s) at the disk aborted",
            at_disk.len()
        ));
        self.force_change(Change::hard("detach").disk(DiskState::Failed));
        for (id, _) in at_disk {
            let aborted = Event::LocalDone(Err(IoError::Disk(libc::EIO)));
            if let Some(done) = self.reqs.modify(id, aborted) {
                self.finished(done);
            }
        }
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        self.flush_waiters.push((FAILURE_DETACH, self.al_next_seq));
        self.after_local_done();
    }

    /// `forget-peer` (DRBD's `drbd_adm_forget_peer()` and `clear_peer_slot()`): refused with
    /// `ERR_NET_CONFIGURED` unless the connection to `node` is StandAlone. The peer slot's
    /// flags are cleared and its bitmap is set all out of sync: DRBD copies an unallocated
    /// slot's bitmap, which tracks writes since day 0, or sets every bit; udrbd's unallocated
    /// slots track nothing. DRBD replaces the bitmap UUID with the day-0 UUID of an unused
    /// slot (or 0); udrbd keeps no day-0 UUID, so the bitmap UUID goes into the history
    /// instead, which keeps the peer's data generation known: a later handshake with it finds
    /// its current UUID there and resyncs fully (instead of calling the data unrelated). The
    /// slot stays that node's (udrbd assigns bitmap slots only at create-md). Without a disk
    /// there is nothing to forget (DRBD's `clear_peer_slot()` returns `-ENODEV`, ignored).
    pub(super) fn forget_peer(&mut self, node: NodeId) -> Result<(), AdminError> {
        if self
            .peers
            .get(&node)
            .is_some_and(|p| p.st.conn() != ConnState::StandAlone)
        {
            return Err(AdminError::NetConfigured);
        }
        let Some(d) = self.disk.as_mut() else {
            return Ok(());
        };
        let Some(slot) = d.sb.peers.iter_mut().find(|p| p.node_id == Some(node)) else {
            return Ok(());
        };
        slot.flags = 0;
        let old = std::mem::replace(&mut slot.bitmap_uuid, GenUuid::ZERO);
        if !old.is_zero() {
            d.sb.push_history(old);
        }
        let marked = d.bitmap_mut(node).map_or(0, |bm| {
            bm.set_all();
            bm.count()
        });
        self.peer_log(
            node,
            format!(
                "forget-peer: bitmap UUID {old} and peer flags dropped, {} KiB marked out of \
                 sync (the next connection resyncs everything)",
                marked * BM_BLOCK_SIZE / 1024
            ),
        );
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        Ok(())
    }

    pub(super) fn maybe_finish_detach(&mut self) {
        // Reads a peer serves do not hold the disk: a Primary's readers do not keep it from
        // going (it goes on without it; see `diskless`).
        if self.flush_waiters.is_empty()
            || self.reqs.iter().any(|r| r.remote.is_none())
            || self.al_inflight.is_some()
            || !self.al_queue.is_empty()
        {
            return;
        }
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        // Clean stop: a superblock that says the AL is clean. Not when the metadata cannot be
        // written: what is on disk stays, and an unclean AL is replayed at the next attach.
        if !self.meta_failed {
            if d.sb.flags & flags::AL_CLEAN == 0 {
                d.sb.flags |= flags::AL_CLEAN;
                self.sb_changed();
            }
            if self.meta_persisted < self.sb_gen || self.meta_inflight.is_some() {
                return; // `meta_written` calls back here
            }
        }
        let waiters = self.take_detach_waiters();
        let Some(d) = self.disk.take() else {
            return;
        };
        // Without a disk it serves the data of the generation it had, through its peers.
        self.exposed.uuid = d.sb.current_uuid;
        self.exposed.bytes = d.data_bytes;
        self.announced_weak = None;
        // The peers in sync with this disk hold that generation.
        let uuid = d.sb.current_uuid;
        for c in self.peers.values_mut() {
            if c.st.repl() == ReplState::Established && c.st.disk() == DiskState::UpToDate {
                c.peer_current = uuid;
            }
        }
        let failed = d.failed;
        self.force_change(Change::hard("go-diskless").disk(DiskState::Diskless));
        if failed {
            // Nobody asked for it: the driver lets go of the disk itself. The links stay up:
            // the peers see this node Diskless and mark what it misses.
            self.actions.push_back(Action::ReleaseDisk);
        }
        self.announce_generation();
        for token in waiters {
            self.actions.push_back(Action::AdminDone {
                token,
                result: Ok(()),
            });
        }
    }

    /// The admin commands waiting for a detach (not the failure detach, which nobody awaits).
    pub(super) fn take_detach_waiters(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.flush_waiters)
            .into_iter()
            .map(|(token, _)| token)
            .filter(|&t| t != FAILURE_DETACH)
            .collect()
    }
}

/// Disk state after attach, from the superblock flags (DRBD's `disk_state_from_md`): not
/// consistent is Inconsistent; consistent but not UpToDate when it stopped is Outdated;
/// otherwise Consistent, until a connection (or a promotion under `fencing dont-care`) decides
/// that it is UpToDate. That holds for a crashed Primary too: only its peer can tell whether it
/// still has the newest data.
pub(super) fn disk_state_from_flags(f: u32) -> DiskState {
    if f & flags::CONSISTENT == 0 {
        DiskState::Inconsistent
    } else if f & flags::WAS_UP_TO_DATE == 0 {
        DiskState::Outdated
    } else {
        DiskState::Consistent
    }
}

/// Starts a new data generation (a fresh UUID; see [`move_to_generation`]). It keeps its role
/// bit, as DRBD's does: the after-sb `discard-younger/older-primary` policies read it.
pub(super) fn rotate_current(
    sb: &mut Superblock,
    uuids: &mut UuidGen,
    primary: bool,
    follows: &dyn Fn(NodeId) -> bool,
) {
    let new = uuids.next(primary);
    move_to_generation(sb, new, follows);
}

/// Makes `new` the current UUID. Peers that `follows` (connected and in sync: they are told
/// and move along) keep a clean bitmap UUID; for every other peer the old current UUID
/// becomes its bitmap UUID if its bitmap was clean (the bitmap now records the changes since
/// that generation). The old UUID goes into the history when a peer follows or already had a
/// bitmap UUID. The just-created sentinel is not a generation and is dropped.
pub(super) fn move_to_generation(
    sb: &mut Superblock,
    new: GenUuid,
    follows: &dyn Fn(NodeId) -> bool,
) {
    let old = sb.current_uuid;
    if !old.same_as(GenUuid::JUST_CREATED) && !old.is_zero() {
        let mut into_history = false;
        for p in sb.peers.iter_mut() {
            let Some(node) = p.node_id else {
                continue;
            };
            if follows(node) || !p.bitmap_uuid.is_zero() {
                into_history = true;
            } else {
                p.bitmap_uuid = old;
            }
        }
        if into_history {
            sb.push_history(old);
        }
    }
    sb.current_uuid = new;
}

/// Takes a peer's generation `current` with the data that comes from it: the old current
/// UUID and the peer's `history` (generations this node skipped while it was away) become
/// this node's ancestry, newest first. A bitmap UUID equal to the new current one is
/// cleared: it would say "behind since this very generation", which the handshake's
/// resync-end rules read as a missed resync end (the bits alone keep what it recorded).
///
/// A generation this node has moved past already (it is in the history: this node became
/// Primary while the resync ran and started a newer one, whose writes the peer got too) is
/// not taken: only its ancestry is.
pub(super) fn take_generation(sb: &mut Superblock, current: GenUuid, history: &[GenUuid]) {
    let moved_past = sb.history.iter().any(|h| h.same_as(current));
    let old = sb.current_uuid;
    if !moved_past && !old.same_as(current) && !old.same_as(GenUuid::JUST_CREATED) && !old.is_zero()
    {
        sb.push_history(old);
    }
    for uuid in history.iter().rev() {
        let known = sb.history.iter().any(|h| h.same_as(*uuid));
        if !uuid.is_zero() && !known && !uuid.same_as(current) && !uuid.same_as(sb.current_uuid) {
            sb.push_history(*uuid);
        }
    }
    if moved_past {
        return;
    }
    sb.current_uuid = current;
    for p in sb.peers.iter_mut() {
        if p.bitmap_uuid.same_as(current) {
            p.bitmap_uuid = GenUuid::ZERO;
        }
    }
}

/// Sets the bits of every 4 KiB block touched by `[offset, offset+len)`, clipped to the device;
/// returns how many bits were newly set.
pub(super) fn mark_bytes(bm: &mut Bitmap, offset: u64, len: u64, dev_bytes: u64) -> u64 {
    let end = offset.saturating_add(len).min(dev_bytes);
    if end <= offset {
        return 0;
    }
    bm.set_bytes(offset, end - offset)
}
