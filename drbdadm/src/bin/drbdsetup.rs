//! drbdsetup for udrbd: the commands scripts and Pacemaker call on DRBD's low-level tool
//! (`status`, `events2`, `show`, `down`, `primary`, `secondary`, `detach`, `forget-peer`,
//! `role`, `cstate`, `dstate`, `get-gi`, `show-gi`, `wait-connect-resource`,
//! `wait-sync-resource`), speaking to the daemon's control socket as drbdsetup speaks to the
//! kernel. It reads no configuration.

use clap::{Parser, Subcommand};
use drbdadm::commands::daemon::{
    Daemon, Query, RunDirArg, StatusOpts, WaitFor, print_query, print_status, wait_resource,
};
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
    /// Promote the resource (`--force`: with data that is not known UpToDate).
    Primary {
        resource: String,
        #[arg(long)]
        force: bool,
    },
    /// Demote the resource.
    Secondary {
        resource: String,
        /// Demote although the device is in use: the users' I/O fails from then on.
        #[arg(long)]
        force: bool,
    },
    /// Detach the backing disk of a device.
    ///
    /// The device is named by its minor number, as drbdsetup takes it (or by the resource
    /// name); an unknown minor is "(127) Device minor not allocated", exit code 10.
    Detach {
        /// The device's minor (`device /dev/drbdN` or `minor N`), or the resource name.
        minor: String,
        /// Detach at once, without waiting for the requests at the disk: they fail locally
        /// (a write the peer has still succeeds), and the disk goes through Failed to Diskless
        /// as after an I/O error under `on-io-error detach`.
        #[arg(long)]
        force: bool,
    },
    /// Completely remove any reference to an unconnected peer from the meta data.
    ///
    /// Its bitmap UUID and flags go, and its bitmap is set all out of sync: the next
    /// connection to it resyncs everything. Refused with "(125) Device has a net-config (use
    /// disconnect first)", exit code 10, unless the connection is StandAlone.
    ForgetPeer {
        resource: String,
        /// The peer's `node-id`.
        peer_node_id: u32,
    },
    /// Show the data generation identifiers for a device on a particular connection.
    ///
    /// CURRENT:BITMAP:HIST1:HIST2 and 12 flags, as `drbdadm get-gi` prints them; `show-gi`
    /// explains each. "No such peer device" (exit 10) or "Device has no disk" (exit 1) when
    /// the daemon has none to show.
    GetGi {
        resource: String,
        /// The peer's `node-id`.
        peer_node_id: u32,
        /// The volume number (0: this build serves one volume per resource).
        volume: u32,
    },
    /// Show the data generation identifiers for a device on a particular connection, with
    /// explanations.
    ShowGi {
        resource: String,
        /// The peer's `node-id`.
        peer_node_id: u32,
        /// The volume number (0: this build serves one volume per resource).
        volume: u32,
    },
    /// The resource's role.
    Role { resource: String },
    /// The connection state of each peer (drbdsetup takes `RES PEER_NODE_ID`; the peer is
    /// optional here).
    Cstate {
        resource: String,
        peer_node_id: Option<u8>,
    },
    /// The local disk state, then each peer's (`UpToDate/UpToDate`).
    Dstate { resource: String },
    /// Wait until every connection of the resource is established.
    WaitConnectResource {
        resource: String,
        /// Seconds; 0 (the default) waits for ever. Exit code 5 on timeout.
        #[arg(long = "wfc-timeout", default_value_t = 0)]
        wfc_timeout: u64,
    },
    /// Wait until every connection is established and no resync remains.
    WaitSyncResource {
        resource: String,
        /// Seconds; 0 (the default) waits for ever. Exit code 5 on timeout.
        #[arg(long = "wfc-timeout", default_value_t = 0)]
        wfc_timeout: u64,
    },
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
        Command::Primary { resource, force } => {
            daemon.expect_ok(&Request::Primary { resource, force })
        }
        Command::Secondary { resource, force } => {
            daemon.expect_ok(&Request::Secondary { resource, force })
        }
        Command::Detach { minor, force } => {
            let resource = resource_of(&daemon, &minor)?;
            daemon.expect_ok(&Request::Detach { resource, force })
        }
        Command::ForgetPeer {
            resource,
            peer_node_id,
        } => daemon.expect_ok(&Request::ForgetPeer {
            resource,
            peer_node_id,
        }),
        Command::GetGi {
            resource,
            peer_node_id,
            volume,
        } => {
            print!("{}", daemon.gi(&resource, peer_node_id, volume)?.line());
            Ok(())
        }
        Command::ShowGi {
            resource,
            peer_node_id,
            volume,
        } => {
            print!("{}", daemon.gi(&resource, peer_node_id, volume)?.pretty());
            Ok(())
        }
        Command::Role { resource } => {
            print_query(&daemon.status(Some(&resource))?, Query::Role);
            Ok(())
        }
        Command::Cstate {
            resource,
            peer_node_id,
        } => {
            let mut views = daemon.status(Some(&resource))?;
            for v in &mut views {
                v.connections
                    .retain(|c| peer_node_id.is_none_or(|n| c.node_id == n));
            }
            print_query(&views, Query::CState);
            Ok(())
        }
        Command::Dstate { resource } => {
            print_query(&daemon.status(Some(&resource))?, Query::DState);
            Ok(())
        }
        Command::WaitConnectResource {
            resource,
            wfc_timeout,
        } => wait_resource(&daemon, &resource, WaitFor::Connect, wfc_timeout),
        Command::WaitSyncResource {
            resource,
            wfc_timeout,
        } => wait_resource(&daemon, &resource, WaitFor::Sync, wfc_timeout),
    }
}

/// The resource of a device named by minor (as drbdsetup's minor commands take it), or a
/// resource name as is. An unknown minor: the kernel's `ERR_MINOR_INVALID` with its info
/// text (drbd_nl.c `drbd_adm_prepare()`).
fn resource_of(daemon: &Daemon, minor: &str) -> Result<String, AdmError> {
    let Ok(n) = minor.parse::<u32>() else {
        return Ok(minor.to_string());
    };
    daemon
        .status(None)?
        .into_iter()
        .find(|v| v.volumes.iter().any(|d| d.minor == Some(n)))
        .map(|v| v.name)
        .ok_or_else(|| {
            AdmError::new(
                10,
                format!(
                    "{minor}: Failure: (127) Device minor not allocated\nadditional info from \
                     kernel:\nunknown minor"
                ),
            )
        })
}

fn main() -> ExitCode {
    // drbdsetup's usage errors exit 20, like its other failures.
    drbdadm::error::exit(Cli::try_parse().map(run), drbdadm::error::E_EXEC)
}
