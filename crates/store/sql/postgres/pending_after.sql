SELECT id, seq, priority, estimated_duration, attempt, run_at FROM jobs
WHERE queued AND seq > $1 ORDER BY seq LIMIT $2
