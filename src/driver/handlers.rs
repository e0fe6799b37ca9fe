//! DRBD's user-mode helpers (`handlers { fence-peer "..."; }`).
//!
//! DRBD's kernel calls `/sbin/drbdadm <handler> <resource>` with an environment describing the
//! resource and, for a connection event, the peer; drbdadm adds the resource name and the config
//! file and runs the configured command with `/bin/sh -c`. udrbd has no kernel in between: the
//! daemon already holds the resolved `handlers { }` section (in [`ResourceSpec`]) and runs the
//! command itself, with the environment both halves of DRBD would have built.
//!
//! - [`HandlerEnv`] builds that environment (names and formats as DRBD 9 sets them).
//! - [`run_handler`] runs one call: its own process group, stdin `/dev/null`, each output line
//!   logged, DRBD's `helper command:` lines around it, and a deadline after which the whole
//!   group is SIGKILLed.
//! - [`HandlerRunner`] is what a driver owns per resource: it knows the resource's nodes,
//!   addresses and handlers and turns "call fence-peer about node 1" into a task.
//!
//! The deadline: [`handler_timeout`] is 60 s unless the daemon's environment sets
//! `UDRBD_HANDLER_TIMEOUT_MS` (read once per process; for tests that want a hanging handler to
//! give up quickly). DRBD itself waits forever; a bound keeps a stuck script from holding a
//! resource frozen for good. Note that `crm-fence-peer.9.sh` may itself wait up to its
//! `--timeout` (90 s by default) when the peer is unreachable; such setups should raise ours.

use crate::ctl::proto::ResourceSpec;
use crate::types::NodeId;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The path DRBD's log lines name: scripts and people grep for it.
const DRBD_HELPER: &str = "/sbin/drbdadm";

/// How long a handler may run when nothing overrides it.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable that overrides [`DEFAULT_HANDLER_TIMEOUT`], in milliseconds.
pub const HANDLER_TIMEOUT_ENV: &str = "UDRBD_HANDLER_TIMEOUT_MS";

/// Longest output line logged as one record; longer lines are split, so a handler printing
/// megabytes without a newline cannot make us buffer it all.
const MAX_LINE: u64 = 4096;

/// After the handler's shell exits, how long to wait for its output to reach end of file before
/// logging the exit code. Short, because a background child may hold the pipe open for good.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// After SIGKILL, how long to wait for the leader to be reaped and the pipes to close.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// The handler deadline for this daemon: `UDRBD_HANDLER_TIMEOUT_MS` if set and valid, else
/// [`DEFAULT_HANDLER_TIMEOUT`]. Read once, so every resource and every call agree.
pub fn handler_timeout() -> Duration {
    static TIMEOUT: OnceLock<Duration> = OnceLock::new();
    *TIMEOUT.get_or_init(|| match std::env::var(HANDLER_TIMEOUT_ENV) {
        Err(_) => DEFAULT_HANDLER_TIMEOUT,
        Ok(v) => match parse_timeout_ms(&v) {
            Some(d) => d,
            None => {
                tracing::warn!(
                    "{HANDLER_TIMEOUT_ENV}={v:?} is not a positive number of milliseconds; \
                     using {}s",
                    DEFAULT_HANDLER_TIMEOUT.as_secs()
                );
                DEFAULT_HANDLER_TIMEOUT
            }
        },
    })
}

fn parse_timeout_ms(v: &str) -> Option<Duration> {
    let ms: u64 = v.trim().parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// DRBD's `DRBD_*_AF` word for an address.
fn af(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "ipv4",
        IpAddr::V6(_) => "ipv6",
    }
}

/// An address as the kernel prints it into the helper environment: dotted quad for IPv4
/// (`%pI4`), all eight groups of four hex digits for IPv6 (`%pI6`, no `::` compression).
fn drbd_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a
            .segments()
            .iter()
            .map(|s| format!("{s:04x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

/// `UP_TO_DATE_NODES` as DRBD formats it (`0x%08llX`): at least eight upper-case hex digits.
pub fn format_up_to_date_nodes(mask: u64) -> String {
    format!("0x{mask:08X}")
}

/// The environment of one handler call, built the way DRBD's kernel and drbdadm build it
/// together. Each setter sets the variables DRBD sets for that fact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlerEnv {
    vars: BTreeMap<String, String>,
}

impl HandlerEnv {
    /// `DRBD_RESOURCE`.
    pub fn new(resource: &str) -> HandlerEnv {
        HandlerEnv::default().set("DRBD_RESOURCE", resource)
    }

    /// Any variable.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> HandlerEnv {
        self.vars.insert(key.to_string(), value.into());
        self
    }

    /// `DRBD_MINOR`, `DRBD_MINOR_0` and `DRBD_VOLUME=0`: this build serves volume 0 only, and
    /// DRBD sets the numbered form for connection events, the plain one for device events.
    pub fn minor(self, minor: u32) -> HandlerEnv {
        self.set("DRBD_MINOR", minor.to_string())
            .set("DRBD_MINOR_0", minor.to_string())
            .set("DRBD_VOLUME", "0")
    }

    /// `DRBD_BACKING_DEV`, `DRBD_BACKING_DEV_0` and `DRBD_LL_DISK` (volume 0's backing device;
    /// DRBD sets the plain, the numbered and the lower-level name, scripts use all three).
    pub fn backing_dev(self, dev: &str) -> HandlerEnv {
        self.set("DRBD_BACKING_DEV", dev)
            .set("DRBD_BACKING_DEV_0", dev)
            .set("DRBD_LL_DISK", dev)
    }

    /// `DRBD_CONF`: the configuration file that defines the resource.
    pub fn conf(self, file: &str) -> HandlerEnv {
        self.set("DRBD_CONF", file)
    }

    /// `DRBD_MY_NODE_ID`.
    pub fn my_node_id(self, id: NodeId) -> HandlerEnv {
        self.set("DRBD_MY_NODE_ID", id.0.to_string())
    }

    /// `DRBD_NODE_ID_<id>=<host name>`, one per node of the resource (this one included).
    pub fn node(self, id: NodeId, name: &str) -> HandlerEnv {
        self.set(&format!("DRBD_NODE_ID_{}", id.0), name)
    }

    /// `DRBD_PEER_NODE_ID`, `DRBD_PEER` and `DRBD_PEERS` (the host name; DRBD keeps both
    /// spellings for old scripts).
    pub fn peer(self, id: NodeId, name: &str) -> HandlerEnv {
        self.set("DRBD_PEER_NODE_ID", id.0.to_string())
            .set("DRBD_PEER", name)
            .set("DRBD_PEERS", name)
    }

    /// `DRBD_MY_ADDRESS` and `DRBD_MY_AF` (address without port).
    pub fn my_address(self, ip: IpAddr) -> HandlerEnv {
        self.set("DRBD_MY_ADDRESS", drbd_addr(ip))
            .set("DRBD_MY_AF", af(ip))
    }

    /// `DRBD_PEER_ADDRESS` and `DRBD_PEER_AF` (address without port).
    pub fn peer_address(self, ip: IpAddr) -> HandlerEnv {
        self.set("DRBD_PEER_ADDRESS", drbd_addr(ip))
            .set("DRBD_PEER_AF", af(ip))
    }

    /// `DRBD_CSTATE`: the connection state's name (`Connecting`, `StandAlone`, ...).
    pub fn cstate(self, name: &str) -> HandlerEnv {
        self.set("DRBD_CSTATE", name)
    }

    /// `UP_TO_DATE_NODES`: bit N set when node N's disk is UpToDate.
    pub fn up_to_date_nodes(self, mask: u64) -> HandlerEnv {
        self.set("UP_TO_DATE_NODES", format_up_to_date_nodes(mask))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }
}

/// Whether a variable of the daemon's own environment must not reach a handler: a stale
/// `DRBD_PEER` from whoever started the daemon would be indistinguishable from ours.
fn is_drbd_var(key: &std::ffi::OsStr) -> bool {
    let k = key.as_encoded_bytes();
    k.starts_with(b"DRBD_") || k == b"UP_TO_DATE_NODES"
}

/// One handler invocation.
#[derive(Clone, Debug)]
pub struct HandlerCall {
    pub resource: String,
    /// DRBD's handler name: `fence-peer`, `split-brain`, ...
    pub handler: String,
    /// The peer's host name when the call concerns one peer (log prefix only).
    pub peer: Option<String>,
    /// The command from the config, run by `/bin/sh -c`.
    pub command: String,
    pub env: HandlerEnv,
}

impl HandlerCall {
    /// DRBD prefixes connection messages with the resource and the peer, device and resource
    /// messages with the resource.
    fn who(&self) -> String {
        match &self.peer {
            Some(p) => format!("{} {p}", self.resource),
            None => self.resource.clone(),
        }
    }
}

/// How a handler call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerOutcome {
    /// The shell exited with this code (127: command not found).
    Exited(i32),
    /// The shell died of this signal.
    Signaled(i32),
    /// Still running at the deadline; its process group was killed.
    Timeout,
    /// `/bin/sh` could not be started (or waited for).
    SpawnFailed(String),
    /// No such handler in the config. DRBD then runs nothing; for `fence-peer` that is not a
    /// failure but "no fencing configured", so callers must tell it apart.
    NotConfigured,
}

impl HandlerOutcome {
    /// The exit code, when the handler ran to completion.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            HandlerOutcome::Exited(c) => Some(*c),
            _ => None,
        }
    }
}

/// Sends SIGKILL to a process group.
fn kill_group(pgid: i32) {
    // SAFETY: killpg only sends a signal; it touches no memory of ours. A group that is already
    // gone gives ESRCH, which is what we wanted anyway.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// Kills the group if the future running the handler is dropped before it finishes (the
/// driver shutting down mid-call), so a cancelled handler leaves nothing behind either.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_group(pgid);
        }
    }
}

/// Logs each line of `r` until end of file.
async fn pump<R: AsyncRead + Unpin>(r: R, who: &str, handler: &str, stderr: bool) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut r).take(MAX_LINE).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let end = buf.strip_suffix(b"\n").unwrap_or(&buf);
                let line = String::from_utf8_lossy(end);
                if stderr {
                    tracing::warn!("{who}: {handler}: {line}");
                } else {
                    tracing::info!("{who}: {handler}: {line}");
                }
            }
        }
    }
}

/// DRBD's closing line: `exit code N` plus the raw wait status when nonzero, as the kernel
/// prints what `call_usermodehelper` returned.
fn log_exit(who: &str, handler: &str, status: Option<ExitStatus>) {
    use std::os::unix::process::ExitStatusExt;
    let raw = status.map(|s| s.into_raw()).unwrap_or(0);
    if raw == 0 {
        tracing::info!("{who}: helper command: {DRBD_HELPER} {handler} exit code 0");
    } else {
        tracing::warn!(
            "{who}: helper command: {DRBD_HELPER} {handler} exit code {} (0x{raw:x})",
            (raw >> 8) & 0xff
        );
    }
}

fn outcome_of(status: ExitStatus) -> HandlerOutcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => HandlerOutcome::Exited(c),
        (None, Some(s)) => HandlerOutcome::Signaled(s),
        (None, None) => HandlerOutcome::SpawnFailed(format!("unexpected wait status {status}")),
    }
}

/// Runs one handler to completion or to `timeout`.
///
/// The shell gets its own process group, so everything it starts can be killed together. When
/// the shell exits, its exit status is the outcome at once (DRBD waits for the helper process,
/// not for what it left running); anything it left in the group may keep running and logging
/// until the deadline and is killed then. A handler that means to outlive that must leave the
/// group (`setsid`). Must be called within a tokio runtime (it spawns the output readers).
pub async fn run_handler(call: HandlerCall, timeout: Duration) -> HandlerOutcome {
    let deadline = Instant::now() + timeout;
    let who = call.who();
    let handler = call.handler.as_str();
    tracing::info!("{who}: helper command: {DRBD_HELPER} {handler}");

    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&call.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, _) in std::env::vars_os() {
        if is_drbd_var(&k) {
            cmd.env_remove(k);
        }
    }
    cmd.envs(call.env.vars());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{who}: Could not call {handler} user-space helper: {e}");
            return HandlerOutcome::SpawnFailed(e.to_string());
        }
    };
    // With process_group(0) the group id is the shell's pid.
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let mut guard = GroupGuard(pgid);

    let (out, err) = (child.stdout.take(), child.stderr.take());
    let (who2, handler2) = (who.clone(), handler.to_string());
    let mut readers = tokio::spawn(async move {
        let o = async {
            if let Some(o) = out {
                pump(o, &who2, &handler2, false).await;
            }
        };
        let e = async {
            if let Some(e) = err {
                pump(e, &who2, &handler2, true).await;
            }
        };
        tokio::join!(o, e);
    });

    match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => {
            let grace = deadline.min(Instant::now() + DRAIN_GRACE);
            if tokio::time::timeout_at(grace, &mut readers).await.is_err() {
                // Something the shell started still holds its output open. Keep logging it
                // until the deadline, then kill the group. The group id cannot have been
                // reused meanwhile: the kernel does not hand out a pid that is still some
                // live group's id, and a member holding the pipe keeps the group alive.
                if let Some(pgid) = guard.0.take() {
                    tokio::spawn(async move {
                        if tokio::time::timeout_at(deadline, &mut readers)
                            .await
                            .is_err()
                        {
                            kill_group(pgid);
                            if tokio::time::timeout(KILL_GRACE, &mut readers)
                                .await
                                .is_err()
                            {
                                readers.abort();
                            }
                        }
                    });
                }
            }
            log_exit(&who, handler, Some(status));
            outcome_of(status)
        }
        Ok(Err(e)) => {
            tracing::error!("{who}: {handler}: cannot wait for the helper: {e}");
            drop(guard); // kills the group
            readers.abort();
            HandlerOutcome::SpawnFailed(e.to_string())
        }
        Err(_) => {
            tracing::warn!(
                "{who}: helper command: {DRBD_HELPER} {handler} still running after {} ms; \
                 killing it",
                timeout.as_millis()
            );
            if let Some(pgid) = guard.0.take() {
                kill_group(pgid);
            }
            let status = tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .ok()
                .and_then(Result::ok);
            // A process that left the group (setsid) may still hold the pipes; do not wait on it.
            if tokio::time::timeout(KILL_GRACE, &mut readers)
                .await
                .is_err()
            {
                readers.abort();
            }
            log_exit(&who, handler, status);
            HandlerOutcome::Timeout
        }
    }
}

/// A node of the resource, as the helper environment describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeInfo {
    id: NodeId,
    name: String,
    /// Where the node listens (peers only).
    address: Option<IpAddr>,
    /// Where this node listens toward it (peers only).
    local_address: Option<IpAddr>,
}

/// Everything a resource's handler calls need, owned by its driver.
#[derive(Clone, Debug)]
pub struct HandlerRunner {
    resource: String,
    handlers: BTreeMap<String, String>,
    config_file: String,
    me: NodeInfo,
    peers: Vec<NodeInfo>,
    minor: Option<u32>,
    backing_dev: Option<String>,
    timeout: Duration,
    extra_env: Vec<(String, String)>,
}

impl HandlerRunner {
    /// The runner for `spec`, with `timeout` per call (the daemon passes [`handler_timeout`]).
    ///
    /// Besides DRBD's variables the handler gets `UDRBD_NODE` and `UDRBD_CONFIG`, so a handler
    /// that runs `drbdadm` (as DRBD's scripts do) resolves the same host from the same file;
    /// [`HandlerRunner::with_env`] adds more (the daemon's `UDRBD_RUN_DIR`).
    pub fn new(spec: &ResourceSpec, timeout: Duration) -> HandlerRunner {
        let mut extra_env = vec![("UDRBD_NODE".to_string(), spec.node_name.clone())];
        if !spec.config_file.is_empty() {
            extra_env.push(("UDRBD_CONFIG".to_string(), spec.config_file.clone()));
        }
        HandlerRunner {
            resource: spec.name.clone(),
            handlers: spec.handlers.clone(),
            config_file: spec.config_file.clone(),
            me: NodeInfo {
                id: NodeId(spec.node_id),
                name: spec.node_name.clone(),
                address: None,
                local_address: None,
            },
            peers: spec
                .peers
                .iter()
                .map(|p| NodeInfo {
                    id: NodeId(p.node_id),
                    name: p.name.clone(),
                    address: p.address.map(|a| a.ip()),
                    local_address: p.local_address.map(|a| a.ip()),
                })
                .collect(),
            minor: spec.minor,
            backing_dev: spec.disk.clone(),
            timeout,
            extra_env,
        }
    }

    /// Adds (or replaces) a variable every call of this runner gets.
    pub fn with_env(mut self, key: &str, value: impl Into<String>) -> HandlerRunner {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_string(), value.into()));
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether `handlers { }` defines `handler`.
    pub fn is_configured(&self, handler: &str) -> bool {
        self.handlers.contains_key(handler)
    }

    /// The environment of a call of `handler`, about `peer` if it concerns one.
    ///
    /// `cstate` is the connection state's name (DRBD sets `DRBD_CSTATE` for connection events
    /// only). `up_to_date_nodes` is exported only to fence handlers (`fence-peer`,
    /// `unfence-peer`), as DRBD does; compute it as DRBD does: bit N set when node N's disk is
    /// UpToDate.
    pub fn env(
        &self,
        handler: &str,
        peer: Option<NodeId>,
        cstate: Option<&str>,
        up_to_date_nodes: u64,
    ) -> HandlerEnv {
        let mut env = HandlerEnv::new(&self.resource)
            .conf(&self.config_file)
            .my_node_id(self.me.id);
        for (k, v) in &self.extra_env {
            env = env.set(k, v.clone());
        }
        if let Some(m) = self.minor {
            env = env.minor(m);
        }
        if let Some(d) = &self.backing_dev {
            env = env.backing_dev(d);
        }
        for n in std::iter::once(&self.me).chain(&self.peers) {
            env = env.node(n.id, &n.name);
        }
        if let Some(p) = peer.and_then(|id| self.peers.iter().find(|p| p.id == id)) {
            env = env.peer(p.id, &p.name);
            if let Some(a) = p.local_address {
                env = env.my_address(a);
            }
            if let Some(a) = p.address {
                env = env.peer_address(a);
            }
        } else if let Some(id) = peer {
            // Not a configured peer (cannot happen from the engine): still say which one.
            env = env.set("DRBD_PEER_NODE_ID", id.0.to_string());
        }
        if let Some(c) = cstate {
            env = env.cstate(c);
        }
        if handler.contains("fence") {
            env = env.up_to_date_nodes(up_to_date_nodes);
        }
        env
    }

    /// The call of `handler`, or None when the config does not define it.
    pub fn call(
        &self,
        handler: &str,
        peer: Option<NodeId>,
        cstate: Option<&str>,
        up_to_date_nodes: u64,
    ) -> Option<HandlerCall> {
        let command = self.handlers.get(handler)?;
        Some(HandlerCall {
            resource: self.resource.clone(),
            handler: handler.to_string(),
            peer: peer
                .and_then(|id| self.peers.iter().find(|p| p.id == id))
                .map(|p| p.name.clone()),
            command: command.clone(),
            env: self.env(handler, peer, cstate, up_to_date_nodes),
        })
    }

    /// Starts `handler` on the current tokio runtime; the task's result is the outcome
    /// ([`HandlerOutcome::NotConfigured`] at once when the config has no such handler), for the
    /// driver to hand back to the engine.
    pub fn spawn(
        &self,
        handler: &str,
        peer: Option<NodeId>,
        cstate: Option<&str>,
        up_to_date_nodes: u64,
    ) -> JoinHandle<HandlerOutcome> {
        let timeout = self.timeout;
        match self.call(handler, peer, cstate, up_to_date_nodes) {
            Some(call) => tokio::spawn(run_handler(call, timeout)),
            None => tokio::spawn(async { HandlerOutcome::NotConfigured }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NetOptions, PeerDeviceOptions};
    use crate::ctl::proto::PeerSpec;
    use crate::types::MetaDisk;
    use std::path::{Path, PathBuf};

    fn spec(handlers: &[(&str, &str)]) -> ResourceSpec {
        let peer = |name: &str, id: u8, addr: &str, local: &str| PeerSpec {
            name: name.into(),
            node_id: id,
            address: Some(addr.parse().expect("addr")),
            local_address: Some(local.parse().expect("addr")),
            paths: Vec::new(),
            net: NetOptions::default(),
            sync: PeerDeviceOptions::default(),
            diskless: false,
        };
        ResourceSpec {
            name: "r0".into(),
            node_name: "alice".into(),
            node_id: 0,
            minor: Some(7),
            device: None,
            by_res: "drbd/by-res/r0".into(),
            disk: Some("/dev/vg/r0".into()),
            meta_disk: MetaDisk::Internal,
            peers: vec![
                peer("bob", 1, "10.0.0.2:7789", "10.0.0.1:7789"),
                peer("carol", 2, "[fd00::3]:7790", "[fd00::1]:7790"),
            ],
            auto_promote: true,
            auto_promote_timeout: 20,
            fencing_dont_care: true,
            nbd_listen: None,
            nbd_access: Default::default(),
            on_io_error: crate::config::OnIoError::Detach,
            disk_flushes: true,
            md_flushes: true,
            disk_size: 0,
            handlers: handlers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config_file: "/etc/drbd.d/r0.res".into(),
        }
    }

    fn call(command: &str) -> HandlerCall {
        HandlerCall {
            resource: "r0".into(),
            handler: "fence-peer".into(),
            peer: None,
            command: command.into(),
            env: HandlerEnv::new("r0"),
        }
    }

    fn read_env(path: &Path) -> BTreeMap<String, String> {
        std::fs::read_to_string(path)
            .expect("env dump")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sh_quote(p: &Path) -> String {
        format!("'{}'", p.display())
    }

    #[test]
    fn up_to_date_nodes_format_is_drbds() {
        assert_eq!(format_up_to_date_nodes(0b10), "0x00000002");
        assert_eq!(format_up_to_date_nodes(0xab), "0x000000AB");
        assert_eq!(format_up_to_date_nodes(u64::MAX), "0xFFFFFFFFFFFFFFFF");
    }

    #[test]
    fn timeout_env_parsing() {
        assert_eq!(parse_timeout_ms("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout_ms(" 20 "), Some(Duration::from_millis(20)));
        assert_eq!(parse_timeout_ms("0"), None);
        assert_eq!(parse_timeout_ms("1s"), None);
    }

    #[tokio::test]
    async fn fence_peer_sees_drbds_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("env.out");
        let s = spec(&[("fence-peer", &format!("env > {}", sh_quote(&out)))]);
        let runner =
            HandlerRunner::new(&s, Duration::from_secs(10)).with_env("UDRBD_RUN_DIR", "/run/x");
        let r = runner
            .spawn("fence-peer", Some(NodeId(2)), Some("Connecting"), 0b011)
            .await
            .expect("join");
        assert_eq!(r, HandlerOutcome::Exited(0));
        let env = read_env(&out);
        let want = [
            ("DRBD_RESOURCE", "r0"),
            ("DRBD_MINOR", "7"),
            ("DRBD_MINOR_0", "7"),
            ("DRBD_VOLUME", "0"),
            ("DRBD_MY_NODE_ID", "0"),
            ("DRBD_PEER_NODE_ID", "2"),
            ("DRBD_NODE_ID_0", "alice"),
            ("DRBD_NODE_ID_1", "bob"),
            ("DRBD_NODE_ID_2", "carol"),
            ("DRBD_PEER", "carol"),
            ("DRBD_PEERS", "carol"),
            (
                "DRBD_PEER_ADDRESS",
                "fd00:0000:0000:0000:0000:0000:0000:0003",
            ),
            ("DRBD_PEER_AF", "ipv6"),
            ("DRBD_MY_ADDRESS", "fd00:0000:0000:0000:0000:0000:0000:0001"),
            ("DRBD_MY_AF", "ipv6"),
            ("DRBD_BACKING_DEV", "/dev/vg/r0"),
            ("DRBD_BACKING_DEV_0", "/dev/vg/r0"),
            ("DRBD_LL_DISK", "/dev/vg/r0"),
            ("DRBD_CONF", "/etc/drbd.d/r0.res"),
            ("DRBD_CSTATE", "Connecting"),
            ("UP_TO_DATE_NODES", "0x00000003"),
            ("UDRBD_NODE", "alice"),
            ("UDRBD_CONFIG", "/etc/drbd.d/r0.res"),
            ("UDRBD_RUN_DIR", "/run/x"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        // Nothing DRBD-ish beyond what we set (no stale variables from the daemon's env).
        for k in env.keys().filter(|k| k.starts_with("DRBD_")) {
            assert!(want.iter().any(|(w, _)| w == k), "unexpected {k}");
        }
    }

    #[test]
    fn ipv4_peer_and_resource_level_calls() {
        let s = spec(&[("split-brain", "true"), ("local-io-error", "true")]);
        let runner = HandlerRunner::new(&s, Duration::from_secs(1));
        let env = runner.env("split-brain", Some(NodeId(1)), Some("StandAlone"), 0b1);
        assert_eq!(env.get("DRBD_PEER_ADDRESS"), Some("10.0.0.2"));
        assert_eq!(env.get("DRBD_PEER_AF"), Some("ipv4"));
        assert_eq!(env.get("DRBD_MY_ADDRESS"), Some("10.0.0.1"));
        assert_eq!(env.get("DRBD_MY_AF"), Some("ipv4"));
        assert_eq!(env.get("DRBD_PEER"), Some("bob"));
        // DRBD exports the mask to fence handlers only.
        assert_eq!(env.get("UP_TO_DATE_NODES"), None);
        // A device event: no peer, no connection state.
        let env = runner.env("local-io-error", None, None, 0);
        for k in [
            "DRBD_PEER",
            "DRBD_PEER_NODE_ID",
            "DRBD_PEER_ADDRESS",
            "DRBD_MY_ADDRESS",
        ] {
            assert_eq!(env.get(k), None, "{k}");
        }
        assert_eq!(env.get("DRBD_CSTATE"), None);
        assert_eq!(env.get("DRBD_NODE_ID_2"), Some("carol"));
        let c = runner
            .call("split-brain", Some(NodeId(1)), None, 0)
            .expect("configured");
        assert_eq!(c.peer.as_deref(), Some("bob"));
        assert!(runner.call("fence-peer", None, None, 0).is_none());
    }

    #[test]
    fn handlers_come_from_the_config() {
        let text = r#"
resource r0 {
  handlers {
    outdate-peer "/usr/lib/drbd/crm-fence-peer.9.sh";
    unfence-peer "/usr/lib/drbd/crm-unfence-peer.9.sh";
    split-brain "/usr/lib/drbd/notify-split-brain.sh root";
    pri-lost-after-sb "echo o > /proc/sysrq-trigger";
  }
  device minor 3; disk /dev/vg/r0; meta-disk internal;
  on alice { node-id 0; address 10.0.0.1:7789; }
  on bob   { node-id 1; address 10.0.0.2:7789; }
}"#;
        let cfg = crate::config::parse_str("/etc/drbd.d/r0.res", text).expect("parse");
        let me = crate::config::HostQuery {
            explicit: Some("alice"),
            hostname: "alice",
            is_local: &|_| false,
        };
        let r = crate::config::resolve(&cfg, "r0", &me).expect("resolve");
        let s = ResourceSpec::from_resolved(&r).expect("spec");
        assert_eq!(s.config_file, "/etc/drbd.d/r0.res");
        // `outdate-peer` is DRBD 8's name for fence-peer.
        assert_eq!(
            s.handlers.get("fence-peer").map(String::as_str),
            Some("/usr/lib/drbd/crm-fence-peer.9.sh")
        );
        assert_eq!(s.handlers.len(), 4);
        // A changed handler is not a different data path for a second `up`.
        let mut t = s.clone();
        t.handlers.clear();
        t.config_file = "r0.res".into();
        assert!(s.same_except_handlers(&t));
        t.minor = Some(4);
        assert!(!s.same_except_handlers(&t));

        let runner = HandlerRunner::new(&s, Duration::from_secs(1));
        let env = runner.env("fence-peer", Some(NodeId(1)), Some("Connecting"), 0b01);
        assert_eq!(env.get("DRBD_MINOR"), Some("3"));
        assert_eq!(env.get("DRBD_PEER"), Some("bob"));
        assert_eq!(env.get("DRBD_PEER_ADDRESS"), Some("10.0.0.2"));
        assert_eq!(env.get("DRBD_MY_ADDRESS"), Some("10.0.0.1"));
        assert_eq!(env.get("UP_TO_DATE_NODES"), Some("0x00000001"));
        assert_eq!(env.get("DRBD_CONF"), Some("/etc/drbd.d/r0.res"));
    }

    #[tokio::test]
    async fn exit_codes_come_back_exactly() {
        for code in 0..=7 {
            let r = run_handler(call(&format!("exit {code}")), Duration::from_secs(10)).await;
            assert_eq!(r, HandlerOutcome::Exited(code));
            assert_eq!(r.exit_code(), Some(code));
        }
    }

    #[tokio::test]
    async fn signal_is_reported() {
        let r = run_handler(call("kill -TERM $$"), Duration::from_secs(10)).await;
        assert_eq!(r, HandlerOutcome::Signaled(libc::SIGTERM));
    }

    #[tokio::test]
    async fn missing_binary_is_127_not_a_hang() {
        let t = std::time::Instant::now();
        let r = run_handler(call("/nonexistent/udrbd-handler"), Duration::from_secs(10)).await;
        assert_eq!(r, HandlerOutcome::Exited(127));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn unconfigured_handler() {
        let runner = HandlerRunner::new(&spec(&[]), Duration::from_secs(1));
        assert!(!runner.is_configured("fence-peer"));
        let r = runner
            .spawn("fence-peer", Some(NodeId(1)), None, 0)
            .await
            .expect("join");
        assert_eq!(r, HandlerOutcome::NotConfigured);
    }

    /// Processes (not zombies) whose process group is `pgid`.
    fn group_members(pgid: i32) -> Vec<i32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid) {
                out.push(pid);
            }
        }
        out
    }

    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(s) => s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .is_some_and(|st| st != "Z"),
        }
    }

    fn read_pid(p: &PathBuf) -> i32 {
        std::fs::read_to_string(p)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    /// Waits until `done` or the deadline plus slack: a SIGKILLed process closes its files
    /// (our pipes reach EOF) a moment before it turns into a zombie.
    async fn settle(start: std::time::Instant, done: impl Fn() -> bool) {
        while !done() && start.elapsed() < T + SLACK {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    const T: Duration = Duration::from_millis(800);
    const SLACK: Duration = Duration::from_millis(1200);

    #[tokio::test]
    async fn plain_sleep_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidf = dir.path().join("pid");
        let t = std::time::Instant::now();
        let r = run_handler(
            call(&format!("echo $$ > {}; sleep 600", sh_quote(&pidf))),
            T,
        )
        .await;
        assert_eq!(r, HandlerOutcome::Timeout);
        assert!(t.elapsed() < T + SLACK, "took {:?}", t.elapsed());
        let sh = read_pid(&pidf);
        settle(t, || !alive(sh) && group_members(sh).is_empty()).await;
        assert!(!alive(sh));
        assert_eq!(group_members(sh), Vec::<i32>::new());
    }

    #[tokio::test]
    async fn background_child_waited_for_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidf = dir.path().join("pid");
        let t = std::time::Instant::now();
        let r = run_handler(
            call(&format!("sleep 600 & echo $! > {}; wait", sh_quote(&pidf))),
            T,
        )
        .await;
        assert_eq!(r, HandlerOutcome::Timeout);
        assert!(t.elapsed() < T + SLACK, "took {:?}", t.elapsed());
        let child = read_pid(&pidf);
        settle(t, || !alive(child)).await;
        assert!(!alive(child), "still running after {:?}", t.elapsed());
    }

    #[tokio::test]
    async fn background_child_left_behind_holding_stdout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidf = dir.path().join("pid");
        let t = std::time::Instant::now();
        // The shell exits at once; its child keeps stdout open.
        let r = run_handler(
            call(&format!(
                "sleep 600 & echo $! > {}; exit 4",
                sh_quote(&pidf)
            )),
            T,
        )
        .await;
        assert_eq!(r, HandlerOutcome::Exited(4));
        assert!(
            t.elapsed() < T,
            "the exit code waited for the child: {:?}",
            t.elapsed()
        );
        let child = read_pid(&pidf);
        // Killed with its group at the deadline.
        settle(t, || !alive(child)).await;
        assert!(!alive(child), "still running after {:?}", t.elapsed());
    }
}
