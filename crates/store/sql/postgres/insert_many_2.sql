SELECT key, job_id, fingerprint FROM job_keys WHERE key = ANY($1)
