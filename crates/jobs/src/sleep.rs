//! `sleep`: a simulated workload, preemptible.
//!
//! Payload: `{"duration": seconds from 0 to [`MAX_DURATION_SECONDS`] (required),
//! "fail_probability": 0..=1 (default 0)}`; other fields are ignored. Result:
//! `{"slept": duration}`. Default timeout: the maximum duration plus a minute.
//!
//! The job sleeps in steps of at most [`STEP`], checking the stop flag between steps; the
//! worker runs it as an async task (no thread of its own), [`SleepJob::run`] is the same
//! schedule on the calling thread. Under a
//! Round Robin deadline it completes in the current slice if the remaining time ends no later
//! than the deadline plus [`GRACE`] (which absorbs dispatch overhead, so a job of N quanta takes
//! exactly N slices); otherwise it sleeps until the deadline and returns
//! `Preempted { checkpoint: {"elapsed": seconds done so far} }`, and the next run resumes from
//! there. On completion it fails with [`JobError::Retryable`] with probability
//! `fail_probability`.

use crate::payload::{self, field, get, invalid, kind};
use crate::sdk::{Ctx, Handler, into_result};
use crate::{DataDir, FieldError, JobContext, JobError, RunOutput};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Longest single sleep between checks of the deadline and the stop flag.
pub const STEP: Duration = Duration::from_millis(10);
/// How far past the deadline a slice may run to finish the job instead of taking another
/// slice for a sliver of remaining time.
pub const GRACE: Duration = Duration::from_millis(2);

/// The end of an async run's wait that a thread sleeps instead of the runtime's
/// millisecond timer, so a run ends on time (and a Round Robin slice at its deadline).
pub const PRECISE: Duration = Duration::from_millis(2);

/// Longest accepted `duration` (one day).
pub const MAX_DURATION_SECONDS: u64 = 86_400;

/// The `sleep` job type.
#[derive(Debug, Clone, Copy, Default)]
pub struct SleepJob;

struct Params {
    duration: f64,
    fail_probability: f64,
}

fn parse(payload: &Value) -> Result<Params, Vec<FieldError>> {
    let obj = payload::object(payload)?;
    let mut errors = Vec::new();
    let accepted = format!("a number of seconds from 0 to {MAX_DURATION_SECONDS} (one day)");
    let duration = match get(obj, "duration") {
        None => {
            errors.push(FieldError::new(
                field("duration"),
                format!("is required: {accepted}"),
            ));
            0.0
        }
        Some(v) => number_in(v, 0.0..=MAX_DURATION_SECONDS as f64, "duration", &accepted)
            .unwrap_or_else(|e| {
                errors.push(e);
                0.0
            }),
    };
    let fail_probability = match get(obj, "fail_probability") {
        None => 0.0,
        Some(v) => number_in(v, 0.0..=1.0, "fail_probability", "a number from 0 to 1")
            .unwrap_or_else(|e| {
                errors.push(e);
                0.0
            }),
    };
    if errors.is_empty() {
        Ok(Params {
            duration,
            fail_probability,
        })
    } else {
        Err(errors)
    }
}

/// `v` as a number within `range`, or the error naming payload field `name` and what it
/// accepts.
fn number_in(
    v: &Value,
    range: std::ops::RangeInclusive<f64>,
    name: &str,
    accepted: &str,
) -> Result<f64, FieldError> {
    match v.as_f64() {
        Some(n) if range.contains(&n) => Ok(n),
        Some(n) => Err(FieldError::new(
            field(name),
            format!("must be {accepted}, got {n}"),
        )),
        None => Err(FieldError::new(
            field(name),
            format!("must be {accepted}, got {}", kind(v)),
        )),
    }
}

/// Seconds already done according to a checkpoint; a missing or malformed checkpoint means 0.
fn elapsed_from(checkpoint: Option<&Value>) -> f64 {
    let Some(cp) = checkpoint else { return 0.0 };
    match cp.get("elapsed").and_then(Value::as_f64) {
        Some(e) if e.is_finite() && e >= 0.0 => e,
        _ => {
            tracing::warn!(checkpoint = %cp, "ignoring malformed sleep checkpoint; starting over");
            0.0
        }
    }
}

impl SleepJob {
    /// The payload's JSON Schema (the checks below are the stricter word).
    pub fn payload_schema() -> Value {
        json!({
            "type": "object",
            "required": ["duration"],
            "properties": {
                "duration": {
                    "description": "Seconds to sleep.",
                    "type": "number", "minimum": 0, "maximum": MAX_DURATION_SECONDS
                },
                "fail_probability": {
                    "description": "Chance that the run fails (retryably) when it ends.",
                    "type": "number", "minimum": 0, "maximum": 1
                }
            }
        })
    }

    /// Every problem with `payload`. Empty = valid.
    pub fn validate(&self, payload: &Value, _data_dir: &DataDir) -> Vec<FieldError> {
        parse(payload).err().unwrap_or_default()
    }

    /// The run on the calling thread (tests and tools; the worker runs [`SleepJob::run_async`]).
    pub fn run(&self, payload: &Value, ctx: &JobContext) -> Result<RunOutput, JobError> {
        let plan = Plan::new(payload, ctx)?;
        loop {
            match plan.step(ctx.stop.load(Ordering::Relaxed)) {
                Step::Wait(d) => std::thread::sleep(d),
                Step::Preempt => return Ok(plan.preempted()),
                Step::Finish => return plan.done(),
            }
        }
    }

    /// The run as a task: no thread of its own.
    pub async fn run_async(
        &self,
        payload: &Value,
        ctx: &JobContext,
    ) -> Result<RunOutput, JobError> {
        let plan = Plan::new(payload, ctx)?;
        loop {
            match plan.step(ctx.stop.load(Ordering::Relaxed)) {
                // The runtime's timer fires up to a millisecond late: it covers all but
                // the last PRECISE of a wait, a thread sleeps the rest to the microsecond.
                Step::Wait(d) if d > PRECISE => tokio::time::sleep(d - PRECISE).await,
                Step::Wait(d) => {
                    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
                }
                Step::Preempt => return Ok(plan.preempted()),
                Step::Finish => return plan.done(),
            }
        }
    }
}

/// `sleep` on the job-type API every user type is written on: the payload is taken as JSON
/// (checked by [`SleepJob::validate`]), a slice's end yields a checkpoint.
impl Handler for SleepJob {
    type Payload = Value;
    const NAME: &'static str = "sleep";
    const PREEMPTIBLE: bool = true;
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(MAX_DURATION_SECONDS + 60);

    fn schema(&self) -> Value {
        SleepJob::payload_schema()
    }

    fn check_json(&self, payload: &Value, data_dir: &DataDir) -> Option<Vec<FieldError>> {
        Some(self.validate(payload, data_dir))
    }

    async fn run(&self, ctx: Ctx, payload: Value) -> Result<Value, JobError> {
        into_result(self.run_async(&payload, ctx.context()).await?)
    }
}

/// One run's schedule: when the sleep ends and which Round Robin deadline it honours.
struct Plan<'a> {
    payload: &'a Value,
    params: Params,
    /// Seconds slept by earlier slices.
    done_before: f64,
    start: Instant,
    /// `None`: so far in the future that it cannot be represented (never finishes).
    finish: Option<Instant>,
    deadline: Option<Instant>,
}

/// What a run does next.
enum Step {
    /// Sleep this long, then ask again.
    Wait(Duration),
    /// Stop here and hand back a checkpoint.
    Preempt,
    /// The whole duration has passed.
    Finish,
}

impl<'a> Plan<'a> {
    fn new(payload: &'a Value, ctx: &JobContext) -> Result<Self, JobError> {
        let params = parse(payload).map_err(invalid)?;
        let done_before = elapsed_from(ctx.checkpoint.as_ref()).min(params.duration);
        let start = Instant::now();
        // `parse` bounds the duration and `elapsed_from` the checkpoint; saturate anyway.
        let remaining =
            Duration::try_from_secs_f64(params.duration - done_before).unwrap_or(Duration::MAX);
        let finish = start.checked_add(remaining);
        // The deadline to honour, unless the job finishes within it (plus grace).
        let deadline = ctx.deadline.filter(|dl| match finish {
            Some(f) => f > dl.checked_add(GRACE).unwrap_or(*dl),
            None => true,
        });
        Ok(Plan {
            payload,
            params,
            done_before,
            start,
            finish,
            deadline,
        })
    }

    /// The next step, `stop` being the stop flag's value now.
    fn step(&self, stop: bool) -> Step {
        let now = Instant::now();
        if self.finish.is_some_and(|f| now >= f) {
            return Step::Finish;
        }
        if stop || self.deadline.is_some_and(|dl| now >= dl) {
            return Step::Preempt;
        }
        let mut until = self.finish.or_else(|| now.checked_add(STEP)).unwrap_or(now);
        if let Some(dl) = self.deadline {
            until = until.min(dl);
        }
        Step::Wait(until.saturating_duration_since(now).min(STEP))
    }

    fn preempted(&self) -> RunOutput {
        RunOutput::Preempted {
            checkpoint: json!({ "elapsed": self.done_before + self.start.elapsed().as_secs_f64() }),
        }
    }

    fn done(&self) -> Result<RunOutput, JobError> {
        let p = self.params.fail_probability;
        if p > 0.0 && rand::random::<f64>() < p {
            return Err(JobError::Retryable(format!(
                "simulated failure (fail_probability={p})"
            )));
        }
        let slept = self
            .payload
            .get("duration")
            .cloned()
            .unwrap_or(json!(self.params.duration));
        Ok(RunOutput::Done(json!({ "slept": slept })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> (tempfile::TempDir, JobContext) {
        let t = tempfile::tempdir().unwrap();
        let c = JobContext::new(DataDir::new(t.path()).unwrap());
        (t, c)
    }

    #[test]
    fn completes_without_deadline() {
        let (_t, c) = ctx();
        let start = Instant::now();
        let out = SleepJob.run(&json!({"duration": 0.03}), &c).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(out, RunOutput::Done(json!({"slept": 0.03})));
        let out = SleepJob.run(&json!({"duration": 0}), &c).unwrap();
        assert_eq!(out, RunOutput::Done(json!({"slept": 0})));
    }

    /// The async body keeps the same schedule: the duration, a deadline's checkpoint, the stop
    /// flag.
    #[tokio::test]
    async fn async_body_sleeps_preempts_and_stops_like_the_blocking_one() {
        let (_t, mut c) = ctx();
        let start = Instant::now();
        let out = SleepJob
            .run_async(&json!({"duration": 0.03}), &c)
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(out, RunOutput::Done(json!({"slept": 0.03})));
        c.deadline = Some(Instant::now() + Duration::from_millis(20));
        let RunOutput::Preempted { checkpoint } = SleepJob
            .run_async(&json!({"duration": 1}), &c)
            .await
            .unwrap()
        else {
            panic!("expected a checkpoint at the deadline");
        };
        let elapsed = checkpoint["elapsed"].as_f64().unwrap();
        assert!((0.019..0.5).contains(&elapsed), "{elapsed}");
        c.deadline = None;
        c.stop.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let out = SleepJob
            .run_async(&json!({"duration": 100}), &c)
            .await
            .unwrap();
        assert!(matches!(out, RunOutput::Preempted { .. }), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn completes_when_remaining_fits_before_deadline() {
        let (_t, mut c) = ctx();
        c.deadline = Some(Instant::now() + Duration::from_millis(60));
        let out = SleepJob.run(&json!({"duration": 0.03}), &c).unwrap();
        assert!(matches!(out, RunOutput::Done(_)), "{out:?}");
    }

    /// Runs slices of `quantum` until done; returns the number of slices and the checkpoints.
    fn run_sliced(duration: f64, quantum: Duration) -> (usize, Vec<f64>) {
        let (_t, mut c) = ctx();
        let payload = json!({ "duration": duration });
        let mut checkpoints = Vec::new();
        for slice in 1..=20 {
            c.deadline = Some(Instant::now() + quantum);
            let slice_start = Instant::now();
            match SleepJob.run(&payload, &c).unwrap() {
                RunOutput::Done(v) => {
                    assert_eq!(v, json!({ "slept": duration }));
                    return (slice, checkpoints);
                }
                RunOutput::Preempted { checkpoint } => {
                    // Preempted no earlier than the deadline.
                    assert!(slice_start.elapsed() >= quantum - Duration::from_millis(1));
                    let e = checkpoint["elapsed"].as_f64().unwrap();
                    checkpoints.push(e);
                    c.checkpoint = Some(checkpoint);
                }
            }
        }
        panic!("sleep job never completed");
    }

    #[test]
    fn preempts_at_deadline_and_resumes() {
        let (slices, cps) = run_sliced(0.09, Duration::from_millis(30));
        assert_eq!(slices, 3, "checkpoints: {cps:?}");
        assert_eq!(cps.len(), 2);
        assert!(cps[0] >= 0.029 && cps[1] > cps[0] + 0.028, "{cps:?}");
    }

    #[test]
    fn resumes_from_checkpoint_without_redoing_work() {
        let (_t, mut c) = ctx();
        c.checkpoint = Some(json!({"elapsed": 9.99}));
        let start = Instant::now();
        let out = SleepJob.run(&json!({"duration": 10}), &c).unwrap();
        assert_eq!(out, RunOutput::Done(json!({"slept": 10})));
        assert!(start.elapsed() < Duration::from_secs(1));
        // A past deadline preempts at once, keeping the progress.
        c.deadline = Some(Instant::now());
        c.checkpoint = Some(json!({"elapsed": 1.0}));
        let RunOutput::Preempted { checkpoint } =
            SleepJob.run(&json!({"duration": 10}), &c).unwrap()
        else {
            panic!("expected preemption");
        };
        let e = checkpoint["elapsed"].as_f64().unwrap();
        assert!((1.0..1.05).contains(&e), "{e}");
    }

    #[test]
    fn stop_flag_preempts() {
        let (_t, mut c) = ctx();
        let stop = crate::Stop::new();
        c.stop = stop.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            stop.set();
        });
        let start = Instant::now();
        let out = SleepJob.run(&json!({"duration": 30}), &c).unwrap();
        setter.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        let RunOutput::Preempted { checkpoint } = out else {
            panic!("expected preemption, got {out:?}");
        };
        let e = checkpoint["elapsed"].as_f64().unwrap();
        assert!((0.029..5.0).contains(&e), "{e}");
    }

    #[test]
    fn fail_probability_extremes() {
        let (_t, c) = ctx();
        for _ in 0..20 {
            let err = SleepJob
                .run(&json!({"duration": 0, "fail_probability": 1.0}), &c)
                .unwrap_err();
            assert!(err.is_retryable());
            assert_eq!(err.to_string(), "simulated failure (fail_probability=1)");
            let out = SleepJob
                .run(&json!({"duration": 0, "fail_probability": 0.0}), &c)
                .unwrap();
            assert!(matches!(out, RunOutput::Done(_)));
        }
    }

    #[test]
    fn validation() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path()).unwrap();
        let errs = |p: Value| SleepJob.validate(&p, &d);
        assert!(errs(json!({"duration": 0})).is_empty());
        assert!(errs(json!({"duration": 2, "fail_probability": 1, "note": "x"})).is_empty());
        assert_eq!(errs(json!({"duration": "5"}))[0].field, "payload.duration");
        assert_eq!(errs(json!({"duration": -0.1}))[0].field, "payload.duration");
        assert_eq!(errs(json!({"duration": null})).len(), 1);
        // serde_json turns NaN into null: still refused.
        assert_eq!(
            errs(json!({"duration": f64::NAN}))[0].field,
            "payload.duration"
        );
        let e = errs(json!({"duration": 1, "fail_probability": 1.5}));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "payload.fail_probability");
        assert_eq!(errs(json!({"fail_probability": "x"})).len(), 2);
        assert_eq!(errs(json!("x"))[0].field, "payload");
        let (_t, c) = ctx();
        let err = SleepJob.run(&json!({"duration": -1}), &c).unwrap_err();
        assert!(!err.is_retryable());
    }

    #[test]
    fn duration_is_capped_at_one_day() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path()).unwrap();
        assert!(
            SleepJob
                .validate(&json!({"duration": 86_400}), &d)
                .is_empty()
        );
        for bad in [
            json!(86_400.001),
            json!(1e300),
            json!(u64::MAX),
            json!(f64::MAX),
        ] {
            let errs = SleepJob.validate(&json!({ "duration": bad }), &d);
            assert_eq!(errs.len(), 1, "{bad}");
            assert_eq!(errs[0].field, "payload.duration");
            assert!(errs[0].message.contains("86400"), "{}", errs[0].message);
        }
        assert_eq!(
            crate::Registry::builtin()
                .get("sleep")
                .unwrap()
                .default_timeout(),
            Duration::from_secs(MAX_DURATION_SECONDS + 60)
        );
        const { assert!(MAX_DURATION_SECONDS + 60 <= crate::MAX_TIMEOUT_SECONDS) };
    }

    /// No float in the payload or the checkpoint can panic the body (it refuses or runs).
    #[test]
    fn odd_numbers_never_panic() {
        let (_t, mut c) = ctx();
        let floats = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            -0.0,
            1e300,
            -1e300,
            1e-300,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            86_400.0,
        ];
        let payloads = floats
            .iter()
            .map(|&f| json!({ "duration": f }))
            .chain([json!({"duration": u64::MAX}), json!({"duration": i64::MIN})]);
        for payload in payloads {
            // A past deadline: a valid long duration preempts at once instead of sleeping.
            c.deadline = Some(Instant::now());
            match SleepJob.run(&payload, &c) {
                Ok(RunOutput::Done(_)) | Ok(RunOutput::Preempted { .. }) => {}
                Err(e) => assert!(!e.is_retryable(), "{payload}: {e}"),
            }
        }
        let checkpoints = floats.iter().map(|&f| json!({ "elapsed": f })).chain([
            json!({"elapsed": u64::MAX}),
            json!({"elapsed": i64::MIN}),
            json!({"elapsed": "1"}),
            json!([1]),
            json!(null),
            json!(3),
        ]);
        for cp in checkpoints {
            c.checkpoint = Some(cp.clone());
            c.deadline = Some(Instant::now());
            let out = SleepJob.run(&json!({"duration": 1e-300}), &c).unwrap();
            assert!(matches!(out, RunOutput::Done(_)), "{cp}: {out:?}");
            c.deadline = Some(Instant::now() + Duration::from_millis(5));
            match SleepJob.run(&json!({"duration": 86_400}), &c).unwrap() {
                RunOutput::Preempted { checkpoint } => {
                    let e = checkpoint["elapsed"].as_f64().unwrap();
                    assert!((0.0..=86_400.0).contains(&e), "{cp}: {e}");
                }
                // A checkpoint at or past the end finishes.
                RunOutput::Done(_) => {}
            }
        }
    }
}
