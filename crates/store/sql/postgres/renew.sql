UPDATE jobs j SET lease_expires_at = $4
FROM UNNEST($1::uuid[], $2::int4[]) AS t(id, attempt)
WHERE j.id = t.id AND j.attempt = t.attempt AND (j.status = 'RUNNING') IS TRUE
AND j.lease_owner = $3
RETURNING j.id, j.attempt
