SELECT id, job_type, name, error_message, retry_count, failed_at FROM jobs
WHERE dead_letter = 1 ORDER BY failed_at DESC, seq DESC LIMIT ?1
