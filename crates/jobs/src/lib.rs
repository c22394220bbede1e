//! jobsched-jobs: the job types a jobsched worker can run, the API they are written on, and
//! the sandbox they run in.
//!
//! A job type is a [`Handler`] (see [`sdk`]): a name, a payload type with a JSON Schema, and an
//! async body given a [`Ctx`] (job id, try, cancellation, checkpoint, progress, log). [`Typed`]
//! makes it the [`JobHandler`] a [`Registry`] holds, which checks payloads at submission and
//! runs bodies on a worker. The built-in types [`sleep`], [`word_count`], [`thumbnail`] and
//! [`http`] are written on the same API; [`Registry::builtin`] registers them. Nothing here
//! depends on a database or Redis.
//!
//! Every user-supplied path goes through the [`DataDir`] sandbox (`JOBSCHED_DATA_DIR`).

mod decode_budget;
pub mod error;
pub mod http;
mod payload;
pub mod probe;
pub mod registry;
pub mod sandbox;
pub mod schema;
pub mod sdk;
pub mod sleep;
pub mod thumbnail;
pub mod word_count;

/// A data directory in a fresh temporary directory (unit tests), with the guard that removes it.
#[cfg(test)]
pub(crate) fn temp_data_dir() -> (tempfile::TempDir, DataDir) {
    let t = tempfile::tempdir().unwrap();
    let d = DataDir::new(t.path()).unwrap();
    (t, d)
}

pub use error::JobError;
pub use payload::kind as json_kind;
pub use probe::ProbeJob;
pub use registry::Registry;
pub use sandbox::{DataDir, FileId, InputFile, OutputFile};
pub use sdk::{Ctx, Handler, Typed};
pub use sleep::SleepJob;
pub use thumbnail::ThumbnailJob;
pub use word_count::WordCountJob;

use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Largest `timeout_seconds` a job may ask for (7 days).
pub const MAX_TIMEOUT_SECONDS: u64 = 604_800;

/// A run's stop request (cancel, timeout, worker shutdown): a flag blocking bodies check
/// between steps (it dereferences to the [`AtomicBool`]) and a signal async bodies can await
/// ([`Stop::wait`]). Cheap to clone; clones share the request.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<StopInner>);

#[derive(Debug, Default)]
struct StopInner {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    /// A stop that has not been requested.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Request the stop and wake every [`Stop::wait`].
    pub fn set(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether the stop was requested.
    pub fn is_set(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Wait until the stop is requested (at once if it already was). A request made by a plain
    /// store to the flag rather than [`Stop::set`] is seen within 50 ms.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

impl std::ops::Deref for Stop {
    type Target = AtomicBool;
    fn deref(&self) -> &AtomicBool {
        &self.0.flag
    }
}

/// How much a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected the job got past.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The level's name as stored and served (`debug`, `info`, `warn`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }
}

/// Where a run's progress and log lines go. The worker's keeps them (bounded, throttled) in
/// the store; [`NoNotes`] only traces them.
pub trait Notes: Send + Sync + fmt::Debug {
    /// The run's progress: `fraction` from 0 to 1 (clamped), and what it is doing.
    fn progress(&self, fraction: f64, message: Option<String>);
    /// One log line of the run.
    fn log(&self, level: LogLevel, message: String);
}

/// Notes that are only traced (tests, tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotes;

impl Notes for NoNotes {
    fn progress(&self, fraction: f64, message: Option<String>) {
        tracing::debug!(fraction, message, "job progress");
    }
    fn log(&self, level: LogLevel, message: String) {
        tracing::debug!(level = level.as_str(), message, "job log");
    }
}

/// What a run gets besides its payload.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id.
    pub job_id: uuid::Uuid,
    /// Which try this is: 1 for the first, 1 + the retries spent before it (Round Robin slices
    /// of one try share its number).
    pub attempt: u32,
    /// Sandbox root for every path the job reads or writes.
    pub data_dir: DataDir,
    /// Progress saved by an earlier Round Robin slice.
    pub checkpoint: Option<Value>,
    /// End of this Round Robin quantum; `None` = run to completion.
    pub deadline: Option<Instant>,
    /// Set by the worker on cancel, shutdown or timeout. Jobs check it while they work (between
    /// sleep steps, read chunks, decoder reads, budget waits): preemptible jobs then return
    /// [`RunOutput::Preempted`], others [`JobError::Stopped`].
    pub stop: Stop,
    /// Where progress and log lines go.
    pub notes: Arc<dyn Notes>,
}

impl JobContext {
    /// A context with a nil job id, attempt 1, no checkpoint, no deadline, a fresh (unset)
    /// stop and notes that are only traced.
    pub fn new(data_dir: DataDir) -> Self {
        JobContext {
            job_id: uuid::Uuid::nil(),
            attempt: 1,
            data_dir,
            checkpoint: None,
            deadline: None,
            stop: Stop::new(),
            notes: Arc::new(NoNotes),
        }
    }
}

/// How a run that did not fail ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutput {
    /// Finished; the value becomes the job's result.
    Done(Value),
    /// Stopped early (quantum over or shutdown); resume later from `checkpoint`.
    Preempted {
        /// Progress to pass back as [`JobContext::checkpoint`] on the next run.
        checkpoint: Value,
    },
}

/// One problem with a submitted payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Dotted path of the offending field, e.g. `payload.duration`.
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl FieldError {
    /// Build a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl From<FieldError> for (String, String) {
    fn from(e: FieldError) -> Self {
        (e.field, e.message)
    }
}

/// A job type.
pub trait JobHandler: Send + Sync + fmt::Debug {
    /// The `job_type` name it is registered under.
    fn name(&self) -> &'static str;
    /// Whether it can stop at a quantum end and resume from a checkpoint.
    fn preemptible(&self) -> bool;
    /// Every problem with `payload` (cheap: no file contents are read). Fields are dotted paths
    /// like `payload.duration`. Empty = valid.
    fn validate(&self, payload: &Value, data_dir: &DataDir) -> Vec<FieldError>;
    /// How long a run may take when the job sets no `timeout_seconds`; the worker sets
    /// [`JobContext::stop`] when it expires.
    fn default_timeout(&self) -> Duration;
    /// Run the job (blocking).
    fn run(&self, payload: &Value, ctx: &JobContext) -> Result<RunOutput, JobError>;
    /// Whether [`JobHandler::run`] keeps its thread busy (CPU work, file I/O). The worker runs
    /// such bodies on a blocking thread; the others through [`JobHandler::run_async`], as a
    /// task on its async runtime, with no thread hand-off per job.
    fn blocking(&self) -> bool {
        true
    }
    /// The body as a future, for a handler that is not [`JobHandler::blocking`]. It must not
    /// block; it checks [`JobContext::stop`] as [`JobHandler::run`] does. The default runs
    /// [`JobHandler::run`] where it is polled.
    fn run_async<'a>(&'a self, payload: &'a Value, ctx: &'a JobContext) -> BodyFuture<'a> {
        Box::pin(std::future::ready(self.run(payload, ctx)))
    }
    /// The payload's JSON Schema, where the type declares one (every [`Handler`] does).
    fn schema(&self) -> Option<Value> {
        None
    }
}

/// What [`JobHandler::run_async`] returns.
pub type BodyFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<RunOutput, JobError>> + Send + 'a>>;
