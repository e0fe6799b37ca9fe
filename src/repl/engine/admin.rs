//! Administrative commands: promotion and demotion, new generations, invalidate, verify and
//! connect requests (DRBD's `drbd_nl.c` entry points).

use super::{Action, AdminCmd, AdminError, Change, Engine, MetaWaiter, rotate_current};
use crate::meta::superblock::flags;
use crate::repl::state::{DiskState, ReplState, Role, StateError};
use crate::types::GenUuid;

impl Engine {
    /// An admin command: answered at once when refused, otherwise once what it changed is on
    /// disk.
    pub(super) fn admin(&mut self, token: u64, cmd: AdminCmd) {
        let result = match cmd {
            AdminCmd::Primary { force } => {
                if self.fence_before_promote(token, force) {
                    return; // answered once fence-peer has (see `fencing`)
                }
                // Answered by `promote` (after the peer agreed, when one replicates).
                return self.promote(super::twopc::Promotion {
                    purpose: super::twopc::Purpose::Admin { token },
                    force,
                    deadline: None,
                });
            }
            AdminCmd::ForceSecondary => {
                self.force_demote = true;
                return self.propose(super::twopc::Proposal::Demote { token });
            }
            AdminCmd::Secondary => {
                // Answered by `demote_cluster_wide` (after the peers agreed).
                return self.propose(super::twopc::Proposal::Demote { token });
            }
            AdminCmd::Disconnect => {
                // Answered by `disconnect_cluster_wide` (after the peers agreed).
                return self.propose(super::twopc::Proposal::Disconnect {
                    token,
                    outdate: false,
                });
            }
            AdminCmd::NewCurrentUuid { clear_bitmap } => self.new_current_uuid(clear_bitmap),
            AdminCmd::Verify { start, stop } => self.verify_start(start, stop),
            AdminCmd::Connect {
                discard_my_data,
                tentative,
            } => {
                if discard_my_data && self.st.role() == Role::Primary {
                    self.actions.push_back(Action::AdminDone {
                        token,
                        result: Err(AdminError::DiscardMyDataPrimary),
                    });
                    return;
                }
                self.set_discard_my_data(discard_my_data, tentative);
                Ok(())
            }
            AdminCmd::Detach => self.detach(token),
            AdminCmd::ForceDetach => {
                self.force_detach();
                Ok(())
            }
            AdminCmd::ForgetPeer { node } => {
                if let Err(e) = self.forget_peer(node) {
                    self.actions.push_back(Action::AdminDone {
                        token,
                        result: Err(e),
                    });
                    return;
                }
                Ok(())
            }
            AdminCmd::Invalidate { reset_bitmap } => self.invalidate(reset_bitmap),
            AdminCmd::InvalidateRemote { reset_bitmap } => self.invalidate_remote(reset_bitmap),
            AdminCmd::PauseSync => self.set_user_paused(true).map_err(|e| {
                self.log(format!("pause-sync: {e}"));
                StateError::NeedConnection
            }),
            AdminCmd::ResumeSync => self.set_user_paused(false).map_err(|e| {
                self.log(format!("resume-sync: {e}"));
                StateError::NeedConnection
            }),
            AdminCmd::Outdate => self.outdate(),
            AdminCmd::Resize {
                no_resync,
                user_bytes,
            } => {
                // Answered by `disk_grew`, once the metadata has moved.
                return self.resize_start(token, no_resync, user_bytes);
            }
            AdminCmd::ResumeIo => {
                self.resume_io();
                Ok(())
            }
            AdminCmd::SuspendIo => {
                if !self.st.susp_user() {
                    self.force_change(Change::hard("suspend-io").susp_user(true));
                }
                Ok(())
            }
        };
        match result {
            Err(e) => self.actions.push_back(Action::AdminDone {
                token,
                result: Err(AdminError::State(e)),
            }),
            Ok(()) if matches!(cmd, AdminCmd::Detach) => {}
            // DRBD answers a forced detach at once: the disk may not answer at all.
            Ok(()) if matches!(cmd, AdminCmd::ForceDetach) => {
                self.actions.push_back(Action::AdminDone {
                    token,
                    result: Ok(()),
                });
            }
            Ok(()) => self.wait_for_meta(token),
        }
    }

    /// Replies to `token` once the current superblock generation is on disk.
    pub(super) fn wait_for_meta(&mut self, token: u64) {
        if self.meta_persisted >= self.sb_gen && self.meta_inflight.is_none() {
            self.actions.push_back(Action::AdminDone {
                token,
                result: Ok(()),
            });
        } else {
            self.meta_waiters.push(MetaWaiter {
                generation: self.sb_gen,
                token,
            });
        }
    }

    pub(super) fn invalidate(&mut self, reset_bitmap: bool) -> Result<(), StateError> {
        if self.disk.is_none() {
            return Err(StateError::NoLocalDisk);
        }
        if self.st.role() == Role::Primary {
            return Err(StateError::DeviceInUse);
        }
        let Some(node) = self.established_peers().into_iter().find(|n| {
            self.peers.get(n).is_some_and(|c| {
                c.st.repl() == ReplState::Established && c.st.disk() == DiskState::UpToDate
            })
        }) else {
            return Err(StateError::NeedConnection);
        };
        if reset_bitmap {
            self.request_resync(node, false);
        } else {
            self.request_bitmap_resync(node);
        }
        self.peer_log(
            node,
            format!(
                "invalidate: requesting {} from the peer",
                if reset_bitmap {
                    "a full sync"
                } else {
                    "a resync of the marked blocks"
                }
            ),
        );
        Ok(())
    }

    /// Asks `node` to become SyncSource (our State says `StartingSyncT`): with everything,
    /// answered with SyncUuid; or (`keep_bitmap`) with the marked blocks, answered with its
    /// marks (OutOfSync) and its State as SyncSource. Either starts the resync here.
    fn request_resync(&mut self, node: crate::types::NodeId, keep_bitmap: bool) {
        let mut p = self.my_state_packet(node);
        if let crate::repl::wire::Packet::State { flags, repl, .. } = &mut p {
            *repl = ReplState::StartingSyncT;
            if keep_bitmap {
                *flags = *flags | crate::repl::wire::StateFlags::KEEP_BITMAP;
            }
        }
        self.send(node, p);
    }

    /// [`Self::request_resync`] of the marked blocks only.
    pub(super) fn request_bitmap_resync(&mut self, node: crate::types::NodeId) {
        self.request_resync(node, true);
    }

    pub(super) fn invalidate_remote(&mut self, reset_bitmap: bool) -> Result<(), StateError> {
        if self.st.disk() != DiskState::UpToDate {
            return Err(StateError::NoUpToDateDisk);
        }
        let nodes = self.established_peers();
        let Some(node) = nodes.into_iter().find(|n| {
            self.peers
                .get(n)
                .is_some_and(|c| c.st.repl() == ReplState::Established)
        }) else {
            return Err(StateError::NeedConnection);
        };
        if self
            .peers
            .get(&node)
            .is_some_and(|c| c.st.role() == Role::Primary)
        {
            return Err(StateError::DeviceInUse);
        }
        let r = if reset_bitmap {
            self.start_full_sync_to(node)
        } else {
            self.start_bitmap_sync_to(node)
        };
        r.map_err(|e| {
            self.log(format!("invalidate-remote: {e}"));
            StateError::NeedConnection
        })
    }

    /// Demotion (`secondary`, an opener's auto-demote, a split-brain victim). Refused while
    /// the device is open (DRBD's `SS_DEVICE_IN_USE`).
    /// The demotion as a change: forced under `secondary --force` (rule S10 then lets an
    /// open device go).
    pub(super) fn demotion(&self, tag: &'static str) -> Change {
        let c = Change::soft(tag).role(Role::Secondary);
        if self.force_demote { c.force() } else { c }
    }

    pub(super) fn demote(&mut self, tag: &'static str) -> Result<(), StateError> {
        if self.st.role() != Role::Primary {
            return Ok(());
        }
        self.change(self.demotion(tag))?;
        self.explicit_primary = false;
        self.new_uuid_due = false;
        if let Some(d) = self.disk.as_mut() {
            d.sb.flags &= !flags::PRIMARY_IND;
            self.sb_changed();
        }
        Ok(())
    }

    pub(super) fn new_current_uuid(&mut self, clear_bitmap: bool) -> Result<(), StateError> {
        let connected = !self.established_peers().is_empty();
        let followers = self.generation_followers();
        if self.peers.values().any(|c| c.rs.is_some()) {
            return Err(StateError::InTransientState);
        }
        let Some(d) = self.disk.as_mut() else {
            return Err(StateError::DeviceDiskless);
        };
        let primary = self.st.role() == Role::Primary;
        let fresh = d.sb.current_uuid.same_as(GenUuid::JUST_CREATED);
        if clear_bitmap {
            if !(fresh || self.st.disk() == DiskState::UpToDate) {
                return Err(StateError::NoUpToDateDisk);
            }
            // Skip the initial sync: everyone starts from the same (new) generation.
            d.sb.current_uuid = self.uuids.next(primary);
            for bm in d.bitmaps.iter_mut() {
                bm.clear_all();
            }
            for p in d.sb.peers.iter_mut().filter(|p| p.node_id.is_some()) {
                p.bitmap_uuid = GenUuid::ZERO;
            }
            d.sb.flags |= flags::CONSISTENT | flags::WAS_UP_TO_DATE;
        } else {
            if self.st.disk() < DiskState::Outdated {
                return Err(StateError::NoUpToDateDisk);
            }
            // The connected peers follow into the new generation (`announce_new_uuid`):
            // nothing differs from them, so for them the old one is history, not a bitmap
            // UUID; a peer that is behind keeps it as its bitmap UUID.
            rotate_current(&mut d.sb, &mut self.uuids, primary, &|n| {
                followers.contains(&n)
            });
        }
        self.new_uuid_due = false;
        let uuid = d.sb.current_uuid;
        if clear_bitmap {
            self.change(Change::soft("skip-initial-sync").disk(DiskState::UpToDate))?;
        }
        self.log(format!("new current UUID: {uuid}"));
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        if connected {
            self.announce_new_uuid(clear_bitmap);
        }
        Ok(())
    }

    /// `drbdadm adjust`: new option values for the running resource. What the handshake
    /// agreed with a peer (protocol, two primaries, the digests, the split-brain policies) is
    /// not changed here: the driver reconnects that peer, and the new handshake agrees anew.
    pub(super) fn reconfigure(&mut self, s: super::api::Settings) {
        for info in s.peers {
            let node = info.node_id;
            let Some(p) = self.peers.get_mut(&node) else {
                continue;
            };
            if let Some(rs) = p.rs.as_mut() {
                rs.set_options(info.sync.clone());
            }
            if let Some(ov) = p.ov.as_mut() {
                ov.set_options(info.sync.clone());
            }
            if let Some(c) = self.cfg.peers.iter_mut().find(|c| c.node_id == node) {
                *c = info.clone();
            }
            p.info = info;
        }
        self.cfg.auto_promote = s.auto_promote;
        self.cfg.auto_promote_timeout_ms = s.auto_promote_timeout_ms;
        self.cfg.twopc_timeout_ms = s.twopc_timeout_ms;
        if let Some(d) = self.disk.as_mut() {
            d.on_io_error = s.on_io_error;
            d.disk_flushes = s.disk_flushes;
        }
        self.log("configuration adjusted".to_string());
        if s.quorum != self.cfg.quorum {
            // A changed quorum setting takes effect at once (it may give or take quorum).
            self.cfg.quorum = s.quorum;
            self.recheck_quorum();
        }
    }
}
