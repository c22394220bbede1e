INSERT INTO jobs (id, name, job_type, status, priority, estimated_duration, payload,
max_retries, created_at, run_at, seq, timeout_seconds, delayed,
backoff_base, backoff_cap, queue)
SELECT t.id, t.name, t.job_type, 'PENDING', t.priority, t.duration, t.payload,
t.max_retries, $8, GREATEST($8, t.run_at), nextval('job_seq'), t.timeout,
coalesce(t.run_at > $8, false), t.base, t.cap, t.queue
FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::float8[],
$6::jsonb[], $7::int4[], $9::float8[], $10::timestamptz[],
$11::float8[], $12::float8[], $13::text[])
WITH ORDINALITY AS t(id, name, job_type, priority, duration, payload,
max_retries, timeout, run_at, base, cap, queue, ord)
ORDER BY t.ord
