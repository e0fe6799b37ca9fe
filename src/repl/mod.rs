//! The replication core, PURE: no I/O, no threads, no clock, no unseeded RNG (`tests/purity.rs`).
//!
//! - [`state`]: DRBD's state names and state-change results.
//! - [`state_rules`]: DRBD's state-change validity rules and what every change implies, as a
//!   table; every change of role, disk, peer-disk, connection and replication state is checked
//!   against it in one place (`engine/states.rs`).
//! - [`engine`]: one resource's state machine: roles, disk state, generation UUIDs, the request
//!   table (`engine/requests.rs`, one state per request, one transition function), the activity
//!   log, the out-of-sync bitmaps, the peers' connections, resync, verify and cluster-wide state
//!   changes. The driver (`crate::driver`) feeds it and executes its actions.
//! - [`interval`]: the index of requests in flight by sector range (overlaps and conflicts).
//! - [`quorum`]: DRBD 9's quorum calculation (voters, last man standing).
//! - [`handshake`]: the UUID comparison that decides sync direction and detects split brain.
//! - [`resync`], [`digest`]: resync and verify planning and checksums.
//! - [`wire`]: the peer protocol's packets.
//! - [`uuid`]: seeded generation-UUID source.

pub mod digest;
pub mod engine;
pub mod handler;
pub mod handshake;
pub mod interval;
pub mod quorum;
pub mod resync;
pub mod state;
pub mod state_rules;
pub mod uuid;
pub mod wire;

#[cfg(test)]
mod fencing_tests;
#[cfg(test)]
mod io_error_tests;
#[cfg(test)]
mod tests;

pub use engine::{
    Action, AdminCmd, AdminError, Attached, Engine, EngineConfig, Input, IoError, IoOp, MetaArea,
    MetaError, OpenRefusal, PeerInfo, PeerStatus, QuorumSettings, ResyncProgress, Settings, Stats,
    Status,
};
pub use state::{ConnState, DiskState, ReplState, Role, StateError};
