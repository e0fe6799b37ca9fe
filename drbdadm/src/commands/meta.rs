//! The offline metadata commands: create-md, dump-md, wipe-md, get-gi, show-gi.
//!
//! They work on the backing device directly, like drbdmeta, so they need no daemon.

use crate::context::{Target, expand_targets, resolve};
use crate::error::{AdmError, E_CONFIG_INVALID, E_USAGE};
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use udrbd::config::{Config, Resolved};
use udrbd::disk::metadev::{self, CreateMdOptions, MetaDevError};
use udrbd::types::{MetaDisk, NodeId};

/// The options that reach the metadata commands from the command line.
#[derive(Debug, Clone, Default)]
pub struct MetaArgs {
    pub force: bool,
    pub max_peers: Option<u32>,
    pub dry_run: bool,
}

/// Which metadata operation to run on each selected volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaOp {
    Create,
    Dump,
    Wipe,
    GetGi,
    ShowGi,
    /// `dstate` of a resource that is down (drbdmeta's).
    DState,
    /// `outdate` of a resource that is down (drbdmeta's).
    Outdate,
    /// `check-resize`: move internal metadata a grown backing device left at its old end,
    /// and record the device's size (drbdmeta's check-resize).
    CheckResize,
    /// `forget-peer` of a resource that is down (drbdmeta's): the operand names the peer.
    ForgetPeer,
}

impl MetaOp {
    fn name(self) -> &'static str {
        match self {
            MetaOp::Create => "create-md",
            MetaOp::Dump => "dump-md",
            MetaOp::Wipe => "wipe-md",
            MetaOp::GetGi => "get-gi",
            MetaOp::ShowGi => "show-gi",
            MetaOp::DState => "dstate",
            MetaOp::Outdate => "outdate",
            MetaOp::CheckResize => "check-resize",
            MetaOp::ForgetPeer => "forget-peer",
        }
    }
}

/// Runs `op` on every volume the operands select. Stops at the first failure, as drbdadm does.
pub fn run(
    cfg: &Config,
    node: Option<&str>,
    words: &[String],
    op: MetaOp,
    args: &MetaArgs,
) -> Result<(), AdmError> {
    for target in expand_targets(cfg, words)? {
        let res = resolve(cfg, &target.resource, node)?;
        let volumes: Vec<_> = res
            .volumes
            .iter()
            .filter(|v| target.volume.is_none_or(|n| n == v.number))
            .collect();
        if volumes.is_empty() {
            return Err(AdmError::new(
                E_CONFIG_INVALID,
                format!(
                    "{}: no volume {} in this resource",
                    res.name,
                    target.volume.unwrap_or(0)
                ),
            ));
        }
        for vol in volumes {
            let Some(disk) = vol.disk.as_deref() else {
                return Err(AdmError::new(
                    E_CONFIG_INVALID,
                    format!(
                        "{}/{}: this node has 'disk none;' (diskless): there is no metadata to {}",
                        res.name,
                        vol.number,
                        op.name()
                    ),
                ));
            };
            if args.dry_run {
                println!(
                    "udrbd-meta {} {} {} {}{}",
                    vol.minor,
                    disk,
                    vol.meta_disk,
                    op.name(),
                    if args.force { " --force" } else { "" }
                );
                continue;
            }
            run_one(
                &res,
                &target,
                Path::new(disk),
                &vol.meta_disk,
                vol.disk_opts.al_extents,
                op,
                args,
            )?;
        }
    }
    Ok(())
}

fn run_one(
    res: &Resolved,
    target: &Target,
    disk: &Path,
    meta: &MetaDisk,
    al_extents: u32,
    op: MetaOp,
    args: &MetaArgs,
) -> Result<(), AdmError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let force = args.force;
    let mut confirm = |question: &str| confirm(question, force);
    let result = match op {
        MetaOp::Create => {
            let peer_node_ids: Vec<NodeId> = res.peers.iter().map(|p| p.node_id).collect();
            let max_peers = args
                .max_peers
                .unwrap_or_else(|| (peer_node_ids.len() as u32).max(1));
            let opts = CreateMdOptions {
                node_id: res.me.node_id,
                max_peers,
                peer_node_ids,
                al_extents,
                force,
            };
            metadev::create_md(disk, meta, &opts, &mut confirm, &mut out)
        }
        MetaOp::Dump => metadev::dump_md(disk, meta, force, &mut out),
        MetaOp::Wipe => metadev::wipe_md(disk, meta, &mut confirm, &mut out),
        MetaOp::DState => metadev::dstate_offline(disk, meta).and_then(|d| {
            writeln!(out, "{d}").map_err(|e| MetaDevError::Io {
                path: "stdout".into(),
                source: e,
            })
        }),
        MetaOp::Outdate => metadev::outdate_offline(disk, meta),
        MetaOp::CheckResize => check_resize(&res.name, disk, meta, &mut out),
        MetaOp::ForgetPeer => {
            let peer = pick_peer(res, target)?.ok_or_else(|| {
                AdmError::new(
                    E_USAGE,
                    format!("{}: forget-peer needs RES:PEER (which peer?)", res.name),
                )
            })?;
            metadev::forget_peer_offline(disk, meta, peer)
        }
        MetaOp::GetGi | MetaOp::ShowGi => {
            let peer = pick_peer(res, target)?;
            if op == MetaOp::GetGi {
                metadev::get_gi(disk, meta, peer, &mut out)
            } else {
                metadev::show_gi(disk, meta, peer, &mut out)
            }
        }
    };
    let _ = out.flush();
    result.map_err(|e: MetaDevError| AdmError::new(e.exit_code(), e.to_string()))
}

/// drbdmeta's check-resize: with a recorded size for `disk` (see `udrbd::disk::md_move`),
/// moves internal metadata left at the old end of a grown device; then records the size.
fn check_resize(
    resource: &str,
    disk: &Path,
    meta: &MetaDisk,
    out: &mut dyn Write,
) -> Result<(), MetaDevError> {
    use udrbd::disk::md_move;
    let record = md_move::lkbd_path(&md_move::state_dir(), resource);
    if let Some(old) = md_move::recorded_size(&record, disk)
        && let Some(m) = md_move::check_resize(disk, meta, old)?
    {
        let _ = writeln!(
            out,
            "{}: grew from {} to {} bytes: moved the meta data to its new end",
            disk.display(),
            m.old_backing,
            m.new_backing
        );
    }
    // Only a device whose metadata is where it belongs is recorded.
    metadev::read_md(disk, meta)?;
    let bytes = metadev::backing_size(disk)?;
    md_move::record_size(&record, disk, bytes).map_err(|source| MetaDevError::Io {
        path: record.clone(),
        source,
    })
}

/// The peers `target` names: the one of `RES:PEER`, else all of them.
pub fn named_peers<'a>(
    res: &'a Resolved,
    target: &Target,
) -> Result<Vec<&'a udrbd::config::Peer>, AdmError> {
    match &target.peer {
        Some(_) => {
            let id = pick_peer(res, target)?;
            Ok(res.peers.iter().filter(|p| Some(p.node_id) == id).collect())
        }
        None => Ok(res.peers.iter().collect()),
    }
}

/// get-gi shows one peer's bitmap UUID: the one named as `RES:PEER`, else the only peer.
pub fn pick_peer(res: &Resolved, target: &Target) -> Result<Option<NodeId>, AdmError> {
    match &target.peer {
        Some(name) => res
            .peers
            .iter()
            .find(|p| &p.name == name)
            .map(|p| Some(p.node_id))
            .ok_or_else(|| {
                let known: Vec<&str> = res.peers.iter().map(|p| p.name.as_str()).collect();
                AdmError::new(
                    E_USAGE,
                    format!(
                        "{}: no peer '{name}' (peers: {})",
                        res.name,
                        known.join(", ")
                    ),
                )
            }),
        None if res.peers.len() == 1 => Ok(res.peers.first().map(|p| p.node_id)),
        None => Ok(None),
    }
}

/// Asks a yes/no question the way drbdmeta does. Without a terminal nobody can answer, so the
/// answer is no (and the caller says to use --force).
fn confirm(question: &str, force: bool) -> bool {
    if force {
        return true;
    }
    println!("{question}");
    if !io::stdin().is_terminal() {
        println!("(no terminal to confirm on; re-run with --force to proceed)");
        return false;
    }
    print!("[need to type 'yes' to confirm] ");
    let _ = io::stdout().flush();
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    line.trim() == "yes"
}
