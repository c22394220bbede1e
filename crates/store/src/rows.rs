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

fn backoff(row: &impl Columns) -> Result<Option<RetryBackoff>> {
    let (base, cap) = (
        row.opt_float("backoff_base")?,
        row.opt_float("backoff_cap")?,
    );
    Ok(RetryBackoff::from_columns(base, cap))
}

/// `Type { field: kind, field = "column": kind, …; field: value, … }` from `row`: each field
/// before the `;` read by the [`Columns`] method `kind` from the column of its name (or the one
/// given), the ones after it set to their values.
macro_rules! read {
    ($row:ident => $ty:ident {
        $($field:ident $(= $column:literal)?: $kind:ident),* ;
        $($other:ident: $value:expr),* $(,)?
    }) => {
        $ty {
            $($field: $row.$kind(read!(@column $field $($column)?))?,)*
            $($other: $value,)*
        }
    };
    (@column $field:ident) => {
        stringify!($field)
    };
    (@column $field:ident $column:literal) => {
        $column
    };
}

/// A whole `jobs` row.
pub(crate) fn job(row: &impl Columns) -> Result<Job> {
    Ok(read!(row => Job {
        id: id, name: text, job_type: text, priority: small, estimated_duration: float,
        payload: json, result: opt_json, error_message: opt_text, retry_count: int,
        max_retries: int, created_at: time, scheduled_at: opt_time, started_at: opt_time,
        completed_at: opt_time, attempt: int, run_at: time, lease_owner: opt_text,
        lease_expires_at: opt_time, checkpoint: opt_json, slices: int,
        timeout_seconds: opt_float, seq: big, queue: text;
        status: status(row)?, retry_backoff: backoff(row)?,
    }))
}

/// The columns a worker needs of the run `token` (see [`StartedJob`]).
pub(crate) fn started(row: &impl Columns, token: Token) -> Result<StartedJob> {
    Ok(read!(row => StartedJob {
        name: text, job_type: text, payload: json, checkpoint: opt_json, retry_count: int,
        max_retries: int, created_at: time, slices: int, timeout_seconds: opt_float,
        queue: text;
        id: token.id, attempt: token.attempt, retry_backoff: backoff(row)?,
    }))
}

/// A PENDING job's queue entry.
pub(crate) fn pending(row: &impl Columns) -> Result<PendingJob> {
    let queued = read!(row => QueuedJob {
        id: id, seq: big, priority: small, estimated_duration: float, attempt: int;
    });
    Ok(PendingJob {
        queued,
        run_at: row.time("run_at")?,
    })
}

/// The run's token, from `id` and `attempt`.
pub(crate) fn token(row: &impl Columns) -> Result<Token> {
    Ok(read!(row => Token { id: id, attempt: int; }))
}

/// A dead-lettered job.
pub(crate) fn dead_letter(row: &impl Columns) -> Result<DeadLetter> {
    Ok(read!(row => DeadLetter {
        job_id = "id": id, job_type: text, name: text, error = "error_message": opt_text,
        retry_count: int, failed_at: opt_time;
    }))
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
    Ok(read!(row => JobTypeInfo {
        name: text, schema: json, preemptible: boolean, default_timeout_seconds: float,
        registered_by: text, updated_at: time;
    }))
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
