-- RUNNING -> PENDING fenced by the attempt and the lease owner (?1 id, ?2 attempt, ?3 owner); a run
-- whose start is not recorded yet (?4 set) goes SCHEDULED -> RUNNING -> PENDING in the same UPDATE.
-- A retry: ?5 error, ?6 run_at, ?7 the new queue position; retry_count capped at max_retries.
UPDATE jobs
SET status = 'PENDING', retry_count = MIN(retry_count + 1, max_retries),
    error_message = ?5, run_at = ?6, seq = ?7,
    lease_owner = NULL, lease_expires_at = NULL,
    started_at = CASE WHEN status = 'SCHEDULED' THEN ?4 ELSE started_at END,
    slices = slices + (status = 'SCHEDULED')
WHERE id = ?1 AND attempt = ?2
  AND ((status = 'RUNNING' AND lease_owner = ?3) OR (status = 'SCHEDULED' AND ?4 IS NOT NULL))
