SELECT job_id, fingerprint FROM job_keys WHERE key = ?1
