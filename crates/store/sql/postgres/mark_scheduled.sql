WITH claim AS (
SELECT j.id FROM jobs j
JOIN UNNEST($1::uuid[], $2::int4[]) AS t(id, attempt)
ON j.id = t.id AND j.attempt = t.attempt
WHERE (j.status = 'PENDING') IS TRUE
ORDER BY j.id
FOR UPDATE OF j SKIP LOCKED)
UPDATE jobs j SET status = 'SCHEDULED', attempt = j.attempt + 1,
scheduled_at = GREATEST($3, j.created_at, j.run_at),
lease_owner = NULL, lease_expires_at = $4
FROM claim WHERE j.id = claim.id AND (j.status = 'PENDING') IS TRUE
RETURNING j.id, j.attempt, j.name, j.job_type, j.payload, j.checkpoint,
j.retry_count, j.max_retries, j.created_at, j.slices, j.timeout_seconds,
j.backoff_base, j.backoff_cap, j.queue
