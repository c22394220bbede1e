-- RUNNING -> FAILED fenced by the attempt and the lease owner (?1 id, ?2 attempt, ?3 owner); a run
-- whose start is not recorded yet (?4 set) goes SCHEDULED -> RUNNING -> FAILED in the same UPDATE.
-- ?5 error, ?6 retry_count (capped at max_retries), ?7 now.
UPDATE jobs
SET status = 'FAILED', error_message = ?5, retry_count = MIN(?6, max_retries),
    dead_letter = 1, failed_at = ?7, completed_at = ?7,
    lease_owner = NULL, lease_expires_at = NULL,
    started_at = CASE WHEN status = 'SCHEDULED' THEN ?4 ELSE started_at END,
    slices = slices + (status = 'SCHEDULED')
WHERE id = ?1 AND attempt = ?2
  AND ((status = 'RUNNING' AND lease_owner = ?3) OR (status = 'SCHEDULED' AND ?4 IS NOT NULL))
