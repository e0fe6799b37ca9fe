//! The size agreement of `P_SIZES` (`receive_sizes()`): a connect must never shrink a device
//! that holds data.

use crate::repl::state::DiskState;
use crate::types::Sector;

/// What both sides offer, in sectors. A size of 0 means "no disk" (a diskless side sends 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeInput {
    /// What this node's backing device can hold (after its metadata).
    pub my_max: Sector,
    /// What the peer's backing device can hold (`d_size` of its `P_SIZES`).
    pub peer_max: Sector,
    /// The user's `disk { size ...; }` limit on either side (the smaller non-zero one), 0 if none.
    pub user_size: Sector,
    /// The size this node last agreed on (the superblock's `la_size_sect`), the size the device
    /// is exposed with.
    pub last_agreed: Sector,
    /// This node's disk state.
    pub my_disk: DiskState,
    /// A resize while connected (`drbdadm resize` on either side), not a connect: the device
    /// may shrink (DRBD: "allow online shrinking if we are connected").
    pub online: bool,
}

/// The connection is refused: accepting the peer would shrink a device with data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("The peer's disk size is too small! ({} < {} sectors)", .new_size.0, .current.0)]
pub struct SizeRefusal {
    /// The size the two disks would agree on.
    pub new_size: Sector,
    /// This node's last agreed size.
    pub current: Sector,
}

fn min_not_zero(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// The user size (`disk { size }`, `resize --size`; 0 for none) a handshake works with, as
/// DRBD's `receive_sizes()` picks it: a resize started here keeps ours, one started by the
/// peer takes the peer's over ("Peer sets u_size"), and at connect the smaller set one counts.
pub fn agreed_user_size(own_resize: bool, peer_resize: bool, mine: u64, peer: u64) -> u64 {
    if own_resize {
        mine
    } else if peer_resize {
        peer
    } else {
        min_not_zero(mine, peer)
    }
}

/// The agreed device size: the smallest of both disks (and the user's limit), ignoring a side
/// without a disk. Refused with DRBD's message when that is below our last agreed size while we
/// hold data (disk Outdated or better): connecting must not cut off the end of a device.
pub fn check_sizes(s: &SizeInput) -> Result<Sector, SizeRefusal> {
    let no_disk = matches!(
        s.my_disk,
        DiskState::Diskless | DiskState::Attaching | DiskState::Detaching | DiskState::Failed
    );
    let mine = if no_disk { 0 } else { s.my_max.0 };
    let new = min_not_zero(min_not_zero(mine, s.peer_max.0), s.user_size.0);
    if mine == 0 {
        // Diskless: we take whatever the peer offers (or keep our size if it has no disk either).
        return Ok(Sector(if new == 0 { s.last_agreed.0 } else { new }));
    }
    if new < s.last_agreed.0 && s.my_disk >= DiskState::Outdated && !s.online {
        return Err(SizeRefusal {
            new_size: Sector(new),
            current: s.last_agreed,
        });
    }
    Ok(Sector(new))
}
