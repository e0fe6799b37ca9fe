//! A node on this machine for integration tests: its own directory (config, backing file, run
//! dir), a real `udrbd` daemon process, and `drbdadm` run as a real process against it.
//! Everything lives under the target directory (a real disk, not tmpfs) and is removed on drop;
//! the daemon is killed on drop.

#![allow(dead_code)]

pub mod netns;
pub mod pair;
pub mod star;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `udrbd` binary under test.
pub fn udrbd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udrbd"))
}

/// The `drbdadm` binary, built next to `udrbd` by `cargo test --workspace`.
pub fn drbdadm_bin() -> PathBuf {
    let p = udrbd_bin().with_file_name("drbdadm");
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds drbdadm too)",
        p.display()
    );
    p
}

/// The `drbdsetup` binary, built next to `udrbd`.
pub fn drbdsetup_bin() -> PathBuf {
    let p = udrbd_bin().with_file_name("drbdsetup");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// fio writing random blocks of 4 to 64 KiB over the first 8 MiB of `uri` at QD16 for `secs`
/// seconds (libnbd's engine); it exits non-zero on any I/O error.
pub fn fio_load(uri: &str, name: &str, secs: u64) -> Child {
    fio_randwrite(
        uri,
        name,
        &[
            "--size=8M",
            "--time_based",
            &format!("--runtime={secs}"),
            &format!("--randseed={}", name.len()),
        ],
    )
}

/// fio writing random blocks of 4 to 64 KiB to `uri` at QD16 (libnbd's engine), with `more`
/// options; it exits non-zero on any I/O error (or, with `--verify`, a mismatch).
pub fn fio_randwrite(uri: &str, name: &str, more: &[&str]) -> Child {
    Command::new("fio")
        .args([
            &format!("--name={name}"),
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=randwrite",
            "--bsrange=4k-64k",
            "--iodepth=16",
        ])
        .args(more)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fio runs (.ci/apt-packages installs fio)")
}

/// Waits for a [`fio_load`] job; panics with its output (and `context`) unless it succeeded.
pub fn fio_ok(job: Child, context: &str) {
    let out = job.wait_with_output().expect("fio");
    assert!(
        out.status.success(),
        "fio: {}\n{}\n{context}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// Runs `qemu-io -c CMD -c flush` on `n`'s export `res`; its output (panics if it failed).
pub fn qemu_io(n: &Node, res: &str, cmd: &str) -> String {
    let o = tool(
        "qemu-io",
        &["-f", "raw", "-c", cmd, "-c", "flush", &n.nbd_uri(res)],
    );
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A scratch directory on a real disk.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("udrbd-it-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("scratch dir")
}

/// Result of one drbdadm run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with everything printed unless the exit code was 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "drbdadm failed: {self:#?}");
        self
    }
}

/// One node: name, config file, run dir, and (while running) the daemon.
pub struct Node {
    pub name: String,
    pub config: PathBuf,
    pub run_dir: PathBuf,
    pub daemon: Option<Child>,
    pub log: PathBuf,
    /// Extra `udrbd` arguments.
    pub daemon_args: Vec<String>,
    /// Extra environment for the daemon (e.g. `UDRBD_HANDLER_TIMEOUT_MS`).
    pub daemon_env: Vec<(String, String)>,
    /// Network namespace the daemon runs in (`ip netns exec NS udrbd ...`, see [`netns`]);
    /// `None`: this one's. drbdadm and NBD clients stay outside: the control and NBD sockets
    /// are filesystem paths, reachable from any network namespace.
    pub netns: Option<String>,
}

impl Node {
    pub fn new(dir: &Path, name: &str, config: &Path) -> Node {
        let run_dir = dir.join(format!("run-{name}"));
        std::fs::create_dir_all(&run_dir).expect("run dir");
        Node {
            name: name.to_string(),
            config: config.to_path_buf(),
            log: dir.join(format!("udrbd-{name}.log")),
            run_dir,
            daemon: None,
            daemon_args: Vec::new(),
            daemon_env: Vec::new(),
            netns: None,
        }
    }

    /// The NBD Unix socket.
    pub fn nbd_sock(&self) -> PathBuf {
        self.run_dir.join("nbd.sock")
    }

    /// `nbd+unix:///RES?socket=...` for libnbd and qemu.
    pub fn nbd_uri(&self, res: &str) -> String {
        format!("nbd+unix:///{res}?socket={}", self.nbd_sock().display())
    }

    /// Starts the daemon and waits for its control socket.
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        // `ip netns exec` execs udrbd in place: the child's pid is the daemon's (signals reach it).
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(udrbd_bin());
                c
            }
            None => Command::new(udrbd_bin()),
        };
        let child = cmd
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(&self.daemon_args)
            .env("UDRBD_LOG", "info")
            .env("UDRBD_STATE_DIR", &self.run_dir)
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn udrbd");
        self.daemon = Some(child);
        let ctl = self.run_dir.join("ctl.sock");
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&ctl).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "udrbd did not start; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        let Some(mut c) = self.daemon.take() else {
            return 0;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let status = c.wait().expect("wait udrbd");
        status.code().unwrap_or(-1)
    }

    /// SIGKILL: a crash.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs drbdadm as this node.
    pub fn adm(&self, args: &[&str]) -> Run {
        let out = Command::new(drbdadm_bin())
            .args(args)
            .env("UDRBD_CONFIG", &self.config)
            .env("UDRBD_NODE", &self.name)
            .env("UDRBD_RUN_DIR", &self.run_dir)
            .env("UDRBD_STATE_DIR", &self.run_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run drbdadm");
        Run::from(out)
    }
}

impl Node {
    /// Runs drbdsetup against this node's daemon.
    pub fn setup(&self, args: &[&str]) -> Run {
        let out = Command::new(drbdsetup_bin())
            .args(args)
            .env("UDRBD_RUN_DIR", &self.run_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run drbdsetup");
        Run::from(out)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.crash();
    }
}

/// A sparse file of `size` bytes.
pub fn backing_file(path: &Path, size: u64) {
    let f = std::fs::File::create(path).expect("backing file");
    f.set_len(size).expect("set_len");
}

/// Runs a third-party client and returns its output; panics if it cannot be started (a test
/// must fail, not skip, when a required tool is missing).
pub fn tool(program: &str, args: &[&str]) -> Output {
    tool_env(program, args, &[])
}

/// [`tool`] with extra environment variables.
pub fn tool_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); .ci/apt-packages installs it"))
}

/// A loopback port nobody listens on right now (tests run in parallel: fixed ports collide).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// One HTTP request to loopback `port` (the metrics endpoint); returns the whole response.
pub fn http_get(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.write_all(request.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}
