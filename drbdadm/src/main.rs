//! drbdadm for udrbd: the DRBD administration tool's commands, syntax and exit codes.

use clap::{CommandFactory, Parser};
use drbdadm::cli::{Cli, Command, Targets};
use drbdadm::commands::daemon::{Daemon, Query, StateCmd, StatusOpts, WaitFor};
use drbdadm::commands::meta::{MetaArgs, MetaOp};
use drbdadm::commands::sh::Sh;
use drbdadm::error::{AdmError, E_USAGE};
use drbdadm::{argv, commands, context};
use std::process::ExitCode;

/// What `drbdadm --version` prints: the machine-readable form the Pacemaker agent `eval`s.
fn print_version() {
    let v = env!("CARGO_PKG_VERSION");
    println!("DRBDADM_BUILDTAG=udrbd-{v}");
    println!("DRBDADM_API_VERSION=2");
    println!("DRBD_KERNEL_VERSION_CODE=0x090200");
    println!("DRBD_KERNEL_VERSION=9.2.0");
    println!("DRBDADM_VERSION_CODE=0x091600");
    println!("DRBDADM_VERSION=9.22.0");
    println!("UDRBD_VERSION={v}");
}

fn run(cli: Cli) -> Result<(), AdmError> {
    if cli.version {
        print_version();
        return Ok(());
    }
    let Some(command) = cli.command else {
        let _ = Cli::command().print_help();
        return Err(AdmError::new(E_USAGE, "\nno command given"));
    };
    let cfg = context::load_config(&cli.config)?;
    let node = cli.node.as_deref();
    let daemon = Daemon::new(&cli.run_dir.run_dir);
    let state = |targets: &Targets, cmd| {
        commands::daemon::run_state(&cfg, node, &daemon, &targets.targets, cmd, cli.dry_run)
    };
    let meta = |targets: &[String], op, force, max_peers| {
        // Reading is allowed while the daemon has the disk (drbdmeta's dump-md and get-gi are),
        // with drbdmeta's warning; writing is not.
        let reads = matches!(op, MetaOp::GetGi | MetaOp::ShowGi | MetaOp::Dump);
        if !reads {
            refuse_while_up(&cfg, &daemon, targets)?;
        }
        let args = MetaArgs {
            force,
            max_peers,
            dry_run: cli.dry_run,
        };
        commands::meta::run(&cfg, node, targets, op, &args)?;
        if op == MetaOp::Dump {
            for t in context::expand_targets(&cfg, targets)? {
                if daemon.is_attached(&t.resource) {
                    eprintln!(
                        "# Output might be stale, since minor {} is attached",
                        minor_of(&cfg, &t.resource)
                    );
                }
            }
        }
        Ok(())
    };
    match &command {
        Command::Dump {
            targets,
            show_secrets,
        } => commands::dump::dump(&cfg, targets, *show_secrets),
        // Loading the configuration above already failed for an invalid one.
        Command::ShNop => Ok(()),
        Command::ShResource(t) => commands::sh::run(&cfg, node, &t.targets, Sh::Resource),
        Command::ShDev(t) => commands::sh::run(&cfg, node, &t.targets, Sh::Dev),
        Command::ShMinor(t) => commands::sh::run(&cfg, node, &t.targets, Sh::Minor),
        Command::ShLlDev(t) => commands::sh::run(&cfg, node, &t.targets, Sh::LlDev),
        Command::ShMdDev(t) => commands::sh::run(&cfg, node, &t.targets, Sh::MdDev),
        Command::ShMdIdx(t) => commands::sh::run(&cfg, node, &t.targets, Sh::MdIdx),
        Command::ShIp(t) => commands::sh::run(&cfg, node, &t.targets, Sh::Ip),
        Command::ShListConfigFile(t) => {
            commands::sh::run(&cfg, node, &t.targets, Sh::ListConfigFile)
        }
        Command::ShUdev(t) => commands::sh::run(&cfg, node, &t.targets, Sh::Udev),
        Command::ShResources => {
            commands::dump::sh_resources(&cfg);
            Ok(())
        }
        Command::CreateMd {
            force,
            max_peers,
            targets,
        } => meta(&targets.targets, MetaOp::Create, *force, *max_peers),
        Command::DumpMd { force, targets } => meta(&targets.targets, MetaOp::Dump, *force, None),
        Command::WipeMd { force, targets } => meta(&targets.targets, MetaOp::Wipe, *force, None),
        // As drbdadm's adm_setup_and_meta(): drbdsetup's (the daemon's) values while the disk
        // is attached, so nothing stale is printed; drbdmeta's (the metadata's) otherwise.
        Command::GetGi { targets } => gi(&cfg, node, &daemon, targets, false, |w| {
            meta(w, MetaOp::GetGi, false, None)
        }),
        Command::CheckResize { targets } => {
            // The daemon checks at attach and records then: nothing to do for an attached disk.
            let down: Vec<String> = context::expand_targets(&cfg, &targets.targets)?
                .into_iter()
                .filter(|t| !daemon.is_attached(&t.resource))
                .map(|t| t.resource)
                .collect();
            if down.is_empty() {
                Ok(())
            } else {
                meta(&down, MetaOp::CheckResize, false, None)
            }
        }
        Command::ShowGi { targets } => gi(&cfg, node, &daemon, targets, true, |w| {
            meta(w, MetaOp::ShowGi, false, None)
        }),
        Command::Up { targets } => state(targets, StateCmd::Up),
        Command::Resize {
            assume_clean,
            size,
            assume_peer_has_space,
            targets,
        } => {
            let size_bytes = match size {
                // drbdsetup's unit: sectors, or a k/M/G/T suffix.
                Some(s) => Some(
                    udrbd::config::parse_number(s, udrbd::config::Unit::Sectors)
                        .map_err(|_| {
                            AdmError::new(
                                E_USAGE,
                                format!(
                                    "resize --size={s}: not a size (sectors, or a number with \
                                     k, M, G or T: --size=10G)"
                                ),
                            )
                        })?
                        .checked_mul(udrbd::types::SECTOR_SIZE)
                        .ok_or_else(|| AdmError::new(E_USAGE, format!("--size={s}: too large")))?,
                ),
                None => None,
            };
            if *assume_peer_has_space {
                return Err(AdmError::new(
                    E_USAGE,
                    "resize --assume-peer-has-space: udrbd grows only with both disks known; \
                     run resize while connected (or up the peer: the size grows when it connects)",
                ));
            }
            state(
                targets,
                StateCmd::Resize {
                    assume_clean: *assume_clean,
                    size_bytes,
                },
            )
        }
        Command::Adjust { targets } => commands::daemon::adjust(
            &cfg,
            node,
            &daemon,
            &targets.targets,
            cli.dry_run,
            cli.verbose,
        ),
        Command::Down { targets } => state(targets, StateCmd::Down),
        Command::Attach { targets } => state(targets, StateCmd::Attach),
        Command::Detach { force, targets } => state(targets, StateCmd::Detach { force: *force }),
        // As drbdadm's adm_forget_peer(): drbdsetup's forget-peer on a resource that is up,
        // drbdmeta's on one whose metadata the daemon does not hold.
        Command::ForgetPeer { targets } => {
            for t in context::expand_targets(&cfg, &targets.targets)? {
                let res = context::resolve(&cfg, &t.resource, node)?;
                for p in commands::meta::named_peers(&res, &t)? {
                    if resource_up(&cfg, &daemon, &t.resource)? {
                        commands::daemon::forget_peer(
                            &daemon,
                            &t.resource,
                            u32::from(p.node_id.0),
                            cli.dry_run,
                        )?;
                        if daemon.is_attached(&t.resource) {
                            continue;
                        }
                    }
                    let word = context::Target {
                        peer: Some(p.name.clone()),
                        ..t.clone()
                    }
                    .word();
                    meta(&[word], MetaOp::ForgetPeer, false, None)?;
                }
            }
            Ok(())
        }
        Command::Primary { force, targets } => state(targets, StateCmd::Primary { force: *force }),
        Command::Secondary { force, targets } => {
            state(targets, StateCmd::Secondary { force: *force })
        }
        Command::NewCurrentUuid {
            clear_bitmap,
            targets,
        } => state(
            targets,
            StateCmd::NewCurrentUuid {
                clear_bitmap: *clear_bitmap,
            },
        ),
        Command::Connect {
            discard_my_data,
            tentative,
            targets,
        } => state(
            targets,
            StateCmd::Connect {
                discard_my_data: *discard_my_data,
                tentative: *tentative,
            },
        ),
        Command::Disconnect { force, targets } => {
            state(targets, StateCmd::Disconnect { force: *force })
        }
        Command::Invalidate {
            reset_bitmap,
            targets,
        } => state(
            targets,
            StateCmd::Invalidate {
                reset_bitmap: *reset_bitmap,
            },
        ),
        Command::InvalidateRemote {
            reset_bitmap,
            targets,
        } => state(
            targets,
            StateCmd::InvalidateRemote {
                reset_bitmap: *reset_bitmap,
            },
        ),
        Command::Verify {
            start,
            stop,
            targets,
        } => state(
            targets,
            StateCmd::Verify {
                start: *start,
                stop: *stop,
            },
        ),
        Command::PauseSync { targets } => state(targets, StateCmd::PauseSync),
        Command::ResumeSync { targets } => state(targets, StateCmd::ResumeSync),
        // A resource that is down: its metadata, as drbdadm falls back to drbdmeta.
        Command::Outdate { targets } => {
            for word in &targets.targets {
                if resource_up(&cfg, &daemon, word)? {
                    state(&single(word), StateCmd::Outdate)?;
                } else {
                    meta(std::slice::from_ref(word), MetaOp::Outdate, false, None)?;
                }
            }
            Ok(())
        }
        Command::ResumeIo { targets } => state(targets, StateCmd::ResumeIo),
        Command::SuspendIo { targets } => state(targets, StateCmd::SuspendIo),
        Command::Role { targets } => {
            commands::daemon::query(&cfg, &daemon, &targets.targets, Query::Role)
        }
        Command::Cstate { targets } => {
            commands::daemon::query(&cfg, &daemon, &targets.targets, Query::CState)
        }
        Command::Dstate { targets } => {
            for word in &targets.targets {
                if resource_up(&cfg, &daemon, word)? {
                    commands::daemon::query(
                        &cfg,
                        &daemon,
                        std::slice::from_ref(word),
                        Query::DState,
                    )?;
                } else {
                    meta(std::slice::from_ref(word), MetaOp::DState, false, None)?;
                }
            }
            Ok(())
        }
        Command::Status {
            statistics,
            json,
            targets,
        } => commands::daemon::status_cmd(
            &cfg,
            &daemon,
            targets,
            StatusOpts {
                verbose: cli.verbose,
                statistics: *statistics,
                json: *json,
            },
        ),
        Command::WaitConnect {
            wfc_timeout,
            targets,
        } => commands::daemon::wait(
            &cfg,
            node,
            &daemon,
            &targets.targets,
            WaitFor::Connect,
            *wfc_timeout,
        ),
        Command::Events2(args) => drbdadm::events2::stream(&daemon, args),
        Command::WaitSync {
            wfc_timeout,
            targets,
        } => commands::daemon::wait(
            &cfg,
            node,
            &daemon,
            &targets.targets,
            WaitFor::Sync,
            *wfc_timeout,
        ),
    }
}

/// `get-gi` and `show-gi` (`show`): for each operand, the daemon's identifiers while it has
/// the disk attached (drbdsetup's, without drbdmeta's size lines), else what `offline` prints
/// from the metadata.
fn gi(
    cfg: &udrbd::config::Config,
    node: Option<&str>,
    daemon: &Daemon,
    targets: &Targets,
    show: bool,
    offline: impl Fn(&[String]) -> Result<(), AdmError>,
) -> Result<(), AdmError> {
    for t in context::expand_targets(cfg, &targets.targets)? {
        let res = context::resolve(cfg, &t.resource, node)?;
        let peer = match commands::meta::pick_peer(&res, &t)? {
            Some(id) => Some(id),
            None => res.peers.first().map(|p| p.node_id),
        };
        let Some(peer) = peer.filter(|_| daemon.is_attached(&t.resource)) else {
            offline(std::slice::from_ref(&t.word()))?;
            continue;
        };
        // The daemon serves the resource's one volume as volume 0.
        let gi = daemon.gi(&t.resource, u32::from(peer.0), 0)?;
        if show {
            print!("{}", gi.pretty());
        } else {
            print!("{}", gi.line());
        }
    }
    Ok(())
}

/// Whether the daemon has every resource `word` names up (false also when no daemon runs).
fn resource_up(cfg: &udrbd::config::Config, daemon: &Daemon, word: &str) -> Result<bool, AdmError> {
    let targets = context::expand_targets(cfg, std::slice::from_ref(&word.to_string()))?;
    Ok(targets.iter().all(|t| {
        daemon
            .status(Some(&t.resource))
            .is_ok_and(|v| !v.is_empty())
    }))
}

/// Operands of just `word`.
fn single(word: &str) -> Targets {
    Targets {
        targets: vec![word.to_string()],
    }
}

/// The resource's first minor as the config writes it (`device minor N`), else its name.
fn minor_of(cfg: &udrbd::config::Config, resource: &str) -> String {
    cfg.resource(resource)
        .and_then(|r| r.volumes.iter().find_map(|v| v.device.as_ref()))
        .map_or_else(|| resource.to_string(), |d| d.minor.to_string())
}

/// drbdmeta refuses to touch the metadata of a device that is attached ("Device '0' is
/// configured!", exit code 20): the daemon owns it then.
fn refuse_while_up(
    cfg: &udrbd::config::Config,
    daemon: &Daemon,
    targets: &[String],
) -> Result<(), AdmError> {
    for t in context::expand_targets(cfg, targets)? {
        if daemon.is_attached(&t.resource) {
            return Err(AdmError::new(
                20,
                format!(
                    "Device '{}' is configured! Run `drbdadm down {}` (or `detach`) first.",
                    t.resource, t.resource
                ),
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let normalised = argv::normalise(args);
    drbdadm::error::exit(
        Cli::try_parse_from(normalised.to_clap_args("drbdadm")).map(run),
        E_USAGE,
    )
}
