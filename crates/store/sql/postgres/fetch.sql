SELECT j.id, j.attempt, j.name, j.job_type, j.payload, j.checkpoint, j.retry_count,
j.max_retries, j.created_at, j.slices, j.timeout_seconds,
j.backoff_base, j.backoff_cap, j.queue
FROM jobs j JOIN UNNEST($1::uuid[], $2::int4[]) AS t(id, attempt)
ON j.id = t.id AND j.attempt = t.attempt
WHERE (j.status = 'SCHEDULED') IS TRUE
