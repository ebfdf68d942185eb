//! DSL errors, located at the user's call site.

use std::fmt;
use std::panic::Location;

/// An error found while building a graph, with the caller's `file:line:col`.
#[derive(Clone, Debug, PartialEq)]
pub struct DslError {
    /// The user's line that made the bad call (via `#[track_caller]`).
    pub location: &'static Location<'static>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.location.file(), self.location.line(), self.location.column(), self.message)
    }
}

impl std::error::Error for DslError {}
