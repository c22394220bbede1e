//! Pieces shared by both backends.
//!
//! The transitions each method performs are documented in the crate docs (`lib.rs`).

use jobsched_core::ports::{Finished, Token};
use jobsched_core::retry::{AfterFailure, lease_expired};
use jobsched_core::{Error, JobId, NewJob, Result};
use std::collections::{HashMap, HashSet};

/// Tokens with duplicates removed (first occurrence wins), in input order.
pub(crate) fn dedupe(tokens: &[Token]) -> Vec<Token> {
    let mut seen = HashSet::with_capacity(tokens.len());
    tokens
        .iter()
        .copied()
        .filter(|t| seen.insert(t.id))
        .collect()
}

/// Outcomes with at most one per token (first occurrence wins), in input order. Two tokens of
/// one job (different attempts) both stay: at most one can match the row's attempt.
pub(crate) fn dedupe_outcomes(runs: &[Finished]) -> Vec<&Finished> {
    dedupe_by_token(runs, |f| f.outcome.token())
}

/// Items with at most one per token (first occurrence wins), in input order.
pub(crate) fn dedupe_by_token<T>(items: &[T], token: impl Fn(&T) -> Token) -> Vec<&T> {
    let mut seen = HashSet::with_capacity(items.len());
    items.iter().filter(|x| seen.insert(token(x))).collect()
}

/// Restore the caller's order: the applied subset of `requested`, in `requested` order.
pub(crate) fn in_request_order<T>(
    requested: &[Token],
    mut applied: Vec<T>,
    id_of: impl Fn(&T) -> uuid::Uuid,
) -> Vec<T> {
    let mut position = std::collections::HashMap::with_capacity(requested.len());
    for (i, t) in requested.iter().enumerate() {
        position.entry(t.id).or_insert(i);
    }
    applied.sort_by_key(|x| position.get(&id_of(x)).copied().unwrap_or(usize::MAX));
    applied
}

/// Normalised (page, page_size, offset): page ≥ 1, page_size ≥ 1.
pub(crate) fn paging(page: u32, page_size: u32) -> (u32, u32, i64) {
    let page = page.max(1);
    let size = page_size.max(1);
    (page, size, i64::from(page - 1) * i64::from(size))
}

/// `now + ttl`, saturating far in the future instead of overflowing.
pub(crate) fn add_ttl(
    now: chrono::DateTime<chrono::Utc>,
    ttl: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// The settings key of the durable policy copy (the `default` queue's settings).
pub(crate) const POLICY_KEY: &str = "policy";
/// Prefix of the settings keys of the other named queues' settings.
pub(crate) const QUEUE_KEY_PREFIX: &str = "queue:";

/// The settings key of queue `name`'s settings.
pub(crate) fn queue_key(name: &str) -> String {
    if name == jobsched_core::queue::DEFAULT_QUEUE {
        POLICY_KEY.to_owned()
    } else {
        format!("{QUEUE_KEY_PREFIX}{name}")
    }
}

/// Settings from the JSON of settings row `key`.
pub(crate) fn decode_settings(
    key: &str,
    value: serde_json::Value,
) -> Result<jobsched_core::PolicySettings, String> {
    serde_json::from_value(value)
        .map_err(|e| format!("settings row `{key}` is not PolicySettings: {e}"))
}

/// The JSON a settings row holds.
pub(crate) fn encode_settings(
    settings: &jobsched_core::PolicySettings,
) -> Result<serde_json::Value, String> {
    serde_json::to_value(settings).map_err(|e| format!("cannot encode policy settings: {e}"))
}

/// Per-queue counts from `(queue, count key, n)` rows, where the count key is a status name
/// or `DELAYED` (PENDING jobs not yet due, also counted as pending).
pub(crate) fn queue_counts_of(
    rows: impl IntoIterator<Item = (String, String, i64)>,
) -> Vec<(String, jobsched_core::queue::QueueCounts)> {
    let mut by_queue: std::collections::BTreeMap<String, jobsched_core::queue::QueueCounts> =
        std::collections::BTreeMap::new();
    for (queue, key, n) in rows {
        let c = by_queue.entry(queue).or_default();
        match key.as_str() {
            "PENDING" => c.pending += n,
            "DELAYED" => {
                c.pending += n;
                c.delayed += n;
            }
            "SCHEDULED" | "RUNNING" => c.running += n,
            _ => {}
        }
    }
    by_queue
        .into_iter()
        .filter(|(_, c)| c.pending != 0 || c.running != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobsched_core::JobStatus;
    use uuid::Uuid;

    /// Every (from, to) pair the store performs; see the crate docs.
    const TRANSITIONS: &[(JobStatus, JobStatus)] = &[
        (JobStatus::Pending, JobStatus::Cancelled),
        (JobStatus::Scheduled, JobStatus::Cancelled),
        (JobStatus::Running, JobStatus::Cancelled),
        (JobStatus::Pending, JobStatus::Scheduled),
        (JobStatus::Pending, JobStatus::Running),
        (JobStatus::Running, JobStatus::Pending),
        (JobStatus::Running, JobStatus::Failed),
        (JobStatus::Scheduled, JobStatus::Pending),
        (JobStatus::Scheduled, JobStatus::Running),
        (JobStatus::Running, JobStatus::Completed),
        (JobStatus::Failed, JobStatus::Pending),
    ];

    #[test]
    fn transitions_are_allowed() {
        for (from, to) in TRANSITIONS {
            assert!(from.can_transition_to(*to), "{from} -> {to}");
        }
    }

    #[test]
    fn dedupe_keeps_first() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let t = |id, attempt| Token { id, attempt };
        assert_eq!(dedupe(&[t(a, 1), t(b, 1), t(a, 2)]), vec![t(a, 1), t(b, 1)]);
        let ordered = in_request_order(&[t(b, 1), t(a, 1), t(b, 1)], vec![t(a, 2), t(b, 2)], |x| {
            x.id
        });
        assert_eq!(ordered, vec![t(b, 2), t(a, 2)]);
    }

    #[test]
    fn paging_normalises() {
        assert_eq!(paging(0, 0), (1, 1, 0));
        assert_eq!(paging(3, 20), (3, 20, 40));
    }
}

/// The idempotency keys of a batch of submissions (see [`jobsched_core::UniqueKey`]).
#[derive(Debug)]
pub(crate) struct BatchKeys {
    /// Index of the first submission with each key, sorted by key (the order both stores
    /// take the keys in, so two batches sharing keys never wait on each other in a cycle).
    pub(crate) firsts: Vec<usize>,
    /// For a later submission repeating a key of the batch: the index of the first one.
    same_as: Vec<Option<usize>>,
}

/// Collect a batch's keys. The same key twice with different requests is a conflict.
pub(crate) fn batch_keys(jobs: &[NewJob]) -> Result<BatchKeys> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut same_as = vec![None; jobs.len()];
    for (i, job) in jobs.iter().enumerate() {
        let Some(k) = &job.unique_key else { continue };
        match first.get(k.key.as_str()) {
            None => {
                first.insert(k.key.as_str(), i);
            }
            Some(&f) => {
                if jobs[f].unique_key.as_ref().map(|u| &u.fingerprint) != Some(&k.fingerprint) {
                    return Err(Error::KeyConflict {
                        key: k.key.clone(),
                        job_id: jobs[f].id,
                    });
                }
                same_as[i] = Some(f);
            }
        }
    }
    let mut firsts: Vec<usize> = first.into_values().collect();
    firsts.sort_by(|&a, &b| key_of(&jobs[a]).cmp(key_of(&jobs[b])));
    Ok(BatchKeys { firsts, same_as })
}

fn key_of(job: &NewJob) -> &str {
    job.unique_key.as_ref().map_or("", |k| k.key.as_str())
}

impl BatchKeys {
    /// The id each submission ends up with, given the keys that were already taken
    /// (`(key, job id, fingerprint)`): the existing job for a taken key with the same request,
    /// the first one's for a repeat within the batch, else its own (a row to insert).
    pub(crate) fn resolve(
        &self,
        jobs: &[NewJob],
        taken: &[(String, JobId, String)],
    ) -> Result<Vec<JobId>> {
        let taken: HashMap<&str, (JobId, &str)> = taken
            .iter()
            .map(|(k, id, f)| (k.as_str(), (*id, f.as_str())))
            .collect();
        let mut ids: Vec<JobId> = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            let id = match (&job.unique_key, self.same_as[i]) {
                (_, Some(f)) => ids[f],
                (Some(k), None) => match taken.get(k.key.as_str()) {
                    Some(&(id, print)) if print == k.fingerprint => id,
                    Some(&(id, _)) => {
                        return Err(Error::KeyConflict {
                            key: k.key.clone(),
                            job_id: id,
                        });
                    }
                    None => job.id,
                },
                (None, None) => job.id,
            };
            ids.push(id);
        }
        Ok(ids)
    }
}

/// Rows of a logs read, in order (try, then line): `(try, dropped, line)`, `line` `None` for
/// a try with no kept line; grouped into one [`TryLog`] per try.
///
/// [`TryLog`]: jobsched_core::notes::TryLog
pub(crate) fn group_logs(
    rows: Vec<(u32, u64, Option<jobsched_core::notes::LogLine>)>,
) -> Vec<jobsched_core::notes::TryLog> {
    let mut out: Vec<jobsched_core::notes::TryLog> = Vec::new();
    for (attempt, dropped, line) in rows {
        if out.last().is_none_or(|t| t.attempt != attempt) {
            out.push(jobsched_core::notes::TryLog {
                attempt,
                lines: Vec::new(),
                dropped,
            });
        }
        if let (Some(t), Some(line)) = (out.last_mut(), line) {
            t.lines.push(line);
        }
    }
    out
}

/// A try number as stored (a column of SQL type integer).
pub(crate) fn try_no(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

/// A SCHEDULED or RUNNING job whose lease expired, as the rescuer reads it.
pub(crate) struct Expired {
    pub(crate) id: JobId,
    pub(crate) running: bool,
    pub(crate) retry_count: i32,
    pub(crate) max_retries: i32,
    pub(crate) owner: Option<String>,
    pub(crate) attempt: i32,
}

/// What the rescuer does with an [`Expired`] job.
pub(crate) enum Rescue {
    /// RUNNING, budget spent: to the dead-letter queue with this error.
    DeadLetter(String),
    /// RUNNING: back to PENDING, one retry counted, with this error.
    Retry(String),
    /// SCHEDULED, never started: back to PENDING, nothing counted.
    Undispatched,
}

impl Expired {
    /// The rescue of this job: a run whose worker stopped renewing is a retryable failure,
    /// decided by the same rule as a body's error ([`AfterFailure::decide`]).
    pub(crate) fn rescue(&self) -> Rescue {
        if !self.running {
            return Rescue::Undispatched;
        }
        let error = lease_expired(self.owner.as_deref(), self.attempt);
        match AfterFailure::decide(self.retry_count, self.max_retries, true) {
            AfterFailure::Retry { .. } => Rescue::Retry(error),
            AfterFailure::DeadLetter | AfterFailure::Fail => Rescue::DeadLetter(error),
        }
    }
}

/// `impl Settings` and `impl ControlStore for $store`, the same code for both backends: the
/// settings rows (`$dir`'s `load_policy`, `load_queues`, `save_queue`, `create_queue`
/// statements) and the leader rows (`try_lead`, `resign`), and `ping`. `$at` turns a time
/// into the backend's column value; `db`, `data` and `self.pool` are the invoking module's.
macro_rules! control_store {
    ($store:ty, $dir:literal, $at:path) => {
        #[async_trait]
        impl jobsched_core::ports::Settings for $store {
            async fn policy(&self) -> Result<Option<PolicySettings>> {
                let value: Option<Value> =
                    sqlx::query_scalar(include_str!(concat!("../sql/", $dir, "/load_policy.sql")))
                        .bind(POLICY_KEY)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db)?;
                value
                    .map(|v| decode_settings(POLICY_KEY, v).map_err(data))
                    .transpose()
            }

            async fn set_policy(&self, settings: &PolicySettings) -> Result<()> {
                self.set_queue(DEFAULT_QUEUE, settings).await
            }

            async fn queues(&self) -> Result<Vec<(String, PolicySettings)>> {
                let rows: Vec<(String, Value)> =
                    sqlx::query_as(include_str!(concat!("../sql/", $dir, "/load_queues.sql")))
                        .bind(QUEUE_KEY_PREFIX)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db)?;
                rows.into_iter()
                    .map(|(key, value)| {
                        let settings = decode_settings(&key, value).map_err(data)?;
                        let name = key.strip_prefix(QUEUE_KEY_PREFIX).unwrap_or(&key);
                        Ok((name.to_owned(), settings))
                    })
                    .collect()
            }

            async fn set_queue(&self, name: &str, settings: &PolicySettings) -> Result<()> {
                let sql = include_str!(concat!("../sql/", $dir, "/save_queue.sql"));
                self.write_settings(sql, name, settings).await.map(drop)
            }

            async fn add_queue(&self, name: &str, settings: &PolicySettings) -> Result<bool> {
                let sql = include_str!(concat!("../sql/", $dir, "/create_queue.sql"));
                Ok(self.write_settings(sql, name, settings).await? == 1)
            }
        }

        #[async_trait]
        impl ControlStore for $store {
            async fn try_lead(&self, lease: &Lease<'_>, now: DateTime<Utc>) -> Result<bool> {
                // Take the row when it is free or expired (expires_at <= now), renew it when
                // ours.
                let row = sqlx::query(include_str!(concat!("../sql/", $dir, "/try_lead.sql")))
                    .bind(lease.role)
                    .bind(lease.holder)
                    .bind($at(add_ttl(now, lease.ttl)))
                    .bind($at(now))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                Ok(row.is_some())
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query(include_str!(concat!("../sql/", $dir, "/ping.sql")))
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                Ok(())
            }

            async fn resign(&self, lease: &Lease<'_>) -> Result<()> {
                sqlx::query(include_str!(concat!("../sql/", $dir, "/resign.sql")))
                    .bind(lease.role)
                    .bind(lease.holder)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                Ok(())
            }
        }

        impl $store {
            /// Run `sql` (an upsert or an insert-if-absent of queue `name`'s settings row,
            /// stamped with the wall clock, which is informational only); rows written.
            async fn write_settings(
                &self,
                sql: &'static str,
                name: &str,
                settings: &PolicySettings,
            ) -> Result<u64> {
                let value = encode_settings(settings).map_err(data)?;
                let done = sqlx::query(sql)
                    .bind(queue_key(name))
                    .bind(value)
                    .bind($at(Utc::now()))
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use control_store;

/// `impl ScheduleStore for $store`: the same code for both backends but `put_schedule`, given
/// as `$put` (Postgres answers whether the row existed in one statement, SQLite in a
/// transaction of two). `$at` turns a time into the backend's column value, `$id` a job id;
/// `db`, `schedule_spec` and `self.pool` are the invoking module's.
macro_rules! schedule_store {
    ($store:ty, $dir:literal, $at:path, $id:path, $($put:tt)*) => {
        #[async_trait]
        impl ScheduleStore for $store {
            async fn create_schedule(&self, s: &Schedule) -> Result<bool> {
                let sql = include_str!(concat!("../sql/", $dir, "/create_schedule.sql"));
                let done = sqlx::query(sql)
                    .bind(&s.name)
                    .bind(schedule_spec(s)?)
                    .bind(s.paused)
                    .bind(s.next_fire_at.map($at))
                    .bind($at(s.updated_at))
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                Ok(done.rows_affected() == 1)
            }

            $($put)*

            async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>> {
                let sql = include_str!(concat!("../sql/", $dir, "/get_schedule.sql"));
                let row = sqlx::query(sql).bind(name).fetch_optional(&self.pool).await;
                row.map_err(db)?.as_ref().map(crate::rows::schedule).transpose()
            }

            async fn list_schedules(&self) -> Result<Vec<Schedule>> {
                let sql = include_str!(concat!("../sql/", $dir, "/list_schedules.sql"));
                let rows = sqlx::query(sql).fetch_all(&self.pool).await.map_err(db)?;
                rows.iter().map(crate::rows::schedule).collect()
            }

            async fn delete_schedule(&self, name: &str) -> Result<bool> {
                let sql = include_str!(concat!("../sql/", $dir, "/delete_schedule.sql"));
                let done = sqlx::query(sql).bind(name).execute(&self.pool).await;
                Ok(done.map_err(db)?.rows_affected() == 1)
            }

            async fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>> {
                let sql = include_str!(concat!("../sql/", $dir, "/due_schedules.sql"));
                let query = sqlx::query(sql).bind($at(now)).bind(i64::from(limit));
                let rows = query.fetch_all(&self.pool).await.map_err(db)?;
                rows.iter().map(crate::rows::schedule).collect()
            }

            async fn advance_schedule(&self, name: &str, fired: &Fired) -> Result<bool> {
                let sql = include_str!(concat!("../sql/", $dir, "/advance_schedule.sql"));
                let done = sqlx::query(sql)
                    .bind(name)
                    .bind($at(fired.expected))
                    .bind(fired.next.map($at))
                    .bind($at(fired.fire))
                    .bind(fired.job.map($id))
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use schedule_store;

/// `impl DeadLetterStore for $store`: the listing, count and purge are the same code for both
/// backends; `retry_dead_letter` is given as `$retry` (SQLite reserves the queue sequence in
/// its transaction). `db` and `self.pool` are the invoking module's.
macro_rules! dead_letter_store {
    ($store:ty, $dir:literal, $($retry:tt)*) => {
        #[async_trait]
        impl DeadLetterStore for $store {
            async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
                let sql = include_str!(concat!("../sql/", $dir, "/dead_letters.sql"));
                let query = sqlx::query(sql).bind(i64::from(limit));
                let rows = query.fetch_all(&self.pool).await.map_err(db)?;
                rows.iter().map(crate::rows::dead_letter).collect()
            }

            async fn dead_letter_count(&self) -> Result<i64> {
                let sql = include_str!(concat!("../sql/", $dir, "/dead_letter_count.sql"));
                sqlx::query_scalar(sql).fetch_one(&self.pool).await.map_err(db)
            }

            $($retry)*

            async fn purge_dead_letters(&self) -> Result<u64> {
                let sql = include_str!(concat!("../sql/", $dir, "/purge_dead_letters.sql"));
                let done = sqlx::query(sql).execute(&self.pool).await.map_err(db)?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use dead_letter_store;
