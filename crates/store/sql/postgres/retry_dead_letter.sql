UPDATE jobs SET status = 'PENDING', retry_count = 0, dead_letter = false,
completed_at = NULL, failed_at = NULL, run_at = $2,
seq = nextval('job_seq'), lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'FAILED' AND dead_letter
