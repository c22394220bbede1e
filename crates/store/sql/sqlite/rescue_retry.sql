-- RUNNING job ?1 back to PENDING at queue position ?2, runnable from ?3, one retry counted, with
-- error ?4 (the rescuer's decision).
UPDATE jobs
SET status = 'PENDING', retry_count = retry_count + 1, seq = ?2, run_at = ?3,
    error_message = ?4, lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?1 AND status = 'RUNNING'
