//! `on-io-error` in the engine alone: a failed write with no peer to fall back on.

use super::tests::{attached, cfg, settle_failing, write};
use super::*;
use crate::config::OnIoError;
use crate::meta::superblock::flags;
use crate::types::{ReqId, Time};

/// A Primary with UpToDate data and `policy`; one 8 KiB write at 1 MiB whose disk write fails.
fn failing_write(policy: OnIoError) -> (Engine, Vec<Action>) {
    let mut a = attached(flags::CONSISTENT | flags::WAS_UP_TO_DATE, 0);
    a.on_io_error = policy;
    let mut e = Engine::new(cfg(false));
    e.handle(Time::default(), Input::Attach(Box::new(a)));
    e.handle(
        Time::default(),
        Input::Admin {
            token: 1,
            cmd: AdminCmd::Primary { force: false },
        },
    );
    e.handle(
        Time::default(),
        Input::Io {
            id: ReqId(7),
            op: write(1 << 20, 8192),
        },
    );
    let seen = settle_failing(&mut e, |id| id == ReqId(7));
    (e, seen)
}

fn completion(seen: &[Action]) -> Option<&Result<Option<bytes::Bytes>, IoError>> {
    seen.iter().find_map(|a| match a {
        Action::Complete { id, result } if *id == ReqId(7) => Some(result),
        _ => None,
    })
}

#[test]
fn pass_on_reports_the_error_and_keeps_an_inconsistent_disk() {
    let (e, seen) = failing_write(OnIoError::PassOn);
    assert_eq!(completion(&seen), Some(&Err(IoError::Disk(libc::EIO))));
    assert_eq!(e.disk_state(), DiskState::Inconsistent);
    assert!(!seen.contains(&Action::ReleaseDisk));
    // The failed blocks are out of sync for the (absent) peer: a later resync covers them.
    assert_eq!(e.status().peers[0].out_of_sync_bytes, 8192);
    // Persisted: the superblock no longer says Consistent.
    let last_sb = seen.iter().rev().find_map(|a| match a {
        Action::WriteMeta { sb, .. } => Some(sb.flags),
        _ => None,
    });
    assert_eq!(last_sb.map(|f| f & flags::CONSISTENT), Some(0));
}

#[test]
fn detach_releases_the_disk_after_marking_the_blocks() {
    for policy in [OnIoError::Detach, OnIoError::CallLocalIoError] {
        let (e, seen) = failing_write(policy);
        // No peer has the data: the application sees the error.
        assert_eq!(completion(&seen), Some(&Err(IoError::Disk(libc::EIO))));
        assert_eq!(e.disk_state(), DiskState::Diskless, "{policy:?}");
        assert!(seen.contains(&Action::ReleaseDisk), "{policy:?}");
        // The bitmap with the marks was written before the disk went away.
        let marks_written = seen
            .iter()
            .position(|a| matches!(a, Action::WriteBitmap { .. }))
            .expect("bitmap written");
        let released = seen
            .iter()
            .position(|a| *a == Action::ReleaseDisk)
            .expect("released");
        assert!(marks_written < released);
        let handler = seen.iter().any(|a| {
            matches!(
                a,
                Action::RunHandler {
                    handler: crate::repl::handler::Handler::LocalIoError,
                    ..
                }
            )
        });
        assert_eq!(handler, policy == OnIoError::CallLocalIoError);
    }
}
