-- Outcomes of runs ($1 now, $2 owner, $3..$20 the arrays of OutcomeArrays): each RUNNING -> X
-- fenced by the attempt and the lease owner, or, for a run whose start is not recorded yet
-- (t.started set), SCHEDULED -> RUNNING -> X in the same statement, its started_at and slices
-- written too. `old` locks the rows first, in id order, so the status it reads is the one each
-- row leaves: the count deltas (`counted`) follow from it. retry_count is capped at max_retries. COMPLETED keeps the
-- row's lease expiry (an indexed column), so a completion is a HOT update.
WITH old AS (
    SELECT j.id, j.status FROM jobs j
    WHERE j.id = ANY($3::uuid[] || $7::uuid[] || $12::uuid[] || $17::uuid[])
      AND j.status IN ('RUNNING', 'SCHEDULED')
    ORDER BY j.id
    FOR UPDATE
), completed AS (
    UPDATE jobs j SET status = 'COMPLETED', result = t.result, completed_at = $1,
        lease_owner = NULL,
        started_at = CASE WHEN j.status = 'SCHEDULED' THEN t.started ELSE j.started_at END,
        slices = j.slices + (j.status = 'SCHEDULED')::int
    FROM UNNEST($3::uuid[], $4::int4[], $5::timestamptz[], $6::jsonb[])
             AS t (id, attempt, started, result)
         JOIN old o ON o.id = t.id
    WHERE j.id = t.id AND j.attempt = t.attempt
      AND ((j.status = 'RUNNING' AND j.lease_owner = $2)
           OR (j.status = 'SCHEDULED' AND t.started IS NOT NULL)) IS TRUE
    RETURNING j.id, j.attempt, j.queue, j.job_type, o.status AS was,
        job_run_ms(j.status, j.started_at, j.completed_at) AS run_ms
), retried AS (
    UPDATE jobs j SET status = 'PENDING', lease_owner = NULL, lease_expires_at = NULL,
        started_at = CASE WHEN j.status = 'SCHEDULED' THEN t.started ELSE j.started_at END,
        slices = j.slices + (j.status = 'SCHEDULED')::int,
        retry_count = LEAST(j.retry_count + 1, j.max_retries), error_message = t.error,
        run_at = t.run_at, seq = nextval('job_seq')
    FROM UNNEST($7::uuid[], $8::int4[], $9::timestamptz[], $10::text[], $11::timestamptz[])
             AS t (id, attempt, started, error, run_at)
         JOIN old o ON o.id = t.id
    WHERE j.id = t.id AND j.attempt = t.attempt
      AND ((j.status = 'RUNNING' AND j.lease_owner = $2)
           OR (j.status = 'SCHEDULED' AND t.started IS NOT NULL)) IS TRUE
    RETURNING j.id, j.attempt, j.queue, j.job_type, o.status AS was, 0::float8 AS run_ms
), failed AS (
    UPDATE jobs j SET status = 'FAILED', lease_owner = NULL, lease_expires_at = NULL,
        started_at = CASE WHEN j.status = 'SCHEDULED' THEN t.started ELSE j.started_at END,
        slices = j.slices + (j.status = 'SCHEDULED')::int,
        error_message = t.error, retry_count = LEAST(t.retry_count, j.max_retries),
        dead_letter = true, failed_at = $1, completed_at = $1
    FROM UNNEST($12::uuid[], $13::int4[], $14::timestamptz[], $15::text[], $16::int4[])
             AS t (id, attempt, started, error, retry_count)
         JOIN old o ON o.id = t.id
    WHERE j.id = t.id AND j.attempt = t.attempt
      AND ((j.status = 'RUNNING' AND j.lease_owner = $2)
           OR (j.status = 'SCHEDULED' AND t.started IS NOT NULL)) IS TRUE
    RETURNING j.id, j.attempt, j.queue, j.job_type, o.status AS was, 0::float8 AS run_ms
), requeued AS (
    UPDATE jobs j SET status = 'PENDING', lease_owner = NULL, lease_expires_at = NULL,
        started_at = CASE WHEN j.status = 'SCHEDULED' THEN t.started ELSE j.started_at END,
        slices = j.slices + (j.status = 'SCHEDULED')::int,
        seq = nextval('job_seq'), checkpoint = COALESCE(t.checkpoint, j.checkpoint), run_at = $1
    FROM UNNEST($17::uuid[], $18::int4[], $19::timestamptz[], $20::jsonb[])
             AS t (id, attempt, started, checkpoint)
         JOIN old o ON o.id = t.id
    WHERE j.id = t.id AND j.attempt = t.attempt
      AND ((j.status = 'RUNNING' AND j.lease_owner = $2)
           OR (j.status = 'SCHEDULED' AND t.started IS NOT NULL)) IS TRUE
    RETURNING j.id, j.attempt, j.queue, j.job_type, o.status AS was, 0::float8 AS run_ms
), done AS (
    SELECT *, 'COMPLETED' AS k FROM completed
    UNION ALL SELECT *, 'PENDING' FROM retried
    UNION ALL SELECT *, 'FAILED' FROM failed
    UNION ALL SELECT *, 'PENDING' FROM requeued
), counted AS (
    INSERT INTO job_counts (queue, job_type, status, n, run_ms)
    SELECT queue, job_type, k, sum(n), sum(ms) FROM (
        SELECT queue, job_type, was AS k, -1 AS n, 0::float8 AS ms FROM done
        UNION ALL SELECT queue, job_type, k, 1, run_ms FROM done
    ) d
    GROUP BY queue, job_type, k
    HAVING sum(n) <> 0 OR sum(ms) <> 0
)
SELECT id, attempt FROM done
