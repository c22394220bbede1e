//! The crate's single error type.

use std::io;
use std::path::PathBuf;

/// Why a job run (or a data-dir operation) failed. [`JobError::is_retryable`] tells the runtime
/// whether another attempt could succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A transient failure: the runtime retries (with backoff) while the retry budget lasts.
    #[error("{0}")]
    Retryable(String),
    /// A permanent failure: retrying cannot help, the job fails at once.
    #[error("{0}")]
    Fatal(String),
    /// A user path was refused by the data-dir sandbox (fatal).
    #[error(
        "path `{path}` refused: {reason}; job paths must be inside the data dir `{}` \
         (JOBSCHED_DATA_DIR), given relative to it or as an absolute path under it",
        root.display()
    )]
    OutsideDataDir {
        /// The path as the user gave it.
        path: String,
        /// The data dir root.
        root: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An input file does not exist (fatal: retrying will not make it appear).
    #[error(
        "input file `{path}` not found in the data dir `{}` (JOBSCHED_DATA_DIR); put the file \
         there or fix the path",
        root.display()
    )]
    NotFound {
        /// The path as the user gave it.
        path: String,
        /// The data dir root.
        root: PathBuf,
    },
    /// The payload does not match the job type (fatal; normally caught at submit time).
    #[error("invalid payload field `{field}`: {message}")]
    InvalidPayload {
        /// Dotted path of the field, e.g. `payload.duration`.
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// The configured data dir cannot be used.
    #[error(
        "data dir `{}` is unusable: {source}; set JOBSCHED_DATA_DIR to an existing (or creatable) \
         directory",
        path.display()
    )]
    DataDir {
        /// The configured path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The run saw its stop flag ([`crate::JobContext::stop`]: cancel, timeout or worker
    /// shutdown) and gave up before finishing. Retryable; the worker decides what happens next.
    #[error(
        "the run was stopped before it finished (cancelled, timed out or the worker is shutting \
         down)"
    )]
    Stopped,
    /// The run ended its Round Robin slice and asks to resume later from this checkpoint (see
    /// [`crate::sdk::Ctx::preempt`]). Not a failure: no retry is spent.
    #[error("the run yielded at the end of its slice (checkpoint saved)")]
    Preempted(serde_json::Value),
    /// An I/O error while running a job. Retryable unless its kind is clearly permanent
    /// (permission denied, invalid data, read-only file system, …).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl JobError {
    /// Whether another attempt of the job could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            JobError::Retryable(_) | JobError::Stopped | JobError::Preempted(_) => true,
            JobError::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::InvalidData
                    | io::ErrorKind::InvalidInput
                    | io::ErrorKind::AlreadyExists
                    | io::ErrorKind::Unsupported
                    | io::ErrorKind::IsADirectory
                    | io::ErrorKind::NotADirectory
                    | io::ErrorKind::ReadOnlyFilesystem
                    | io::ErrorKind::InvalidFilename
                    | io::ErrorKind::FileTooLarge
            ),
            JobError::Fatal(_)
            | JobError::OutsideDataDir { .. }
            | JobError::NotFound { .. }
            | JobError::InvalidPayload { .. }
            | JobError::DataDir { .. } => false,
        }
    }

    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        JobError::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability() {
        assert!(JobError::Retryable("x".into()).is_retryable());
        assert!(!JobError::Fatal("x".into()).is_retryable());
        assert!(
            JobError::io("reading a", io::Error::from(io::ErrorKind::Interrupted)).is_retryable()
        );
        assert!(
            !JobError::io(
                "reading a",
                io::Error::from(io::ErrorKind::PermissionDenied)
            )
            .is_retryable()
        );
        let e = JobError::NotFound {
            path: "a.txt".into(),
            root: "/data".into(),
        };
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("JOBSCHED_DATA_DIR"), "{e}");
    }
}
