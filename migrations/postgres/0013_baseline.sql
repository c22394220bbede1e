-- The jobsched schema as the migrations 0001-0013 built it, in one file. A database those
-- migrations built is adopted by `jobsched migrate` as it is (crates/store/src/baseline.rs);
-- a new one is created from this file. Later changes follow in 0014 and up.

-- ------------------------------------------------------------------------------------------
-- Jobs
-- ------------------------------------------------------------------------------------------

-- A job's queue-entry order (FCFS, ties of the other policies); a retry or a requeue takes a
-- new number.
CREATE SEQUENCE job_seq;

-- One row per job. Two rules shape it:
--
-- HOT updates. An UPDATE is HOT (a new row version on the same page, no index touched) when no
-- indexed column changes and the page has room. No index and no partial-index predicate
-- refers to `status` itself; they refer to generated columns whose values change only when a
-- job enters or leaves the queue (`queued`), fails or is cancelled (`rare_end`: 1 FAILED,
-- 2 CANCELLED). RUNNING -> COMPLETED changes neither, nor any other indexed column (a
-- completion keeps `lease_expires_at`), and fillfactor 40 leaves a page room for its jobs'
-- claimed versions and, once those old versions are pruned, their completions.
--
-- Little WAL. Where a new row version stays on its page, Postgres logs only the bytes between
-- the two versions' common prefix and suffix. The submission's immutable columns come first,
-- then what retries and failures change, then what every claim and completion changes, so
-- each of those logs only the row's last ~100 bytes. (`delayed`, `backoff_*` and `queue`
-- came later and sit at the end; they never change after submission.)
--
-- Counts per status are kept in `job_counts` by statement triggers, not by an index on status.
CREATE TABLE jobs (
    id                 uuid             NOT NULL,
    created_at         timestamptz      NOT NULL,
    estimated_duration double precision NOT NULL,
    -- Longest a single run may take; NULL: the job type's default.
    timeout_seconds    double precision,
    priority           smallint         NOT NULL,
    max_retries        integer          NOT NULL,
    name               text             NOT NULL,
    job_type           text             NOT NULL,
    payload            jsonb            NOT NULL,
    seq                bigint           NOT NULL,
    -- Not to be run before: the submission's `run_at` / delay, or a retry's backoff.
    run_at             timestamptz      NOT NULL,
    retry_count        integer          NOT NULL DEFAULT 0,
    dead_letter        boolean          NOT NULL DEFAULT false,
    failed_at          timestamptz,
    error_message      text,
    -- A preemptible job's saved progress between Round Robin slices.
    checkpoint         jsonb,
    scheduled_at       timestamptz,
    started_at         timestamptz,
    -- The fencing token: bumped by every claim; every outcome is conditional on it.
    attempt            integer          NOT NULL DEFAULT 0,
    slices             integer          NOT NULL DEFAULT 0,
    lease_expires_at   timestamptz,
    completed_at       timestamptz,
    result             jsonb,
    status             text             NOT NULL,
    lease_owner        text,
    queued             boolean GENERATED ALWAYS AS (status = 'PENDING') STORED,
    rare_end           smallint
        GENERATED ALWAYS AS (CASE status WHEN 'FAILED' THEN 1 WHEN 'CANCELLED' THEN 2 END) STORED,
    -- PENDING with a `run_at` in the future: out of the claim orders until the engine leader
    -- promotes it (the `jobs_delayed` order), counted under DELAYED.
    delayed            boolean          NOT NULL DEFAULT false,
    -- This job's retry backoff; NULL: the installation's.
    backoff_base       double precision,
    backoff_cap        double precision,
    -- The named queue the job waits in, for life (`default` unless the submission names one).
    queue              text             NOT NULL DEFAULT 'default',
    CONSTRAINT jobs_status_check CHECK (status IN ('PENDING', 'SCHEDULED', 'RUNNING', 'COMPLETED',
                                                   'FAILED', 'CANCELLED'))
) WITH (fillfactor = 40);
ALTER SEQUENCE job_seq OWNED BY jobs.seq;
ALTER TABLE jobs ALTER COLUMN seq SET DEFAULT nextval('job_seq');
ALTER TABLE jobs ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

-- The claim orders, one per policy, each led by the queue (a claim takes from one queue).
CREATE INDEX jobs_queued_seq ON jobs (queue, seq) WHERE queued AND NOT delayed;
CREATE INDEX jobs_queued_priority ON jobs (queue, priority, seq) WHERE queued AND NOT delayed;
CREATE INDEX jobs_queued_sjf ON jobs (queue, estimated_duration, seq) WHERE queued AND NOT delayed;
-- The promotion order of scheduled jobs, and when the next one is due.
CREATE INDEX jobs_delayed ON jobs (run_at, seq) WHERE queued AND delayed;
-- The rescuer's scan for expired leases.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
-- The listings of PENDING, FAILED / CANCELLED and dead-lettered jobs, newest first.
CREATE INDEX jobs_queued_created ON jobs (created_at DESC, seq DESC) WHERE queued;
CREATE INDEX jobs_rare_end_created ON jobs (rare_end, created_at DESC, seq DESC)
    WHERE rare_end IS NOT NULL;
CREATE INDEX jobs_dead_letters ON jobs (failed_at DESC) WHERE dead_letter;

-- The listing keys of every job, written once by the insert trigger. A claim is not a HOT
-- update (it leaves the queue's partial indexes), so Postgres inserts its new version into
-- every other index of `jobs`; keys that never change after submission live here instead.
CREATE TABLE job_catalog (
    id         uuid        NOT NULL,
    created_at timestamptz NOT NULL,
    -- The job's sequence number at submission (ties on created_at, newest first).
    seq        bigint      NOT NULL,
    name       text        NOT NULL
);
CREATE INDEX job_catalog_created ON job_catalog (created_at DESC, seq DESC) INCLUDE (id);
-- Name prefix search (`LIKE 'x%'` needs the C collation to use it).
CREATE INDEX job_catalog_name ON job_catalog (name COLLATE "C") INCLUDE (id);

-- Counts per (queue, job type, status key) and the summed run time of COMPLETED jobs, as
-- deltas: each statement's trigger adds rows, the engine leader folds them. A count is a sum
-- over a few rows, never a scan of `jobs`.
CREATE TABLE job_counts (
    status   text             NOT NULL,
    n        bigint           NOT NULL,
    run_ms   double precision NOT NULL,
    queue    text             NOT NULL DEFAULT 'default',
    job_type text             NOT NULL DEFAULT ''
);

-- Idempotency keys (the `Idempotency-Key` header or `unique_key`): while the job exists, the
-- same request with the same key returns it; a different request with it is refused. Apart
-- from `jobs`, so the hot row stays narrow; deleted with their job (the delete trigger).
CREATE TABLE job_keys (
    key         text        PRIMARY KEY,
    job_id      uuid        NOT NULL,
    -- SHA-256 of the API's canonical JSON of the request that created the job.
    fingerprint text        NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX job_keys_job ON job_keys (job_id);

-- What runs report while they work, per try (1, then one more per retry): the latest progress
-- and a bounded log (the newest 1,000 lines and 256 KiB). Apart from `jobs`, so a report never
-- writes a version of the job's row.
CREATE TABLE job_tries (
    job_id      uuid             NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer          NOT NULL,
    fraction    double precision,
    message     text,
    progress_at timestamptz,
    -- Lines of this try no longer kept.
    log_dropped bigint           NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_logs (
    job_id  uuid        NOT NULL,
    attempt integer     NOT NULL,
    seq     bigint      GENERATED ALWAYS AS IDENTITY,
    at      timestamptz NOT NULL,
    level   text        NOT NULL,
    message text        NOT NULL,
    PRIMARY KEY (job_id, attempt, seq),
    FOREIGN KEY (job_id, attempt) REFERENCES job_tries (job_id, attempt) ON DELETE CASCADE
);

-- ------------------------------------------------------------------------------------------
-- The kept counts and the tables written with every job
-- ------------------------------------------------------------------------------------------

-- Delayed PENDING jobs are counted under DELAYED (readers add them to PENDING).
CREATE FUNCTION job_count_key(status text, delayed boolean)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN delayed AND status = 'PENDING' THEN 'DELAYED' ELSE status END
$$;

-- A COMPLETED job's run time in milliseconds (for the mean execution time); 0 otherwise.
CREATE FUNCTION job_run_ms(status text, started timestamptz, completed timestamptz)
RETURNS double precision LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN status = 'COMPLETED' AND started IS NOT NULL AND completed IS NOT NULL
                THEN EXTRACT(EPOCH FROM (completed - started))::float8 * 1000 ELSE 0 END
$$;

CREATE FUNCTION job_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, job_type, status, n, run_ms)
    SELECT queue, job_type, job_count_key(status, delayed), count(*),
           sum(job_run_ms(status, started_at, completed_at))
      FROM new_rows GROUP BY 1, 2, 3;
    INSERT INTO job_catalog (id, created_at, seq, name)
    SELECT id, created_at, seq, name FROM new_rows;
    RETURN NULL;
END
$$;

CREATE FUNCTION job_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, job_type, status, n, run_ms)
    SELECT q, t, k, sum(n), sum(run_ms)
      FROM (SELECT queue AS q, job_type AS t, job_count_key(status, delayed) AS k, 1 AS n,
                   job_run_ms(status, started_at, completed_at) AS run_ms
              FROM new_rows
            UNION ALL
            SELECT queue, job_type, job_count_key(status, delayed), -1,
                   -job_run_ms(status, started_at, completed_at)
              FROM old_rows) d
     GROUP BY q, t, k
    HAVING sum(n) <> 0 OR sum(run_ms) <> 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION job_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, job_type, status, n, run_ms)
    SELECT queue, job_type, job_count_key(status, delayed), -count(*),
           -sum(job_run_ms(status, started_at, completed_at))
      FROM old_rows GROUP BY 1, 2, 3;
    DELETE FROM job_catalog c USING old_rows o WHERE c.id = o.id;
    DELETE FROM job_keys k USING old_rows o WHERE k.job_id = o.id;
    RETURN NULL;
END
$$;

CREATE FUNCTION job_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_counts;
    DELETE FROM job_catalog;
    DELETE FROM job_keys;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION job_counts_inserted();
CREATE TRIGGER jobs_counted_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_updated();
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION job_counts_deleted();
CREATE TRIGGER jobs_counted_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_truncated();

-- ------------------------------------------------------------------------------------------
-- Settings, leadership, maintenance marks, job types, schedules
-- ------------------------------------------------------------------------------------------

-- Durable settings: `policy` (the default queue's policy settings), `queue:<name>` (another
-- queue's). Redis holds a copy that is rebuilt from these rows.
CREATE TABLE settings (
    key        text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Leader leases per role (the engine leader runs the maintenance loops).
CREATE TABLE leaders (
    role       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);

-- How far the rescuer has looked: leases that ended before `scanned_to` were examined.
CREATE TABLE rescue_marks (
    name       text        PRIMARY KEY,
    scanned_to timestamptz NOT NULL
);

-- The job-type catalog: what each type a worker registered accepts. The API checks
-- submissions of types it was not built with against `schema`.
CREATE TABLE job_types (
    name                    text             PRIMARY KEY,
    schema                  jsonb            NOT NULL,
    preemptible             boolean          NOT NULL,
    default_timeout_seconds double precision NOT NULL,
    registered_by           text             NOT NULL,
    updated_at              timestamptz      NOT NULL
);

-- Periodic jobs. `spec` holds what a user sets (cron, time zone, job template, overlap,
-- catch-up); the fire state lives in columns. The engine leader fires a due schedule by
-- enqueuing its job (idempotency key `schedule:<name>:<fire time>`) and then moving
-- `next_fire_at` on with a conditional update, so no fire time makes two jobs.
CREATE TABLE schedules (
    name         text        PRIMARY KEY,
    spec         jsonb       NOT NULL,
    paused       boolean     NOT NULL,
    next_fire_at timestamptz,
    last_fire_at timestamptz,
    last_job_id  uuid,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;
