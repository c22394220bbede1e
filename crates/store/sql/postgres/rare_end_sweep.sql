-- Every job's `rare_end` agrees with its status (`job_rare_end`, migration 0018): a process of
-- an earlier version that failed, cancelled or retried a job after that migration (during a
-- rolling upgrade) did not set it. Returns how many jobs were mended.
WITH mended AS (
    UPDATE jobs SET rare_end = job_rare_end(status)
    WHERE rare_end IS DISTINCT FROM job_rare_end(status)
    RETURNING 1
)
SELECT count(*) FROM mended
