//! CLI errors: one line naming the problem and, where there is one, the fix.

use std::fmt;

/// A user-facing failure; always exits with status 2.
#[derive(Debug)]
pub struct CliError {
    problem: String,
    fix: Option<String>,
}

impl CliError {
    /// A problem with no obvious fix.
    pub fn new(problem: impl Into<String>) -> CliError {
        CliError { problem: problem.into(), fix: None }
    }

    /// A problem and what to do about it.
    pub fn with_fix(problem: impl Into<String>, fix: impl Into<String>) -> CliError {
        CliError { problem: problem.into(), fix: Some(fix.into()) }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line of readable length, even if a nested message had newlines
        // or quoted a huge type.
        let problem = lsc_ir::types::brief(&self.problem.replace('\n', " "), 1000);
        match &self.fix {
            Some(fix) => write!(f, "{problem}; {fix}"),
            None => write!(f, "{problem}"),
        }
    }
}

impl From<lsc_runtime::RuntimeError> for CliError {
    fn from(e: lsc_runtime::RuntimeError) -> CliError {
        use lsc_runtime::RuntimeError as E;
        let fix = match &e {
            E::Io { source, .. }
                if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::FileTooLarge) =>
            {
                Some("free disk space or raise the file-size limit (ulimit -f); the file it would have replaced is intact")
            }
            E::Io { .. } => Some("check the path"),
            E::Format { .. } => Some("the file is corrupt or truncated; re-export it with safetensors"),
            E::Missing { .. } | E::Mismatch { .. } => {
                Some("the weights were made for another model or config; pass the matching --model/--config")
            }
            E::Exec(_) | E::Input(_) | E::Diverged(_) => None,
        };
        CliError { problem: e.to_string(), fix: fix.map(str::to_string) }
    }
}

/// Result of a CLI command.
pub type CliResult = Result<(), CliError>;
