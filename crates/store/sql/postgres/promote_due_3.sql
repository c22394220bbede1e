SELECT run_at FROM job_queue WHERE delayed ORDER BY run_at, seq LIMIT 1
