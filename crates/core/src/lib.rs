//! jobsched-core: the domain of the jobsched job scheduler.
//!
//! This crate holds everything that is true regardless of where jobs are stored or how they
//! travel: the [`Job`] record and its [`JobStatus`] state machine, the four scheduling
//! [`policy`] names and settings, the one failure rule and retry backoff ([`retry`]), the
//! settings service ([`queue`]), and the [`ports`] (small traits) that the storage and
//! transport adapters implement. It performs no I/O and depends on no runtime.

pub mod dispatch;
pub mod error;
pub mod event;
pub mod job;
pub mod job_type;
pub mod layer;
pub mod notes;
pub mod policy;
pub mod ports;
pub mod queue;
pub mod retry;
pub mod schedule;
pub mod state;

pub use error::{Error, Result};
pub use job::{
    Backlog, CancelOutcome, DeadLetter, Job, JobFilter, JobId, JobPage, JobSpec, JobStats,
    MAX_SCHEDULE_AHEAD_SECONDS, MAX_TIMEOUT_SECONDS, MAX_UNIQUE_KEY_CHARS, MIN_TIMEOUT_SECONDS,
    NewJob, PendingJob, RetryBackoff, StartedJob, UniqueKey, check_delay, check_run_at,
    check_timeout, check_unique_key, name_prefix_end, nul_path,
};
pub use policy::{PolicyKind, PolicySettings, QueuedJob};
pub use state::JobStatus;
