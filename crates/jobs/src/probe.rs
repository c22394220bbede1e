//! `probe`: a job type for fault tests, registered only when [`PROBE_LOG_ENV`] names a file.
//!
//! Every run appends `start <tag> <pid>` to that file when its body begins and `end <tag>
//! <pid>` when it finishes (or `stopped <tag> <pid>` when asked to stop), so a test can see
//! that a body ran twice or finished twice, not infer it from the job's row. The record lives
//! outside Postgres and Redis on purpose: those are what the tests break. One line is one
//! `write` to a file opened for appending, so lines from concurrent processes never interleave.
//!
//! Payload: `{"tag": "<1–200 chars, no whitespace>", "duration": <seconds, 0–60, default 0>}`.
//! Result: `{"tag": …, "pid": <the worker process id>}`.

use crate::{DataDir, FieldError, JobContext, JobError, JobHandler, RunOutput};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The environment variable naming the probe's log; unset = no `probe` type.
pub const PROBE_LOG_ENV: &str = "JOBSCHED_PROBE_LOG";

/// Longest probe run, seconds.
const MAX_DURATION: f64 = 60.0;
/// Longest tag, characters.
const MAX_TAG: usize = 200;
/// How often a running probe checks its stop flag.
const STEP: Duration = Duration::from_millis(5);

/// The `probe` job type (see the module docs).
#[derive(Debug, Clone)]
pub struct ProbeJob {
    log: PathBuf,
}

impl ProbeJob {
    /// A probe that records its runs in `log`.
    pub fn new(log: PathBuf) -> ProbeJob {
        ProbeJob { log }
    }

    fn record(&self, event: &str, tag: &str) -> Result<(), JobError> {
        let line = format!("{event} {tag} {}\n", std::process::id());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| {
                JobError::Fatal(format!(
                    "cannot append to the probe log {} ({PROBE_LOG_ENV}): {e}",
                    self.log.display()
                ))
            })
    }
}

/// The tag and duration of a valid payload, else every problem with it.
fn parse(payload: &Value) -> Result<(&str, f64), Vec<FieldError>> {
    let mut problems = Vec::new();
    let tag = payload.get("tag").and_then(Value::as_str);
    match tag {
        Some(t)
            if !t.is_empty()
                && t.chars().count() <= MAX_TAG
                && !t.contains(char::is_whitespace) => {}
        _ => problems.push(FieldError::new(
            "payload.tag",
            format!("must be a string of 1 to {MAX_TAG} characters without whitespace"),
        )),
    }
    let duration = match payload.get("duration") {
        None => Some(0.0),
        Some(v) => v.as_f64().filter(|d| (0.0..=MAX_DURATION).contains(d)),
    };
    if duration.is_none() {
        problems.push(FieldError::new(
            "payload.duration",
            format!("must be a number of seconds from 0 to {MAX_DURATION}"),
        ));
    }
    match (tag, duration) {
        (Some(t), Some(d)) if problems.is_empty() => Ok((t, d)),
        _ => Err(problems),
    }
}

impl JobHandler for ProbeJob {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn preemptible(&self) -> bool {
        false
    }

    fn validate(&self, payload: &Value, _data_dir: &DataDir) -> Vec<FieldError> {
        parse(payload).err().unwrap_or_default()
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs_f64(MAX_DURATION + 60.0)
    }

    fn run(&self, payload: &Value, ctx: &JobContext) -> Result<RunOutput, JobError> {
        let (tag, duration) = parse(payload).map_err(|p| {
            JobError::Fatal(
                p.iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        self.record("start", tag)?;
        let end = Instant::now() + Duration::from_secs_f64(duration);
        loop {
            if ctx.stop.load(Ordering::SeqCst) {
                self.record("stopped", tag)?;
                return Err(JobError::Stopped);
            }
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep(STEP.min(end - now));
        }
        self.record("end", tag)?;
        Ok(RunOutput::Done(
            json!({"tag": tag, "pid": std::process::id()}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_each_run_and_refuses_bad_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path()).unwrap();
        let log = dir.path().join("probe.log");
        let probe = ProbeJob::new(log.clone());
        let ctx = JobContext::new(data.clone());
        let out = probe.run(&json!({"tag": "a1"}), &ctx).unwrap();
        let RunOutput::Done(result) = out else {
            panic!("a probe finishes")
        };
        assert_eq!(result["tag"], "a1");
        ctx.stop.store(true, Ordering::SeqCst);
        assert!(matches!(
            probe.run(&json!({"tag": "a2", "duration": 1.0}), &ctx),
            Err(JobError::Stopped)
        ));
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("start a1 {pid}\nend a1 {pid}\nstart a2 {pid}\nstopped a2 {pid}\n")
        );
        let fields = |p: Value| -> Vec<String> {
            probe
                .validate(&p, &data)
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(
            fields(json!({"tag": "ok", "duration": 0.5})),
            Vec::<String>::new()
        );
        assert_eq!(fields(json!({"tag": "a b"})), ["payload.tag"]);
        assert_eq!(
            fields(json!({"duration": 61})),
            ["payload.tag", "payload.duration"]
        );
    }
}
