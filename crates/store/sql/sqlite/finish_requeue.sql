-- RUNNING -> PENDING fenced by the attempt and the lease owner (?1 id, ?2 attempt, ?3 owner); a run
-- whose start is not recorded yet (?4 set) goes SCHEDULED -> RUNNING -> PENDING in the same UPDATE.
-- A hand-back without a retry: ?5 the new queue position, ?6 the checkpoint (NULL keeps it), ?7 now.
UPDATE jobs
SET status = 'PENDING', seq = ?5, checkpoint = COALESCE(?6, checkpoint), run_at = ?7,
    lease_owner = NULL, lease_expires_at = NULL,
    started_at = CASE WHEN status = 'SCHEDULED' THEN ?4 ELSE started_at END,
    slices = slices + (status = 'SCHEDULED')
WHERE id = ?1 AND attempt = ?2
  AND ((status = 'RUNNING' AND lease_owner = ?3) OR (status = 'SCHEDULED' AND ?4 IS NOT NULL))
