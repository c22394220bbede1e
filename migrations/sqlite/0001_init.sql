-- jobsched schema for SQLite. Column names mirror jobsched_core::Job.
--
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC), written from the application's
-- clock, so comparisons and ORDER BY are plain integer arithmetic. Ids are hyphenated UUID text.
-- JSON columns hold JSON text. Booleans are 0/1.

CREATE TABLE jobs (
    id                 TEXT    PRIMARY KEY NOT NULL,
    name               TEXT    NOT NULL,
    job_type           TEXT    NOT NULL,
    status             TEXT    NOT NULL
        CHECK (status IN ('PENDING', 'SCHEDULED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    priority           INTEGER NOT NULL,
    estimated_duration REAL    NOT NULL,
    payload            TEXT    NOT NULL,
    result             TEXT,
    error_message      TEXT,
    retry_count        INTEGER NOT NULL DEFAULT 0,
    max_retries        INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    scheduled_at       INTEGER,
    started_at         INTEGER,
    completed_at       INTEGER,
    -- Dispatch counter and fencing token, bumped on every PENDING -> SCHEDULED.
    attempt            INTEGER NOT NULL DEFAULT 0,
    run_at             INTEGER NOT NULL,
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    checkpoint         TEXT,
    slices             INTEGER NOT NULL DEFAULT 0,
    -- Queue-entry sequence, allocated from job_seq inside the writing transaction.
    seq                INTEGER NOT NULL,
    -- 1 while the job is listed in the dead-letter queue.
    dead_letter        INTEGER NOT NULL DEFAULT 0 CHECK (dead_letter IN (0, 1)),
    failed_at          INTEGER
);

-- The queue-entry sequence counter (one row). Every write transaction that hands out seq values
-- bumps it first, which also takes SQLite's write lock, so values are unique and increasing.
CREATE TABLE job_seq (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO job_seq (id, value) VALUES (1, 0);

CREATE INDEX jobs_pending_seq ON jobs (seq) WHERE status = 'PENDING';
CREATE INDEX jobs_pending_priority ON jobs (priority, seq) WHERE status = 'PENDING';
CREATE INDEX jobs_pending_sjf ON jobs (estimated_duration, seq) WHERE status = 'PENDING';
CREATE INDEX jobs_status ON jobs (status, started_at, completed_at);
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at)
    WHERE status IN ('RUNNING', 'SCHEDULED');
CREATE INDEX jobs_created ON jobs (created_at DESC, seq DESC);
CREATE INDEX jobs_status_created ON jobs (status, created_at DESC, seq DESC);
CREATE INDEX jobs_dead_letters ON jobs (failed_at DESC) WHERE dead_letter = 1;

CREATE TABLE settings (
    key        TEXT    PRIMARY KEY NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE leaders (
    role       TEXT    PRIMARY KEY NOT NULL,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
