UPDATE schedules SET next_fire_at = ?3, last_fire_at = ?4,
last_job_id = coalesce(?5, last_job_id)
WHERE name = ?1 AND next_fire_at = ?2
