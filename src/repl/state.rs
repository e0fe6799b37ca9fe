//! DRBD's state names and state-change results, spelled exactly as DRBD prints them
//! (`drbd_strings.c`), so `drbdadm status`, logs and scripts read the same as on DRBD.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Primary,
    Secondary,
    /// Only ever a peer's role, while not connected.
    Unknown,
}

/// A disk state. The order is DRBD's: comparisons like "at least Outdated" use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DiskState {
    Diskless,
    Attaching,
    Detaching,
    Failed,
    Negotiating,
    Inconsistent,
    Outdated,
    DUnknown,
    Consistent,
    UpToDate,
}

/// A connection state (DRBD 9). The order is DRBD's: the state rules compare with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConnState {
    StandAlone,
    Disconnecting,
    Unconnected,
    Timeout,
    BrokenPipe,
    NetworkFailure,
    ProtocolError,
    TearDown,
    Connecting,
    Connected,
}

/// A replication state (DRBD 9, per peer device). The order is DRBD's: the state rules compare
/// with it ("above Established" is a resync, a verify or their preparation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReplState {
    Off,
    Established,
    StartingSyncS,
    StartingSyncT,
    WFBitMapS,
    WFBitMapT,
    WFSyncUUID,
    SyncSource,
    SyncTarget,
    VerifyS,
    VerifyT,
    PausedSyncS,
    PausedSyncT,
    Ahead,
    Behind,
}

macro_rules! display_as_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_as_debug!(Role, DiskState, ConnState, ReplState);

/// Why a state change was refused: DRBD's `enum drbd_state_rv` codes and texts
/// (`drbd_strings.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum StateError {
    #[error("(-1) Multiple primaries not allowed by config")]
    TwoPrimaries,
    #[error("(-2) Need access to UpToDate data")]
    NoUpToDateDisk,
    #[error("(-4) Can not resync without local disk")]
    NoLocalDisk,
    #[error("(-5) Can not resync without remote disk")]
    NoRemoteDisk,
    /// `outdate` while a Primary peer needs this node's data.
    #[error("(-6) Refusing to be Outdated while Connected")]
    ConnectedOutdates,
    /// Promotion while a peer that fencing must account for is neither connected nor known
    /// Outdated (DRBD's `SS_PRIMARY_NOP`).
    #[error("(-7) Refusing to be Primary while peer is not outdated")]
    PrimaryNop,
    #[error("(-8) Can not start OV/resync since it is already active")]
    ResyncRunning,
    #[error("(-9) Can not disconnect a StandAlone device")]
    AlreadyStandalone,
    #[error("(-10) State change was refused by peer node")]
    RefusedByPeer,
    #[error("(-11) Device is diskless, the requested operation requires a disk")]
    DeviceDiskless,
    #[error("(-12) Device is held open by someone")]
    DeviceInUse,
    #[error("(-13) Have no net/connection configuration")]
    NoNetConfig,
    #[error("(-14) Need a verify algorithm to start online verify")]
    NoVerifyAlg,
    #[error("(-15) State change requires a connection")]
    NeedConnection,
    #[error("(-16) Disk state is lower than outdated")]
    LowerThanOutdated,
    #[error("(-18) In transient state, retry after next state change")]
    InTransientState,
    #[error("(-19) Concurrent state changes detected and aborted")]
    ConcurrentChange,
    #[error("(-23) Timeout in operation")]
    Timeout,
    /// Promotion (or a change that would take quorum from a Primary) without quorum.
    #[error("(-25) No quorum")]
    NoQuorum,
}

impl StateError {
    /// DRBD's numeric code (`enum drbd_state_rv`).
    pub fn code(self) -> i32 {
        match self {
            StateError::TwoPrimaries => -1,
            StateError::NoUpToDateDisk => -2,
            StateError::NoLocalDisk => -4,
            StateError::NoRemoteDisk => -5,
            StateError::ConnectedOutdates => -6,
            StateError::PrimaryNop => -7,
            StateError::ResyncRunning => -8,
            StateError::AlreadyStandalone => -9,
            StateError::RefusedByPeer => -10,
            StateError::DeviceDiskless => -11,
            StateError::DeviceInUse => -12,
            StateError::NoNetConfig => -13,
            StateError::NoVerifyAlg => -14,
            StateError::NeedConnection => -15,
            StateError::LowerThanOutdated => -16,
            StateError::InTransientState => -18,
            StateError::ConcurrentChange => -19,
            StateError::Timeout => -23,
            StateError::NoQuorum => -25,
        }
    }

    /// The refusal for DRBD's numeric code (a peer's `TwoPcNo`), if this build knows it.
    pub fn from_code(code: i32) -> Option<StateError> {
        [
            StateError::TwoPrimaries,
            StateError::NoUpToDateDisk,
            StateError::NoLocalDisk,
            StateError::NoRemoteDisk,
            StateError::ConnectedOutdates,
            StateError::PrimaryNop,
            StateError::ResyncRunning,
            StateError::AlreadyStandalone,
            StateError::RefusedByPeer,
            StateError::DeviceDiskless,
            StateError::DeviceInUse,
            StateError::NoNetConfig,
            StateError::NoVerifyAlg,
            StateError::NeedConnection,
            StateError::LowerThanOutdated,
            StateError::InTransientState,
            StateError::ConcurrentChange,
            StateError::Timeout,
            StateError::NoQuorum,
        ]
        .into_iter()
        .find(|e| e.code() == code)
    }

    /// drbdsetup's exit code for this refusal (`check_error()`): 17 for "no UpToDate disk",
    /// 5 for "lower than outdated", 16 for "no local disk", 11 for every other state change.
    pub fn exit_code(self) -> i32 {
        match self {
            StateError::NoUpToDateDisk => 17,
            StateError::LowerThanOutdated => 5,
            StateError::NoLocalDisk => 16,
            _ => 11,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_are_drbds() {
        assert_eq!(DiskState::UpToDate.to_string(), "UpToDate");
        assert_eq!(ConnState::StandAlone.to_string(), "StandAlone");
        assert_eq!(
            StateError::NoUpToDateDisk.to_string(),
            "(-2) Need access to UpToDate data"
        );
        assert_eq!(StateError::NoUpToDateDisk.exit_code(), 17);
        assert_eq!(StateError::DeviceInUse.exit_code(), 11);
        assert!(DiskState::Outdated < DiskState::UpToDate);
        for e in [
            StateError::TwoPrimaries,
            StateError::ConcurrentChange,
            StateError::Timeout,
        ] {
            assert_eq!(StateError::from_code(e.code()), Some(e));
            assert!(e.to_string().starts_with(&format!("({}) ", e.code())));
        }
        assert_eq!(StateError::from_code(-3), None);
    }
}
