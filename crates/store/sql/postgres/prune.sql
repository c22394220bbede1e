WITH scan AS (
SELECT id, created_at, seq FROM job_catalog
WHERE created_at < GREATEST($1::timestamptz, $2::timestamptz)
AND ($3::timestamptz IS NULL
OR (created_at >= $3 AND (created_at, seq) > ($3, $4)))
ORDER BY created_at, seq LIMIT $5),
gone AS (
DELETE FROM jobs j USING scan s WHERE j.id = s.id AND NOT j.dead_letter
AND ((j.status = 'COMPLETED' AND coalesce(j.completed_at, j.created_at) < $1)
OR (j.status IN ('FAILED', 'CANCELLED')
AND coalesce(j.completed_at, j.failed_at, j.created_at) < $2))
RETURNING 1)
SELECT (SELECT count(*) FROM gone)::int8 AS deleted,
(SELECT count(*) FROM scan)::int8 AS scanned, last.created_at, last.seq
FROM (SELECT 1) one
LEFT JOIN (SELECT created_at, seq FROM scan
ORDER BY created_at DESC, seq DESC LIMIT 1) last ON true
