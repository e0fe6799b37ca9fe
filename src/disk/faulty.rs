//! A backing-device wrapper that fails chosen requests, for testing `on-io-error` with real
//! daemons (what device-mapper's `dm-flakey`/`dm-error` do for DRBD, without a kernel
//! module). The daemon wraps every backing device in it when `UDRBD_FAULT_FILE` names a file;
//! each line of that file is a rule:
//!
//! ```text
//! write <offset> <len>    # writes (and trims/zeroes) overlapping [offset, offset+len) fail
//! read <offset> <len>     # reads overlapping it fail
//! ```
//!
//! Offsets are bytes of the data area. The file is re-read when its modification time
//! changes, so a test can break and mend a disk while the daemon runs. Failing requests get
//! `EIO` without touching the device.

use super::engine::{AllocRun, Completion, DiskEngine, DiskOp};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The environment variable that turns fault injection on.
pub const FAULT_FILE_ENV: &str = "UDRBD_FAULT_FILE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    write: bool,
    offset: u64,
    len: u64,
}

/// Parses the rule file; lines that are not rules (comments, typos) are ignored with a warning
/// so a test sees its mistake in the log instead of a silently healthy disk.
fn parse(text: &str) -> Vec<Rule> {
    let mut rules = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let rule = match w.as_slice() {
            [kind @ ("read" | "write"), off, len] => {
                off.parse()
                    .ok()
                    .zip(len.parse().ok())
                    .map(|(offset, len)| Rule {
                        write: *kind == "write",
                        offset,
                        len,
                    })
            }
            _ => None,
        };
        match rule {
            Some(r) => rules.push(r),
            None => tracing::warn!("{FAULT_FILE_ENV}: ignoring line {line:?}"),
        }
    }
    rules
}

/// Wraps `inner`, failing what the rules in `file` name.
pub struct FaultyDisk {
    inner: Arc<dyn DiskEngine>,
    file: PathBuf,
    /// The rules and the modification time they were read at.
    rules: Mutex<(Option<SystemTime>, Vec<Rule>)>,
}

impl std::fmt::Debug for FaultyDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyDisk")
            .field("file", &self.file)
            .finish()
    }
}

impl FaultyDisk {
    pub fn new(inner: Arc<dyn DiskEngine>, file: PathBuf) -> FaultyDisk {
        tracing::warn!(
            "fault injection on: {} fails the requests listed in {}",
            FAULT_FILE_ENV,
            file.display()
        );
        FaultyDisk {
            inner,
            file,
            rules: Mutex::new((None, Vec::new())),
        }
    }

    fn fails(&self, op: &DiskOp) -> bool {
        let mtime = std::fs::metadata(&self.file)
            .and_then(|m| m.modified())
            .ok();
        let mut g = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 != mtime {
            let text = std::fs::read_to_string(&self.file).unwrap_or_default();
            *g = (mtime, parse(&text));
        }
        let (write, range) = match op {
            DiskOp::Read { offset, len } => (false, Some((*offset, u64::from(*len)))),
            op => (true, op.written_range()),
        };
        let Some((offset, len)) = range else {
            return false;
        };
        g.1.iter()
            .any(|r| r.write == write && r.offset < offset + len && offset < r.offset + r.len)
    }
}

impl DiskEngine for FaultyDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn grow_to(&self, bytes: u64) {
        self.inner.grow_to(bytes);
    }

    fn submit(&self, op: DiskOp, done: Completion) {
        if self.fails(&op) {
            return done(Err(io::Error::from_raw_os_error(libc::EIO)));
        }
        self.inner.submit(op, done);
    }

    fn submit_batch(&self, ops: Vec<(DiskOp, Completion)>) {
        let mut pass = Vec::with_capacity(ops.len());
        for (op, done) in ops {
            if self.fails(&op) {
                done(Err(io::Error::from_raw_os_error(libc::EIO)));
            } else {
                pass.push((op, done));
            }
        }
        self.inner.submit_batch(pass);
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<AllocRun>> {
        self.inner.block_status(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemEngine;
    use crate::disk::wait::run_blocking as submit_wait;

    #[test]
    fn rules_parse_and_bad_lines_are_skipped() {
        let r = parse("write 4096 8192\n# note\nread 0 512 # trailing\nwrite x 1\nflush 0 1\n");
        assert_eq!(
            r,
            vec![
                Rule {
                    write: true,
                    offset: 4096,
                    len: 8192
                },
                Rule {
                    write: false,
                    offset: 0,
                    len: 512
                }
            ]
        );
    }

    #[test]
    fn fails_what_the_file_names_and_follows_its_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("faults");
        std::fs::write(&file, "write 8192 4096\n").expect("write rules");
        let disk = FaultyDisk::new(Arc::new(MemEngine::new(1 << 20)), file.clone());
        let write = |offset: u64| DiskOp::Write {
            offset,
            data: vec![1u8; 4096].into(),
            fua: false,
        };
        assert!(submit_wait(&disk, write(0)).is_ok());
        let e = submit_wait(&disk, write(8192)).expect_err("a bad spot");
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert!(
            submit_wait(
                &disk,
                DiskOp::Read {
                    offset: 8192,
                    len: 4096
                }
            )
            .is_ok()
        );
        // Mended (a new modification time; some filesystems keep 1 s resolution).
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(&file, "").expect("clear rules");
        assert!(submit_wait(&disk, write(8192)).is_ok());
    }
}
