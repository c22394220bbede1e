//! Result rows into domain values, once for both backends. Each backend says how it reads a
//! column of each kind ([`Columns`]): Postgres has `timestamptz`, `uuid` and `jsonb`, SQLite
//! stores microseconds, hyphenated text and JSON text. The mappings here are shared.

use chrono::{DateTime, Utc};
use jobsched_core::job_type::JobTypeInfo;
use jobsched_core::notes::LogLine;
use jobsched_core::ports::Token;
use jobsched_core::schedule::Schedule;
use jobsched_core::{
    DeadLetter, Job, JobId, JobStatus, PendingJob, QueuedJob, Result, RetryBackoff, StartedJob,
};
use serde_json::Value;

/// A result row read column by column (by name), each column decoded as its backend stores
/// that kind of value; a column that is missing, of another kind or out of the type's range is
/// the backend's query error, a stored time or JSON text it cannot read its data error.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn small(&self, column: &str) -> Result<i16>;
    fn int(&self, column: &str) -> Result<i32>;
    fn big(&self, column: &str) -> Result<i64>;
    fn float(&self, column: &str) -> Result<f64>;
    fn opt_float(&self, column: &str) -> Result<Option<f64>>;
    fn boolean(&self, column: &str) -> Result<bool>;
    fn json(&self, column: &str) -> Result<Value>;
    fn opt_json(&self, column: &str) -> Result<Option<Value>>;
    fn time(&self, column: &str) -> Result<DateTime<Utc>>;
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>>;
    fn id(&self, column: &str) -> Result<JobId>;
    fn opt_id(&self, column: &str) -> Result<Option<JobId>>;
    /// A value the row holds that the domain refuses (`message` says which).
    fn invalid(&self, message: String) -> jobsched_core::Error;
}

/// The [`Columns`] methods whose values both backends decode alike (text, numbers and flags),
/// for a row type with `try_get`; `$db` maps a `sqlx::Error`. `@ $db; name: Type, …` adds
/// more of the same kind (Postgres's JSON).
macro_rules! plain_columns {
    ($db:path) => {
        $crate::rows::plain_columns!(@ $db; text: String, opt_text: Option<String>, small: i16,
            int: i32, big: i64, float: f64, opt_float: Option<f64>, boolean: bool);
    };
    (@ $db:path; $($method:ident: $ty:ty),*) => {
        $(
            fn $method(&self, column: &str) -> Result<$ty> {
                self.try_get(column).map_err($db)
            }
        )*
    };
}
pub(crate) use plain_columns;

/// A job status as stored; `Err` says what is wrong with it.
pub(crate) fn status_of(s: &str) -> std::result::Result<JobStatus, String> {
    s.parse()
        .map_err(|_| format!("unknown job status `{s}` in jobs.status"))
}

fn status(row: &impl Columns) -> Result<JobStatus> {
    status_of(&row.text("status")?).map_err(|message| row.invalid(message))
}

/// A whole `jobs` row.
pub(crate) fn job(row: &impl Columns) -> Result<Job> {
    Ok(Job {
        id: row.id("id")?,
        name: row.text("name")?,
        job_type: row.text("job_type")?,
        status: status(row)?,
        priority: row.small("priority")?,
        estimated_duration: row.float("estimated_duration")?,
        payload: row.json("payload")?,
        result: row.opt_json("result")?,
        error_message: row.opt_text("error_message")?,
        retry_count: row.int("retry_count")?,
        max_retries: row.int("max_retries")?,
        created_at: row.time("created_at")?,
        scheduled_at: row.opt_time("scheduled_at")?,
        started_at: row.opt_time("started_at")?,
        completed_at: row.opt_time("completed_at")?,
        attempt: row.int("attempt")?,
        run_at: row.time("run_at")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_expires_at: row.opt_time("lease_expires_at")?,
        checkpoint: row.opt_json("checkpoint")?,
        slices: row.int("slices")?,
        timeout_seconds: row.opt_float("timeout_seconds")?,
        retry_backoff: backoff(row)?,
        seq: row.big("seq")?,
        queue: row.text("queue")?,
    })
}

fn backoff(row: &impl Columns) -> Result<Option<RetryBackoff>> {
    let (base, cap) = (
        row.opt_float("backoff_base")?,
        row.opt_float("backoff_cap")?,
    );
    Ok(RetryBackoff::from_columns(base, cap))
}

/// The columns a worker needs of the run `token` (see [`StartedJob`]).
pub(crate) fn started(row: &impl Columns, token: Token) -> Result<StartedJob> {
    Ok(StartedJob {
        id: token.id,
        attempt: token.attempt,
        name: row.text("name")?,
        job_type: row.text("job_type")?,
        payload: row.json("payload")?,
        checkpoint: row.opt_json("checkpoint")?,
        retry_count: row.int("retry_count")?,
        max_retries: row.int("max_retries")?,
        created_at: row.time("created_at")?,
        slices: row.int("slices")?,
        timeout_seconds: row.opt_float("timeout_seconds")?,
        retry_backoff: backoff(row)?,
        queue: row.text("queue")?,
    })
}

/// A PENDING job's queue entry.
pub(crate) fn pending(row: &impl Columns) -> Result<PendingJob> {
    Ok(PendingJob {
        queued: QueuedJob {
            id: row.id("id")?,
            seq: row.big("seq")?,
            priority: row.small("priority")?,
            estimated_duration: row.float("estimated_duration")?,
            attempt: row.int("attempt")?,
        },
        run_at: row.time("run_at")?,
    })
}

/// The run's token, from `id` and `attempt`.
pub(crate) fn token(row: &impl Columns) -> Result<Token> {
    Ok(Token {
        id: row.id("id")?,
        attempt: row.int("attempt")?,
    })
}

/// A dead-lettered job.
pub(crate) fn dead_letter(row: &impl Columns) -> Result<DeadLetter> {
    Ok(DeadLetter {
        job_id: row.id("id")?,
        job_type: row.text("job_type")?,
        name: row.text("name")?,
        error: row.opt_text("error_message")?,
        retry_count: row.int("retry_count")?,
        failed_at: row.opt_time("failed_at")?,
    })
}

/// A `schedules` row: the schedule as written (`spec`), with its name, pause and fire history
/// from their own columns.
pub(crate) fn schedule(row: &impl Columns) -> Result<Schedule> {
    let mut s: Schedule = serde_json::from_value(row.json("spec")?)
        .map_err(|e| row.invalid(format!("unreadable schedule in schedules.spec: {e}")))?;
    s.name = row.text("name")?;
    s.paused = row.boolean("paused")?;
    s.next_fire_at = row.opt_time("next_fire_at")?;
    s.last_fire_at = row.opt_time("last_fire_at")?;
    s.last_job_id = row.opt_id("last_job_id")?;
    s.created_at = row.time("created_at")?;
    s.updated_at = row.time("updated_at")?;
    Ok(s)
}

/// A `job_types` row.
pub(crate) fn job_type(row: &impl Columns) -> Result<JobTypeInfo> {
    Ok(JobTypeInfo {
        name: row.text("name")?,
        schema: row.json("schema")?,
        preemptible: row.boolean("preemptible")?,
        default_timeout_seconds: row.float("default_timeout_seconds")?,
        registered_by: row.text("registered_by")?,
        updated_at: row.time("updated_at")?,
    })
}

/// A row of the logs query: (try, lines dropped, the line if the try has one).
pub(crate) fn log_row(row: &impl Columns) -> Result<(u32, u64, Option<LogLine>)> {
    let line = match row.opt_time("at")? {
        Some(at) => Some(LogLine {
            at,
            level: row.text("level")?,
            message: row.text("message")?,
        }),
        None => None,
    };
    let attempt = u32::try_from(row.int("attempt")?).unwrap_or(0);
    Ok((
        attempt,
        u64::try_from(row.big("log_dropped")?).unwrap_or(0),
        line,
    ))
}
