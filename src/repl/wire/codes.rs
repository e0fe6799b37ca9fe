//! Small wire vocabularies: one-byte codes for the state and policy enums, and flag sets.
//!
//! Codes follow DRBD's numbering wherever DRBD has one (`enum drbd_role`, `enum drbd_disk_state`,
//! `enum drbd_conn_state`, `DRBD_PROT_*`, `enum drbd_after_sb_p`, `DP_*`, `UUID_FLAG_*`), so a
//! packet dump reads like DRBD's. A code this build does not define is a
//! [`super::FieldError::BadValue`], never a silent default.

use crate::config::{AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, Protocol};
use crate::repl::state::{ConnState, DiskState, ReplState, Role};

/// A closed enum carried as one byte.
pub trait WireCode: Sized + Copy + Eq + 'static {
    /// Every value, in code order (for tests and generators).
    const ALL: &'static [Self];
    /// The byte on the wire.
    fn code(self) -> u8;
    /// The value for a byte, or `None` for an undefined code.
    fn from_code(code: u8) -> Option<Self>;
}

macro_rules! wire_codes {
    ($t:ty { $($var:ident = $code:literal),+ $(,)? }) => {
        impl WireCode for $t {
            const ALL: &'static [Self] = &[$(<$t>::$var),+];
            fn code(self) -> u8 {
                match self { $(<$t>::$var => $code),+ }
            }
            fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some(<$t>::$var),)+ _ => None }
            }
        }
    };
}

// DRBD's `enum drbd_role`.
wire_codes!(Role { Unknown = 0, Primary = 1, Secondary = 2 });
// DRBD's `enum drbd_disk_state`, which is also our enum's declaration order.
wire_codes!(DiskState {
    Diskless = 0,
    Attaching = 1,
    Detaching = 2,
    Failed = 3,
    Negotiating = 4,
    Inconsistent = 5,
    Outdated = 6,
    DUnknown = 7,
    Consistent = 8,
    UpToDate = 9,
});
// DRBD 9's `enum drbd_conn_state`.
wire_codes!(ConnState {
    StandAlone = 0,
    Disconnecting = 1,
    Unconnected = 2,
    Timeout = 3,
    BrokenPipe = 4,
    NetworkFailure = 5,
    ProtocolError = 6,
    TearDown = 7,
    Connecting = 8,
    Connected = 9,
});
// DRBD 9's `enum drbd_repl_state` order, numbered from 0 (DRBD offsets it past the connection
// states; on our wire it has its own byte).
wire_codes!(ReplState {
    Off = 0,
    Established = 1,
    StartingSyncS = 2,
    StartingSyncT = 3,
    WFBitMapS = 4,
    WFBitMapT = 5,
    WFSyncUUID = 6,
    SyncSource = 7,
    SyncTarget = 8,
    VerifyS = 9,
    VerifyT = 10,
    PausedSyncS = 11,
    PausedSyncT = 12,
    Ahead = 13,
    Behind = 14,
});
// `DRBD_PROT_A..C`.
wire_codes!(Protocol { A = 1, B = 2, C = 3 });
// `enum drbd_after_sb_p`: one numbering shared by the three after-sb options.
wire_codes!(AfterSb0Pri {
    Disconnect = 0,
    DiscardYoungerPrimary = 1,
    DiscardOlderPrimary = 2,
    DiscardZeroChanges = 3,
    DiscardLeastChanges = 4,
    DiscardLocal = 5,
    DiscardRemote = 6,
});
wire_codes!(AfterSb1Pri {
    Disconnect = 0,
    Consensus = 7,
    DiscardSecondary = 8,
    CallPriLostAfterSb = 9,
    ViolentlyAs0p = 10,
});
wire_codes!(AfterSb2Pri {
    Disconnect = 0,
    CallPriLostAfterSb = 9,
    ViolentlyAs0p = 10,
});

/// Outcome of one online-verify block (`OV_RESULT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OvOutcome {
    InSync,
    OutOfSync,
}
wire_codes!(OvOutcome { InSync = 1, OutOfSync = 2 });

macro_rules! flag_set {
    ($(#[$m:meta])* $name:ident($int:ty) { $($(#[$fm:meta])* $flag:ident = $val:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $int);

        impl $name {
            $($(#[$fm])* pub const $flag: $name = $name($val);)+
            /// Every bit this version defines.
            pub const KNOWN: $int = 0 $(| $val)+;
            /// No flags.
            pub const fn empty() -> Self {
                $name(0)
            }
            /// The raw bits.
            pub const fn bits(self) -> $int {
                self.0
            }
            /// All of `other`'s bits are set.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }
            /// No bit outside [`Self::KNOWN`].
            // A set that defines every bit of its integer (StateFlags) masks with zero here.
            #[allow(clippy::bad_bit_mask)]
            pub const fn is_known(self) -> bool {
                self.0 & !Self::KNOWN == 0
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }
    };
}

flag_set!(
    /// Flags of a [`super::Packet::Data`] (DRBD's `dp_flags`, same bit values).
    DataFlags(u32) {
        /// The sender may clear the out-of-sync bit once this write is acked.
        MAY_SET_IN_SYNC = 4,
        /// Force unit access: the peer writes through its cache.
        FUA = 16,
        /// Flush the peer's disk cache before this write.
        FLUSH = 32,
        /// Discard (trim) `size` bytes; no data bytes follow.
        DISCARD = 64,
        /// Protocol B: answer with a RecvAck on receipt.
        SEND_RECEIVE_ACK = 128,
        /// Protocol C: answer with a WriteAck once on disk.
        SEND_WRITE_ACK = 256,
        /// Write zeroes over `size` bytes; no data bytes follow.
        ZEROES = 1024,
    }
);

flag_set!(
    /// Flags of a [`super::Packet::Uuids`] (DRBD's `UUID_FLAG_*` plus our `JUST_CREATED`).
    UuidFlags(u64) {
        DISCARD_MY_DATA = 1,
        CRASHED_PRIMARY = 2,
        INCONSISTENT = 4,
        SKIP_INITIAL_SYNC = 8,
        NEW_DATAGEN = 16,
        STABLE = 32,
        GOT_STABLE = 64,
        RESYNC = 128,
        RECONNECT = 256,
        DISKLESS_PRIMARY = 512,
        PRIMARY_LOST_QUORUM = 1024,
        /// The sender's metadata is freshly created (current UUID is `JUST_CREATED`). DRBD
        /// infers this from the UUID value; we also say it, out of DRBD's flag range.
        JUST_CREATED = 1 << 32,
    }
);

flag_set!(
    /// Flags of a [`super::Packet::State`] (the boolean members of DRBD's `union drbd_state`).
    StateFlags(u8) {
        /// I/O is suspended (`susp`).
        SUSPENDED = 1,
        /// Resync paused by the user (`user_isp`).
        USER_ISP = 2,
        /// Resync paused by the peer (`peer_isp`).
        PEER_ISP = 4,
        /// Resync paused by a resync-after dependency (`aftr_isp`).
        AFTER_ISP = 8,
        /// Suspended for lack of data (`susp_nod`).
        SUSP_NOD = 16,
        /// Suspended by fencing (`susp_fen`).
        SUSP_FEN = 32,
        /// udrbd: with `repl` StartingSyncT, resync only the blocks the bitmaps mark
        /// (`invalidate --reset-bitmap=no`), not everything; with `repl` SyncSource, the
        /// sender starts resyncing its marked blocks to the receiver
        /// (`invalidate-remote --reset-bitmap=no`).
        KEEP_BITMAP = 64,
        /// udrbd: the sender has quorum (DRBD's `quorum` state bit); a diskless node has
        /// quorum through an UpToDate peer that has it.
        QUORATE = 128,
    }
);

flag_set!(
    /// Flags of a [`super::Packet::Sizes`] (DRBD's `dds_flags`).
    SizesFlags(u16) {
        /// The size change was forced (`--assume-peer-has-space`).
        FORCED = 1,
        /// Grow without resyncing the new area (`--assume-clean`).
        NO_RESYNC = 2,
        /// The sender's backing device grew (`drbdadm resize`): check yours, then agree anew.
        RESIZE = 4,
    }
);

/// Feature bits of a [`super::Packet::Hello`]. Unlike the other flag sets, undefined bits are
/// accepted: the peers use the intersection, so a newer peer may offer what we do not know.
pub mod features {
    /// Discards (DRBD's `DRBD_FF_TRIM`).
    pub const TRIM: u64 = 1;
    /// Thin resync: unallocated ranges sent as deallocated (`DRBD_FF_THIN_RESYNC`).
    pub const THIN_RESYNC: u64 = 2;
    /// Write-zeroes (`DRBD_FF_WZEROES`).
    pub const WZEROES: u64 = 8;
    /// Checksum-based resync (`csums-alg`).
    pub const CSUM_RESYNC: u64 = 1 << 32;
    /// Online verify (`verify-alg`).
    pub const ONLINE_VERIFY: u64 = 1 << 33;
    /// Everything this build implements.
    pub const SUPPORTED: u64 = TRIM | WZEROES | CSUM_RESYNC | ONLINE_VERIFY;
}
