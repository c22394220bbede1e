SELECT name, job_type, payload, checkpoint, retry_count, max_retries, created_at,
slices, timeout_seconds, backoff_base, backoff_cap, queue
FROM jobs WHERE id = ?1 AND status = 'SCHEDULED' AND attempt = ?2
