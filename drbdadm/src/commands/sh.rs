//! drbdadm's `sh-*` commands: configuration facts printed one per line for shell scripts
//! (drbd-utils' own scripts and agents call `sh-dev`, `sh-ll-dev`, `sh-minor`, `sh-nop`, ...).
//! The texts are drbd-utils 9's (`user/v9/drbdadm_main.c`).

use crate::context::{Target, expand_targets, resolve};
use crate::error::AdmError;
use udrbd::config::{Config, Resolved, Volume};
use udrbd::types::MetaDisk;

/// Which `sh-*` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sh {
    /// `sh-resource`: the resource's name.
    Resource,
    /// `sh-dev`: `/dev/drbdN` per volume.
    Dev,
    /// `sh-minor`: the minor per volume.
    Minor,
    /// `sh-ll-dev`: the backing device per volume (`none` when diskless).
    LlDev,
    /// `sh-md-dev`: the metadata device per volume (the backing device for internal).
    MdDev,
    /// `sh-md-idx`: `internal`, `flexible` or the index per volume.
    MdIdx,
    /// `sh-ip`: this node's address toward each peer (or the one `RES:PEER` names).
    Ip,
    /// `sh-list-config-file`: `FILE:LINE:RES`.
    ListConfigFile,
    /// `sh-udev`: the udev environment of one volume.
    Udev,
}

/// Prints what `which` asks for about every target.
pub fn run(cfg: &Config, node: Option<&str>, words: &[String], which: Sh) -> Result<(), AdmError> {
    for t in expand_targets(cfg, words)? {
        let res = resolve(cfg, &t.resource, node)?;
        for line in lines(cfg, &res, &t, which) {
            println!("{line}");
        }
    }
    Ok(())
}

fn lines(cfg: &Config, res: &Resolved, t: &Target, which: Sh) -> Vec<String> {
    let vols: Vec<&Volume> = res
        .volumes
        .iter()
        .filter(|v| t.volume.is_none_or(|n| n == v.number))
        .collect();
    let per_volume = |f: &dyn Fn(&Volume) -> String| vols.iter().map(|v| f(v)).collect();
    match which {
        Sh::Resource => vec![res.name.clone()],
        Sh::Dev => per_volume(&|v| format!("/dev/drbd{}", v.minor)),
        Sh::Minor => per_volume(&|v| v.minor.to_string()),
        Sh::LlDev => per_volume(&|v| v.disk.clone().unwrap_or_else(|| "none".into())),
        Sh::MdDev => per_volume(&|v| match &v.meta_disk {
            MetaDisk::Internal => v.disk.clone().unwrap_or_else(|| "none".into()),
            MetaDisk::External { path, .. } => path.clone(),
        }),
        Sh::MdIdx => per_volume(&|v| match &v.meta_disk {
            MetaDisk::Internal => "internal".into(),
            MetaDisk::External { index: None, .. } => "flexible".into(),
            MetaDisk::External { index: Some(i), .. } => i.to_string(),
        }),
        Sh::Ip => res
            .peers
            .iter()
            .filter(|p| t.peer.as_ref().is_none_or(|n| *n == p.name))
            .filter_map(|p| p.local_address.map(|a| a.ip().to_string()))
            .collect(),
        Sh::ListConfigFile => {
            let line = cfg.resource(&res.name).map_or(0, |r| r.pos.line);
            vec![format!("{}:{line}:{}", res.config_file, res.name)]
        }
        Sh::Udev => vols
            .iter()
            .flat_map(|v| {
                let dev = match &v.device {
                    Some(d) if d.starts_with("/dev/drbd") => d["/dev/".len()..].to_string(),
                    _ => format!("drbd{}", v.minor),
                };
                // drbd-utils' sh_udev(): SYMLINK repeats SYMLINK_BY_RES for older udev rules;
                // no SYMLINK_BY_DISK without a disk.
                let mut lines = vec![
                    format!("DEVICE={dev}"),
                    format!("SYMLINK={}", v.by_res),
                    format!("SYMLINK_BY_RES={}", v.by_res),
                ];
                if let Some(disk) = &v.disk {
                    lines.push(format!(
                        "SYMLINK_BY_DISK=drbd/by-disk/{}",
                        disk.strip_prefix("/dev/").unwrap_or(disk)
                    ));
                }
                lines
            })
            .collect(),
    }
}
