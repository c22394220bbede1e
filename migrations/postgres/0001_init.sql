-- jobsched schema for PostgreSQL. Column names mirror jobsched_core::Job.
-- All timestamps are written from the application's clock (never now() in SQL).

-- Queue-entry sequence: a job takes a new value on submission and on every re-entry into PENDING.
CREATE SEQUENCE job_seq AS bigint;

CREATE TABLE jobs (
    id                 uuid             PRIMARY KEY,
    name               text             NOT NULL,
    job_type           text             NOT NULL,
    status             text             NOT NULL
        CHECK (status IN ('PENDING', 'SCHEDULED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    priority           smallint         NOT NULL,
    estimated_duration double precision NOT NULL,
    payload            jsonb            NOT NULL,
    result             jsonb,
    error_message      text,
    retry_count        integer          NOT NULL DEFAULT 0,
    max_retries        integer          NOT NULL,
    created_at         timestamptz      NOT NULL,
    scheduled_at       timestamptz,
    started_at         timestamptz,
    completed_at       timestamptz,
    -- Dispatch counter and fencing token, bumped on every PENDING -> SCHEDULED.
    attempt            integer          NOT NULL DEFAULT 0,
    run_at             timestamptz      NOT NULL,
    lease_owner        text,
    lease_expires_at   timestamptz,
    checkpoint         jsonb,
    slices             integer          NOT NULL DEFAULT 0,
    seq                bigint           NOT NULL DEFAULT nextval('job_seq'),
    -- True while the job is listed in the dead-letter queue.
    dead_letter        boolean          NOT NULL DEFAULT false,
    failed_at          timestamptz
);

ALTER SEQUENCE job_seq OWNED BY jobs.seq;

-- The engine's scan of the queue (FCFS / Round Robin order) and the per-policy orders.
CREATE INDEX jobs_pending_seq ON jobs (seq) WHERE status = 'PENDING';
CREATE INDEX jobs_pending_priority ON jobs (priority, seq) WHERE status = 'PENDING';
CREATE INDEX jobs_pending_sjf ON jobs (estimated_duration, seq) WHERE status = 'PENDING';
-- Counts per status (stats can be answered by an index-only scan).
CREATE INDEX jobs_status ON jobs (status) INCLUDE (started_at, completed_at);
-- The rescuer's scan for expired leases.
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at)
    WHERE status IN ('RUNNING', 'SCHEDULED');
-- Listing, newest first, unfiltered and by status.
CREATE INDEX jobs_created ON jobs (created_at DESC, seq DESC);
CREATE INDEX jobs_status_created ON jobs (status, created_at DESC, seq DESC);
-- The dead-letter queue, most recent failure first.
CREATE INDEX jobs_dead_letters ON jobs (failed_at DESC) WHERE dead_letter;

-- Durable settings; key 'policy' holds the PolicySettings JSON.
CREATE TABLE settings (
    key        text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Leader election by lease row.
CREATE TABLE leaders (
    role       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
