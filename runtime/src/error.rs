//! Runtime errors.

use std::path::PathBuf;

/// Everything that can go wrong outside the graph itself: files, weights, shapes of data.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A safetensors file is corrupt, truncated or not safetensors at all.
    #[error("{path}: not a valid safetensors file ({reason})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A tensor the program needs is absent.
    #[error("{path}: missing tensor `{name}` ({expected})")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Its expected type.
        expected: String,
    },
    /// A tensor has the wrong shape or an unsupported dtype.
    #[error("{path}: tensor `{name}` is {found}, expected {expected}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What the file holds.
        found: String,
        /// What the program needs.
        expected: String,
    },
    /// Execution failed.
    #[error("{0}")]
    Exec(#[from] lsc_interp::InterpError),
    /// Training produced a non-finite loss or gradient.
    #[error("{0}")]
    Diverged(String),
    /// Bad data given to the runtime (empty prompt, too long a sequence, ...).
    #[error("{0}")]
    Input(String),
}
