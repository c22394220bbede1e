SELECT attempt, fraction, message, progress_at FROM job_tries
WHERE job_id = ?1 AND progress_at IS NOT NULL ORDER BY attempt DESC LIMIT 1
