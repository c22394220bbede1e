-- The rescuer's decisions for the rows rescue_lock.sql locked (made by
-- jobsched_core::retry::AfterFailure): $2/$3 the RUNNING jobs that go to the dead-letter queue
-- and their errors, $4/$5 those that go back to PENDING for a retry, $6 the SCHEDULED jobs never
-- started (back to PENDING, nothing counted as a try). The jobs back in PENDING enter their
-- queue (`entered`) and the count deltas (with the PENDING estimates) are written (`counted`).
WITH dead AS (
    UPDATE jobs j
    SET status = 'FAILED', rare_end = 1, dead_letter = true, failed_at = $1, completed_at = $1,
        retry_count = j.max_retries, error_message = d.error,
        lease_owner = NULL, lease_expires_at = NULL
    FROM unnest($2::uuid[], $3::text[]) AS d (id, error)
    WHERE j.id = d.id AND j.status = 'RUNNING'
    RETURNING j.id, j.job_type, j.name, j.error_message, j.retry_count, j.failed_at, j.queue
), retried AS (
    UPDATE jobs j
    SET status = 'PENDING', retry_count = j.retry_count + 1, seq = nextval('job_seq'),
        run_at = $1, error_message = r.error, lease_owner = NULL, lease_expires_at = NULL
    FROM unnest($4::uuid[], $5::text[]) AS r (id, error)
    WHERE j.id = r.id AND j.status = 'RUNNING'
    RETURNING j.id, j.queue, j.job_type, job_count_key(j.status, j.delayed) AS k, j.seq,
        j.priority, j.estimated_duration, j.run_at, j.delayed, j.created_at
), undispatched AS (
    UPDATE jobs j
    SET status = 'PENDING', seq = nextval('job_seq'), lease_owner = NULL, lease_expires_at = NULL
    WHERE j.id = ANY($6::uuid[]) AND j.status = 'SCHEDULED'
    RETURNING j.id, j.queue, j.job_type, job_count_key(j.status, j.delayed) AS k, j.seq,
        j.priority, j.estimated_duration, j.run_at, j.delayed, j.created_at
), entered AS (
    INSERT INTO job_queue (id, queue, seq, priority, estimated_duration, run_at, delayed,
                           created_at, job_type)
    SELECT id, queue, seq, priority, estimated_duration, run_at, delayed, created_at, job_type
    FROM (SELECT * FROM retried UNION ALL SELECT * FROM undispatched) back
    ON CONFLICT (id) DO UPDATE SET queue = EXCLUDED.queue, seq = EXCLUDED.seq,
        priority = EXCLUDED.priority, estimated_duration = EXCLUDED.estimated_duration,
        run_at = EXCLUDED.run_at, delayed = EXCLUDED.delayed, created_at = EXCLUDED.created_at,
        job_type = EXCLUDED.job_type
), counted AS (
    INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
    SELECT queue, job_type, k, sum(n), 0, sum(e) FROM (
        SELECT queue, job_type, 'RUNNING' AS k, -1 AS n, 0::float8 AS e FROM dead
        UNION ALL SELECT queue, job_type, 'FAILED', 1, 0 FROM dead
        UNION ALL SELECT queue, job_type, 'RUNNING', -1, 0 FROM retried
        UNION ALL SELECT queue, job_type, k, 1, job_pending_est(k, estimated_duration)
        FROM retried
        UNION ALL SELECT queue, job_type, 'SCHEDULED', -1, 0 FROM undispatched
        UNION ALL SELECT queue, job_type, k, 1, job_pending_est(k, estimated_duration)
        FROM undispatched
    ) d
    GROUP BY queue, job_type, k
    HAVING sum(n) <> 0
)
SELECT 'dead' AS kind, id, job_type, name, error_message, retry_count, failed_at FROM dead
UNION ALL SELECT 'retried', id, NULL, NULL, NULL, NULL, NULL FROM retried
UNION ALL SELECT 'undispatched', id, NULL, NULL, NULL, NULL, NULL FROM undispatched
