//! The drbd.conf language.
