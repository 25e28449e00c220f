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
    #[error("docker: {message}")]
    Docker {
        /// The HTTP status the daemon answered with; `None` when it gave no answer (no socket, a
        /// broken connection, an answer bilge could not read).
        status: Option<u16>,
        /// What happened, for the user (bollard's or the daemon's own words).
        message: String,
        /// The error underneath (bollard's, hyper's, the socket's), when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
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

    /// A Docker error with no answer from the daemon and no error underneath (a missing socket).
    pub fn docker(message: impl Into<String>) -> Self {
        Error::Docker {
            status: None,
            message: message.into(),
            source: None,
        }
    }

    /// A Docker error with what went wrong underneath (a refused connection, a malformed answer).
    pub fn docker_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Docker {
            status: None,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The HTTP status of a Docker error answered by the daemon (409 for an object in use, 404
    /// for one that is gone, …); `None` for every other error.
    pub fn docker_status(&self) -> Option<u16> {
        match self {
            Error::Docker { status, .. } => *status,
            _ => None,
        }
    }

    /// True for errors that a user caused through flags or config (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Config { .. } | Error::ConfigFile { .. })
    }
}

impl From<bollard::errors::Error> for Error {
    /// Keeps bollard's error as the source and the daemon's status, when it answered one.
    fn from(e: bollard::errors::Error) -> Self {
        let status = match &e {
            bollard::errors::Error::DockerResponseServerError { status_code, .. } => {
                Some(*status_code)
            }
            _ => None,
        };
        Error::Docker {
            status,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_docker_answer_keeps_its_status_and_its_source() {
        let e = Error::from(bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message: "conflict: unable to remove repository reference".into(),
        });
        assert_eq!(e.docker_status(), Some(409));
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            e.to_string(),
            "docker: Docker responded with status code 409: conflict: unable to remove repository reference"
        );
    }

    #[test]
    fn errors_without_an_answer_have_no_status() {
        assert_eq!(Error::docker("no socket at /x").docker_status(), None);
        assert_eq!(
            Error::from(bollard::errors::Error::RequestTimeoutError).docker_status(),
            None
        );
        assert_eq!(Error::Other("x".into()).docker_status(), None);
    }
}
