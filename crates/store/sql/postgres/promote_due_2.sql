SELECT run_at FROM jobs WHERE queued AND delayed ORDER BY run_at, seq LIMIT 1
