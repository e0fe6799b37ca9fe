//! udrbd: DRBD-style block replication in user space.
//!
//! The pure layers (`config`, `meta`, `bitmap`, `repl`, `nbd::proto`) never touch the operating
//! system; the I/O shells (`disk`, `net`, `nbd::server`, `ctl`) do, and only `driver` knows both.
//! See `DESIGN.md` in the shared folder for the map.

pub mod batch;
pub mod bitmap;
pub mod buf;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod disk;
pub mod driver;
pub mod fuzzing;
pub mod meta;
pub mod nbd;
pub mod net;
pub mod repl;
pub mod tls;
pub mod types;
