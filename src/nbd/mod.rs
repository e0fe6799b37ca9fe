//! The NBD front end: how clients (qemu, nbdcopy, nbdinfo, fio) reach a resource's data.
//!
//! - [`proto`]: the pure protocol layer (codecs, option haggling, request validation). It does no
//!   I/O, so the listener that uses it and the simulator can drive it the same way.
//! - [`kernel`]: a client of the kernel NBD driver's generic-netlink interface, for attaching
//!   an export to `/dev/nbdN` without `nbd-client`.

pub mod kernel;
pub mod proto;
pub mod server;

#[cfg(test)]
mod corpus_tests;
