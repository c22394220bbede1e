//! The PostgreSQL store.
//!
//! Batch methods bind arrays and join them with `UNNEST`, so each call is one statement and one
//! round trip whatever the batch size. Claims (`exchange`, `mark_scheduled`) lock their queue
//! entries or rows with `FOR UPDATE SKIP LOCKED`: one another claimer holds is that claimer's.
//! Writes that must not skip (`record_starts`, `finish`, `renew`, `rescue_expired`) wait for row
//! locks and are retried on a deadlock. See [`crate::common`] for the transitions each method
//! performs.
//!
//! The batch transitions write the status test as `(j.status = 'X') IS TRUE`. That is the same
//! test, but the planner cannot answer it from an index on `status`, so these statements look
//! their rows up by primary key only. Written plainly, a planner without fresh statistics
//! (autovacuum off, or right after a bulk insert) chose a bitmap scan of every PENDING row
//! (45 ms per 256-job claim with 100k queued, against 9 ms by key).

use crate::common::{
    Expired, POLICY_KEY, QUEUE_KEY_PREFIX, Rescue, add_ttl, decode_settings, dedupe,
    dedupe_by_token, dedupe_outcomes, encode_settings, group_logs, in_request_order, paging,
    queue_counts_of, queue_key, try_no,
};
use crate::error::{StoreError, redact};
use crate::rows::{self, Columns};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsched_core::job_type::JobTypeInfo;
use jobsched_core::notes::{LogLine, MAX_LOG_BYTES, MAX_LOG_LINES, Progress, TryLog};
use jobsched_core::ports::{
    Claim, ControlStore, DeadLetterStore, DispatchStore, Exchanged, Finished, FloorMark, JobRepo,
    Lease, NotesStore, Outcome, Promotion, PruneCursor, PruneScan, Pruned, RescueReport,
    ScheduleStore, Token, TypeStore, Update, WorkerStore,
};
use jobsched_core::queue::{DEFAULT_QUEUE, QueueCounts};
use jobsched_core::schedule::{Fired, Schedule};
use jobsched_core::{
    Backlog, CancelOutcome, DeadLetter, Job, JobFilter, JobId, JobPage, JobStats, JobStatus,
    NewJob, PendingJob, PolicyKind, PolicySettings, Result, StartedJob,
};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

const BACKEND: &str = "postgres";

/// The columns of a [`Job`] in table `jobs` as `{p}` (`""` or an alias with its dot). A row
/// keeps its last lease after it completes (a completion writes as few bytes as it can), so the
/// lease is shown only while the job is in flight.
fn job_columns(p: &str) -> String {
    format!(
        "{p}id, {p}name, {p}job_type, {p}status, {p}priority, {p}estimated_duration, \
         {p}payload, {p}result, {p}error_message, {p}retry_count, {p}max_retries, \
         {p}created_at, {p}scheduled_at, {p}started_at, {p}completed_at, {p}attempt, {p}run_at, \
         {p}lease_owner, CASE WHEN {p}status IN ('SCHEDULED', 'RUNNING') \
                             THEN {p}lease_expires_at END AS lease_expires_at, \
         {p}checkpoint, {p}slices, {p}timeout_seconds, {p}backoff_base, {p}backoff_cap, {p}seq, \
         {p}queue"
    )
}

/// First key of the advisory locks that serialize the claims of a queue with a concurrency
/// limit (the second is the queue name's hash).
const QUEUE_LOCK_SPACE: i32 = 0x6a_73_71_75; // "jsqu"

/// `job_counts` is folded into one row per (queue, status) when it holds this many rows more
/// than that.
const COUNT_ROWS_BEFORE_FOLD: i64 = 64;

/// The migrations for PostgreSQL, embedded at build time.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// A [`jobsched_core::ports::Store`] on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Connections with `synchronous_commit = off`, for the transitions whose loss in a crash
    /// is harmless (see [`PgStore::connect`]).
    relaxed: PgPool,
    /// Synchronous commits on connections that can only plan index-ordered reads (hash joins,
    /// merge joins, sequential scans, sorts and bitmap scans disabled): the workers' exchanges
    /// (outcomes and claims) and the promoter's statements, whose plans from stale statistics
    /// read whole tables. Plans are made per execution (custom plans): a generic plan cached
    /// while the table was empty or unanalysed scanned whole indexes once the table filled up.
    exchanges: PgPool,
    /// Like `exchanges`, with `plan_cache_mode = force_generic_plan` and sorts and bitmap scans
    /// disabled too: small exchanges, on statements whose plan cannot turn bad (see
    /// [`exchange_sql`]).
    generic: PgPool,
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

fn status_of(s: &str) -> Result<JobStatus> {
    rows::status_of(s).map_err(data)
}

impl Columns for PgRow {
    crate::rows::plain_columns!(db);
    crate::rows::plain_columns!(@ db; json: Value, opt_json: Option<Value>);

    fn time(&self, column: &str) -> Result<DateTime<Utc>> {
        self.try_get(column).map_err(db)
    }

    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        self.try_get(column).map_err(db)
    }

    fn id(&self, column: &str) -> Result<JobId> {
        self.try_get(column).map_err(db)
    }

    fn opt_id(&self, column: &str) -> Result<Option<JobId>> {
        self.try_get(column).map_err(db)
    }

    fn invalid(&self, message: String) -> jobsched_core::Error {
        data(message)
    }
}

/// A claimed job's row (it holds its id and attempt).
fn started_from_row(row: &PgRow) -> Result<StartedJob> {
    rows::started(row, rows::token(row)?)
}

/// `host:port/database` for messages.
pub(crate) fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    )
}

/// Parse a Postgres URL, naming the problem if it does not parse.
/// The `application_name` Postgres connections of this process get (see [`name_connections`]).
static APPLICATION_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Name every Postgres connection this process opens from now on `name` (shown in
/// `pg_stat_activity.application_name`), unless the URL or `PGAPPNAME` names them. The first
/// call wins.
pub fn name_connections(name: &str) {
    let _ = APPLICATION_NAME.set(name.to_string());
}

pub(crate) fn parse_url(url: &str) -> std::result::Result<PgConnectOptions, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::MalformedUrl {
        backend: BACKEND,
        url: redact(url),
        source,
    })?;
    Ok(match APPLICATION_NAME.get() {
        Some(name) if options.get_application_name().is_none() => options.application_name(name),
        _ => options,
    })
}

/// The four outcome kinds of an exchange as data-modifying CTEs (`completed`, `retried`,
/// `failed`, `requeued`), $1 now, $2 owner, $3..$20 the arrays of [`OutcomeArrays`] (their
/// `started` columns are unset: an exchange's runs were claimed RUNNING). Each is RUNNING -> X
/// fenced by the attempt and the lease owner: COMPLETED, PENDING (retry / requeue), FAILED.
/// retry_count is capped at max_retries so it never exceeds the budget. A completion changes no
/// column an index of `jobs` names, so it is a HOT update. Each returns its rows' queue,
/// job type, count key and run time for [`counted_cte`] (and, for retries and hand-backs,
/// what [`entered_cte`] needs).
///
/// `completed_cte!(generic)` (and the same for the other outcome macros) adds `j.id = ANY(ids)`,
/// so that a plan made without knowing the arrays (a generic plan) reaches the rows through the
/// primary key whichever side of the join it puts first: see [`exchange_sql`].
macro_rules! completed_cte {
    () => {
        completed_cte!(@ "")
    };
    (generic) => {
        completed_cte!(@ " AND j.id = ANY($3::uuid[])")
    };
    (@ $key:literal) => {
        concat!("WITH completed AS ( \
             UPDATE jobs j SET status = 'COMPLETED', result = t.result, completed_at = $1, \
                 lease_owner = NULL \
             FROM UNNEST($3::uuid[], $4::int4[], $5::timestamptz[], $6::jsonb[]) \
                  AS t(id, attempt, started, result) \
             WHERE j.id = t.id", $key, " AND j.attempt = t.attempt \
               AND (j.status = 'RUNNING' AND j.lease_owner = $2) IS TRUE \
             RETURNING ", returned!(), ")")
    };
}

/// What an outcome CTE returns: the token, and the queue, job type, count key (the status,
/// or DELAYED) and run time (COMPLETED) its row is counted under now; then, for the kinds that
/// put the job back in the queue (`returned!(entering)`), its `job_queue` entry's columns
/// (NULL for the others: see [`entered_cte`]).
macro_rules! returned {
    () => {
        concat!(
            returned!(@),
            ", NULL::int8 AS seq, NULL::int2 AS priority, NULL::float8 AS est, \
             NULL::timestamptz AS run_at, NULL::bool AS delayed, NULL::timestamptz AS created_at"
        )
    };
    (entering) => {
        concat!(
            returned!(@),
            ", j.seq, j.priority, j.estimated_duration AS est, j.run_at, j.delayed, j.created_at"
        )
    };
    (@) => {
        "j.id, j.attempt, j.queue, j.job_type, job_count_key(j.status, j.delayed) AS k, \
         job_run_ms(j.status, j.started_at, j.completed_at) AS run_ms"
    };
}

/// The queue entries (`job_queue`, migration 0017) of the outcomes in `done` that put their job
/// back in the queue (retried, requeued). An entry left over for the same job (written by a
/// process of an earlier version) is replaced.
macro_rules! entered_cte {
    () => {
        ", entered AS ( \
             INSERT INTO job_queue (id, queue, seq, priority, estimated_duration, run_at, \
                                    delayed, created_at, job_type) \
             SELECT id, queue, seq, priority, est, run_at, delayed, created_at, job_type \
             FROM done WHERE seq IS NOT NULL \
             ON CONFLICT (id) DO UPDATE SET queue = EXCLUDED.queue, seq = EXCLUDED.seq, \
                 priority = EXCLUDED.priority, \
                 estimated_duration = EXCLUDED.estimated_duration, run_at = EXCLUDED.run_at, \
                 delayed = EXCLUDED.delayed, created_at = EXCLUDED.created_at, \
                 job_type = EXCLUDED.job_type)"
    };
}

/// The other three outcome kinds, to follow [`completed_cte`].
macro_rules! other_outcome_ctes {
    () => {
        other_outcome_ctes!(@ "", "", "")
    };
    (generic) => {
        other_outcome_ctes!(@ " AND j.id = ANY($7::uuid[])", " AND j.id = ANY($12::uuid[])",
                              " AND j.id = ANY($17::uuid[])")
    };
    (@ $r:literal, $f:literal, $q:literal) => {
        concat!(", retried AS ( \
             UPDATE jobs j SET status = 'PENDING', lease_owner = NULL, \
                 lease_expires_at = NULL, retry_count = LEAST(j.retry_count + 1, j.max_retries), \
                 error_message = t.error, run_at = t.run_at, seq = nextval('job_seq') \
             FROM UNNEST($7::uuid[], $8::int4[], $9::timestamptz[], $10::text[], \
                         $11::timestamptz[]) AS t(id, attempt, started, error, run_at) \
             WHERE j.id = t.id", $r, " AND j.attempt = t.attempt \
               AND (j.status = 'RUNNING' AND j.lease_owner = $2) IS TRUE \
             RETURNING ", returned!(entering), "), \
         failed AS ( \
             UPDATE jobs j SET status = 'FAILED', rare_end = 1, lease_owner = NULL, \
                 lease_expires_at = NULL, error_message = t.error, \
                 retry_count = LEAST(t.retry_count, j.max_retries), \
                 dead_letter = true, failed_at = $1, completed_at = $1 \
             FROM UNNEST($12::uuid[], $13::int4[], $14::timestamptz[], $15::text[], \
                         $16::int4[]) AS t(id, attempt, started, error, retry_count) \
             WHERE j.id = t.id", $f, " AND j.attempt = t.attempt \
               AND (j.status = 'RUNNING' AND j.lease_owner = $2) IS TRUE \
             RETURNING ", returned!(), "), \
         requeued AS ( \
             UPDATE jobs j SET status = 'PENDING', lease_owner = NULL, \
                 seq = nextval('job_seq'), lease_expires_at = NULL, \
                 checkpoint = COALESCE(t.checkpoint, j.checkpoint), run_at = $1 \
             FROM UNNEST($17::uuid[], $18::int4[], $19::timestamptz[], $20::jsonb[]) \
                  AS t(id, attempt, started, checkpoint) \
             WHERE j.id = t.id", $q, " AND j.attempt = t.attempt \
               AND (j.status = 'RUNNING' AND j.lease_owner = $2) IS TRUE \
             RETURNING ", returned!(entering), ")")
    };
}

/// All four outcome kinds.
macro_rules! outcome_ctes {
    ($($g:ident)?) => {
        concat!(completed_cte!($($g)?), other_outcome_ctes!($($g)?))
    };
}

/// The applied outcomes of [`outcome_ctes`].
macro_rules! all_done {
    () => {
        "SELECT * FROM completed UNION ALL SELECT * FROM retried \
         UNION ALL SELECT * FROM failed UNION ALL SELECT * FROM requeued"
    };
}

/// The exchange's count deltas (`job_counts`, in place of a trigger): each applied outcome
/// leaves RUNNING for its new key, each claimed job leaves PENDING for RUNNING, and the
/// PENDING key's summed estimates (`est`, migration 0020) follow. Keys that net to nothing (a
/// completion and a claim of the same queue and type) write no row.
macro_rules! counted_cte {
    () => {
        ", counted AS ( \
             INSERT INTO job_counts (queue, job_type, status, n, run_ms, est) \
             SELECT queue, job_type, k, sum(n), sum(ms), sum(e) FROM ( \
                 SELECT queue, job_type, 'RUNNING' AS k, -1 AS n, 0::float8 AS ms, \
                        0::float8 AS e FROM done \
                 UNION ALL SELECT queue, job_type, k, 1, run_ms, job_pending_est(k, est) \
                 FROM done \
                 UNION ALL SELECT queue, job_type, 'PENDING', -1, 0, -estimated_duration \
                 FROM claimed \
                 UNION ALL SELECT queue, job_type, 'RUNNING', 1, 0, 0 FROM claimed) d \
             GROUP BY queue, job_type, k HAVING sum(n) <> 0 OR sum(ms) <> 0 OR sum(e) <> 0)"
    };
}

/// The condition that starts a claim in sequence order at its queue's floor (`queue_floors`,
/// migration 0019), past the entries claimed since `job_queue` was last vacuumed, which are
/// dead but still in its indexes. A queue without a floor starts at the front.
macro_rules! floor {
    () => {
        " AND seq >= COALESCE((SELECT f.seq FROM queue_floors f WHERE f.queue = $23), 0)"
    };
}

/// The rest of an exchange after [`outcome_ctes`]: claim up to $21 due PENDING jobs in the
/// given order under lease $22 (listed in `job_leases`); answer one row per applied outcome
/// (`claimed` false: id and attempt) and one per claimed job.
///
/// `pick` locks the queue's first entries (`job_queue`, migration 0017; in sequence order from
/// the queue's floor, see [`floor`]) and `taken` deletes
/// them by their physical addresses (a TID scan; the lock keeps each address valid). `claimed`
/// then updates their jobs through the primary key; a job no longer PENDING (an entry a
/// process of an earlier version left behind) is not claimed, and its entry is gone with the
/// others. The claim changes no column an index of `jobs` names, so it is a HOT update.
macro_rules! claim_tail {
    ($order:literal, $floor:expr, $done:expr, $entered:expr) => {
        concat!(
            ", pick AS ( \
                 SELECT ctid FROM job_queue \
                 WHERE queue = $23 AND NOT delayed AND run_at <= $1", $floor, " \
                   AND NOT EXISTS (SELECT 1 FROM settings s \
                                   WHERE s.key = $24 AND s.value ? 'concurrency_limit') \
                   AND ($25::text[] IS NULL OR job_type = ANY($25::text[])) \
                 ORDER BY ", $order, " LIMIT $21 FOR UPDATE SKIP LOCKED), \
             taken AS ( \
                 DELETE FROM job_queue q WHERE q.ctid = ANY (ARRAY(SELECT ctid FROM pick)) \
                 RETURNING q.id), \
             claimed AS ( \
                 UPDATE jobs j SET status = 'RUNNING', attempt = j.attempt + 1, \
                     scheduled_at = GREATEST($1, j.created_at, j.run_at), \
                     started_at = GREATEST($1, j.created_at, j.run_at), \
                     lease_owner = $2, lease_expires_at = $22, slices = j.slices + 1 \
                 WHERE j.id = ANY (ARRAY(SELECT id FROM taken)) AND j.status = 'PENDING' \
                 RETURNING j.id, j.attempt, j.name, j.job_type, j.payload, j.checkpoint, \
                           j.retry_count, j.max_retries, j.created_at, j.slices - 1 AS slices, \
                           j.timeout_seconds, j.backoff_base, j.backoff_cap, j.queue, \
                           j.priority, j.estimated_duration, j.seq), \
             leased AS ( \
                 INSERT INTO job_leases (expires_at, owner, ids) \
                 SELECT $22, $2, array_agg(id) FROM claimed HAVING count(*) > 0), \
             done AS (", $done, ")", $entered, counted_cte!(), " \
             SELECT false AS claimed, id, attempt, NULL::text AS name, NULL::text AS job_type, \
                    NULL::jsonb AS payload, NULL::jsonb AS checkpoint, NULL::int4 AS retry_count, \
                    NULL::int4 AS max_retries, NULL::timestamptz AS created_at, \
                    NULL::int4 AS slices, NULL::float8 AS timeout_seconds, \
                    NULL::float8 AS backoff_base, NULL::float8 AS backoff_cap, \
                    NULL::text AS queue, NULL::int2 AS priority, NULL::float8 AS estimated_duration, NULL::int8 AS seq \
               FROM done \
             UNION ALL SELECT true, c.* FROM claimed c"
        )
    };
}

/// Run `op` again (a few times) when Postgres aborted it to break a deadlock or a
/// serialization conflict. Only used for single statements, which are atomic.
async fn retry_conflicts<T, F, Fut>(op: F) -> std::result::Result<T, sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = std::result::Result<T, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(sqlx::Error::Database(e))
                if tries < 5 && matches!(e.code().as_deref(), Some("40P01" | "40001")) =>
            {
                tries += 1;
                tracing::debug!(error = %e, tries, "postgres conflict; retrying statement");
            }
            other => return other,
        }
    }
}

/// The tokens a `RETURNING j.id, j.attempt` statement applied, in the caller's order.
fn applied_tokens(requested: &[Token], rows: &[PgRow]) -> Result<Vec<Token>> {
    let applied = rows.iter().map(rows::token).collect::<Result<Vec<_>>>()?;
    Ok(in_request_order(requested, applied, |t| t.id))
}

/// Ids and attempts as two arrays, sorted by id so concurrent batches lock rows in one order.
fn token_arrays(tokens: &[Token]) -> (Vec<JobId>, Vec<i32>) {
    let mut sorted = dedupe(tokens);
    sorted.sort_by_key(|t| t.id);
    sorted.into_iter().map(|t| (t.id, t.attempt)).unzip()
}

/// A connection idle for this long is pinged before use; a busier one is used as it is.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);

/// How long a statement waits for a connection by default (see [`PgStore::connect_with`]).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets how long the server waits for a client that went quiet inside a transaction.
const IDLE_IN_TRANSACTION: &str = include_str!("../sql/postgres/idle_in_transaction.sql");

/// Pool settings for every pool. sqlx pings every connection it hands out by default, which
/// doubles the round trips of every statement; here only a connection that sat idle for
/// [`PING_IF_IDLE_FOR`] is checked (a dead one is replaced). One that broke more recently fails
/// its statement and is dropped: the engine and workers retry, an API request answers 503.
fn pool_options(max: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // A process cut off from Postgres in the middle of a transaction (the rescuer's,
                // a limited queue's claim) leaves the server waiting for it with the rows and
                // marks it locked, which blocks whoever takes over until TCP gives up (hours).
                // The server ends such a transaction after this long instead. A server or
                // pooler that refuses the setting keeps its own.
                if let Err(e) = sqlx::query(IDLE_IN_TRANSACTION).execute(&mut *conn).await {
                    tracing::debug!(error = %e, "idle_in_transaction_session_timeout not set");
                }
                Ok(())
            })
        })
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl PgStore {
    /// A store on an existing pool (migrations are not run; see [`PgStore::migrate`]).
    /// Every statement on this pool commits synchronously.
    pub fn new(pool: PgPool) -> Self {
        PgStore {
            relaxed: pool.clone(),
            exchanges: pool.clone(),
            generic: pool.clone(),
            pool,
        }
    }

    /// Open a pool of at most `max_connections` to `url` and check that it connects.
    ///
    /// Three small pools sit beside it (four connections each). One runs with
    /// `synchronous_commit = off` and carries lease renewals and the older dispatch-side
    /// transitions (PENDING→SCHEDULED, SCHEDULED→RUNNING), whose loss in a crash cannot lose a
    /// job or record an outcome twice: every outcome is conditional on the attempt plus RUNNING
    /// under the writer's lease, so of two runs holding the same attempt only the first
    /// outcome is recorded (at-least-once execution). The other carries the workers' exchanges
    /// (outcomes and claims, committed synchronously) and the promoter with hash joins, merge
    /// joins, sequential scans, sorts and bitmap scans disabled, so that a plan made for a
    /// large batch or from stale statistics never reads the whole table. The third carries small exchanges on plans made once per connection
    /// (`plan_cache_mode = force_generic_plan`). If the server refuses these settings at
    /// connect time (e.g. a pooler that rejects startup parameters), the main pool is used
    /// instead.
    pub async fn connect(url: &str, max_connections: u32) -> std::result::Result<Self, StoreError> {
        Self::connect_with(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`PgStore::connect`], with statements failing after `acquire_timeout` when no
    /// connection can be had (all busy, or the server down or unreachable: while it is down,
    /// the pool keeps trying to connect until then).
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> std::result::Result<Self, StoreError> {
        let options = parse_url(url)?;
        let target = describe(&options);
        let open = |options: PgConnectOptions, max: u32| {
            let target = target.clone();
            async move {
                pool_options(max, acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(StoreError::connect(BACKEND, &target))
            }
        };
        let pool = open(options.clone(), max_connections.max(1)).await?;
        let relaxed = match open(
            options
                .clone()
                .options([("synchronous_commit", "off")])
                .options(NO_WHOLE_TABLE_PLANS),
            4,
        )
        .await
        {
            Ok(relaxed) => relaxed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open connections with synchronous_commit=off; starting jobs will commit synchronously");
                pool.clone()
            }
        };
        let generic = match open(generic_options(options.clone()), 4).await {
            Ok(generic) => generic,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open connections with plan_cache_mode=force_generic_plan; small exchanges are planned each time");
                pool.clone()
            }
        };
        let exchanges = match open(exchange_options(options), 4).await {
            Ok(exchanges) => exchanges,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open connections with hash joins, merge joins, sequential scans, sorts and bitmap scans disabled; exchanges and the promoter run on the main pool");
                pool.clone()
            }
        };
        Ok(PgStore {
            pool,
            relaxed,
            exchanges,
            generic,
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
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
        let table: bool =
            sqlx::query_scalar(include_str!("../sql/postgres/applied_migrations.sql"))
                .fetch_one(&self.pool)
                .await
                .map_err(query)?;
        if !table {
            return Ok(None);
        }
        sqlx::query_scalar(include_str!("../sql/postgres/applied_migrations_2.sql"))
            .fetch_all(&self.pool)
            .await
            .map(Some)
            .map_err(query)
    }

    /// Replace the rows of `job_counts` by one row per (queue, job type, status) holding their
    /// sums (a group whose count and estimates both sum to 0 goes). The rows deleted are the
    /// ones summed (one statement), so deltas appended meanwhile, and a fold or a recount
    /// running at the same time elsewhere, are neither lost nor counted twice.
    async fn fold_counts(&self) -> Result<()> {
        retry_conflicts(|| async {
            sqlx::query(include_str!("../sql/postgres/fold_counts.sql"))
                .execute(&self.pool)
                .await
        })
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Apply the embedded migrations to this store's database (idempotent).
    pub async fn migrate(&self) -> std::result::Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(StoreError::migrate(
            BACKEND,
            &describe(&self.pool.connect_options()),
        ))
    }
}

#[async_trait]
impl JobRepo for PgStore {
    async fn insert(&self, job: &NewJob, now: DateTime<Utc>) -> Result<Job> {
        if job.unique_key.is_some() {
            // The key's bookkeeping lives in insert_many; the answer is the job the key names.
            let ids = self.insert_many(std::slice::from_ref(job), now).await?;
            return self
                .get(ids[0])
                .await?
                .ok_or_else(|| data(format!("job {} vanished right after its insert", ids[0])));
        }
        let sql = format!(
            "INSERT INTO jobs (id, name, job_type, status, priority, estimated_duration, payload, \
                               max_retries, created_at, run_at, timeout_seconds, delayed, \
                               backoff_base, backoff_cap, queue) \
             VALUES ($1, $2, $3, 'PENDING', $4, $5, $6, $7, $8, GREATEST($8, $10), $9, \
                     coalesce($10 > $8, false), $11, $12, $13) \
             RETURNING {}",
            job_columns("")
        );
        let row = sqlx::query(&sql)
            .bind(job.id)
            .bind(&job.name)
            .bind(&job.job_type)
            .bind(job.priority)
            .bind(job.estimated_duration)
            .bind(&job.payload)
            .bind(job.max_retries)
            .bind(now)
            .bind(job.timeout_seconds)
            .bind(job.run_at)
            .bind(job.retry_backoff.map(|b| b.base_seconds))
            .bind(job.retry_backoff.map(|b| b.cap_seconds))
            .bind(&job.queue)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        rows::job(&row)
    }

    async fn insert_many(&self, jobs: &[NewJob], now: DateTime<Utc>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        if jobs.iter().all(|j| j.unique_key.is_none()) {
            let mut conn = self.pool.acquire().await.map_err(db)?;
            insert_rows(&mut conn, &jobs.iter().collect::<Vec<_>>(), now).await?;
            return Ok(jobs.iter().map(|j| j.id).collect());
        }
        // One transaction: the keys first (a key already taken names its job), then the rows
        // of the submissions that are new.
        let keys = crate::common::batch_keys(jobs)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let (mut names, mut owners, mut prints) = (Vec::new(), Vec::new(), Vec::new());
        for &i in &keys.firsts {
            let k = jobs[i].unique_key.as_ref().expect("keyed");
            names.push(k.key.as_str());
            owners.push(jobs[i].id);
            prints.push(k.fingerprint.as_str());
        }
        // Sorted by key (batch_keys), so two batches sharing keys lock them in one order.
        let taken: Vec<String> =
            sqlx::query_scalar(include_str!("../sql/postgres/insert_many.sql"))
                .bind(&names)
                .bind(&owners)
                .bind(&prints)
                .bind(now)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        let taken: std::collections::HashSet<String> = taken.into_iter().collect();
        let held: Vec<&str> = names
            .iter()
            .copied()
            .filter(|k| !taken.contains(*k))
            .collect();
        let existing: Vec<(String, JobId, String)> = if held.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(include_str!("../sql/postgres/insert_many_2.sql"))
                .bind(&held)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?
        };
        let ids = keys.resolve(jobs, &existing)?;
        let fresh: Vec<&NewJob> = jobs
            .iter()
            .zip(&ids)
            .filter(|(j, id)| j.id == **id)
            .map(|(j, _)| j)
            .collect();
        insert_rows(&mut tx, &fresh, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(ids)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let sql = format!("SELECT {} FROM jobs WHERE id = $1", job_columns(""));
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::job).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        let (page, page_size, offset) = paging(filter.page, filter.page_size);
        // Only the filters in use appear in the SQL, so each variant gets its own plan. PENDING
        // jobs have a `job_queue` entry (migration 0017), FAILED and CANCELLED a `rare_end`
        // (migration 0018): those listings read their own index, and check the status (a
        // process of an earlier version leaves `rare_end` as it was). The others read
        // `job_catalog` newest first and look each job up by key.
        let mut conditions = Vec::new();
        let mut status_bound = None;
        let own_index = match filter.status {
            None => false,
            Some(JobStatus::Pending) => {
                // An entry a process of an earlier version left behind is not listed.
                conditions.push("j.status = 'PENDING'".to_string());
                true
            }
            Some(JobStatus::Failed) => {
                conditions.push("rare_end = 1 AND j.status = 'FAILED'".to_string());
                true
            }
            Some(JobStatus::Cancelled) => {
                conditions.push("rare_end = 2 AND j.status = 'CANCELLED'".to_string());
                true
            }
            Some(other) => {
                status_bound = Some(other.as_str());
                conditions.push("j.status = $1".to_string());
                false
            }
        };
        let pending = filter.status == Some(JobStatus::Pending) && filter.id.is_none();
        // One job by id: its primary key, whatever else is asked.
        let own_index = own_index || filter.id.is_some();
        // Where the listing keys (id, name, created_at, seq) come from.
        let (from, key, name_key) = if pending {
            ("job_queue q JOIN jobs j ON j.id = q.id", "q.", "j.")
        } else if own_index {
            ("jobs j", "j.", "j.")
        } else {
            ("job_catalog c JOIN jobs j ON j.id = c.id", "c.", "c.")
        };
        let mut n = usize::from(status_bound.is_some());
        if filter.job_type.is_some() {
            n += 1;
            conditions.push(format!("j.job_type = ${n}"));
        }
        if filter.queue.is_some() {
            n += 1;
            conditions.push(format!("j.queue = ${n}"));
        }
        if filter.id.is_some() {
            n += 1;
            conditions.push(format!("{key}id = ${n}"));
        }
        if filter.name_prefix.is_some() {
            // A range on the "C"-collated name index: byte order, like SQLite's.
            conditions.push(format!(
                "{name_key}name COLLATE \"C\" >= ${} AND {name_key}name COLLATE \"C\" < ${}",
                n + 1,
                n + 2
            ));
            n += 2;
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        // With conditions on the catalog alone, the page is cut from the catalog first and
        // only its rows are looked up (a deep page skips catalog entries, not jobs).
        let catalog_only = !own_index
            && status_bound.is_none()
            && filter.job_type.is_none()
            && filter.queue.is_none();
        let (count_sql, page_sql) = if catalog_only {
            (
                format!("SELECT count(*) FROM job_catalog c {where_clause}"),
                format!(
                    "SELECT {} FROM (SELECT c.id, c.created_at, c.seq FROM job_catalog c \
                                     {where_clause} \
                                     ORDER BY c.created_at DESC, c.seq DESC \
                                     LIMIT ${} OFFSET ${}) c \
                     JOIN jobs j ON j.id = c.id ORDER BY c.created_at DESC, c.seq DESC",
                    job_columns("j."),
                    n + 1,
                    n + 2
                ),
            )
        } else {
            (
                format!("SELECT count(*) FROM {from} {where_clause}"),
                format!(
                    "SELECT {} FROM {from} {where_clause} \
                     ORDER BY {key}created_at DESC, {key}seq DESC LIMIT ${} OFFSET ${}",
                    job_columns("j."),
                    n + 1,
                    n + 2
                ),
            )
        };
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        let mut rows = sqlx::query(&page_sql);
        if let Some(s) = status_bound {
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
            count = count.bind(id);
            rows = rows.bind(id);
        }
        if let Some(prefix) = &filter.name_prefix {
            let end = jobsched_core::name_prefix_end(prefix);
            count = count.bind(prefix.clone()).bind(end.clone());
            rows = rows.bind(prefix.clone()).bind(end);
        }
        // With no filter but the status, the total is a kept count, not a scan.
        let counted = filter.job_type.is_none()
            && filter.queue.is_none()
            && filter.id.is_none()
            && filter.name_prefix.is_none();
        let total = if counted {
            let stats = self.stats().await?;
            match filter.status {
                None => stats.total_jobs,
                Some(JobStatus::Pending) => stats.pending,
                Some(JobStatus::Scheduled) => stats.scheduled,
                Some(JobStatus::Running) => stats.running,
                Some(JobStatus::Completed) => stats.completed,
                Some(JobStatus::Failed) => stats.failed,
                Some(JobStatus::Cancelled) => stats.cancelled,
            }
        } else {
            count.fetch_one(&self.pool).await.map_err(db)?
        };
        // A page past the end is empty without a read: a status no job is in would otherwise
        // read the whole catalog looking for one.
        if offset >= total {
            return Ok(JobPage {
                jobs: Vec::new(),
                total,
                page,
                page_size,
            });
        }
        let rows = rows
            .bind(i64::from(page_size))
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(JobPage {
            jobs: rows.iter().map(rows::job).collect::<Result<_>>()?,
            total,
            page,
            page_size,
        })
    }

    async fn backlog(&self) -> Result<Vec<(String, Backlog)>> {
        // Kept with the counts (`job_counts.est`, migration 0020): a sum over a few delta rows,
        // whatever the backlog's size.
        let rows: Vec<(String, i64, f64)> =
            sqlx::query_as(include_str!("../sql/postgres/backlog.sql"))
                .fetch_all(&self.relaxed)
                .await
                .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(queue, jobs, seconds)| (queue, Backlog { jobs, seconds }))
            .collect())
    }

    async fn queue_counts(&self) -> Result<Vec<(String, QueueCounts)>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as(include_str!("../sql/postgres/queue_counts.sql"))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(queue_counts_of(rows))
    }

    async fn stats(&self) -> Result<JobStats> {
        // Sums of the deltas that status changes append (`job_counts`); folded when they pile up.
        let rows = sqlx::query(include_str!("../sql/postgres/stats.sql"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut stats = JobStats::default();
        let (mut deltas, mut groups) = (0, 0);
        for row in &rows {
            let n: i64 = row.try_get("n").map_err(db)?;
            deltas = row.try_get("deltas").map_err(db)?;
            groups = row.try_get("groups").map_err(db)?;
            stats.total_jobs += n;
            let key: &str = row.try_get("status").map_err(db)?;
            // Delayed PENDING jobs are counted under their own key (migration 0007).
            if key == "DELAYED" {
                stats.delayed = n;
                continue;
            }
            match status_of(key)? {
                JobStatus::Pending => stats.pending = n,
                JobStatus::Scheduled => stats.scheduled = n,
                JobStatus::Running => stats.running = n,
                JobStatus::Completed => {
                    stats.completed = n;
                    let run_ms: f64 = row.try_get("run_ms").map_err(db)?;
                    // Integer counts are exact; the ms sum is rounded per delta.
                    stats.avg_execution_time_ms = (n > 0).then(|| (run_ms / n as f64).max(0.0));
                }
                JobStatus::Failed => stats.failed = n,
                JobStatus::Cancelled => stats.cancelled = n,
            }
        }
        stats.pending += stats.delayed;
        // Folded, the table keeps one row per (queue, job type, status): fold when the deltas beyond
        // those pile up.
        if deltas > COUNT_ROWS_BEFORE_FOLD + groups {
            self.fold_counts().await?;
        }
        Ok(stats)
    }

    async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<CancelOutcome> {
        // PENDING|SCHEDULED|RUNNING -> CANCELLED, on the row version the lock finds (a
        // concurrent outcome either committed first, and the job is no longer cancellable, or
        // waits and then misses: its write is fenced by the RUNNING state). If it misses, read
        // the status (a fresh snapshot); a job seen back in a cancellable state raced us, so
        // try again.
        let mut attempts = 0;
        loop {
            let was: Option<String> =
                sqlx::query_scalar(include_str!("../sql/postgres/cancel.sql"))
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
            match was.as_deref() {
                Some("RUNNING") => return Ok(CancelOutcome::Stopping),
                Some(_) => return Ok(CancelOutcome::Cancelled),
                None => {}
            }
            let status: Option<String> =
                sqlx::query_scalar(include_str!("../sql/postgres/cancel_2.sql"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
            attempts += 1;
            match status.as_deref().map(status_of).transpose()? {
                None => return Ok(CancelOutcome::NotFound),
                Some(JobStatus::Pending | JobStatus::Scheduled | JobStatus::Running)
                    if attempts < 5 =>
                {
                    continue;
                }
                Some(other) => return Ok(CancelOutcome::NotCancellable(other)),
            }
        }
    }
}

#[async_trait]
impl DispatchStore for PgStore {
    async fn pending_after(&self, after_seq: i64, limit: u32) -> Result<Vec<PendingJob>> {
        let rows = sqlx::query(include_str!("../sql/postgres/pending_after.sql"))
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
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, attempts) = token_arrays(jobs);
        // PENDING -> SCHEDULED, fenced by the attempt; rows another claimer has locked are
        // skipped (that claimer gets them).
        let rows = sqlx::query(include_str!("../sql/postgres/mark_scheduled.sql"))
            .bind(&ids)
            .bind(&attempts)
            .bind(now)
            .bind(lease_until)
            .fetch_all(&self.relaxed)
            .await
            .map_err(db)?;
        let applied = rows
            .iter()
            .map(started_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(in_request_order(jobs, applied, |j| j.id))
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<RescueReport> {
        // Every lease handed out is listed in `job_leases` (migration 0016). A pass takes out
        // every listed lease that has ended, so each is read once, and a lease listed late (a
        // worker whose clock runs behind, the leader's recount) by the next pass. It locks
        // their jobs (rows never skipped), decides each in Rust by the rule the worker follows,
        // then applies the decisions in one statement; a pass that fails leaves the leases
        // listed.
        let pool = &self.pool;
        let rows = retry_conflicts(|| async move {
            let mut tx = pool.begin().await?;
            let locked = sqlx::query(include_str!("../sql/postgres/rescue_lock.sql"))
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
            let (mut dead, mut dead_errors) = (Vec::new(), Vec::new());
            let (mut retried, mut retried_errors) = (Vec::new(), Vec::new());
            let mut undispatched: Vec<JobId> = Vec::new();
            for row in &locked {
                let expired = Expired {
                    id: row.try_get("id")?,
                    running: row.try_get::<&str, _>("status")? == "RUNNING",
                    retry_count: row.try_get("retry_count")?,
                    max_retries: row.try_get("max_retries")?,
                    owner: row.try_get("lease_owner")?,
                    attempt: row.try_get("attempt")?,
                };
                match expired.rescue() {
                    Rescue::DeadLetter(error) => {
                        dead.push(expired.id);
                        dead_errors.push(error);
                    }
                    Rescue::Retry(error) => {
                        retried.push(expired.id);
                        retried_errors.push(error);
                    }
                    Rescue::Undispatched => undispatched.push(expired.id),
                }
            }
            let rows = sqlx::query(include_str!("../sql/postgres/rescue_apply.sql"))
                .bind(now)
                .bind(&dead)
                .bind(&dead_errors)
                .bind(&retried)
                .bind(&retried_errors)
                .bind(&undispatched)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(rows)
        })
        .await
        .map_err(db)?;
        let mut report = RescueReport::default();
        for row in &rows {
            match row.try_get::<&str, _>("kind").map_err(db)? {
                "dead" => report.dead_lettered.push(rows::dead_letter(row)?),
                "retried" => report.retried.push(row.try_get("id").map_err(db)?),
                _ => report.undispatched.push(row.try_get("id").map_err(db)?),
            }
        }
        report.retried.sort();
        report.undispatched.sort();
        report.dead_lettered.sort_by_key(|d| d.job_id);
        Ok(report)
    }

    async fn promote_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Promotion> {
        // Earliest first, each with a fresh seq (in that order): the job enters the queue
        // when its time comes. Entries another promoter holds are skipped (it promotes them).
        // The statements run where no sort and no whole-table scan can be planned, so they
        // follow `job_queue_delayed` whatever the statistics say (planned from statistics
        // taken before a burst of submissions, the next-due read once scanned all of `jobs`
        // each round: 57 ms with 100k jobs pending). The second statement is given the locked
        // entries' ids as an array, so its plan knows how many, and numbers them in due order.
        let exchanges = &self.exchanges;
        let promoted: i64 = retry_conflicts(|| async move {
            let mut tx = exchanges.begin().await?;
            let due: Vec<JobId> =
                sqlx::query_scalar(include_str!("../sql/postgres/promote_due.sql"))
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
            if due.is_empty() {
                return Ok(0);
            }
            let promoted = sqlx::query_scalar(include_str!("../sql/postgres/promote_due_2.sql"))
                .bind(&due)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(promoted)
        })
        .await
        .map_err(db)?;
        let promoted = u64::try_from(promoted).unwrap_or_default();
        let next_due: Option<DateTime<Utc>> =
            sqlx::query_scalar(include_str!("../sql/postgres/promote_due_3.sql"))
                .fetch_optional(&self.exchanges)
                .await
                .map_err(db)?;
        Ok(Promotion { promoted, next_due })
    }

    async fn prune(&self, scan: &PruneScan) -> Result<Pruned> {
        // The catalog is written once per job and ordered by submission: the scan reads no
        // index a claim or a completion writes, and deletes only finished rows, which no
        // claim or worker locks.
        let after = scan.after;
        let (from_at, from_seq) = (after.map(|c| c.created_at), after.map_or(0, |c| c.seq));
        let row = sqlx::query(include_str!("../sql/postgres/prune.sql"))
            .bind(scan.completed_before)
            .bind(scan.failed_before)
            .bind(from_at)
            .bind(from_seq)
            .bind(i64::from(scan.limit))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let deleted: i64 = row.try_get("deleted").map_err(db)?;
        let scanned: i64 = row.try_get("scanned").map_err(db)?;
        let next = if scanned < i64::from(scan.limit) {
            None
        } else {
            Some(PruneCursor {
                created_at: row.try_get("created_at").map_err(db)?,
                seq: row.try_get("seq").map_err(db)?,
            })
        };
        Ok(Pruned {
            deleted: deleted.max(0) as u64,
            next,
        })
    }

    async fn recount(&self, now: DateTime<Utc>) -> Result<u64> {
        // Both reads on one snapshot (REPEATABLE READ); the correction is only inserted, so
        // deltas written meanwhile, and a concurrent fold, neither conflict nor go astray. Two
        // recounts (an old leader's still running) take turns on a row lock; the later one
        // fails to lock on its stale snapshot and is run again (see recount_2.sql).
        let drift: i64 = retry_conflicts(|| async {
            let mut tx = self.pool.begin().await?;
            for sql in [
                include_str!("../sql/postgres/recount.sql"),
                include_str!("../sql/postgres/recount_2.sql"),
            ] {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            let drift = sqlx::query_scalar(include_str!("../sql/postgres/recount_3.sql"))
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(drift)
        })
        .await
        .map_err(db)?;
        // Processes of an earlier version list no leases (migration 0016) and write no queue
        // entries (0017): list every job in flight again, and enter every PENDING job that
        // has no entry.
        sqlx::query(include_str!("../sql/postgres/lease_sweep.sql"))
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        // Processes of an earlier version also do not set `rare_end` (migration 0018).
        for (sql, what) in [
            (
                include_str!("../sql/postgres/queue_sweep.sql"),
                "PENDING jobs had no queue entry and were given one",
            ),
            (
                include_str!("../sql/postgres/rare_end_sweep.sql"),
                "jobs had a FAILED / CANCELLED listing key that disagreed with their status, \
                 and it was mended",
            ),
        ] {
            let mended: i64 = sqlx::query_scalar(sql)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
            if mended > 0 {
                tracing::warn!(
                    mended,
                    "{mended} {what} (were processes of an earlier version running?)"
                );
            }
        }
        Ok(u64::try_from(drift).unwrap_or_default())
    }

    async fn floor_mark(&self) -> Result<Option<FloorMark>> {
        // The position first, then the open transactions: a transaction that took a position
        // up to it had begun by then, so it is among them unless it has already ended.
        let (seq, cache): (i64, i64) =
            sqlx::query_as(include_str!("../sql/postgres/floor_mark.sql"))
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        if cache > 1 {
            // A session's reserved positions go out after higher ones: no floor is safe.
            return Ok(None);
        }
        let open: Vec<String> =
            sqlx::query_scalar(include_str!("../sql/postgres/floor_mark_2.sql"))
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        Ok(Some(FloorMark { seq, open }))
    }

    async fn raise_floors(&self, mark: &FloorMark, full: bool) -> Result<bool> {
        let open: bool = sqlx::query_scalar(include_str!("../sql/postgres/floor_open.sql"))
            .bind(&mark.open)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        if open {
            return Ok(false);
        }
        // A statement begun after they all ended: it sees every entry they wrote.
        sqlx::query(include_str!("../sql/postgres/raise_floors.sql"))
            .bind(mark.seq)
            .bind(full)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(true)
    }
}

/// Insert `jobs` (already validated, keys settled) in one statement, seqs in input order.
async fn insert_rows(
    conn: &mut sqlx::PgConnection,
    jobs: &[&NewJob],
    now: DateTime<Utc>,
) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    let types: Vec<&str> = jobs.iter().map(|j| j.job_type.as_str()).collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| j.priority).collect();
    let durations: Vec<f64> = jobs.iter().map(|j| j.estimated_duration).collect();
    let payloads: Vec<&Value> = jobs.iter().map(|j| &j.payload).collect();
    let max_retries: Vec<i32> = jobs.iter().map(|j| j.max_retries).collect();
    let timeouts: Vec<Option<f64>> = jobs.iter().map(|j| j.timeout_seconds).collect();
    let run_ats: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|j| j.run_at).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let bases: Vec<Option<f64>> = jobs
        .iter()
        .map(|j| j.retry_backoff.map(|b| b.base_seconds))
        .collect();
    let caps: Vec<Option<f64>> = jobs
        .iter()
        .map(|j| j.retry_backoff.map(|b| b.cap_seconds))
        .collect();
    // One statement is one transaction. nextval() runs after the ORDER BY, so seqs follow
    // the input order.
    let inserted = sqlx::query(include_str!("../sql/postgres/insert_rows.sql"))
        .bind(&ids)
        .bind(&names)
        .bind(&types)
        .bind(&priorities)
        .bind(&durations)
        .bind(&payloads)
        .bind(&max_retries)
        .bind(now)
        .bind(&timeouts)
        .bind(&run_ats)
        .bind(&bases)
        .bind(&caps)
        .bind(&queues)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if inserted.rows_affected() != ids.len() as u64 {
        return Err(data(format!(
            "inserted {} of {} jobs",
            inserted.rows_affected(),
            ids.len()
        )));
    }
    Ok(())
}

/// Largest exchange (outcomes, and jobs claimed) that runs on the generic-plan connections.
const GENERIC_MAX: usize = 16;

/// Session settings of the connections that write jobs in batches: no plan shape that reads
/// the whole table (a hash or merge join, a sequential scan), whatever a batch's size.
const NO_WHOLE_TABLE_PLANS: [(&str, &str); 3] = [
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
    ("enable_seqscan", "off"),
];

/// The exchange connections' settings: no whole-table plan, and no sort or bitmap scan, so a
/// claim's pick can only follow the policy's ordered index and stops after `limit` rows. A
/// plan made from stale statistics (a table analyzed while nearly empty, then filled by a
/// burst of submissions) otherwise estimates the queue at a handful of rows and reads all of
/// them through a bitmap scan and sorts them, for every claim: measured at ~100 ms per claim
/// with 100k jobs pending, against ~1 ms for the ordered scan.
fn exchange_options(options: PgConnectOptions) -> PgConnectOptions {
    options
        .options(NO_WHOLE_TABLE_PLANS)
        .options([("enable_bitmapscan", "off"), ("enable_sort", "off")])
}

/// The generic-plan connections' settings (see [`exchange_sql`]): those of the other exchange
/// connections, with plans made once per connection.
fn generic_options(options: PgConnectOptions) -> PgConnectOptions {
    exchange_options(options).options([("plan_cache_mode", "force_generic_plan")])
}

/// An exchange's statement: the outcomes (completions only, or all four kinds), then a claim in
/// `order`. `generic`: the variant for a plan made without the arrays' contents, on connections
/// with `plan_cache_mode = force_generic_plan`. Such a plan is made at a connection's first
/// exchange, possibly while `jobs` is empty, and kept, so every table access in it is pinned to
/// the one path that stays right at any size: outcome rows through the primary key
/// (`j.id = ANY(ids)`; the join with the arrays is then at most 16 × 16 comparisons), the claim's
/// pick through the policy's ordered index (the pool disables sorts and bitmap scans), and the
/// claimed rows by TID.
fn exchange_sql(order: PolicyKind, only_completed: bool, generic: bool) -> &'static str {
    macro_rules! by_order {
        ($outcomes:expr, $done:expr, $entered:expr) => {
            match order {
                PolicyKind::Fcfs | PolicyKind::RoundRobin => {
                    concat!($outcomes, claim_tail!("seq", floor!(), $done, $entered))
                }
                PolicyKind::Priority => {
                    concat!($outcomes, claim_tail!("priority, seq", "", $done, $entered))
                }
                PolicyKind::Sjf => concat!(
                    $outcomes,
                    claim_tail!("estimated_duration, seq", "", $done, $entered)
                ),
            }
        };
    }
    match (only_completed, generic) {
        (true, false) => by_order!(completed_cte!(), "SELECT * FROM completed", ""),
        (true, true) => by_order!(completed_cte!(generic), "SELECT * FROM completed", ""),
        (false, false) => by_order!(outcome_ctes!(), all_done!(), entered_cte!()),
        (false, true) => by_order!(outcome_ctes!(generic), all_done!(), entered_cte!()),
    }
}

#[async_trait]
impl WorkerStore for PgStore {
    async fn fetch(&self, tokens: &[Token]) -> Result<Vec<StartedJob>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, attempts) = token_arrays(tokens);
        let rows = sqlx::query(include_str!("../sql/postgres/fetch.sql"))
            .bind(&ids)
            .bind(&attempts)
            .fetch_all(&self.relaxed)
            .await
            .map_err(db)?;
        let jobs = rows
            .iter()
            .map(started_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(in_request_order(tokens, jobs, |s| s.id))
    }

    async fn record_starts(
        &self,
        starts: &[(Token, DateTime<Utc>)],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Token>> {
        let mut sorted: Vec<(Token, DateTime<Utc>)> = starts.to_vec();
        sorted.sort_by_key(|(t, _)| (t.id, t.attempt));
        sorted.dedup_by_key(|(t, _)| *t);
        if sorted.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<JobId> = sorted.iter().map(|(t, _)| t.id).collect();
        let attempts: Vec<i32> = sorted.iter().map(|(t, _)| t.attempt).collect();
        let at: Vec<DateTime<Utc>> = sorted.iter().map(|(_, at)| *at).collect();
        let (ids, attempts, at) = (&ids, &attempts, &at);
        // SCHEDULED -> RUNNING, fenced by the attempt; rows locked in id order. A row already
        // RUNNING under this owner counts as applied (a retry after a lost reply) and is left
        // as it is but for the lease.
        let rows = retry_conflicts(|| async move {
            sqlx::query(include_str!("../sql/postgres/record_starts.sql"))
                .bind(ids)
                .bind(attempts)
                .bind(at)
                .bind(owner)
                .bind(lease_until)
                .fetch_all(&self.relaxed)
                .await
        })
        .await
        .map_err(db)?;
        let requested: Vec<Token> = starts.iter().map(|(t, _)| *t).collect();
        applied_tokens(&requested, &rows)
    }

    async fn held(&self, owner: &str, leases: &[DateTime<Utc>]) -> Result<Vec<Token>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        // The leases with exactly these expiries (`job_leases`), not a range: a range would
        // read every recent claim.
        let rows = sqlx::query(include_str!("../sql/postgres/held.sql"))
            .bind(owner)
            .bind(leases)
            .fetch_all(&self.exchanges)
            .await
            .map_err(db)?;
        rows.iter().map(rows::token).collect()
    }

    async fn renew(
        &self,
        tokens: &[Token],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Token>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, attempts) = token_arrays(tokens);
        let (ids, attempts) = (&ids, &attempts);
        // No status change; waits for row locks so a concurrent finish is never skipped.
        let rows = retry_conflicts(|| async move {
            sqlx::query(include_str!("../sql/postgres/renew.sql"))
                .bind(ids)
                .bind(attempts)
                .bind(owner)
                .bind(lease_until)
                .fetch_all(&self.relaxed)
                .await
        })
        .await
        .map_err(db)?;
        applied_tokens(tokens, &rows)
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
        let arrays = OutcomeArrays::of(runs.iter().map(|f| (&f.outcome, f.started_at)));
        let arrays = &arrays;
        let sql = include_str!("../sql/postgres/finish.sql");
        let rows = retry_conflicts(|| async move {
            arrays
                .bind(sqlx::query(sql).bind(now).bind(owner))
                .fetch_all(&self.pool)
                .await
        })
        .await
        .map_err(db)?;
        let requested: Vec<Token> = runs.iter().map(|f| f.outcome.token()).collect();
        applied_tokens(&requested, &rows)
    }

    async fn claim(
        &self,
        claim: &Claim,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<StartedJob>> {
        Ok(self.exchange(&[], owner, now, claim).await?.claimed)
    }

    async fn exchange(
        &self,
        outcomes: &[Outcome],
        owner: &str,
        now: DateTime<Utc>,
        claim: &Claim,
    ) -> Result<Exchanged> {
        // Borrowed, not copied: the results travel to the statement as they are.
        let runs = dedupe_by_token(outcomes, Outcome::token);
        if runs.is_empty() && claim.limit == 0 {
            return Ok(Exchanged::default());
        }
        let arrays = OutcomeArrays::of(runs.iter().map(|o| (*o, None)));
        let arrays = &arrays;
        // The outcomes, then up to `limit` due PENDING rows in the policy's order, each
        // PENDING -> RUNNING under this owner's lease: one statement, one commit. Queue entries
        // another claimer has locked are skipped; the outcome rows were RUNNING in this
        // statement's snapshot, so a job sent back to PENDING here is claimed by a later
        // exchange.
        // Most batches hold only completions (or nothing, a claim alone): a statement with one
        // outcome CTE instead of four is planned in about two thirds of the time.
        let only_completed = runs.iter().all(|o| matches!(o, Outcome::Completed { .. }));
        // A small exchange (the latency path: a job or a few end and as many slots refill) is
        // mostly planning when planned each time; it runs a plan made once per connection
        // instead, on statements whose every access is pinned (see [`exchange_sql`]). A large
        // one is planned for its arrays: planning is a small part of it.
        let generic = runs.len() <= GENERIC_MAX
            && usize::try_from(claim.limit).is_ok_and(|l| l <= GENERIC_MAX);
        let sql = exchange_sql(claim.order, only_completed, generic);
        let limit = i64::from(claim.limit);
        let pool = if generic {
            &self.generic
        } else {
            &self.exchanges
        };
        // `guard`: the queue's settings key, so that a claim made without the limit (a worker
        // whose copy of the settings is behind) takes nothing from a queue the durable
        // settings limit; `None` on the limited path, which checks the limit itself.
        let statement = |limit: i64, guard: Option<String>| {
            arrays
                .bind(sqlx::query(sql).bind(now).bind(owner))
                .bind(limit)
                .bind(claim.lease_until)
                .bind(&claim.queue)
                .bind(guard)
                .bind(claim.job_types.as_deref())
        };
        let rows = match claim.concurrency_limit {
            Some(_) if limit > 0 => {
                // A limited queue: claims of it take turns (a transaction-scoped advisory
                // lock), and each takes at most what is left under the limit, counted after
                // the previous claim committed (a fresh snapshot for the second statement).
                retry_conflicts(|| async move {
                    let mut tx = pool.begin().await?;
                    sqlx::query(include_str!("../sql/postgres/exchange.sql"))
                        .bind(QUEUE_LOCK_SPACE)
                        .bind(&claim.queue)
                        .execute(&mut *tx)
                        .await?;
                    // The limit as the durable settings have it now (the worker's copy may
                    // be behind a change), and the jobs of the queue in flight.
                    let (most, busy): (Option<i64>, i64) =
                        sqlx::query_as(include_str!("../sql/postgres/exchange_2.sql"))
                            .bind(&claim.queue)
                            .bind(queue_key(&claim.queue))
                            .fetch_one(&mut *tx)
                            .await?;
                    let room = most.map_or(limit, |m| (m - busy).clamp(0, limit));
                    let rows = statement(room, None).fetch_all(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(rows)
                })
                .await
            }
            _ => {
                let guard = queue_key(&claim.queue);
                retry_conflicts(|| {
                    let guard = guard.clone();
                    async move { statement(limit, Some(guard)).fetch_all(pool).await }
                })
                .await
            }
        }
        .map_err(db)?;
        let mut applied = Vec::new();
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            if !row.try_get::<bool, _>("claimed").map_err(db)? {
                applied.push(rows::token(row)?);
                continue;
            }
            let key = (
                row.try_get::<i16, _>("priority").map_err(db)?,
                row.try_get::<f64, _>("estimated_duration").map_err(db)?,
                row.try_get::<i64, _>("seq").map_err(db)?,
            );
            claimed.push((key, started_from_row(row)?));
        }
        match claim.order {
            PolicyKind::Fcfs | PolicyKind::RoundRobin => claimed.sort_by_key(|(k, _)| k.2),
            PolicyKind::Priority => claimed.sort_by_key(|(k, _)| (k.0, k.2)),
            PolicyKind::Sjf => {
                claimed.sort_by(|(a, _), (b, _)| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
            }
        }
        let requested: Vec<Token> = runs.iter().map(|o| o.token()).collect();
        Ok(Exchanged {
            applied: in_request_order(&requested, applied, |t| t.id),
            claimed: claimed.into_iter().map(|(_, job)| job).collect(),
        })
    }
}

/// Outcomes split by kind into the arrays the outcome statement ([`outcome_ctes`]) binds as
/// $3..$20, sorted by id so that concurrent writers lock rows in one order.
struct OutcomeArrays<'a> {
    c: Kind<&'a Value, ()>,
    r: Kind<&'a str, DateTime<Utc>>,
    f: Kind<&'a str, i32>,
    q: Kind<Option<&'a Value>, ()>,
}

/// One outcome kind's columns: id, attempt, start (if unrecorded) and up to two extras.
struct Kind<A, B> {
    id: Vec<JobId>,
    attempt: Vec<i32>,
    started: Vec<Option<DateTime<Utc>>>,
    a: Vec<A>,
    b: Vec<B>,
}

impl<A, B> Default for Kind<A, B> {
    fn default() -> Self {
        Kind {
            id: Vec::new(),
            attempt: Vec::new(),
            started: Vec::new(),
            a: Vec::new(),
            b: Vec::new(),
        }
    }
}

impl<A, B> Kind<A, B> {
    fn push(&mut self, token: Token, started: Option<DateTime<Utc>>, a: A, b: B) {
        self.id.push(token.id);
        self.attempt.push(token.attempt);
        self.started.push(started);
        self.a.push(a);
        self.b.push(b);
    }
}

impl<'a> OutcomeArrays<'a> {
    /// From each outcome and, for a run whose start is unrecorded, its start.
    fn of(runs: impl Iterator<Item = (&'a Outcome, Option<DateTime<Utc>>)>) -> OutcomeArrays<'a> {
        let mut sorted: Vec<(&'a Outcome, Option<DateTime<Utc>>)> = runs.collect();
        sorted.sort_by_key(|(o, _)| o.token().id);
        let mut a = OutcomeArrays {
            c: Kind::default(),
            r: Kind::default(),
            f: Kind::default(),
            q: Kind::default(),
        };
        for (outcome, started) in sorted {
            match outcome {
                Outcome::Completed { token, result } => a.c.push(*token, started, result, ()),
                Outcome::Retry {
                    token,
                    error,
                    run_at,
                } => a.r.push(*token, started, error.as_str(), *run_at),
                Outcome::Failed {
                    token,
                    error,
                    retry_count,
                } => a.f.push(*token, started, error.as_str(), *retry_count),
                Outcome::Requeue { token, checkpoint } => {
                    a.q.push(*token, started, checkpoint.as_ref(), ())
                }
            }
        }
        a
    }

    /// Bind $3..$20 onto a query whose $1 (now) and $2 (owner) are bound.
    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.c.id)
            .bind(&self.c.attempt)
            .bind(&self.c.started)
            .bind(&self.c.a)
            .bind(&self.r.id)
            .bind(&self.r.attempt)
            .bind(&self.r.started)
            .bind(&self.r.a)
            .bind(&self.r.b)
            .bind(&self.f.id)
            .bind(&self.f.attempt)
            .bind(&self.f.started)
            .bind(&self.f.a)
            .bind(&self.f.b)
            .bind(&self.q.id)
            .bind(&self.q.attempt)
            .bind(&self.q.started)
            .bind(&self.q.a)
    }
}

crate::common::dead_letter_store!(
    PgStore,
    "postgres",
    async fn retry_dead_letter(&self, id: JobId, now: DateTime<Utc>) -> Result<Update> {
        // FAILED -> PENDING with a fresh retry budget; the last error is kept for reference.
        // Retried on a deadlock: it locks the job, then its queue entry, where a claim that met
        // a stale entry for it locks them the other way round.
        let retried: i64 = retry_conflicts(|| {
            sqlx::query_scalar(include_str!("../sql/postgres/retry_dead_letter.sql"))
                .bind(id)
                .bind(now)
                .fetch_one(&self.pool)
        })
        .await
        .map_err(db)?;
        Ok(if retried == 1 {
            Update::Applied
        } else {
            Update::Stale
        })
    }
);

impl jobsched_core::ports::Store for PgStore {}

// The settings and leader methods are the same statements on both backends.
crate::common::control_store!(PgStore, "postgres", std::convert::identity);

/// The `spec` column of `s` (the user's settings; the fire state has columns of its own).
fn schedule_spec(s: &Schedule) -> Result<Value> {
    serde_json::to_value(s).map_err(|e| data(format!("cannot encode schedule {}: {e}", s.name)))
}

crate::common::schedule_store!(
    PgStore,
    "postgres",
    std::convert::identity,
    std::convert::identity,
    async fn put_schedule(&self, s: &Schedule) -> Result<bool> {
        let existed: bool = sqlx::query_scalar(include_str!("../sql/postgres/put_schedule.sql"))
            .bind(&s.name)
            .bind(schedule_spec(s)?)
            .bind(s.paused)
            .bind(s.next_fire_at)
            .bind(s.updated_at)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(existed)
    }
);

/// Keep a try's progress (when given), only while the token holds the job; returns whether it
/// did. The try's row is made on its first report. The job's row is held FOR KEY SHARE until
/// the commit, so a delete of the job (whose trigger deletes its notes) waits for this write.
const SAVE_TRY: &str = "\
    INSERT INTO job_tries AS t (job_id, attempt, fraction, message, progress_at) \
    SELECT id, $3, $4, $5, $6 FROM jobs WHERE id = $1 AND attempt = $2 AND status = 'RUNNING' \
    FOR KEY SHARE \
    ON CONFLICT (job_id, attempt) DO UPDATE \
        SET fraction = coalesce(excluded.fraction, t.fraction), \
            message = CASE WHEN excluded.progress_at IS NULL THEN t.message \
                           ELSE excluded.message END, \
            progress_at = coalesce(excluded.progress_at, t.progress_at) \
    RETURNING 1";

/// Append lines to a try's log (the try's row exists: [`SAVE_TRY`] ran first).
const APPEND_LINES: &str = "\
    INSERT INTO job_logs (job_id, attempt, at, level, message) \
    SELECT $1, $2, l.at, l.level, l.message \
      FROM unnest($3::timestamptz[], $4::text[], $5::text[]) WITH ORDINALITY AS l(at, level, message, n) \
     ORDER BY l.n";

/// Drop a try's oldest lines beyond the bounds ($3 lines, $4 bytes) and count them.
const TRIM_LINES: &str = "\
    WITH over AS ( \
        SELECT seq FROM ( \
            SELECT seq, row_number() OVER w AS n, sum(octet_length(message)) OVER w AS bytes \
              FROM job_logs WHERE job_id = $1 AND attempt = $2 \
            WINDOW w AS (ORDER BY seq DESC) \
        ) newest_first WHERE n > $3 OR bytes > $4 \
    ), gone AS ( \
        DELETE FROM job_logs l USING over \
         WHERE l.job_id = $1 AND l.attempt = $2 AND l.seq = over.seq RETURNING 1 \
    ) \
    UPDATE job_tries SET log_dropped = log_dropped + (SELECT count(*) FROM gone) \
     WHERE job_id = $1 AND attempt = $2 AND EXISTS (SELECT 1 FROM gone)";

#[async_trait]
impl NotesStore for PgStore {
    async fn save_notes(
        &self,
        token: Token,
        attempt: u32,
        progress: Option<&Progress>,
        lines: &[LogLine],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let held = sqlx::query(SAVE_TRY)
            .bind(token.id)
            .bind(token.attempt)
            .bind(try_no(attempt))
            .bind(progress.map(|p| p.fraction))
            .bind(progress.and_then(|p| p.message.as_deref()))
            .bind(progress.map(|p| p.updated_at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        if held && !lines.is_empty() {
            let at: Vec<DateTime<Utc>> = lines.iter().map(|l| l.at).collect();
            let level: Vec<&str> = lines.iter().map(|l| l.level.as_str()).collect();
            let message: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
            sqlx::query(APPEND_LINES)
                .bind(token.id)
                .bind(try_no(attempt))
                .bind(&at)
                .bind(&level)
                .bind(&message)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(TRIM_LINES)
                .bind(token.id)
                .bind(try_no(attempt))
                .bind(MAX_LOG_LINES as i64)
                .bind(MAX_LOG_BYTES as i64)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(held)
    }

    async fn progress(&self, id: JobId) -> Result<Option<Progress>> {
        let row = sqlx::query(include_str!("../sql/postgres/progress.sql"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(Progress {
                attempt: u32::try_from(r.try_get::<i32, _>("attempt").map_err(db)?).unwrap_or(0),
                fraction: r
                    .try_get::<Option<f64>, _>("fraction")
                    .map_err(db)?
                    .unwrap_or(0.0),
                message: r.try_get("message").map_err(db)?,
                updated_at: r.try_get("progress_at").map_err(db)?,
            })
        })
        .transpose()
    }

    async fn logs(&self, id: JobId, attempt: Option<u32>) -> Result<Vec<TryLog>> {
        let rows = sqlx::query(include_str!("../sql/postgres/logs.sql"))
            .bind(id)
            .bind(attempt.map(try_no))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let out = rows.iter().map(rows::log_row).collect::<Result<_>>()?;
        Ok(group_logs(out))
    }
}

#[async_trait]
impl TypeStore for PgStore {
    async fn register_types(&self, types: &[JobTypeInfo]) -> Result<()> {
        for t in types {
            sqlx::query(include_str!("../sql/postgres/register_types.sql"))
                .bind(&t.name)
                .bind(&t.schema)
                .bind(t.preemptible)
                .bind(t.default_timeout_seconds)
                .bind(&t.registered_by)
                .bind(t.updated_at)
                .execute(&self.pool)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    async fn job_types(&self) -> Result<Vec<JobTypeInfo>> {
        let rows = sqlx::query(include_str!("../sql/postgres/job_types.sql"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(rows::job_type).collect()
    }

    async fn pending_by_type(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(include_str!("../sql/postgres/pending_by_type.sql"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;
    use sqlx::Connection;

    /// A claim of up to `limit` jobs of the default queue in FCFS order, under a 30 s lease.
    fn fcfs_claim(now: DateTime<Utc>, limit: u32) -> Claim {
        Claim {
            limit,
            order: PolicyKind::Fcfs,
            lease_until: now + chrono::Duration::seconds(30),
            queue: "default".into(),
            concurrency_limit: None,
            job_types: None,
        }
    }

    /// Every pool's connections end a transaction whose client went quiet (a process cut off
    /// mid-transaction), so its locks cannot block whoever takes over.
    #[tokio::test]
    async fn connections_end_abandoned_transactions() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let store = PgStore::connect(db.url(), 2).await.unwrap();
        let pools = [
            &store.pool,
            &store.relaxed,
            &store.exchanges,
            &store.generic,
        ];
        let show = "SHOW idle_in_transaction_session_timeout";
        let mut timeouts = Vec::new();
        for pool in pools {
            timeouts.push(sqlx::query_scalar::<_, String>(show).fetch_one(pool).await);
        }
        let timeouts: Vec<String> = timeouts.into_iter().map(Result::unwrap).collect();
        assert_eq!(timeouts, ["10s"; 4]);
        store.pool.close().await;
        db.cleanup().await;
    }

    /// The queue floors (migration 0019): a floor is raised only once the transactions open
    /// at its mark have ended, so an entry such a transaction writes below the positions
    /// already committed is still claimed, in order; claims then start at the floor. Entries
    /// written below a floor are found by a full raise (by hand) or lower it themselves (the
    /// recount's entries for jobs an earlier version handed back).
    #[tokio::test]
    async fn floors_wait_for_open_transactions_and_claims_miss_nothing() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let store = PgStore::connect(db.url(), 2).await.unwrap();
        let now = Utc::now();
        let job = |name: &str| crate::testing::sleep_job(name, serde_json::json!({}), 3);
        let claim = |limit| fcfs_claim(now, limit);
        let names = |claimed: Vec<StartedJob>| -> Vec<String> {
            claimed.into_iter().map(|j| j.name).collect()
        };
        let floor = || async {
            sqlx::query_scalar::<_, i64>("SELECT seq FROM queue_floors WHERE queue = 'default'")
                .fetch_optional(&store.pool)
                .await
                .unwrap()
        };
        store.insert_many(&[job("a"), job("b")], now).await.unwrap();
        let claimed = store.exchange(&[], "w", now, &claim(2)).await.unwrap();
        assert_eq!(names(claimed.claimed), ["a", "b"]);
        // `c` takes its position in a transaction left open; `d` is committed after it.
        let mut open = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let mut tx = open.begin().await.unwrap();
        let c = job("c");
        insert_rows(&mut tx, &[&c], now).await.unwrap();
        store.insert_many(&[job("d")], now).await.unwrap();
        let mark = store
            .floor_mark()
            .await
            .unwrap()
            .expect("Postgres keeps floors");
        assert!(
            !store.raise_floors(&mark, false).await.unwrap(),
            "the transaction writing c is still open"
        );
        assert_eq!(floor().await, None);
        tx.commit().await.unwrap();
        open.close().await.unwrap();
        assert!(store.raise_floors(&mark, false).await.unwrap());
        let c_seq: i64 = sqlx::query_scalar("SELECT seq FROM jobs WHERE name = 'c'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(floor().await, Some(c_seq), "the lowest claimable entry");
        let claimed = store.exchange(&[], "w", now, &claim(10)).await.unwrap();
        assert_eq!(names(claimed.claimed), ["c", "d"]);
        // With the queue empty, the floor goes to just past the mark's position; a job
        // submitted later lies above it and is claimed.
        let mark = store.floor_mark().await.unwrap().unwrap();
        assert!(store.raise_floors(&mark, false).await.unwrap());
        assert_eq!(floor().await, Some(mark.seq + 1));
        store.insert_many(&[job("e")], now).await.unwrap();
        let claimed = store.exchange(&[], "w", now, &claim(10)).await.unwrap();
        assert_eq!(names(claimed.claimed), ["e"]);
        // An entry written below the floor by hand is found by a full raise.
        sqlx::query(
            "INSERT INTO job_queue (id, queue, seq, priority, estimated_duration, run_at, \
                                    delayed, created_at, job_type) \
             SELECT id, queue, 1, priority, estimated_duration, run_at, false, created_at, \
                    job_type FROM jobs WHERE name = 'a'",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query("UPDATE jobs SET status = 'PENDING' WHERE name = 'a'")
            .execute(&store.pool)
            .await
            .unwrap();
        let mark = store.floor_mark().await.unwrap().unwrap();
        assert!(store.raise_floors(&mark, false).await.unwrap());
        let claimed = store.exchange(&[], "w", now, &claim(10)).await.unwrap();
        assert!(claimed.claimed.is_empty(), "below the floor");
        assert!(store.raise_floors(&mark, true).await.unwrap());
        assert_eq!(floor().await, Some(1));
        let claimed = store.exchange(&[], "w", now, &claim(10)).await.unwrap();
        assert_eq!(names(claimed.claimed), ["a"]);
        // An earlier version hands `b` back without an entry, below the floor: the recount
        // enters it at its old position and takes the floor back to the front.
        let mark = store.floor_mark().await.unwrap().unwrap();
        assert!(store.raise_floors(&mark, false).await.unwrap());
        assert_eq!(floor().await, Some(mark.seq + 1));
        sqlx::query("UPDATE jobs SET status = 'PENDING', lease_owner = NULL WHERE name = 'b'")
            .execute(&store.pool)
            .await
            .unwrap();
        store.recount(now).await.unwrap();
        assert_eq!(floor().await, Some(0));
        let claimed = store.exchange(&[], "w", now, &claim(10)).await.unwrap();
        assert_eq!(names(claimed.claimed), ["b"]);
        store.pool.close().await;
        db.cleanup().await;
    }

    /// What processes of an earlier version do to the queue (migration 0017) is mended: a job
    /// they put back in PENDING without an entry is claimable once the leader's recount has
    /// entered it, and an entry they left for a job no longer PENDING is dropped by the claim
    /// that meets it, without claiming the job. The FAILED / CANCELLED listing key (migration
    /// 0018) they leave as it was: the listing checks the status, and the recount mends the key.
    #[tokio::test]
    async fn queue_entries_an_earlier_version_missed_are_mended() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let store = PgStore::connect(db.url(), 2).await.unwrap();
        let now = Utc::now();
        let job = |name: &str| crate::testing::sleep_job(name, serde_json::json!({}), 3);
        let ids = store
            .insert_many(&[job("a"), job("b"), job("c")], now)
            .await
            .unwrap();
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        let claim = fcfs_claim(now, 10);
        let claimed = store.exchange(&[], "w", now, &claim).await.unwrap().claimed;
        assert_eq!(claimed.len(), 3);
        // This version cancels `c`; an earlier version hands `a` back (no entry) and leaves an
        // entry for `b`, which it cancels.
        store.cancel(c, now).await.unwrap();
        sqlx::query("UPDATE jobs SET status = 'PENDING', lease_owner = NULL WHERE id = $1")
            .bind(a)
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE jobs SET status = 'CANCELLED' WHERE id = $1")
            .bind(b)
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO job_queue (id, queue, seq, priority, estimated_duration, run_at, \
                                    delayed, created_at, job_type) \
             SELECT id, queue, seq, priority, estimated_duration, run_at, false, created_at, \
                    job_type FROM jobs WHERE id = $1",
        )
        .bind(b)
        .execute(&store.pool)
        .await
        .unwrap();
        let claimed = store.exchange(&[], "w", now, &claim).await.unwrap().claimed;
        assert!(claimed.is_empty(), "no entry for a; b is not PENDING");
        let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM job_queue")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(entries, 0, "b's entry was dropped");
        // Migration 0018: `b` lacks its listing key, and `a` carries a stale one (as a dead
        // letter an earlier version retried would).
        sqlx::query("UPDATE jobs SET rare_end = 2 WHERE id = $1")
            .bind(a)
            .execute(&store.pool)
            .await
            .unwrap();
        let keys = || async {
            let key = |id| {
                sqlx::query_scalar::<_, Option<i16>>("SELECT rare_end FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_one(&store.pool)
            };
            (key(a).await.unwrap(), key(b).await.unwrap())
        };
        assert_eq!(keys().await, (Some(2), None));
        let cancelled = || async {
            let filter = jobsched_core::JobFilter {
                status: Some(jobsched_core::JobStatus::Cancelled),
                page: 1,
                page_size: 10,
                ..Default::default()
            };
            let page = store.list(&filter).await.unwrap();
            page.jobs.iter().map(|j| j.id).collect::<Vec<_>>()
        };
        assert_eq!(cancelled().await, vec![c], "a is PENDING; b has no key yet");
        store.recount(now).await.unwrap();
        assert_eq!(
            keys().await,
            (None, Some(2)),
            "the recount mended both keys"
        );
        let claimed = store.exchange(&[], "w", now, &claim).await.unwrap().claimed;
        assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a]);
        assert_eq!(cancelled().await, vec![c, b], "newest first");
    }

    /// A lease handed out without a `job_leases` row (by a process of an earlier version) is
    /// rescued once the leader's recount has listed it again, and the rescuer forgets the rows
    /// it is done with.
    #[tokio::test]
    async fn unlisted_leases_are_rescued_after_a_recount() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let store = PgStore::connect(db.url(), 2).await.unwrap();
        let now = Utc::now();
        let secs = chrono::Duration::seconds;
        let job = crate::testing::sleep_job("a", serde_json::json!({}), 3);
        let id = store.insert_many(&[job], now).await.unwrap()[0];
        sqlx::query(
            "UPDATE jobs SET status = 'RUNNING', attempt = 1, lease_owner = 'old', \
             lease_expires_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now + secs(1))
        .execute(&store.pool)
        .await
        .unwrap();
        let later = now + secs(5);
        let report = store.rescue_expired(later).await.unwrap();
        assert!(report.retried.is_empty(), "not listed, not found");
        store.recount(later).await.unwrap();
        let report = store.rescue_expired(later + secs(1)).await.unwrap();
        assert_eq!(report.retried, vec![id]);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_leases")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0, "a pass takes out every lease that has ended");
    }

    /// A status changed without its count (a process of an earlier version after migration
    /// 0015), and a stray delta: the recount finds both and corrects them, once.
    #[tokio::test]
    async fn recount_corrects_counts_that_drifted() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let store = PgStore::connect(db.url(), 2).await.unwrap();
        let now = Utc::now();
        let job = |name: &str| crate::testing::sleep_job(name, serde_json::json!({}), 3);
        let ids = store
            .insert_many(&[job("a"), job("b"), job("c")], now)
            .await
            .unwrap();
        assert_eq!(
            store.recount(Utc::now()).await.unwrap(),
            0,
            "nothing drifted yet"
        );
        // A backlog sum off (a delta an earlier version wrote without its estimates) is
        // corrected, though no count is.
        let backlog = store.backlog().await.unwrap();
        assert_eq!(backlog[0].1.jobs, 3);
        sqlx::query(
            "INSERT INTO job_counts (queue, job_type, status, n, run_ms, est) \
             VALUES ('default', 'sleep', 'PENDING', 0, 0, -2.5)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let off = store.backlog().await.unwrap();
        assert!((off[0].1.seconds - (backlog[0].1.seconds - 2.5)).abs() < 1e-9);
        assert_eq!(store.recount(Utc::now()).await.unwrap(), 0, "no count off");
        assert_eq!(store.backlog().await.unwrap(), backlog);
        sqlx::query("UPDATE jobs SET status = 'CANCELLED' WHERE id = $1")
            .bind(ids[0])
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO job_counts (queue, job_type, status, n, run_ms) \
                     VALUES ('default', 'sleep', 'RUNNING', 2, 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.pending, stats.running, stats.cancelled), (3, 2, 0));
        // PENDING 1 too many, CANCELLED 1 too few, RUNNING 2 too many.
        assert_eq!(store.recount(Utc::now()).await.unwrap(), 4);
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.pending, stats.running, stats.cancelled), (2, 0, 1));
        assert_eq!(stats.total_jobs, 3);
        assert_eq!(
            store.backlog().await.unwrap(),
            [(
                "default".to_string(),
                Backlog {
                    jobs: 2,
                    seconds: 2.0
                }
            )],
            "the backlog corrected with its count"
        );
        assert_eq!(
            store.recount(Utc::now()).await.unwrap(),
            0,
            "corrected once"
        );
        // Two recounts at once (an old leader's and a new one's) correct a difference once.
        sqlx::query("UPDATE jobs SET status = 'CANCELLED' WHERE id = $1")
            .bind(ids[1])
            .execute(&store.pool)
            .await
            .unwrap();
        let other = PgStore::connect(db.url(), 2).await.unwrap();
        let (a, b) = tokio::join!(store.recount(Utc::now()), other.recount(Utc::now()));
        assert_eq!(a.unwrap() + b.unwrap(), 2, "one of them corrected it");
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.pending, stats.cancelled), (1, 2));
        other.pool.close().await;
        store.pool.close().await;
        db.cleanup().await;
    }

    /// The generic plans of the small exchanges, made as a worker's first exchange makes them:
    /// on an empty table. Each table access must be one that stays cheap when the table holds
    /// millions of rows: the primary key with a key condition, the policy's ordered index, a
    /// TID scan. A plan made this way once joined the outcomes by reading all of `jobs_pkey`
    /// and found the claimed rows by reading all of a listing index.
    #[tokio::test]
    async fn generic_exchange_plans_made_on_an_empty_table_only_use_keys() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let options = generic_options(parse_url(db.url()).unwrap());
        let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
        let types = "timestamptz, text, uuid[], int4[], timestamptz[], jsonb[], uuid[], int4[], \
                     timestamptz[], text[], timestamptz[], uuid[], int4[], timestamptz[], text[], \
                     int4[], uuid[], int4[], timestamptz[], jsonb[], int8, timestamptz, text, text, \
                     text[]";
        let args = "now(), 'w', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', \
                    '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', 4, now(), 'default', 'policy', \
                    ARRAY['sleep']";
        let mut n = 0;
        for order in [PolicyKind::Fcfs, PolicyKind::Priority, PolicyKind::Sjf] {
            for only_completed in [true, false] {
                n += 1;
                let sql = exchange_sql(order, only_completed, true);
                sqlx::raw_sql(&format!("PREPARE x{n}({types}) AS {sql}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let plan: Vec<String> =
                    sqlx::query_scalar(&format!("EXPLAIN EXECUTE x{n}({args})"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                let text = plan.join("\n");
                let what = format!("{order:?}, only completions: {only_completed}:\n{text}");
                for bad in [
                    "Seq Scan",
                    "Sort",
                    "Bitmap",
                    // Any hash join (a HashAggregate, which groups the statement's own count
                    // deltas, is allowed).
                    "Hash Cond",
                    "Merge",
                    "job_queue_created",
                    "job_queue_seq",
                    "job_queue_delayed",
                    "jobs_rare_end_created",
                    "jobs_dead_letters",
                ] {
                    assert!(!text.contains(bad), "{bad} in the generic plan of {what}");
                }
                assert!(
                    text.contains("Tid Scan"),
                    "queue entries not taken by TID: {what}"
                );
                let order_index = match order {
                    PolicyKind::Priority => "job_queue_priority",
                    PolicyKind::Sjf => "job_queue_sjf",
                    _ => "job_queue_fcfs",
                };
                assert!(
                    text.contains(order_index),
                    "the pick does not follow {order_index}: {what}"
                );
                // Every scan of the primary key has a key condition (no full index scan).
                let pkey_scans = text.matches("using jobs_pkey").count();
                let conditions = text.matches("Index Cond: (id = ANY").count();
                assert!(pkey_scans > 0, "outcomes not read by key: {what}");
                assert_eq!(pkey_scans, conditions, "a full scan of jobs_pkey: {what}");
            }
        }
        conn.close().await.unwrap();
        db.cleanup().await;
    }
}
