-- PENDING -> SCHEDULED for the engine's picks, fenced by the attempt; rows locked in id order
-- (another dispatcher's are skipped). `gone` deletes their queue entries (skipping any another
-- statement holds: the claim that later meets such an entry finds the job SCHEDULED and drops
-- it), `leased` lists their lease, `counted` writes the count deltas.
WITH claim AS (
SELECT j.id FROM jobs j
JOIN UNNEST($1::uuid[], $2::int4[]) AS t(id, attempt)
ON j.id = t.id AND j.attempt = t.attempt
WHERE (j.status = 'PENDING') IS TRUE
ORDER BY j.id
FOR UPDATE OF j SKIP LOCKED),
scheduled AS (
UPDATE jobs j SET status = 'SCHEDULED', attempt = j.attempt + 1,
scheduled_at = GREATEST($3, j.created_at, j.run_at),
lease_owner = NULL, lease_expires_at = $4
FROM claim WHERE j.id = claim.id AND (j.status = 'PENDING') IS TRUE
RETURNING j.id, j.attempt, j.name, j.job_type, j.payload, j.checkpoint,
j.retry_count, j.max_retries, j.created_at, j.slices, j.timeout_seconds,
j.backoff_base, j.backoff_cap, j.queue, j.delayed, j.estimated_duration),
gone AS (
DELETE FROM job_queue WHERE id IN (
SELECT id FROM job_queue WHERE id = ANY (ARRAY(SELECT id FROM scheduled)) FOR UPDATE SKIP LOCKED)),
leased AS (
INSERT INTO job_leases (expires_at, owner, ids)
SELECT $4, NULL, array_agg(id) FROM scheduled HAVING count(*) > 0),
counted AS (
INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
SELECT queue, job_type, job_count_key('PENDING', delayed), -count(*), 0,
-sum(job_pending_est(job_count_key('PENDING', delayed), estimated_duration))
FROM scheduled GROUP BY 1, 2, 3
UNION ALL
SELECT queue, job_type, 'SCHEDULED', count(*), 0, 0 FROM scheduled GROUP BY 1, 2)
SELECT id, attempt, name, job_type, payload, checkpoint, retry_count, max_retries, created_at,
slices, timeout_seconds, backoff_base, backoff_cap, queue FROM scheduled
