//! The runtime's error type.

/// Errors from the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A setting is out of range.
    #[error("invalid runtime setting {setting}: {message}")]
    Config {
        /// Flag / env name.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A store or transport call failed.
    #[error(transparent)]
    Port(#[from] jobsched_core::Error),
    /// A background task panicked or was aborted.
    #[error("runtime task failed: {0}")]
    Task(String),
}
