//! Waiting for one op: a blocking form for tests and tools, an async form for tokio code.

use std::io;
use std::sync::mpsc;

use super::engine::{DiskDone, DiskEngine, DiskOp};

fn lost() -> io::Error {
    io::Error::other("disk engine dropped a completion")
}

/// Submits `op` and blocks the calling thread until it completes. Do not call it from an
/// engine's completion callback (the io_uring thread would wait for itself).
pub fn run_blocking<E: DiskEngine + ?Sized>(engine: &E, op: DiskOp) -> io::Result<DiskDone> {
    let (tx, rx) = mpsc::sync_channel(1);
    engine.submit(
        op,
        Box::new(move |r| {
            // The receiver only goes away if the waiter itself is gone; nothing to tell then.
            let _ = tx.send(r);
        }),
    );
    rx.recv().map_err(|_| lost())?
}

/// Submits `op` and awaits its completion without blocking the runtime.
pub async fn run_async<E: DiskEngine + ?Sized>(engine: &E, op: DiskOp) -> io::Result<DiskDone> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    engine.submit(
        op,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.await.map_err(|_| lost())?
}

/// [`run_blocking`] for a read, returning the bytes.
pub fn read_blocking<E: DiskEngine + ?Sized>(
    engine: &E,
    offset: u64,
    len: u32,
) -> io::Result<bytes::Bytes> {
    match run_blocking(engine, DiskOp::Read { offset, len })? {
        DiskDone::Read(b) => Ok(b),
        DiskDone::Done => Err(io::Error::other("read completed without data")),
    }
}
