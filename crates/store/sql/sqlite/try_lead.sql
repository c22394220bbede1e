INSERT INTO leaders (role, holder, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (role) DO UPDATE
SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leaders.expires_at <= ?4 OR leaders.holder = excluded.holder
RETURNING holder
