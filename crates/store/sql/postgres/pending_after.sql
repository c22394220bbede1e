SELECT j.id, j.seq, j.priority, j.estimated_duration, j.attempt, j.run_at
FROM job_queue q JOIN jobs j ON j.id = q.id
WHERE q.seq > $1 AND j.status = 'PENDING' ORDER BY q.seq LIMIT $2
