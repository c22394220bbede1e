-- The leases whose expiry has passed ($1 now), taken out of `job_leases` (`ended`; a row
-- written late, whatever its expiry, is read by the next pass), and the SCHEDULED and RUNNING
-- jobs listed under them whose own lease has ended (a job renewed since is listed again, under
-- its new expiry), locked in id order. Rows are never skipped: a worker writing an outcome to
-- one of them right now is waited for, and its row then no longer qualifies (its outcome wins).
-- A pass that fails puts the leases back (its transaction rolls back).
WITH ended AS (
DELETE FROM job_leases WHERE expires_at < $1 RETURNING ids)
SELECT id, status, retry_count, max_retries, lease_owner, attempt
FROM jobs
WHERE id IN (SELECT unnest(ids) FROM ended)
  AND lease_expires_at < $1
  AND status IN ('RUNNING', 'SCHEDULED')
ORDER BY id
FOR UPDATE
