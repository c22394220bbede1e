-- The job-type catalog (crates/core/src/job_type.rs): what each type a worker registered
-- accepts. The API checks submissions of types it was not built with against `schema`.
CREATE TABLE job_types (
    name                    text             PRIMARY KEY,
    schema                  jsonb            NOT NULL,
    preemptible             boolean          NOT NULL,
    default_timeout_seconds double precision NOT NULL,
    registered_by           text             NOT NULL,
    updated_at              timestamptz      NOT NULL
);

-- The kept counts are per job type too, so the PENDING jobs of a type no live worker serves are
-- a sum over a few rows, not a scan. Recounted from the rows (under a lock: no job changes
-- while the counts are rebuilt).
LOCK TABLE jobs IN SHARE MODE;
ALTER TABLE job_counts ADD COLUMN job_type text NOT NULL DEFAULT '';
DELETE FROM job_counts;
INSERT INTO job_counts (queue, job_type, status, n, run_ms)
SELECT queue, job_type, job_count_key(status, delayed), count(*),
       coalesce(sum(job_run_ms(status, started_at, completed_at)), 0)
  FROM jobs GROUP BY 1, 2, 3;

CREATE OR REPLACE FUNCTION job_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE OR REPLACE FUNCTION job_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE OR REPLACE FUNCTION job_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
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
