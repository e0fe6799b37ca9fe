//! Backing-device I/O.
//!
//! - [`engine`]: the I/O contract of the backing-device engines.
//! - [`metadev`]: the offline metadata operations (create-md, dump-md, wipe-md, get-gi,
//!   show-gi) and the attach-time read, on top of the pure codecs in [`crate::meta`].
//! - [`fs_sig`]: recognising filesystems and other signatures create-md must not destroy.

pub mod engine;
pub mod fs_sig;
pub mod metadev;
