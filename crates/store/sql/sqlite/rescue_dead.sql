-- RUNNING job ?1 to the dead-letter queue at ?2 with error ?3 (the rescuer's decision).
UPDATE jobs
SET status = 'FAILED', dead_letter = 1, failed_at = ?2, completed_at = ?2,
    retry_count = max_retries, error_message = ?3, lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?1 AND status = 'RUNNING'
RETURNING id, job_type, name, error_message, retry_count, failed_at
