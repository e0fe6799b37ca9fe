//! drbdsetup for udrbd: the commands scripts and Pacemaker call on DRBD's low-level tool
//! (`status`, `events2`, `down`), speaking to the daemon's control socket as drbdsetup speaks
//! to the kernel. It reads no configuration.

use clap::{Parser, Subcommand};
use drbdadm::commands::daemon::{Daemon, RunDirArg, StatusOpts, print_status};
use drbdadm::error::AdmError;
use drbdadm::events2;
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
    #[command(flatten)]
    run_dir: RunDirArg,

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
    Events2(events2::Args),
    /// What a resource runs, in drbdsetup's configuration layout: the options that differ
    /// from DRBD's defaults (after `drbdadm adjust`, the new ones).
    Show {
        /// A resource name; every resource when omitted (or `all`).
        resource: Option<String>,
        /// Print every option, the defaults marked `# default`.
        #[arg(long = "show-defaults")]
        show_defaults: bool,
        /// Print `shared-secret` in clear (hidden by default).
        #[arg(long = "show-secrets")]
        show_secrets: bool,
    },
    /// Take the resource down (what the Pacemaker agent tries when all else failed).
    Down { resource: String },
}

/// `all` means no filter, as in drbdsetup.
fn filter(resource: Option<String>) -> Option<String> {
    resource.filter(|r| r != "all")
}

fn run(cli: Cli) -> Result<(), AdmError> {
    let daemon = Daemon::new(&cli.run_dir.run_dir);
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
        Command::Events2(args) => events2::stream(&daemon, &args),
        Command::Show {
            resource,
            show_defaults,
            show_secrets,
        } => {
            let specs = daemon.show(filter(resource).as_deref())?;
            print!(
                "{}",
                drbdadm::commands::show::render(
                    &specs,
                    drbdadm::commands::show::ShowOpts {
                        show_defaults,
                        show_secrets,
                    },
                )
            );
            Ok(())
        }
        Command::Down { resource } => daemon.expect_ok(&Request::Down { resource }),
    }
}

fn main() -> ExitCode {
    // drbdsetup's usage errors exit 20, like its other failures.
    drbdadm::error::exit(Cli::try_parse().map(run), drbdadm::error::E_EXEC)
}
