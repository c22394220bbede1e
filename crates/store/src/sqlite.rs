//! The SQLite store (single node, development and small deployments).
//!
//! Storage choices (see `migrations/sqlite/0001_init.sql`):
//! - timestamps are INTEGER microseconds since the Unix epoch (UTC), so lease-expiry
//!   comparisons and ORDER BY are exact integer comparisons; microseconds match Postgres'
//!   `timestamptz` precision;
//! - ids are hyphenated UUID text, JSON is JSON text, booleans are 0/1;
//! - `seq` values come from the one-row `job_seq` table: a write transaction that needs `n`
//!   values first runs `UPDATE job_seq SET value = value + n … RETURNING value` and hands out
//!   `value - n + 1 ..= value`. Every write transaction starts with `BEGIN IMMEDIATE`, taking
//!   SQLite's single write lock up front, so no two transactions can hand out the same value and
//!   values only grow. Values handed out to updates that did not apply leave harmless gaps.
//!
//! Batch methods run one small statement per item inside one transaction: SQLite is in-process,
//! so statements cost microseconds rather than network round trips.

use crate::common::{
    Expired, POLICY_KEY, QUEUE_KEY_PREFIX, Rescue, add_ttl, decode_settings, dedupe,
    dedupe_outcomes, encode_settings, group_logs, paging, queue_counts_of, queue_key, try_no,
};
use crate::error::{StoreError, redact};
use crate::rows::{self, Columns};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsched_core::job_type::JobTypeInfo;
use jobsched_core::notes::{LogLine, MAX_LOG_BYTES, MAX_LOG_LINES, Progress, TryLog};
use jobsched_core::ports::{
    Claim, ControlStore, DeadLetterStore, DispatchStore, Finished, JobRepo, Lease, NotesStore,
    Outcome, Promotion, PruneCursor, PruneScan, Pruned, RescueReport, ScheduleStore, Token,
    TypeStore, Update, WorkerStore,
};
use jobsched_core::queue::{DEFAULT_QUEUE, QueueCounts};
use jobsched_core::schedule::{Fired, Schedule};
use jobsched_core::{
    Backlog, CancelOutcome, DeadLetter, Job, JobFilter, JobId, JobPage, JobStats, JobStatus,
    NewJob, PendingJob, PolicyKind, PolicySettings, Result, StartedJob,
};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::str::FromStr;
use std::time::Duration;
use uuid::fmt::Hyphenated;

/// Columns of `jobs` that make up a [`jobsched_core::Job`] (Postgres has its own:
/// `pg::job_columns`, which hides a finished job's last lease).
const JOB_COLUMNS: &str = "id, name, job_type, status, priority, estimated_duration, \
     payload, result, error_message, retry_count, max_retries, created_at, scheduled_at, \
     started_at, completed_at, attempt, run_at, lease_owner, lease_expires_at, checkpoint, \
     slices, timeout_seconds, backoff_base, backoff_cap, seq, queue";

const BACKEND: &str = "sqlite";

/// How long a writer waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The migrations for SQLite, embedded at build time.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// A [`jobsched_core::ports::Store`] on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn db(e: sqlx::Error) -> jobsched_core::Error {
    StoreError::Query {
        backend: BACKEND,
        source: e,
    }
    .into()
}

fn data(message: String) -> jobsched_core::Error {
    StoreError::Data {
        backend: BACKEND,
        message,
    }
    .into()
}

/// A timestamp as stored: microseconds since the Unix epoch.
fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_us(v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| data(format!("timestamp {v} out of range")))
}

fn opt_from_us(v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(from_us).transpose()
}

fn hy(id: JobId) -> Hyphenated {
    id.hyphenated()
}

fn status_of(s: &str) -> Result<JobStatus> {
    rows::status_of(s).map_err(data)
}

/// JSON as stored (text); a value that is not JSON is a data error naming `column`.
fn json_text(column: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| data(format!("{column} is not JSON: {e}")))
}

impl Columns for SqliteRow {
    crate::rows::plain_columns!(db);

    fn json(&self, column: &str) -> Result<Value> {
        json_text(column, self.try_get::<&str, _>(column).map_err(db)?)
    }

    fn opt_json(&self, column: &str) -> Result<Option<Value>> {
        let text: Option<&str> = self.try_get(column).map_err(db)?;
        text.map(|text| json_text(column, text)).transpose()
    }

    fn time(&self, column: &str) -> Result<DateTime<Utc>> {
        from_us(self.try_get(column).map_err(db)?)
    }

    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        opt_from_us(self.try_get(column).map_err(db)?)
    }

    fn id(&self, column: &str) -> Result<JobId> {
        Ok(self
            .try_get::<Hyphenated, _>(column)
            .map_err(db)?
            .into_uuid())
    }

    fn opt_id(&self, column: &str) -> Result<Option<JobId>> {
        let id: Option<Hyphenated> = self.try_get(column).map_err(db)?;
        Ok(id.map(Hyphenated::into_uuid))
    }

    fn invalid(&self, message: String) -> jobsched_core::Error {
        data(message)
    }
}

/// True when the URL names an in-memory database.
pub(crate) fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Parse a SQLite URL into connect options (file created if missing, WAL, busy timeout).
pub(crate) fn options(url: &str) -> std::result::Result<SqliteConnectOptions, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| StoreError::MalformedUrl {
            backend: BACKEND,
            url: redact(url),
            source,
        })?
        .create_if_missing(true)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false);
    Ok(if is_memory(url) {
        options
    } else {
        options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
    })
}

/// Reserve `n` queue-entry sequence values; returns the first. Must be the first statement of
/// a `BEGIN IMMEDIATE` transaction (see the module docs).
async fn reserve_seqs(tx: &mut Transaction<'static, Sqlite>, n: usize) -> Result<i64> {
    let n = n as i64;
    let last: i64 = sqlx::query_scalar(include_str!("../sql/sqlite/reserve_seqs.sql"))
        .bind(n)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
    Ok(last - n + 1)
}

const INSERT_SQL: &str = "INSERT INTO jobs (id, name, job_type, status, priority, \
     estimated_duration, payload, max_retries, created_at, run_at, seq, timeout_seconds, \
     delayed, backoff_base, backoff_cap, queue) \
     VALUES (?1, ?2, ?3, 'PENDING', ?4, ?5, ?6, ?7, ?8, MAX(?8, coalesce(?11, ?8)), ?9, ?10, \
             coalesce(?11 > ?8, 0), ?12, ?13, ?14)";

impl SqliteStore {
    /// A store on an existing pool (migrations are not run; see [`SqliteStore::migrate`]).
    pub fn new(pool: SqlitePool) -> Self {
        SqliteStore { pool }
    }

    /// Open `url` (the file is created if missing) with at most `max_connections`. An
    /// in-memory database gets exactly one connection, kept open for the pool's life so every
    /// user shares one database, and is migrated here since nothing else can reach it.
    pub async fn connect(url: &str, max_connections: u32) -> std::result::Result<Self, StoreError> {
        let options = options(url)?;
        let target = options.get_filename().display().to_string();
        let memory = is_memory(url);
        let pool_options = if memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(max_connections.max(1))
        };
        // A local file cannot hang up: no ping before each use.
        let pool = pool_options
            .test_before_acquire(false)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(StoreError::connect(BACKEND, &target))?;
        let store = SqliteStore { pool };
        if memory {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Versions of the successfully applied migrations; `None` when the database has never
    /// been migrated.
    pub(crate) async fn applied_migrations(
        &self,
    ) -> std::result::Result<Option<Vec<i64>>, StoreError> {
        let query = |source| StoreError::Query {
            backend: BACKEND,
            source,
        };
        let tables: i64 = sqlx::query_scalar(include_str!("../sql/sqlite/applied_migrations.sql"))
            .fetch_one(&self.pool)
            .await
            .map_err(query)?;
        if tables == 0 {
            return Ok(None);
        }
        sqlx::query_scalar(include_str!("../sql/sqlite/applied_migrations_2.sql"))
            .fetch_all(&self.pool)
            .await
            .map(Some)
            .map_err(query)
    }

    /// Apply the embedded migrations to this store's database (idempotent).
    pub async fn migrate(&self) -> std::result::Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(StoreError::migrate(
            BACKEND,
            &self
                .pool
                .connect_options()
                .get_filename()
                .display()
                .to_string(),
        ))
    }

    /// A write transaction holding SQLite's write lock from its first statement.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }
}

#[async_trait]
impl JobRepo for SqliteStore {
    async fn insert(&self, job: &NewJob, now: DateTime<Utc>) -> Result<Job> {
        // One write path for both (insert_many keeps a key's bookkeeping); the answer is the
        // job stored, or the one the key names.
        let ids = self.insert_many(std::slice::from_ref(job), now).await?;
        self.get(ids[0])
            .await?
            .ok_or_else(|| data(format!("job {} vanished right after its insert", ids[0])))
    }

    async fn insert_many(&self, jobs: &[NewJob], now: DateTime<Utc>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        // The keys first (a key already taken names its job); then the new submissions' rows.
        let keys = crate::common::batch_keys(jobs)?;
        let mut taken = Vec::new();
        for &i in &keys.firsts {
            let k = jobs[i].unique_key.as_ref().expect("keyed");
            let row: Option<(Hyphenated, String)> =
                sqlx::query_as(include_str!("../sql/sqlite/insert_many.sql"))
                    .bind(&k.key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            match row {
                Some((id, print)) => taken.push((k.key.clone(), id.into_uuid(), print)),
                None => {
                    sqlx::query(include_str!("../sql/sqlite/insert_many_2.sql"))
                        .bind(&k.key)
                        .bind(hy(jobs[i].id))
                        .bind(&k.fingerprint)
                        .bind(us(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
            }
        }
        let ids = keys.resolve(jobs, &taken)?;
        let fresh: Vec<&NewJob> = jobs
            .iter()
            .zip(&ids)
            .filter(|(j, id)| j.id == **id)
            .map(|(j, _)| j)
            .collect();
        if fresh.is_empty() {
            tx.commit().await.map_err(db)?;
            return Ok(ids);
        }
        let first = reserve_seqs(&mut tx, fresh.len()).await?;
        for (seq, job) in (first..).zip(fresh) {
            sqlx::query(INSERT_SQL)
                .bind(hy(job.id))
                .bind(&job.name)
                .bind(&job.job_type)
                .bind(job.priority)
                .bind(job.estimated_duration)
                .bind(&job.payload)
                .bind(job.max_retries)
                .bind(us(now))
                .bind(seq)
                .bind(job.timeout_seconds)
                .bind(job.run_at.map(us))
                .bind(job.retry_backoff.map(|b| b.base_seconds))
                .bind(job.retry_backoff.map(|b| b.cap_seconds))
                .bind(&job.queue)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(ids)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        let row = sqlx::query(&sql)
            .bind(hy(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::job).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        let (page, page_size, offset) = paging(filter.page, filter.page_size);
        let mut conditions = Vec::new();
        if filter.status.is_some() {
            conditions.push("status = ?");
        }
        if filter.job_type.is_some() {
            conditions.push("job_type = ?");
        }
        if filter.queue.is_some() {
            conditions.push("queue = ?");
        }
        if filter.id.is_some() {
            conditions.push("id = ?");
        }
        if filter.name_prefix.is_some() {
            conditions.push("name >= ? AND name < ?");
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let count_sql = format!("SELECT count(*) FROM jobs {where_clause}");
        let page_sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs {where_clause} \
             ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?"
        );
        let status = filter.status.map(JobStatus::as_str);
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        let mut rows = sqlx::query(&page_sql);
        if let Some(s) = status {
            count = count.bind(s);
            rows = rows.bind(s);
        }
        if let Some(t) = &filter.job_type {
            count = count.bind(t);
            rows = rows.bind(t);
        }
        if let Some(q) = &filter.queue {
            count = count.bind(q);
            rows = rows.bind(q);
        }
        if let Some(id) = filter.id {
            count = count.bind(hy(id));
            rows = rows.bind(hy(id));
        }
        if let Some(prefix) = &filter.name_prefix {
            let end = jobsched_core::name_prefix_end(prefix);
            count = count.bind(prefix.clone()).bind(end.clone());
            rows = rows.bind(prefix.clone()).bind(end);
        }
        // Both reads in one transaction so the page and its total agree.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let total = count.fetch_one(&mut *tx).await.map_err(db)?;
        let rows = rows
            .bind(i64::from(page_size))
            .bind(offset)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(JobPage {
            jobs: rows.iter().map(rows::job).collect::<Result<_>>()?,
            total,
            page,
            page_size,
        })
    }

    async fn backlog(&self) -> Result<Vec<(String, Backlog)>> {
        let rows: Vec<(String, i64, f64)> =
            sqlx::query_as(include_str!("../sql/sqlite/backlog.sql"))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(queue, jobs, seconds)| (queue, Backlog { jobs, seconds }))
            .collect())
    }

    async fn queue_counts(&self) -> Result<Vec<(String, QueueCounts)>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as(include_str!("../sql/sqlite/queue_counts.sql"))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(queue_counts_of(rows))
    }

    async fn stats(&self) -> Result<JobStats> {
        let rows = sqlx::query(include_str!("../sql/sqlite/stats.sql"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut stats = JobStats::default();
        for row in &rows {
            let n: i64 = row.try_get("n").map_err(db)?;
            stats.total_jobs += n;
            match status_of(row.try_get::<&str, _>("status").map_err(db)?)? {
                JobStatus::Pending => {
                    stats.pending = n;
                    stats.delayed = row.try_get("delayed").map_err(db)?;
                }
                JobStatus::Scheduled => stats.scheduled = n,
                JobStatus::Running => stats.running = n,
                JobStatus::Completed => {
                    stats.completed = n;
                    stats.avg_execution_time_ms = row.try_get("avg_ms").map_err(db)?;
                }
                JobStatus::Failed => stats.failed = n,
                JobStatus::Cancelled => stats.cancelled = n,
            }
        }
        Ok(stats)
    }

    async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<CancelOutcome> {
        // PENDING|SCHEDULED|RUNNING -> CANCELLED; the read and the write share the write
        // lock, so the status read is the one the write changes.
        let mut tx = self.write().await?;
        let status: Option<String> = sqlx::query_scalar(include_str!("../sql/sqlite/cancel.sql"))
            .bind(hy(id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let outcome = match status.as_deref().map(status_of).transpose()? {
            None => CancelOutcome::NotFound,
            Some(was @ (JobStatus::Pending | JobStatus::Scheduled | JobStatus::Running)) => {
                sqlx::query(include_str!("../sql/sqlite/cancel_2.sql"))
                    .bind(hy(id))
                    .bind(us(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                if was == JobStatus::Running {
                    CancelOutcome::Stopping
                } else {
                    CancelOutcome::Cancelled
                }
            }
            Some(other) => CancelOutcome::NotCancellable(other),
        };
        tx.commit().await.map_err(db)?;
        Ok(outcome)
    }
}

#[async_trait]
impl DispatchStore for SqliteStore {
    async fn pending_after(&self, after_seq: i64, limit: u32) -> Result<Vec<PendingJob>> {
        let rows = sqlx::query(include_str!("../sql/sqlite/pending_after.sql"))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(rows::pending).collect()
    }

    async fn mark_scheduled(
        &self,
        jobs: &[Token],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<StartedJob>> {
        let tokens = dedupe(jobs);
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        let mut applied = Vec::with_capacity(tokens.len());
        for token in &tokens {
            // PENDING -> SCHEDULED, fenced by the attempt.
            let row = sqlx::query(include_str!("../sql/sqlite/mark_scheduled.sql"))
                .bind(hy(token.id))
                .bind(token.attempt)
                .bind(us(now))
                .bind(us(lease_until))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if let Some(row) = row {
                let attempt = row.int("attempt")?;
                let run = Token { attempt, ..*token };
                applied.push(rows::started(&row, run)?);
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(applied)
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<RescueReport> {
        let now_us = us(now);
        let mut tx = self.write().await?;
        let locked = sqlx::query(include_str!("../sql/sqlite/rescue_lock.sql"))
            .bind(now_us)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        // Each expired job with its rescue, decided once.
        let mut rescues = Vec::with_capacity(locked.len());
        for row in &locked {
            let job = Expired {
                id: row.id("id")?,
                running: row.try_get::<&str, _>("status").map_err(db)? == "RUNNING",
                retry_count: row.try_get("retry_count").map_err(db)?,
                max_retries: row.try_get("max_retries").map_err(db)?,
                owner: row.try_get("lease_owner").map_err(db)?,
                attempt: row.try_get("attempt").map_err(db)?,
            };
            let rescue = job.rescue();
            rescues.push((job.id, rescue));
        }
        let mut report = RescueReport::default();
        let requeued = rescues
            .iter()
            .filter(|(_, r)| !matches!(r, Rescue::DeadLetter(_)))
            .count();
        // Queue positions for the jobs going back, in lease-expiry order.
        let mut seqs = match requeued {
            0 => 0..0,
            n => {
                let first = reserve_seqs(&mut tx, n).await?;
                first..first.saturating_add(n as i64)
            }
        };
        for (id, rescue) in rescues {
            match rescue {
                Rescue::DeadLetter(error) => {
                    let row = sqlx::query(include_str!("../sql/sqlite/rescue_dead.sql"))
                        .bind(hy(id))
                        .bind(now_us)
                        .bind(error)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                    if let Some(row) = row {
                        report.dead_lettered.push(rows::dead_letter(&row)?);
                    }
                }
                Rescue::Retry(error) => {
                    sqlx::query(include_str!("../sql/sqlite/rescue_retry.sql"))
                        .bind(hy(id))
                        .bind(seqs.next())
                        .bind(now_us)
                        .bind(error)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    report.retried.push(id);
                }
                Rescue::Undispatched => {
                    sqlx::query(include_str!("../sql/sqlite/rescue_undispatched.sql"))
                        .bind(hy(id))
                        .bind(seqs.next())
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    report.undispatched.push(id);
                }
            }
        }
        tx.commit().await.map_err(db)?;
        report.retried.sort();
        report.undispatched.sort();
        report.dead_lettered.sort_by_key(|d| d.job_id);
        Ok(report)
    }

    async fn promote_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Promotion> {
        let now_us = us(now);
        let mut tx = self.write().await?;
        let due: Vec<(Hyphenated,)> = sqlx::query_as(include_str!("../sql/sqlite/promote_due.sql"))
            .bind(now_us)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        if !due.is_empty() {
            // Earliest first, each with a fresh seq: the job enters the queue now.
            let first = reserve_seqs(&mut tx, due.len()).await?;
            for (seq, (id,)) in (first..).zip(&due) {
                sqlx::query(include_str!("../sql/sqlite/promote_due_2.sql"))
                    .bind(id)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        let next: Option<i64> = sqlx::query_scalar(include_str!("../sql/sqlite/promote_due_3.sql"))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Promotion {
            promoted: due.len() as u64,
            next_due: next.map(from_us).transpose()?,
        })
    }

    async fn prune(&self, scan: &PruneScan) -> Result<Pruned> {
        let after = scan.after;
        let (from_at, from_seq) = after.map_or((i64::MIN, i64::MIN), |c| (us(c.created_at), c.seq));
        let (done_us, failed_us) = (us(scan.completed_before), us(scan.failed_before));
        let limit = scan.limit;
        let mut tx = self.write().await?;
        let looked: Vec<(Hyphenated, i64, i64)> =
            sqlx::query_as(include_str!("../sql/sqlite/prune.sql"))
                .bind(done_us)
                .bind(failed_us)
                .bind(from_at)
                .bind(from_seq)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        let mut deleted = 0u64;
        for (id, _, _) in &looked {
            deleted += sqlx::query(include_str!("../sql/sqlite/prune_2.sql"))
                .bind(id)
                .bind(done_us)
                .bind(failed_us)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
        }
        tx.commit().await.map_err(db)?;
        let next = match looked.last() {
            Some(&(_, at, seq)) if looked.len() >= limit as usize => Some(PruneCursor {
                created_at: from_us(at)?,
                seq,
            }),
            _ => None,
        };
        Ok(Pruned { deleted, next })
    }
}

#[async_trait]
impl WorkerStore for SqliteStore {
    async fn fetch(&self, tokens: &[Token]) -> Result<Vec<StartedJob>> {
        let tokens = dedupe(tokens);
        let mut jobs = Vec::with_capacity(tokens.len());
        for token in &tokens {
            let row = sqlx::query(include_str!("../sql/sqlite/fetch.sql"))
                .bind(hy(token.id))
                .bind(token.attempt)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            if let Some(row) = row {
                jobs.push(rows::started(&row, *token)?);
            }
        }
        Ok(jobs)
    }

    async fn claim(
        &self,
        claim: &Claim,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<StartedJob>> {
        if claim.limit == 0 {
            return Ok(Vec::new());
        }
        let order = match claim.order {
            PolicyKind::Fcfs | PolicyKind::RoundRobin => "seq",
            PolicyKind::Priority => "priority, seq",
            PolicyKind::Sjf => "estimated_duration, seq",
        };
        let now_us = us(now);
        // One writer at a time: picking and moving happen in one write transaction, so no
        // other claimer can take the same rows.
        let mut tx = self.write().await?;
        let mut limit = i64::from(claim.limit);
        // The queue's limit as the durable settings have it now (whatever the worker's copy
        // says: it may be behind a change).
        let most: Option<i64> = sqlx::query_scalar(include_str!("../sql/sqlite/claim.sql"))
            .bind(queue_key(&claim.queue))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .flatten();
        if let Some(most) = most {
            // The write lock is held: no other claim counts or takes meanwhile.
            let busy: i64 = sqlx::query_scalar(include_str!("../sql/sqlite/claim_2.sql"))
                .bind(&claim.queue)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
            limit = (most - busy).clamp(0, limit);
        }
        let picked: Vec<(Hyphenated,)> = sqlx::query_as(&format!(
            "SELECT id FROM jobs \
             WHERE queue = ?3 AND status = 'PENDING' AND delayed = 0 AND run_at <= ?1 \
               AND (?4 IS NULL OR job_type IN (SELECT value FROM json_each(?4))) \
             ORDER BY {order} LIMIT ?2"
        ))
        .bind(now_us)
        .bind(limit)
        .bind(&claim.queue)
        .bind(
            claim
                .job_types
                .as_ref()
                .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into())),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut claimed = Vec::with_capacity(picked.len());
        for (id,) in picked {
            let row = sqlx::query(include_str!("../sql/sqlite/claim_3.sql"))
                .bind(id)
                .bind(now_us)
                .bind(owner)
                .bind(us(claim.lease_until))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if let Some(row) = row {
                let run = Token {
                    id: id.into_uuid(),
                    attempt: row.int("attempt")?,
                };
                claimed.push(rows::started(&row, run)?);
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(claimed)
    }

    async fn record_starts(
        &self,
        starts: &[(Token, DateTime<Utc>)],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Token>> {
        let mut seen = std::collections::HashSet::with_capacity(starts.len());
        let starts: Vec<&(Token, DateTime<Utc>)> =
            starts.iter().filter(|(t, _)| seen.insert(*t)).collect();
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        let mut applied = Vec::with_capacity(starts.len());
        for (token, at) in starts {
            // SCHEDULED -> RUNNING, fenced by the attempt (already RUNNING under this owner:
            // a retry, applied again for the lease only).
            let done = sqlx::query(include_str!("../sql/sqlite/record_starts.sql"))
                .bind(hy(token.id))
                .bind(token.attempt)
                .bind(owner)
                .bind(us(*at))
                .bind(us(lease_until))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            if done.rows_affected() == 1 {
                applied.push(*token);
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(applied)
    }

    async fn held(&self, owner: &str, leases: &[DateTime<Utc>]) -> Result<Vec<Token>> {
        let mut leases = leases.to_vec();
        leases.sort();
        leases.dedup();
        let mut held = Vec::new();
        for lease in leases {
            let rows = sqlx::query(include_str!("../sql/sqlite/held.sql"))
                .bind(owner)
                .bind(us(lease))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            for row in &rows {
                held.push(rows::token(row)?);
            }
        }
        Ok(held)
    }

    async fn renew(
        &self,
        tokens: &[Token],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Token>> {
        let tokens = dedupe(tokens);
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        let mut held = Vec::with_capacity(tokens.len());
        for token in &tokens {
            let done = sqlx::query(include_str!("../sql/sqlite/renew.sql"))
                .bind(hy(token.id))
                .bind(token.attempt)
                .bind(owner)
                .bind(us(lease_until))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            if done.rows_affected() == 1 {
                held.push(*token);
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(held)
    }

    async fn finish(
        &self,
        runs: &[Finished],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Token>> {
        let runs = dedupe_outcomes(runs);
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let now_us = us(now);
        let mut tx = self.write().await?;
        let requeues = runs
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Retry { .. } | Outcome::Requeue { .. }))
            .count();
        let mut next_seq = if requeues > 0 {
            reserve_seqs(&mut tx, requeues).await?
        } else {
            0
        };
        let mut applied = Vec::with_capacity(runs.len());
        for run in &runs {
            let token = run.outcome.token();
            let (sql, extra): (&str, Vec<Bind>) = match &run.outcome {
                Outcome::Completed { result, .. } => (
                    include_str!("../sql/sqlite/finish_completed.sql"),
                    vec![Bind::Json(result.clone()), Bind::Int(now_us)],
                ),
                Outcome::Retry { error, run_at, .. } => {
                    next_seq += 1;
                    (
                        include_str!("../sql/sqlite/finish_retry.sql"),
                        vec![
                            Bind::Text(error.clone()),
                            Bind::Int(us(*run_at)),
                            Bind::Int(next_seq - 1),
                        ],
                    )
                }
                Outcome::Failed {
                    error, retry_count, ..
                } => (
                    include_str!("../sql/sqlite/finish_failed.sql"),
                    vec![
                        Bind::Text(error.clone()),
                        Bind::Int(i64::from(*retry_count)),
                        Bind::Int(now_us),
                    ],
                ),
                Outcome::Requeue { checkpoint, .. } => {
                    next_seq += 1;
                    (
                        include_str!("../sql/sqlite/finish_requeue.sql"),
                        vec![
                            Bind::Int(next_seq - 1),
                            Bind::OptJson(checkpoint.clone()),
                            Bind::Int(now_us),
                        ],
                    )
                }
            };
            let mut query = sqlx::query(sql)
                .bind(hy(token.id))
                .bind(token.attempt)
                .bind(owner)
                .bind(run.started_at.map(us));
            for value in extra {
                query = match value {
                    Bind::Json(v) => query.bind(v),
                    Bind::OptJson(v) => query.bind(v),
                    Bind::Text(v) => query.bind(v),
                    Bind::Int(v) => query.bind(v),
                };
            }
            if query.execute(&mut *tx).await.map_err(db)?.rows_affected() == 1 {
                applied.push(token);
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(applied)
    }
}

/// A statement argument of [`WorkerStore::finish`] beyond the common four.
enum Bind {
    Json(Value),
    OptJson(Option<Value>),
    Text(String),
    Int(i64),
}

crate::common::dead_letter_store!(
    SqliteStore,
    "sqlite",
    async fn retry_dead_letter(&self, id: JobId, now: DateTime<Utc>) -> Result<Update> {
        let mut tx = self.write().await?;
        let seq = reserve_seqs(&mut tx, 1).await?;
        // FAILED -> PENDING with a fresh retry budget; the last error is kept for reference.
        let done = sqlx::query(include_str!("../sql/sqlite/retry_dead_letter.sql"))
            .bind(hy(id))
            .bind(us(now))
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(if done.rows_affected() == 1 {
            Update::Applied
        } else {
            Update::Stale
        })
    }
);

impl jobsched_core::ports::Store for SqliteStore {}

// The settings and leader methods are the same statements on both backends.
crate::common::control_store!(SqliteStore, "sqlite", us);

fn schedule_spec(s: &Schedule) -> Result<String> {
    serde_json::to_string(s).map_err(|e| data(format!("cannot encode schedule {}: {e}", s.name)))
}

crate::common::schedule_store!(
    SqliteStore,
    "sqlite",
    us,
    hy,
    async fn put_schedule(&self, s: &Schedule) -> Result<bool> {
        let mut tx = self.write().await?;
        let existed: Option<i64> =
            sqlx::query_scalar(include_str!("../sql/sqlite/put_schedule.sql"))
                .bind(&s.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        sqlx::query(include_str!("../sql/sqlite/put_schedule_2.sql"))
            .bind(&s.name)
            .bind(schedule_spec(s)?)
            .bind(s.paused)
            .bind(s.next_fire_at.map(us))
            .bind(us(s.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(existed.is_some())
    }
);

#[async_trait]
impl NotesStore for SqliteStore {
    async fn save_notes(
        &self,
        token: Token,
        attempt: u32,
        progress: Option<&Progress>,
        lines: &[LogLine],
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let held: Option<i64> = sqlx::query_scalar(include_str!("../sql/sqlite/save_notes.sql"))
            .bind(hy(token.id))
            .bind(token.attempt)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if held.is_none() {
            return Ok(false);
        }
        let attempt = try_no(attempt);
        sqlx::query(include_str!("../sql/sqlite/save_notes_2.sql"))
            .bind(hy(token.id))
            .bind(attempt)
            .bind(progress.map(|p| p.fraction))
            .bind(progress.and_then(|p| p.message.as_deref()))
            .bind(progress.map(|p| us(p.updated_at)))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if !lines.is_empty() {
            for l in lines {
                sqlx::query(include_str!("../sql/sqlite/save_notes_3.sql"))
                    .bind(hy(token.id))
                    .bind(attempt)
                    .bind(us(l.at))
                    .bind(&l.level)
                    .bind(&l.message)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            let gone = sqlx::query(include_str!("../sql/sqlite/save_notes_4.sql"))
                .bind(hy(token.id))
                .bind(attempt)
                .bind(MAX_LOG_LINES as i64)
                .bind(MAX_LOG_BYTES as i64)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
            if gone > 0 {
                sqlx::query(include_str!("../sql/sqlite/save_notes_5.sql"))
                    .bind(hy(token.id))
                    .bind(attempt)
                    .bind(i64::try_from(gone).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn progress(&self, id: JobId) -> Result<Option<Progress>> {
        let row = sqlx::query(include_str!("../sql/sqlite/progress.sql"))
            .bind(hy(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(Progress {
                attempt: u32::try_from(r.try_get::<i64, _>("attempt").map_err(db)?).unwrap_or(0),
                fraction: r
                    .try_get::<Option<f64>, _>("fraction")
                    .map_err(db)?
                    .unwrap_or(0.0),
                message: r.try_get("message").map_err(db)?,
                updated_at: from_us(r.try_get("progress_at").map_err(db)?)?,
            })
        })
        .transpose()
    }

    async fn logs(&self, id: JobId, attempt: Option<u32>) -> Result<Vec<TryLog>> {
        let rows = sqlx::query(include_str!("../sql/sqlite/logs.sql"))
            .bind(hy(id))
            .bind(attempt.map(try_no))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let out = rows.iter().map(rows::log_row).collect::<Result<_>>()?;
        Ok(group_logs(out))
    }
}

#[async_trait]
impl TypeStore for SqliteStore {
    async fn register_types(&self, types: &[JobTypeInfo]) -> Result<()> {
        let mut tx = self.write().await?;
        for t in types {
            sqlx::query(include_str!("../sql/sqlite/register_types.sql"))
                .bind(&t.name)
                .bind(t.schema.to_string())
                .bind(t.preemptible)
                .bind(t.default_timeout_seconds)
                .bind(&t.registered_by)
                .bind(us(t.updated_at))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn job_types(&self) -> Result<Vec<JobTypeInfo>> {
        let rows = sqlx::query(include_str!("../sql/sqlite/job_types.sql"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(rows::job_type).collect()
    }

    async fn pending_by_type(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(include_str!("../sql/sqlite/pending_by_type.sql"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }
}
