//! drbdsetup for udrbd: the commands scripts and Pacemaker call on DRBD's low-level tool
//! (`status`, `events2`, `down`), speaking to the daemon's control socket as drbdsetup speaks
//! to the kernel. It reads no configuration.

use clap::{Parser, Subcommand};
use drbdadm::commands::daemon::{Daemon, StatusOpts, print_status};
use drbdadm::error::AdmError;
use drbdadm::events2::{Opts, Tracker, timestamp};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use udrbd::ctl::client::{self, ClientError};
use udrbd::ctl::{Request, Response, StreamLine};

/// drbdsetup's exit code when it cannot talk to the kernel (here: the daemon).
const E_EXEC: i32 = 20;

/// `drbdsetup [--run-dir DIR] COMMAND ...`
#[derive(Debug, Parser)]
#[command(
    name = "drbdsetup",
    about = "Query and watch udrbd resources the way drbdsetup does for DRBD",
    disable_version_flag = true
)]
struct Cli {
    /// Directory of the daemon's control socket (`udrbd --run-dir`).
    #[arg(
        long = "run-dir",
        global = true,
        env = "UDRBD_RUN_DIR",
        value_name = "DIR",
        default_value = "/run/udrbd"
    )]
    run_dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The state of one resource or of all, in DRBD 9's layout.
    Status {
        /// A resource name; every resource when omitted (or `all`).
        resource: Option<String>,
        #[arg(short = 'v', long)]
        verbose: bool,
        #[arg(short = 's', long)]
        statistics: bool,
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// The state as `exists` lines, then (without --now) every change as it happens:
    /// `change`, `create`, `destroy`, `call helper`, `response helper`.
    Events2 {
        /// A resource name; every resource when omitted (or `all`).
        resource: Option<String>,
        /// Print the current state, then `exists -`, and exit.
        #[arg(long)]
        now: bool,
        /// Add DRBD's counters to each line (and show them change, once a second).
        #[arg(short = 's', long)]
        statistics: bool,
        /// Prefix each line with the local time (ISO 8601, microseconds).
        #[arg(short = 'T', long)]
        timestamps: bool,
    },
    /// Take the resource down (what the Pacemaker agent tries when all else failed).
    Down { resource: String },
}

/// `all` means no filter, as in drbdsetup.
fn filter(resource: Option<String>) -> Option<String> {
    resource.filter(|r| r != "all")
}

fn exec_error(e: ClientError) -> AdmError {
    AdmError::new(E_EXEC, e.to_string())
}

fn events2(
    daemon: &Daemon,
    resource: Option<String>,
    now: bool,
    opts: Opts,
    ts: bool,
) -> Result<(), AdmError> {
    let req = Request::Events {
        resource: filter(resource),
        statistics: opts.statistics,
    };
    let mut stream = client::events(&daemon.socket, &req).map_err(exec_error)?;
    let mut tracker = Tracker::new(opts);
    let stdout = std::io::stdout();
    loop {
        let ev = match stream.next_line().map_err(exec_error)? {
            Some(StreamLine::Event(ev)) => ev,
            Some(StreamLine::Response(Response::Error { code, message })) => {
                return Err(AdmError::new(code, message));
            }
            Some(StreamLine::Response(other)) => {
                return Err(AdmError::new(
                    E_EXEC,
                    format!("the daemon answered {other:?} to an event request"),
                ));
            }
            None => {
                return Err(AdmError::new(
                    E_EXEC,
                    "the udrbd daemon closed the event stream (it went away)",
                ));
            }
        };
        let initial = matches!(ev, udrbd::ctl::Event::Snapshot { initial: true, .. });
        let mut out = stdout.lock();
        for l in tracker.apply(ev) {
            let written = if ts {
                writeln!(out, "{}{l}", timestamp())
            } else {
                writeln!(out, "{l}")
            };
            // A reader that went away (a closed pipe) ends the stream quietly, as for any
            // filter-style tool.
            if written.is_err() {
                return Ok(());
            }
        }
        // Each event is flushed at once: readers such as the Pacemaker agent or drbd-reactor
        // act on lines as they come.
        if out.flush().is_err() || (now && initial) {
            return Ok(());
        }
    }
}

fn run(cli: Cli) -> Result<(), AdmError> {
    let daemon = Daemon::new(&cli.run_dir);
    match cli.command {
        Command::Status {
            resource,
            verbose,
            statistics,
            json,
        } => {
            let views = daemon.status(filter(resource).as_deref())?;
            print_status(
                &views,
                StatusOpts {
                    verbose,
                    statistics,
                    json,
                },
            );
            Ok(())
        }
        Command::Events2 {
            resource,
            now,
            statistics,
            timestamps,
        } => events2(&daemon, resource, now, Opts { statistics }, timestamps),
        Command::Down { resource } => daemon.expect_ok(&Request::Down { resource }),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // drbdsetup's usage errors exit 20, like its other failures.
            return if e.use_stderr() {
                ExitCode::from(E_EXEC as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("{e}");
            }
            ExitCode::from(u8::try_from(e.code).unwrap_or(u8::MAX))
        }
    }
}
