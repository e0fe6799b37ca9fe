//! `udrbd`: the node daemon. It will hold the running configuration of this node's resources,
//! serve them over NBD and replicate them to the peer (see DESIGN.md). The daemon itself is the
//! next foundation step; until it lands this binary parses its fixed command line (so scripts can
//! be written against it) and says plainly that it cannot serve yet, instead of pretending to.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// The udrbd node daemon (one per node; runs in the foreground and logs to stderr).
#[derive(Debug, Parser)]
#[command(name = "udrbd", version)]
struct Args {
    /// Directory for the control socket (`ctl.sock`) and the NBD Unix socket (`nbd.sock`).
    #[arg(long = "run-dir", env = "UDRBD_RUN_DIR", default_value = "/run/udrbd")]
    run_dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    eprintln!(
        "udrbd: this build has no node daemon yet (it would use {}); only the offline \
         drbdadm commands work: dump, create-md, dump-md, wipe-md, get-gi, show-gi. See the \
         README's \"What works\" table.",
        args.run_dir.display()
    );
    ExitCode::from(1)
}
