UPDATE jobs j SET status = 'RUNNING', lease_owner = $4, lease_expires_at = $5,
started_at = CASE WHEN j.status = 'SCHEDULED' THEN t.started
ELSE j.started_at END,
slices = j.slices + (j.status = 'SCHEDULED')::int
FROM UNNEST($1::uuid[], $2::int4[], $3::timestamptz[]) AS t(id, attempt, started)
WHERE j.id = t.id AND j.attempt = t.attempt
AND (j.status = 'SCHEDULED'
OR (j.status = 'RUNNING' AND j.lease_owner = $4)) IS TRUE
RETURNING j.id, j.attempt
