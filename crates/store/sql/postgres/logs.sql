SELECT t.attempt, t.log_dropped, l.at, l.level, l.message
FROM job_tries t LEFT JOIN job_logs l USING (job_id, attempt)
WHERE t.job_id = $1 AND ($2::integer IS NULL OR t.attempt = $2)
ORDER BY t.attempt, l.seq
