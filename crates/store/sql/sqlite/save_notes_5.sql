UPDATE job_tries SET log_dropped = log_dropped + ?3
WHERE job_id = ?1 AND attempt = ?2
