-- Outcomes of runs ($1 now, $2 owner, $3..$20 the arrays of OutcomeArrays: per kind the ids,
-- attempts, unrecorded start times and the kind's own columns). A run applies when its job
-- has the same attempt and is RUNNING under the owner's lease or, for a run whose start is not
-- recorded yet (t.started set), still SCHEDULED: it then goes SCHEDULED -> RUNNING -> X in this
-- statement, its started_at and slices written too. `old` locks the applicable rows first, in
-- id order, and reads the status each leaves, so the count deltas (`counted`) follow from it.
-- Retried and requeued jobs enter their queue again (`entered`).
-- retry_count is capped at max_retries.
WITH runs AS (
    SELECT * FROM UNNEST($3::uuid[], $4::int4[], $5::timestamptz[])
    UNION ALL SELECT * FROM UNNEST($7::uuid[], $8::int4[], $9::timestamptz[])
    UNION ALL SELECT * FROM UNNEST($12::uuid[], $13::int4[], $14::timestamptz[])
    UNION ALL SELECT * FROM UNNEST($17::uuid[], $18::int4[], $19::timestamptz[])
), old AS (
    SELECT j.id, j.attempt, j.status,
           CASE WHEN j.status = 'SCHEDULED' THEN r.started ELSE j.started_at END AS started_at,
           j.slices + (j.status = 'SCHEDULED')::int AS slices
    FROM jobs j JOIN runs r (id, attempt, started) ON j.id = r.id AND j.attempt = r.attempt
    WHERE ((j.status = 'RUNNING' AND j.lease_owner = $2)
           OR (j.status = 'SCHEDULED' AND r.started IS NOT NULL)) IS TRUE
    ORDER BY j.id
    FOR UPDATE OF j
), completed AS (
    UPDATE jobs j SET status = 'COMPLETED', result = t.result, completed_at = $1,
        lease_owner = NULL, started_at = o.started_at, slices = o.slices
    FROM UNNEST($3::uuid[], $4::int4[], $6::jsonb[]) AS t (id, attempt, result)
         JOIN old o ON (o.id, o.attempt) = (t.id, t.attempt)
    WHERE j.id = t.id
    RETURNING j.id, j.attempt, j.queue, j.job_type, o.status AS was, 'COMPLETED'::text AS k,
        job_run_ms(j.status, j.started_at, j.completed_at) AS run_ms, NULL::int8 AS seq,
        NULL::int2 AS priority, NULL::float8 AS est, NULL::timestamptz AS run_at,
        NULL::bool AS delayed, NULL::timestamptz AS created_at
), retried AS (
    UPDATE jobs j SET status = 'PENDING', lease_owner = NULL, lease_expires_at = NULL,
        started_at = o.started_at, slices = o.slices, error_message = t.error,
        retry_count = LEAST(j.retry_count + 1, j.max_retries), run_at = t.run_at,
        seq = nextval('job_seq')
    FROM UNNEST($7::uuid[], $8::int4[], $10::text[], $11::timestamptz[])
             AS t (id, attempt, error, run_at)
         JOIN old o ON (o.id, o.attempt) = (t.id, t.attempt)
    WHERE j.id = t.id
    RETURNING j.id, j.attempt, j.queue, j.job_type, o.status, job_count_key(j.status, j.delayed),
        0::float8, j.seq, j.priority, j.estimated_duration, j.run_at, j.delayed, j.created_at
), failed AS (
    UPDATE jobs j SET status = 'FAILED', rare_end = 1, lease_owner = NULL, lease_expires_at = NULL,
        started_at = o.started_at, slices = o.slices, error_message = t.error,
        retry_count = LEAST(t.retry_count, j.max_retries), dead_letter = true,
        failed_at = $1, completed_at = $1
    FROM UNNEST($12::uuid[], $13::int4[], $15::text[], $16::int4[])
             AS t (id, attempt, error, retry_count)
         JOIN old o ON (o.id, o.attempt) = (t.id, t.attempt)
    WHERE j.id = t.id
    RETURNING j.id, j.attempt, j.queue, j.job_type, o.status, 'FAILED', 0::float8, NULL::int8,
        NULL::int2, NULL::float8, NULL::timestamptz, NULL::bool, NULL::timestamptz
), requeued AS (
    UPDATE jobs j SET status = 'PENDING', lease_owner = NULL, lease_expires_at = NULL,
        started_at = o.started_at, slices = o.slices, run_at = $1, seq = nextval('job_seq'),
        checkpoint = COALESCE(t.checkpoint, j.checkpoint)
    FROM UNNEST($17::uuid[], $18::int4[], $20::jsonb[]) AS t (id, attempt, checkpoint)
         JOIN old o ON (o.id, o.attempt) = (t.id, t.attempt)
    WHERE j.id = t.id
    RETURNING j.id, j.attempt, j.queue, j.job_type, o.status, job_count_key(j.status, j.delayed),
        0::float8, j.seq, j.priority, j.estimated_duration, j.run_at, j.delayed, j.created_at
), done AS (
    SELECT * FROM completed UNION ALL SELECT * FROM retried
    UNION ALL SELECT * FROM failed UNION ALL SELECT * FROM requeued
), entered AS (
    INSERT INTO job_queue (id, queue, seq, priority, estimated_duration, run_at, delayed,
                           created_at, job_type)
    SELECT id, queue, seq, priority, est, run_at, delayed, created_at, job_type
    FROM done WHERE seq IS NOT NULL
    ON CONFLICT (id) DO UPDATE SET queue = EXCLUDED.queue, seq = EXCLUDED.seq,
        priority = EXCLUDED.priority, estimated_duration = EXCLUDED.estimated_duration,
        run_at = EXCLUDED.run_at, delayed = EXCLUDED.delayed, created_at = EXCLUDED.created_at,
        job_type = EXCLUDED.job_type
), counted AS (
    INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
    SELECT queue, job_type, k, sum(n), sum(ms), sum(e) FROM (
        SELECT queue, job_type, was AS k, -1 AS n, 0::float8 AS ms, 0::float8 AS e FROM done
        UNION ALL SELECT queue, job_type, k, 1, run_ms, job_pending_est(k, est) FROM done
    ) d
    GROUP BY queue, job_type, k
    HAVING sum(n) <> 0 OR sum(ms) <> 0 OR sum(e) <> 0
)
SELECT id, attempt FROM done
