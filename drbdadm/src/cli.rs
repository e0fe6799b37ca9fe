//! The command-line surface: one clap subcommand per drbdadm command, so each has its own
//! `--help`. `argv::normalise` has already put options where clap expects them.

use crate::commands::daemon::RunDirArg;
use crate::events2::Args as Events2Args;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

const ABOUT: &str = "Administer udrbd resources the way drbdadm administers DRBD";

const LONG_ABOUT: &str = "\
Administer udrbd resources the way drbdadm administers DRBD.

drbdadm reads the DRBD configuration (default /etc/drbd.conf, which usually includes
drbd.d/global_common.conf and drbd.d/*.res), works out which `on HOST` section is this node
(`uname -n`, or --node NAME / UDRBD_NODE), and acts on the named resources. `all` means every
resource in the configuration. Options may stand before or after the command, and words after
`--` are options for the command, as in `drbdadm -- --discard-my-data connect r0`.

First steps on a new resource (the udrbd daemon must be running for `up` and after):
    drbdadm dump all                        # check the configuration
    drbdadm create-md r0                    # write udrbd metadata (on both nodes)
    drbdadm up r0                           # hand it to the daemon, attach the disk
    drbdadm new-current-uuid --clear-bitmap r0   # fresh, empty disks: skip the initial sync
    drbdadm primary r0                      # or --force to start from this node's data
    drbdadm status r0
The device is then the NBD export r0 on $UDRBD_RUN_DIR/nbd.sock, e.g.
    qemu-img info 'nbd+unix:///r0?socket=/run/udrbd/nbd.sock'";

/// Where the configuration is read from without `-c`.
pub const DEFAULT_CONFIG: &str = "/etc/drbd.conf";

/// `drbdadm [GLOBAL OPTIONS] COMMAND [OPTIONS] RESOURCE...`
#[derive(Debug, Parser)]
#[command(name = "drbdadm", about = ABOUT, long_about = LONG_ABOUT, disable_version_flag = true)]
pub struct Cli {
    /// Configuration file to read (its `include`s are followed).
    #[arg(
        short = 'c',
        long = "config-file",
        global = true,
        env = "UDRBD_CONFIG",
        value_name = "FILE",
        default_value = DEFAULT_CONFIG
    )]
    pub config: PathBuf,

    /// Act as this node: the name of an `on NAME` section (default: `uname -n`).
    #[arg(long = "node", global = true, env = "UDRBD_NODE", value_name = "NAME")]
    pub node: Option<String>,

    #[command(flatten)]
    pub run_dir: RunDirArg,

    /// Print what would be done instead of doing it.
    #[arg(short = 'd', long = "dry-run", global = true)]
    pub dry_run: bool,

    /// More output.
    #[arg(short = 'v', long = "verbose", global = true)]
    pub verbose: bool,

    /// Print version information in drbdadm's machine-readable form and exit.
    #[arg(short = 'V', long = "version")]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Operands naming what to act on: `RES`, `RES/VOL`, `RES:PEER`, `RES:PEER/VOL` or `all`.
#[derive(Debug, clap::Args)]
pub struct Targets {
    /// Resource(s) to act on (`all` for every resource); `RES/VOL` picks one volume.
    #[arg(value_name = "RESOURCE", required = true)]
    pub targets: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse the configuration and print it as udrbd understands it.
    ///
    /// Without a resource, or with `all`, prints the global and common sections and every
    /// resource. 8.x spellings are shown in their modern form with a comment. Fails with
    /// FILE:LINE:COL and a hint on any syntax or validation error, so it doubles as a syntax check.
    Dump {
        /// Resource(s) to print (default: all).
        #[arg(value_name = "RESOURCE")]
        targets: Vec<String>,
        /// Print `shared-secret` as written; by default it is hidden, so a dump can be shared.
        #[arg(long)]
        show_secrets: bool,
    },

    /// Bring running resources to what the configuration files say, without down/up.
    ///
    /// A resource that is not up is brought up. On one that is: changed resource, disk and
    /// peer-device options, ko-count, fencing, max-buffers, the after-sb policies and
    /// handlers apply at once (a running resync takes a new rate from its next step); a
    /// changed protocol, timeout, digest, authentication, TLS or address closes the connection
    /// as `disconnect` does and reconnects with the new settings (I/O goes on; what was written
    /// meanwhile is resynced); a disk the configuration no longer names is detached, one it
    /// names is attached; a StandAlone connection is connected. Another node id, other peers,
    /// minor, nbd-listen or NBD TLS files need `down` and `up`.
    /// With -d (--dry-run) prints the drbdsetup commands it would run and changes nothing;
    /// with -v prints those it ran.
    Adjust {
        #[command(flatten)]
        targets: Targets,
    },

    /// Write fresh udrbd metadata (generation UUIDs, activity log, bitmap) for a resource.
    ///
    /// Internal metadata takes the end of the backing device, so the exported size is a little
    /// smaller than the partition. Refuses to overwrite valid metadata, or a device that looks
    /// used (a filesystem, LVM or swap signature), unless --force is given.
    CreateMd {
        /// Overwrite existing metadata or a device that looks used, without asking.
        #[arg(long)]
        force: bool,
        /// Number of peers the bitmap has room for (default: the peers in the configuration).
        #[arg(long = "max-peers", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=31))]
        max_peers: Option<u32>,
        #[command(flatten)]
        targets: Targets,
    },

    /// Print the metadata as text (generation UUIDs, flags, bitmap). Exit code 255 if none.
    /// Unclean metadata (the activity log not applied, or the resource up) is refused unless
    /// --force, which prints it marked as such.
    DumpMd {
        /// Print unclean metadata too.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Destroy the metadata block (the data area is not touched).
    WipeMd {
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Grow the device after the backing devices of both nodes grew (lvextend, a larger file).
    ///
    /// Run it on one node: each node moves its internal metadata to the new end of its backing
    /// device (I/O goes on), the nodes agree on the smaller of the two disks, and the new area
    /// is resynced (with --assume-clean it is taken as equal, e.g. both zeroed). Without a
    /// connected peer the metadata moves now and the device grows once the peer connects.
    /// NBD clients see the new size on their next connection.
    Resize {
        /// The new area holds the same data on both nodes: do not resync it.
        #[arg(long = "assume-clean")]
        assume_clean: bool,
        /// The device's new size (sectors, or with k/M/G/T: `--size=10G`); the default is the
        /// config's `disk { size }`, else as large as both backing devices allow. Smaller
        /// than now shrinks the device: what lies beyond is cut off (shrink the filesystem on
        /// it first).
        #[arg(long = "size", value_name = "SIZE")]
        size: Option<String>,
        /// DRBD's grow without the peer: not supported (the device grows when the peer connects).
        #[arg(long = "assume-peer-has-space")]
        assume_peer_has_space: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Find internal metadata a backing device that grew while the resource was down left at
    /// its old end, move it to the new end, and record the device's size (as drbdmeta's
    /// check-resize; the daemon does the same at every attach). The size grows once the peers
    /// can hold it too: the new area is then resynced.
    CheckResize {
        #[command(flatten)]
        targets: Targets,
    },

    /// Print the data generation identifiers: CURRENT:BITMAP:HIST1:HIST2:flags.
    ///
    /// BITMAP is the bitmap UUID of the peer `RES:PEER` names (by default the only peer).
    /// The 12 flags are the metadata's (consistent, was up-to-date, primary, crashed primary,
    /// AL clean, AL disabled, lost quorum) and the peer's (connected, outdated, fencing, full
    /// sync, seen); `show-gi` explains each. While the disk is attached the daemon's values
    /// are printed (drbdsetup get-gi), otherwise the metadata's (drbdmeta get-gi).
    GetGi {
        #[command(flatten)]
        targets: Targets,
    },

    /// Print the data generation identifiers with an explanation of each field (from the
    /// daemon while the disk is attached, else from the metadata with the last agreed size).
    ShowGi {
        #[command(flatten)]
        targets: Targets,
    },

    /// List the names of the resources in the configuration, one per line.
    ShResources,
    /// Exit 0 when the configuration is valid (10 otherwise), printing nothing.
    ShNop,
    /// Print the resource's name (for scripts).
    ShResource(Targets),
    /// Print each volume's device, /dev/drbdN (for scripts).
    ShDev(Targets),
    /// Print each volume's minor number (for scripts).
    ShMinor(Targets),
    /// Print each volume's backing device, or `none` (for scripts).
    ShLlDev(Targets),
    /// Print each volume's metadata device (the backing device for internal metadata).
    ShMdDev(Targets),
    /// Print each volume's metadata index: internal, flexible or N.
    ShMdIdx(Targets),
    /// Print this node's address toward each peer (or the one RES:PEER names).
    ShIp(Targets),
    /// Print FILE:LINE:RES where the resource is defined.
    ShListConfigFile(Targets),
    /// Print the udev environment of each volume (DEVICE=, SYMLINK_BY_RES=, ...).
    ShUdev(Targets),

    /// Hand the resource to the daemon and attach its backing disk (needs metadata: create-md).
    ///
    /// The configuration is resolved for this node and sent whole, so the daemon runs what the
    /// files said when `up` ran. The resource comes up Secondary; its disk state follows the
    /// metadata (Inconsistent after create-md).
    Up {
        #[command(flatten)]
        targets: Targets,
    },

    /// Demote, write clean metadata, detach and remove the resource from the daemon.
    ///
    /// Refused with "(-12) Device is held open by someone" while an NBD client has the export
    /// open. Succeeds for a resource that is not up.
    Down {
        #[command(flatten)]
        targets: Targets,
    },

    /// Attach the backing disk of a resource that is up but Diskless.
    Attach {
        #[command(flatten)]
        targets: Targets,
    },

    /// Write clean metadata and detach the backing disk; the resource stays up, Diskless.
    ///
    /// A Primary is demoted first (refused with "(-12) Device is held open by someone" while
    /// an NBD client has the export open). With --force the disk goes at once instead. While
    /// connected, the peer marks what it writes meanwhile, and `attach` resyncs just that.
    Detach {
        /// Detach now, as DRBD's `detach --force` for a disk that hangs or misbehaves: no
        /// demotion, no waiting for the requests at the disk. The disk goes through Failed to
        /// Diskless as after an I/O error under `on-io-error detach`: the requests at the
        /// disk fail locally (a write the peer has still succeeds, a peer's write is marked for
        /// resync), and the metadata comes back Inconsistent, so `attach` resyncs what the disk
        /// missed. On a Primary, reads are then served by an UpToDate peer; writes fail until
        /// the disk is attached again.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Drop what this node's metadata remembers of a peer: `RES:PEER` (or every peer of RES).
    ///
    /// For a node that left the cluster, or one whose disk was replaced: its bitmap UUID and
    /// flags go, and its bitmap is set all out of sync, so the next connection to that node
    /// resyncs the whole device (as for a node never seen). The connection must be StandAlone
    /// (`drbdadm disconnect RES:PEER` first), else "(125) Device has a net-config (use
    /// disconnect first)", exit code 10. On a resource that is down the metadata on disk is
    /// changed, as drbdmeta's forget-peer does.
    ForgetPeer {
        #[command(flatten)]
        targets: Targets,
    },

    /// Promote to Primary, so the NBD export serves I/O.
    ///
    /// Needs UpToDate data (or Consistent data while no peer is connected and fencing is
    /// dont-care); otherwise fails with "(-2) Need access to UpToDate data", exit code 17.
    /// --force promotes Inconsistent data (the initial sync source, or disaster recovery: it
    /// can cause split brain).
    Primary {
        /// Promote even without UpToDate data.
        #[arg(long, visible_alias = "overwrite-data-of-peer")]
        force: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Demote to Secondary. Refused while an NBD client holds the export open (exit code 11)
    /// unless --force.
    Secondary {
        /// Demote although NBD clients hold the export open: their requests fail from then
        /// on (those already started finish), as DRBD's `secondary --force` fails the I/O of
        /// the device's users.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Print this node's role (Primary or Secondary).
    Role {
        #[command(flatten)]
        targets: Targets,
    },

    /// Print the connection state, one line per peer.
    Cstate {
        #[command(flatten)]
        targets: Targets,
    },

    /// Print the disk states, local first: `UpToDate/DUnknown`. Of a resource that is down:
    /// what its metadata records (`Consistent`, `Outdated` or `Inconsistent`), as drbdmeta.
    Dstate {
        #[command(flatten)]
        targets: Targets,
    },

    /// Show the state of resources in DRBD 9's layout (all that are up, by default).
    Status {
        /// Add counters (KiB read and written, AL and bitmap writes, pending requests).
        #[arg(short = 's', long)]
        statistics: bool,
        /// Print JSON, as `drbdsetup status --json`.
        #[arg(long)]
        json: bool,
        /// Resource(s) to show (default: every resource that is up).
        #[arg(value_name = "RESOURCE")]
        targets: Vec<String>,
    },

    /// Start a new data generation (rotate the generation UUIDs).
    ///
    /// With --clear-bitmap on just-created metadata, the disk becomes UpToDate without any
    /// initial sync: the way to skip the full sync of fresh, empty devices.
    NewCurrentUuid {
        /// Clear the bitmap as well: skip the (initial) resync.
        #[arg(long = "clear-bitmap")]
        clear_bitmap: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Connect to the peers (up does this too): listen, dial, authenticate, then the
    /// handshake decides whether and in which direction to resync.
    Connect {
        /// After a split brain: this node's changes are thrown away and it resyncs from the
        /// peer (give it on the victim only).
        #[arg(long = "discard-my-data")]
        discard_my_data: bool,
        /// Only find out: run the handshake, log what it would do ("dry-run connect: Would
        /// become SyncTarget, doing a bit-map based resync."), then stay StandAlone.
        #[arg(long)]
        tentative: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Close the connections and stay StandAlone (writes go on here and are marked in the
    /// bitmap, so the next connect resyncs only what changed). The peer agrees first, as in
    /// DRBD 9: under `fencing`, of a Primary and a Secondary the Secondary becomes Outdated
    /// (it cannot be promoted without --force until it has resynced) and the Primary knows
    /// it, so nobody calls fence-peer. A Primary next to another Primary under fencing is
    /// refused ("(-7) Refusing to be Primary while peer is not outdated", exit code 11).
    Disconnect {
        /// Close at once: no agreement with the peer, nobody outdated (the peer sees a lost
        /// connection and fences as configured).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Throw away this node's data: it becomes Inconsistent and is fully resynced from the
    /// connected, UpToDate peer. Use it when a disk is known to be bad. With
    /// `--reset-bitmap=no` only the blocks already marked out of sync (for example by
    /// `verify`) are resynced, from the peer to this node.
    Invalidate {
        /// `no`: resync only what the bitmap marks, instead of everything.
        #[arg(long = "reset-bitmap", value_name = "yes|no", default_value = "yes", value_parser = yes_no, action = clap::ArgAction::Set)]
        reset_bitmap: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Resync the connected peer completely from this node (the peer becomes Inconsistent).
    /// With `--reset-bitmap=no` only the blocks marked out of sync, from this node to the peer.
    InvalidateRemote {
        /// `no`: resync only what the bitmap marks, instead of everything.
        #[arg(long = "reset-bitmap", value_name = "yes|no", default_value = "yes", value_parser = yes_no, action = clap::ArgAction::Set)]
        reset_bitmap: bool,
        #[command(flatten)]
        targets: Targets,
    },

    /// Online verify: compare this node's data with the connected peer's, block by block,
    /// with the `verify-alg` digest (set it in `net { }` on both nodes). Blocks that differ
    /// are logged and marked out of sync; progress shows in `status`. Nothing is resynced:
    /// afterwards run `invalidate --reset-bitmap=no` on the node with the bad data.
    Verify {
        /// First sector to verify (512-byte units).
        #[arg(long = "start", value_name = "SECTOR", default_value_t = 0)]
        start: u64,
        /// Sector to stop at (default: the end of the device).
        #[arg(long = "stop", value_name = "SECTOR")]
        stop: Option<u64>,
        #[command(flatten)]
        targets: Targets,
    },

    /// Pause a running resync (for example to give the application the bandwidth).
    PauseSync {
        #[command(flatten)]
        targets: Targets,
    },

    /// Resume a resync paused with pause-sync.
    ResumeSync {
        #[command(flatten)]
        targets: Targets,
    },

    /// Mark this node's data Outdated (refused while Primary or connected); it then refuses
    /// `primary` without --force and resyncs from an UpToDate peer on connect. A resource that
    /// is down is outdated in its metadata (refused if Inconsistent, exit code 5).
    Outdate {
        #[command(flatten)]
        targets: Targets,
    },

    /// Suspend I/O: new reads and writes wait (queued, not failed) until `resume-io`; those
    /// already started finish. `status` shows `suspended:user`.
    SuspendIo {
        #[command(flatten)]
        targets: Targets,
    },

    /// Resume I/O suspended by `suspend-io`, or frozen by `fencing resource-and-stonith` after
    /// fence-peer failed.
    ResumeIo {
        #[command(flatten)]
        targets: Targets,
    },

    /// Wait until every connection of the resource is Connected (also spelt as DRBD 9's
    /// `wait-connect-resource`, `-connection` and `-volume`: one peer and one volume here).
    #[command(
        alias = "wait-connect-resource",
        alias = "wait-connect-connection",
        alias = "wait-connect-volume"
    )]
    WaitConnect {
        /// Seconds to wait (0: forever). Default: the resource's startup { wfc-timeout }.
        #[arg(long = "wfc-timeout", value_name = "S")]
        wfc_timeout: Option<u64>,
        #[command(flatten)]
        targets: Targets,
    },

    /// The state as `drbdsetup events2` lines: `exists` lines and `exists -`, then (without
    /// --now) every change as it happens (`change`, `create`, `destroy`, `call helper`,
    /// `response helper`). Same as `drbdsetup events2`.
    Events2(Events2Args),

    /// Wait until the resource is connected and no resync remains (also `wait-sync-resource`,
    /// `-connection` and `-volume`).
    #[command(
        alias = "wait-sync-resource",
        alias = "wait-sync-connection",
        alias = "wait-sync-volume"
    )]
    WaitSync {
        /// Seconds to wait (0: forever). Default: the resource's startup { wfc-timeout }.
        #[arg(long = "wfc-timeout", value_name = "S")]
        wfc_timeout: Option<u64>,
        #[command(flatten)]
        targets: Targets,
    },
}

/// DRBD's boolean option values (`--reset-bitmap=no`).
fn yes_no(v: &str) -> Result<bool, String> {
    match v {
        "yes" | "y" | "true" | "1" => Ok(true),
        "no" | "n" | "false" | "0" => Ok(false),
        other => Err(format!("'{other}' is not yes or no")),
    }
}
