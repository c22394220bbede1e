SELECT (SELECT (value->>'concurrency_limit')::int8 FROM settings
WHERE key = $2),
coalesce((SELECT sum(n) FROM job_counts
WHERE queue = $1
AND status IN ('SCHEDULED', 'RUNNING')), 0)::int8
