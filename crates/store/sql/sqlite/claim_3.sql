UPDATE jobs SET status = 'RUNNING', attempt = attempt + 1,
scheduled_at = MAX(?2, created_at, run_at),
started_at = MAX(?2, created_at, run_at),
lease_owner = ?3, lease_expires_at = ?4, slices = slices + 1
WHERE id = ?1 AND status = 'PENDING'
RETURNING attempt, name, job_type, payload, checkpoint, retry_count,
max_retries, created_at, slices - 1 AS slices, timeout_seconds,
backoff_base, backoff_cap, queue
