SELECT name, spec, paused, next_fire_at, last_fire_at, last_job_id, created_at, updated_at
FROM schedules WHERE paused = 0 AND next_fire_at <= ?1 ORDER BY next_fire_at LIMIT ?2
