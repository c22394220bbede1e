-- What runs report while they work (see migrations/postgres/0012_notes.sql): per try, the latest
-- progress and a bounded log. Timestamps in microseconds since the epoch, as in `jobs`. This
-- store runs without foreign keys, so a trigger deletes a job's notes with the job.

CREATE TABLE job_tries (
    job_id      TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    fraction    REAL,
    message     TEXT,
    progress_at INTEGER,
    log_dropped INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_logs (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT    NOT NULL,
    attempt INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    level   TEXT    NOT NULL,
    message TEXT    NOT NULL
);
CREATE INDEX job_logs_try ON job_logs (job_id, attempt, seq);

CREATE TRIGGER jobs_notes_deleted AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_logs WHERE job_id = old.id;
    DELETE FROM job_tries WHERE job_id = old.id;
END;
