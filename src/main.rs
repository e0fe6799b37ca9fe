//! `udrbd`: the node daemon. One per node; runs in the foreground (systemd style) and logs to
//! stderr through `tracing`. `drbdadm` drives it through `$UDRBD_RUN_DIR/ctl.sock`; NBD clients
//! reach the resources through `$UDRBD_RUN_DIR/nbd.sock` and the `nbd-listen` addresses.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use udrbd::daemon::Daemon;
use udrbd::disk::{EngineKind, open_engine};
use udrbd::driver::DiskOpener;

const LONG_ABOUT: &str = "\
The udrbd node daemon: the user-space counterpart of DRBD's kernel module.

It starts with no resources. `drbdadm up RES` reads the configuration, resolves this node's
part of it and hands the resource to the daemon, which attaches the backing disk and serves the
device as the NBD export RES on $UDRBD_RUN_DIR/nbd.sock (and on `nbd-listen` addresses).

On SIGTERM or SIGINT it finishes in-flight I/O, writes clean metadata and exits 0.

Example (two nodes on one machine differ only in --run-dir and drbdadm --node):
    udrbd --run-dir /run/udrbd-alice &
    UDRBD_RUN_DIR=/run/udrbd-alice drbdadm --node alice up r0";

/// The udrbd node daemon.
#[derive(Debug, Parser)]
#[command(name = "udrbd", version, long_about = LONG_ABOUT)]
struct Args {
    /// Directory for the control socket (ctl.sock) and the NBD Unix socket (nbd.sock).
    #[arg(long = "run-dir", env = "UDRBD_RUN_DIR", default_value = "/run/udrbd")]
    run_dir: PathBuf,

    /// Backing-device I/O engine: io_uring, pread/pwrite threads, or io_uring with fallback.
    #[arg(long = "io-engine", env = "UDRBD_IO_ENGINE", default_value = "auto", value_parser = parse_engine)]
    io_engine: EngineKind,

    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g. 127.0.0.1:9942.
    #[arg(
        long = "metrics-listen",
        env = "UDRBD_METRICS_LISTEN",
        value_name = "ADDR:PORT"
    )]
    metrics_listen: Option<std::net::SocketAddr>,

    /// NBD clients one resource serves at once; one more is refused (the client is told
    /// why, and the daemon logs it). Each client holds buffers for its requests in flight.
    #[arg(
        long = "nbd-max-clients",
        env = "UDRBD_NBD_MAX_CLIENTS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    nbd_max_clients: u32,

    /// Also serve the control socket to this group's members (drbdadm without root, e.g. for
    /// monitoring): the socket becomes 0660 and the run directory it creates 0710, both owned
    /// by the group. Without it only root and the daemon's own user are served.
    #[arg(long = "ctl-group", env = "UDRBD_CTL_GROUP", value_name = "GROUP")]
    ctl_group: Option<String>,

    /// Threads serving the network side (NBD, control socket). Disk I/O has its own threads.
    #[arg(
        long = "worker-threads",
        env = "UDRBD_WORKER_THREADS",
        default_value_t = 2
    )]
    worker_threads: usize,
}

fn parse_engine(s: &str) -> Result<EngineKind, String> {
    match s {
        "auto" => Ok(EngineKind::Auto),
        "uring" | "io_uring" => Ok(EngineKind::Uring),
        "pio" | "pread" => Ok(EngineKind::Pio),
        _ => Err(format!("unknown I/O engine {s:?}: use auto, uring or pio")),
    }
}

/// Fixes glibc's mmap threshold at 64 KiB instead of letting it rise: once a large mapped block
/// (a bitmap) is freed, glibc would serve every later allocation up to that size from the heap,
/// where memory freed by many threads fragments and stays resident. At 64 KiB each NBD
/// connection's read and write buffers are mappings whose pages become resident only when
/// used (500 idle clients: 45 MiB instead of 70). Payload buffers do not come from malloc at
/// all (`buf::pool`); a small trim threshold gives freed heap back.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    tune_malloc();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UDRBD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("udrbd: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// The id of group `name` (`getgrnam_r`).
fn group_id(name: &str) -> anyhow::Result<u32> {
    let c_name = std::ffi::CString::new(name).context("a group name without NUL bytes")?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives it and `found` points into
    // `grp` or is null.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        anyhow::bail!("--ctl-group {name}: no such group (see getent group)");
    }
    Ok(grp.gr_gid)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let ctl_group = args.ctl_group.as_deref().map(group_id).transpose()?;
    let existed = args.run_dir.exists();
    std::fs::create_dir_all(&args.run_dir)
        .with_context(|| format!("cannot create the run directory {}", args.run_dir.display()))?;
    if !existed {
        // Ours alone, whatever the umask: it holds the control and NBD sockets (the control
        // group may pass through to its socket, not list it). A directory that existed is the
        // operator's; the sockets' own modes and the control socket's check of the caller
        // protect them there.
        use std::os::unix::fs::PermissionsExt;
        let mode = match ctl_group {
            Some(gid) => {
                std::os::unix::fs::chown(&args.run_dir, None, Some(gid))
                    .with_context(|| format!("cannot chown {}", args.run_dir.display()))?;
                0o710
            }
            None => 0o700,
        };
        std::fs::set_permissions(&args.run_dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict {}", args.run_dir.display()))?;
    }
    let kind = args.io_engine;
    // Fault injection for tests of on-io-error (see `udrbd::disk::faulty`).
    let faults = std::env::var_os(udrbd::disk::faulty::FAULT_FILE_ENV).map(PathBuf::from);
    let opener: Arc<DiskOpener> = Arc::new(move |path, data_bytes| {
        let engine = open_engine(path, kind, Some(data_bytes))?;
        Ok(match &faults {
            Some(f) => Arc::new(udrbd::disk::faulty::FaultyDisk::new(engine, f.clone())),
            None => engine,
        })
    });
    let daemon = Daemon::new(opener);

    let ctl_path = args.run_dir.join("ctl.sock");
    let ctl = udrbd::ctl::server::bind(&ctl_path, ctl_group)
        .with_context(|| format!("cannot listen on {}", ctl_path.display()))?;
    let nbd = udrbd::daemon::nbd::start(&daemon, &args.run_dir, args.nbd_max_clients)
        .await
        .context("cannot start the NBD server")?;
    tracing::info!(
        "udrbd {} ready: control {}, NBD {}",
        env!("CARGO_PKG_VERSION"),
        ctl_path.display(),
        args.run_dir.join("nbd.sock").display()
    );
    let ctl_task = tokio::spawn(udrbd::ctl::server::serve(ctl, daemon.clone(), ctl_group));
    let metrics_task = match args.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            tracing::info!("metrics on http://{addr}/metrics");
            Some(tokio::spawn(udrbd::daemon::metrics::serve(
                l,
                daemon.clone(),
            )))
        }
        None => None,
    };

    wait_for_signal().await?;
    tracing::info!("shutting down: finishing I/O and writing clean metadata");
    ctl_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    nbd.shutdown().await;
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&ctl_path);
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
