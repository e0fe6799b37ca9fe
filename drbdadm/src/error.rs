//! drbdadm's exit codes and the error that carries one.

use std::fmt;

/// Bad command line (drbdadm's `E_USAGE`, 1 since drbd-utils 9.x; it was 3).
pub const E_USAGE: i32 = 1;
/// The configuration is invalid or does not name the resource (`E_CONFIG_INVALID`).
pub const E_CONFIG_INVALID: i32 = 10;
/// drbdsetup's exit code when it cannot talk to the kernel (here: the daemon), and for other
/// failures of a command it ran.
pub const E_EXEC: i32 = 20;

/// An error with the exit code drbdadm would use for it.
#[derive(Debug)]
pub struct AdmError {
    pub code: i32,
    pub message: String,
}

impl AdmError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        AdmError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for AdmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdmError {}

/// The daemon could not be reached or its answer not read.
impl From<udrbd::ctl::client::ClientError> for AdmError {
    fn from(e: udrbd::ctl::client::ClientError) -> Self {
        AdmError::new(E_EXEC, e.to_string())
    }
}

/// What a binary's `main` returns: a clap parse failure (printed; `usage_code` unless it was
/// `--help`/`--version`) or the outcome of the command (its message on stderr, its code).
pub fn exit(
    result: Result<Result<(), AdmError>, clap::Error>,
    usage_code: i32,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let code = |c: i32| ExitCode::from(u8::try_from(c).unwrap_or(u8::MAX));
    match result {
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidSubcommand => {
            // drbdadm's words; clap's suggestion of a similar command is worth keeping.
            let word = match e.get(clap::error::ContextKind::InvalidSubcommand) {
                Some(clap::error::ContextValue::String(w)) => w.clone(),
                _ => String::new(),
            };
            let prog = std::env::args()
                .next()
                .and_then(|a| a.rsplit('/').next().map(str::to_string))
                .unwrap_or_else(|| "drbdadm".into());
            eprintln!("{prog}: Unknown command '{word}'");
            if let Some(clap::error::ContextValue::Strings(s)) =
                e.get(clap::error::ContextKind::SuggestedSubcommand)
            {
                eprintln!("  (did you mean '{}'?)", s.join("', '"));
            }
            code(usage_code)
        }
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                code(usage_code)
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            if !e.message.is_empty() {
                eprintln!("{e}");
            }
            code(e.code)
        }
    }
}
