SELECT queue, status, sum(n)::int8 FROM job_counts GROUP BY queue, status
