//! drbdsetup for udrbd: the commands scripts and Pacemaker call on DRBD's low-level tool
//! (`status`, `events2`, `down`), speaking to the daemon's control socket as drbdsetup speaks
//! to the kernel. It reads no configuration.

use clap::{Parser, Subcommand};
use drbdadm::commands::daemon::{Daemon, StatusOpts, print_status};
use drbdadm::error::AdmError;
use drbdadm::events2::{self, Opts};
use std::path::PathBuf;
use std::process::ExitCode;
use udrbd::ctl::Request;

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
        } => events2::stream(
            &daemon,
            filter(resource),
            now,
            Opts { statistics },
            timestamps,
        ),
        Command::Down { resource } => daemon.expect_ok(&Request::Down { resource }),
    }
}

fn main() -> ExitCode {
    // drbdsetup's usage errors exit 20, like its other failures.
    drbdadm::error::exit(Cli::try_parse().map(run), drbdadm::error::E_EXEC)
}
