//! Backing-device I/O.
