//! The crate's single error type.

/// Why a worker could not start or stopped with an error. The message names the setting or
/// the service and what to do.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting is out of range or unusable; the message names it and its range.
    #[error("{0}")]
    Config(String),
    /// A service (database, Redis, a listening address) could not be reached or used.
    #[error("{what}: {source}")]
    Setup {
        /// What was being done, naming the setting or address.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The runtime stopped with an error.
    #[error(transparent)]
    Runtime(#[from] jobsched_runtime::RuntimeError),
}

impl WorkerError {
    /// A [`WorkerError::Setup`] from what was being done and why it failed.
    pub fn setup(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> WorkerError {
        WorkerError::Setup {
            what: what.into(),
            source: source.into(),
        }
    }
}
