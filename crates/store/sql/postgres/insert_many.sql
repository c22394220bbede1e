INSERT INTO job_keys (key, job_id, fingerprint, created_at)
SELECT k, j, f, $4 FROM UNNEST($1::text[], $2::uuid[], $3::text[]) AS t(k, j, f)
ON CONFLICT (key) DO NOTHING RETURNING key
