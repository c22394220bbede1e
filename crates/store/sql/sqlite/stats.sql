SELECT status, count(*) AS n,
avg(CASE WHEN status = 'COMPLETED'
THEN (completed_at - started_at) / 1000.0 END) AS avg_ms,
sum(delayed) AS delayed
FROM jobs GROUP BY status
