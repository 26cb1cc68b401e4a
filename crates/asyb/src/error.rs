//! The library's one error type. Every fallible public function returns [`Result`].
//!
//! Variants are structured so the binary can print one line that names the file, line,
//! column or field at fault. Kernels (losses, prox operators, the worker loop) are
//! infallible: input is validated at the boundary (config `check()`, dataset readers).

use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A data file could not be parsed.
    #[error("{}:{line}:{col}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// 1-based byte column within the line.
        col: u64,
        reason: String,
    },
    /// A data file is readable but unusable as a whole (empty, no features, ...).
    #[error("{}: {reason}", path.display())]
    Data { path: PathBuf, reason: String },
    /// A configuration value is out of range or inconsistent with another.
    #[error("invalid {field}: {reason}")]
    Config { field: String, reason: String },
    /// A model file is malformed or does not fit the data it is used with.
    #[error("{}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error raised on another MPI rank and reported by rank 0.
    #[error("rank {rank}: {message}")]
    Remote {
        rank: usize,
        /// Whether it was the fault of the user's input there.
        user_input: bool,
        message: String,
    },
    /// A worker or shard failed during training.
    #[error("{role} {id}: {reason}")]
    Runtime {
        role: &'static str,
        id: usize,
        reason: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Config`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the error is the fault of the user's input (data, config, model file),
    /// as opposed to the environment (I/O) or an internal failure.
    pub fn is_user_input(&self) -> bool {
        match self {
            Error::Remote { user_input, .. } => *user_input,
            _ => matches!(
                self,
                Error::Parse { .. }
                    | Error::Data { .. }
                    | Error::Config { .. }
                    | Error::Model { .. }
            ),
        }
    }
}
