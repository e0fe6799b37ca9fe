//! `drbdadm dump` and `sh-resources`: the configuration as udrbd understands it.

use crate::context::expand_targets;
use crate::error::{AdmError, E_CONFIG_INVALID};
use udrbd::config::{self, Config};

/// Prints the whole configuration (no operands or `all`) or the named resources; every
/// `shared-secret` hidden unless `show_secrets`.
pub fn dump(cfg: &Config, words: &[String], show_secrets: bool) -> Result<(), AdmError> {
    let to_err = |e: config::ConfigError| AdmError::new(E_CONFIG_INVALID, e.to_string());
    let hide = !show_secrets;
    if words.is_empty() || words.iter().any(|w| w == "all") {
        print!("{}", config::dump_with(cfg, None, hide).map_err(to_err)?);
        return Ok(());
    }
    for t in expand_targets(cfg, words)? {
        print!(
            "{}",
            config::dump_with(cfg, Some(&t.resource), hide).map_err(to_err)?
        );
    }
    Ok(())
}

/// Prints every resource name, one per line, as drbd-utils 9's `sh-resources` does.
pub fn sh_resources(cfg: &Config) {
    for r in cfg.resource_names() {
        println!("{r}");
    }
}
