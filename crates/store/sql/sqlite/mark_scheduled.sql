UPDATE jobs SET status = 'SCHEDULED', attempt = attempt + 1,
scheduled_at = MAX(?3, created_at, run_at),
lease_owner = NULL, lease_expires_at = ?4
WHERE id = ?1 AND status = 'PENDING' AND attempt = ?2
RETURNING attempt, name, job_type, payload, checkpoint, retry_count,
max_retries, created_at, slices, timeout_seconds, backoff_base,
backoff_cap, queue
