INSERT INTO schedules (name, spec, paused, next_fire_at, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?5)
ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, paused = excluded.paused,
next_fire_at = excluded.next_fire_at, updated_at = excluded.updated_at
