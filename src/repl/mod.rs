//! The replication core, PURE: no I/O, no threads, no clock, no unseeded RNG (`tests/purity.rs`).
//!
//! - [`state`]: DRBD's state names and state-change results.
//! - [`state_rules`]: DRBD's state-change validity rules and what every change implies.
//! - [`engine`]: one resource's state machine: roles, disk state, generation UUIDs, the request
//!   lifecycle, the activity log and the out-of-sync bitmap. The driver (`crate::driver`) feeds
//!   it and executes its actions.
//! - [`uuid`]: seeded generation-UUID source.
//!
//! This build knows one node; the peer link, the handshake and resync arrive on top of the same
//! engine (its peers already exist, as `StandAlone` connections whose bitmaps record every write).

pub mod digest;
pub mod engine;
pub mod handler;
pub mod handshake;
pub mod interval;
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
    MetaError, OpenRefusal, PeerInfo, PeerStatus, ResyncProgress, Stats, Status,
};
pub use state::{ConnState, DiskState, ReplState, Role, StateError};
