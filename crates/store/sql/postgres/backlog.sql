-- The jobs waiting in each queue and their summed estimates, from the kept counts (migration
-- 0020): a sum over a few delta rows, not a scan of the queue.
SELECT queue, sum(n)::int8, greatest(sum(est), 0)::float8
FROM job_counts WHERE status = 'PENDING'
GROUP BY queue HAVING sum(n) > 0 ORDER BY queue
