-- `jobs` keeps no generated column.
--
-- Postgres computes every stored generated column again on every UPDATE of a row, whatever the
-- UPDATE changes: it evaluates the expressions and forms the new row version a second time.
-- For the two generated columns `jobs` had (`queued`, `rare_end`), that was ~6 % of Postgres's
-- CPU time during a burn-down, where every job is updated twice (claim, completion) and
-- neither update changes what the columns say (perf, 4 s inside a 400k-job burn:
-- ExecComputeStoredGenerated under 3.7 % of all samples, Postgres being 58 %).
--
-- `queued` has been read by nothing since migration 0017 (the queue order lives in
-- `job_queue`); it goes. `rare_end` (1 FAILED, 2 CANCELLED), the key of the FAILED and
-- CANCELLED listings, becomes a plain column that the statements which fail or cancel a job
-- set and the one that retries a dead letter clears. A process of an earlier version still
-- running after this migration (during a rolling upgrade) fails the statements that name
-- `queued`, and the jobs it fails or cancels lack `rare_end` until the engine leader's next
-- recount (when it takes over and every hour after, DispatchStore::recount) sets it: finish an
-- upgrade past this migration promptly.
ALTER TABLE jobs DROP COLUMN queued;
-- Drops `jobs_rare_end_created` with it.
ALTER TABLE jobs DROP COLUMN rare_end;
ALTER TABLE jobs ADD COLUMN rare_end smallint;
-- The key a status is listed under (what the generated column computed). The store's statements
-- write the literal for the status they set; the backfill, the insert trigger and the recount's
-- sweep (crates/store/sql/postgres/rare_end_sweep.sql) derive it here.
CREATE FUNCTION job_rare_end(status text) RETURNS smallint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE status WHEN 'FAILED' THEN 1 WHEN 'CANCELLED' THEN 2 END::smallint
$$;
UPDATE jobs SET rare_end = job_rare_end(status) WHERE status IN ('FAILED', 'CANCELLED');
CREATE INDEX jobs_rare_end_created ON jobs (rare_end, created_at DESC, seq DESC)
    WHERE rare_end IS NOT NULL;

-- Rows inserted straight into `jobs` as FAILED or CANCELLED (a migration, an operator's SQL)
-- are listed under their status: the insert trigger sets their `rare_end`. The store inserts
-- only PENDING jobs, for which this adds one pass over the statement's new rows.
CREATE OR REPLACE FUNCTION job_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, job_type, status, n, run_ms)
    SELECT queue, job_type, job_count_key(status, delayed), count(*),
           sum(job_run_ms(status, started_at, completed_at))
      FROM new_rows GROUP BY 1, 2, 3;
    INSERT INTO job_catalog (id, created_at, seq, name)
    SELECT id, created_at, seq, name FROM new_rows;
    INSERT INTO job_queue (id, queue, seq, priority, estimated_duration, run_at, delayed,
                           created_at, job_type)
    SELECT id, queue, seq, priority, estimated_duration, run_at, delayed, created_at, job_type
      FROM new_rows WHERE status = 'PENDING';
    IF EXISTS (SELECT 1 FROM new_rows WHERE job_rare_end(status) IS NOT NULL) THEN
        UPDATE jobs j SET rare_end = job_rare_end(n.status)
          FROM new_rows n
         WHERE j.id = n.id AND job_rare_end(n.status) IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$;

-- A lease row lists the ids of one exchange's claims: ~500 random UUIDs, 8 kB, which Postgres
-- stores out of line and first tries to compress (pglz: 0.8 % of all CPU samples in the same
-- burn, for nothing: random UUIDs do not compress). Stored out of line as they are.
ALTER TABLE job_leases ALTER COLUMN ids SET STORAGE EXTERNAL;
