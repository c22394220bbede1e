SELECT t.attempt, t.log_dropped, l.at, l.level, l.message
FROM job_tries t LEFT JOIN job_logs l
ON l.job_id = t.job_id AND l.attempt = t.attempt
WHERE t.job_id = ?1 AND (?2 IS NULL OR t.attempt = ?2)
ORDER BY t.attempt, l.seq
