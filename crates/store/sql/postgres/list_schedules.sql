SELECT name, spec, paused, next_fire_at, last_fire_at, last_job_id, created_at, updated_at
FROM schedules ORDER BY name
