//! Cross-checks over whole resources and the whole configuration: node ids, hosts named in
//! connections, addresses, volumes complete, minors unique. Also assigns node ids to pure
//! two-node configs without them, as drbdadm does.

use super::addr::Addr;
use super::error::{ConfigError, did_you_mean};
use super::model::*;
use std::collections::BTreeMap;

pub fn validate(cfg: &mut Config) -> Result<(), ConfigError> {
    // (host, minor) -> resource, for "duplicate minor".
    let mut minors: BTreeMap<(String, u32), String> = BTreeMap::new();
    for res in &mut cfg.resources {
        node_ids(res)?;
        for h in &res.hosts {
            let mut mine: BTreeMap<u32, u32> = BTreeMap::new();
            for v in effective_volumes(res, h) {
                check_volume(res, h, &v)?;
                let Some(dev) = &v.device else { continue };
                if let Some(other) = mine.insert(dev.minor, v.number) {
                    return Err(v.pos.err(format!(
                        "minor {} is used by volumes {other} and {} of host '{}'",
                        dev.minor, v.number, h.name
                    )));
                }
                if let Some(r) = minors.get(&(h.name.clone(), dev.minor))
                    && *r != res.name
                {
                    return Err(v.pos.err(format!(
                        "minor {} of resource {} (host '{}') is already used by resource {r}",
                        dev.minor, res.name, h.name
                    )));
                }
                minors.insert((h.name.clone(), dev.minor), res.name.clone());
            }
        }
        connections(res)?;
    }
    Ok(())
}

fn node_ids(res: &mut Resource) -> Result<(), ConfigError> {
    let missing = res.hosts.iter().filter(|h| h.node_id.is_none()).count();
    if missing == res.hosts.len() && res.hosts.len() <= 2 {
        // A pure two-node (8.4 style) config: ids in the order of the `on` sections.
        for (i, h) in res.hosts.iter_mut().enumerate() {
            h.node_id = u8::try_from(i).ok();
            h.implicit_node_id = true;
        }
        return Ok(());
    }
    if let Some(h) = res.hosts.iter().find(|h| h.node_id.is_none()) {
        let why = if missing == res.hosts.len() {
            "a resource with more than two hosts needs 'node-id' in every host section"
        } else {
            "the other hosts have one, so every host needs one"
        };
        return Err(h.pos.err(format!(
            "host '{}' of resource {} has no node-id: {why}",
            h.name, res.name
        )));
    }
    for (i, h) in res.hosts.iter().enumerate() {
        if let Some(other) = res.hosts[..i].iter().find(|o| o.node_id == h.node_id) {
            return Err(h.pos.err(format!(
                "duplicate node-id {} in resource {}: hosts '{}' and '{}'",
                h.node_id.unwrap_or_default(),
                res.name,
                other.name,
                h.name
            )));
        }
    }
    Ok(())
}

/// The volumes host `h` runs: the resource's volumes overlaid with the host's own.
pub fn effective_volumes(res: &Resource, h: &HostCfg) -> Vec<VolumeCfg> {
    let mut out: Vec<VolumeCfg> = res.volumes.clone();
    for hv in &h.volumes {
        match out.iter_mut().find(|v| v.number == hv.number) {
            Some(v) => *v = v.overlay(hv),
            None => out.push(hv.clone()),
        }
    }
    out.sort_by_key(|v| v.number);
    out
}

fn check_volume(res: &Resource, h: &HostCfg, v: &VolumeCfg) -> Result<(), ConfigError> {
    let who = format!(
        "volume {} of host '{}' in resource {}",
        v.number, h.name, res.name
    );
    if v.device.is_none() {
        return Err(v.pos.err(format!(
            "{who} has no 'device' (write 'device /dev/drbdN;' or 'device minor N;')"
        )));
    }
    // A disk without 'meta-disk' has internal metadata, as in drbdadm (`resolve` says so).
    match &v.disk {
        None => Err(v.pos.err(format!(
            "{who} has no 'disk' (a device path, or 'none' for diskless)"
        ))),
        Some(_) => Ok(()),
    }
}

fn host_list(res: &Resource) -> String {
    res.hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn find_host<'r>(
    res: &'r Resource,
    name: &str,
    at: &super::error::Pos,
) -> Result<&'r HostCfg, ConfigError> {
    res.host(name).ok_or_else(|| {
        at.err(format!(
            "unknown host '{name}' in resource {}; its hosts are: {}{}",
            res.name,
            host_list(res),
            did_you_mean(name, res.hosts.iter().map(|h| h.name.as_str()))
        ))
    })
}

/// The address host `ch.name` uses in a connection: the one written there, else its `on`
/// address (with the connection's `port` if given).
pub fn conn_address(h: &HostCfg, ch: &ConnHost) -> Option<Addr> {
    match (&ch.address, &h.address, ch.port) {
        (Some(a), _, _) => Some(a.clone()),
        (None, Some(a), Some(p)) => Some(a.with_port(p)),
        (None, a, _) => a.clone(),
    }
}

/// The address the other host of a connection connects to for `ch`: its `via outside-address`
/// (a NAT in between) if given, else [`conn_address`] (drbd-utils' `set_peer_in_connection`).
pub fn peer_address(h: &HostCfg, ch: &ConnHost) -> Option<Addr> {
    ch.outside.clone().or_else(|| conn_address(h, ch))
}

fn no_address(h: &HostCfg, at: &super::error::Pos, res: &Resource) -> ConfigError {
    at.err(format!(
        "host '{}' has no address for its connection in resource {}: give 'address' in 'on {} {{ }}' or in the connection",
        h.name, res.name, h.name
    ))
}

fn connections(res: &Resource) -> Result<(), ConfigError> {
    for c in &res.connections {
        let mut groups: Vec<&Vec<ConnHost>> = c.paths.iter().collect();
        if !c.hosts.is_empty() {
            groups.insert(0, &c.hosts);
        }
        if groups.is_empty() {
            return Err(c.pos.err("a connection needs two 'host' lines or a 'path'"));
        }
        for g in groups {
            let names: Vec<&str> = g.iter().map(|h| h.name.as_str()).collect();
            let not_two = || {
                c.pos.err(format!(
                    "a connection joins exactly two different hosts, found: {}",
                    names.join(" ")
                ))
            };
            if names.len() != 2 || names[0] == names[1] {
                return Err(not_two());
            }
            let mut hosts = Vec::new();
            for ch in g {
                let h = find_host(res, &ch.name, &ch.pos)?;
                if conn_address(h, ch).is_none() {
                    return Err(no_address(h, &ch.pos, res));
                }
                hosts.push(h.name.as_str());
            }
            // `host n1` and `host n1.example.com` name one host.
            if hosts[0] == hosts[1] {
                return Err(not_two());
            }
        }
    }
    if let Some(m) = &res.mesh {
        for (name, pos) in &m.hosts {
            let h = find_host(res, name, pos)?;
            if h.address.is_none() {
                return Err(no_address(h, pos, res));
            }
        }
    }
    if res.connections.is_empty() && res.mesh.is_none() {
        match res.hosts.len() {
            0 | 1 => {}
            2 => {
                for h in &res.hosts {
                    if h.address.is_none() {
                        return Err(no_address(h, &h.pos, res));
                    }
                }
            }
            _ => {
                return Err(res.pos.err(format!(
                    "resource {} has more than two hosts but no 'connection' or 'connection-mesh'",
                    res.name
                )));
            }
        }
    }
    Ok(())
}
