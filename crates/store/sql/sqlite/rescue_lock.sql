-- The SCHEDULED and RUNNING jobs whose lease ended before ?1, in lease-expiry order (the order
-- those going back to PENDING take their new queue positions in). The caller holds the write
-- lock (BEGIN IMMEDIATE).
SELECT id, status, retry_count, max_retries, lease_owner, attempt
FROM jobs
WHERE status IN ('RUNNING', 'SCHEDULED') AND lease_expires_at < ?1
ORDER BY lease_expires_at, seq
