//! One module per group of drbdadm commands.

pub mod daemon;
pub mod dump;
pub mod meta;
pub mod sh;
pub mod show;
pub mod status;
