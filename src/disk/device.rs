//! Opening a backing device or file for the engines: O_DIRECT when it works, buffered when the
//! filesystem refuses it, the usable size, and allocation status via SEEK_DATA/SEEK_HOLE.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::align::SECTOR;
use super::engine::AllocRun;
use super::sys;
use crate::buf::{AlignedBuf, BUF_ALIGN};

/// An open backing device, shared by an engine's threads.
#[derive(Debug)]
pub struct Device {
    pub file: File,
    /// Opened with O_DIRECT: I/O must be [`BUF_ALIGN`]-aligned in offset, length and memory.
    pub direct: bool,
    pub block_dev: bool,
    /// Usable bytes (the data area); grows with `drbdadm resize` (see [`Device::set_size`]).
    size: std::sync::atomic::AtomicU64,
}

impl Device {
    /// Usable bytes (the data area).
    pub fn size(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A larger data area (the backing device grew and the metadata moved past it). Never
    /// shrinks: requests already checked against the old size stay valid.
    pub fn set_size(&self, bytes: u64) {
        self.size
            .fetch_max(bytes, std::sync::atomic::Ordering::AcqRel);
    }

    /// Opens `path` read-write. `data_bytes` limits the usable size (the data area ends where
    /// internal metadata starts); `None` uses the whole device. O_DIRECT is used only when the
    /// usable size is 4 KiB aligned (otherwise the last aligned span would reach past the data
    /// area) and a probe read succeeds; otherwise the device is opened buffered.
    pub fn open(path: &Path, data_bytes: Option<u64>) -> io::Result<Device> {
        match Self::open_with(path, data_bytes, true) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Self::open_with(path, data_bytes, false)?
                .ok_or_else(|| io::Error::other("buffered open refused")),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(path = %path.display(), "O_DIRECT refused, using buffered I/O");
                Self::open_with(path, data_bytes, false)?
                    .ok_or_else(|| io::Error::other("buffered open refused"))
            }
            Err(e) => Err(e),
        }
    }

    /// `Ok(None)` when O_DIRECT was asked for but does not fit this device.
    fn open_with(path: &Path, data_bytes: Option<u64>, direct: bool) -> io::Result<Option<Device>> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let mut file = opts.open(path)?;
        let block_dev = file.metadata()?.file_type().is_block_device();
        let whole = file.seek(SeekFrom::End(0))?;
        let size = match data_bytes {
            None => whole / SECTOR * SECTOR,
            Some(d) if d <= whole => d / SECTOR * SECTOR,
            Some(d) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("data area of {d} bytes exceeds the device ({whole} bytes)"),
                ));
            }
        };
        if direct {
            if size % BUF_ALIGN as u64 != 0 {
                return Ok(None);
            }
            if size > 0 {
                let mut probe = AlignedBuf::zeroed(BUF_ALIGN);
                if let Err(e) = file.read_exact_at(probe.as_mut_slice(), 0) {
                    if e.raw_os_error() == Some(libc::EINVAL) {
                        return Ok(None);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Some(Device {
            file,
            direct,
            block_dev,
            size: std::sync::atomic::AtomicU64::new(size),
        }))
    }

    /// The I/O alignment the engines must respect.
    pub fn align(&self) -> u64 {
        if self.direct {
            BUF_ALIGN as u64
        } else {
            SECTOR
        }
    }

    /// Allocation runs of `[offset, offset+len)` clipped to the device. Block devices (and
    /// filesystems without SEEK_DATA) answer one allocated run.
    pub fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<AllocRun>> {
        let end = offset.saturating_add(len).min(self.size());
        if offset >= end {
            return Ok(Vec::new());
        }
        let data = |len| AllocRun {
            len,
            hole: false,
            zero: false,
        };
        if self.block_dev {
            return Ok(vec![data(end - offset)]);
        }
        let mut runs: Vec<AllocRun> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let next_data = match sys::seek(&self.file, pos, libc::SEEK_DATA) {
                Ok(d) => d.unwrap_or(end).min(end),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Ok(vec![data(end - offset)]);
                }
                Err(e) => return Err(e),
            };
            if next_data > pos {
                runs.push(AllocRun {
                    len: next_data - pos,
                    hole: true,
                    zero: true,
                });
                pos = next_data;
                continue;
            }
            let next_hole = sys::seek(&self.file, pos, libc::SEEK_HOLE)?
                .unwrap_or(end)
                .min(end);
            // SEEK_HOLE always finds the virtual hole at EOF; guard against no progress anyway.
            let stop = next_hole.max(pos + 1).min(end);
            runs.push(data(stop - pos));
            pos = stop;
        }
        Ok(runs)
    }
}
