SELECT id FROM jobs WHERE status = 'PENDING' AND delayed = 1 AND run_at <= ?1
ORDER BY run_at, seq LIMIT ?2
