-- Every job's `rare_end` agrees with its status (1 FAILED, 2 CANCELLED, else NULL): a process of
-- an earlier version that failed, cancelled or retried a job after migration 0018 (during a
-- rolling upgrade) did not set it.
UPDATE jobs SET rare_end = CASE status WHEN 'FAILED' THEN 1 WHEN 'CANCELLED' THEN 2 END
WHERE rare_end IS DISTINCT FROM CASE status WHEN 'FAILED' THEN 1 WHEN 'CANCELLED' THEN 2 END
