-- What runs report while they work (crates/core/src/notes.rs): per try (1, then one more per
-- retry), the latest progress and a bounded log. Kept apart from `jobs`, so a report never
-- writes a new version of the job's row (its completion stays HOT) and a job that reports
-- nothing costs nothing. Deleting a job (retention, purge) deletes its notes.

CREATE TABLE job_tries (
    job_id      uuid             NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer          NOT NULL,
    fraction    double precision,
    message     text,
    progress_at timestamptz,
    -- Lines of this try no longer kept (the log keeps the newest 1,000 lines and 256 KiB).
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
