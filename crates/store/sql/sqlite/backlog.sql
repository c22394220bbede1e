SELECT queue, count(*), coalesce(sum(estimated_duration), 0.0)
FROM jobs WHERE status = 'PENDING' AND delayed = 0 GROUP BY queue ORDER BY queue
