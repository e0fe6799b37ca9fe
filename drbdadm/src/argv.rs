//! drbdadm's command-line conventions, which clap alone does not give.
//!
//! DRBD administrators write options on either side of the command
//! (`drbdadm --clear-bitmap new-current-uuid r0` and `drbdadm new-current-uuid --clear-bitmap r0`),
//! and older how-tos pass command options after `--` (`drbdadm -- --discard-my-data connect r0`).
//! We normalise every such form to `drbdadm [GLOBAL...] COMMAND [OPTION...] [RESOURCE...]`, which
//! clap then parses with one subcommand per command (and per-command `--help`).

/// Global options that take a separate value (`-c FILE`, `--node NAME`, `--run-dir DIR`).
const GLOBAL_WITH_VALUE: &[&str] = &["-c", "--config-file", "--node", "--run-dir"];
/// Global options without a value.
const GLOBAL_FLAGS: &[&str] = &["-d", "--dry-run", "-v", "--verbose", "-V", "--version"];
/// Command options that take a separate value when not written as `--opt=value`.
const COMMAND_WITH_VALUE: &[&str] = &[
    "--max-peers",
    "--start",
    "--stop",
    "--peer",
    "--al-extents",
    "--reset-bitmap",
    "--wfc-timeout",
    "--degr-wfc-timeout",
    "--outdated-wfc-timeout",
    "--size",
];

/// The words of one invocation, sorted into their roles.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Normalised {
    pub globals: Vec<String>,
    pub command: Option<String>,
    pub command_opts: Vec<String>,
    pub operands: Vec<String>,
}

impl Normalised {
    /// The argument vector clap parses: globals, command, its options, then its operands.
    pub fn to_clap_args(&self, program: &str) -> Vec<String> {
        let mut out = vec![program.to_string()];
        out.extend(self.globals.iter().cloned());
        if let Some(c) = &self.command {
            out.push(c.clone());
            out.extend(self.command_opts.iter().cloned());
            if !self.operands.is_empty() {
                // Operands after `--` so a resource named like an option is still an operand.
                out.push("--".into());
                out.extend(self.operands.iter().cloned());
            }
        } else {
            out.extend(self.command_opts.iter().cloned());
        }
        out
    }
}

fn is_in(word: &str, list: &[&str]) -> bool {
    let name = word.split_once('=').map_or(word, |(n, _)| n);
    list.contains(&name)
}

/// Sorts `args` (without the program name) into globals, command, command options and operands.
///
/// The first word that is not an option is the command; later plain words are operands
/// (resources). A lone `--` only ends nothing: in drbdadm it marks what follows as backend
/// options, and a backend option is just a command option here.
pub fn normalise<I: IntoIterator<Item = String>>(args: I) -> Normalised {
    let mut n = Normalised::default();
    let mut help = Vec::new();
    let mut it = args.into_iter().peekable();
    while let Some(word) = it.next() {
        if word == "--" {
            continue;
        }
        if word == "-h" || word == "--help" {
            help.push(word);
            continue;
        }
        let takes_value = !word.contains('=');
        if is_in(&word, GLOBAL_WITH_VALUE) {
            n.globals.push(word);
            if takes_value && let Some(v) = it.next() {
                n.globals.push(v);
            }
        } else if is_in(&word, GLOBAL_FLAGS) || is_short_global_cluster(&word) {
            n.globals.push(word);
        } else if word.starts_with('-') && word.len() > 1 {
            let wants_value = takes_value && is_in(&word, COMMAND_WITH_VALUE);
            n.command_opts.push(word);
            if wants_value && let Some(v) = it.next() {
                n.command_opts.push(v);
            }
        } else if n.command.is_none() {
            n.command = Some(word);
        } else {
            n.operands.push(word);
        }
    }
    // `drbdadm create-md --help` and `drbdadm --help create-md` both ask for the command's help;
    // without a command it is the overview.
    if n.command.is_some() {
        n.command_opts.extend(help);
    } else {
        n.globals.extend(help);
    }
    n
}

/// `-dv` and friends: clusters of short global flags.
fn is_short_global_cluster(word: &str) -> bool {
    word.len() > 2
        && word.starts_with('-')
        && !word.starts_with("--")
        && word[1..].chars().all(|c| matches!(c, 'd' | 'v'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Vec<String> {
        normalise(s.split_whitespace().map(String::from)).to_clap_args("drbdadm")
    }

    #[test]
    fn option_before_or_after_the_command_is_the_same() {
        let a = norm("--clear-bitmap new-current-uuid res0");
        let b = norm("new-current-uuid --clear-bitmap res0");
        assert_eq!(a, b);
        assert_eq!(
            a,
            [
                "drbdadm",
                "new-current-uuid",
                "--clear-bitmap",
                "--",
                "res0"
            ]
        );
    }

    #[test]
    fn backend_options_after_double_dash() {
        let a = norm("-- --discard-my-data connect r0");
        let b = norm("connect --discard-my-data r0");
        let c = norm("connect r0 -- --discard-my-data");
        assert_eq!(a, b);
        assert_eq!(b, c);
    }

    #[test]
    fn globals_stay_global_wherever_written() {
        let a = norm("-c /tmp/x.conf --node alice create-md --force r0");
        let b = norm("create-md r0 --force -c /tmp/x.conf --node alice");
        assert_eq!(a, b);
        assert_eq!(
            a,
            [
                "drbdadm",
                "-c",
                "/tmp/x.conf",
                "--node",
                "alice",
                "create-md",
                "--force",
                "--",
                "r0"
            ]
        );
        assert_eq!(
            norm("--config-file=/a dump all"),
            norm("dump all --config-file=/a")
        );
    }

    #[test]
    fn separate_option_values_travel_with_their_option() {
        let a = norm("--max-peers 3 create-md r0");
        assert_eq!(a, ["drbdadm", "create-md", "--max-peers", "3", "--", "r0"]);
        assert_eq!(
            norm("create-md --max-peers=3 r0")[1..3],
            ["create-md", "--max-peers=3"]
        );
        assert_eq!(
            norm("--run-dir /x events2 r0"),
            ["drbdadm", "--run-dir", "/x", "events2", "--", "r0"]
        );
    }

    #[test]
    fn help_goes_to_the_command_when_there_is_one() {
        assert_eq!(norm("--help create-md"), norm("create-md --help"));
        assert_eq!(norm("create-md --help"), ["drbdadm", "create-md", "--help"]);
        assert_eq!(norm("-h"), ["drbdadm", "-h"]);
    }

    #[test]
    fn no_command_keeps_options_for_clap_to_report() {
        assert_eq!(norm("--version"), ["drbdadm", "--version"]);
        assert_eq!(norm("--bogus"), ["drbdadm", "--bogus"]);
    }
}
