INSERT INTO job_logs (job_id, attempt, at, level, message)
VALUES (?1, ?2, ?3, ?4, ?5)
