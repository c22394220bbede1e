//! The job-type API users write their own types with: a [`Handler`] per job type, a typed
//! payload with a derived JSON Schema, and a [`Ctx`] for the run.
//!
//! ```
//! use jobsched_jobs::{Ctx, Handler, JobError};
//! use serde_json::{Value, json};
//!
//! /// Payload of `greet`.
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Greet {
//!     /// Who to greet.
//!     #[schemars(length(min = 1, max = 100))]
//!     name: String,
//! }
//!
//! struct GreetJob;
//!
//! impl Handler for GreetJob {
//!     type Payload = Greet;
//!     const NAME: &'static str = "greet";
//!     async fn run(&self, ctx: Ctx, p: Greet) -> Result<Value, JobError> {
//!         ctx.info(format!("greeting {}", p.name));
//!         ctx.progress(1.0, "done");
//!         Ok(json!({"greeting": format!("hello, {}", p.name)}))
//!     }
//! }
//! ```
//!
//! [`Typed`] turns a handler into the [`JobHandler`] a [`crate::Registry`] holds: submissions
//! are checked against the payload's schema (422s name each field), then deserialized, then
//! [`Handler::check`]ed; runs are tasks on the worker's async runtime.

use crate::{
    BodyFuture, DataDir, FieldError, JobContext, JobError, JobHandler, LogLevel, RunOutput,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default run time limit of a handler that does not set one (10 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A job type written in Rust: its name, its payload type and its async body.
pub trait Handler: Send + Sync + 'static {
    /// The payload, deserialized from the job's JSON; its derived schema is what submissions
    /// are checked against (and what `GET /job-types` shows).
    type Payload: DeserializeOwned + schemars::JsonSchema + Send + 'static;

    /// The `job_type` the handler serves.
    const NAME: &'static str;

    /// Whether a run can stop at the end of a Round Robin slice and resume from a checkpoint
    /// (see [`Ctx::slice_over`] and [`Ctx::preempt`]).
    const PREEMPTIBLE: bool = false;

    /// How long a run may take when the job sets no `timeout_seconds`; then
    /// [`Ctx::cancelled`] fires and the run fails as timed out.
    const DEFAULT_TIMEOUT: Duration = DEFAULT_TIMEOUT;

    /// Checks a schema cannot say (a path inside the data dir, two fields that go together).
    /// Runs at submission after the schema check and deserialization passed. Empty = valid.
    fn check(&self, payload: &Self::Payload, data_dir: &DataDir) -> Vec<FieldError> {
        let _ = (payload, data_dir);
        Vec::new()
    }

    /// The payload's JSON Schema, as registered and shown by `GET /job-types`: by default the
    /// one derived from [`Handler::Payload`]. A handler taking raw JSON (`Payload = Value`)
    /// writes its own.
    fn schema(&self) -> Value {
        serde_json::to_value(schemars::schema_for!(Self::Payload)).unwrap_or(Value::Bool(true))
    }

    /// Every problem with the raw payload, for a handler that checks it all itself (then the
    /// schema, deserialization and [`Handler::check`] steps are skipped); `None`, the default:
    /// those steps run.
    fn check_json(&self, payload: &Value, data_dir: &DataDir) -> Option<Vec<FieldError>> {
        let _ = (payload, data_dir);
        None
    }

    /// Run the job. `Ok(value)`: the job completed with `value` as its result. `Err`: see
    /// [`JobError`] ([`JobError::Retryable`] retries with backoff, [`JobError::Fatal`] fails at
    /// once). The body must not block its thread; CPU-heavy work goes to
    /// `tokio::task::spawn_blocking`.
    fn run(
        &self,
        ctx: Ctx,
        payload: Self::Payload,
    ) -> impl Future<Output = Result<Value, JobError>> + Send;
}

/// What a run of a [`Handler`] can see and do besides its payload. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ctx {
    inner: Arc<JobContext>,
}

impl Ctx {
    /// A context for a run (the worker makes one per run; tests can too).
    pub fn new(ctx: JobContext) -> Ctx {
        Ctx {
            inner: Arc::new(ctx),
        }
    }

    /// The job's id.
    pub fn job_id(&self) -> uuid::Uuid {
        self.inner.job_id
    }

    /// Which try this is: 1 for the first, one more for each retry.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The sandbox every path the job reads or writes goes through.
    pub fn data_dir(&self) -> &DataDir {
        &self.inner.data_dir
    }

    /// The whole run context, for code written against [`JobContext`] (blocking bodies).
    pub fn context(&self) -> &JobContext {
        &self.inner
    }

    /// Whether the run was asked to stop (cancelled, timed out, or the worker is shutting
    /// down). A body that sees it returns soon, with [`Ctx::stopped`] or a checkpoint.
    pub fn is_cancelled(&self) -> bool {
        self.inner.stop.is_set()
    }

    /// Resolves when the run is asked to stop; `select!` it against the work.
    pub async fn cancelled(&self) {
        self.inner.stop.wait().await;
    }

    /// The error to return when the body gives up because it was asked to stop. The worker
    /// hands the job back (shutdown), records the cancel, or fails the run as timed out.
    pub fn stopped(&self) -> JobError {
        JobError::Stopped
    }

    /// The checkpoint an earlier slice of this try saved ([`Ctx::preempt`]), if any. One that
    /// does not deserialize as `T` is logged and treated as none.
    pub fn checkpoint<T: DeserializeOwned>(&self) -> Option<T> {
        let cp = self.inner.checkpoint.as_ref()?;
        match serde_json::from_value(cp.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a checkpoint of another shape; starting over");
                None
            }
        }
    }

    /// When this Round Robin slice ends (`None`: run to completion).
    pub fn slice_deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Whether this Round Robin slice has ended: time to save a checkpoint and
    /// [`Ctx::preempt`].
    pub fn slice_over(&self) -> bool {
        self.inner.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Resolves when this Round Robin slice ends (never, outside Round Robin or for a type
    /// that is not [`Handler::preemptible`]).
    pub async fn slice_end(&self) {
        match self.inner.deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    }

    /// The error to return to end this slice and resume later from `checkpoint` (the next
    /// slice reads it with [`Ctx::checkpoint`]). No retry is spent.
    pub fn preempt<T: Serialize>(&self, checkpoint: &T) -> JobError {
        match serde_json::to_value(checkpoint) {
            Ok(v) => JobError::Preempted(v),
            Err(e) => JobError::Fatal(format!("the checkpoint does not serialize: {e}")),
        }
    }

    /// Report progress: `fraction` done (0 to 1) and what the job is doing. Kept with the
    /// job (throttled: the latest value wins) and shown by `GET /jobs/{id}`.
    pub fn progress(&self, fraction: f64, message: impl Into<String>) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let message = message.into();
        self.inner
            .notes
            .progress(fraction, (!message.is_empty()).then_some(message));
    }

    /// Add a line to this try's log (`GET /jobs/{id}/logs`; the last 1,000 lines and
    /// 256 KiB of each try are kept).
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.inner.notes.log(level, message.into());
    }

    /// [`Ctx::log`] at `debug`.
    pub fn debug(&self, message: impl Into<String>) {
        self.log(LogLevel::Debug, message);
    }

    /// [`Ctx::log`] at `info`.
    pub fn info(&self, message: impl Into<String>) {
        self.log(LogLevel::Info, message);
    }

    /// [`Ctx::log`] at `warn`.
    pub fn warn(&self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message);
    }

    /// [`Ctx::log`] at `error`.
    pub fn error(&self, message: impl Into<String>) {
        self.log(LogLevel::Error, message);
    }
}

/// A [`Handler`] as a registry's [`JobHandler`].
pub struct Typed<H: Handler> {
    handler: Arc<H>,
    schema: Value,
}

impl<H: Handler> Typed<H> {
    /// Wrap `handler`; its payload schema is taken once, here.
    pub fn new(handler: H) -> Typed<H> {
        let schema = handler.schema();
        Typed {
            handler: Arc::new(handler),
            schema,
        }
    }

    /// The wrapped handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The payload as `H::Payload` (checked against the schema first), or every problem.
    fn parse(&self, payload: &Value) -> Result<H::Payload, Vec<FieldError>> {
        let errors = crate::schema::check(&self.schema, payload);
        if !errors.is_empty() {
            return Err(errors);
        }
        deserialize::<H::Payload>(payload)
    }

    /// The payload as the body gets it: checked at submission, so only deserialized here.
    fn payload_for_run(&self, payload: &Value) -> Result<H::Payload, Vec<FieldError>> {
        deserialize::<H::Payload>(payload)
    }
}

/// `payload` as `T`, without copying it; the error names the payload.
fn deserialize<T: DeserializeOwned>(payload: &Value) -> Result<T, Vec<FieldError>> {
    T::deserialize(payload).map_err(|e| vec![FieldError::new("payload", e.to_string())])
}

/// Run blocking work (CPU, file I/O) on a blocking thread and wait for it; a panic in it
/// goes on in the caller, where the worker records it as the run's failure.
pub async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => std::panic::panic_any(format!("the blocking task did not finish: {e}")),
    }
}

/// A [`RunOutput`] as a [`Handler::run`] returns it: the result, or the checkpoint to resume
/// from as [`JobError::Preempted`].
pub fn into_result(out: RunOutput) -> Result<Value, JobError> {
    match out {
        RunOutput::Done(v) => Ok(v),
        RunOutput::Preempted { checkpoint } => Err(JobError::Preempted(checkpoint)),
    }
}

impl<H: Handler> std::fmt::Debug for Typed<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Typed")
            .field("name", &H::NAME)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> JobHandler for Typed<H> {
    fn name(&self) -> &'static str {
        H::NAME
    }

    fn preemptible(&self) -> bool {
        H::PREEMPTIBLE
    }

    fn validate(&self, payload: &Value, data_dir: &DataDir) -> Vec<FieldError> {
        if let Some(errors) = self.handler.check_json(payload, data_dir) {
            return errors;
        }
        match self.parse(payload) {
            Ok(p) => self.handler.check(&p, data_dir),
            Err(errors) => errors,
        }
    }

    fn default_timeout(&self) -> Duration {
        H::DEFAULT_TIMEOUT
    }

    fn run(&self, _payload: &Value, _ctx: &JobContext) -> Result<RunOutput, JobError> {
        Err(JobError::Fatal(format!(
            "job type `{}` runs only as a task on an async runtime (run_async)",
            H::NAME
        )))
    }

    fn blocking(&self) -> bool {
        false
    }

    fn run_async<'a>(&'a self, payload: &'a Value, ctx: &'a JobContext) -> BodyFuture<'a> {
        let parsed = self.payload_for_run(payload);
        let preemptible = H::PREEMPTIBLE;
        let ctx = Ctx::new(ctx.clone());
        Box::pin(async move {
            let payload = parsed.map_err(|errors| {
                let e = errors.into_iter().next().unwrap_or_else(|| {
                    FieldError::new("payload", "does not match the job type's payload")
                });
                JobError::InvalidPayload {
                    field: e.field,
                    message: e.message,
                }
            })?;
            match self.handler.run(ctx, payload).await {
                Ok(v) => Ok(RunOutput::Done(v)),
                Err(JobError::Preempted(checkpoint)) if preemptible => {
                    Ok(RunOutput::Preempted { checkpoint })
                }
                Err(JobError::Preempted(_)) => Err(JobError::Retryable(
                    "the run yielded a slice, but its job type is not preemptible; make \
                     Handler::preemptible return true"
                        .into(),
                )),
                Err(e) => Err(e),
            }
        })
    }

    fn schema(&self) -> Option<Value> {
        Some(self.schema.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Notes, Registry};
    use serde_json::json;
    use std::sync::Mutex;

    #[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
    struct Count {
        #[schemars(range(min = 1, max = 1000))]
        to: u32,
    }

    #[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
    struct Done {
        at: u32,
    }

    /// Counts to `to`, one per millisecond, reporting progress; yields at a slice's end.
    struct Counter;

    impl Handler for Counter {
        type Payload = Count;
        const NAME: &'static str = "count";
        const PREEMPTIBLE: bool = true;
        fn check(&self, p: &Count, _: &DataDir) -> Vec<FieldError> {
            if p.to == 13 {
                vec![FieldError::new("payload.to", "must not be 13")]
            } else {
                Vec::new()
            }
        }
        async fn run(&self, ctx: Ctx, p: Count) -> Result<Value, JobError> {
            let mut at = ctx.checkpoint::<Done>().map_or(0, |d| d.at);
            ctx.info(format!("starting at {at}"));
            while at < p.to {
                if ctx.is_cancelled() {
                    return Err(ctx.stopped());
                }
                if ctx.slice_over() {
                    return Err(ctx.preempt(&Done { at }));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                at += 1;
                ctx.progress(f64::from(at) / f64::from(p.to), format!("{at}"));
            }
            Ok(json!({"counted": at, "attempt": ctx.attempt()}))
        }
    }

    #[derive(Debug, Default)]
    struct Kept(Mutex<Vec<String>>);

    impl Notes for Kept {
        fn progress(&self, fraction: f64, message: Option<String>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{fraction} {}", message.unwrap_or_default()));
        }
        fn log(&self, level: LogLevel, message: String) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{}: {message}", level.as_str()));
        }
    }

    use crate::temp_data_dir as dd;

    #[test]
    fn submissions_are_checked_by_schema_then_by_the_handler() {
        let (_t, d) = dd();
        let mut r = Registry::new();
        r.register(Arc::new(Typed::new(Counter)));
        let h = r.get("count").unwrap();
        assert!(h.preemptible() && !h.blocking());
        assert_eq!(h.default_timeout(), DEFAULT_TIMEOUT);
        assert!(r.validate("count", &json!({"to": 5}), &d).is_empty());
        let e = r.validate("count", &json!({"to": 0}), &d);
        assert_eq!(e[0].field, "payload.to");
        assert_eq!(e[0].message, "must be from 1 to 1000, got 0");
        assert_eq!(
            r.validate("count", &json!({}), &d)[0].message,
            "is required"
        );
        assert_eq!(
            r.validate("count", &json!({"to": 13}), &d)[0].message,
            "must not be 13"
        );
        let schema = h.schema().unwrap();
        assert_eq!(schema["properties"]["to"]["maximum"], json!(1000.0));
    }

    #[tokio::test]
    async fn a_run_reports_progress_logs_and_resumes_from_its_checkpoint() {
        let (_t, d) = dd();
        let h = Typed::new(Counter);
        let kept = Arc::new(Kept::default());
        let mut c = JobContext::new(d.clone());
        c.notes = kept.clone();
        c.attempt = 2;
        let out = h.run_async(&json!({"to": 3}), &c).await.unwrap();
        assert_eq!(out, RunOutput::Done(json!({"counted": 3, "attempt": 2})));
        let notes = kept.0.lock().unwrap().clone();
        assert_eq!(notes[0], "info: starting at 0");
        assert_eq!(notes.last().unwrap(), "1 3");
        // A slice that is already over yields at once with its checkpoint; the next resumes.
        c.checkpoint = Some(json!({"at": 1}));
        c.deadline = Some(Instant::now());
        let out = h.run_async(&json!({"to": 1000}), &c).await.unwrap();
        assert_eq!(
            out,
            RunOutput::Preempted {
                checkpoint: json!({"at": 1})
            }
        );
        // Stop wins over everything: the body gives up.
        c.deadline = None;
        c.stop.set();
        let err = h.run_async(&json!({"to": 1000}), &c).await.unwrap_err();
        assert!(matches!(err, JobError::Stopped), "{err}");
        // A payload that does not deserialize never reaches the body (submissions were
        // checked against the schema; a run only deserializes).
        let err = h.run_async(&json!({"to": "x"}), &c).await.unwrap_err();
        assert!(
            matches!(&err, JobError::InvalidPayload { field, .. } if field == "payload"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn cancelled_resolves_when_the_stop_is_set() {
        let (_t, d) = dd();
        let c = Ctx::new(JobContext::new(d));
        let stop = c.inner.stop.clone();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        stop.set();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("cancelled() did not resolve after set()")
            .unwrap();
        assert!(c.is_cancelled());
    }
}
