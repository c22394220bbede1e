-- Idempotency keys: a submission may carry a key (the `Idempotency-Key` header or the
-- `unique_key` field). While the job it created exists, the same request with the same key
-- returns that job; a different request with it is refused (409).
--
-- The keys live apart from `jobs`: most jobs have none, and the hot row stays as narrow as it
-- was. A key goes when its job is deleted (the delete trigger below).
CREATE TABLE job_keys (
    key         text        PRIMARY KEY,
    job_id      uuid        NOT NULL,
    -- Digest of the request that created the job (the API's canonical JSON, SHA-256).
    fingerprint text        NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX job_keys_job ON job_keys (job_id);

CREATE OR REPLACE FUNCTION job_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (status, n, run_ms)
    SELECT job_count_key(status, delayed), -count(*),
           -sum(job_run_ms(status, started_at, completed_at))
      FROM old_rows GROUP BY 1;
    DELETE FROM job_catalog c USING old_rows o WHERE c.id = o.id;
    DELETE FROM job_keys k USING old_rows o WHERE k.job_id = o.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION job_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_counts;
    DELETE FROM job_catalog;
    DELETE FROM job_keys;
    RETURN NULL;
END
$$;
