SELECT queue, count(*)::int8, coalesce(sum(estimated_duration), 0)::float8
FROM job_queue WHERE NOT delayed GROUP BY queue ORDER BY queue
