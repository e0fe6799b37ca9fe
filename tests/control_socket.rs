//! The control socket is the daemon's to guard: whatever the umask it was started under, the
//! run directory it creates is 0700 and the socket 0600, and a caller that is neither root nor
//! the daemon's user is refused with a reason even when an operator loosened both (checked
//! with `SO_PEERCRED`). The unprivileged caller is `nobody`, through `setpriv`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// `drbdsetup --run-dir RUN status`, as `nobody` when `unprivileged`.
fn status(drbdsetup: &Path, run: &Path, unprivileged: bool) -> Output {
    let mut c = if unprivileged {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(drbdsetup);
        c
    } else {
        Command::new(drbdsetup)
    };
    c.arg("--run-dir")
        .arg(run)
        .arg("status")
        .output()
        .expect("drbdsetup runs (setpriv is in util-linux)")
}

/// A world-readable scratch directory (under /tmp, so that `nobody` can reach what a test opens
/// up for it) with a copy of drbdsetup in it.
fn scratch_with_drbdsetup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let drbdsetup = dir.path().join("drbdsetup");
    std::fs::copy(common::udrbd_bin().with_file_name("drbdsetup"), &drbdsetup)
        .expect("drbdsetup is built next to udrbd");
    (dir, drbdsetup)
}

/// Starts `cmd` (a udrbd) and waits until its control socket in `run` answers.
fn start_daemon(mut cmd: Command, run: &Path) -> std::process::Child {
    let daemon = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("udrbd");
    let ctl = run.join("ctl.sock");
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(&ctl).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "udrbd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

#[test]
fn a_user_other_than_root_is_refused_by_the_control_socket_under_umask_000() {
    let (dir, drbdsetup) = scratch_with_drbdsetup();
    let run = dir.path().join("run");
    let mut sh = Command::new("sh");
    sh.args(["-c", "umask 000; exec \"$0\" --run-dir \"$1\""])
        .arg(common::udrbd_bin())
        .arg(&run);
    let mut daemon = start_daemon(sh, &run);
    let ctl = run.join("ctl.sock");
    assert_eq!(mode(&run), 0o700, "the run directory");
    assert_eq!(mode(&ctl), 0o600, "the control socket");

    // nobody cannot reach the socket at all.
    let o = status(&drbdsetup, &run, true);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ermission denied"),
        "{o:?}"
    );
    // An operator opens both up: the daemon still refuses nobody, and says why.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let o = status(&drbdsetup, &run, true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        err.contains("the control socket serves root only, not uid 65534"),
        "{o:?}"
    );
    // root is served.
    let o = status(&drbdsetup, &run, false);
    assert!(o.status.success(), "{o:?}");

    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn ctl_group_members_are_served_and_other_users_are_not() {
    let (dir, drbdsetup) = scratch_with_drbdsetup();
    let run = dir.path().join("run");
    // nobody's group on Debian is nogroup (65534).
    let mut udrbd = Command::new(common::udrbd_bin());
    udrbd
        .args(["--ctl-group", "nogroup", "--run-dir"])
        .arg(&run);
    let mut daemon = start_daemon(udrbd, &run);
    let ctl = run.join("ctl.sock");
    assert_eq!(mode(&run), 0o710, "the run directory");
    assert_eq!(mode(&ctl), 0o660, "the control socket");
    // nobody, in group nogroup: served.
    let o = status(&drbdsetup, &run, true);
    assert!(o.status.success(), "{o:?}");
    let as_uid_65534 = |groups: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=1", groups])
            .arg(&drbdsetup)
            .arg("--run-dir")
            .arg(&run)
            .arg("status")
            .output()
            .expect("setpriv")
    };
    // uid 65534 in another group (daemon, 1): refused, told why.
    let o = as_uid_65534("--clear-groups");
    assert!(!o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ermission denied"), "{o:?}");
    // ... unless nogroup is among its supplementary groups.
    let o = as_uid_65534("--groups=65534");
    assert!(o.status.success(), "{o:?}");
    let _ = daemon.kill();
    let _ = daemon.wait();

    // An unknown group is refused at start, with the reason.
    let o = Command::new(common::udrbd_bin())
        .args(["--ctl-group", "no-such-group-here", "--run-dir"])
        .arg(dir.path().join("run2"))
        .output()
        .expect("udrbd");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such group"),
        "{o:?}"
    );
}
