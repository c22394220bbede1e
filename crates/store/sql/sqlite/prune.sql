SELECT id, created_at, seq FROM jobs
WHERE created_at < MAX(?1, ?2) AND (created_at, seq) > (?3, ?4)
ORDER BY created_at, seq LIMIT ?5
