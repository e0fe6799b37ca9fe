//! The administration tools' code, shared by the two binaries: `drbdadm` (reads the
//! configuration, drives the daemon) and `drbdsetup` (speaks to the daemon only: `status`,
//! `events2`, as DRBD's drbdsetup speaks to the kernel).

pub mod argv;
pub mod cli;
pub mod commands;
pub mod context;
pub mod error;
pub mod events2;
pub mod wrap;
