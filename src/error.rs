//! The library's one error type. Errors that a user can cause say what to do about them.

use std::path::PathBuf;

/// Everything that can go wrong in bilge's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, environment variable or config file value is invalid.
    #[error("invalid {name}: {message}")]
    Config {
        /// The flag or key, e.g. `--docker.timeout`.
        name: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {message}")]
    ConfigFile {
        /// The file's path.
        path: PathBuf,
        /// The read or parse error.
        message: String,
    },
    /// The Docker daemon could not be reached or answered with an error.
    #[error("docker: {0}")]
    Docker(String),
    /// A Docker call took longer than `--docker.timeout`.
    #[error("docker: no answer within {0:?} (see --docker.timeout)")]
    DockerTimeout(std::time::Duration),
    /// The SQLite store failed.
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What bilge was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else, with a message for the user.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Builds a [`Error::Config`] for a flag or key.
    pub fn config(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            name: name.into(),
            message: message.into(),
        }
    }

    /// Wraps an I/O error with what bilge was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True for errors that a user caused through flags or config (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Config { .. } | Error::ConfigFile { .. })
    }
}

impl From<bollard::errors::Error> for Error {
    fn from(e: bollard::errors::Error) -> Self {
        Error::Docker(e.to_string())
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
