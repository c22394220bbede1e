-- List every SCHEDULED and RUNNING job in `job_leases` again, under its own lease's expiry or,
-- where that has passed, under $1 (now), so that the rescuer's next passes examine them all.
-- It catches leases that processes of an earlier version handed out without listing them
-- (during a rolling upgrade past migration 0016).
INSERT INTO job_leases (expires_at, owner, ids)
SELECT GREATEST(lease_expires_at, $1), NULL, array_agg(id)
FROM jobs
WHERE status IN ('SCHEDULED', 'RUNNING') AND lease_expires_at IS NOT NULL
GROUP BY 1
