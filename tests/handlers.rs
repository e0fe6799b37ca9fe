//! Handler output and DRBD's `helper command:` lines reach the log. A test binary of its own:
//! it installs a global `tracing` subscriber, which a scoped one in the library's parallel
//! unit tests cannot replace reliably (callsite interest is cached process-wide).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use udrbd::driver::handlers::{HandlerCall, HandlerEnv, HandlerOutcome, run_handler};

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn output_and_drbd_lines_reach_the_log() {
    let cap = Capture::default();
    let writer = cap.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish(),
    )
    .expect("the only subscriber of this test binary");
    let call = |command: &str| HandlerCall {
        resource: "r0".into(),
        handler: "fence-peer".into(),
        peer: Some("bob".into()),
        command: command.into(),
        env: HandlerEnv::new("r0"),
    };

    let r = run_handler(
        call("echo out-line; echo err-line >&2; printf no-newline; exit 5"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r, HandlerOutcome::Exited(5));
    let r = run_handler(call("exit 0"), Duration::from_secs(10)).await;
    assert_eq!(r, HandlerOutcome::Exited(0));

    let log = String::from_utf8(cap.0.lock().expect("lock").clone()).expect("utf8");
    let lines: Vec<&str> = log.lines().collect();
    let find = |level: &str, text: &str| {
        lines
            .iter()
            .position(|l| l.contains(level) && l.ends_with(text))
            .unwrap_or_else(|| panic!("no {level} line ending {text:?} in:\n{log}"))
    };
    let start = find("INFO", "r0 bob: helper command: /sbin/drbdadm fence-peer");
    let out = find("INFO", "r0 bob: fence-peer: out-line");
    let err = find("WARN", "r0 bob: fence-peer: err-line");
    let tail = find("INFO", "r0 bob: fence-peer: no-newline");
    // DRBD's wording: the exit code, and for a nonzero one the raw wait status.
    let end = find(
        "WARN",
        "r0 bob: helper command: /sbin/drbdadm fence-peer exit code 5 (0x500)",
    );
    assert!(
        start < out.min(err).min(tail) && out.max(err).max(tail) < end,
        "{log}"
    );
    find(
        "INFO",
        "r0 bob: helper command: /sbin/drbdadm fence-peer exit code 0",
    );
}
