-- The job-type catalog (see migrations/postgres/0013_job_types.sql). Pending jobs per type are
-- counted from `jobs` here (a development store).
CREATE TABLE job_types (
    name                    TEXT    PRIMARY KEY NOT NULL,
    schema                  TEXT    NOT NULL,
    preemptible             INTEGER NOT NULL,
    default_timeout_seconds REAL    NOT NULL,
    registered_by           TEXT    NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX jobs_type_status ON jobs (job_type, status);
