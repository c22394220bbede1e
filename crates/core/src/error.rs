//! The core error type shared by every port.

use crate::state::JobStatus;

/// Result alias using the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised by the domain and surfaced through the ports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of user input is invalid. `field` names it (dotted path, e.g. `payload.duration`).
    #[error("invalid field `{field}`: {message}")]
    Validation {
        /// Dotted path of the offending field.
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// A policy name that is not one of the known policies.
    #[error("unknown policy `{name}`: valid policies are fcfs, sjf, priority, round_robin")]
    UnknownPolicy {
        /// The name that was given.
        name: String,
    },
    /// A state change that the state machine does not allow.
    #[error("illegal transition {from} -> {to}")]
    IllegalTransition {
        /// Current state.
        from: JobStatus,
        /// Requested state.
        to: JobStatus,
    },
    /// An idempotency key already names a job submitted with a different request.
    #[error(
        "unique_key `{key}` was already used by job {job_id} with a different request: send \
         the same request again to get that job, or use a new key"
    )]
    KeyConflict {
        /// The key.
        key: String,
        /// The job the key belongs to.
        job_id: crate::JobId,
    },
    /// A backend (database, Redis, …) failed. `component` names which one.
    #[error("{component} error: {source}")]
    Backend {
        /// `postgres`, `sqlite`, `redis`, …
        component: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The connection to a backend broke after the request was sent (the server crashed or
    /// the network dropped mid-statement): a change the request carried may or may not have
    /// been applied.
    #[error("{component} connection lost mid-request: {source}")]
    Interrupted {
        /// `postgres`, `sqlite`, `redis`, …
        component: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Build a [`Error::Validation`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Wrap a backend error.
    pub fn backend(
        component: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            component,
            source: source.into(),
        }
    }
}
