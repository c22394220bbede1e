SELECT job_type, sum(n)::int8 FROM job_counts
WHERE status IN ('PENDING', 'DELAYED') GROUP BY job_type
HAVING sum(n) > 0 ORDER BY job_type
