//! The commands that talk to the running daemon (`up`, `primary`, `status`, ...), as drbdadm
//! talks to the kernel through drbdsetup. The daemon answers in drbdsetup's words and exit codes;
//! this module resolves the configuration, sends the request, and renders the answers.

use super::status;
use crate::context::{expand_targets, resolve};
use crate::error::{AdmError, E_EXEC};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use udrbd::config::Config;
use udrbd::ctl::client::call;
use udrbd::ctl::{Request, ResourceView, Response};
use udrbd::repl::{ConnState, ReplState};

/// drbdsetup's exit code when a wait-* command times out.
const E_TIMEOUT: i32 = 5;

/// `--run-dir DIR`, the global option of drbdadm and drbdsetup that finds the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct RunDirArg {
    /// Directory of the daemon's control socket (`udrbd --run-dir`).
    #[arg(
        long = "run-dir",
        global = true,
        env = "UDRBD_RUN_DIR",
        value_name = "DIR",
        default_value = "/run/udrbd"
    )]
    pub run_dir: PathBuf,
}

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub socket: PathBuf,
}

impl Daemon {
    pub fn new(run_dir: &Path) -> Daemon {
        Daemon {
            socket: run_dir.join("ctl.sock"),
        }
    }

    fn call(&self, req: &Request) -> Result<Response, AdmError> {
        Ok(call(&self.socket, req)?)
    }

    /// Sends `req`; an error answer becomes the command's error.
    pub fn expect_ok(&self, req: &Request) -> Result<(), AdmError> {
        match self.call(req)? {
            Response::Ok | Response::Adjusted { .. } => Ok(()),
            Response::Notice { message } => {
                eprintln!("{message}");
                Ok(())
            }
            Response::Error { code, message } => Err(AdmError::new(code, message)),
            Response::Status { .. } | Response::Show { .. } | Response::Gi { .. } => {
                Err(AdmError::new(
                    E_EXEC,
                    "the daemon answered with data where an acknowledgement was expected",
                ))
            }
        }
    }

    /// The generation identifiers the daemon holds for one peer device (`drbdsetup get-gi`),
    /// or drbdsetup's words and exit code for why there are none.
    pub fn gi(
        &self,
        resource: &str,
        peer_node_id: u32,
        volume: u32,
    ) -> Result<udrbd::meta::text::Gi, AdmError> {
        match self.call(&Request::GetGi {
            resource: resource.to_string(),
            peer_node_id,
            volume,
        })? {
            Response::Gi { gi } => Ok(gi),
            Response::Error { code, message } => Err(AdmError::new(code, message)),
            _ => Err(AdmError::new(
                E_EXEC,
                "the daemon answered get-gi with something else than identifiers",
            )),
        }
    }

    /// What one resource runs, or all with `None` (`drbdsetup show`).
    pub fn show(&self, resource: Option<&str>) -> Result<Vec<udrbd::ctl::ResourceSpec>, AdmError> {
        match self.call(&Request::Show {
            resource: resource.map(str::to_string),
        })? {
            Response::Show { resources } => Ok(resources),
            Response::Error { code, message } => Err(AdmError::new(code, message)),
            _ => Ok(Vec::new()),
        }
    }

    /// The status of one resource, or of all with `None`.
    pub fn status(&self, resource: Option<&str>) -> Result<Vec<ResourceView>, AdmError> {
        match self.call(&Request::Status {
            resource: resource.map(str::to_string),
        })? {
            Response::Status { resources } => Ok(resources),
            Response::Error { code, message } => Err(AdmError::new(code, message)),
            Response::Ok
            | Response::Notice { .. }
            | Response::Adjusted { .. }
            | Response::Show { .. }
            | Response::Gi { .. } => Ok(Vec::new()),
        }
    }

    /// Whether the daemon has `resource` up with its disk attached (false also when no daemon
    /// runs): then the daemon owns the metadata.
    pub fn is_attached(&self, resource: &str) -> bool {
        self.status(Some(resource)).is_ok_and(|views| {
            views
                .iter()
                .flat_map(|v| v.volumes.iter())
                .any(|d| d.disk != udrbd::repl::DiskState::Diskless)
        })
    }
}

/// A state-changing command for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateCmd {
    Up,
    Down,
    Attach,
    Detach {
        force: bool,
    },
    Primary {
        force: bool,
    },
    Secondary {
        force: bool,
    },
    NewCurrentUuid {
        clear_bitmap: bool,
    },
    Connect {
        discard_my_data: bool,
        tentative: bool,
    },
    Disconnect {
        force: bool,
    },
    Invalidate {
        reset_bitmap: bool,
    },
    InvalidateRemote {
        reset_bitmap: bool,
    },
    Verify {
        start: u64,
        stop: Option<u64>,
    },
    PauseSync,
    ResumeSync,
    Outdate,
    ResumeIo,
    SuspendIo,
    Resize {
        assume_clean: bool,
        /// `--size` in bytes; None: the config's `disk { size }` (as drbdadm passes it).
        size_bytes: Option<u64>,
    },
}

impl StateCmd {
    /// The drbdsetup command DRBD's drbdadm runs for it (the last one, for `up`).
    fn drbdsetup_verb(self) -> &'static str {
        match self {
            StateCmd::Up => "attach",
            StateCmd::Down => "down",
            StateCmd::Attach => "attach",
            StateCmd::Detach { force: false } => "detach",
            StateCmd::Detach { force: true } => "detach --force",
            StateCmd::Primary { force: false } => "primary",
            StateCmd::Primary { force: true } => "primary --force",
            StateCmd::Secondary { force: false } => "secondary",
            StateCmd::Secondary { force: true } => "secondary --force",
            StateCmd::NewCurrentUuid { .. } => "new-current-uuid",
            StateCmd::Connect { .. } => "connect",
            StateCmd::Disconnect { force: false } => "disconnect",
            StateCmd::Disconnect { force: true } => "disconnect --force",
            StateCmd::Invalidate { .. } => "invalidate",
            StateCmd::InvalidateRemote { .. } => "invalidate-remote",
            StateCmd::Verify { .. } => "verify",
            StateCmd::PauseSync => "pause-sync",
            StateCmd::ResumeSync => "resume-sync",
            StateCmd::Outdate => "outdate",
            StateCmd::ResumeIo => "resume-io",
            StateCmd::SuspendIo => "suspend-io",
            StateCmd::Resize { .. } => "resize",
        }
    }
}

/// Runs `cmd` on every resource the operands name; reports each failure and returns the first.
pub fn run_state(
    cfg: &Config,
    node: Option<&str>,
    daemon: &Daemon,
    words: &[String],
    cmd: StateCmd,
    dry_run: bool,
) -> Result<(), AdmError> {
    let mut first_err = None;
    let targets = expand_targets(cfg, words)?;
    if cmd == StateCmd::Up {
        warn_no_effect(cfg, targets.iter().map(|t| t.resource.as_str()));
    }
    for t in targets {
        let name = t.resource.clone();
        let req = match cmd {
            StateCmd::Up => Request::Up {
                resource: Box::new(resolve(cfg, &name, node)?),
            },
            StateCmd::Down => Request::Down { resource: name },
            StateCmd::Attach => Request::Attach { resource: name },
            StateCmd::Detach { force } => Request::Detach {
                resource: name,
                force,
            },
            StateCmd::Primary { force } => Request::Primary {
                resource: name,
                force,
            },
            StateCmd::Secondary { force } => Request::Secondary {
                resource: name,
                force,
            },
            StateCmd::NewCurrentUuid { clear_bitmap } => Request::NewCurrentUuid {
                resource: name,
                clear_bitmap,
            },
            StateCmd::Connect {
                discard_my_data,
                tentative,
            } => Request::Connect {
                resource: name,
                discard_my_data,
                tentative,
            },
            StateCmd::Disconnect { force } => Request::Disconnect {
                resource: name,
                force,
            },
            StateCmd::Invalidate { reset_bitmap } => Request::Invalidate {
                resource: name,
                reset_bitmap,
            },
            StateCmd::InvalidateRemote { reset_bitmap } => Request::InvalidateRemote {
                resource: name,
                reset_bitmap,
            },
            StateCmd::Verify { start, stop } => Request::Verify {
                resource: name,
                start,
                stop,
            },
            StateCmd::PauseSync => Request::PauseSync { resource: name },
            StateCmd::ResumeSync => Request::ResumeSync { resource: name },
            StateCmd::Outdate => Request::Outdate { resource: name },
            StateCmd::ResumeIo => Request::ResumeIo { resource: name },
            StateCmd::SuspendIo => Request::SuspendIo { resource: name },
            StateCmd::Resize {
                assume_clean,
                size_bytes,
            } => Request::Resize {
                size_bytes: match size_bytes {
                    Some(b) => b,
                    None => {
                        let r = resolve(cfg, &name, node)?;
                        r.volumes.first().map_or(0, |v| v.disk_opts.size)
                            * udrbd::types::SECTOR_SIZE
                    }
                },
                resource: name,
                assume_clean,
            },
        };
        if dry_run {
            // What would be sent, one JSON line per request (drbdadm -d prints its drbdsetup calls).
            println!(
                "{}",
                serde_json::to_string(&req).unwrap_or_else(|e| format!("<unprintable: {e}>"))
            );
            continue;
        }
        if let Err(e) = daemon.expect_ok(&req) {
            eprintln!("{e}");
            if e.code >= 10 {
                // drbdadm's line after a drbdsetup call that failed (exit code 10 and up),
                // which how-tos and scripts quote.
                eprintln!(
                    "Command 'drbdsetup {} {}' terminated with exit code {}",
                    cmd.drbdsetup_verb(),
                    t.resource,
                    e.code
                );
            }
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        // Already printed; main prints the error again unless it is empty.
        Some(e) => Err(AdmError::new(e.code, String::new())),
        None => Ok(()),
    }
}

/// drbdadm's `forget-peer` on a resource that is up: drbdsetup's `forget-peer RES
/// PEER_NODE_ID`. A refusal is reported with the drbdsetup line, as for the other commands.
pub fn forget_peer(
    daemon: &Daemon,
    resource: &str,
    peer_node_id: u32,
    dry_run: bool,
) -> Result<(), AdmError> {
    let req = Request::ForgetPeer {
        resource: resource.to_string(),
        peer_node_id,
    };
    if dry_run {
        println!(
            "{}",
            serde_json::to_string(&req).unwrap_or_else(|e| format!("<unprintable: {e}>"))
        );
        return Ok(());
    }
    daemon.expect_ok(&req).map_err(|e| {
        eprintln!("{e}");
        if e.code >= 10 {
            eprintln!(
                "Command 'drbdsetup forget-peer {resource} {peer_node_id}' terminated with exit \
                 code {}",
                e.code
            );
        }
        AdmError::new(e.code, String::new())
    })
}

/// `drbdadm adjust RES|all`: each resource brought to its configuration by the daemon (up
/// when it is not). `dry_run` (`-d`) prints the drbdsetup commands that would run and
/// changes nothing; `verbose` prints those that ran.
pub fn adjust(
    cfg: &Config,
    node: Option<&str>,
    daemon: &Daemon,
    words: &[String],
    dry_run: bool,
    verbose: bool,
) -> Result<(), AdmError> {
    let mut first_err = None;
    let targets = expand_targets(cfg, words)?;
    warn_no_effect(cfg, targets.iter().map(|t| t.resource.as_str()));
    for t in targets {
        let req = Request::Adjust {
            resource: Box::new(resolve(cfg, &t.resource, node)?),
            dry_run,
        };
        match daemon.call(&req) {
            Ok(Response::Adjusted { steps, notes }) => {
                if dry_run || verbose {
                    for s in steps {
                        println!("{s}");
                    }
                }
                for n in notes {
                    eprintln!("{n}");
                }
            }
            Ok(Response::Notice { message }) => eprintln!("{message}"),
            Ok(
                Response::Ok
                | Response::Status { .. }
                | Response::Show { .. }
                | Response::Gi { .. },
            ) => {}
            Ok(Response::Error { code, message }) => {
                eprintln!("{message}");
                if code >= 10 {
                    eprintln!(
                        "Command 'drbdsetup adjust {}' terminated with exit code {code}",
                        t.resource
                    );
                }
                first_err.get_or_insert(AdmError::new(code, String::new()));
            }
            Err(e) => {
                eprintln!("{e}");
                first_err.get_or_insert(AdmError::new(e.code, String::new()));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Prints, once each, the options the resources (and `global`/`common`) set that udrbd
/// does not act on (see [`udrbd::config::effect`]).
fn warn_no_effect<'a>(cfg: &Config, resources: impl Iterator<Item = &'a str>) {
    let mut seen = std::collections::BTreeSet::new();
    for r in resources {
        for w in udrbd::config::effect::warnings(cfg, r) {
            if seen.insert(w.clone()) {
                eprintln!("{w}");
            }
        }
    }
}

/// Options of `status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusOpts {
    pub verbose: bool,
    pub statistics: bool,
    pub json: bool,
}

/// `drbdadm status [RES...]`: every resource that is up when no operand is given.
pub fn status_cmd(
    cfg: &Config,
    daemon: &Daemon,
    words: &[String],
    opts: StatusOpts,
) -> Result<(), AdmError> {
    let views = if words.is_empty() {
        daemon.status(None)?
    } else {
        let mut v = Vec::new();
        for t in expand_targets(cfg, words)? {
            v.extend(daemon.status(Some(&t.resource))?);
        }
        v
    };
    print_status(&views, opts);
    Ok(())
}

/// Prints `views` as `status` does (drbdadm's and drbdsetup's).
pub fn print_status(views: &[ResourceView], opts: StatusOpts) {
    if opts.json {
        println!("{}", status::render_json(views));
    } else if views.is_empty() {
        println!("# No currently configured DRBD found.");
    } else {
        use std::io::IsTerminal;
        let tty = std::io::stdout().is_terminal();
        print!(
            "{}",
            status::render_to(views, opts, crate::wrap::Wrap::for_stdout(), tty)
        );
    }
}

/// What `role`, `cstate` and `dstate` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    Role,
    CState,
    DState,
}

/// `drbdadm role|cstate|dstate RES...`.
pub fn query(cfg: &Config, daemon: &Daemon, words: &[String], q: Query) -> Result<(), AdmError> {
    for t in expand_targets(cfg, words)? {
        print_query(&daemon.status(Some(&t.resource))?, q);
    }
    Ok(())
}

/// Prints `role`, `cstate` or `dstate` of `views` (drbdadm's and drbdsetup's).
pub fn print_query(views: &[ResourceView], q: Query) {
    for v in views {
        match q {
            Query::Role => println!("{}", v.role),
            Query::CState => {
                for c in &v.connections {
                    println!("{}", c.connection);
                }
            }
            Query::DState => {
                let local = v.volumes.first().map(|d| d.disk.to_string());
                let mut parts = vec![local.unwrap_or_else(|| "Diskless".into())];
                parts.extend(v.connections.iter().map(|c| c.peer_disk.to_string()));
                println!("{}", parts.join("/"));
            }
        }
    }
}

/// What `wait-connect` and `wait-sync` wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    Connect,
    Sync,
}

/// `drbdadm wait-connect|wait-sync [--wfc-timeout S] RES...`: polls the daemon until every
/// connection of the resource is Connected (and, for wait-sync, no resync remains). A timeout of
/// 0 waits forever, as DRBD's `wfc-timeout 0`. The default is the resource's
/// `startup { wfc-timeout }`.
pub fn wait(
    cfg: &Config,
    node: Option<&str>,
    daemon: &Daemon,
    words: &[String],
    what: WaitFor,
    timeout_s: Option<u64>,
) -> Result<(), AdmError> {
    for t in expand_targets(cfg, words)? {
        let timeout = match timeout_s {
            Some(s) => s,
            None => u64::from(resolve(cfg, &t.resource, node)?.startup.wfc_timeout),
        };
        wait_resource(daemon, &t.resource, what, timeout)?;
    }
    Ok(())
}

/// Waits for `resource` (see [`wait`]); `timeout` seconds, 0 for ever.
pub fn wait_resource(
    daemon: &Daemon,
    resource: &str,
    what: WaitFor,
    timeout: u64,
) -> Result<(), AdmError> {
    let deadline = (timeout > 0).then(|| Instant::now() + Duration::from_secs(timeout));
    loop {
        let views = daemon.status(Some(resource))?;
        let done = views.iter().all(|v| {
            v.connections.iter().all(|c| {
                // Connected, and the handshake has decided (DRBD reports Connected only
                // after the sync handshake).
                c.connection == ConnState::Connected
                    && c.replication != ReplState::Off
                    && (what == WaitFor::Connect
                        || (c.out_of_sync_kib == 0
                            && !matches!(
                                c.replication,
                                ReplState::SyncSource
                                    | ReplState::SyncTarget
                                    | ReplState::WFBitMapS
                                    | ReplState::WFBitMapT
                                    | ReplState::StartingSyncS
                                    | ReplState::StartingSyncT
                                    | ReplState::PausedSyncS
                                    | ReplState::PausedSyncT
                            )))
            })
        });
        if done {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(AdmError::new(
                E_TIMEOUT,
                format!(
                    "{}: timed out after {timeout} s waiting for the peer{} (connections: {})",
                    resource,
                    if what == WaitFor::Sync {
                        " and the resync"
                    } else {
                        ""
                    },
                    views
                        .iter()
                        .flat_map(|v| v.connections.iter())
                        .map(|c| format!("{} {}", c.name, c.connection))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
