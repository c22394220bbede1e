SELECT status, sum(n)::int8 AS n, sum(run_ms)::float8 AS run_ms,
sum(count(*)) OVER ()::int8 AS deltas,
sum(count(DISTINCT (queue, job_type))) OVER ()::int8 AS groups
FROM job_counts GROUP BY status
