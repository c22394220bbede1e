SELECT run_at FROM jobs WHERE status = 'PENDING' AND delayed = 1
ORDER BY run_at, seq LIMIT 1
