-- The SCHEDULED and RUNNING jobs listed under leases that ended in [$2, $1) (`job_leases`) whose
-- own lease has ended (a job renewed since is listed again, under its new expiry), locked in id
-- order. Rows are never skipped: a worker writing an outcome to one of them right now is waited
-- for, and its row then no longer qualifies (its outcome wins).
SELECT id, status, retry_count, max_retries, lease_owner, attempt
FROM jobs
WHERE id IN (SELECT unnest(ids) FROM job_leases WHERE expires_at >= $2 AND expires_at < $1)
  AND lease_expires_at < $1
  AND status IN ('RUNNING', 'SCHEDULED')
ORDER BY id
FOR UPDATE
