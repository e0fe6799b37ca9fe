//! One module per group of drbdadm commands.

pub mod dump;
pub mod meta;
