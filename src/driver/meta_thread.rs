//! The metadata thread of one attached volume: executes superblock, AL and bitmap writes one at
//! a time, in the order the engine emitted them, and feeds each result back.

use super::Driver;
use crate::disk::meta_io::MetaIo;
use crate::disk::metadev::MetaDevError;
use crate::meta::al::Transaction;
use crate::meta::superblock::Superblock;
use crate::repl::{Input, MetaArea, MetaError};
use std::sync::Weak;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

/// One metadata write.
#[derive(Debug)]
pub enum MetaJob {
    Superblock {
        generation: u64,
        sb: Box<Superblock>,
    },
    Al {
        seq: u64,
        block: u32,
        tr: Box<Transaction>,
    },
    Bitmap {
        pages: Vec<(u32, u32, Vec<u64>)>,
    },
    /// `drbdadm resize`: the backing device `disk` may have grown (see `MetaIo::grow`).
    Grow {
        disk: std::path::PathBuf,
    },
}

impl MetaJob {
    /// Which area the job writes.
    fn area(&self) -> MetaArea {
        match self {
            MetaJob::Superblock { .. } | MetaJob::Grow { .. } => MetaArea::Superblock,
            MetaJob::Al { .. } => MetaArea::ActivityLog,
            MetaJob::Bitmap { .. } => MetaArea::Bitmap,
        }
    }

    /// The engine input reporting that this job was never issued (the thread has stopped).
    pub fn not_issued(&self) -> Input {
        self.result(Err(MetaError::Stopped { area: self.area() }))
    }

    /// The engine's form of a write's outcome.
    fn outcome(&self, r: Result<(), MetaDevError>) -> Input {
        let area = self.area();
        self.result(r.map_err(|e| meta_error(area, e)))
    }

    fn result(&self, result: Result<(), MetaError>) -> Input {
        match self {
            MetaJob::Superblock { generation, .. } => Input::MetaWritten {
                generation: *generation,
                result,
            },
            MetaJob::Al { seq, .. } => Input::AlWritten { seq: *seq, result },
            MetaJob::Bitmap { .. } => Input::BitmapWritten { result },
            // Only a failure comes this way (`not_issued`); a success carries the new size.
            MetaJob::Grow { .. } => Input::DiskGrew {
                result: result.map(|()| 0),
            },
        }
    }
}

/// The engine's form of a metadata failure in `area`.
fn meta_error(area: MetaArea, e: MetaDevError) -> MetaError {
    match e {
        MetaDevError::Io { source, .. } => MetaError::Io {
            area,
            errno: source.raw_os_error().unwrap_or(libc::EIO),
            detail: source.to_string(),
        },
        other => MetaError::Geometry {
            area,
            detail: other.to_string(),
        },
    }
}

/// The running thread and its queue.
#[derive(Debug)]
pub struct MetaThread {
    tx: Sender<MetaJob>,
    handle: JoinHandle<()>,
}

impl MetaThread {
    pub fn start(resource: &str, mut io: MetaIo, driver: Weak<Driver>) -> std::io::Result<Self> {
        let (tx, rx) = channel::<MetaJob>();
        let handle = std::thread::Builder::new()
            .name(format!("udrbd-md-{resource}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let r = match &job {
                        MetaJob::Superblock { sb, .. } => io.write_superblock(sb),
                        MetaJob::Al { block, tr, .. } => io.write_al(*block, tr),
                        MetaJob::Bitmap { pages } => io.write_bitmap(pages),
                        MetaJob::Grow { disk } => {
                            let result = io
                                .grow(disk)
                                .map_err(|e| meta_error(MetaArea::Superblock, e));
                            match driver.upgrade() {
                                Some(d) => {
                                    if let Ok(bytes) = result {
                                        // Before the engine may ask for the new blocks.
                                        d.grow_disk_engine(bytes);
                                        d.record_backing_size();
                                    }
                                    d.feed(Input::DiskGrew { result });
                                    continue;
                                }
                                None => break,
                            }
                        }
                    };
                    let input = job.outcome(r);
                    match driver.upgrade() {
                        Some(d) => d.feed(input),
                        None => break,
                    }
                }
            })?;
        Ok(MetaThread { tx, handle })
    }

    /// Queues a job; gives it back if the thread has stopped.
    pub fn send(&self, job: MetaJob) -> Result<(), MetaJob> {
        self.tx.send(job).map_err(|e| e.0)
    }

    /// Lets queued jobs finish, then joins the thread.
    pub fn stop(self) {
        drop(self.tx);
        if self.handle.join().is_err() {
            tracing::error!("the metadata thread panicked");
        }
    }
}
